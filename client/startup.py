"""``kmsctl get-secret``, ``exec`` and ``render``: secrets for a starting program.

Each command first waits for the agent's socket to accept connections
(``--wait`` seconds, with capped exponential backoff and jitter), so a
program started just before its agent sidecar still gets its secrets.
Secrets are read through ``client.secrets.SecretsClient``. Secret values
never appear on a command line or in a message: ``exec`` passes them in
the environment only, and errors name secrets and fields, never values.
Files are written through ``write_private_file``: mode 0600, replaced by
an atomic rename. The template syntax of ``render`` is in ``HELP``.
Failures raise ``KmsError``; ``client.cli`` prints them and picks the
exit status.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import re
import socket
import tempfile
import time
from collections.abc import Callable
from typing import Any, TextIO

from client.cli_words import find_subcommand
from client.errors import InvalidParameterError, KmsError, ServerUnreachableError
from client.secrets import RetryPolicy, SecretsClient, SecretValue
from client.wire import SOCKET_ENV

COMMANDS = frozenset({"get-secret", "exec", "render"})
DEFAULT_WAIT = 30.0
DEFAULT_TIMEOUT = 30.0
# Retry messages start only after this many seconds, so a sidecar that
# comes up a moment late does not fill the program's stderr.
QUIET_SECONDS = 2.0
WAIT_BACKOFF = RetryPolicy(base_delay=0.05, max_delay=2.0)
# Connect errors that mean the agent has not started listening yet.
_NOT_YET_LISTENING = (FileNotFoundError, ConnectionRefusedError, BlockingIOError)

_GLOBAL_OPTIONS = frozenset({"socket", "timeout", "wait"})
_COMMAND_OPTIONS = {
    "get-secret": frozenset({"stage", "version-id", "output"}),
    "exec": frozenset({"env"}),
    "render": frozenset(),
}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

HELP = f"""\
usage: kmsctl [options] get-secret NAME [--stage STAGE | --version-id ID]
                                        [--output FILE]
       kmsctl [options] exec --env VAR=SECRET[#FIELD] ... [--] PROGRAM [ARG ...]
       kmsctl [options] render TEMPLATE OUTPUT

get-secret  prints the value of secret NAME (stage ACSCurrent unless given).
            Text is printed as is, with no newline added; binary values are
            printed as Base64 and a newline. --output writes the raw value
            to FILE instead.
exec        reads the secrets, sets each VAR to its value (binary values as
            Base64) and runs PROGRAM in place of kmsctl. SECRET#FIELD takes
            one field of a secret whose value is a JSON object. Nothing runs
            if any secret cannot be read.
render      copies TEMPLATE to OUTPUT, replacing each tag with a value:
              {{{{ secret "NAME" }}}}           the value of secret NAME
              {{{{ secret "NAME" "FIELD" }}}}   one field of a JSON object value
              {{{{ "TEXT" }}}}                  TEXT, so {{{{ "{{{{" }}}} writes {{{{
            Inside quotes, \\" is a quote and \\\\ a backslash. Whitespace
            inside a tag is free. Text outside tags, a lone }}}} included, is
            copied as is. Any other {{{{ is an error. Values are inserted as
            they are, with no quoting for the format of OUTPUT.

Files written by get-secret --output and render get mode 0600 and replace
the old file in one rename. On any error the old file stays as it was.

Options:
  --socket PATH      agent socket (default: ${SOCKET_ENV}, else the client default)
  --timeout SECONDS  seconds to wait for each reply (default: {DEFAULT_TIMEOUT:g})
  --wait SECONDS     seconds to wait for the agent socket to accept connections
                     (default: {DEFAULT_WAIT:g}; 0 tries once)

Exit status: 0 on success, 1 for caller errors (such as a missing secret or
a bad template), 2 for agent and connection errors; exec returns 126 or 127
when PROGRAM cannot be run.
"""


@dataclasses.dataclass(frozen=True)
class SecretReference:
    """A secret to read, and optionally one field of its JSON object value."""

    name: str
    field: str | None = None


@dataclasses.dataclass(frozen=True)
class EnvBinding:
    """One ``--env VAR=SECRET[#FIELD]`` of ``kmsctl exec``."""

    variable: str
    secret: SecretReference


@dataclasses.dataclass
class StartupInvocation:
    """A parsed ``get-secret``, ``exec`` or ``render`` command line."""

    command: str = ""
    socket: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    wait: float = DEFAULT_WAIT
    help: bool = False
    options: dict[str, str] = dataclasses.field(default_factory=dict)
    env: list[EnvBinding] = dataclasses.field(default_factory=list)
    words: list[str] = dataclasses.field(default_factory=list)
    program: list[str] = dataclasses.field(default_factory=list)


ClientFactory = Callable[[str | None, float], Any]
Exec = Callable[[str, list[str], dict[str, str]], Any]


def find_command(argv: list[str]) -> str | None:
    """Return the startup command that ``argv`` runs, or None for another one."""
    return find_subcommand(argv, COMMANDS, _GLOBAL_OPTIONS)


def run(argv: list[str], *, client_factory: ClientFactory | None, stdout: TextIO,
        stderr: TextIO, execvpe: Exec = os.execvpe,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep) -> int:
    """Run one startup command line and return its exit status.

    ``exec`` returns only when the program cannot be started (or when
    ``execvpe`` is replaced, as in tests).

    Raises:
        KmsError: the command line is invalid, the agent cannot be reached
            within ``--wait``, a secret cannot be read or a file written.
    """
    invocation = parse_startup_command(argv)
    if invocation.help:
        stdout.write(HELP)
        return 0
    # A bad template is reported at once, not after waiting for the agent.
    template = []
    if invocation.command == "render":
        template = parse_template(_read_text(invocation.words[0]), invocation.words[0])
    progress = _Progress(stderr, clock)
    socket_path = _socket_path(invocation)
    wait_for_socket(socket_path, invocation.wait, notify=progress.note, clock=clock,
                    sleep=sleep)
    factory = client_factory or _default_client
    with SecretsClient(factory(socket_path, invocation.timeout), clock=clock,
                       sleep=sleep, on_retry=progress.retrying) as secrets:
        if invocation.command == "get-secret":
            _get_secret(invocation, secrets, stdout, stderr)
        elif invocation.command == "render":
            _render(template, invocation.words[1], secrets, stderr)
        else:
            environment = _exec_environment(invocation, secrets, stderr)
    if invocation.command == "exec":
        return _exec(invocation.program, environment, execvpe, stdout, stderr)
    return 0


# --- command line --------------------------------------------------------------


def parse_startup_command(argv: list[str]) -> StartupInvocation:
    """Parse a ``get-secret``, ``exec`` or ``render`` command line.

    Raises:
        InvalidParameterError: an option is unknown, repeated or lacks a
            value, or an argument is missing or extra.
    """
    invocation = StartupInvocation()
    position = 0
    while position < len(argv):
        token = argv[position]
        position += 1
        if invocation.command == "exec" and token == "--":
            invocation.program = argv[position:]
            break
        if invocation.command == "exec" and not token.startswith("-"):
            invocation.program = argv[position - 1:]
            break
        if token == "--":
            invocation.words.extend(argv[position:])
            break
        if token in ("-h", "--help"):
            invocation.help = True
        elif token.startswith("--"):
            name, value, position = _split_option(argv, position, token)
            _add_option(invocation, name, value)
        elif not invocation.command:
            invocation.command = token
        else:
            invocation.words.append(token)
    if not invocation.help:
        _check_invocation(invocation)
    return invocation


def parse_env_binding(text: str) -> EnvBinding:
    """Parse ``VAR=SECRET`` or ``VAR=SECRET#FIELD``.

    Secret names cannot contain ``#``, so the first ``#`` starts the field.

    Raises:
        InvalidParameterError: VAR is not a valid variable name, or SECRET
            or FIELD is empty.
    """
    variable, equals, reference = text.partition("=")
    name, hash_sign, field = reference.partition("#")
    if not equals or not _ENV_NAME.fullmatch(variable) or not name or (
            hash_sign and not field):
        raise InvalidParameterError(
            f"--env needs VAR=SECRET or VAR=SECRET#FIELD, with VAR a valid "
            f"environment variable name, not {text!r}.")
    return EnvBinding(variable, SecretReference(name, field or None))


def _split_option(argv: list[str], position: int, token: str) -> tuple[str, str, int]:
    name, equals, value = token[2:].partition("=")
    if equals:
        return name, value, position
    if position >= len(argv):
        raise InvalidParameterError(f"The option --{name} needs a value.")
    return name, argv[position], position + 1


def _add_option(invocation: StartupInvocation, name: str, value: str) -> None:
    if name == "socket":
        invocation.socket = value
    elif name in ("timeout", "wait"):
        seconds = _parse_seconds(name, value, allow_zero=name == "wait")
        setattr(invocation, name, seconds)
    elif name not in _COMMAND_OPTIONS.get(invocation.command, ()):
        command = invocation.command or "kmsctl"
        raise InvalidParameterError(f"{command} does not take --{name}. Run "
                                    f"kmsctl {invocation.command} --help.")
    elif name == "env":
        invocation.env.append(parse_env_binding(value))
    elif name in invocation.options:
        raise InvalidParameterError(f"The option --{name} is given twice.")
    else:
        invocation.options[name] = value


def _parse_seconds(name: str, text: str, *, allow_zero: bool) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not (0 <= seconds < float("inf")) or (seconds == 0 and not allow_zero):
        kind = "a non-negative" if allow_zero else "a positive"
        raise InvalidParameterError(
            f"--{name} must be {kind} number of seconds, not {text!r}.")
    return seconds


def _check_invocation(invocation: StartupInvocation) -> None:
    command, words = invocation.command, invocation.words
    if command == "get-secret" and len(words) != 1:
        raise InvalidParameterError("get-secret needs one secret NAME.")
    if command == "get-secret" and {"stage", "version-id"} <= invocation.options.keys():
        raise InvalidParameterError("Give --stage or --version-id, not both.")
    if command == "render" and len(words) != 2:
        raise InvalidParameterError("render needs two paths, TEMPLATE and OUTPUT.")
    if command == "exec" and not invocation.program:
        raise InvalidParameterError("exec needs the PROGRAM to run after --.")
    if command == "exec" and not invocation.env:
        raise InvalidParameterError("exec needs at least one --env VAR=SECRET.")
    variables = [binding.variable for binding in invocation.env]
    duplicates = sorted({name for name in variables if variables.count(name) > 1})
    if duplicates:
        raise InvalidParameterError(f"--env sets {duplicates[0]} twice.")


# --- waiting for the agent -------------------------------------------------------


def wait_for_socket(path: str, wait: float, *,
                    notify: Callable[[str], None] | None = None,
                    clock: Callable[[], float] = time.monotonic,
                    sleep: Callable[[float], None] = time.sleep,
                    uniform: Callable[[], float] = random.random) -> None:
    """Return once the Unix socket ``path`` accepts a connection.

    While nothing listens there, the connect is retried with capped
    exponential backoff and jitter for up to ``wait`` seconds. ``notify``
    receives one message per retry.

    Raises:
        ServerUnreachableError: ``wait`` seconds passed, or the connect
            failed in a way that waiting cannot fix, such as a permission
            error.
    """
    start = clock()
    retry = 0
    while True:
        error = _try_connect(path)
        if error is None:
            return
        reason = error.strerror or str(error)
        remaining = start + wait - clock()
        if not isinstance(error, _NOT_YET_LISTENING) or remaining <= 0:
            raise _unreachable(path, wait, reason, waited=remaining <= 0)
        delay = min(WAIT_BACKOFF.delay(min(retry, 16), uniform), remaining)
        if notify is not None:
            notify(f"kmsctl: the agent socket {path} is not ready ({reason}); "
                   f"retrying in {delay:.1f} s")
        sleep(delay)
        retry += 1


def _try_connect(path: str) -> OSError | None:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as error:
        return error
    finally:
        probe.close()
    return None


def _unreachable(path: str, wait: float, reason: str, *,
                 waited: bool) -> ServerUnreachableError:
    if waited:
        return ServerUnreachableError(
            f"The agent socket {path} did not accept a connection within "
            f"{wait:g} seconds ({reason}). Start kms-agent, or name its socket "
            f"with --socket or {SOCKET_ENV}; --wait sets how long to wait.")
    return ServerUnreachableError(
        f"Cannot connect to the agent socket {path}: {reason}. Check the "
        f"socket path and that this user may open it.")


class _Progress:
    """Retry messages on stderr, shown only after ``QUIET_SECONDS``."""

    def __init__(self, stream: TextIO, clock: Callable[[], float]):
        self._stream = stream
        self._clock = clock
        self._start = clock()

    def note(self, message: str) -> None:
        if self._clock() - self._start >= QUIET_SECONDS:
            self._stream.write(message + "\n")
            self._stream.flush()

    def retrying(self, error: KmsError, retry: int, delay: float) -> None:
        self.note(f"kmsctl: the agent returned {error.code}; retry {retry} "
                  f"in {delay:.1f} s")


def _socket_path(invocation: StartupInvocation) -> str:
    from client.sync import resolve_socket_path

    return resolve_socket_path(invocation.socket)


def _default_client(socket_path: str | None, timeout: float) -> Any:
    from client.sync import KmsClient

    return KmsClient(socket_path, timeout=timeout)


# --- the commands ----------------------------------------------------------------


def _get_secret(invocation: StartupInvocation, secrets: SecretsClient,
                stdout: TextIO, stderr: TextIO) -> None:
    options = invocation.options
    value = secrets.get(invocation.words[0], stage=options.get("stage"),
                        version_id=options.get("version-id"))
    _warn_if_stale(value, stderr)
    if "output" in options:
        _write_file(options["output"], value.as_bytes())
    elif isinstance(value.data, bytes):
        stdout.write(value.as_text() + "\n")
    else:
        stdout.write(value.data)


def _render(template: list[str | SecretReference], output_path: str,
            secrets: SecretsClient, stderr: TextIO) -> None:
    rendered = []
    for part in template:
        if isinstance(part, str):
            rendered.append(part)
        else:
            rendered.append(_resolve(secrets, part, stderr))
    _write_file(output_path, "".join(rendered).encode("utf-8"))


def _exec_environment(invocation: StartupInvocation, secrets: SecretsClient,
                      stderr: TextIO) -> dict[str, str]:
    environment = dict(os.environ)
    for binding in invocation.env:
        value = _resolve(secrets, binding.secret, stderr)
        if "\0" in value:
            raise InvalidParameterError(
                f"The value of secret {binding.secret.name!r} contains a NUL "
                f"character, which an environment variable cannot hold.")
        environment[binding.variable] = value
    return environment


def _exec(program: list[str], environment: dict[str, str], execvpe: Exec,
          stdout: TextIO, stderr: TextIO) -> int:
    stdout.flush()
    stderr.flush()
    try:
        execvpe(program[0], program, environment)
    except OSError as error:
        stderr.write(f"kmsctl: cannot run {program[0]}: "
                     f"{error.strerror or error}\n")
        return 127 if isinstance(error, FileNotFoundError) else 126
    return 0


def _resolve(secrets: SecretsClient, reference: SecretReference,
             stderr: TextIO) -> str:
    value = secrets.get(reference.name)
    _warn_if_stale(value, stderr)
    if reference.field is None:
        return value.as_text()
    return value.json_field(reference.field)


def _warn_if_stale(value: SecretValue, stderr: TextIO) -> None:
    if not value.stale:
        return
    age = value.stale_age_seconds
    known_age = f", last confirmed {age:.0f} s ago" if age is not None else ""
    stderr.write(f"kmsctl: warning: the agent served secret {value.name!r} from "
                 f"its cache{known_age}\n")


# --- templates -------------------------------------------------------------------

# One token inside a tag: a quoted string, a word, or the closing braces.
_TAG_TOKEN = re.compile(r'\s*(?:"((?:[^"\\\n]|\\.)*)"|([A-Za-z]+)|(\}\}))')
_STRING_ESCAPE = re.compile(r"\\(.)")
_TAG_FORMS = 'expected {{ secret "NAME" }}, {{ secret "NAME" "FIELD" }} or {{ "TEXT" }}'


def parse_template(text: str, source: str = "template") -> list[str | SecretReference]:
    """Split a ``render`` template into literal text and secret references.

    The syntax is described in ``HELP``. Parsing only matches tags, so a
    template can never run code.

    Raises:
        InvalidParameterError: a tag is malformed or unclosed; the message
            names ``source`` and the line.
    """
    parts: list[str | SecretReference] = []
    position = 0
    while (start := text.find("{{", position)) >= 0:
        parts.append(text[position:start])
        part, position = _parse_tag(text, start, source)
        parts.append(part)
    parts.append(text[position:])
    return [part for part in parts if part != ""]


def _parse_tag(text: str, start: int, source: str) -> tuple[str | SecretReference, int]:
    tokens: list[tuple[str, str]] = []
    position = start + 2
    while True:
        match = _TAG_TOKEN.match(text, position)
        if match is None:
            raise _template_error(text, start, source, _tag_problem(text, position))
        position = match.end()
        string, word, closing = match.groups()
        if closing:
            return _tag_meaning(tokens, text, start, source), position
        if word is not None:
            tokens.append(("word", word))
        else:
            tokens.append(("string", _unescape(string, text, start, source)))


def _tag_problem(text: str, position: int) -> str:
    if text.find("}}", position) < 0:
        return "a tag opened with {{ is never closed with }}"
    return f"invalid tag, {_TAG_FORMS}"


def _tag_meaning(tokens: list[tuple[str, str]], text: str, start: int,
                 source: str) -> str | SecretReference:
    kinds = [kind for kind, _ in tokens]
    values = [value for _, value in tokens]
    if kinds == ["string"]:
        return values[0]
    if values[:1] == ["secret"] and kinds[1:] in (["string"], ["string", "string"]):
        if all(values[1:]):
            return SecretReference(*values[1:])
        raise _template_error(text, start, source,
                              "a secret name or field in a tag is empty")
    raise _template_error(text, start, source, f"invalid tag, {_TAG_FORMS}")


def _unescape(string: str, text: str, start: int, source: str) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(1) not in ('"', "\\"):
            raise _template_error(text, start, source,
                                  'only \\" and \\\\ may follow a backslash in a tag')
        return match.group(1)
    return _STRING_ESCAPE.sub(replace, string)


def _template_error(text: str, start: int, source: str,
                    problem: str) -> InvalidParameterError:
    line = text.count("\n", 0, start) + 1
    return InvalidParameterError(f"{source}, line {line}: {problem}.")


# --- files -----------------------------------------------------------------------


def write_private_file(path: str, data: bytes) -> None:
    """Replace the file ``path`` with ``data``, readable by its owner only.

    The data goes to a temporary file in the same directory, created with
    mode 0600 (mkstemp never makes it wider), synced, and renamed over
    ``path``. Readers see the old file or the whole new one, never a part,
    and on an error ``path`` is left as it was. A symbolic link at ``path``
    is replaced, not followed.

    Raises:
        OSError: the directory cannot be written, or ``path`` is a directory.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, temp_path = tempfile.mkstemp(
        dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as stream:
            os.fchmod(stream.fileno(), 0o600)
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_path)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    # The rename is durable only once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: str, data: bytes) -> None:
    try:
        write_private_file(path, data)
    except OSError as error:
        raise InvalidParameterError(
            f"Cannot write {path}: {error.strerror or error}.") from None


def _read_text(path: str) -> str:
    try:
        with open(path, "rb") as source:
            data = source.read()
    except OSError as error:
        raise InvalidParameterError(
            f"Cannot read the template {path}: {error.strerror or error}.") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidParameterError(
            f"The template {path} is not UTF-8 text.") from None
