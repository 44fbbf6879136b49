"""A remote stream of small items between two trio_pb peers (trio-pb-2), in items/s.

Both brokers run in this process over a connected pair of real sockets; the
floor is the same count of small writes, one per item, read back over a raw
trio socket pair.  Nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import trio

DESCRIPTION = "a stream of 100,000 small items between trio_pb peers (items/s) against a raw socket"

_ITEM = b"item-of-16-bytes"


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--stream-items", type=int, default=100_000, metavar="N", help="items in the stream (100,000)"
    )


async def _stream_once(count: int) -> float:
    import trio_pb
    from trio_pb.testing import open_broker_pair

    class Feed(trio_pb.Root):
        async def remote_feed(self, n: int) -> AsyncIterator[bytes]:
            for _ in range(n):
                yield _ITEM

    async with open_broker_pair(Feed(), transport="socket") as (client, _server):
        root = await client.root_object()
        start = time.perf_counter()
        got = 0
        async with root.stream("feed", count) as items:
            async for _ in items:
                got += 1
        elapsed = time.perf_counter() - start
        assert got == count
    return elapsed


async def _raw_once(count: int) -> float:
    a, b = trio.socket.socketpair()
    left, right = trio.SocketStream(a), trio.SocketStream(b)
    size = count * len(_ITEM)

    async def send() -> None:
        for _ in range(count):
            await left.send_all(_ITEM)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        got = 0
        while got < size:
            got += len(await right.receive_some(1 << 16))
    elapsed = time.perf_counter() - start
    await left.aclose()
    await right.aclose()
    return elapsed


def run(options: argparse.Namespace, settings: Any) -> None:
    count = 10_000 if options.quick else options.stream_items
    repeat = 1 if options.quick else 3
    streamed = statistics.median(trio.run(_stream_once, count) for _ in range(repeat))
    raw = statistics.median(trio.run(_raw_once, count) for _ in range(repeat))
    print(f"streams: {count} items of {len(_ITEM)} bytes, median of {repeat}")
    print(f"  trio_pb stream (trio-pb-2)  {count / streamed:10.0f} items/s   ({streamed:.3f} s)")
    print(f"  raw trio socket             {count / raw:10.0f} items/s")
