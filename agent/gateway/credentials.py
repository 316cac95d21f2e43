"""Gateway credentials: AccessKey pairs and client keys, each of a principal.

The credentials file is TOML, written by ``kmsctl gateway`` and kept
apart from the main configuration because it contains AccessKey secrets::

    [access_keys.LTAIexample]
    principal = "app"
    secret = "..."

    [client_keys."KAAP.0b7e..."]
    principal = "app"
    public_key = "-----BEGIN PUBLIC KEY-----..."
    not_before = "2026-01-01T00:00:00Z"
    not_after = "2027-01-01T00:00:00Z"

An AccessKey signs OpenAPI requests (ACS3-HMAC-SHA256 or HMAC-SHA1); a
client key is an RSA key pair whose private half signs dedicated-instance
requests. The file must not be accessible to group or others.
``CredentialsFile`` rereads it when it changes on disk, so a key added or
removed by ``kmsctl`` takes effect at the next request; a file that fails
to load keeps the previous credentials in force.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import re
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{3,127}")
_ACCESS_KEY_FIELDS = {"principal", "secret"}
_CLIENT_KEY_FIELDS = {"principal", "public_key", "not_before", "not_after"}
MIN_SECRET_CHARS = 16
MIN_RSA_BITS = 2048


class CredentialsError(ValueError):
    """The credentials file is invalid; the message names the entry."""


@dataclasses.dataclass(frozen=True)
class AccessKey:
    """An AccessKey pair of a principal; the repr hides the secret."""

    access_key_id: str
    principal: str
    secret: str = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True)
class ClientKey:
    """The public half of a principal's RSA client key, and its validity."""

    client_key_id: str
    principal: str
    public_key: RSAPublicKey
    not_before: datetime.datetime | None
    not_after: datetime.datetime | None

    def valid_at(self, now: datetime.datetime) -> bool:
        """Return whether ``now`` lies in ``[not_before, not_after)``."""
        if self.not_before is not None and now < self.not_before:
            return False
        return self.not_after is None or now < self.not_after


@dataclasses.dataclass(frozen=True)
class Credentials:
    """The AccessKeys and client keys in force, by id."""

    access_keys: dict[str, AccessKey] = dataclasses.field(default_factory=dict)
    client_keys: dict[str, ClientKey] = dataclasses.field(default_factory=dict)


def parse_credentials(raw: dict[str, Any]) -> Credentials:
    """Validate a parsed credentials document.

    Raises:
        CredentialsError: an unknown table or field, a bad id, a short
            secret, or a public key that is not RSA of 2048 bits or more.
    """
    unknown = sorted(set(raw) - {"access_keys", "client_keys"})
    if unknown:
        raise CredentialsError(
            f"{unknown[0]}: unknown table (known: access_keys, client_keys)")
    access_keys = {key_id: _access_key(key_id, table)
                   for key_id, table in _tables(raw, "access_keys").items()}
    client_keys = {key_id: _client_key(key_id, table)
                   for key_id, table in _tables(raw, "client_keys").items()}
    return Credentials(access_keys, client_keys)


def _tables(raw: dict[str, Any], name: str) -> dict[str, dict[str, Any]]:
    tables = raw.get(name, {})
    if not isinstance(tables, dict):
        raise CredentialsError(f"{name}: expected tables [{name}.<id>]")
    for key_id, table in tables.items():
        where = f"{name}.{key_id}"
        if not _ID.fullmatch(key_id):
            raise CredentialsError(
                f"{where}: an id is 4-128 letters, digits, '.', '_' or '-'")
        if not isinstance(table, dict):
            raise CredentialsError(f"{where}: expected a table")
        fields = _ACCESS_KEY_FIELDS if name == "access_keys" else _CLIENT_KEY_FIELDS
        extra = sorted(set(table) - fields)
        if extra:
            raise CredentialsError(f"{where}.{extra[0]}: unknown field")
        if not isinstance(table.get("principal"), str) or not table["principal"]:
            raise CredentialsError(f"{where}.principal: expected a principal name")
    return tables


def _access_key(key_id: str, table: dict[str, Any]) -> AccessKey:
    secret = table.get("secret")
    if not isinstance(secret, str) or len(secret) < MIN_SECRET_CHARS:
        raise CredentialsError(
            f"access_keys.{key_id}.secret: expected a string of at least "
            f"{MIN_SECRET_CHARS} characters")
    return AccessKey(key_id, table["principal"], secret)


def _client_key(key_id: str, table: dict[str, Any]) -> ClientKey:
    where = f"client_keys.{key_id}"
    pem = table.get("public_key")
    try:
        public_key = serialization.load_pem_public_key(str(pem).encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        public_key = None
    if not isinstance(public_key, RSAPublicKey) or public_key.key_size < MIN_RSA_BITS:
        raise CredentialsError(
            f"{where}.public_key: expected an RSA public key of at least "
            f"{MIN_RSA_BITS} bits in PEM form")
    return ClientKey(key_id, table["principal"], public_key,
                     _time(f"{where}.not_before", table.get("not_before")),
                     _time(f"{where}.not_after", table.get("not_after")))


def _time(where: str, value: Any) -> datetime.datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime.datetime) and value.tzinfo is not None:
        return value
    if isinstance(value, str):
        try:
            parsed = datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
            return parsed.replace(tzinfo=datetime.timezone.utc)
        except ValueError:
            pass
    raise CredentialsError(f"{where}: expected a UTC time such as 2027-01-31T00:00:00Z")


def load_credentials(path: Path) -> Credentials:
    """Read and validate the credentials file at ``path``.

    Raises:
        CredentialsError: the file cannot be read, is accessible to group
            or others, is not TOML or is invalid.
    """
    try:
        with open(path, "rb") as stream:
            mode = os.fstat(stream.fileno()).st_mode & 0o777
            raw = tomllib.load(stream)
    except OSError as exc:
        raise CredentialsError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CredentialsError(f"{path}: invalid TOML: {exc}") from None
    if mode & 0o077:
        raise CredentialsError(
            f"{path} has mode {mode:04o}; it contains secrets and must not be "
            f"accessible to group or others (chmod 600 {path})")
    try:
        return parse_credentials(raw)
    except CredentialsError as exc:
        raise CredentialsError(f"{path}: {exc}") from None


class CredentialsFile:
    """The credentials of one file, reread whenever the file changes.

    A missing file means no credentials, so every signed request is
    refused until ``kmsctl gateway`` creates one.
    """

    def __init__(self, path: Path):
        self.path = path
        self._stamp: tuple[int, int, int, int] | None = None
        self._credentials = Credentials()
        # The error of the last reload that failed, until one succeeds.
        self.error: str | None = None

    def current(self) -> Credentials:
        """Return the credentials, rereading the file if it changed.

        A reload that fails keeps the previous credentials and sets
        ``error``; the caller logs it.
        """
        try:
            info = os.stat(self.path)
            stamp = (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp:
            return self._credentials
        self._stamp = stamp
        if stamp is None:
            self._credentials, self.error = Credentials(), None
            return self._credentials
        try:
            self._credentials, self.error = load_credentials(self.path), None
        except CredentialsError as exc:
            self.error = str(exc)
        return self._credentials
