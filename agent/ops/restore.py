"""``kms-agent restore BACKUP DATA_DIR``: the offline restore command.

Run it with the agent stopped, as the user the agent runs as, into a
new or empty directory; then point ``agent.data_dir`` at it. The backup
is checked completely before anything is written (see ``backup``). Keys
decrypt only where the keystores named in the summary are configured
with the same domain keys as when the backup was taken. Exit status: 0
after a restore, 2 when the backup or the directory is rejected.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from agent.ops.backup import BackupError, RestoreSummary, restore


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kms-agent restore",
        description="Restore a backup made by `kmsctl backup` into a new or empty "
                    "data directory, with the agent stopped.")
    parser.add_argument("backup", type=Path, help="backup file (kmsctl backup OUT)")
    parser.add_argument("data_dir", type=Path,
                        help="new or empty directory to use as agent.data_dir")
    return parser


def main(argv: list[str], stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    """Run the restore command line; return the exit status."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    arguments = build_parser().parse_args(argv)
    try:
        summary = restore(arguments.backup, arguments.data_dir)
    except BackupError as exc:
        stderr.write(f"kms-agent restore: {exc}; nothing was changed\n")
        return 2
    stdout.write(describe(summary))
    return 0


def describe(summary: RestoreSummary) -> str:
    """Return the lines printed after a restore."""
    header = summary.header
    keystores = ", ".join(f"{name} ({_count(count, 'key')})"
                          for name, count in sorted(summary.keys_by_keystore.items()))
    lines = [
        f"restored {summary.database}",
        f"  backup taken {header.created} by kms-agent {header.agent_version}, "
        f"store schema version {header.schema_version}",
        f"  keys by keystore: {keystores or 'none'}; "
        f"{_count(summary.secrets, 'secret')}",
        "  these keys decrypt only with the same keystores and domain keys; set "
        "agent.data_dir to this directory and start the agent",
    ]
    return "\n".join(lines) + "\n"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
