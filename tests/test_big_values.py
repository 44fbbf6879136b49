"""Big values between trio_pb peers under trio-pb-2: strings past banana's 640 KiB, in chunks.

See docs/protocol.rst, "Big values".  Both transports (the brokers take
other paths on a socket), both ways, over the limit, towards older peers and
real Twisted, a ping overtaking a big call, disconnects mid-value, memory.
"""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import pytest
import trio
import trio.testing
from peers import twisted_server

from trio_pb import Root, errors
from trio_pb.connect import open_tcp_broker
from trio_pb.testing import assert_no_leaks, open_broker_pair

pytestmark = pytest.mark.usefixtures("each_transport")

MiB = 1024 * 1024


class Echo(Root):
    def __init__(self) -> None:
        self.seen: list[int] = []
        self.release = trio.Event()
        self.ended = trio.Event()

    def remote_echo(self, value: Any) -> Any:
        return value

    def remote_size(self, value: bytes) -> int:
        return len(value)

    def remote_make(self, size: int) -> bytes:
        return b"z" * size

    async def remote_slow_echo(self, value: Any) -> Any:
        try:
            await self.release.wait()
            return value
        finally:
            self.ended.set()


async def test_bytes_and_str_far_past_640_kib_both_ways() -> None:
    async with open_broker_pair(Echo()) as (client, server):
        assert client._protocol.dialect == b"trio-pb-2"
        root = await client.root_object()
        big = bytes(range(256)) * (40 * 1024 + 3)  # 10 MiB and a bit
        assert await root.call_remote("echo", big) == big
        text = "é€x" * 1_000_000
        nested = {"text": text, "list": [big, text, big], "small": b"s", "set": frozenset({b"q" * MiB})}
        assert await root.call_remote("echo", nested) == nested
        assert await root.call_remote("make", 3 * MiB) == b"z" * (3 * MiB)
        await assert_no_leaks(client, server)
        assert not client._protocol._requests.big.incoming and not server._protocol._requests.big.incoming


async def test_over_the_limit_fails_before_sending_and_the_connection_stays_up() -> None:
    async with open_broker_pair(Echo(), max_value_size=2 * MiB) as (client, server):
        root = await client.root_object()
        queued = client._protocol.bytes_to_send
        with pytest.raises(errors.BananaEncodeError, match="2097152"):
            await root.call_remote("echo", b"x" * (2 * MiB + 1))
        assert client._protocol.bytes_to_send == queued and not client._protocol.blobs_pending
        assert await root.call_remote("size", b"x" * (2 * MiB)) == 2 * MiB
        # An answer too big for the caller: the caller gets the error, the connection stays up.
        with pytest.raises(errors.BananaError, match="2097152"):
            await root.call_remote("make", 2 * MiB + 1)
        assert await root.call_remote("echo", 1) == 1
        await assert_no_leaks(client, server)


async def test_the_peer_s_lower_limit_is_honoured() -> None:
    async with trio.open_nursery() as nursery:
        client_stream, server_stream = trio.testing.memory_stream_pair()
        from trio_pb import open_broker

        async def serve() -> None:
            async with open_broker(server_stream, server=True, root=Echo(), max_value_size=MiB) as broker:
                await broker.wait_closed()

        nursery.start_soon(serve)
        async with open_broker(client_stream, server=False) as client:
            root = await client.root_object()
            assert await root.call_remote("echo", 1) == 1  # the server's limits have arrived
            with pytest.raises(errors.BananaEncodeError, match="1048576"):
                await root.call_remote("echo", b"x" * (MiB + 1))
            assert await root.call_remote("size", b"x" * MiB) == MiB
        nursery.cancel_scope.cancel()


async def test_towards_a_trio_pb_1_peer_the_call_fails_saying_why() -> None:
    async with open_broker_pair(Echo(), extensions=b"trio-pb-1") as (client, server):
        assert client._protocol.dialect == b"trio-pb-1"
        root = await client.root_object()
        with pytest.raises(errors.BananaEncodeError, match="does not speak trio-pb-2"):
            await root.call_remote("echo", b"x" * MiB)
        with pytest.raises(errors.BananaError, match="655360"):
            await root.call_remote("make", MiB)
        assert await root.call_remote("echo", b"small") == b"small"
        await assert_no_leaks(client, server)


async def test_a_ping_sent_after_a_big_call_started_is_answered_before_it_ends() -> None:
    echo = Echo()
    async with open_broker_pair(echo) as (client, server):
        root = await client.root_object()
        order: list[str] = []
        big = b"b" * (32 * MiB)

        async def big_call() -> None:
            assert await root.call_remote("size", big) == len(big)
            order.append("big")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(big_call)
            while not client._protocol.blobs_pending:  # until the big value is in transit
                await trio.sleep(0)
            await client.ping()
            order.append("ping")
            assert await root.call_remote("echo", 5) == 5
            order.append("small call")
        assert order == ["ping", "small call", "big"]
        await assert_no_leaks(client, server)


class Store(Root):
    def __init__(self) -> None:
        self.sizes: list[int] = []

    def remote_set(self, value: bytes) -> None:
        self.sizes.append(len(value))

    def remote_sizes(self) -> list[int]:
        return self.sizes


async def test_what_a_caller_sends_after_a_big_call_wanting_no_answer_arrives_after_it() -> None:
    # As with Twisted (or any one stream): the peer runs them in the order the caller made them.
    store = Store()
    async with open_broker_pair(store) as (client, server):
        root = await client.root_object()
        root.call_remote_no_answer("set", b"b" * (3 * MiB))
        root.call_remote_no_answer("set", b"s")
        assert await root.call_remote("sizes") == [3 * MiB, 1]
        # Meanwhile a ping still goes first: only calls wait.
        root.call_remote_no_answer("set", b"b" * (32 * MiB))
        await client.ping()
        assert store.sizes == [3 * MiB, 1]
        assert await root.call_remote("sizes") == [3 * MiB, 1, 32 * MiB]
        await assert_no_leaks(client, server)


class Counting(Echo):
    def __init__(self) -> None:
        super().__init__()
        self.runs = 0

    async def remote_slow_echo(self, value: Any) -> Any:
        self.runs += 1
        return await super().remote_slow_echo(value)


async def test_a_call_cancelled_while_its_blobs_travel_is_taken_back() -> None:
    echo = Counting()
    async with open_broker_pair(echo) as (client, server):
        root = await client.root_object()
        size = 64 * MiB
        sent_before = client._bytes_sent

        async def call() -> None:
            await root.call_remote("slow_echo", b"c" * size)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            while server._protocol._requests.big.held == 0:  # the peer has part of it
                await trio.sleep(0)
            nursery.cancel_scope.cancel()
        # The rest of the value and the message are never sent: the method never runs, and the
        # peer forgot the part it had.
        assert await root.call_remote("echo", 5) == 5
        assert echo.runs == 0
        assert not server._protocol._requests.big.incoming and server._protocol._requests.big.held == 0
        assert client._bytes_sent - sent_before < size // 2
        assert not client._protocol.blobs_pending
        await assert_no_leaks(client, server)
        assert client.statistics().calls_abandoned == 0  # no answer will come: none is awaited


async def test_a_disconnect_mid_value_fails_the_call_and_frees_the_partial_blob() -> None:
    async with open_broker_pair(Echo()) as (client, server):
        root = await client.root_object()
        received = server._protocol._requests.big

        async def watch() -> None:
            while not received.incoming or not any(blob.chunks for blob in received.incoming.values()):
                await trio.sleep(0)
            await server.aclose()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            with pytest.raises(errors.PBConnectionLost):
                await root.call_remote("size", b"d" * (64 * MiB))
        assert not received.incoming and received.held == 0
        assert not client._protocol.blobs_pending


async def test_memory_for_one_value_stays_within_a_small_constant_of_its_size() -> None:
    size = 16 * MiB
    async with open_broker_pair(Echo()) as (client, server):
        root = await client.root_object()
        await root.call_remote("echo", b"warm")
        value = b"m" * size
        gc.collect()
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            base, _ = tracemalloc.get_traced_memory()
            assert await root.call_remote("size", value) == size
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        # The sender sends views of the value; the receiver holds the chunks, then the joined bytes.
        assert peak - base < 2.5 * size
        await assert_no_leaks(client, server)


async def test_a_twisted_server_gets_nothing_and_the_connection_stays_up() -> None:
    async with (
        twisted_server("twisted_peer.py", "server") as port,
        open_tcp_broker("127.0.0.1", port) as client,
    ):
        assert client._protocol.dialect == b"pb"
        root = await client.root_object()
        with pytest.raises(errors.BananaEncodeError, match="does not speak trio-pb-2"):
            await root.call_remote("echo", "x" * MiB)
        assert await root.call_remote("echo", b"still here") == b"still here"
