"""Connection limits of the socket server, shared with the config loader."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ConnectionLimits:
    """Bounds that keep one caller from exhausting the agent.

    Timeouts are in seconds: the hello must arrive within
    ``handshake_timeout``, a frame that has started must complete within
    ``frame_timeout``, and a connection with nothing in flight is closed
    after ``idle_timeout``.
    """

    max_connections: int = 1024
    max_connections_per_uid: int = 256
    handshake_timeout: float = 10.0
    frame_timeout: float = 30.0
    idle_timeout: float = 300.0
