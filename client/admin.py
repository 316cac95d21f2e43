"""``kmsctl health`` and ``kmsctl backup``: commands for operators and probes.

``health`` calls DescribeAgentHealth, prints the reply as JSON and sets
an exit status a script or a container probe can test: 0 when the agent
is ready, 3 when it replies but is not ready (a keystore or the store is
down), 2 when it cannot be reached. ``--live`` exits 0 whenever the
agent replies, even with a refusal: DescribeAgentHealth needs
administrator on the agent. ``backup OUT`` takes a snapshot of the agent's store with
CreateAgentBackup, reads it in parts, checks its size and SHA-256, and
writes OUT (mode 0600, replaced in one rename) or stdout for ``-``.
Failures raise ``KmsError``; ``client.cli`` prints them and picks the
exit status.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from client.cli_words import (
    ClientFactory, connected, find_subcommand, option_value, timeout_seconds,
)
from client.errors import (
    CallerError, InternalFailureError, InvalidParameterError, KmsError,
)

COMMANDS = frozenset({"health", "backup"})
DEFAULT_TIMEOUT = 30.0
NOT_READY_STATUS = 3
PART_BYTES = 1 << 20
_GLOBAL_OPTIONS = frozenset({"socket", "timeout"})

HELP = """\
usage: kmsctl [--socket PATH] [--timeout SECONDS] health [--live]
       kmsctl [--socket PATH] [--timeout SECONDS] backup OUT

health   prints the agent's health as JSON. Exit status: 0 ready, 3 live
         but not ready (a keystore or the store is unavailable), 2 the agent
         cannot be reached, 1 bad arguments or no permission (it needs
         administrator on the agent). With --live, 0 whenever the agent
         replies, a refusal included (for liveness probes).
backup   writes a consistent snapshot of the agent's store to OUT (mode 0600,
         replaced only when complete and verified), or to stdout for -.
         Needs administrator on the agent. The snapshot contains key
         material only as sealed by the keystores' domain keys; restore it with
         kms-agent restore OUT DATA_DIR.
"""

@dataclasses.dataclass
class AdminInvocation:
    """A parsed ``health`` or ``backup`` command line."""

    command: str = ""
    socket: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    live: bool = False
    help: bool = False
    words: list[str] = dataclasses.field(default_factory=list)


def find_command(argv: list[str]) -> str | None:
    """Return ``health`` or ``backup`` if ``argv`` runs one, else None."""
    return find_subcommand(argv, COMMANDS, _GLOBAL_OPTIONS)


def parse_admin_command(argv: list[str]) -> AdminInvocation:
    """Parse a ``health`` or ``backup`` command line.

    Raises:
        InvalidParameterError: an option is unknown or an argument missing.
    """
    invocation = AdminInvocation()
    tokens = list(argv)
    while tokens:
        token = tokens.pop(0)
        name, equals, value = token[2:].partition("=")
        if token in ("-h", "--help"):
            invocation.help = True
        elif token.startswith("--") and name in _GLOBAL_OPTIONS:
            value = option_value(name, equals, value, tokens)
            if name == "socket":
                invocation.socket = value
            else:
                invocation.timeout = timeout_seconds(value)
        elif token == "--live" and invocation.command == "health":
            invocation.live = True
        elif token.startswith("-") and token != "-":
            raise InvalidParameterError(f"Unknown option {token!r}. Run kmsctl "
                                        f"{invocation.command or 'health'} --help.")
        elif not invocation.command:
            invocation.command = token
        else:
            invocation.words.append(token)
    _check_words(invocation)
    return invocation


def _check_words(invocation: AdminInvocation) -> None:
    if invocation.help:
        return
    expected = 1 if invocation.command == "backup" else 0
    if len(invocation.words) != expected:
        usage = "backup OUT" if expected else "health [--live]"
        raise InvalidParameterError(f"Usage: kmsctl {usage}; run kmsctl "
                                    f"{invocation.command} --help.")


def run(argv: list[str], *, client_factory: ClientFactory | None, stdout: TextIO,
        stderr: TextIO) -> int:
    """Run one ``health`` or ``backup`` command line; return the exit status.

    Raises:
        KmsError: bad arguments, an unreachable agent or a failed request.
    """
    invocation = parse_admin_command(argv)
    if invocation.help:
        stdout.write(HELP)
        return 0
    factory = client_factory or _default_client
    with connected(factory, invocation.socket, invocation.timeout) as client:
        if invocation.command == "health":
            return _health(client, invocation.live, stdout)
        return _backup(client, invocation.words[0], stdout, stderr)


def _health(client: Any, live: bool, stdout: TextIO) -> int:
    try:
        reply = client.call("DescribeAgentHealth")
    except CallerError as error:
        # A refusal (no administrator permission) is still a reply, so the
        # agent is live.
        if not live:
            raise
        reply = error.to_wire()
    stdout.write(json.dumps(reply, indent=2, ensure_ascii=False) + "\n")
    if live or reply.get("Ready") is True:
        return 0
    return NOT_READY_STATUS


def _backup(client: Any, out: str, stdout: TextIO, stderr: TextIO) -> int:
    info = client.call("CreateAgentBackup")
    backup_id = info["BackupId"]
    try:
        if out == "-":
            _receive(client, info, _binary(stdout))
            report = stderr
        else:
            _write_file(client, info, Path(out))
            report = stdout
    finally:
        with contextlib.suppress(KmsError):
            client.call("DeleteAgentBackup", BackupId=backup_id)
    summary = {key: info[key] for key in ("BackupId", "Size", "Sha256",
                                           "SchemaVersion", "CreationDate")}
    summary["Path"] = out
    report.write(json.dumps(summary, indent=2) + "\n")
    return 0


def _receive(client: Any, info: dict[str, Any], output: BinaryIO) -> None:
    # Reads every part, then checks the size and digest the agent announced.
    digest = hashlib.sha256()
    offset, size = 0, info["Size"]
    while offset < size:
        part = client.call("GetAgentBackupPart", BackupId=info["BackupId"],
                           Offset=offset, Length=PART_BYTES)
        data = part["Data"]
        if not data:
            raise InternalFailureError(
                f"The backup ended after {offset} of {size} bytes.")
        output.write(data)
        digest.update(data)
        offset += len(data)
    if offset != size or digest.hexdigest() != info["Sha256"]:
        raise InternalFailureError(
            "The backup arrived damaged (its size or SHA-256 does not match); "
            "run kmsctl backup again.")


def _write_file(client: Any, info: dict[str, Any], path: Path) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                             | os.O_CLOEXEC, 0o600)
    except OSError as error:
        raise InvalidParameterError(
            f"Cannot write the backup next to {path}: {error.strerror}.") from None
    try:
        with os.fdopen(descriptor, "wb") as output:
            _receive(client, info, output)
            output.flush()
            os.fsync(output.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _binary(stream: TextIO) -> BinaryIO:
    stream.flush()
    return getattr(stream, "buffer", sys.stdout.buffer)


def _default_client(socket_path: str | None, timeout: float) -> Any:
    from client.sync import KmsClient

    return KmsClient(socket_path, timeout=timeout)
