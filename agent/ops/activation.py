"""Socket activation: use the listening socket systemd passes, if any.

With ``kms-agent.socket``, systemd creates the socket (path, mode, owner
and group come from the socket unit), listens, and starts the agent with
the socket as file descriptor 3, ``$LISTEN_FDS=1`` and ``$LISTEN_PID`` set
to the agent's pid, as sd_listen_fds(3) describes. The agent then serves
that socket instead of binding its own, and leaves the path in place when
it stops, so connections made while it restarts wait in the kernel's
queue. Without these variables the agent binds the socket itself.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import MutableMapping

from agent.rpc.server import StartupError

LISTEN_FDS_START = 3
ACTIVATION_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


def listen_fds(environ: MutableMapping[str, str] | None = None,
               unset: bool = True) -> list[int]:
    """Return the descriptors passed by socket activation, or [] if none.

    The variables are removed when ``unset`` is true, so programs the
    agent starts do not take the descriptors for theirs.
    """
    environ = os.environ if environ is None else environ
    pid, count = environ.get("LISTEN_PID"), environ.get("LISTEN_FDS")
    if unset:
        for name in ACTIVATION_VARIABLES:
            environ.pop(name, None)
    if not pid or not count or pid != str(os.getpid()):
        return []
    try:
        number = int(count)
    except ValueError:
        raise StartupError(f"LISTEN_FDS={count!r} is not a number") from None
    return list(range(LISTEN_FDS_START, LISTEN_FDS_START + max(number, 0)))


def activated_listener(expected_path: Path,
                       environ: MutableMapping[str, str] | None = None
                       ) -> socket.socket | None:
    """Return the socket passed by systemd for ``expected_path``, or None.

    Raises:
        StartupError: more than one descriptor was passed, or the one
            passed is not a listening Unix stream socket bound to
            ``expected_path``.
    """
    fds = listen_fds(environ)
    if not fds:
        return None
    if len(fds) != 1:
        raise StartupError(
            f"socket activation passed {len(fds)} sockets; kms-agent.socket "
            "must have exactly one ListenStream=")
    return _adopt(fds[0], expected_path)


def _adopt(fd: int, expected_path: Path) -> socket.socket:
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise StartupError(
            f"socket activation: descriptor {fd} is not a socket: {exc.strerror}"
        ) from None
    sock.set_inheritable(False)
    problem = _check_listener(sock, expected_path)
    if problem is not None:
        sock.close()
        raise StartupError(f"socket activation: {problem}")
    return sock


def _check_listener(sock: socket.socket, expected_path: Path) -> str | None:
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        return "the passed socket is not a Unix stream socket (ListenStream=PATH)"
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        return "the passed socket is not listening"
    bound = sock.getsockname()
    if isinstance(bound, bytes) or Path(bound) != expected_path:
        return (f"the passed socket is bound to {bound!r}, but agent.socket is "
                f"{str(expected_path)!r}; make ListenStream= in kms-agent.socket "
                "the same path")
    return None
