"""``kmsctl gateway``: credentials for the agent's HTTP gateway.

``create-access-key`` makes an AccessKey pair for a principal, appends
it to the gateway credentials file and prints the id and secret once;
the official OpenAPI SDKs sign with it. ``create-client-key`` makes an
RSA 2048 client key for a principal, writes the client key file the
dedicated-instance SDK loads (``{"KeyId", "PrivateKeyData"}``, the
private key and a self-signed certificate in a password-protected
PKCS#12, as Alibaba Cloud issues them) and appends the public key to the
credentials file. The agent rereads the credentials file when it
changes, so new credentials work at once; deleting an entry revokes it.

The credentials file and client key files are created with mode 0600,
and an existing credentials file that group or others can access is
refused, since it contains AccessKey secrets. Appends take an exclusive
lock, so two runs at once do not interleave. ``cryptography`` is
imported only here, when a client key is made.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import fcntl
import json
import os
import re
import secrets
import string
import uuid
from typing import TextIO

from client.errors import InvalidParameterError

USAGE = """\
usage: kmsctl gateway create-access-key --principal NAME --credentials-file PATH
       kmsctl gateway create-client-key --principal NAME --credentials-file PATH
                                        --output FILE [--password-file FILE]
                                        [--days N]
"""
ACCESS_KEY_PREFIX = "LTAI"
CLIENT_KEY_PREFIX = "KAAP."
_ALPHANUMERIC = string.ascii_letters + string.digits
_PRINCIPAL = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_DAYS = 3650
CLOCK_ALLOWANCE = datetime.timedelta(minutes=5)


def run(argv: list[str], stdout: TextIO, stderr: TextIO) -> int:
    """Run ``kmsctl gateway ARGS``; return the exit status."""
    parser = _parser()
    if not argv or argv[0] in ("-h", "--help"):
        (stdout if argv else stderr).write(USAGE)
        return 0 if argv else 1
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        if args.command == "create-access-key":
            reply = create_access_key(args.principal, args.credentials_file)
        else:
            reply = create_client_key(args.principal, args.credentials_file,
                                      args.output, args.password_file, args.days)
    except InvalidParameterError as error:
        stderr.write(f"kmsctl gateway: {error.message}\n")
        return 1
    stdout.write(json.dumps(reply, indent=2) + "\n")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kmsctl gateway", usage=USAGE)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("create-access-key", "create-client-key"):
        command = commands.add_parser(name)
        command.add_argument("--principal", required=True,
                             help="the principal the credential stands for")
        command.add_argument("--credentials-file", required=True,
                             help="the agent's [gateway] credentials_file")
        if name == "create-client-key":
            command.add_argument("--output", required=True,
                                 help="the client key file to write (JSON)")
            command.add_argument("--password-file",
                                 help="file whose first line is the PKCS#12 "
                                      "password (default: a new one, printed)")
            command.add_argument("--days", type=int, default=365,
                                 help="days the key stays valid (default 365)")
    return parser


def create_access_key(principal: str, credentials_file: str) -> dict[str, str]:
    """Make an AccessKey pair for ``principal``; return its id and secret.

    Raises:
        InvalidParameterError: a bad principal name, or a credentials
            file that cannot be written or is accessible to others.
    """
    _check_principal(principal)
    key_id = ACCESS_KEY_PREFIX + _random_text(20)
    secret = _random_text(30)
    _append(credentials_file,
            f"\n[access_keys.{key_id}]\nprincipal = {json.dumps(principal)}\n"
            f"secret = {json.dumps(secret)}\n")
    return {"AccessKeyId": key_id, "AccessKeySecret": secret,
            "Principal": principal, "CredentialsFile": credentials_file}


def create_client_key(principal: str, credentials_file: str, output: str,
                      password_file: str | None, days: int) -> dict[str, str]:
    """Make an RSA client key for ``principal`` and write its key file.

    Returns the client key id, the file, and the password when a new one
    was made.

    Raises:
        InvalidParameterError: a bad principal or validity, an output
            file that exists, or a file that cannot be read or written.
    """
    from cryptography.hazmat.primitives.asymmetric import rsa

    _check_principal(principal)
    if not 1 <= days <= MAX_DAYS:
        raise InvalidParameterError(f"--days must be 1 to {MAX_DAYS}.")
    password = _read_password(password_file) if password_file else _random_text(24)
    key_id = CLIENT_KEY_PREFIX + str(uuid.uuid4())
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    # Valid from a few minutes back, so an agent whose clock is slightly
    # behind accepts the key at once.
    not_before = now - CLOCK_ALLOWANCE
    not_after = now + datetime.timedelta(days=days)
    pkcs12 = _pkcs12(key_id, key, not_before, not_after, password)
    document = {"KeyId": key_id,
                "PrivateKeyData": base64.b64encode(pkcs12).decode("ascii")}
    _write_new(output, json.dumps(document) + "\n")
    _append(credentials_file,
            f"\n[client_keys.{json.dumps(key_id)}]\n"
            f"principal = {json.dumps(principal)}\n"
            f"public_key = '''\n{_public_pem(key)}'''\n"
            f"not_before = \"{not_before:%Y-%m-%dT%H:%M:%SZ}\"\n"
            f"not_after = \"{not_after:%Y-%m-%dT%H:%M:%SZ}\"\n")
    reply = {"ClientKeyId": key_id, "ClientKeyFile": output, "Principal": principal,
             "NotAfter": f"{not_after:%Y-%m-%dT%H:%M:%SZ}"}
    if not password_file:
        reply["Password"] = password
    return reply


def _pkcs12(key_id: str, key: object, not_before: datetime.datetime,
            not_after: datetime.datetime, password: str) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.serialization import (
        BestAvailableEncryption, pkcs12,
    )
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, key_id)])
    certificate = (x509.CertificateBuilder()
                   .subject_name(name).issuer_name(name)
                   .public_key(key.public_key())  # type: ignore[attr-defined]
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(not_before).not_valid_after(not_after)
                   .sign(key, hashes.SHA256()))  # type: ignore[arg-type]
    return pkcs12.serialize_key_and_certificates(
        key_id.encode("ascii"), key, certificate, None,  # type: ignore[arg-type]
        BestAvailableEncryption(password.encode("utf-8")))


def _public_pem(key: object) -> str:
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM,
        serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def _check_principal(principal: str) -> None:
    if not _PRINCIPAL.fullmatch(principal):
        raise InvalidParameterError(
            f"The principal {principal!r} must be 1-64 letters, digits, '-' or '_'.")


def _random_text(length: int) -> str:
    return "".join(secrets.choice(_ALPHANUMERIC) for _ in range(length))


def _read_password(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as stream:
            password = stream.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidParameterError(f"Cannot read the password file {path}: {exc}.") \
            from None
    if len(password) < 8:
        raise InvalidParameterError(
            f"The password in {path} must be at least 8 characters.")
    return password


def _write_new(path: str, text: str) -> None:
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise InvalidParameterError(
            f"The client key file {path} exists; choose another --output.") from None
    except OSError as exc:
        raise InvalidParameterError(f"Cannot create {path}: {exc.strerror}.") from None
    with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
        stream.write(text)


def _append(path: str, text: str) -> None:
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError as exc:
        raise InvalidParameterError(f"Cannot open {path}: {exc.strerror}.") from None
    with os.fdopen(descriptor, "a", encoding="utf-8") as stream:
        mode = os.fstat(stream.fileno()).st_mode & 0o777
        if mode & 0o077:
            raise InvalidParameterError(
                f"{path} has mode {mode:04o}; it contains secrets, so it must not be "
                f"accessible to group or others (chmod 600 {path}).")
        fcntl.flock(stream.fileno(), fcntl.LOCK_EX)
        stream.write(text)
