"""Paging (twisted.spread.util): pagers, collectors, backpressure, and Twisted in both directions."""

from __future__ import annotations

import gc
import io
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from peers import twisted_client_against, twisted_server

from trio_pb import banana, errors
from trio_pb.broker import Broker, open_broker
from trio_pb.connect import open_tcp_broker
from trio_pb.flavors import Root
from trio_pb.paging import (
    CallbackPageCollector,
    FilePager,
    PageBufferOverflow,
    PageCollector,
    Pager,
    PagingError,
    StringPager,
    get_all_pages,
    getAllPages,
    send_pages,
)
from trio_pb.references import RemoteReference
from trio_pb.testing import assert_no_leaks, open_broker_pair

# Every test runs over memory streams and over real sockets (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("each_transport")


def paging_data(size: int) -> bytes:
    """The same bytes as twisted_peer.paging_data: not periodic in any chunk size used here."""
    return bytes((i * 7 + i // 251) % 256 for i in range(size))


class PagingServer(Root):
    def __init__(self) -> None:
        self.collector: PageCollector | None = None
        self.stalled = trio.Event()

    async def remote_getPages(self, collector: RemoteReference, size: int, chunk: int = 8192) -> str:
        async with collector:
            await send_pages(collector, paging_data(size), chunk_size=chunk)
        return "sent"

    async def remote_getFile(self, collector: RemoteReference, size: int, chunk: int = 8192) -> None:
        async with collector:
            await send_pages(collector, io.BytesIO(paging_data(size)), chunk_size=chunk)

    async def remote_getAsyncFile(self, collector: RemoteReference, size: int) -> None:
        async with collector:
            await send_pages(collector, trio.wrap_file(io.BytesIO(paging_data(size))), chunk_size=1000)

    def remote_failing(self, collector: RemoteReference) -> None:
        # An errors.Error is not logged (a logged traceback would keep the collector alive).
        raise errors.Error("no pages for you")

    def remote_drop(self, collector: RemoteReference) -> None:
        """Forgets the collector without ending the paging."""

    async def remote_twoThenStall(self, collector: RemoteReference) -> None:
        collector.call_remote_no_answer("gotPage", b"a")
        collector.call_remote_no_answer("gotPage", b"b")
        self.stalled.set()
        await trio.sleep_forever()

    def remote_makeCollector(self) -> PageCollector:
        self.collector = PageCollector()
        return self.collector

    async def remote_collected(self) -> list[object]:
        assert self.collector is not None
        pages = [page async for page in self.collector]
        return [len(pages), b"".join(pages)]


# -- over memory streams -----------------------------------------------------------


async def test_string_pages_are_chunked_like_twisted() -> None:
    async with open_broker_pair(PagingServer()) as (client, server):
        root = await client.root_object()
        pages = await get_all_pages(root, "getPages", 30, 12)
        assert pages == [paging_data(30)[:12], paging_data(30)[12:24], paging_data(30)[24:]]
        assert [len(p) for p in await get_all_pages(root, "getPages", 24, chunk=12)] == [12, 12]
        # As Twisted's StringPager: empty data is one empty page.
        assert await get_all_pages(root, "getPages", 0, 12) == [b""]
        big = await getAllPages(root, "getPages", 100_000)
        assert [len(p) for p in big] == [8192] * 12 + [1696]
        assert b"".join(big) == paging_data(100_000)
        await assert_no_leaks(client, server)


async def test_file_pages() -> None:
    async with open_broker_pair(PagingServer()) as (client, server):
        root = await client.root_object()
        pages = await get_all_pages(root, "getFile", 20_000, 8192)
        assert [len(p) for p in pages] == [8192, 8192, 3616]
        assert b"".join(pages) == paging_data(20_000)
        assert await get_all_pages(root, "getFile", 0) == []
        assert [len(p) for p in await get_all_pages(root, "getFile", 16384, 8192)] == [8192, 8192]
        pages = await get_all_pages(root, "getAsyncFile", 2500)
        assert [len(p) for p in pages] == [1000, 1000, 500]
        assert b"".join(pages) == paging_data(2500)
        await assert_no_leaks(client, server)


async def test_collector_is_an_async_iterator() -> None:
    async with open_broker_pair(PagingServer()) as (client, server):
        root = await client.root_object()
        collector = PageCollector()
        seen: list[bytes] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(root.call_remote, "getPages", collector, 10_000, 1000))
            async for page in collector:
                seen.append(page)
                assert collector.buffered <= 10_000
        assert b"".join(seen) == paging_data(10_000)
        assert len(seen) == 10
        assert collector.ended
        # The iteration stays finished.
        assert [page async for page in collector] == []
        del collector
        await assert_no_leaks(client, server)


async def test_get_all_pages_raises_the_methods_error() -> None:
    # Strings past 640 KiB go in chunks under trio-pb-2, up to max_value_size.
    async with open_broker_pair(PagingServer(), max_value_size=640 * 1024) as (client, server):
        root = await client.root_object()
        with pytest.raises(errors.Error, match="no pages for you"):
            await get_all_pages(root, "failing")
        with pytest.raises(errors.NoSuchMethod):
            await get_all_pages(root, "missing")
        # The sender forgets the collector: no hang, an error.
        with trio.fail_after(5), pytest.raises(PagingError, match="released the collector"):
            await get_all_pages(root, "drop")
        with pytest.raises(errors.BananaError):
            await get_all_pages(root, "getPages", b"x" * (640 * 1024 + 1))
        assert await root.call_remote("getPages", CallbackPageCollector(lambda pages: None), 1) == "sent"
        await assert_no_leaks(client, server)


async def test_the_collectors_buffer_is_bounded() -> None:
    async with open_broker_pair(PagingServer()) as (client, server):
        root = await client.root_object()
        # The call's answer comes after the last page: every page waits in the buffer.
        full = PageCollector(max_buffered=10_000)
        assert await root.call_remote("getPages", full, 10_000, 1000) == "sent"
        assert full.buffered == 10_000
        assert b"".join([page async for page in full]) == paging_data(10_000)
        assert full.buffered == 0

        over = PageCollector(max_buffered=10_000)
        assert await root.call_remote("getPages", over, 10_001, 1000) == "sent"
        # The buffered pages were dropped at once, and the later ones ignored.
        assert over.buffered == 0
        assert not over.ended
        with pytest.raises(PageBufferOverflow, match="10000 bytes"):
            async for _ in over:
                pytest.fail("a page from an overflowed collector")
        with pytest.raises(PageBufferOverflow):
            await over.__anext__()

        few = PageCollector(max_pages=3)
        await root.call_remote("getPages", few, 4, 1)
        with pytest.raises(PageBufferOverflow, match="3 pages"):
            await few.__anext__()
        # The connection is unharmed.
        assert await get_all_pages(root, "getPages", 3, 1) == [paging_data(3)[i : i + 1] for i in range(3)]
        del full, over, few
        await assert_no_leaks(client, server)


async def test_lost_connection_ends_the_iteration_after_the_received_pages() -> None:
    server_root = PagingServer()
    collector = PageCollector()
    async with open_broker_pair(server_root) as (client, server):
        root = await client.root_object()
        root.call_remote_no_answer("twoThenStall", collector)
        await server_root.stalled.wait()
        await trio.testing.wait_all_tasks_blocked()
        await server._stream.aclose()
        pages = []
        with trio.fail_after(5), pytest.raises(errors.PBConnectionLost):
            async for page in collector:
                pages.append(page)
        assert pages == [b"a", b"b"]


async def test_get_all_pages_fails_when_the_connection_is_lost() -> None:
    server_root = PagingServer()
    async with open_broker_pair(server_root) as (client, server):
        root = await client.root_object()
        async with trio.open_nursery() as nursery:

            async def close_when_stalled() -> None:
                await server_root.stalled.wait()
                await server._stream.aclose()

            nursery.start_soon(close_when_stalled)
            with trio.fail_after(5), pytest.raises(errors.PBConnectionLost):
                await get_all_pages(root, "twoThenStall")


async def test_twisted_style_pager_subclass_and_callback() -> None:
    called: list[object] = []

    class Countdown(Pager):
        def __init__(self, collector: RemoteReference, n: int) -> None:
            Pager.__init__(self, collector, called.append, "done")
            self.n = n

        def nextPage(self) -> int:
            self.n -= 1
            if self.n == 0:
                self.stopPaging()
            return self.n

    class Server(Root):
        async def remote_count(self, collector: RemoteReference, n: int) -> None:
            async with collector:
                await Countdown(collector, n).run()

    async with open_broker_pair(Server()) as (client, server):
        root = await client.root_object()
        assert await get_all_pages(root, "count", 3) == [2, 1, 0]
        assert called == ["done"]
        got: list[list[Any]] = []
        await root.call_remote("count", CallbackPageCollector(got.append), 2)
        assert got == [[1, 0]]
        await assert_no_leaks(client, server)


async def test_pager_arguments_are_checked() -> None:
    async with open_broker_pair(PagingServer()) as (client, _server):
        ref = RemoteReference(client, b"root", counted=False)
        with pytest.raises(ValueError, match="chunk_size"):
            await send_pages(ref, b"data", chunk_size=0)
        with pytest.raises(ValueError, match="chunk_size"):
            FilePager(ref, io.BytesIO(), chunk_size=-1)
        with pytest.raises(TypeError, match="binary mode"):
            await send_pages(ref, io.StringIO("text"))
        pager = StringPager(ref, b"")
        pager.stop_paging()
        await pager.run()
        with pytest.raises(RuntimeError, match="once"):
            await pager.run()
    with pytest.raises(errors.DeadReferenceError):
        await send_pages(ref, b"late")
    with pytest.raises(ValueError):
        PageCollector(max_pages=0)


# -- on the wire, with a raw peer ----------------------------------------------------


class RawPeer:
    """The far end of a broker, speaking banana by hand."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.decoder = banana.Decoder(vocabulary=banana.PB_VOCABULARY)
        self.received: list[Any] = []

    async def read_until(self, done: Callable[[list[Any]], bool]) -> list[Any]:
        with trio.fail_after(5):
            while not done(self.received):
                data = await self.stream.receive_some()
                assert data, "the broker closed the connection"
                self.decoder.receive_data(data)
                self.received.extend(self.decoder)
        return [m for m in self.received if isinstance(m, list) and m[:1] == [b"message"]]


def ended(messages: list[Any]) -> bool:
    return any(isinstance(m, list) and b"endedPaging" in m for m in messages)


@asynccontextmanager
async def broker_and_raw_peer(*, lockstep: bool = False) -> AsyncIterator[tuple[Broker, RawPeer]]:
    pair = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
    raw, ours = pair()
    peer = RawPeer(raw)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(raw.send_all, b"\x02\x82pb")  # the raw peer chooses the pb dialect
        async with open_broker(ours, server=True) as broker:
            await peer.read_until(lambda received: [b"version", 6] in received)
            try:
                yield broker, peer
            finally:
                await raw.aclose()


async def test_pages_on_the_wire_match_twisted() -> None:
    data = paging_data(30)
    async with broker_and_raw_peer() as (broker, peer):
        collector = RemoteReference(broker, 7, counted=False)
        await send_pages(collector, data, chunk_size=12)
        messages = await peer.read_until(ended)
    assert messages == [
        [b"message", 1, 7, b"gotPage", 0, [b"tuple", data[:12]], [b"dictionary"]],
        [b"message", 2, 7, b"gotPage", 0, [b"tuple", data[12:24]], [b"dictionary"]],
        [b"message", 3, 7, b"gotPage", 0, [b"tuple", data[24:]], [b"dictionary"]],
        [b"message", 4, 7, b"endedPaging", 0, [b"tuple"], [b"dictionary"]],
    ]


async def test_an_empty_file_sends_only_ended_paging() -> None:
    async with broker_and_raw_peer() as (broker, peer):
        collector = RemoteReference(broker, 3, counted=False)
        await send_pages(collector, io.BytesIO(b""))
        assert await peer.read_until(ended) == [
            [b"message", 1, 3, b"endedPaging", 0, [b"tuple"], [b"dictionary"]]
        ]


async def test_drain_waits_until_the_peer_takes_the_data() -> None:
    async with broker_and_raw_peer(lockstep=True) as (broker, peer):
        ref = RemoteReference(broker, 3, counted=False)
        ref.call_remote_no_answer("gotPage", b"x" * 1000)
        drained = trio.Event()

        async def drain() -> None:
            await broker.drain()
            drained.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain)
            await trio.testing.wait_all_tasks_blocked()
            assert not drained.is_set()
            await peer.read_until(lambda received: any(b"gotPage" in m for m in received))
            await trio.testing.wait_all_tasks_blocked()
            assert drained.is_set()
        # Nothing queued: drain returns at once.
        with trio.fail_after(1):
            await broker.drain()


async def test_drain_fails_when_the_connection_is_lost() -> None:
    async with broker_and_raw_peer(lockstep=True) as (broker, peer):
        ref = RemoteReference(broker, 3, counted=False)
        ref.call_remote_no_answer("gotPage", b"x" * 1000)
        async with trio.open_nursery() as nursery:

            async def drain() -> None:
                with pytest.raises(errors.DeadReferenceError):
                    await broker.drain()

            nursery.start_soon(drain)
            await trio.testing.wait_all_tasks_blocked()
            await peer.stream.aclose()


async def test_a_file_is_read_only_as_fast_as_the_peer_reads() -> None:
    data = paging_data(100_000)
    source = io.BytesIO(data)
    async with broker_and_raw_peer(lockstep=True) as (broker, peer):
        collector = RemoteReference(broker, 3, counted=False)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(send_pages, collector, source, chunk_size=1000))
            await trio.testing.wait_all_tasks_blocked()
            # One chunk read, waiting for the peer; nothing read ahead.
            assert source.tell() == 1000
            messages = await peer.read_until(ended)
    pages = [m[5][1] for m in messages if m[3] == b"gotPage"]
    assert [len(p) for p in pages] == [1000] * 100
    assert b"".join(pages) == data


async def test_sender_fails_when_the_connection_is_lost_mid_paging() -> None:
    async with broker_and_raw_peer(lockstep=True) as (broker, peer):
        collector = RemoteReference(broker, 3, counted=False)
        async with trio.open_nursery() as nursery:

            async def send() -> None:
                with pytest.raises(errors.DeadReferenceError):
                    await send_pages(collector, io.BytesIO(paging_data(100_000)), chunk_size=1000)

            nursery.start_soon(send)
            await peer.read_until(lambda received: sum(b"gotPage" in m for m in received) >= 3)
            await peer.stream.aclose()


# -- against real Twisted ------------------------------------------------------------


def twisted_peer(*args: str) -> Any:
    return twisted_server("twisted_peer.py", *args)


async def test_trio_pb_client_pages_with_a_twisted_server() -> None:
    async with twisted_peer("paging-server") as port, open_tcp_broker("127.0.0.1", port) as broker:
        root = await broker.root_object()
        # Twisted's StringPager, FilePager (16 KiB chunks) into our collector.
        pages = await get_all_pages(root, "getPages", 30, 12)
        assert [len(p) for p in pages] == [12, 12, 6]
        assert b"".join(pages) == paging_data(30)
        assert await get_all_pages(root, "getPages", 0, 12) == [b""]
        pages = await get_all_pages(root, "getFile", 100_000)
        assert [len(p) for p in pages] == [16384] * 6 + [1696]
        assert b"".join(pages) == paging_data(100_000)
        assert await get_all_pages(root, "getFile", 0) == []
        collector = PageCollector()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(root.call_remote, "getPages", collector, 50_000, 1000))
            pages = [page async for page in collector]
        assert b"".join(pages) == paging_data(50_000)
        assert len(pages) == 50
        # Our pager into Twisted's CallbackPageCollector.
        async with await root.call_remote("makeCollector") as twisted_collector:
            await send_pages(twisted_collector, paging_data(20_000), chunk_size=1000)
        assert await root.call_remote("collected") == [20, paging_data(20_000)]
        async with await root.call_remote("makeCollector") as twisted_collector:
            await send_pages(twisted_collector, io.BytesIO(b""))
        assert await root.call_remote("collected") == [0, b""]
        # Twisted has let go of every collector we sent.
        del collector
        gc.collect()
        with trio.fail_after(5):
            while broker.statistics().objects_exported:
                await trio.sleep(0.01)
        await assert_no_leaks(broker)
        # Last, because Twisted's logged Failure keeps this collector until its own gc runs.
        with pytest.raises(errors.NoSuchMethod):
            await get_all_pages(root, "missing")


async def test_twisted_client_pages_with_a_trio_pb_server() -> None:
    lines = await twisted_client_against(PagingServer(), "twisted_peer.py", "paging-client")
    assert lines == [
        "string [12, 12, 6] True",
        "empty_string [b'']",
        "big 25 True",
        "file [8192, 8192, 3616] True",
        "empty_file []",
        "pager sent",
        "collected 5 True",
        "done",
    ]
