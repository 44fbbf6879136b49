"""Output backpressure and the bound on running calls: a peer cannot make a broker queue without end."""

from __future__ import annotations

import sys
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import trio_pb
from trio_pb import banana
from trio_pb.banana import NEED_DATA
from trio_pb.broker import Broker, open_broker
from trio_pb.errors import TooManyCalls
from trio_pb.options import MAX_RUNNING_CALLS, SEND_BUFFER
from trio_pb.protocol import PAUSED, PBProtocol
from trio_pb.testing import open_broker_pair

ANSWER_SIZE = 200_000
BUFFER = 1_000_000


class Producer(trio_pb.Root):
    def __init__(self) -> None:
        self.release = trio.Event()

    def remote_big(self) -> bytes:
        return b"x" * ANSWER_SIZE

    def remote_tiny(self) -> int:
        return 1

    async def remote_big_later(self) -> bytes:
        await self.release.wait()
        return b"y" * ANSWER_SIZE

    async def remote_wait(self) -> str:
        await self.release.wait()
        return "done"


def test_defaults() -> None:
    assert SEND_BUFFER == 16 * 1024 * 1024
    assert MAX_RUNNING_CALLS == 100


@attrs.define
class RawClient:
    """A hand-driven client (pb dialect) of a real server broker, over a stream that never buffers."""

    stream: trio.abc.Stream
    encoder: banana.Encoder
    server: Broker
    nursery: trio.Nursery


@asynccontextmanager
async def raw_client_of(root: Any, **options: Any) -> AsyncIterator[RawClient]:
    client_stream, server_stream = trio.testing.lockstep_stream_pair()
    servers: list[Broker] = []
    async with trio.open_nursery() as nursery:

        async def serve() -> None:
            async with open_broker(server_stream, server=True, root=root, **options) as server:
                servers.append(server)
                await server.wait_closed()

        nursery.start_soon(serve)
        await client_stream.receive_some()  # the dialect offer
        await client_stream.send_all(b"\x02\x82pb")
        await trio.testing.wait_all_tasks_blocked()
        (server,) = servers
        yield RawClient(client_stream, banana.Encoder(b"pb"), server, nursery)
        nursery.cancel_scope.cancel()


def _calls(encoder: banana.Encoder, method: bytes, ids: range) -> bytes:
    return b"".join(
        encoder.encode([b"message", i, b"root", method, 1, [b"tuple"], [b"dictionary"]]) for i in ids
    )


async def _read_answers(stream: trio.abc.Stream, count: int) -> list[Any]:
    decoder = banana.Decoder(vocabulary=banana.PB_VOCABULARY)
    answers: list[Any] = []
    while len(answers) < count:
        decoder.receive_data(await stream.receive_some())
        while (expression := decoder.next_expression()) is not NEED_DATA:
            if expression[0] in (b"answer", b"error"):
                answers.append(expression)
    return answers


async def test_one_write_of_many_calls_queues_at_most_the_buffer_and_one_answer() -> None:
    # 50 calls of 200 KB answers arrive in one write: without a check per
    # message they would all be answered at once (10 MB queued).
    async with raw_client_of(Producer(), send_buffer=BUFFER) as peer:
        peer.nursery.start_soon(peer.stream.send_all, _calls(peer.encoder, b"big", range(1, 51)))
        await trio.testing.wait_all_tasks_blocked()
        assert 0 < peer.server._pending_output() <= BUFFER + ANSWER_SIZE + 1000
        # Nothing is lost: once the client reads, every answer comes, in order.
        answers = await _read_answers(peer.stream, 50)
        assert [a[1] for a in answers] == list(range(1, 51))
        assert all(a[0] == b"answer" and len(a[2]) == ANSWER_SIZE for a in answers)


async def test_the_queue_stays_bounded_while_the_peer_reads_slowly() -> None:
    async with raw_client_of(Producer(), send_buffer=BUFFER) as peer:
        peer.nursery.start_soon(peer.stream.send_all, _calls(peer.encoder, b"big", range(1, 31)))
        await trio.testing.wait_all_tasks_blocked()
        decoder = banana.Decoder(vocabulary=banana.PB_VOCABULARY)
        answers = 0
        peak = 0
        while answers < 30:
            decoder.receive_data(await peer.stream.receive_some(16384))
            while (expression := decoder.next_expression()) is not NEED_DATA:
                answers += expression[0] == b"answer"
            await trio.testing.wait_all_tasks_blocked()
            peak = max(peak, peer.server._pending_output())
        assert peak <= BUFFER + ANSWER_SIZE + 1000


async def test_answers_of_async_calls_finishing_together_wait_for_room() -> None:
    producer = Producer()
    async with raw_client_of(producer, send_buffer=BUFFER) as peer:
        peer.nursery.start_soon(peer.stream.send_all, _calls(peer.encoder, b"big_later", range(1, 21)))
        await trio.testing.wait_all_tasks_blocked()
        assert peer.server.statistics().calls_running == 20
        producer.release.set()
        await trio.testing.wait_all_tasks_blocked()
        assert peer.server._pending_output() <= BUFFER + ANSWER_SIZE + 1000
        answers = await _read_answers(peer.stream, 20)
        assert sorted(a[1] for a in answers) == list(range(1, 21))


def test_tiny_messages_queued_for_a_peer_are_packed() -> None:
    # A backlog of many small messages costs about its bytes, not an object per message.
    protocol = PBProtocol(None, is_client=False)
    protocol.data_to_send()
    tracemalloc.start()
    try:
        for luid in range(20_000):
            protocol.send_decache(luid + 1)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Every queued object but the last few hundred holds at least 4 KiB.
    assert len([chunk for chunk in protocol._outgoing if len(chunk) < 4096]) <= 256
    assert held < 2 * protocol.bytes_to_send + 10_000
    data = protocol.data_to_send()
    expected = (banana.encode([b"decache", luid + 1], dialect=b"none") for luid in range(20_000))
    assert data == b"".join(expected)
    assert isinstance(data, bytes)


async def test_calls_past_the_running_limit_are_refused_and_nothing_of_them_runs(each_transport: str) -> None:
    producer = Producer()
    started: list[int] = []

    class Counting(Producer):
        async def remote_wait(self) -> str:
            started.append(1)
            return await super().remote_wait()

    counting = Counting()
    counting.release = producer.release
    async with open_broker_pair(counting, max_running_calls=5) as (client, server):
        root = await client.root_object()
        results: list[Any] = []

        async def call() -> None:
            try:
                results.append(await root.call_remote("wait"))
            except TooManyCalls as exc:
                results.append(exc)

        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(call)
            await trio.testing.wait_all_tasks_blocked()
            assert server.statistics().calls_running == 5
            assert len(started) == 5
            refused = [r for r in results if isinstance(r, TooManyCalls)]
            assert len(refused) == 3
            assert "5 calls are running" in str(refused[0])
            # Plain methods are not limited: they run inline.
            assert await root.call_remote("tiny") == 1
            producer.release.set()
        assert results.count("done") == 5
        # Room again: a new call runs.
        assert await root.call_remote("wait") == "done"


async def test_running_limit_counts_only_calls_still_running() -> None:
    producer = Producer()
    producer.release.set()
    async with open_broker_pair(producer, max_running_calls=1) as (client, _server):
        root = await client.root_object()
        for _ in range(20):
            assert await root.call_remote("wait") == "done"


async def test_a_zero_limit_refuses_every_async_call() -> None:
    producer = Producer()
    producer.release.set()
    async with open_broker_pair(producer, max_running_calls=0) as (client, _server):
        root = await client.root_object()
        with pytest.raises(TooManyCalls):
            await root.call_remote("wait")
        assert await root.call_remote("tiny") == 1


async def test_errors_for_calls_that_fail_early_are_held_back_too() -> None:
    # Calls to an object that does not exist are answered with an error by the
    # protocol itself, with no event for the broker: they must pause all the same.
    small = 100_000
    async with raw_client_of(Producer(), send_buffer=small) as peer:
        calls = b"".join(
            peer.encoder.encode([b"message", i, b"nowhere", b"x", 1, [b"tuple"], [b"dictionary"]])
            for i in range(1, 3001)
        )
        peer.nursery.start_soon(peer.stream.send_all, calls)
        await trio.testing.wait_all_tasks_blocked()
        assert 0 < peer.server._pending_output() <= small + 2000
        errors = await _read_answers(peer.stream, 3000)
        assert [e[1] for e in errors] == list(range(1, 3001))


def test_the_protocol_pauses_before_a_message_while_too_much_is_queued() -> None:
    # With no room for held calls, the protocol decodes nothing at all while
    # output is backed up (tests/test_flow_control.py has the default).
    server = PBProtocol(None, is_client=False, max_held_calls=0)
    client = PBProtocol(None, is_client=True)
    client.receive_data(server.data_to_send())
    assert client.next_event() is not NEED_DATA
    server.receive_data(client.data_to_send())
    encoder = banana.Encoder(b"trio-pb-1")
    server.receive_data(b"".join(encoder.encode([b"ping", i]) for i in range(1, 101)))
    server.pause_above = 50
    events = []
    while (event := server.next_event()) not in (NEED_DATA, PAUSED):
        events.append(event)
    assert event is PAUSED
    queued = server.bytes_to_send
    assert 50 < queued < 50 + 20  # a pong or two past the mark, not a hundred
    server.data_to_send()
    server.pause_above = sys.maxsize
    while server.next_event() is not NEED_DATA:
        pass
    decoder = banana.Decoder(vocabulary=banana.PB_VOCABULARY)
    decoder.receive_data(server.data_to_send())
    pongs = [e for e in decoder if e[0] == b"pong"]
    assert pongs[-1] == [b"pong", 100]


def test_data_to_send_takes_whole_messages_up_to_about_a_size() -> None:
    protocol = PBProtocol(None, is_client=False)
    protocol.data_to_send()
    for luid in range(1, 3):
        protocol.send_decref(luid)
    big = b"x" * 10_000
    protocol._queue(big)
    protocol._queue(big)
    total = protocol.bytes_to_send
    first = protocol.data_to_send(5)
    assert protocol.bytes_to_send == total - len(first)
    assert first == banana.encode([b"decref", 1], dialect=b"none")
    second = banana.encode([b"decref", 2], dialect=b"none")
    assert protocol.data_to_send(len(second) + 1) == second + big
    assert protocol.data_to_send() == big
    assert protocol.bytes_to_send == 0
