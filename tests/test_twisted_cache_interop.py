"""Cacheable and RemoteCache against real Twisted PB, in both directions."""

from __future__ import annotations

import gc
from typing import Any

import trio
import trio.testing
from peers import twisted_client_against, twisted_server

from trio_pb.broker import open_broker
from trio_pb.cache import Cacheable, RemoteCache, RemoteCacheObserver
from trio_pb.flavors import Root
from trio_pb.jelly import CopyRegistry


class RemoteTCache(RemoteCache):
    def observe_set(self, value: int) -> str:
        self.value = value
        return f"trio saw {value}"


async def test_trio_pb_holds_a_twisted_cacheable() -> None:
    registry = CopyRegistry()
    registry.register(b"__main__.TCache", RemoteTCache)
    async with twisted_server("twisted_cache_peer.py", "server") as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with open_broker(stream, server=False, registry=registry) as broker:
            root = await broker.root_object()
            cache = await root.call_remote("cache")
            assert isinstance(cache, RemoteTCache)
            assert cache.value == 1
            updates = cache.updates()
            assert await root.call_remote("set", 7) == ["trio saw 7"]
            update = await updates.__anext__()
            assert (update.method, update.args, cache.value) == ("set", (7,), 7)
            twice = await root.call_remote("cache_twice")
            # Already cached: each occurrence is a ``cached`` token, a proxy of its own.
            assert twice[0] is not twice[1] and twice[0] is not cache
            assert twice[0].value == twice[1].value == 7
            assert await root.call_remote("is_cache", cache) is True
            assert await root.call_remote("status") == [1, 0]
            await cache.release()
            async with twice[0], twice[1]:
                pass
            del cache, twice
            gc.collect()
            await trio.sleep(0.1)
            # Twisted got one decache per proxy and stopped observing.
            assert await root.call_remote("status") == [0, 1]
            assert broker.statistics().caches_imported == 0


class Counter(Cacheable):
    def __init__(self) -> None:
        self.value = 3
        self.stopped = 0

    def get_type_to_copy(self) -> bytes:
        return b"interop.Counter"

    def get_state_to_cache_and_observe_for(self, perspective: Any, observer: RemoteCacheObserver) -> Any:
        return {"value": self.value}

    def stopped_observing(self, perspective: Any, observer: RemoteCacheObserver) -> None:
        self.stopped += 1


class CounterRoot(Root):
    def __init__(self) -> None:
        self.counter = Counter()

    def remote_counter(self) -> Counter:
        return self.counter

    async def remote_bump(self, value: int) -> list[Any]:
        self.counter.value = value
        return [await o.call_remote("set", value) for o in self.counter.observers]

    def remote_is_counter(self, obj: object) -> bool:
        return obj is self.counter

    def remote_status(self) -> list[int]:
        return [len(self.counter.observers), self.counter.stopped]


async def test_twisted_holds_a_trio_pb_cacheable() -> None:
    lines = await twisted_client_against(CounterRoot(), "twisted_cache_peer.py", "client")
    assert lines == [
        "value 3",
        "updated 5",
        "lcache True",
        "shared 5 True",
        "status [0, 1]",
        "done",
    ]
