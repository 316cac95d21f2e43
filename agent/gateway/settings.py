"""The ``[gateway]`` configuration section and its validation.

The gateway is off unless ``enabled = true``. It listens on ``listen``
(``"HOST:PORT"``, default ``127.0.0.1:18600``), on the Unix socket
``unix_socket``, or on both when both are set. A host that is not
loopback needs ``tls = true``: requests are signed, but replies carry
plaintexts and secret values. With TLS and no ``tls_cert``/``tls_key``
the agent makes its own certificate under ``<data_dir>/gateway-tls``.
``credentials_file`` (default ``<data_dir>/gateway-credentials.toml``)
contains the AccessKeys and client keys ``kmsctl gateway`` creates.
``agent.config`` calls ``gateway_config`` with the section's values.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path
from typing import Any

DEFAULT_LISTEN = ("127.0.0.1", 18600)

GATEWAY_KEYS: dict[str, tuple[tuple[type, ...], Any]] = {
    "enabled": ((bool,), False),
    "listen": ((str,), None),
    "unix_socket": ((str,), None),
    "unix_socket_mode": ((str,), "0660"),
    "tls": ((bool,), False),
    "tls_cert": ((str,), None),
    "tls_key": ((str,), None),
    "credentials_file": ((str,), None),
    "max_body_bytes": ((int,), 262144),
    "max_connections": ((int,), 256),
    "max_in_flight": ((int,), 64),
    "idle_timeout": ((int, float), 60),
    "request_timeout": ((int, float), 30),
}
_RANGES = {
    "max_body_bytes": (1024, 64 * 2**20), "max_connections": (1, 100000),
    "max_in_flight": (1, 100000), "idle_timeout": (0.1, 3600),
    "request_timeout": (0.1, 3600),
}


@dataclasses.dataclass(frozen=True)
class GatewayConfig:
    """The validated ``[gateway]`` section; sizes in bytes, times in seconds."""

    enabled: bool = False
    listen: tuple[str, int] | None = DEFAULT_LISTEN
    unix_socket: Path | None = None
    unix_socket_mode: int = 0o660
    tls: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    credentials_file: Path | None = None
    max_body_bytes: int = 262144
    max_connections: int = 256
    max_in_flight: int = 64
    idle_timeout: float = 60.0
    request_timeout: float = 30.0


def gateway_config(values: dict[str, Any], base_dir: Path,
                   data_dir: Path) -> GatewayConfig:
    """Return the section from its type-checked ``values``.

    Raises:
        ValueError: naming the key: a malformed address, a public address
            without TLS, half a certificate pair, a bad socket mode or a
            number out of range.
    """
    for key, (low, high) in _RANGES.items():
        if not low <= values[key] <= high:
            raise ValueError(f"gateway.{key}: {values[key]} is outside {low}..{high}")
    listen = None if values["listen"] is None else parse_listen(values["listen"])
    unix_socket = _path(base_dir, values["unix_socket"])
    if listen is None and unix_socket is None:
        listen = DEFAULT_LISTEN
    if listen is not None and not values["tls"] and not _is_loopback(listen[0]):
        raise ValueError(
            f"gateway.listen: {listen[0]} is not a loopback address; set tls = true "
            "to serve other machines, since replies carry plaintexts")
    if (values["tls_cert"] is None) != (values["tls_key"] is None):
        raise ValueError("gateway.tls_cert: set both tls_cert and tls_key, or neither")
    credentials = _path(base_dir, values["credentials_file"]) or (
        data_dir / "gateway-credentials.toml")
    return GatewayConfig(
        enabled=values["enabled"], listen=listen, unix_socket=unix_socket,
        unix_socket_mode=_mode(values["unix_socket_mode"]), tls=values["tls"],
        tls_cert=_path(base_dir, values["tls_cert"]),
        tls_key=_path(base_dir, values["tls_key"]),
        credentials_file=credentials,
        max_body_bytes=values["max_body_bytes"],
        max_connections=values["max_connections"],
        max_in_flight=values["max_in_flight"],
        idle_timeout=float(values["idle_timeout"]),
        request_timeout=float(values["request_timeout"]))


def parse_listen(text: str) -> tuple[str, int]:
    """Parse ``HOST:PORT``, with an IPv6 host in brackets.

    Raises:
        ValueError: the host is not an IP address or the port is not 0..65535.
    """
    host, _, port_text = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        address = ipaddress.ip_address(host)
        port = int(port_text, 10)
    except ValueError:
        raise ValueError(f"gateway.listen: {text!r} is not HOST:PORT with an IP "
                         "address, such as '127.0.0.1:18600'") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"gateway.listen: port {port} is outside 0..65535")
    return str(address), port


def _is_loopback(host: str) -> bool:
    return ipaddress.ip_address(host).is_loopback


def _mode(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        raise ValueError(f"gateway.unix_socket_mode: {text!r} is not an octal mode "
                         "such as '0660'") from None
    if mode & ~0o777 or mode & 0o007:
        raise ValueError(f"gateway.unix_socket_mode: {text!r} must be within 0770 "
                         "(no access for others)")
    return mode


def _path(base_dir: Path, value: str | None) -> Path | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else base_dir / path
