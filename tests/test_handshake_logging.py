"""A peer that breaks the protocol in the version exchange is reported once, naming it.

On a server the connection handler logs the failed handshake with the client's address; the
broker does not log it as well.  On a client the error is raised from ``open_broker``, and left
to the caller to report.  Once a connection is open, a protocol error is logged by the broker.
"""

from __future__ import annotations

import logging
from functools import partial

import pytest
import trio
import trio.testing

from trio_pb import banana, errors
from trio_pb.broker import open_broker
from trio_pb.connect import open_tcp_broker, serve_tcp
from trio_pb.flavors import Root

BAD_VERSION = banana.encode([b"version", 5], dialect=b"pb")


def about_the_version(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "trio_pb" and "Version Incompatibility" in r.getMessage()]


async def test_a_client_sending_a_bad_version_is_logged_once_with_its_address(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_pb")
    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(partial(serve_tcp, Root(), 0, host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        raw = await trio.open_tcp_stream("127.0.0.1", port)
        host, client_port = raw.socket.getsockname()[:2]
        # Choose pb and announce another protocol version, as a hostile or foreign client may.
        await raw.send_all(b"\x02\x82pb" + BAD_VERSION)
        with trio.fail_after(5):
            # The server closes the connection after it has logged why.
            while await raw.receive_some():
                pass
        await raw.aclose()
        nursery.cancel_scope.cancel()
    (record,) = about_the_version(caplog)
    assert f"{host}:{client_port}" in record.getMessage()
    assert record.levelno >= logging.WARNING


async def test_a_server_sending_a_bad_version_in_the_handshake_is_raised_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_pb")
    client_stream, server_stream = trio.testing.memory_stream_pair()
    # The server's offer of one dialect and its version arrive together, before the client
    # has entered the block: the handshake fails, and the caller is told by the exception.
    await server_stream.send_all(banana.encode([b"pb"]) + BAD_VERSION)
    with pytest.raises(errors.ProtocolError, match="Version Incompatibility"):
        async with open_broker(client_stream, server=False):
            pytest.fail("the handshake cannot succeed")
    assert about_the_version(caplog) == []


async def test_a_bad_version_once_connected_is_logged_once_with_the_peer_address(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_pb")
    sent_version = trio.Event()

    async def hostile_server(stream: trio.SocketStream) -> None:
        await stream.send_all(banana.encode([b"pb"]))
        assert await stream.receive_some()  # the client's choice (and its version)
        await stream.send_all(BAD_VERSION)
        sent_version.set()
        while await stream.receive_some():
            pass

    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(partial(trio.serve_tcp, hostile_server, 0, host="127.0.0.1"))
        host, port = listener.socket.getsockname()[:2]
        async with open_tcp_broker(host, port) as broker:
            with trio.fail_after(5):
                await broker.wait_closed()
        assert sent_version.is_set()
        nursery.cancel_scope.cancel()
    assert isinstance(broker.error, errors.ProtocolError)
    (record,) = about_the_version(caplog)
    assert f"{host}:{port}" in record.getMessage()
