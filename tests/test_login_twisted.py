"""Login against real Twisted over loopback TCP: trio_pb client to a Twisted portal and back."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import pytest
import trio
from peers import run_twisted_client, twisted_server

from trio_pb import errors
from trio_pb.broker import open_broker
from trio_pb.cred import AllowAnonymousAccess, Anonymous, InMemoryPasswordChecker, Portal, UsernamePassword
from trio_pb.flavors import Avatar, Referenceable, Viewable
from trio_pb.login import login
from trio_pb.references import RemoteReference
from trio_pb.testing import assert_no_leaks


class Mind(Referenceable):
    def __init__(self) -> None:
        self.greetings: list[object] = []

    def remote_greet(self, text: object) -> str:
        self.greetings.append(text)
        return "thanks"


@pytest.fixture
async def twisted_login_ports() -> AsyncIterator[tuple[int, int]]:
    """A Twisted PBServerFactory(portal) with anonymous access, and one without."""
    async with (
        twisted_server("twisted_peer.py", "login-server") as port,
        twisted_server("twisted_peer.py", "login-server", "closed") as closed_port,
    ):
        yield port, closed_port


async def test_trio_pb_client_logs_in_to_twisted(twisted_login_ports: tuple[int, int]) -> None:
    port, closed_port = twisted_login_ports
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with open_broker(stream, server=False) as broker:
        mind = Mind()
        alice = await login(broker, UsernamePassword(b"alice", b"secret"), mind)
        assert isinstance(alice, RemoteReference)
        # Twisted's realm called our mind before answering the login.
        assert mind.greetings == ["welcome from twisted"]
        assert await alice.call_remote("whoami") == b"alice"
        assert await alice.call_remote("add", 1, 2) == 3
        assert await alice.call_remote("call_mind", "later") == "thanks"
        assert mind.greetings == ["welcome from twisted", "later"]
        watcher = await alice.call_remote("watcher")
        assert await watcher.call_remote("who") == b"alice"
        await watcher.release()

        with pytest.raises(errors.UnauthorizedLogin):
            await login(broker, UsernamePassword(b"alice", b"wrong"))
        with pytest.raises(errors.UnauthorizedLogin):
            await login(broker, UsernamePassword(b"mallory", b"secret"))

        anonymous = await login(broker, Anonymous())
        assert await anonymous.call_remote("whoami") == ()
        assert await anonymous.call_remote("logouts") == []
        # Releasing the avatar logs out on the Twisted side.
        await alice.release()
        assert await anonymous.call_remote("logouts") == [b"alice"]
        await anonymous.release()
        again = await login(broker, UsernamePassword(b"alice", b"secret"), mind)
        assert await again.call_remote("logouts") == [b"alice", ()]
        await again.release()
        del alice, anonymous, again, watcher
        gc.collect()
        await trio.sleep(0.1)
        await assert_no_leaks(broker)

    stream = await trio.open_tcp_stream("127.0.0.1", closed_port)
    async with open_broker(stream, server=False) as broker:
        with pytest.raises(errors.UnhandledCredentials):
            await login(broker, Anonymous())
        alice = await login(broker, UsernamePassword(b"alice", b"secret"))
        assert await alice.call_remote("whoami") == b"alice"


class Watcher(Viewable):
    def view_who(self, perspective: User) -> object:
        return perspective.name


class User(Avatar):
    def __init__(self, name: object, mind: Any, realm: Realm) -> None:
        self.name = name
        self.mind = mind
        self.realm = realm

    def perspective_whoami(self) -> object:
        return self.name

    def perspective_add(self, a: int, b: int) -> int:
        return a + b

    async def perspective_call_mind(self, text: str) -> object:
        return await self.mind.call_remote("greet", text)

    def perspective_watcher(self) -> Watcher:
        return Watcher()

    def perspective_logouts(self) -> list[object]:
        return list(self.realm.logouts)


class Realm:
    def __init__(self) -> None:
        self.logouts: list[object] = []

    async def request_avatar(self, avatar_id: object, mind: Any) -> tuple[User, Callable[[], None]]:
        if mind is not None:
            assert await mind.call_remote("greet", "welcome from trio") == "thanks"
        return User(avatar_id, mind, self), lambda: self.logouts.append(avatar_id)


async def test_twisted_client_logs_in_to_trio_pb() -> None:
    realm = Realm()
    users = InMemoryPasswordChecker({b"alice": b"secret"})
    portal = Portal(realm, [users, AllowAnonymousAccess()])
    closed_portal = Portal(realm, [users])

    async def handle(root: Portal, stream: trio.SocketStream) -> None:
        async with open_broker(stream, server=True, root=root) as broker:
            await broker.wait_closed()

    async with trio.open_nursery() as nursery:
        ports = []
        for root in (portal, closed_portal):
            listeners = await nursery.start(
                partial(trio.serve_tcp, partial(handle, root), 0, host="127.0.0.1")
            )
            ports.append(str(listeners[0].socket.getsockname()[1]))
        lines = await run_twisted_client("twisted_peer.py", "login-client", *ports)
        # The anonymous session ends when our side notices the closed connection.
        with trio.fail_after(10):
            while len(realm.logouts) < 2:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert lines == [
        "greetings ['welcome from trio']",
        "whoami b'alice'",
        "add 3",
        "call_mind thanks ['welcome from trio', 'later']",
        "who b'alice'",
        "bad alice trapped b'twisted.cred.error.UnauthorizedLogin'",
        "bad mallory trapped b'twisted.cred.error.UnauthorizedLogin'",
        "anonymous ()",
        "logouts [b'alice']",
        "closed trapped b'twisted.cred.error.UnhandledCredentials'",
        "done",
    ]
    assert realm.logouts == [b"alice", ()]
