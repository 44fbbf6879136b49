"""The broker's stream I/O (trio_pb._socket_io): direct on a plain socket, through the stream otherwise.

What the broker relies on from the objects it reads and writes with: which
streams get the direct path, that the fallback reads through the stream's own
methods and never writes, and what a closed socket does to each direct path.
(Who reads, the reader task or a caller, is tested in test_broker_reading.)
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_pb._socket_io import SocketIO, StreamIO, stream_io
from trio_pb.broker import open_broker
from trio_pb.flavors import Root


async def test_a_plain_socket_is_read_and_written_directly() -> None:
    left, right = trio.socket.socketpair()
    with left, right:
        io = stream_io(trio.SocketStream(left))
        assert isinstance(io, SocketIO)
        assert io.direct
        assert io.write(b"hello") == 5
        assert await stream_io(trio.SocketStream(right)).receive() == b"hello"


async def test_other_streams_fall_back_on_their_own_methods() -> None:
    left, right = trio.testing.memory_stream_pair()
    io = stream_io(left)
    assert isinstance(io, StreamIO)
    assert not io.direct
    # Never a direct write: everything goes through the writer task's send_all.
    assert io.write(b"dropped") == 0
    await right.send_all(b"hello")
    assert await io.receive() == b"hello"
    await right.aclose()
    assert await io.receive() == b""


async def test_a_direct_write_to_a_closed_socket_takes_nothing() -> None:
    left, right = trio.socket.socketpair()
    with right:
        io = stream_io(trio.SocketStream(left))
        left.close()
        assert io.write(b"hello") == 0
        with pytest.raises(trio.ClosedResourceError):
            await io.receive()


async def test_the_end_of_file_on_a_socket_reads_as_empty_bytes() -> None:
    left, right = trio.socket.socketpair()
    with left:
        io = stream_io(trio.SocketStream(left))
        right.close()
        assert await io.receive() == b""


async def test_a_broker_whose_socket_closed_under_it_ends_at_its_next_message() -> None:
    # The direct write takes nothing from a closed socket: the writer task
    # gets the message, fails to send it, and the connection ends.
    client_socket, server_socket = trio.socket.socketpair()
    async with trio.open_nursery() as nursery:

        async def serve() -> None:
            async with open_broker(trio.SocketStream(server_socket), server=True, root=Root()) as server:
                await server.wait_closed()

        nursery.start_soon(serve)
        async with open_broker(trio.SocketStream(client_socket), server=False) as client:
            root = await client.root_object()
            client_socket.close()
            root.call_remote_no_answer("anything")
            with trio.fail_after(5):
                await client.wait_closed()
            assert not client.connected
