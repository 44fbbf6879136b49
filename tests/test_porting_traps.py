"""Twisted idioms that ported code keeps, and that must not break or fail silently."""

from __future__ import annotations

import gc
from typing import Any

import pytest
import trio
import trio.testing

from trio_pb.cache import Cacheable, RemoteCache, RemoteCacheObserver
from trio_pb.flavors import Root
from trio_pb.jelly import CopyRegistry
from trio_pb.testing import open_broker_pair


class TwistedStylePond(Cacheable):
    """A Cacheable written the Twisted way: it keeps its own ``observers`` list."""

    def __init__(self) -> None:
        self.observers = []
        self.ducks: list[str] = []

    def get_state_to_cache_and_observe_for(self, perspective: Any, observer: RemoteCacheObserver) -> Any:
        self.observers.append(observer)
        return {"ducks": self.ducks}

    def stopped_observing(self, perspective: Any, observer: RemoteCacheObserver) -> None:
        self.observers.remove(observer)

    def add(self, duck: str) -> None:
        self.ducks.append(duck)
        for observer in self.observers:
            observer.call_remote_no_answer("add", duck)


class SlavePond(RemoteCache):
    def observe_add(self, duck: str) -> None:
        self.ducks.append(duck)


class PondServer(Root):
    def __init__(self) -> None:
        self.pond = TwistedStylePond()

    def remote_pond(self) -> TwistedStylePond:
        return self.pond


def pond_registry() -> CopyRegistry:
    reg = CopyRegistry()
    reg.register(TwistedStylePond, SlavePond)
    return reg


def test_observers_can_be_assigned_and_deleted() -> None:
    pond = TwistedStylePond()
    assert pond.observers == []
    mine: list[RemoteCacheObserver] = []
    pond.observers = mine
    assert pond.observers is mine
    del pond.observers
    assert pond.observers == frozenset()
    # The instance state sent by default is untouched by the assignment.
    assert "observers" not in pond.__dict__


async def test_twisted_style_observers_list_keeps_working() -> None:
    server_root = PondServer()
    async with open_broker_pair(server_root, registry=pond_registry()) as (client, _server):
        root = await client.root_object()
        copy = await root.call_remote("pond")
        assert copy.ducks == []
        pond = server_root.pond
        assert len(pond.observers) == 1 and isinstance(pond.observers, list)
        # The user's own list reaches the copy...
        pond.add("mallard")
        await trio.testing.wait_all_tasks_blocked()
        assert copy.ducks == ["mallard"]
        # ... and so does broadcast, which uses trio_pb's bookkeeping, not that list.
        pond.broadcast("add", "teal")
        await trio.testing.wait_all_tasks_blocked()
        assert copy.ducks == ["mallard", "teal"]
        await copy.release()
        del copy
        gc.collect()
        await trio.testing.wait_all_tasks_blocked()
        # stopped_observing removed it from the user's list without error.
        assert pond.observers == []
        del pond.observers
        assert pond.observers == frozenset()


class Recorder(Root):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def remote_echo(self, value: str) -> str:
        self.calls.append(value)
        return value


async def test_a_never_awaited_call_warns_naming_the_method_and_sends_nothing() -> None:
    server_root = Recorder()
    async with open_broker_pair(server_root) as (client, _server):
        root = await client.root_object()
        with pytest.warns(RuntimeWarning, match=r"call_remote\('echo'\)' was never awaited"):
            root.call_remote("echo", "lost")
            gc.collect()
        with pytest.warns(RuntimeWarning, match=r"callRemote\('echo'\)' was never awaited"):
            root.callRemote("echo", "lost too", pbanswer=False)
            gc.collect()
        with pytest.warns(RuntimeWarning, match=r"call_remote\('echo'\)' was never awaited"):
            root.remote_method("echo")("lost as well")
            gc.collect()
        await trio.testing.wait_all_tasks_blocked()
        assert server_root.calls == []
        # Awaited, the same calls go through.
        assert await root.call_remote("echo", "a") == "a"
        assert await root.callRemote("echo", "b") == "b"
        assert await root.remote_method("echo")("c") == "c"
        assert await root.callRemote("echo", "d", pbanswer=False) is None
        await trio.testing.wait_all_tasks_blocked()
        assert server_root.calls == ["a", "b", "c", "d"]
