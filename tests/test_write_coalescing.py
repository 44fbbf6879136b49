"""Write coalescing: calls queued together go out in one write; a lone call goes out at once."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import trio

import trio_pb
from trio_pb import _socket_io
from trio_pb.broker import Broker
from trio_pb.testing import open_broker_pair

IN_FLIGHT = 64
ROUNDS = 8


class Calc(trio_pb.Root):
    def remote_add(self, a: int, b: int) -> int:
        return a + b


@contextmanager
def counting_writes(
    monkeypatch: pytest.MonkeyPatch, broker: Broker
) -> Iterator[list[trio.lowlevel.Task | None]]:
    """The tasks that made each direct write to *broker*'s socket, in order."""
    fd = broker._stream.socket.fileno()  # type: ignore[attr-defined]
    writers: list[trio.lowlevel.Task | None] = []
    real: Callable[[int, bytes], int] = os.write

    def write(descriptor: int, data: bytes) -> int:
        if descriptor == fd:
            writers.append(trio.lowlevel.current_task())
        return real(descriptor, data)

    monkeypatch.setattr(_socket_io.os, "write", write)
    yield writers


async def test_calls_in_flight_share_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    async with open_broker_pair(Calc(), transport="socket") as (client, _server):
        root = await client.root_object()
        with counting_writes(monkeypatch, client) as writes:

            async def caller() -> None:
                for _ in range(ROUNDS):
                    assert await root.call_remote("add", 1, 2) == 3

            async with trio.open_nursery() as nursery:
                for _ in range(IN_FLIGHT):
                    nursery.start_soon(caller)
        calls = IN_FLIGHT * ROUNDS
        # One write per call before coalescing; now about one per read of answers.
        assert len(writes) <= calls // 4, f"{len(writes)} writes for {calls} calls"


async def test_a_lone_call_is_written_by_its_caller_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    async with open_broker_pair(Calc(), transport="socket") as (client, _server):
        root = await client.root_object()
        with counting_writes(monkeypatch, client) as writes:
            for _ in range(10):
                assert await root.call_remote("add", 1, 2) == 3
        # Each call's bytes were written before its caller first blocked:
        # by the calling task itself, not by the writer task after a switch.
        assert writes == [trio.lowlevel.current_task()] * 10
