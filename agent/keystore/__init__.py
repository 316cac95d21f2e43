"""Keystore settings, the user PIN, and ``open_keystore``.

``open_keystore`` builds the backend that ``KeystoreSettings.type``
names: ``pkcs11.Pkcs11Keystore`` for a PKCS#11 token, or
``software.SoftwareKeystore`` for a domain key kept in a file. The
interface both implement is in ``base.py``.

The user PIN comes from a file that only its owner may access, or from
an environment variable. It is never logged, put in a repr or in an
exception message; errors name where the PIN came from instead.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Literal

from agent.keystore.base import (
    HSM,
    SOFTWARE,
    DecryptionFailed,
    KeyMaterial,
    Keystore,
    KeystoreUnavailable,
)

__all__ = [
    "HSM",
    "SOFTWARE",
    "DecryptionFailed",
    "KeyMaterial",
    "Keystore",
    "KeystoreSettings",
    "KeystoreUnavailable",
    "open_keystore",
    "read_pin",
]

_LOOSE_MODE_BITS = 0o077


@dataclasses.dataclass(frozen=True)
class KeystoreSettings:
    """The configuration of one keystore; paths are absolute.

    ``module``, ``token_label`` and one of ``pin_file`` or ``pin_env`` are
    needed for type pkcs11, and ``domain_key_file`` for type software.
    ``cache_size`` bounds each cache of unwrapped keys, in entries.
    """

    name: str
    type: Literal["pkcs11", "software"]
    module: str | None = None
    token_label: str | None = None
    pin_file: Path | None = None
    pin_env: str | None = None
    softhsm2_conf: Path | None = None
    domain_key_label: str = "kms-agent-domain-key"
    domain_key_file: Path | None = None
    inline_crypto: bool = True
    worker_threads: int = 2
    cache_size: int = 4096


async def open_keystore(settings: KeystoreSettings) -> Keystore:
    """Open the keystore that ``settings`` describes.

    Raises:
        KeystoreUnavailable: the settings are incomplete, or the PIN, token,
            module or domain key cannot be used; the message names the cause.
    """
    if settings.type == "software":
        from agent.keystore.software import SoftwareKeystore

        return await SoftwareKeystore.open(settings)
    if settings.type == "pkcs11":
        from agent.keystore.pkcs11 import Pkcs11Keystore

        return await Pkcs11Keystore.open(settings, read_pin(settings))
    raise KeystoreUnavailable(
        f"keystore {settings.name!r} has unknown type {settings.type!r}"
    )


def read_pin(settings: KeystoreSettings) -> str:
    """Read the user PIN from ``pin_file`` or from the ``pin_env`` variable.

    Surrounding whitespace, such as a final newline, is removed.

    Raises:
        KeystoreUnavailable: neither source is set, the file is accessible
            to group or others or cannot be read, or the PIN is empty.
    """
    if settings.pin_file is not None:
        pin = _read_pin_file(settings.pin_file).strip()
        source = f"PIN file {settings.pin_file}"
    elif settings.pin_env is not None:
        pin = os.environ.get(settings.pin_env, "").strip()
        source = f"environment variable {settings.pin_env}"
    else:
        raise KeystoreUnavailable(
            f"keystore {settings.name!r} needs pin_file or pin_env"
        )
    if not pin:
        raise KeystoreUnavailable(f"{source} is empty or not set")
    return pin


def _read_pin_file(path: Path) -> str:
    try:
        with open(path, "rb") as file:
            mode = os.fstat(file.fileno()).st_mode & 0o777
            if mode & _LOOSE_MODE_BITS:
                raise KeystoreUnavailable(
                    f"PIN file {path} has mode {mode:04o}; it must not be "
                    f"accessible to group or others (chmod 600 {path})"
                )
            content = file.read()
    except OSError as error:
        raise KeystoreUnavailable(
            f"cannot read PIN file {path}: {error.strerror}"
        ) from None
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        raise KeystoreUnavailable(f"PIN file {path} is not UTF-8 text") from None
