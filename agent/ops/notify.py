"""The systemd notification protocol (sd_notify), without libsystemd.

A service of ``Type=notify`` reports its state to systemd by sending
datagrams of ``KEY=VALUE`` lines to the Unix socket named by
``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace). The agent sends
``READY=1`` once its socket serves, ``STATUS=`` lines, ``WATCHDOG=1``
pings when ``$WATCHDOG_USEC`` asks for them, ``RELOADING=1`` around a
reload and ``STOPPING=1`` when it drains. ``from_environ`` removes the
variables, so programs the agent starts (secret rotation commands)
cannot speak for it. Without ``$NOTIFY_SOCKET`` every call does nothing.
The protocol is described in sd_notify(3) of systemd.
"""

from __future__ import annotations

import os
import socket
import time
from typing import MutableMapping

NOTIFY_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
# Pings go out at this fraction of the watchdog timeout, as sd_watchdog_enabled(3)
# recommends, so one late ping does not trip it.
WATCHDOG_PING_FRACTION = 0.5


class Notifier:
    """Send notifications to systemd, or do nothing when not under it.

    Args:
        address: the socket address from ``$NOTIFY_SOCKET``, or None.
        watchdog_usec: the watchdog timeout in microseconds, or None.
    """

    def __init__(self, address: str | None, watchdog_usec: int | None = None):
        self._address = _socket_address(address) if address else None
        self.watchdog_usec = watchdog_usec
        self.failures = 0

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] | None = None,
                     unset: bool = True) -> "Notifier":
        """Read ``$NOTIFY_SOCKET`` and the watchdog settings, then unset them.

        Raises:
            ValueError: ``$NOTIFY_SOCKET`` is neither a path nor ``@name``,
                or ``$WATCHDOG_USEC`` is not a positive integer.
        """
        environ = os.environ if environ is None else environ
        address = environ.get("NOTIFY_SOCKET") or None
        watchdog = _watchdog_usec(environ)
        if unset:
            for name in NOTIFY_VARIABLES:
                environ.pop(name, None)
        return cls(address, watchdog)

    @property
    def enabled(self) -> bool:
        """Whether a notification socket was given."""
        return self._address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings, or None without a watchdog."""
        if self.watchdog_usec is None or not self.enabled:
            return None
        return self.watchdog_usec / 1e6 * WATCHDOG_PING_FRACTION

    def ready(self, status: str) -> bool:
        """Tell systemd the agent serves; ``status`` is shown by systemctl."""
        return self.send(READY="1", STATUS=status)

    def status(self, status: str) -> bool:
        """Replace the one-line status that ``systemctl status`` shows."""
        return self.send(STATUS=status)

    def reloading(self) -> bool:
        """Tell systemd a reload started; ``ready`` ends it."""
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send(RELOADING="1", MONOTONIC_USEC=str(monotonic_usec))

    def stopping(self, status: str) -> bool:
        """Tell systemd the agent is shutting down."""
        return self.send(STOPPING="1", STATUS=status)

    def watchdog(self) -> bool:
        """Send one watchdog keep-alive ping."""
        return self.send(WATCHDOG="1")

    def send(self, **fields: str) -> bool:
        """Send one datagram of ``KEY=VALUE`` lines; return whether it went.

        A send that fails (systemd gone, queue full) is counted in
        ``failures`` and never raises: the agent keeps serving.
        """
        if self._address is None:
            return False
        message = "\n".join(f"{key}={_one_line(value)}"
                            for key, value in fields.items())
        try:
            with socket.socket(socket.AF_UNIX,
                               socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)
                sock.sendto(message.encode("utf-8"), self._address)
        except OSError:
            self.failures += 1
            return False
        return True


def _socket_address(address: str) -> str | bytes:
    if address.startswith("@"):
        return b"\0" + address[1:].encode("utf-8")
    if address.startswith("/"):
        return address
    raise ValueError(
        f"NOTIFY_SOCKET={address!r} is not an absolute path or @abstract name")


def _watchdog_usec(environ: MutableMapping[str, str]) -> int | None:
    text = environ.get("WATCHDOG_USEC")
    if not text:
        return None
    owner = environ.get("WATCHDOG_PID")
    # systemd sets WATCHDOG_PID to the main process; a child that inherited
    # the variables must not ping on the parent's behalf.
    if owner and owner != str(os.getpid()):
        return None
    try:
        usec = int(text)
    except ValueError:
        usec = 0
    if usec <= 0:
        raise ValueError(f"WATCHDOG_USEC={text!r} is not a positive integer")
    return usec


def _one_line(value: str) -> str:
    # A newline would start a second assignment, such as a forged READY=1.
    return " ".join(value.splitlines())
