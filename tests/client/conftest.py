"""A small fake agent for the client tests, on a real Unix socket.

``FakeAgent`` serves the server side of ``client.wire`` from threads, so
it works under both the blocking and the trio client. Each request goes
to ``agent.handler(request, reply)``. The handler calls ``reply`` with a
``Response`` (now, later or never), and returns False to make the agent
drop the connection.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

import pytest

from client.errors import KmsError
from client.wire import (
    CLOSED,
    DEFAULT_MAX_FRAME_SIZE,
    NEED_DATA,
    Connection,
    Hello,
    ProtocolError,
    Request,
    Response,
    Role,
    Welcome,
    error_response,
)

Reply = Callable[[Response], None]


def echo_handler(request: Request, reply: Reply) -> bool:
    """Reply with the operation name and the params it received."""
    result = {"Op": request.op, **request.params, "RequestId": f"req-{request.id}"}
    reply(Response(request.id, result=result))
    return True


class FakeAgent:
    """A threaded server speaking the server role of ``client.wire``."""

    def __init__(self, path: str, max_frame: int = DEFAULT_MAX_FRAME_SIZE):
        self.path = path
        self.max_frame = max_frame
        self.handler: Callable[[Request, Reply], bool] = echo_handler
        self.hello_error: KmsError | None = None
        self.requests: list[Request] = []
        self.accepted = 0
        self.dropped = threading.Semaphore(0)
        self._received = threading.Condition()
        self._sockets: list[socket.socket] = []
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        self._listener.listen(16)
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def stop(self) -> None:
        for sock in [self._listener, *self._sockets]:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def wait_dropped(self) -> None:
        """Block until the agent has closed one more connection."""
        assert self.dropped.acquire(timeout=10), "the fake agent closed no connection"

    def wait_for_requests(self, count: int) -> None:
        """Block until the agent has received ``count`` requests in all."""
        with self._received:
            arrived = self._received.wait_for(lambda: len(self.requests) >= count,
                                              timeout=10)
        assert arrived, f"the fake agent received fewer than {count} requests"

    def _accept_loop(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            self._sockets.append(sock)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        connection = Connection(Role.SERVER, max_frame_size=self.max_frame)
        lock = threading.Lock()

        def reply(response: Response) -> None:
            with lock:
                sock.sendall(connection.send(response))

        try:
            self._serve_events(sock, connection, reply)
        except OSError:
            pass
        finally:
            sock.close()
            self.dropped.release()

    def _serve_events(self, sock: socket.socket, connection: Connection,
                      reply: Reply) -> None:
        while True:
            event = connection.next_event()
            if event is NEED_DATA:
                connection.receive_data(sock.recv(65536))
            elif event is CLOSED:
                return
            elif isinstance(event, Hello):
                if self.hello_error is not None:
                    reply(error_response(self.hello_error))
                    return
                reply_bytes = connection.send(Welcome(max_frame=self.max_frame))
                sock.sendall(reply_bytes)
            elif isinstance(event, ProtocolError):
                reply(error_response(event.error, event.request_id))
                if event.fatal:
                    return
            else:
                with self._received:
                    self.requests.append(event)
                    self._received.notify_all()
                if not self.handler(event, reply):
                    return


@pytest.fixture
def agent(tmp_path):
    """A running fake agent on ``tmp_path/agent.sock``."""
    fake = FakeAgent(str(tmp_path / "agent.sock"))
    yield fake
    fake.stop()
