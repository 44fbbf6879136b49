"""PBServerFactory / PBClientFactory and Viewable avatars against real Twisted, both directions."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
from peers import twisted_client_against, twisted_server

import trio_pb
from trio_pb import errors
from trio_pb.cred import InMemoryPasswordChecker, Portal, UsernamePassword


class User(trio_pb.Avatar):
    def __init__(self, name: Any) -> None:
        self.name = name

    def perspective_whoami(self) -> Any:
        return self.name

    def perspective_boom(self) -> None:
        raise ValueError("kaboom")


class Board(trio_pb.Viewable):
    def __init__(self, name: Any) -> None:
        self.name = name

    def view_post(self, perspective: Any, text: str) -> Any:
        return [self.name, text, repr(perspective)]


class Realm:
    def __init__(self) -> None:
        self.logouts: list[Any] = []

    def request_avatar(self, avatar_id: Any, mind: Any) -> tuple[Any, Any]:
        avatar = Board(avatar_id) if avatar_id == b"bob" else User(avatar_id)
        return avatar, partial(self.logouts.append, avatar_id)


async def test_twisted_client_against_server_factory() -> None:
    realm = Realm()
    portal = Portal(realm, [InMemoryPasswordChecker(alice=b"secret", bob=b"pw")])
    factory = trio_pb.PBServerFactory(portal, unsafeTracebacks=True)
    lines = await twisted_client_against(factory, "twisted_factories_peer.py", "client")
    assert lines == [
        "whoami b'alice'",
        # The factory's unsafeTracebacks reached the broker: Twisted got our traceback.
        "traceback True",
        # A Viewable avatar: view_* methods see no perspective, as with a Twisted server.
        "post [b'bob', 'hi', 'None']",
        "done",
    ]
    assert sorted(realm.logouts) == [b"alice", b"bob"]


async def test_client_factory_against_twisted_server() -> None:
    async with (
        twisted_server("twisted_factories_peer.py", "server") as port,
        trio_pb.PBClientFactory().connect_tcp("127.0.0.1", port) as factory,
    ):
        alice = await factory.login(UsernamePassword(b"alice", b"secret"))
        assert await alice.call_remote("whoami") == b"alice"
        with pytest.raises(errors.RemoteError) as info:
            await alice.call_remote("boom")
        assert "perspective_boom" in info.value.remote_traceback
        bob = await factory.login(UsernamePassword(b"bob", b"pw"))
        # Twisted's own answer for a Viewable avatar: the perspective is None.
        assert await bob.call_remote("post", "hi") == [b"bob", "hi", "None"]
        root = await factory.getRootObject()
        assert await root.call_remote("login", b"alice") is not None
        await factory.disconnect()
        assert factory.broker is not None
        assert not factory.broker.connected
