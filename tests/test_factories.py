"""PBServerFactory / PBClientFactory, trio_pb at both ends, and a Viewable avatar."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

import trio_pb
from trio_pb import errors
from trio_pb.cred import AllowAnonymousAccess, Anonymous, InMemoryPasswordChecker, Portal, UsernamePassword
from trio_pb.flavors import Avatar, Viewable
from trio_pb.references import RemoteReference


class Calculator(trio_pb.Root):
    def remote_add(self, a: int, b: int) -> int:
        return a + b

    def remote_boom(self) -> None:
        raise ValueError("kaboom")


class User(Avatar):
    def __init__(self, name: Any) -> None:
        self.name = name

    def perspective_whoami(self) -> Any:
        return self.name


class Realm:
    def __init__(self) -> None:
        self.logouts: list[Any] = []

    def request_avatar(self, avatar_id: Any, mind: Any) -> tuple[Any, Any]:
        return User(avatar_id), partial(self.logouts.append, avatar_id)


async def _serve(nursery: trio.Nursery, root: Any, **options: Any) -> int:
    listeners = await nursery.start(partial(trio_pb.serve_tcp, root, 0, host="127.0.0.1", **options))
    port: int = listeners[0].socket.getsockname()[1]
    return port


@pytest.fixture
async def nursery() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        yield nursery
        nursery.cancel_scope.cancel()


async def test_server_factory_root_and_options(nursery: trio.Nursery) -> None:
    factory = trio_pb.PBServerFactory(Calculator(), unsafeTracebacks=True)
    assert isinstance(factory.root, Calculator)
    assert factory.unsafeTracebacks is True
    port = await _serve(nursery, factory)
    async with trio_pb.PBClientFactory().connect_tcp("127.0.0.1", port) as client:
        root = await client.getRootObject()
        assert await root.call_remote("add", 1, 2) == 3
        with pytest.raises(errors.RemoteError) as info:
            await root.call_remote("boom")
        # unsafeTracebacks reached the server's brokers: the traceback crossed.
        assert "remote_boom" in info.value.remote_traceback


async def test_serve_tcp_options_win_over_the_factory(nursery: trio.Nursery) -> None:
    factory = trio_pb.PBServerFactory(Calculator(), unsafeTracebacks=True)
    port = await _serve(nursery, factory, unsafe_tracebacks=False)
    async with trio_pb.PBClientFactory().connect_tcp("127.0.0.1", port) as client:
        root = await client.get_root_object()
        with pytest.raises(errors.RemoteError) as info:
            await root.call_remote("boom")
        assert "remote_boom" not in info.value.remote_traceback


async def test_server_factory_on_unix_socket(nursery: trio.Nursery, tmp_path: Path) -> None:
    path = tmp_path / "pb.sock"
    await nursery.start(partial(trio_pb.serve_unix, trio_pb.PBServerFactory(Calculator()), path))
    async with trio_pb.PBClientFactory().connect_unix(path) as client:
        root = await client.getRootObject()
        assert await root.callRemote("add", 2, 3) == 5


async def test_client_factory_login_and_disconnect(nursery: trio.Nursery) -> None:
    realm = Realm()
    portal = Portal(realm, [InMemoryPasswordChecker(alice=b"secret"), AllowAnonymousAccess()])
    port = await _serve(nursery, trio_pb.PBServerFactory(portal))
    factory = trio_pb.PBClientFactory()
    assert factory.broker is None
    async with factory.connect_tcp("127.0.0.1", port) as connected:
        assert connected is factory
        broker = factory.broker
        assert broker is not None
        alice = await factory.login(UsernamePassword(b"alice", b"secret"))
        assert await alice.call_remote("whoami") == b"alice"
        anonymous = await factory.login(Anonymous())
        assert await anonymous.call_remote("whoami") == ()
        with pytest.raises(errors.UnauthorizedLogin):
            await factory.login(UsernamePassword(b"alice", b"wrong"))
        await factory.disconnect()
        assert not broker.connected
        with pytest.raises(errors.DeadReferenceError):
            await alice.call_remote("whoami")
    assert factory.broker is None
    with trio.fail_after(10):
        while len(realm.logouts) < 2:
            await trio.sleep(0.01)
    assert sorted(realm.logouts, key=repr) == sorted([b"alice", ()], key=repr)


async def test_client_factory_for_broker(nursery: trio.Nursery) -> None:
    port = await _serve(nursery, trio_pb.PBServerFactory(Calculator()))
    async with trio_pb.open_tcp_broker("127.0.0.1", port) as broker:
        factory = trio_pb.PBClientFactory.for_broker(broker)
        root = await factory.getRootObject()
        assert await root.call_remote("add", 5, 6) == 11


async def test_client_factory_unconnected_raises() -> None:
    factory = trio_pb.PBClientFactory()
    with pytest.raises(RuntimeError, match="not connected"):
        await factory.getRootObject()
    with pytest.raises(RuntimeError, match="not connected"):
        await factory.login(Anonymous())
    with pytest.raises(RuntimeError, match="not connected"):
        await factory.disconnect()


async def test_client_factory_refused_connection() -> None:
    async with trio.open_nursery() as nursery:
        port = await _serve(nursery, Calculator())
        nursery.cancel_scope.cancel()
    with pytest.raises(ConnectionRefusedError):
        async with trio_pb.PBClientFactory().connect_tcp("127.0.0.1", port):
            pass  # pragma: no cover


# -- Viewable avatars -----------------------------------------------------------


class Board(Viewable):
    """A Viewable the realm hands out as the avatar itself."""

    def __init__(self, name: Any) -> None:
        self.name = name
        self.seen: list[Any] = []

    def view_post(self, perspective: Any, text: str) -> Any:
        self.seen.append(perspective)
        return [self.name, text]

    def view_child(self, perspective: Any) -> Any:
        return Board(b"child")


class BoardRealm:
    def __init__(self) -> None:
        self.boards: list[Board] = []
        self.logouts: list[Any] = []

    def request_avatar(self, avatar_id: Any, mind: Any) -> tuple[Any, Any]:
        board = Board(avatar_id)
        self.boards.append(board)
        return board, partial(self.logouts.append, avatar_id)


async def test_viewable_avatar(nursery: trio.Nursery) -> None:
    realm = BoardRealm()
    portal = Portal(realm, [InMemoryPasswordChecker(alice=b"secret")])
    port = await _serve(nursery, trio_pb.PBServerFactory(portal))
    async with trio_pb.PBClientFactory().connect_tcp("127.0.0.1", port) as factory:
        board = await factory.login(UsernamePassword(b"alice", b"secret"))
        assert isinstance(board, RemoteReference)
        assert await board.call_remote("post", "hi") == [b"alice", "hi"]
        # As in Twisted: the avatar is sent in the answer to the challenger's
        # respond, which serializes with no perspective, so view_* get None.
        assert realm.boards[0].seen == [None]
        child = await board.call_remote("child")
        assert await child.call_remote("post", "x") == [b"child", "x"]
        await child.release()
        assert realm.logouts == []
        # Releasing the avatar logs out, as for any other avatar.
        await board.release()
        with trio.fail_after(10):
            while not realm.logouts:
                await trio.sleep(0.01)
        assert realm.logouts == [b"alice"]
