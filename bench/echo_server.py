"""The echo floor: the agent's protocol with no work behind it.

``python -m bench.echo_server SOCKET`` serves on a Unix socket with the
server role of ``client.wire.Connection``. It replies to the hello with
a welcome, and to each request with a response whose result is the
request's parameters. Requests are answered in order on the connection's own task,
so the figure is framing, msgpack and socket I/O only. It runs until it
is terminated.
"""

from __future__ import annotations

import socket
import sys

import trio

from client import wire

READ_CHUNK_BYTES = 65536


async def echo_connection(stream: trio.SocketStream) -> None:
    """Serve one client until it closes the connection or breaks the protocol."""
    connection = wire.Connection(wire.Role.SERVER)
    async with stream:
        while True:
            event = connection.next_event()
            if event is wire.NEED_DATA:
                connection.receive_data(await stream.receive_some(READ_CHUNK_BYTES))
            elif event is wire.CLOSED:
                return
            elif type(event) is wire.Request:
                reply = wire.Response(event.id, result=dict(event.params))
                await stream.send_all(connection.send(reply))
            elif type(event) is wire.Hello:
                await stream.send_all(connection.send(wire.Welcome()))
            elif type(event) is wire.ProtocolError:
                reply = wire.error_response(event.error, event.request_id)
                await stream.send_all(connection.send(reply))
                if event.fatal:
                    return


async def serve(path: str) -> None:
    """Listen on ``path`` and echo on every connection until cancelled."""
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await listener.bind(path)
    listener.listen(512)
    await trio.serve_listeners(_echo_quietly, [trio.SocketListener(listener)])


async def _echo_quietly(stream: trio.SocketStream) -> None:
    # A client that leaves mid-frame ends its own connection only.
    try:
        await echo_connection(stream)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


def main(argv: list[str] | None = None) -> int:
    """Serve the echo floor on the socket path in ``argv``; return the status."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.echo_server SOCKET", file=sys.stderr)
        return 2
    try:
        trio.run(serve, args[0])
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
