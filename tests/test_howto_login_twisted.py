"""The login listings of Twisted's PB how-to, three ways: Twisted alone, and against trio_pb both ways.

Each scenario's Twisted side is in twisted_howto_login_peer.py (its
docstring says how the listings were adapted); here is its trio_pb port,
written as a porting user would, and the transcripts all three pairings must
give (peers.three_ways).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AsyncExitStack
from functools import partial
from typing import Any

import pytest
import trio
from peers import three_ways, twisted_server

from trio_pb import (
    AllowAnonymousAccess,
    Anonymous,
    Avatar,
    InMemoryPasswordChecker,
    PBClientFactory,
    Portal,
    Referenceable,
    RemoteError,
    RemoteReference,
    UnauthorizedLogin,
    UsernamePassword,
    Viewable,
    serve_tcp,
)
from trio_pb.cred import ANONYMOUS

PEER = "twisted_howto_login_peer.py"
#: How long, in seconds, ``logouts(count)`` waits at most (as in the Twisted peer).
LOGOUT_WAIT = 10


class Logouts:
    """The names whose logout has run, for calls that wait until a number of them have."""

    def __init__(self, saw: list[str]) -> None:
        self.saw = saw
        self.names: list[str] = []
        self._changed = trio.Event()

    def record(self, name: str) -> None:
        self.names.append(name)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, count: int) -> list[str]:
        # Should a logout never run, answer with what ran (the test then fails) rather than hang.
        with trio.move_on_after(LOGOUT_WAIT):
            while len(self.names) < count:
                await self._changed.wait()
        names = sorted(self.names)
        self.saw.append("logged out: " + ", ".join(names))
        return names


# pb5, pb6, pb7, pbAnon: a perspective whose foo(arg) the server prints.


class MyPerspective(Avatar):
    def __init__(self, name: str, logouts: Logouts) -> None:
        self.name = name
        self.logouts = logouts

    def perspective_foo(self, arg: int) -> None:
        self.logouts.saw.append(f"I am {self.name}. perspective_foo({arg}) called")

    async def perspective_logouts(self, count: int) -> list[str]:
        return await self.logouts.wait_for(count)


class MyRealm:
    def __init__(self, saw: list[str]) -> None:
        self.logouts = Logouts(saw)

    def request_avatar(self, avatar_id: Any, mind: Any) -> tuple[MyPerspective, Callable[[], None]]:
        # The shipped checkers give the username as bytes: decode it where it arrives.
        name = "Anonymous" if avatar_id == ANONYMOUS else avatar_id.decode()
        return MyPerspective(name, self.logouts), lambda: self.logouts.record(name)


def my_portal(saw: list[str], users: dict[str, bytes], anonymous: bool = False) -> Portal:
    checkers: list[Any] = [InMemoryPasswordChecker(users)]
    if anonymous:
        checkers.append(AllowAnonymousAccess())
    return Portal(MyRealm(saw), checkers)


async def refused(factory: PBClientFactory, username: str, password: bytes) -> str:
    """Log in with credentials the server must refuse; the error's name."""
    try:
        await factory.login(UsernamePassword(username, password))
    except UnauthorizedLogin as exc:
        return type(exc).__name__
    return "logged in!"


async def foo(saw: list[str], perspective: RemoteReference, arg: int, label: str = "perspective") -> None:
    saw.append(f"got {label} ref: {type(perspective).__name__}")
    saw.append(f"asking it to foo({arg})")
    saw.append(f"foo answered {await perspective.call_remote('foo', arg)}")


async def logouts_seen(saw: list[str], port: int, count: int, credentials: Any) -> None:
    """On a new connection, wait until *count* logouts ran on the server; note their names."""
    async with PBClientFactory().connect_tcp("127.0.0.1", port) as factory:
        watcher = await factory.login(credentials)
        saw.append(f"logouts: {await watcher.call_remote('logouts', count)}")


def pb5_server(saw: list[str]) -> Portal:
    return my_portal(saw, {"user1": b"pass1"})


async def pb5_client(port: int) -> list[str]:
    saw: list[str] = []
    async with PBClientFactory().connect_tcp("127.0.0.1", port) as factory:
        await foo(saw, await factory.login(UsernamePassword("user1", b"pass1")), 12)
        saw.append(f"wrong password: {await refused(factory, 'user1', b'wrong')}")
        saw.append(f"unknown user: {await refused(factory, 'user9', b'pass1')}")
    await logouts_seen(saw, port, 1, UsernamePassword("user1", b"pass1"))
    return saw


async def test_pb5_login_with_a_username_and_password() -> None:
    """pb5server / pb5client: one user's perspective, refused logins, logout on disconnect."""
    seen = await three_ways(PEER, "pb5", pb5_server, pb5_client)
    assert seen.client == [
        "got perspective ref: RemoteReference",
        "asking it to foo(12)",
        "foo answered None",
        "wrong password: UnauthorizedLogin",
        "unknown user: UnauthorizedLogin",
        "logouts: ['user1']",
    ]
    assert seen.server == ["I am user1. perspective_foo(12) called", "logged out: user1"]


def pb6_server(saw: list[str]) -> Portal:
    return my_portal(saw, {"user1": b"pass1", "user2": b"pass2"})


async def pb6_client(port: int) -> list[str]:
    saw: list[str] = []
    # pb6client1 and pb6client2, connected at the same time.
    async with (
        PBClientFactory().connect_tcp("127.0.0.1", port) as first,
        PBClientFactory().connect_tcp("127.0.0.1", port) as second,
    ):
        one = await first.login(UsernamePassword("user1", b"pass1"))
        two = await second.login(UsernamePassword("user2", b"pass2"))
        await foo(saw, one, 13, "perspective1")
        await foo(saw, two, 14, "perspective2")
        saw.append(f"another user's password: {await refused(second, 'user2', b'pass1')}")
        saw.append(f"unknown user: {await refused(first, 'user3', b'pass3')}")
    await logouts_seen(saw, port, 2, UsernamePassword("user1", b"pass1"))
    return saw


async def test_pb6_two_users_at_once() -> None:
    """pb6server / pb6client1 / pb6client2: two users, each with their own perspective."""
    seen = await three_ways(PEER, "pb6", pb6_server, pb6_client)
    assert seen.client == [
        "got perspective1 ref: RemoteReference",
        "asking it to foo(13)",
        "foo answered None",
        "got perspective2 ref: RemoteReference",
        "asking it to foo(14)",
        "foo answered None",
        "another user's password: UnauthorizedLogin",
        "unknown user: UnauthorizedLogin",
        "logouts: ['user1', 'user2']",
    ]
    assert seen.server == [
        "I am user1. perspective_foo(13) called",
        "I am user2. perspective_foo(14) called",
        "logged out: user1, user2",
    ]


def pb7_server(saw: list[str]) -> Portal:
    return my_portal(saw, {"user1": b"pass1", "user2": b"pass2", "user3": b"pass3"})


async def pb7_client(port: int) -> list[str]:
    saw: list[str] = []
    logins = [("user1", b"pass1", 10), ("user1", b"pass1", 11), ("user2", b"pass2", 12)]
    logins += [("user2", b"pass2", 13), ("user3", b"pass3", 14)]
    async with AsyncExitStack() as connections:
        factories: dict[str, PBClientFactory] = {}
        for username, password, number in logins:
            if username not in factories:
                connecting = PBClientFactory().connect_tcp("127.0.0.1", port)
                factories[username] = await connections.enter_async_context(connecting)
            perspective = await factories[username].login(UsernamePassword(username, password))
            await foo(saw, perspective, number)
        saw.append(f"wrong password: {await refused(factories['user3'], 'user3', b'pass1')}")
        saw.append(f"unknown user: {await refused(factories['user1'], 'user4', b'pass4')}")
    await logouts_seen(saw, port, 5, UsernamePassword("user1", b"pass1"))
    return saw


async def test_pb7_several_perspectives_per_user() -> None:
    """pb7client: five perspectives of three users, two logins of a user on one connection."""
    seen = await three_ways(PEER, "pb7", pb7_server, pb7_client)
    assert seen.client == [
        *[
            line
            for n in range(10, 15)
            for line in (
                "got perspective ref: RemoteReference",
                f"asking it to foo({n})",
                "foo answered None",
            )
        ],
        "wrong password: UnauthorizedLogin",
        "unknown user: UnauthorizedLogin",
        "logouts: ['user1', 'user1', 'user2', 'user2', 'user3']",
    ]
    assert seen.server == [
        "I am user1. perspective_foo(10) called",
        "I am user1. perspective_foo(11) called",
        "I am user2. perspective_foo(12) called",
        "I am user2. perspective_foo(13) called",
        "I am user3. perspective_foo(14) called",
        "logged out: user1, user1, user2, user2, user3",
    ]


def anon_server(saw: list[str]) -> Portal:
    return my_portal(saw, {"user1": b"pass1", "user2": b"pass2"}, anonymous=True)


async def anon_client(port: int) -> list[str]:
    saw: list[str] = []
    async with PBClientFactory().connect_tcp("127.0.0.1", port) as factory:
        await foo(saw, await factory.login(Anonymous()), 13, "perspective1")
        await foo(saw, await factory.login(UsernamePassword("user1", b"pass1")), 13, "perspective1")
        saw.append(f"wrong password: {await refused(factory, 'user1', b'pass2')}")
        saw.append(f"unknown user: {await refused(factory, 'Anonymous', b'')}")
    await logouts_seen(saw, port, 2, Anonymous())
    return saw


async def test_pbanon_anonymous_and_password_logins() -> None:
    """pbAnonServer / pbAnonClient: an anonymous login beside a password login on one portal."""
    seen = await three_ways(PEER, "anon", anon_server, anon_client)
    assert seen.client == [
        "got perspective1 ref: RemoteReference",
        "asking it to foo(13)",
        "foo answered None",
        "got perspective1 ref: RemoteReference",
        "asking it to foo(13)",
        "foo answered None",
        "wrong password: UnauthorizedLogin",
        "unknown user: UnauthorizedLogin",
        "logouts: ['Anonymous', 'user1']",
    ]
    assert seen.server == [
        "I am Anonymous. perspective_foo(13) called",
        "I am user1. perspective_foo(13) called",
        "logged out: Anonymous, user1",
    ]


# chat: groups of users, each user's client a Referenceable the server calls back.


class ChatServer:
    def __init__(self, saw: list[str]) -> None:
        self.saw = saw
        self.groups: dict[str, Group] = {}

    def join_group(self, groupname: str, user: User, allow_mattress: bool) -> Group:
        if groupname not in self.groups:
            self.groups[groupname] = Group(groupname, allow_mattress, self.saw)
        self.groups[groupname].add_user(user)
        self.saw.append(f"{user.name} joined {groupname}")
        return self.groups[groupname]


class ChatRealm:
    def __init__(self, saw: list[str]) -> None:
        self.server = ChatServer(saw)
        self.logouts = Logouts(saw)

    def request_avatar(self, avatar_id: bytes, mind: Any) -> tuple[User, Callable[[], None]]:
        user = User(avatar_id.decode(), self)
        user.attached(mind)

        def detached() -> None:
            user.detached(mind)
            self.logouts.record(user.name)

        return user, detached


class User(Avatar):
    def __init__(self, name: str, realm: ChatRealm) -> None:
        self.name = name
        self.realm = realm
        self.remote: RemoteReference | None = None

    def attached(self, mind: RemoteReference) -> None:
        self.remote = mind

    def detached(self, mind: RemoteReference) -> None:
        self.remote = None

    # The keyword crosses the wire by name, so it keeps the listing's spelling.
    def perspective_joinGroup(self, groupname: str, allowMattress: bool = True) -> Group:  # noqa: N803
        return self.realm.server.join_group(groupname, self, allowMattress)

    async def perspective_logouts(self, count: int) -> list[str]:
        return await self.realm.logouts.wait_for(count)

    def send(self, message: str) -> None:
        if self.remote is not None:
            self.remote.call_remote_no_answer("print", message)


class Group(Viewable):
    def __init__(self, groupname: str, allow_mattress: bool, saw: list[str]) -> None:
        self.name = groupname
        self.allow_mattress = allow_mattress
        self.saw = saw
        self.users: list[User] = []

    def add_user(self, user: User) -> None:
        self.users.append(user)

    def view_send(self, from_user: User, message: str) -> None:
        if not self.allow_mattress and "mattress" in message:
            self.saw.append(f"{self.name} refused a message from {from_user.name}")
            raise ValueError("Don't say that word")
        self.saw.append(f"{self.name} <{from_user.name}> says: {message}")
        for user in self.users:
            user.send(f"<{from_user.name}> says: {message}")


def chat_server(saw: list[str]) -> Portal:
    checker = InMemoryPasswordChecker()
    checker.add_user("alice", b"1234")
    checker.add_user("bob", b"secret")
    checker.add_user("carol", b"fido")
    return Portal(ChatRealm(saw), [checker])


class Client(Referenceable):
    def __init__(self) -> None:
        self.heard: list[str] = []

    def remote_print(self, message: str) -> None:
        self.heard.append(message)


async def chat_client(port: int) -> list[str]:
    saw: list[str] = []
    minds: dict[str, Client] = {}
    users: dict[str, RemoteReference] = {}
    factories: dict[str, PBClientFactory] = {}

    async with AsyncExitStack() as connections:

        async def join(name: str, password: bytes, groupname: str, **options: Any) -> RemoteReference:
            if name not in factories:
                connecting = PBClientFactory().connect_tcp("127.0.0.1", port)
                factories[name] = await connections.enter_async_context(connecting)
                minds[name] = Client()
                users[name] = await factories[name].login(
                    UsernamePassword(name, password), client=minds[name]
                )
            group: RemoteReference = await users[name].call_remote("joinGroup", groupname, **options)
            saw.append(f"{name} joined {groupname}: {type(group).__name__}")
            return group

        async def send(name: str, group: RemoteReference, message: str) -> None:
            # An answer on this connection comes after every print the server sent on it before.
            try:
                await group.call_remote("send", message)
            except RemoteError as exc:
                saw.append(f"{name} was refused: {exc.remote_type.decode().rsplit('.', 1)[-1]} {exc.value}")
            saw.append(f"{name} heard: {minds[name].heard}")

        alice_four = await join("alice", b"1234", "#NeedAFourth")
        bob_four = await join("bob", b"secret", "#NeedAFourth")
        await send("alice", alice_four, "You can call me Al.")
        await send("bob", bob_four, "Hi Al.")
        carol_quiet = await join("carol", b"fido", "#NoMattress", allowMattress=False)
        await send("carol", carol_quiet, "Get off my mattress")
        alice_quiet = await join("alice", b"1234", "#NoMattress")
        await send("alice", alice_quiet, "hello carol")
        saw.append(f"wrong password: {await refused(factories['carol'], 'carol', b'1234')}")
        saw.append(f"unknown user: {await refused(factories['carol'], 'dave', b'fido')}")
        # Those logins were answered on carol's connection, after alice's message to her.
        saw.append(f"carol heard: {minds['carol'].heard}")
        await factories["bob"].disconnect()
        saw.append(f"logouts: {await users['alice'].call_remote('logouts', 1)}")
        await send("alice", alice_four, "Bob?")
    return saw


async def test_chat_groups_and_a_client_the_server_calls() -> None:
    """chatserver / chatclient: groups, a refused word, each client's Referenceable called back."""
    seen = await three_ways(PEER, "chat", chat_server, chat_client)
    al, hi, hello = (
        "'<alice> says: You can call me Al.'",
        "'<bob> says: Hi Al.'",
        "'<alice> says: hello carol'",
    )
    assert seen.client == [
        "alice joined #NeedAFourth: RemoteReference",
        "bob joined #NeedAFourth: RemoteReference",
        f"alice heard: [{al}]",
        f"bob heard: [{al}, {hi}]",
        "carol joined #NoMattress: RemoteReference",
        "carol was refused: ValueError Don't say that word",
        "carol heard: []",
        "alice joined #NoMattress: RemoteReference",
        f"alice heard: [{al}, {hi}, {hello}]",
        "wrong password: UnauthorizedLogin",
        "unknown user: UnauthorizedLogin",
        f"carol heard: [{hello}]",
        "logouts: ['bob']",
        # bob logged out, so the server no longer calls his client.
        f"alice heard: [{al}, {hi}, {hello}, '<alice> says: Bob?']",
    ]
    assert seen.server == [
        "alice joined #NeedAFourth",
        "bob joined #NeedAFourth",
        "#NeedAFourth <alice> says: You can call me Al.",
        "#NeedAFourth <bob> says: Hi Al.",
        "carol joined #NoMattress",
        "#NoMattress refused a message from carol",
        "alice joined #NoMattress",
        "#NoMattress <alice> says: hello carol",
        "logged out: bob",
        "#NeedAFourth <alice> says: Bob?",
    ]


async def refusal_messages(port: int) -> list[str]:
    """The messages of the errors refusing pb5's wrong password and unknown user."""
    messages = []
    async with PBClientFactory().connect_tcp("127.0.0.1", port) as factory:
        for username, password in [("user1", b"wrong"), ("user9", b"pass1")]:
            with pytest.raises(UnauthorizedLogin) as refusal:
                await factory.login(UsernamePassword(username, password))
            messages.append(str(refusal.value))
    return messages


async def test_refused_logins_say_the_same_in_other_words() -> None:
    """pb5server's refusals: one message for both on each side, empty from Twisted, not from trio_pb."""
    async with twisted_server(PEER, "serve", "pb5") as port:
        assert await refusal_messages(port) == ["", ""]
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(serve_tcp, pb5_server([]), 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        assert await refusal_messages(port) == ["bad username or password"] * 2
        nursery.cancel_scope.cancel()
