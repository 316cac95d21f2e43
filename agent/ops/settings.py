"""The ``[metrics]`` configuration section and its validation.

``listen`` is ``"HOST:PORT"`` with HOST a loopback IP address
(``127.0.0.1``, ``[::1]``): the listener has no authentication, so any
other address is rejected. Port 0 picks a free port and logs it.
``textfile`` is a path for node_exporter's textfile collector, rewritten
every ``textfile_interval`` seconds. Both are off unless set.
``agent.config`` calls ``metrics_config`` with the section's values.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path
from typing import Any

METRICS_KEYS: dict[str, tuple[tuple[type, ...], Any]] = {
    "listen": ((str,), None),
    "textfile": ((str,), None),
    "textfile_interval": ((int, float), 15),
}


@dataclasses.dataclass(frozen=True)
class MetricsConfig:
    """The metrics outputs: a loopback address and a textfile, each None if off."""

    listen: tuple[str, int] | None = None
    textfile: Path | None = None
    textfile_interval: float = 15.0

    @property
    def enabled(self) -> bool:
        """Whether any output reads the metrics."""
        return self.listen is not None or self.textfile is not None


def metrics_config(values: dict[str, Any], base_dir: Path) -> MetricsConfig:
    """Return the section from its type-checked ``values``.

    Raises:
        ValueError: naming the key, for an address that is not loopback
            or malformed, or an interval outside 1..86400 seconds.
    """
    listen = None if values["listen"] is None else _listen(values["listen"])
    textfile = values["textfile"]
    path = None
    if textfile is not None:
        path = Path(textfile).expanduser()
        path = path if path.is_absolute() else base_dir / path
    interval = values["textfile_interval"]
    if not 1 <= interval <= 86400:
        raise ValueError(f"metrics.textfile_interval: {interval} is outside 1..86400")
    return MetricsConfig(listen, path, float(interval))


def _listen(text: str) -> tuple[str, int]:
    host, _, port_text = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        address = ipaddress.ip_address(host)
        port = int(port_text, 10)
    except ValueError:
        raise ValueError(f"metrics.listen: {text!r} is not HOST:PORT with an IP "
                         "address, such as '127.0.0.1:9464'") from None
    if not address.is_loopback:
        raise ValueError(f"metrics.listen: {host} is not a loopback address; the "
                         "metrics listener has no authentication, so it listens "
                         "only on 127.0.0.1 or ::1")
    if not 0 <= port <= 65535:
        raise ValueError(f"metrics.listen: port {port} is outside 0..65535")
    return str(address), port
