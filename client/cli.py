"""``kmsctl``: call any agent operation from the shell, or seal files.

``kmsctl <Operation> --ParamName value ...`` sends one request, shaped
like the Alibaba Cloud CLI, and prints the reply as indented JSON with
bytes as Base64. ``encrypt-file`` and ``decrypt-file`` run the streaming
envelope format of ``client.envelope``; ``audit verify`` checks the hash
chain of audit files (``client.audit``), and ``gateway`` writes the HTTP
gateway's credentials (``client.gateway``). Values are converted by name
and form, as ``HELP`` describes. Errors go to stderr as a JSON map of Code,
Message, HttpStatus and RequestId. The exit status is 1 for caller
errors (HTTP 4xx and bad arguments) and 2 for agent or connection errors.
On SIGINT, SIGTERM or SIGHUP, kmsctl removes its temporary files and
exits with 128 plus the signal number.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import json
import os
import re
import signal
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, NoReturn, TextIO

from client import admin, audit, certificate_cli, envelope, gateway, startup
from client.cli_words import timeout_seconds
from client.errors import (
    InvalidParameterError,
    KmsError,
    MissingParameterError,
    ServerUnreachableError,
)
from client.wire import SOCKET_ENV, LocalProtocolError

DEFAULT_TIMEOUT = 30.0

# Parameters the cloud API sends as Base64; the agent takes raw bytes.
BINARY_PARAMS = frozenset({
    "CiphertextBlob", "PublicKeyBlob", "Digest", "Value", "Message", "Mac",
    "SignatureValue", "EncryptedKeyMaterial", "PKCS12Blob",
})
INTEGER_PARAMS = frozenset({
    "NumberOfBytes", "Length", "PendingWindowInDays", "PageNumber", "PageSize",
    "PasswordLength", "KeyMaterialExpireUnix", "RecoveryWindowInDays",
    "TimeoutSeconds", "DataKeyUsageBytes",
})
# Free text that is sent exactly as given, even if it looks like JSON or
# a boolean. Policy documents stay JSON text, as in the cloud API.
VERBATIM_PARAMS = frozenset({
    "Description", "SecretData", "Policy", "ExcludeCharacters",
    "DeletionProtectionDescription", "Password", "Passphrase",
})
FILE_COMMANDS = {
    "encrypt-file": ({"KeyId", "EncryptionContext"}, {"KeyId"}),
    "decrypt-file": ({"EncryptionContext"}, set()),
}

_OPERATION = re.compile(r"[A-Z][A-Za-z0-9]*")
_PARAM_NAME = re.compile(r"[A-Z][A-Za-z0-9.]*")

def _wrapped_names(label: str, names: frozenset[str]) -> str:
    return textwrap.fill(f"{label}: {', '.join(sorted(names))}.", width=76,
                         initial_indent="  ", subsequent_indent="    ")


HELP = f"""\
usage: kmsctl [--socket PATH] [--timeout SECONDS] <Operation> [--ParamName VALUE ...]
       kmsctl [options] encrypt-file --KeyId KEY [--EncryptionContext JSON] IN OUT
       kmsctl [options] decrypt-file [--EncryptionContext JSON] IN OUT
       kmsctl [options] get-secret NAME | exec --env VAR=SECRET ... -- PROGRAM
       kmsctl [options] render TEMPLATE OUTPUT
       kmsctl audit verify FILE [FILE ...]
       kmsctl gateway create-access-key | create-client-key --principal NAME ...
       kmsctl [options] health [--live] | backup OUT
       kmsctl [options] write-csr | upload-certificate | export-tls-bundle ...

Calls one operation of the agent, named as in the Alibaba Cloud KMS API,
and prints the reply as JSON; bytes in the reply are shown as Base64.
  kmsctl CreateKey --Description 'app key'
  kmsctl Encrypt --KeyId alias/app --Plaintext hello --EncryptionContext '{{"app":"x"}}'
  kmsctl Decrypt --CiphertextBlob file://blob.b64

Commands:
  <Operation>    any PascalCase operation, such as Encrypt or ListKeys
  encrypt-file   encrypt IN to OUT under a new data key of --KeyId
  decrypt-file   decrypt IN to OUT; give the --EncryptionContext used to
                 encrypt. IN or OUT may be - for stdin or stdout. OUT is
                 replaced only on success, except when it is stdout.
  get-secret, exec, render
                 deliver secrets to a starting program: print one, run a
                 program with secrets in its environment, or fill a
                 template; kmsctl exec --help describes them
  health, backup check the agent's health (exit 0 ready, 3 not ready) or
                 write a snapshot of its store; kmsctl health --help
                 describes them
  audit verify   check the hash chain of agent audit files; exits 1 and
                 names the first bad line when a file was altered
  gateway        create AccessKey pairs and client key files for the HTTP
                 gateway; kmsctl gateway --help describes them
  write-csr, upload-certificate, export-tls-bundle
                 certificate files: write a certificate request, upload an
                 issued certificate and its chain, or write a TLS server's
                 certificate and key files; kmsctl write-csr --help
                 describes them

Options:
  --socket PATH      agent socket (default: ${SOCKET_ENV}, else the client default)
  --timeout SECONDS  seconds to wait for each reply (default: {DEFAULT_TIMEOUT:g})
  -h, --help         show this help

Parameter values are converted by name and form:
  JSON object or array text: sent as a map or list.
  true or false: sent as a boolean.
{_wrapped_names("Integers", INTEGER_PARAMS)}
{_wrapped_names("Base64 text, sent as bytes", BINARY_PARAMS)}
  Plaintext: sent as the UTF-8 bytes of the text.
{_wrapped_names("Always sent as text", VERBATIM_PARAMS)}
  file://PATH or -: the value is read from a file or from stdin. Plaintext
    is read as raw bytes. Other values are read as UTF-8 text, and one
    trailing newline is dropped unless the value is always sent as text.

Exit status: 0 on success, 1 for caller errors (HTTP 4xx, bad arguments),
2 for agent and connection errors, 128 + N when stopped by signal N (130
for SIGINT, 143 for SIGTERM, 129 for SIGHUP), after removing temporary
files.
"""


@dataclasses.dataclass
class Invocation:
    """A parsed command line: global options, the command and its inputs."""

    command: str | None = None
    params: dict[str, str] = dataclasses.field(default_factory=dict)
    paths: list[str] = dataclasses.field(default_factory=list)
    socket: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    help: bool = False


ClientFactory = Callable[[str | None, float], Any]

# SIGTERM and SIGHUP raise an exception, as SIGINT does, so the commands
# remove their temporary output files before kmsctl exits.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class _Stopped(BaseException):
    """A signal from ``STOP_SIGNALS``, raised by its handler.

    It derives from BaseException, so ``except Exception`` does not catch it.
    """

    def __init__(self, signal_number: int):
        super().__init__(signal_number)
        self.signal_number = signal_number


def main() -> NoReturn:
    """Run ``kmsctl`` with ``sys.argv`` and exit with its status."""
    _raise_on_stop_signals()
    try:
        status = run(sys.argv[1:])
    except KeyboardInterrupt:
        status = 128 + signal.SIGINT
    except _Stopped as stopped:
        status = 128 + stopped.signal_number
    sys.exit(status)


def _raise_on_stop_signals() -> None:
    for number in STOP_SIGNALS:
        # A signal the parent ignored stays ignored, as nohup expects for
        # SIGHUP. exec resets the handler, so a program run by kmsctl exec
        # gets the default action.
        if signal.getsignal(number) == signal.SIG_DFL:
            signal.signal(number, _raise_stopped)


def _raise_stopped(number: int, frame: Any) -> None:
    raise _Stopped(number)


def run(argv: list[str], *, client_factory: ClientFactory | None = None,
        stdin: BinaryIO | None = None, stdout: TextIO | None = None,
        stderr: TextIO | None = None) -> int:
    """Run one ``kmsctl`` command line and return its exit status.

    ``client_factory(socket_path, timeout)`` builds the agent client; the
    default is ``client.sync.KmsClient``. The streams default to the
    process's own.
    """
    stdin = stdin if stdin is not None else sys.stdin.buffer
    stdout = stdout if stdout is not None else sys.stdout
    stderr = stderr if stderr is not None else sys.stderr
    if argv[:1] == ["audit"]:
        return audit.run(argv[1:], stdout, stderr)
    if argv[:1] == ["gateway"]:
        return gateway.run(argv[1:], stdout, stderr)
    try:
        if admin.find_command(argv) is not None:
            return admin.run(argv, client_factory=client_factory, stdout=stdout,
                             stderr=stderr)
        if startup.find_command(argv) is not None:
            return startup.run(argv, client_factory=client_factory, stdout=stdout,
                               stderr=stderr)
        if certificate_cli.find_command(argv) is not None:
            return certificate_cli.run(argv, client_factory=client_factory,
                                       stdout=stdout, stderr=stderr)
        invocation = parse_command_line(argv)
        if invocation.help or invocation.command is None:
            (stdout if invocation.help else stderr).write(HELP)
            return 0 if invocation.help else 1
        factory = client_factory or _connect
        socket_path = invocation.socket or os.environ.get(SOCKET_ENV) or None
        if invocation.command in FILE_COMMANDS:
            _run_file_command(invocation, factory, socket_path, stdin, stderr)
            return 0
        params = convert_params(invocation.params, stdin)
        with _agent_client(factory, socket_path, invocation.timeout) as client:
            reply = client.call(invocation.command, **params)
    except (KmsError, LocalProtocolError) as error:
        return _report_error(error, stderr)
    stdout.write(format_reply(reply) + "\n")
    return 0


def _report_error(error: KmsError | LocalProtocolError, stderr: TextIO) -> int:
    # The client checks its inputs before sending them, so a value the
    # protocol forbids should not reach the wire layer. If one does, it most
    # likely came from the caller's input (such as a client key file), so
    # it is reported as InvalidParameter instead of a traceback.
    if isinstance(error, LocalProtocolError):
        error = InvalidParameterError(f"The request cannot be sent: {error}.")
    stderr.write(format_error(error) + "\n")
    return 1 if 400 <= error.http_status < 500 else 2


def parse_command_line(argv: list[str]) -> Invocation:
    """Split a command line into global options, the command and its inputs.

    ``--Name value`` and ``--Name=value`` set parameters, whose names are
    PascalCase. Global options may stand anywhere. ``--`` ends options.

    Raises:
        InvalidParameterError: an option is unknown, repeated or lacks a value.
    """
    invocation = Invocation()
    tokens = list(argv)
    position = 0
    options_ended = False
    while position < len(tokens):
        token = tokens[position]
        position += 1
        if options_ended or not token.startswith("-") or token == "-":
            _add_word(invocation, token)
        elif token == "--":
            options_ended = True
        elif token in ("-h", "--help"):
            invocation.help = True
        else:
            name, value, position = _split_option(tokens, position, token)
            _add_option(invocation, name, value)
    _check_invocation(invocation)
    return invocation


def convert_params(raw: dict[str, str], stdin: BinaryIO) -> dict[str, Any]:
    """Convert parameter text from the command line to request values.

    Raises:
        InvalidParameterError: a value cannot be read or converted.
    """
    readers = [name for name, text in raw.items() if text == "-"]
    if len(readers) > 1:
        raise InvalidParameterError(
            f"Only one parameter can be read from stdin, not {', '.join(readers)}.")
    return {name: _convert_value(name, text, stdin) for name, text in raw.items()}


def format_reply(reply: Any) -> str:
    """Return a reply as indented JSON, with bytes as Base64 text."""
    return json.dumps(reply, indent=2, ensure_ascii=False, default=_json_default)


def format_error(error: KmsError) -> str:
    """Return the four error fields as indented JSON."""
    return json.dumps(error.to_wire(), indent=2, ensure_ascii=False)


def _split_option(tokens: list[str], position: int,
                  token: str) -> tuple[str, str, int]:
    name, equals, value = token[2:].partition("=")
    if not token.startswith("--") or not name:
        raise InvalidParameterError(f"Unknown option {token!r}. Run kmsctl --help.")
    if equals:
        return name, value, position
    if position >= len(tokens):
        raise InvalidParameterError(f"The option --{name} needs a value.")
    return name, tokens[position], position + 1


def _add_option(invocation: Invocation, name: str, value: str) -> None:
    if name == "socket":
        invocation.socket = value
    elif name == "timeout":
        invocation.timeout = timeout_seconds(value)
    elif not _PARAM_NAME.fullmatch(name):
        raise InvalidParameterError(
            f"Unknown option --{name}. Parameters are PascalCase, such as --KeyId.")
    elif name in invocation.params:
        raise InvalidParameterError(f"The parameter --{name} is given twice.")
    else:
        invocation.params[name] = value


def _add_word(invocation: Invocation, word: str) -> None:
    if invocation.command is None:
        invocation.command = word
    else:
        invocation.paths.append(word)


def _check_invocation(invocation: Invocation) -> None:
    command = invocation.command
    if invocation.help or command is None:
        return
    if command in FILE_COMMANDS:
        _check_file_command(invocation)
    elif not _OPERATION.fullmatch(command):
        raise InvalidParameterError(
            f"Unknown command {command!r}. Operations are PascalCase, such as "
            "ListKeys; run kmsctl --help for the others.")
    elif invocation.paths:
        raise InvalidParameterError(
            f"Unexpected argument {invocation.paths[0]!r}; parameters are given "
            "as --ParamName value.")


def _check_file_command(invocation: Invocation) -> None:
    allowed, required = FILE_COMMANDS[invocation.command or ""]
    for name in invocation.params:
        if name not in allowed:
            raise InvalidParameterError(
                f"{invocation.command} does not take --{name}.")
    missing = sorted(required - invocation.params.keys())
    if missing:
        raise MissingParameterError(f"{invocation.command} needs --{missing[0]}.")
    if len(invocation.paths) != 2:
        raise InvalidParameterError(
            f"{invocation.command} needs two paths, IN and OUT (- for stdin or "
            f"stdout), not {len(invocation.paths)}.")


def _convert_value(name: str, text: str, stdin: BinaryIO) -> Any:
    if text == "-":
        return _convert_loaded(name, stdin.read(), "stdin")
    if text.startswith("file://"):
        path = text[len("file://"):]
        try:
            with open(path, "rb") as source:
                data = source.read()
        except OSError as error:
            raise InvalidParameterError(
                f"Cannot read --{name} from {path}: {error.strerror}.") from None
        return _convert_loaded(name, data, path)
    if name == "Plaintext":
        return text.encode("utf-8")
    return _convert_text(name, text)


def _convert_loaded(name: str, data: bytes, origin: str) -> Any:
    """Convert a value read from a file or stdin."""
    if name == "Plaintext":
        return data
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidParameterError(
            f"--{name} read from {origin} is not UTF-8 text.") from None
    if name not in VERBATIM_PARAMS:
        text = text.removesuffix("\n").removesuffix("\r")
    return _convert_text(name, text)


def _convert_text(name: str, text: str) -> Any:
    if name in VERBATIM_PARAMS:
        return text
    if name in BINARY_PARAMS:
        return _decode_base64(name, text)
    if name in INTEGER_PARAMS:
        return _parse_integer(name, text)
    if text in ("true", "false"):
        return text == "true"
    if text.lstrip().startswith(("{", "[")):
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise InvalidParameterError(
                f"--{name} is not valid JSON: {error.msg} at character "
                f"{error.pos}.") from None
    return text


def _decode_base64(name: str, text: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidParameterError(f"--{name} must be Base64 text.") from None


def _parse_integer(name: str, text: str) -> int:
    try:
        return int(text.strip(), 10)
    except ValueError:
        raise InvalidParameterError(
            f"--{name} must be an integer, not {text!r}.") from None


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"cannot show a {type(value).__name__} as JSON")


def _connect(socket_path: str | None, timeout: float) -> Any:
    from client.retry import RetryPolicy
    from client.sync import KmsClient

    # A command run by hand retries throttling and transient failures.
    return KmsClient(socket_path, timeout=timeout, retries=RetryPolicy())


@contextlib.contextmanager
def _agent_client(factory: ClientFactory, socket_path: str | None,
                  timeout: float) -> Iterator[Any]:
    """Yield a client from ``factory`` and close it after the block.

    The client library reports connection failures as KmsError itself; an
    OSError that escapes it is turned into SDK.ServerUnreachable here.
    """
    try:
        client = factory(socket_path, timeout)
    except OSError as error:
        raise _unreachable(error) from None
    try:
        yield client
    except ConnectionError as error:
        raise _unreachable(error) from None
    finally:
        close = getattr(client, "close", None)
        if close is not None:
            close()


def _unreachable(error: OSError) -> ServerUnreachableError:
    return ServerUnreachableError(
        f"The agent socket cannot be reached: {error.strerror or error}.")


def _run_file_command(invocation: Invocation, factory: ClientFactory,
                      socket_path: str | None, stdin: BinaryIO,
                      stderr: TextIO) -> None:
    in_path, out_path = invocation.paths
    context = _file_context(invocation, stdin)
    progress = _progress_bar(stderr, envelope.input_size(in_path))
    try:
        with _agent_client(factory, socket_path, invocation.timeout) as client:
            _seal_or_open(invocation, client, in_path, out_path, context, progress)
    except OSError as error:
        raise InvalidParameterError(_describe_os_error(error)) from None
    finally:
        if progress is not None:
            progress.finish()


def _file_context(invocation: Invocation, stdin: BinaryIO) -> dict[str, str] | None:
    text = invocation.params.get("EncryptionContext")
    if text is None:
        return None
    if text == "-" and "-" in invocation.paths[:1]:
        raise InvalidParameterError(
            "--EncryptionContext and IN cannot both be read from stdin.")
    context = _convert_value("EncryptionContext", text, stdin)
    envelope.canonical_context(context)
    return context


def _seal_or_open(invocation: Invocation, client: Any, in_path: str, out_path: str,
                  context: dict[str, str] | None, progress: Any) -> None:
    if invocation.command == "encrypt-file":
        envelope.encrypt_file(client, invocation.params["KeyId"], in_path, out_path,
                              encryption_context=context, progress=progress)
    else:
        envelope.decrypt_file(client, in_path, out_path, encryption_context=context,
                              progress=progress)


def _describe_os_error(error: OSError) -> str:
    if error.filename:
        return f"Cannot use the file {error.filename}: {error.strerror or error}."
    return f"File input or output failed: {error.strerror or error}."


def _progress_bar(stream: TextIO, total: int | None) -> _ProgressBar | None:
    isatty = getattr(stream, "isatty", None)
    if isatty is None or not isatty():
        return None
    return _ProgressBar(stream, total)


class _ProgressBar:
    """A one-line progress display on a terminal, redrawn at most 10 times/s."""

    def __init__(self, stream: TextIO, total: int | None):
        self._stream = stream
        self._total = total
        self._done = 0
        self._last_draw = 0.0

    def __call__(self, done: int) -> None:
        self._done = done
        now = time.monotonic()
        if now - self._last_draw >= 0.1:
            self._last_draw = now
            self._draw()

    def finish(self) -> None:
        self._draw()
        self._stream.write("\n")
        self._stream.flush()

    def _draw(self) -> None:
        done_mib = self._done / 2**20
        if self._total:
            fraction = min(self._done / self._total, 1.0)
            bar = "#" * int(fraction * 30)
            line = (f"\r[{bar:<30}] {fraction:4.0%} {done_mib:.1f}/"
                    f"{self._total / 2**20:.1f} MiB")
        else:
            line = f"\r{done_mib:.1f} MiB"
        self._stream.write(line)
        self._stream.flush()
