"""Run the agent: ``python -m agent --config PATH``."""

from agent.main import main

raise SystemExit(main())
