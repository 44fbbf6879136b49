"""Cacheable and RemoteCache: copies kept up to date through observers."""

from __future__ import annotations

import gc
from typing import Any

import pytest
import trio
import trio.testing

from trio_pb import errors
from trio_pb.cache import Cacheable, RemoteCache, RemoteCacheObserver
from trio_pb.flavors import Root
from trio_pb.jelly import CopyRegistry
from trio_pb.testing import assert_no_leaks, open_broker_pair

# Every test runs over memory streams and over real sockets (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("each_transport")


class Counter(Cacheable):
    def __init__(self) -> None:
        self.value = 0
        self.stopped: list[RemoteCacheObserver] = []

    def get_state_to_cache_and_observe_for(self, perspective: Any, observer: RemoteCacheObserver) -> Any:
        return {"value": self.value}

    def stopped_observing(self, perspective: Any, observer: RemoteCacheObserver) -> None:
        self.stopped.append(observer)

    def set(self, value: int) -> None:
        self.value = value
        self.broadcast("set", value)


class RemoteCounter(RemoteCache):
    inits = 0  # __init__ runs once per first copy, never for cached tokens

    def __init__(self) -> None:
        RemoteCounter.inits += 1

    def observe_set(self, value: int) -> str:
        self.value = value
        return f"now {value}"

    async def observe_slow_set(self, value: int) -> None:
        await trio.sleep(0.01)
        self.value = value


class Server(Root):
    def __init__(self) -> None:
        self.counter = Counter()

    def remote_counter(self) -> Counter:
        return self.counter

    def remote_counter_twice(self) -> list[Counter]:
        return [self.counter, self.counter]

    def remote_is_counter(self, obj: object) -> bool:
        return obj is self.counter


def registry() -> CopyRegistry:
    reg = CopyRegistry()
    reg.register(Counter, RemoteCounter)
    return reg


async def test_first_copy_then_cached_tokens_share_state() -> None:
    RemoteCounter.inits = 0
    server_root = Server()
    server_root.counter.value = 7
    async with open_broker_pair(server_root, registry=registry()) as (client, server):
        root = await client.root_object()
        # Inside one call the object is sent once and referred to: one proxy.
        both = await root.call_remote("counter_twice")
        assert isinstance(both[0], RemoteCounter)
        assert both[0] is both[1]
        assert both[0].value == 7
        assert RemoteCounter.inits == 1
        # Later a ``cached`` token: another proxy sharing the same state.
        first = await root.call_remote("counter")
        assert first is not both[0]
        assert first.value == 7
        entry = next(iter(server._protocol.remotely_cached.values()))
        assert entry.count == 2
        server_root.counter.set(9)
        await trio.testing.wait_all_tasks_blocked()
        assert first.value == both[0].value == 9
        # Sent back, a copy is the original Cacheable.
        assert await root.call_remote("is_counter", first) is True
        await first.release()
        await both[0].release()
        del first, both
        await trio.testing.wait_all_tasks_blocked()
        assert server_root.counter.stopped, "stopped_observing ran"
        assert server.statistics().caches_exported == 0
        assert client.statistics().caches_imported == 0
        assert not server_root.counter.observers
        await assert_no_leaks(client, server)


async def test_updates_iterator_and_observer_answers() -> None:
    server_root = Server()
    async with open_broker_pair(server_root, registry=registry()) as (client, server):
        root = await client.root_object()
        counter = await root.call_remote("counter")
        updates = counter.updates()
        (observer,) = server_root.counter.observers
        assert await observer.call_remote("set", 3) == "now 3"
        await observer.call_remote("slow_set", 4)
        server_root.counter.set(5)
        seen = []
        with trio.fail_after(5):
            async for update in updates:
                # Each update is yielded after observe_* applied it.
                assert counter.value >= update.args[0]
                seen.append((update.method, update.args, update.missed))
                if len(seen) == 3:
                    break
        assert seen == [("set", (3,), 0), ("slow_set", (4,), 0), ("set", (5,), 0)]
        assert counter.value == 5
        with pytest.raises(errors.RemoteError, match="AttributeError"):
            await observer.call_remote("missing")
        await counter.release()
        with trio.fail_after(5):
            assert [u async for u in updates] == []  # ends once uncached


async def test_slow_consumer_drops_oldest_updates_and_counts_them() -> None:
    server_root = Server()
    async with open_broker_pair(server_root, registry=registry()) as (client, server):
        root = await client.root_object()
        counter = await root.call_remote("counter")
        updates = counter.updates(buffer=2)
        for value in range(1, 6):
            server_root.counter.set(value)
        await root.call_remote("is_counter", None)  # a round trip: all updates arrived
        first = await updates.__anext__()
        second = await updates.__anext__()
        assert (first.args, first.missed) == ((4,), 3)
        assert (second.args, second.missed) == ((5,), 0)
        assert counter.value == 5


async def test_disconnect_stops_observing_and_fails_update_iterators() -> None:
    server_root = Server()
    async with open_broker_pair(server_root, registry=registry()) as (client, server):
        root = await client.root_object()
        counter = await root.call_remote("counter")
        updates = counter.updates()
        await server._stream.aclose()
        with trio.fail_after(5), pytest.raises(errors.DeadReferenceError):
            await updates.__anext__()
        await trio.testing.wait_all_tasks_blocked()
        assert len(server_root.counter.stopped) == 1
        assert not server_root.counter.observers
        del counter
        gc.collect()


async def test_observer_call_after_release_is_a_local_error() -> None:
    server_root = Server()
    async with open_broker_pair(server_root, registry=registry()) as (client, server):
        root = await client.root_object()
        counter = await root.call_remote("counter")
        (observer,) = server_root.counter.observers
        await counter.release()
        await root.call_remote("is_counter", None)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(errors.LocalProtocolError):
            await observer.call_remote("set", 1)


async def test_unregistered_cache_tag_fails_the_call() -> None:
    async with open_broker_pair(Server()) as (client, server):
        root = await client.root_object()
        with pytest.raises(errors.InsecureJelly):
            await root.call_remote("counter")
        # The server counted a copy that the client could not make: the client
        # gave it back at once, so nothing is held on either side.
        assert await root.call_remote("is_counter", None) is False
        await trio.testing.wait_all_tasks_blocked()
        assert server.statistics().caches_exported == 0
        assert client.statistics().caches_imported == 0
        await assert_no_leaks(client, server)


async def test_observer_callremote_with_pbanswer_false_does_not_wait() -> None:
    server_root = Server()
    async with open_broker_pair(server_root, registry=registry()) as (client, _server):
        root = await client.root_object()
        counter = await root.call_remote("counter")
        (observer,) = server_root.counter.observers
        assert await observer.callRemote("set", 8, pbanswer=False) is None
        await root.call_remote("is_counter", None)
        assert counter.value == 8
