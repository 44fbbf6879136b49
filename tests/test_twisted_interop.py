"""trio_pb against real Twisted PB over loopback TCP, in both directions."""

from __future__ import annotations

import datetime
import decimal
import gc
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
from peers import twisted_client_against, twisted_server

from trio_pb import errors
from trio_pb.broker import open_broker
from trio_pb.flavors import Copyable, Referenceable, RemoteCopy, Root
from trio_pb.jelly import CopyRegistry
from trio_pb.testing import assert_no_leaks

ALL_TYPES: list[Any] = [
    None, True, False, 0, -1, 2147483648, -2147483649, 2**100, 1.5, "h\xe9llo", b"bytes", (1, 2),
    {"a": 1, b"b": 2}, {1, 2}, frozenset([3]), datetime.datetime(2020, 1, 2, 3, 4, 5, 6),
    datetime.date(2020, 1, 2), datetime.time(1, 2, 3, 4), datetime.timedelta(1, 2, 3),
    decimal.Decimal("-1.25"), [b"None", b"remote", "list"],
]  # fmt: skip


@pytest.fixture
async def twisted_port() -> AsyncIterator[int]:
    async with twisted_server("twisted_peer.py", "server") as port:
        yield port


class Doubler(Referenceable):
    def remote_twice(self, value: int) -> int:
        return value * 2


async def test_trio_pb_client_against_twisted_server(twisted_port: int) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", twisted_port)
    registry = CopyRegistry()
    registry.register(b"__main__.Point", TwistedPoint)
    async with open_broker(stream, server=False, registry=registry) as broker:
        root = await broker.root_object()
        assert await root.call_remote("add", 1, 2) == 3
        # Under a deadline too: only the extension dialect carries it, Twisted never sees it.
        with trio.fail_after(30):
            assert await root.call_remote("add", 1, b=41) == 42
        assert await root.call_remote("echo", ALL_TYPES) == ALL_TYPES
        assert await root.call_remote("all_types") == ALL_TYPES
        assert await root.call_remote("echo_kwargs", 1, key="value") == [[1], {"key": "value"}]
        thing = await root.call_remote("get_thing")
        assert await thing.call_remote("name") == "twisted thing"
        assert await root.call_remote("is_thing", thing) is True
        await thing.release()
        with pytest.raises(errors.RemoteError) as info:
            await root.call_remote("boom")
        assert (info.value.remote_type, info.value.value) == (b"builtins.ValueError", "bad value")
        assert "builtins.Exception" in info.value.parents
        with pytest.raises(errors.NoSuchMethod, match="remote_missing"):
            await root.call_remote("missing")
        with pytest.raises(errors.RemoteError) as quota:
            await root.call_remote("quota")
        assert "twisted.spread.pb.Error" in quota.value.parents
        root.call_remote_no_answer("record", "no answer")
        assert await root.call_remote("seen") == ["no answer"]
        assert await root.call_remote("call_back", Doubler(), 21) == 42
        assert await root.call_remote("later", "deferred") == "deferred"
        point = await root.call_remote("point")
        assert isinstance(point, TwistedPoint)
        assert (point.x, point.y) == (1, 2)
        # Twisted holds no reference from us any more, and we hold none of its.
        gc.collect()
        await trio.sleep(0.1)
        assert await root.call_remote("tables") == 0
        await assert_no_leaks(broker)

        # A disconnect fails the outstanding call at once.
        async with trio.open_nursery() as nursery:
            failure: list[BaseException] = []

            async def never() -> None:
                with pytest.raises(errors.PBConnectionLost) as lost:
                    await root.call_remote("never")
                failure.append(lost.value)

            nursery.start_soon(never)
            await trio.sleep(0.1)
            await broker._stream.aclose()
        assert failure
        with pytest.raises(errors.DeadReferenceError):
            await root.call_remote("add", 1, 2)


class InteropPoint(Copyable):
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def get_type_to_copy(self) -> bytes:
        return b"interop.Point"


class TwistedPoint(RemoteCopy):
    pass


class Thing(Referenceable):
    def remote_name(self) -> str:
        return "trio thing"


class QuotaError(errors.Error):
    pass


class ServerRoot(Root):
    def __init__(self) -> None:
        self.thing = Thing()
        self.seen: list[object] = []
        self.brokers: list[Any] = []

    def root_object(self, broker: Any) -> ServerRoot:
        self.brokers.append(broker)
        return self

    def remote_add(self, a: int, b: int = 0) -> int:
        return a + b

    def remote_echo(self, value: object) -> object:
        return value

    def remote_get_thing(self) -> Thing:
        return self.thing

    def remote_is_thing(self, obj: object) -> bool:
        return obj is self.thing

    def remote_boom(self) -> None:
        raise ValueError("bad value")

    def remote_quota(self) -> None:
        raise QuotaError("over quota")

    def remote_record(self, value: object) -> None:
        self.seen.append(value)

    def remote_seen(self) -> list[object]:
        return self.seen

    async def remote_call_back(self, ref: Any, value: int) -> object:
        return await ref.call_remote("twice", value)

    def remote_point(self) -> InteropPoint:
        return InteropPoint(3, 4)

    def remote_tables(self) -> int:
        return sum(b.statistics().objects_exported for b in self.brokers)


async def test_twisted_client_against_trio_pb_server() -> None:
    lines = await twisted_client_against(ServerRoot(), "twisted_peer.py", "client")
    assert lines == [
        "add 3",
        "kwargs 42",
        "echo True",
        "thing trio thing",
        "local True",
        "boom builtins.ValueError bad value",
        "trap trapped ValueError",
        "nosuch trapped NoSuchMethod",
        "quota trapped pb.Error",
        "seen ['no answer']",
        "call_back 42",
        "copy TrioPoint 3 4",
        "tables 0",
        "done",
    ]
