"""The ``kms-agent`` command: run the daemon from a config or in dev mode.

``kms-agent --config PATH`` validates the configuration and serves until
SIGTERM or SIGINT. ``kms-agent --dev DIR`` creates a throwaway SoftHSM2
token and store under DIR and serves on ``DIR/agent.sock``: for trying
the agent and for tests, never for real keys. ``kms-agent restore
BACKUP DATA_DIR`` restores a backup offline (``agent.ops.restore``).
Exit codes: 0 after a clean stop, 2 for a configuration or startup error.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from pathlib import Path

import trio

from agent.config import ConfigError, check_data_dir, load_config, parse_config
from agent.logs import setup_logging
from agent.rpc.server import StartupError

DEV_TOKEN_LABEL = "kms-agent-dev"


def dev_config(directory: Path):
    """Create (or reuse) a dev token under ``directory``; return its config.

    Raises:
        StartupError: SoftHSM2 is missing, or ``directory`` exists but is
            owned by another user or writable by group or others.
    """
    from agent.keystore import softhsm

    prepare_dev_directory(directory)
    module = softhsm.find_softhsm_module()
    if module is None:
        raise StartupError("dev mode needs SoftHSM2: install the softhsm2 package")
    token = softhsm.init_token(directory / "token", DEV_TOKEN_LABEL)
    raw = {
        "agent": {"socket": "agent.sock", "data_dir": "data", "socket_mode": "0600",
                  "purge_interval": 5},
        # A developer watches each request go by.
        "log": {"level": "info", "format": "auto", "requests": "all"},
        "keystores": {"default": {
            "type": "pkcs11", "module": str(module), "token_label": token.label,
            "pin_file": str(token.pin_file), "softhsm2_conf": str(token.conf_path),
        }},
    }
    return parse_config(raw, base_dir=directory.resolve())


def prepare_dev_directory(directory: Path) -> None:
    """Create ``directory`` with mode 0700, or check the existing one.

    Another user who owns the directory or can write to it could replace
    the socket, the token or the store in it.

    Raises:
        StartupError: the directory is owned by another user or is
            writable by group or others.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        status = os.stat(directory)
    except OSError as exc:
        raise StartupError(f"cannot create the dev directory {directory}: "
                           f"{exc.strerror}") from None
    if status.st_uid != os.geteuid():
        raise StartupError(
            f"the dev directory {directory} is owned by uid {status.st_uid}, not "
            f"by this user (uid {os.geteuid()}); use a directory of your own")
    if status.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise StartupError(
            f"the dev directory {directory} is writable by group or others (mode "
            f"{stat.S_IMODE(status.st_mode):04o}); run 'chmod go-w {directory}' "
            "or use a new directory")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kms-agent",
        description="A local key management service with the Alibaba Cloud KMS "
                    "API, on a PKCS#11 HSM.",
        epilog="kms-agent restore BACKUP DATA_DIR restores a backup made by "
               "kmsctl backup into a new data directory (see its --help).")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--config", type=Path, metavar="PATH",
                      help="TOML configuration file")
    mode.add_argument("--dev", type=Path, metavar="DIR",
                      help="throwaway agent with its own SoftHSM2 token under DIR")
    mode.add_argument("--check-config", type=Path, metavar="PATH",
                      help="validate a configuration file and the mode of its "
                           "data directory, and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    from agent.daemon import run_agent

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["restore"]:
        from agent.ops import restore

        return restore.main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        if args.check_config:
            config = load_config(args.check_config)
            check_data_dir(config.data_dir)
            print(f"{args.check_config}: valid")
            return 0
        config = dev_config(args.dev) if args.dev else load_config(args.config)
        setup_logging(config.log_level, config.log_format)
        if args.dev:
            print(f"kms-agent dev mode: export KMS_AGENT_SOCKET={config.socket}",
                  file=sys.stderr, flush=True)
        trio.run(run_agent, config)
    except (ConfigError, StartupError) as exc:
        print(f"kms-agent: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0
