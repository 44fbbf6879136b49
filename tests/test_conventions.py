"""trio's conventions: async methods checkpoint, no public constructor, options checked early."""

from __future__ import annotations

import io
import os
import socket
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import assert_checkpoints

import trio_pb
from trio_pb.broker import Broker, open_broker
from trio_pb.cache import Cacheable, RemoteCache
from trio_pb.connect import open_tcp_broker, open_unix_broker, serve_tcp, serve_unix
from trio_pb.cred import AllowAnonymousAccess, Anonymous, Portal
from trio_pb.factories import PBClientFactory, PBServerFactory
from trio_pb.flavors import Referenceable, Root
from trio_pb.jelly import CopyRegistry
from trio_pb.options import BrokerOptions
from trio_pb.paging import FilePager, PageCollector, Pager, send_pages
from trio_pb.testing import open_broker_pair

# Every test runs over memory streams and over real sockets (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("each_transport")


class Counter(Cacheable):
    def __init__(self) -> None:
        self.value = 0


class RemoteCounter(RemoteCache):
    def observe_set(self, value: int) -> None:
        self.value = value


class Thing(Referenceable):
    def remote_nothing(self) -> None:
        return None


class Service(Root):
    def __init__(self) -> None:
        self.counter = Counter()
        self.noted: list[object] = []

    def remote_counter(self) -> Counter:
        return self.counter

    def remote_thing(self) -> Thing:
        return Thing()

    def remote_note(self, value: object) -> None:
        self.noted.append(value)

    def remote_echo(self, value: object) -> object:
        return value


class Realm:
    def request_avatar(self, avatar_id: object, mind: Any) -> tuple[Referenceable, Callable[[], None]]:
        return Thing(), lambda: None


def registry() -> CopyRegistry:
    reg = CopyRegistry()
    reg.register(Counter, RemoteCounter)
    return reg


class OnePage(Pager):
    """A pager whose pages are made synchronously."""

    def next_page(self) -> Any:
        self.stop_paging()
        return b"page"


# -- every async method checkpoints, even when it has nothing to wait for --------


async def test_broker_methods_checkpoint() -> None:
    async with open_broker_pair(Service()) as (client, server):
        with assert_checkpoints():
            root = await client.root_object()
        with assert_checkpoints():
            await client.drain()  # nothing queued
        with assert_checkpoints():
            await client.ping()
        with assert_checkpoints():
            await root.call_remote("echo", 1)
        await client.aclose()
        with assert_checkpoints():
            await client.aclose()  # closed already
        with assert_checkpoints():
            await client.wait_closed()  # closed already


async def test_reference_methods_checkpoint() -> None:
    service = Service()
    async with open_broker_pair(service) as (client, server):
        root = await client.root_object()
        with assert_checkpoints():
            await root.callRemote("note", 1, pbanswer=False)  # sends, waits for nothing
        thing = await root.call_remote("thing")
        with assert_checkpoints():
            async with thing as entered:
                assert entered is thing
        with assert_checkpoints():
            await thing.release()  # released already: nothing to do
        other = await root.call_remote("thing")
        with assert_checkpoints():
            await other.release()
        await client.drain()
        await trio.testing.wait_all_tasks_blocked()
        assert service.noted == [1]


async def test_cache_update_iterator_checkpoints_with_an_update_buffered() -> None:
    service = Service()
    async with open_broker_pair(service, registry=registry()) as (client, server):
        root = await client.root_object()
        counter = await root.call_remote("counter")
        updates = counter.updates()
        (observer,) = service.counter.observers
        await observer.call_remote("set", 3)
        await trio.testing.wait_all_tasks_blocked()
        with assert_checkpoints():
            update = await updates.__anext__()  # buffered: nothing to wait for
        assert (update.method, update.args) == ("set", (3,))
        await counter.release()
        await trio.testing.wait_all_tasks_blocked()
        with assert_checkpoints(), pytest.raises(StopAsyncIteration):
            await updates.__anext__()  # ended: nothing to wait for either


async def test_login_checkpoints_with_plain_checker_and_realm() -> None:
    portal = Portal(Realm(), [AllowAnonymousAccess()])
    with assert_checkpoints():
        avatar, logout = await portal.login(Anonymous(), None)
    assert isinstance(avatar, Thing)
    async with open_broker_pair(portal) as (client, server):
        with assert_checkpoints():
            await client.login(Anonymous())


async def test_paging_checkpoints_with_plain_pages_and_files() -> None:
    async with open_broker_pair(Root(), client_root=Root()) as (client, server):
        collector = PageCollector()
        client.set_name_for_local("collector", collector)
        remote_collector = server.remote_for_name("collector")
        with assert_checkpoints():
            await OnePage(remote_collector).send_next_page()
        with assert_checkpoints():
            assert await FilePager(remote_collector, io.BytesIO(b"abc")).next_page() == b"abc"
        with assert_checkpoints():
            await send_pages(remote_collector, b"")
        await server.drain()
        await trio.testing.wait_all_tasks_blocked()
        with assert_checkpoints():
            assert await collector.__anext__() == b"page"  # buffered


async def test_factory_methods_checkpoint() -> None:
    portal = Portal(Realm(), [AllowAnonymousAccess()])
    async with open_broker_pair(portal) as (client, server):
        factory = PBClientFactory.for_broker(client)
        with assert_checkpoints():
            await factory.get_root_object()
        with assert_checkpoints():
            await factory.login(Anonymous())
        with assert_checkpoints():
            await factory.disconnect()


# -- no public constructor ---------------------------------------------------


async def test_broker_has_no_public_constructor() -> None:
    left, _right = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        with pytest.raises(TypeError, match=r"no public constructor.*open_broker"):
            Broker(left, nursery, is_client=True, root=None, options=BrokerOptions())
        with pytest.raises(TypeError, match="open_broker"):
            Broker()


# -- each option defined once, and a typo fails at once ------------------------


def test_broker_options_are_one_frozen_definition() -> None:
    options = BrokerOptions(keepalive=5, send_buffer=1000)
    assert options.keepalive == 5 and options.send_buffer == 1000
    with pytest.raises(AttributeError):
        options.keepalive = 6  # type: ignore[misc]
    with pytest.raises(ValueError, match="keepalive"):
        BrokerOptions(keepalive=0)
    assert trio_pb.BrokerOptions is BrokerOptions


async def test_open_broker_takes_options_and_keywords() -> None:
    options = BrokerOptions(max_running_calls=7, send_buffer=12345)
    async with open_broker_pair(Service(), options=options, send_buffer=54321) as (client, server):
        assert server._max_running_calls == 7
        assert server._send_buffer == 54321  # keywords win over options=
    async with open_broker_pair(Service(), max_running_calls=3) as (client, server):
        assert server._max_running_calls == 3


async def test_typo_fails_when_open_broker_is_called() -> None:
    left, _right = trio.testing.memory_stream_pair()
    with pytest.raises(TypeError, match=r"open_broker.*'keepalve'"):
        async with open_broker(left, server=False, keepalve=30):
            pass  # pragma: no cover
    with pytest.raises(TypeError, match=r"open_broker_pair.*'keepalve'"):
        async with open_broker_pair(keepalve=30):
            pass  # pragma: no cover


async def test_typo_fails_when_serve_tcp_is_called_not_per_connection() -> None:
    with trio.fail_after(5):
        with pytest.raises(TypeError, match=r"serve_tcp.*'keepalve'"):
            await serve_tcp(Root(), 0, host="127.0.0.1", keepalve=30)
        with pytest.raises(TypeError, match=r"serve_tcp.*'keepalve'"):
            await serve_tcp(PBServerFactory(Root()), 0, host="127.0.0.1", keepalve=30)


async def test_typo_fails_when_serve_unix_is_called(tmp_path: Any) -> None:
    path = os.path.join(tmp_path, "pb.sock")
    with trio.fail_after(5), pytest.raises(TypeError, match=r"serve_unix.*'keepalve'"):
        await serve_unix(Root(), path, keepalve=30)
    assert not os.path.exists(path)


async def test_typo_fails_before_open_tcp_broker_connects() -> None:
    # Nothing listens on this port: a connection attempt would be refused.
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with pytest.raises(TypeError, match=r"open_tcp_broker.*'keepalve'"):
        async with open_tcp_broker("127.0.0.1", port, keepalve=30):
            pass  # pragma: no cover
    with pytest.raises(TypeError, match=r"open_unix_broker.*'keepalve'"):
        async with open_unix_broker("/nonexistent/pb.sock", keepalve=30):
            pass  # pragma: no cover


def test_typo_fails_when_a_factory_is_made() -> None:
    with pytest.raises(TypeError, match=r"PBServerFactory.*'keepalve'"):
        PBServerFactory(Root(), keepalve=30)
    with pytest.raises(TypeError, match=r"PBClientFactory.*'keepalve'"):
        PBClientFactory(keepalve=30)
