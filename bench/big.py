"""Big values between two trio_pb peers (trio-pb-2): a 100 MB echo, and pings while it travels.

Both brokers run in this process over a connected pair of real sockets; the
floor is the same bytes sent both ways over a raw trio socket pair.  Reports
MB/s of the echo (the value goes there and back: twice its size counted once,
as the raw floor counts it) and the p50/p99 round trip of pings sent every
millisecond during it.  Nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import trio

DESCRIPTION = "a 100 MB echo between trio_pb peers (MB/s, p99 of pings during it) against a raw socket"


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--big-mb", type=int, default=100, metavar="MB", help="size of the echoed value (100)")


async def _echo_once(size: int) -> tuple[float, list[float]]:
    import trio_pb
    from trio_pb.testing import open_broker_pair

    class Echo(trio_pb.Root):
        def remote_echo(self, value: Any) -> Any:
            return value

    value = b"v" * size
    pings: list[float] = []
    async with open_broker_pair(Echo(), transport="socket") as (client, _server):
        root = await client.root_object()
        done = trio.Event()

        async def ping_during() -> None:
            while not done.is_set():
                pings.append(await client.ping())
                await trio.sleep(0.001)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ping_during)
            start = time.perf_counter()
            assert await root.call_remote("echo", value) == value
            elapsed = time.perf_counter() - start
            done.set()
    return elapsed, pings


async def _raw_once(size: int) -> float:
    a, b = trio.socket.socketpair()
    left, right = trio.SocketStream(a), trio.SocketStream(b)
    data = b"v" * size

    async def pump(sender: trio.SocketStream, receiver: trio.SocketStream) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender.send_all, data)
            got = 0
            while got < size:
                got += len(await receiver.receive_some(1 << 20))

    start = time.perf_counter()
    await pump(left, right)
    await pump(right, left)
    elapsed = time.perf_counter() - start
    await left.aclose()
    await right.aclose()
    return elapsed


def run(options: argparse.Namespace, settings: Any) -> None:
    size = (10 if options.quick else options.big_mb) * 1024 * 1024
    repeat = 1 if options.quick else 3
    echoes = [trio.run(_echo_once, size) for _ in range(repeat)]
    raw = [trio.run(_raw_once, size) for _ in range(repeat)]
    echo_time = statistics.median(elapsed for elapsed, _ in echoes)
    pings = sorted(rtt for _, rtts in echoes for rtt in rtts)
    mb = size / 1e6
    print(f"big values: echo of {mb:.0f} MB there and back, median of {repeat}")
    print(f"  trio_pb (trio-pb-2)  {mb / echo_time:8.1f} MB/s   ({echo_time:.3f} s)")
    print(f"  raw trio socket      {mb / statistics.median(raw):8.1f} MB/s")
    if pings:
        p50 = pings[len(pings) // 2]
        p99 = pings[min(len(pings) - 1, int(len(pings) * 0.99))]
        print(f"  pings during it: {len(pings)}, p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms")
