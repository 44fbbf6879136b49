"""A closed connection is freed by reference counting, without waiting for the garbage collector.

Each test runs a connection to its end with the cyclic garbage collector
disabled, drops every reference to it, and checks through weak references
that its brokers, protocol objects and streams are gone at once; then that
a full collection finds nothing of trio_pb's left behind (nothing in a cycle).
"""

from __future__ import annotations

import gc
import logging
import os
import types
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

import trio_pb
from trio_pb import errors
from trio_pb.broker import Broker, open_broker
from trio_pb.cache import Cacheable, RemoteCache, RemoteCacheObserver
from trio_pb.connect import open_tcp_broker, serve_tcp
from trio_pb.cred import InMemoryPasswordChecker, Portal, UsernamePassword
from trio_pb.flavors import Avatar, Copyable, Referenceable, RemoteCopy, Root
from trio_pb.jelly import CopyRegistry
from trio_pb.paging import get_all_pages, send_pages
from trio_pb.protocol import PBProtocol
from trio_pb.references import RemoteReference
from trio_pb.testing import open_broker_pair

_PACKAGE_DIR = os.path.dirname(trio_pb.__file__)


# -- checking what is left ----------------------------------------------------


@pytest.fixture(autouse=True)
def no_collector() -> Iterator[None]:
    """Run the test with the cyclic garbage collector off, as if it never ran in time.

    What is left of earlier tests is held meanwhile: a failed test's
    traceback (which pytest-trio's own frames keep in a cycle) is let go
    while the next test runs, and would be taken for this test's garbage.
    """
    gc.collect()
    earlier = [obj for obj in gc.get_objects() if _ours(obj)]
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        del earlier


class _RecordsAsText(logging.Filter):
    """Turn a log record's arguments and traceback into text, so that it holds no objects."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = record.getMessage(), None
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        return True


@pytest.fixture(autouse=True)
def log_records_hold_no_objects() -> Iterator[None]:
    """Keep pytest's captured log records from holding the objects that were logged.

    pytest keeps every record until the test ends, and a record holds its
    arguments and the frames of its traceback (and through them, a broker):
    references that are not cycles, but that keep the objects alive past
    the point this module checks.
    """
    logger = logging.getLogger("trio_pb")
    as_text = _RecordsAsText()
    logger.addFilter(as_text)
    try:
        yield
    finally:
        logger.removeFilter(as_text)


def _ours(obj: object) -> bool:
    """Whether *obj* is trio_pb's (or this module's): an instance of its classes, or its code running."""
    if isinstance(obj, types.FrameType):
        return obj.f_code.co_filename.startswith(_PACKAGE_DIR)
    if isinstance(obj, types.CoroutineType):
        return obj.cr_code.co_filename.startswith(_PACKAGE_DIR)
    if isinstance(obj, types.FunctionType):
        return obj.__code__.co_filename.startswith(_PACKAGE_DIR)
    module = getattr(type(obj), "__module__", None)
    return isinstance(module, str) and (module.startswith("trio_pb") or module == __name__)


def _describe(obj: object) -> str:
    if isinstance(obj, types.FrameType):
        return f"frame of {obj.f_code.co_name} ({os.path.basename(obj.f_code.co_filename)})"
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def assert_freed(objects: dict[str, weakref.ref[Any]]) -> None:
    """Assert that every object is gone, and that a full collection finds nothing of ours."""
    holders = {}
    for name, ref in objects.items():
        obj = ref()
        if obj is not None:
            holders[name] = sorted({_describe(holder) for holder in gc.get_referrers(obj)})
        del obj
    assert not holders, f"still alive without a garbage collection, held by: {holders}"
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        cyclic = sorted({_describe(obj) for obj in gc.garbage if _ours(obj)})
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert not cyclic, f"left in reference cycles: {cyclic}"


def watch(broker: Broker, name: str, found: dict[str, weakref.ref[Any]]) -> None:
    """Remember weak references to a broker, its protocol object, its stream and its socket."""
    found[name] = weakref.ref(broker)
    found[f"{name} protocol"] = weakref.ref(broker._protocol)
    found[f"{name} stream"] = weakref.ref(broker._stream)
    if isinstance(broker._stream, trio.SocketStream):
        found[f"{name} socket"] = weakref.ref(broker._stream.socket)


# -- what the connections do --------------------------------------------------


class Point(Copyable):
    def __init__(self, x: int) -> None:
        self.x = x


class RemotePoint(RemoteCopy):
    pass


class Counter(Cacheable):
    def __init__(self) -> None:
        self.value = 0
        self.watching: list[RemoteCacheObserver] = []

    def get_state_to_cache_and_observe_for(self, perspective: Any, observer: RemoteCacheObserver) -> Any:
        self.watching.append(observer)
        return {"value": self.value}

    def stopped_observing(self, perspective: Any, observer: RemoteCacheObserver) -> None:
        self.watching.remove(observer)

    def set(self, value: int) -> None:
        self.value = value
        self.broadcast("set", value)


class RemoteCounter(RemoteCache):
    value: int

    def observe_set(self, value: int) -> None:
        self.value = value


class Refused(errors.Error):
    pass


REGISTRY = CopyRegistry()
REGISTRY.register(Point, RemotePoint)
REGISTRY.register(Counter, RemoteCounter)


class Thing(Referenceable):
    def __init__(self, broker: Broker) -> None:
        self.broker = broker  # an object of the connection's own that holds its broker

    def remote_hello(self) -> str:
        return "hello"


class Connection(Referenceable):
    """The root one connection gets: it holds its broker, as roots made by root_object often do."""

    def __init__(self, server: Server, broker: Broker) -> None:
        self.server = server
        self.broker = broker

    def remote_add(self, a: int, b: int) -> int:
        broker = self.broker
        broker.notify_on_disconnect(lambda: broker.connected)
        return a + b

    def remote_thing(self) -> Thing:
        return Thing(self.broker)

    def remote_point(self) -> Point:
        return Point(3)

    def remote_counter(self) -> Counter:
        return self.server.counter

    async def remote_call_back(self, ref: RemoteReference) -> Any:
        ref.notify_on_disconnect(lambda ref: None)
        return await ref.call_remote("ping")

    async def remote_crash_the_caller(self, ref: RemoteReference) -> Any:
        return await ref.call_remote("crash")

    async def remote_slow_add(self, a: int, b: int) -> int:
        await trio.sleep(0)
        return a + b

    def remote_fail(self) -> None:
        raise ValueError("a bug in a remote method")

    async def remote_fail_later(self) -> None:
        await trio.sleep(0)
        raise KeyError("a bug in an async remote method")

    def remote_refuse(self) -> None:
        raise Refused("refused")

    async def remote_sleep(self) -> None:
        self.server.sleeping.set()
        await trio.sleep_forever()

    async def remote_pages(self, collector: RemoteReference) -> None:
        async with collector:
            await send_pages(collector, b"x" * 5000, chunk_size=1000)

    async def remote_broken_pages(self, collector: RemoteReference) -> None:
        raise Refused("no pages today")


class Server(Root):
    def __init__(self) -> None:
        self.counter = Counter()
        self.brokers: list[weakref.ref[Broker]] = []
        self.sleeping = trio.Event()

    def root_object(self, broker: Broker) -> Connection:
        self.brokers.append(weakref.ref(broker))
        return Connection(self, broker)


class Mine(Referenceable):
    def remote_ping(self) -> str:
        return "pong"

    def remote_crash(self) -> None:
        raise Fatal("not an Exception: it ends the connection")


class Fatal(BaseException):
    pass


async def a_bit_of_everything(client: Broker, server: Server) -> None:
    """References both ways, copies, a cache, async methods, errors, a cancelled call, paging."""
    root = await client.root_object()
    assert await root.call_remote("add", 1, 2) == 3
    thing = await root.call_remote("thing")
    assert await thing.call_remote("hello") == "hello"
    point = await root.call_remote("point")
    assert isinstance(point, RemotePoint)
    counter = await root.call_remote("counter")
    updates = counter.updates()
    server.counter.set(5)
    assert (await updates.__anext__()).args == (5,)
    assert await root.call_remote("call_back", Mine()) == "pong"
    assert await root.call_remote("slow_add", 1, 2) == 3
    for method, error in [
        ("fail", errors.RemoteError),
        ("fail_later", errors.RemoteError),
        ("refuse", errors.RemoteError),
        ("no_such_method", errors.NoSuchMethod),
    ]:
        try:
            await root.call_remote(method)
        except error:
            pass
        else:
            pytest.fail(f"{method} did not raise")
    with trio.move_on_after(5) as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(root.call_remote, "sleep")
            await server.sleeping.wait()
            nursery.cancel_scope.cancel()
    assert not scope.cancelled_caught
    assert b"".join(await get_all_pages(root, "pages")) == b"x" * 5000
    try:
        await get_all_pages(root, "broken_pages")
    except errors.RemoteError:
        pass
    else:
        pytest.fail("broken_pages did not raise")
    await thing.release()
    del root, thing, point, counter, updates


# -- the tests ----------------------------------------------------------------


@pytest.mark.parametrize("transport", ["memory", "socket"])
async def test_a_closed_broker_pair_is_freed_by_reference_counting(transport: Any) -> None:
    found: dict[str, weakref.ref[Any]] = {}
    server_root = Server()
    async with open_broker_pair(server_root, transport=transport, registry=REGISTRY) as (client, server):
        watch(client, "client", found)
        watch(server, "server", found)
        del server
        await a_bit_of_everything(client, server_root)
    assert not client.connected
    del client
    assert_freed(found)


async def test_a_served_tcp_connection_is_freed_by_reference_counting() -> None:
    found: dict[str, weakref.ref[Any]] = {}
    server_root = Server()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(serve_tcp, server_root, 0, host="127.0.0.1", registry=REGISTRY)
        )
        port = listeners[0].socket.getsockname()[1]
        del listeners
        async with open_tcp_broker("127.0.0.1", port, registry=REGISTRY) as client:
            (server_ref,) = server_root.brokers
            server = server_ref()
            assert server is not None
            watch(client, "client", found)
            watch(server, "server", found)
            del server
            await a_bit_of_everything(client, server_root)
        del client
        await wait_until_closed(server_ref)
        await connect_once_more(port)
        # The server still runs: its connection is freed all the same.
        assert_freed(found)
        nursery.cancel_scope.cancel()


async def wait_until_closed(ref: weakref.ref[Broker]) -> None:
    """Wait until the server broker behind *ref* has closed, and its handler has finished."""
    with trio.fail_after(5):
        while (broker := ref()) is not None and broker.connected:
            del broker
            await trio.sleep(0.001)
        del broker
    await trio.testing.wait_all_tasks_blocked()


async def connect_once_more(port: int) -> None:
    """Connect and leave at once, so that trio's accept loop lets go of the previous stream.

    (trio.serve_listeners keeps the last stream it accepted in a variable
    until it accepts the next one: a reference, not a cycle.)
    """
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.aclose()
    await trio.testing.wait_all_tasks_blocked()


class User(Avatar):
    def __init__(self, mind: Any) -> None:
        self.mind = mind

    async def perspective_greet_me(self) -> Any:
        return await self.mind.call_remote("ping")


class Realm:
    def request_avatar(self, avatar_id: object, mind: Any) -> tuple[User, Any]:
        return User(mind), lambda: None


class WatchedPortal(Portal):
    def __init__(self) -> None:
        super().__init__(Realm(), [InMemoryPasswordChecker({b"alice": b"secret"})])
        self.brokers: list[weakref.ref[Broker]] = []

    def root_object(self, broker: Broker) -> Any:
        self.brokers.append(weakref.ref(broker))
        return super().root_object(broker)


@pytest.mark.parametrize("transport", ["memory", "socket"])
async def test_a_closed_login_session_is_freed_by_reference_counting(transport: Any) -> None:
    found: dict[str, weakref.ref[Any]] = {}
    portal = WatchedPortal()
    async with open_broker_pair(portal, transport=transport) as (client, server):
        watch(client, "client", found)
        watch(server, "server", found)
        del server
        try:
            await client.login(UsernamePassword(b"alice", b"wrong"))
        except errors.UnauthorizedLogin:
            pass
        else:
            pytest.fail("a wrong password was accepted")
        avatar = await client.login(UsernamePassword(b"alice", b"secret"), Mine())
        assert await avatar.call_remote("greet_me") == "pong"
        found["avatar reference"] = weakref.ref(avatar)
        del avatar  # still logged in when the connection closes
    del client
    assert_freed(found)


async def test_a_broker_whose_peer_broke_the_protocol_is_freed_by_reference_counting() -> None:
    found: dict[str, weakref.ref[Any]] = {}
    server_root = Server()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(serve_tcp, server_root, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        del listeners
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            # Behave as a client: choose pb, then send an expression that is not a command.
            await stream.send_all(b"\x02\x82pb")
            with trio.fail_after(5):
                while not server_root.brokers:
                    await trio.sleep(0.001)
            (server_ref,) = server_root.brokers
            server = server_ref()
            assert server is not None
            watch(server, "server", found)
            await server.root_object()  # the handshake is done
            await stream.send_all(b"\x01\x88")
            await server.wait_closed()
            error = server.error
            del server
            await wait_until_closed(server_ref)
        await connect_once_more(port)
        # The error is kept (a user may keep it too), but it does not hold the broker.
        assert isinstance(error, errors.ProtocolError)
        assert_freed(found)
        nursery.cancel_scope.cancel()


class Hook:
    """A client root that watches its broker (the only way to reach a broker whose handshake fails)."""

    def __init__(self, found: dict[str, weakref.ref[Any]]) -> None:
        self.found = found

    def root_object(self, broker: Broker) -> Mine:
        watch(broker, "client", self.found)
        return Mine()


async def test_a_broker_whose_handshake_failed_is_freed_by_reference_counting() -> None:
    found: dict[str, weakref.ref[Any]] = {}
    client_stream, server_stream = trio.testing.memory_stream_pair()
    # A server that offers only a dialect nobody knows.
    await server_stream.send_all(b"\x01\x80\x03\x82xml")
    try:
        async with open_broker(client_stream, server=False, root=Hook(found)):
            pytest.fail("the handshake cannot succeed")
    except errors.ProtocolError as exc:
        assert "no dialect in common" in str(exc)
    else:
        pytest.fail("the handshake did not fail")
    del client_stream
    assert_freed(found)


async def test_a_broker_whose_peer_vanished_while_it_wrote_is_freed_by_reference_counting() -> None:
    # trio's SocketStream turns the OSError of a send into its own error
    # inside a @contextmanager, which on Python 3.12 and later leaves the
    # OSError in a reference cycle holding the writer's frames (CPython
    # gh-129280): the broker must not be caught up in it.
    found: dict[str, weakref.ref[Any]] = {}
    client_socket, server_socket = trio.socket.socketpair()
    peer = trio.SocketStream(server_socket)
    await peer.send_all(PBProtocol(None, is_client=False).data_to_send())  # a server's offer, then silence
    async with open_broker(trio.SocketStream(client_socket), server=False) as client:
        watch(client, "client", found)
        async with trio.open_nursery() as nursery:
            # More than the socket's buffer: the writer waits for a peer that does not read ...
            nursery.start_soon(call_and_lose_the_connection, await client.root_object())
            await trio.testing.wait_all_tasks_blocked()
            assert client._unsent is not None
            # ... and the peer goes away: the writer's send fails.
            await peer.aclose()
    del client, client_socket, server_socket, peer
    assert_freed(found)


async def call_and_lose_the_connection(root: RemoteReference) -> None:
    with pytest.raises(errors.PBConnectionLost):
        await root.call_remote("take", [b"x" * 500_000] * 8)


@asynccontextmanager
async def own_broker_pair() -> AsyncIterator[tuple[Broker, Broker]]:
    """A user's own context manager around a broker pair: one more frame for an exception to leave by."""
    async with open_broker_pair(Server(), transport="socket") as pair:
        yield pair


async def test_a_broker_left_by_an_exception_is_freed_by_reference_counting() -> None:
    found: dict[str, weakref.ref[Any]] = {}
    try:
        async with own_broker_pair() as (client, server):
            watch(client, "client", found)
            watch(server, "server", found)
            del server
            root = await client.root_object()
            await root.call_remote("add", 1, 2)
            del root
            raise LookupError("the user's own error")
    except LookupError:
        pass
    del client
    assert_freed(found)


async def test_a_broker_crashed_by_a_base_exception_is_freed_by_reference_counting() -> None:
    found: dict[str, weakref.ref[Any]] = {}
    try:
        async with open_broker_pair(Server(), client_root=Mine(), transport="socket") as (client, server):
            watch(client, "client", found)
            watch(server, "server", found)
            del server
            root = await client.root_object()
            assert await root.call_remote("add", 1, 2) == 3
            # The caller reads its next answer itself (on a socket, after a
            # first call), and so runs the callback that raises: the caller
            # sees the connection end, and the reader task raises it.
            with pytest.raises(errors.PBConnectionLost):
                await root.call_remote("crash_the_caller", Mine())
    except Fatal:
        pass
    else:
        pytest.fail("the BaseException was not raised")
    del client, root
    assert_freed(found)
