"""10,000 idle connections held by a real server process, its memory measured from outside (issue 12).

The same clients (plain sockets that answer the PB handshake and then say
nothing) are held open against ``server.py --raw``, whose connections are
plain trio sockets each read by its handler task, and against the PB server:
the difference in the server's resident memory, per connection, is what an
idle trio_pb connection costs beyond its socket.
"""

from __future__ import annotations

import resource
import socket
import time
from collections.abc import Callable

import pytest
import trio
from harness import REPORTS, ServerProcess

import trio_pb
from trio_pb.protocol import PBProtocol, Ready

CONNECTIONS = 10_000
#: Issue 12's target: an idle connection at most 3 KB more than a raw trio socket connection.
MAX_EXTRA_BYTES = 3 * 1024


def handshake_reply() -> bytes:
    """What a trio_pb client answers to a trio_pb server's dialect offer."""
    server, client = PBProtocol(None, is_client=False), PBProtocol(None, is_client=True)
    client.receive_data(server.data_to_send())
    assert isinstance(client.next_event(), Ready)
    return client.data_to_send()


def settled_rss(server: ServerProcess) -> int:
    """The server's resident memory once it stops changing (it has taken in every connection)."""
    last = -1
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.5)
        rss = server.memory()[0]
        if abs(rss - last) < 64 * 1024:
            return rss
        last = rss
    return last


async def hold_idle_connections(
    server: ServerProcess, reply: bytes, clients: list[socket.socket], *, pb: bool
) -> int:
    """Open CONNECTIONS idle connections to *server* (kept in *clients*); its memory growth per connection."""
    before = settled_rss(server)
    for _ in range(CONNECTIONS):
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(reply)
        clients.append(sock)
    # Every connection has been read (through its handshake) before the memory is measured.
    with trio.fail_after(120):
        while await (handshaken(server.port) if pb else raw_held(server.login_port)) < CONNECTIONS:
            await trio.sleep(0.5)
    return (settled_rss(server) - before) // CONNECTIONS


@pytest.fixture
def enough_files() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < CONNECTIONS + 100:
        pytest.skip(f"{CONNECTIONS} connections need that many file descriptors (the limit is {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def raw_held(port: int) -> int:
    """How many connections the raw server has read from (what its second port answers)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        answer = b""
        while chunk := await stream.receive_some():
            answer += chunk
    return int(answer)


async def handshaken(port: int) -> int:
    """How many connections the PB server has been through their handshake."""
    async with trio_pb.open_tcp_broker("127.0.0.1", port) as broker:
        root = await broker.root_object()
        count: int = await root.call_remote("handshaken")
    return count - 1  # not this one


async def test_ten_thousand_idle_connections_cost_at_most_3_kb_each_beyond_raw_trio(
    start_server: Callable[..., ServerProcess], enough_files: None
) -> None:
    reply = handshake_reply()
    clients: list[socket.socket] = []
    try:
        raw_server = start_server(raw=True)
        raw = await hold_idle_connections(raw_server, reply, clients, pb=False)
        for sock in clients:
            sock.close()
        clients.clear()
        raw_server.stop()
        pb_server = start_server()
        served = await hold_idle_connections(pb_server, reply, clients, pb=True)
        assert pb_server.alive
    finally:
        for sock in clients:
            sock.close()
    REPORTS.append(
        f"{CONNECTIONS} idle connections: {served} bytes each in the PB server's RSS, "
        f"{raw} in a raw trio server's: {served - raw} more"
    )
    assert served - raw <= MAX_EXTRA_BYTES, REPORTS[-1]
