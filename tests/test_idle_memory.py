"""What an idle connection costs: little more than the socket and a task reading it."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Awaitable, Callable

import trio
import trio.testing

import trio_pb
from trio_pb.broker import open_broker
from trio_pb.testing import open_broker_pair

PAIRS = 200
#: The most an idle broker may cost beyond a raw trio socket read by one task, per
#: connection end (about 8 KB now on CPython 3.11; 15.5 KB before the sharing and
#: slots of issue 12): generous, so that other versions and allocators pass.
MAX_EXTRA_BYTES = 11_000


async def _memory_per_end(
    hold: Callable[[trio.SocketStream, bool, Callable[[], None]], Awaitable[None]],
) -> float:
    """The memory that PAIRS connected socket pairs, each end held by *hold*, take per end."""
    ready = 0
    all_ready = trio.Event()

    def one_ready() -> None:
        nonlocal ready
        ready += 1
        if ready == 2 * PAIRS:
            all_ready.set()

    async with trio.open_nursery() as nursery:
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(PAIRS):
                a, b = trio.socket.socketpair()
                nursery.start_soon(hold, trio.SocketStream(a), True, one_ready)
                nursery.start_soon(hold, trio.SocketStream(b), False, one_ready)
            await all_ready.wait()
            await trio.testing.wait_all_tasks_blocked()
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        nursery.cancel_scope.cancel()
    return (after - before) / (2 * PAIRS)


async def _hold_raw(stream: trio.SocketStream, server: bool, ready: Callable[[], None]) -> None:
    async with stream:
        ready()
        await stream.receive_some(65536)


async def _hold_broker(stream: trio.SocketStream, server: bool, ready: Callable[[], None]) -> None:
    async with open_broker(stream, server=server, root=trio_pb.Root() if server else None):
        ready()
        await trio.sleep_forever()


async def test_an_idle_broker_costs_little_more_than_its_socket() -> None:
    raw = await _memory_per_end(_hold_raw)
    broker = await _memory_per_end(_hold_broker)
    assert broker - raw <= MAX_EXTRA_BYTES, f"{broker:.0f} bytes per idle broker, {raw:.0f} per raw socket"


class Calc(trio_pb.Root):
    def remote_add(self, a: int, b: int) -> int:
        return a + b


async def test_an_idle_broker_on_a_socket_runs_only_its_reader() -> None:
    async with open_broker_pair(Calc(), transport="socket") as (client, server):
        root = await client.root_object()
        assert await root.call_remote("add", 1, 2) == 3
        await trio.testing.wait_all_tasks_blocked()
        # Every write went straight into the socket: no writer task was needed.
        assert len(client._nursery.child_tasks) == len(server._nursery.child_tasks) == 1
