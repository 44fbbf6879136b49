"""Broker.ping() and the keepalive option: finding out that a peer is gone when TCP does not say."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing
from peers import twisted_server

from trio_pb import banana, errors
from trio_pb.banana import NEED_DATA
from trio_pb.broker import open_broker
from trio_pb.flavors import Root
from trio_pb.protocol import Answer, PBProtocol
from trio_pb.testing import assert_no_leaks, open_broker_pair


class Server(Root):
    def remote_add(self, a: int, b: int) -> int:
        return a + b

    async def remote_slow(self) -> None:
        await trio.sleep_forever()


def test_ping_and_pong_on_the_wire() -> None:
    client, server = PBProtocol(None, is_client=True), PBProtocol(None, is_client=False)

    def deliver(sender: PBProtocol, receiver: PBProtocol) -> list[object]:
        receiver.receive_data(sender.data_to_send())
        events = []
        while (event := receiver.next_event()) is not NEED_DATA:
            events.append(event)
        return events

    deliver(server, client)
    deliver(client, server)
    deliver(server, client)
    assert client.extended and server.extended
    request_id = client.send_ping()
    data = client.data_to_send()
    assert banana.decode(data, dialect=b"pb") == [b"ping", request_id]
    # The peer's protocol answers by itself: no event for the broker.
    server.receive_data(data)
    assert server.next_event() is NEED_DATA
    assert deliver(server, client) == [Answer(request_id, None)]

    # Without the extension dialect, a ping is a call to a name nobody registers.
    plain_client = PBProtocol(None, is_client=True, extensions=False)
    plain_server = PBProtocol(None, is_client=False, extensions=False)
    deliver(plain_server, plain_client)
    deliver(plain_client, plain_server)
    request_id = plain_client.send_ping()
    message = banana.decode(plain_client.data_to_send(), dialect=b"pb")
    assert message[:4] == [b"message", request_id, b"trio_pb.ping", b"ping"]


def counting_calls(calls: list[object]) -> Callable[..., int]:
    """PBProtocol.send_call, noting each protocol that sends a call in *calls*."""
    send_call = PBProtocol.send_call

    def counting(protocol: PBProtocol, *args: Any, **kwargs: Any) -> int:
        calls.append(protocol)
        return send_call(protocol, *args, **kwargs)

    return counting


@pytest.mark.parametrize("extensions", [True, False])
async def test_ping_measures_a_round_trip(
    extensions: bool, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_broker_pair(Server(), extensions=extensions) as (client, server):
        assert client._protocol.extended is extensions
        calls: list[object] = []
        # On the class (PBProtocol has __slots__): every send_call of both ends is counted.
        monkeypatch.setattr(PBProtocol, "send_call", counting_calls(calls))
        for broker in (client, server):
            assert 0 <= await broker.ping() < 5
        monkeypatch.undo()
        # The extension's own ping when there is one, else a call.
        assert len(calls) == (0 if extensions else 2)
        # Without the extension it was a call to an object nobody has: answered, not logged.
        root = await client.root_object()
        assert await root.call_remote("add", 1, 2) == 3
        await assert_no_leaks(client, server)
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


async def test_ping_on_a_closed_broker_raises() -> None:
    async with open_broker_pair(Server()) as (client, _server):
        await client.aclose()
        with pytest.raises(errors.DeadReferenceError):
            await client.ping()


@pytest.mark.twisted
async def test_ping_a_twisted_server() -> None:
    async with twisted_server("twisted_peer.py", "server") as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with open_broker(stream, server=False) as broker:
            assert 0 <= await broker.ping() < 5
            root = await broker.root_object()
            assert await root.call_remote("add", 1, 2) == 3


async def test_keepalive_keeps_a_quiet_connection(autojump_clock: trio.testing.MockClock) -> None:
    async with open_broker_pair(Server(), keepalive=10) as (client, server):
        first = client._protocol._next_request_id
        await trio.sleep(100)
        assert client.connected and server.connected
        # It pinged about every 10 s of silence (both sides ping, so each hears the other).
        assert client._protocol._next_request_id - first >= 4
        root = await client.root_object()
        assert await root.call_remote("add", 1, 2) == 3


async def silent_server(stream: trio.abc.Stream, *, extended: bool) -> None:
    """Offer the dialects, then never read nor answer anything: a peer that vanished."""
    offer = [b"trio-pb-1", b"pb", b"none"] if extended else [b"pb", b"none"]
    await stream.send_all(banana.encode(offer, dialect=b"none"))
    await stream.send_all(banana.encode([b"version", 6], dialect=b"pb"))
    await trio.sleep_forever()


@pytest.mark.parametrize("extended", [True, False])
async def test_keepalive_closes_a_connection_to_a_vanished_peer(
    extended: bool, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: silent_server(server_stream, extended=extended))
        async with open_broker(client_stream, server=False, keepalive=10) as client:
            root = await client.root_object()
            start = trio.current_time()
            with trio.fail_after(60), pytest.raises(errors.PBConnectionLost):
                await root.call_remote("add", 1, 2)
            # A whole 10 s window of silence, then 10 s more after the ping:
            # 20 to 30 s after the last sign of life (the handshake, here).
            assert 20 <= trio.current_time() - start <= 30
            assert isinstance(client.error, errors.PeerUnresponsive)
            assert not client.connected
        nursery.cancel_scope.cancel()
    assert "no sign of life from the peer in 20 s" in caplog.text


class ScriptedPeer:
    """An extended PB server played by hand, slow or strange in chosen ways.

    It reads *read_size* bytes every *read_every* seconds (and stops after
    *reads* reads, if given), answers pings with a pong (or an error), and
    answers every call with *answer_size* bytes, sent *send_size* bytes
    every *send_every* seconds, before it reads on.
    """

    def __init__(
        self,
        *,
        read_every: float = 0.0,
        read_size: int = 65536,
        reads: int | None = None,
        ping_reply: str = "pong",
        answer_size: int = 0,
        send_every: float = 0.0,
        send_size: int = 65536,
    ) -> None:
        self.read_every = read_every
        self.read_size = read_size
        self.reads = reads
        self.ping_reply = ping_reply
        self.answer_size = answer_size
        self.send_every = send_every
        self.send_size = send_size

    async def serve(self, stream: trio.abc.Stream) -> None:
        with contextlib.suppress(trio.BrokenResourceError):  # the client may leave at any time
            await self._serve(stream)

    async def _serve(self, stream: trio.abc.Stream) -> None:
        connection = banana.BananaConnection(is_client=False, dialects=(b"trio-pb-1",))
        await stream.send_all(connection.data_to_send())
        encoder = banana.Encoder(b"trio-pb-1")
        reads = 0
        while self.reads is None or reads < self.reads:
            await trio.sleep(self.read_every)
            data = await stream.receive_some(self.read_size)
            reads += 1
            if not data:
                return
            connection.receive_data(data)
            while (expression := connection.next_event()) is not NEED_DATA:
                if isinstance(expression, banana.DialectSelected):
                    await stream.send_all(encoder.encode([b"version", 6]))
                elif expression[0] == b"ping":
                    reply = [b"pong", expression[1]]
                    if self.ping_reply == "error":
                        reply = [b"error", expression[1], b"no pings here"]
                    await stream.send_all(encoder.encode(reply))
                elif expression[0] == b"message" and expression[4]:
                    answer = encoder.encode([b"answer", expression[1], b"x" * self.answer_size])
                    for start in range(0, len(answer), self.send_size):
                        await trio.sleep(self.send_every)
                        await stream.send_all(answer[start : start + self.send_size])
        await trio.sleep_forever()


async def test_keepalive_waits_while_the_peer_reads_our_backlog(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # 600 KB to a peer reading 30 KB/s: the ping after 10 s of silence reaches
    # it only after 20 s, yet it is alive, and the connection is kept.
    client_stream, server_stream = trio.testing.lockstep_stream_pair()
    peer = ScriptedPeer(read_every=1, read_size=30_000)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.serve, server_stream)
        async with open_broker(client_stream, server=False, keepalive=10) as client:
            root = await client.root_object()
            root.call_remote_no_answer("store", b"x" * 600_000)
            await trio.sleep(60)
            assert client.connected
            assert 0 <= await client.ping() < 5
        nursery.cancel_scope.cancel()


async def test_keepalive_waits_while_the_peer_sends_a_long_answer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The pong comes after a 600 KB answer arriving at 30 KB/s: 20 s, but
    # bytes keep coming, and the connection is kept.
    client_stream, server_stream = trio.testing.memory_stream_pair()
    peer = ScriptedPeer(answer_size=600_000, send_every=1, send_size=30_000)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.serve, server_stream)
        async with open_broker(client_stream, server=False, keepalive=10) as client:
            root = await client.root_object()
            await trio.sleep(15)  # quiet: a ping now and then
            with trio.fail_after(60):
                assert await root.call_remote("big") == b"x" * 600_000
            assert client.connected
        nursery.cancel_scope.cancel()


async def test_keepalive_closes_a_connection_to_a_peer_that_stopped_reading(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A hung process whose kernel still holds the connection: what we send
    # stalls, nothing comes back.
    client_stream, server_stream = trio.testing.lockstep_stream_pair()
    peer = ScriptedPeer(reads=1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.serve, server_stream)
        async with open_broker(client_stream, server=False, keepalive=10) as client:
            root = await client.root_object()
            root.call_remote_no_answer("store", b"x" * 600_000)
            with trio.fail_after(60):
                await client.wait_closed()
            assert isinstance(client.error, errors.PeerUnresponsive)
        nursery.cancel_scope.cancel()


async def test_an_error_answer_to_a_ping_is_an_answer(autojump_clock: trio.testing.MockClock) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ScriptedPeer(ping_reply="error").serve, server_stream)
        async with open_broker(client_stream, server=False, keepalive=10) as client:
            assert 0 <= await client.ping() < 5
            await trio.sleep(60)  # keepalive pings get errors back: alive, and nothing escapes
            assert client.connected
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("keepalive", [0, -1.0])
async def test_keepalive_must_be_positive(keepalive: float) -> None:
    client_stream, _ = trio.testing.memory_stream_pair()
    with pytest.raises(ValueError, match="keepalive"):
        async with open_broker(client_stream, server=False, keepalive=keepalive):
            pytest.fail("not reached")
