"""Remote streams between trio_pb peers under trio-pb-2 (docs/protocol.rst, "Remote streams").

Finished and abandoned streams, credit (a slow consumer pauses the producer),
errors, disconnects, deadlines, many at once, and older or Twisted peers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing
from core_pair import connected_pair, deliver
from peers import twisted_server

from trio_pb import Root, banana, errors
from trio_pb._events import CreditGranted, StreamItem, StreamRequested
from trio_pb._streams import Credits, Window
from trio_pb.connect import open_tcp_broker
from trio_pb.protocol import Answer
from trio_pb.testing import assert_no_leaks, open_broker_pair

pytestmark = pytest.mark.usefixtures("each_transport")


class Feeds(Root):
    def __init__(self) -> None:
        self.produced = 0
        self.closed = trio.Event()
        self.finished = 0

    async def remote_feed(self, n: int, start: int = 0) -> AsyncIterator[int]:
        try:
            for i in range(start, start + n):
                self.produced += 1
                yield i
        finally:
            self.finished += 1
            self.closed.set()

    async def remote_forever(self) -> AsyncIterator[bytes]:
        try:
            i = 0
            while True:
                self.produced += 1
                yield b"item %d" % i
                i += 1
        finally:
            self.closed.set()

    async def remote_fail_after(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i
        raise errors.Error(f"failed after {n}")

    async def remote_values(self) -> AsyncIterator[Any]:
        yield {"a": [1, 2.5, "text"]}
        yield (b"x", frozenset({3}))

    async def remote_stuck(self) -> AsyncIterator[int]:
        try:
            yield 1
            await trio.sleep_forever()
            yield 2
        finally:
            self.closed.set()

    def remote_plain(self) -> int:
        return 7


async def test_a_finished_stream_gives_all_items_in_order() -> None:
    feeds = Feeds()
    async with open_broker_pair(feeds) as (client, server):
        root = await client.root_object()
        async with root.stream("feed", 1000) as items:
            got = [item async for item in items]
        assert got == list(range(1000))
        assert feeds.finished == 1
        async with root.stream("values") as items:
            assert [item async for item in items] == [{"a": [1, 2.5, "text"]}, (b"x", frozenset({3}))]
        async with root.stream("feed", 0) as items:
            assert [item async for item in items] == []
        await assert_no_leaks(client, server)


@pytest.mark.parametrize("how", ["break", "exception", "cancel"])
async def test_leaving_early_closes_the_generator_on_the_far_side(how: str) -> None:
    feeds = Feeds()
    async with open_broker_pair(feeds) as (client, server):
        root = await client.root_object()
        got = []
        with trio.CancelScope() as scope:
            try:
                async with root.stream("forever") as items:
                    async for item in items:
                        got.append(item)
                        if len(got) == 5:
                            if how == "break":
                                break
                            if how == "exception":
                                raise KeyError("enough")
                            scope.cancel()
                            await trio.lowlevel.checkpoint()
            except KeyError:
                assert how == "exception"
        assert got == [b"item %d" % i for i in range(5)]
        with trio.fail_after(5):
            await feeds.closed.wait()
        assert await root.call_remote("plain") == 7
        await assert_no_leaks(client, server)
        assert not server._protocol._requests.streams or not server._protocol._requests.streams.credit


async def test_a_slow_consumer_pauses_the_producer() -> None:
    feeds = Feeds()
    async with open_broker_pair(feeds, stream_window=8) as (client, server):
        root = await client.root_object()
        async with root.stream("forever") as items:
            consumed = 0
            async for _ in items:
                consumed += 1
                await trio.testing.wait_all_tasks_blocked()
                # Never more than a window (plus the item being made) ahead.
                assert feeds.produced - consumed <= 8 + 1
                if consumed == 100:
                    break
        await assert_no_leaks(client, server)


async def test_the_producer_is_not_advanced_without_credit() -> None:
    feeds = Feeds()

    async def produced_exactly(expected: int) -> None:
        with trio.fail_after(5):
            while feeds.produced < expected:
                await trio.sleep(0.001)
        # Time for more to be produced, were it allowed to.
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(0.05)
        assert feeds.produced == expected

    async with open_broker_pair(feeds, stream_window=4) as (client, server):
        root = await client.root_object()
        async with root.stream("forever") as items:
            await produced_exactly(4)  # the window, and no more
            assert await items.__anext__() == b"item 0"
            await produced_exactly(4)  # a grant waits for half a window consumed
            assert await items.__anext__() == b"item 1"
            await produced_exactly(6)
        await assert_no_leaks(client, server)


async def test_the_generator_s_error_ends_the_iteration() -> None:
    async with open_broker_pair(Feeds()) as (client, server):
        root = await client.root_object()
        got = []
        with pytest.raises(errors.Error, match="failed after 3"):
            async with root.stream("fail_after", 3) as items:
                async for item in items:
                    got.append(item)
        assert got == [0, 1, 2]
        await assert_no_leaks(client, server)


async def test_a_plain_method_and_a_plain_call_of_a_stream_fail_clearly() -> None:
    async with open_broker_pair(Feeds()) as (client, server):
        root = await client.root_object()
        with pytest.raises(errors.Error, match="not an async generator"):
            async with root.stream("plain") as items:
                async for _ in items:
                    pass
        with pytest.raises(errors.PBError, match=r"async generator.*stream\(\)"):
            await root.call_remote("feed", 3)
        with pytest.raises(errors.PBError, match="nothing"):
            async with root.stream("nothing") as items:
                async for _ in items:
                    pass
        assert await root.call_remote("plain") == 7
        await assert_no_leaks(client, server)


async def test_a_disconnect_mid_stream_raises_pbconnectionlost() -> None:
    feeds = Feeds()
    async with open_broker_pair(feeds) as (client, server):
        root = await client.root_object()
        with pytest.raises(errors.PBConnectionLost):
            async with root.stream("stuck") as items:
                async for _ in items:
                    await server.aclose()
        with trio.fail_after(5):
            await feeds.closed.wait()


async def test_a_deadline_around_the_consumer_works_as_for_calls() -> None:
    feeds = Feeds()
    async with open_broker_pair(feeds) as (client, server):
        root = await client.root_object()
        got = []
        with trio.move_on_after(0.2) as scope:
            async with root.stream("stuck") as items:
                async for item in items:
                    got.append(item)
        assert scope.cancelled_caught and got == [1]
        with trio.fail_after(5):
            await feeds.closed.wait()
        await assert_no_leaks(client, server)


async def test_many_streams_at_once_on_one_connection() -> None:
    feeds = Feeds()
    results: dict[int, list[int]] = {}
    async with open_broker_pair(feeds, stream_window=3) as (client, server):
        root = await client.root_object()

        async def consume(k: int) -> None:
            async with root.stream("feed", 50, start=k * 1000) as items:
                results[k] = [item async for item in items]

        async with trio.open_nursery() as nursery:
            for k in range(20):
                nursery.start_soon(consume, k)
        assert results == {k: list(range(k * 1000, k * 1000 + 50)) for k in range(20)}
        assert feeds.finished == 20
        await assert_no_leaks(client, server)


async def test_towards_a_trio_pb_1_peer_stream_fails_at_once() -> None:
    async with open_broker_pair(Feeds(), extensions=b"trio-pb-1") as (client, server):
        root = await client.root_object()
        queued = client._protocol.bytes_to_send
        with pytest.raises(errors.StreamsUnsupported, match="does not speak trio-pb-2"):
            async with root.stream("feed", 3):
                pass
        assert client._protocol.bytes_to_send == queued
        assert await root.call_remote("plain") == 7
        await assert_no_leaks(client, server)


async def test_towards_a_twisted_server_stream_fails_at_once() -> None:
    async with (
        twisted_server("twisted_peer.py", "server") as port,
        open_tcp_broker("127.0.0.1", port) as client,
    ):
        root = await client.root_object()
        with pytest.raises(errors.StreamsUnsupported, match="does not speak trio-pb-2"):
            async with root.stream("echo", 3):
                pass
        assert await root.call_remote("echo", b"still here") == b"still here"


def test_credit_bookkeeping_without_io() -> None:
    credits = Credits()
    credits.opened(5, 2)
    assert credits.take(5) and credits.take(5) and not credits.take(5)
    assert credits.granted(5, 1) and credits.take(5)
    credits.closed(5)
    assert not credits.granted(5, 3)  # a stale grant, crossing the end
    with pytest.raises(errors.ProtocolError):
        credits.granted(5, 0)
    with pytest.raises(errors.ProtocolError):
        credits.opened(6, -1)
    window = Window(8)
    assert [window.took() for _ in range(8)] == [0, 0, 0, 4, 0, 0, 0, 4]
    assert [Window(1).took() for _ in range(2)] == [1, 1]


class _Plain(Root):
    async def remote_feed(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i


def test_the_stream_commands_in_the_sans_io_core() -> None:
    client, server = connected_pair(_Plain())
    deliver(server, client)
    request = client.send_stream_call(b"root", "feed", (3,), {}, window=2)
    assert banana.decode(client.data_to_send(), dialect=b"pb") == [
        b"stream",
        2,
        [b"message", request, b"root", b"feed", 1, [b"tuple", 3], [b"dictionary"]],
    ]
    client2, server2 = connected_pair(_Plain())
    deliver(server2, client2)
    request = client2.send_stream_call(b"root", "feed", (3,), {}, window=2)
    [event] = deliver(client2, server2)
    assert isinstance(event, StreamRequested) and event.window == 2 and event.call.args == (3,)
    assert server2.take_credit(request) and server2.take_credit(request) and not server2.take_credit(request)
    server2.send_item(request, 0)
    server2.send_item(request, [1, "one"])
    assert deliver(server2, client2) == [StreamItem(request, 0), StreamItem(request, [1, "one"])]
    client2.send_credit(request, 1)
    assert deliver(client2, server2) == [CreditGranted(request)]
    assert server2.take_credit(request)
    server2.send_answer(request, None)
    server2.stream_done(request)
    assert deliver(server2, client2) == [Answer(request, None)]
    assert not server2._requests.streams or not server2._requests.streams.credit


@pytest.mark.parametrize(
    "expression",
    [
        [b"stream", 0, [b"message", 1, b"root", b"feed", 1, [b"tuple"], [b"dictionary"]]],
        [b"stream", 2, [b"message", 1, b"root", b"feed", 0, [b"tuple"], [b"dictionary"]]],
        [b"stream", 2, [b"answer", 1, 2]],
        [b"credit", 1, 0],
        [b"credit", b"x", 1],
    ],
    ids=["zero window", "wants no answer", "not a message", "zero credit", "bad id"],
)
def test_malformed_stream_commands_are_protocol_errors(expression: Any) -> None:
    _client, server = connected_pair(_Plain())
    server.receive_data(banana.encode(expression, dialect=b"pb"))
    with pytest.raises(errors.ProtocolError):
        deliver(server, server)


def test_stream_commands_are_unknown_under_trio_pb_1() -> None:
    client, server = connected_pair(_Plain(), extensions=b"trio-pb-1")
    server.receive_data(banana.encode([b"credit", 1, 1], dialect=b"pb"))
    assert deliver(server, server) == []
    assert banana.decode(server.data_to_send(), dialect=b"pb") == [b"didNotUnderstand", b"credit"]
    with pytest.raises(errors.StreamsUnsupported):
        client.send_stream_call(b"root", "feed", (3,), {}, window=2)
