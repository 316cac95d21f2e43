"""``kmsctl write-csr``, ``upload-certificate`` and ``export-tls-bundle``.

Shortcuts for the certificate steps that involve files. ``write-csr``
writes the PEM request of a certificate for a CA, ``upload-certificate``
uploads the issued certificate and its issuers from files, and
``export-tls-bundle`` writes a TLS server's certificate file (the
certificate, then its issuers) and private key file. Key files are
created with mode 0600 and replace OUT only when complete. Failures
raise ``KmsError``; ``client.cli`` prints them and picks the exit status.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, TextIO

from client.cli_words import (
    ClientFactory, connected, find_subcommand, option_value, timeout_seconds,
)
from client.errors import InvalidParameterError

DEFAULT_TIMEOUT = 30.0
# The number of words (after the command) each command takes; None is any.
COMMANDS = {
    "write-csr": (2, 2),
    "upload-certificate": (2, None),
    "export-tls-bundle": (3, 3),
}
USAGE = {
    "write-csr": "write-csr CERTIFICATE_ID OUT",
    "upload-certificate": "upload-certificate CERTIFICATE_ID CERTIFICATE [CHAIN ...]",
    "export-tls-bundle": "export-tls-bundle CERTIFICATE_ID CERT_OUT KEY_OUT",
}
_GLOBAL_OPTIONS = frozenset({"socket", "timeout"})

HELP = """\
usage: kmsctl [--socket PATH] [--timeout SECONDS] write-csr CERTIFICATE_ID OUT
       kmsctl [options] upload-certificate CERTIFICATE_ID CERTIFICATE [CHAIN ...]
       kmsctl [options] export-tls-bundle CERTIFICATE_ID CERT_OUT KEY_OUT
              [--Passphrase TEXT | --Passphrase file://PATH]

write-csr           writes the PEM certificate request made by CreateCertificate
                    to OUT, or to stdout for -.
upload-certificate  uploads the issued certificate in the file CERTIFICATE and
                    its issuers from the CHAIN files, in any order; a file may
                    contain several PEM certificates.
export-tls-bundle   exports an exportable certificate key as PEM and writes the
                    certificate followed by its issuers to CERT_OUT and the
                    private key to KEY_OUT (mode 0600). With --Passphrase the
                    key is encrypted with it (read from a file with file://).
"""

@dataclasses.dataclass
class CertificateInvocation:
    """A parsed certificate command line."""

    command: str = ""
    socket: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    help: bool = False
    passphrase: str | None = None
    words: list[str] = dataclasses.field(default_factory=list)


def find_command(argv: list[str]) -> str | None:
    """Return the certificate command ``argv`` runs, else None."""
    return find_subcommand(argv, COMMANDS, _GLOBAL_OPTIONS)


def parse_certificate_command(argv: list[str]) -> CertificateInvocation:
    """Parse a certificate command line.

    Raises:
        InvalidParameterError: an unknown option, a missing value or the
            wrong number of arguments.
    """
    invocation = CertificateInvocation()
    tokens = list(argv)
    while tokens:
        token = tokens.pop(0)
        name, equals, value = token[2:].partition("=")
        if token in ("-h", "--help"):
            invocation.help = True
            continue
        if token.startswith("--") and name in (*_GLOBAL_OPTIONS, "Passphrase"):
            _set_option(invocation, name, option_value(name, equals, value, tokens))
        elif token.startswith("-") and token != "-":
            raise InvalidParameterError(
                f"Unknown option {token!r}. Run kmsctl {invocation.command or ''} "
                "--help.")
        elif not invocation.command:
            invocation.command = token
        else:
            invocation.words.append(token)
    _check_words(invocation)
    return invocation


def _set_option(invocation: CertificateInvocation, name: str, value: str) -> None:
    if name == "socket":
        invocation.socket = value
    elif name == "Passphrase":
        invocation.passphrase = _read_passphrase(value)
    else:
        invocation.timeout = timeout_seconds(value)


def _read_passphrase(value: str) -> str:
    if not value.startswith("file://"):
        return value
    path = value[len("file://"):]
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidParameterError(
            f"Cannot read --Passphrase from {path}: {error}.") from None
    return text.removesuffix("\n").removesuffix("\r")


def _check_words(invocation: CertificateInvocation) -> None:
    if invocation.help:
        return
    if invocation.passphrase is not None and invocation.command != "export-tls-bundle":
        raise InvalidParameterError("Only export-tls-bundle takes --Passphrase.")
    low, high = COMMANDS[invocation.command]
    count = len(invocation.words)
    if count < low or (high is not None and count > high):
        raise InvalidParameterError(
            f"Usage: kmsctl {USAGE[invocation.command]}; run kmsctl "
            f"{invocation.command} --help.")


def run(argv: list[str], *, client_factory: ClientFactory | None, stdout: TextIO,
        stderr: TextIO) -> int:
    """Run one certificate command line; return the exit status.

    Raises:
        KmsError: bad arguments, an unreachable agent or a failed request.
    """
    invocation = parse_certificate_command(argv)
    if invocation.help:
        stdout.write(HELP)
        return 0
    with connected(client_factory or _default_client, invocation.socket,
                   invocation.timeout) as client:
        if invocation.command == "write-csr":
            _write_csr(client, invocation.words, stdout)
        elif invocation.command == "upload-certificate":
            _upload(client, invocation.words, stdout)
        else:
            _export_bundle(client, invocation, stdout)
    return 0


def _write_csr(client: Any, words: list[str], stdout: TextIO) -> None:
    certificate_id, out = words
    request = client.get_certificate(certificate_id)["Csr"]
    if not request:
        raise InvalidParameterError(
            f"The certificate {certificate_id} was imported and has no request.")
    if out == "-":
        stdout.write(request)
        return
    write_file(Path(out), request, 0o644)
    _report(stdout, CertificateId=certificate_id, Csr=out)


def _upload(client: Any, words: list[str], stdout: TextIO) -> None:
    certificate_id, certificate_path, *chain_paths = words
    certificate = _read_text(certificate_path)
    chain = "".join(_read_text(path) for path in chain_paths) or None
    client.upload_certificate(certificate_id, certificate, chain)
    status = client.describe_certificate(certificate_id)["Status"]
    _report(stdout, CertificateId=certificate_id, Status=status)


def _export_bundle(client: Any, invocation: CertificateInvocation,
                   stdout: TextIO) -> None:
    certificate_id, certificate_out, key_out = invocation.words
    exported = client.export_certificate(certificate_id, "PEM", invocation.passphrase)
    write_file(Path(certificate_out),
               exported["Certificate"] + exported["CertificateChain"], 0o644)
    write_file(Path(key_out), exported["PrivateKey"], 0o600)
    _report(stdout, CertificateId=certificate_id, Certificate=certificate_out,
            PrivateKey=key_out, Encrypted=invocation.passphrase is not None)


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidParameterError(
            f"Cannot read PEM text from {path}: {error}.") from None


def write_file(path: Path, text: str, mode: int) -> None:
    """Write ``text`` to ``path`` with ``mode``, replacing it only when complete."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                             | os.O_CLOEXEC, mode)
    except OSError as error:
        raise InvalidParameterError(
            f"Cannot write {path}: {error.strerror}.") from None
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as output:
            output.write(text)
            output.flush()
            os.fsync(output.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _report(stdout: TextIO, **fields: Any) -> None:
    stdout.write(json.dumps(fields, indent=2) + "\n")


def _default_client(socket_path: str | None, timeout: float) -> Any:
    from client.retry import RetryPolicy
    from client.sync import KmsClient

    return KmsClient(socket_path, timeout=timeout, retries=RetryPolicy())

