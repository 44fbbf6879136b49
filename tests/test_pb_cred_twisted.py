"""The cred behaviours of Twisted's test_pb.py, three ways: Twisted alone, and against trio_pb both ways.

Each scenario's Twisted side is in twisted_pb_cred_peer.py; here is its
trio_pb port, written as a porting user would, and the transcript all three
pairings must give (peers.three_ways).  The scenarios mirror NewCredTests,
NewCredLeakTests and NSPTests.
"""

from __future__ import annotations

import gc
import logging
import socket
import weakref
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import trio
from peers import three_ways

from trio_pb import (
    AllowAnonymousAccess,
    Anonymous,
    Avatar,
    DeadReferenceError,
    Error,
    InMemoryPasswordChecker,
    PBClientFactory,
    Portal,
    Referenceable,
    RemoteReference,
    UsernamePassword,
    Viewable,
)
from trio_pb.cred import ANONYMOUS

PEER = "twisted_pb_cred_peer.py"
MIND = "BRAINS!"


# -- the server: one realm, the checkers chosen by the scenario -----------------


class View(Viewable):
    def __init__(self, saw: list[str]) -> None:
        self.saw = saw

    def view_check(self, perspective: Any) -> bool:
        self.saw.append(f"the view was called with the perspective of {perspective.avatar_id!r}")
        return isinstance(perspective, Perspective)


class Perspective(Avatar):
    def __init__(self, avatar_id: bytes, realm: Realm) -> None:
        self.avatar_id = avatar_id
        self.realm = realm

    def perspective_getAvatarId(self) -> bytes:
        return self.avatar_id

    def perspective_add(self, a: int, b: int) -> int:
        return a + b

    def perspective_getViewPoint(self) -> View:
        return View(self.realm.saw)

    def perspective_logouts(self) -> list[bytes]:
        return list(self.realm.logouts)

    def perspective_mindStatus(self) -> str:
        # Only once the first session has logged out can its mind be gone.
        if not self.realm.logouts:
            return "not logged out yet"
        gc.collect()
        return "mind collected" if self.realm.minds[0]() is None else "mind still alive"


class Echoer(Avatar):
    def perspective_echo(self, value: object) -> object:
        return value


class CatchAll:
    """An avatar that is no Avatar (nor any Referenceable): every method name answers with an echo."""

    def __getattr__(self, name: str) -> Callable[..., object]:
        if not name.startswith("perspective_"):
            raise AttributeError(name)

        def echo(*args: object, **kwargs: object) -> object:
            return name.removeprefix("perspective_"), args, kwargs

        return echo


def describe(mind: object) -> str:
    return "a reference" if isinstance(mind, RemoteReference) else repr(mind)


class Realm:
    def __init__(
        self, saw: list[str], quiet: bool = False, catch_all: bool = False, leaky: bool = False
    ) -> None:
        self.saw = saw
        self.quiet = quiet
        self.catch_all = catch_all
        self.leaky = leaky
        self.logouts: list[bytes] = []
        self.minds: list[weakref.ref[RemoteReference]] = []

    def request_avatar(self, avatar_id: Any, mind: Any) -> tuple[Any, Callable[[], object]]:
        if avatar_id == ANONYMOUS:
            self.saw.append(f"anonymous login, mind {describe(mind)}")
            return Echoer(), lambda: None
        if not self.quiet:
            self.saw.append(f"login {avatar_id!r} mind {describe(mind)}")
        if self.catch_all:
            return CatchAll(), lambda: None
        avatar = Perspective(avatar_id, self)
        if self.leaky and isinstance(mind, RemoteReference):
            self.minds.append(weakref.ref(mind))

            # A logout that holds the mind and the avatar: once it has run,
            # nothing may keep it (and so the mind) alive.
            def logout() -> object:
                self.logouts.append(avatar_id)
                return mind, avatar

            return avatar, logout
        return avatar, lambda: self.logouts.append(avatar_id)


def server(*checkers: Any, **realm_options: bool) -> Callable[[list[str]], Portal]:
    """A trio_root for three_ways: a portal on a fresh realm with *checkers*."""
    return lambda saw: Portal(Realm(saw, **realm_options), list(checkers))


def passwords(**users: bytes) -> InMemoryPasswordChecker:
    return InMemoryPasswordChecker(**users)


# -- the clients -----------------------------------------------------------------


def error_name(exc: BaseException) -> str:
    return type(exc).__name__


async def wait_for(call: Callable[[], Awaitable[Any]], done: Callable[[Any], bool]) -> Any:
    """Repeat *call* until its answer satisfies *done*; return that answer."""
    while True:
        answer = await call()
        if done(answer):
            return answer
        await trio.sleep(0.01)


async def roots_client(port: int) -> list[str]:
    saw = []
    factory = PBClientFactory()
    for attempt in ("first", "second"):
        async with factory.connect_tcp("127.0.0.1", port):
            root = await factory.getRootObject()
            saw.append(f"{attempt} root: {type(root).__name__}")
            lost = trio.Event()
            root.notify_on_disconnect(lambda ref, lost=lost: lost.set())
            await factory.disconnect()
            await lost.wait()
            saw.append(f"{attempt} connection: disconnect notified")
        try:
            await root.call_remote("login", b"user")
        except DeadReferenceError:
            saw.append(f"{attempt} root after the disconnect: DeadReferenceError")
    return saw


async def logout_client(port: int) -> list[str]:
    saw = []
    async with PBClientFactory().connect_tcp("127.0.0.1", port) as first:
        avatar = await first.login(UsernamePassword(b"user", b"pass"), MIND)
        saw.append(f"logged in: {type(avatar).__name__}")
    async with PBClientFactory().connect_tcp("127.0.0.1", port) as second:
        avatar = await second.login(UsernamePassword(b"user", b"pass"), MIND)
        logouts = await wait_for(lambda: avatar.call_remote("logouts"), bool)
        saw.append(f"logged out once the connection closed: {logouts}")
    return saw


async def decref_client(port: int) -> list[str]:
    saw = []
    async with PBClientFactory().connect_tcp("127.0.0.1", port) as factory:
        avatar = await factory.login(UsernamePassword(b"foo", b"bar"), MIND)
        saw.append(f"logged in: {type(avatar).__name__}")
        await avatar.release()
        again = await factory.login(UsernamePassword(b"foo", b"bar"), MIND)
        saw.append(f"logouts after the release: {await again.call_remote('logouts')}")
    return saw


async def concurrent_client(port: int) -> list[str]:
    ids: dict[int, object] = {}
    async with PBClientFactory().connect_tcp("127.0.0.1", port) as factory:

        async def login_and_ask(index: int, username: bytes, password: bytes) -> None:
            avatar = await factory.login(UsernamePassword(username, password), MIND)
            ids[index] = await avatar.call_remote("getAvatarId")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(login_and_ask, 0, b"foo", b"bar")
            nursery.start_soon(login_and_ask, 1, b"baz", b"quux")
    return [f"avatar ids: {[ids[0], ids[1]]}"]


async def bad_client(port: int) -> list[str]:
    failed: dict[str, str] = {}
    async with PBClientFactory().connect_tcp("127.0.0.1", port) as factory:

        async def attempt(what: str, credentials: Any) -> None:
            try:
                await factory.login(credentials, MIND)
            except Error as exc:
                failed[what] = error_name(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(attempt, "unknown user", UsernamePassword(b"nosuchuser", b"pass"))
            nursery.start_soon(attempt, "wrong password", UsernamePassword(b"user", b"wrongpass"))
            nursery.start_soon(attempt, "anonymous", Anonymous())
    return [f"{what} failed: {failed[what]}" for what in ("unknown user", "wrong password", "anonymous")]


async def anonymous_client(port: int) -> list[str]:
    saw = []
    async with PBClientFactory().connect_tcp("127.0.0.1", port) as factory:
        echoer = await factory.login(Anonymous(), MIND)
        saw.append(f"echo: {await echoer.call_remote('echo', 123)}")
        try:
            await factory.login(UsernamePassword(b"user", b"pass"), MIND)
        except Error as exc:
            saw.append(f"password login failed: {error_name(exc)}")
    return saw


async def multiple_client(port: int) -> list[str]:
    saw = []
    async with PBClientFactory().connect_tcp("127.0.0.1", port) as factory:
        echoer = await factory.login(Anonymous(), MIND)
        saw.append(f"anonymous echo: {await echoer.call_remote('echo', 123)}")
        user = await factory.login(UsernamePassword(b"user", b"pass"), MIND)
        saw.append(f"user add: {await user.call_remote('add', 100, 23)}")
    return saw


async def view_client(port: int) -> list[str]:
    saw = []
    async with PBClientFactory().connect_tcp("127.0.0.1", port) as factory:
        user = await factory.login(UsernamePassword(b"user", b"pass"), MIND)
        view = await user.call_remote("getViewPoint")
        saw.append(f"view: {type(view).__name__}")
        saw.append(f"check: {await view.call_remote('check')}")
    return saw


async def catch_all_client(port: int) -> list[str]:
    async with PBClientFactory().connect_tcp("127.0.0.1", port) as factory:
        avatar = await factory.login(UsernamePassword(b"user", b"pass"), MIND)
        return [f"answer: {await avatar.call_remote('ANYTHING', 'here', bar='baz')}"]


async def leak_client(port: int) -> list[str]:
    async with PBClientFactory().connect_tcp("127.0.0.1", port) as first:
        await first.login(UsernamePassword(b"user", b"pass"), Referenceable())
    async with PBClientFactory().connect_tcp("127.0.0.1", port) as second:
        avatar = await second.login(UsernamePassword(b"user", b"pass"), None)
        status = await wait_for(lambda: avatar.call_remote("mindStatus"), lambda s: s != "not logged out yet")
    return [f"after the first connection closed: {status}"]


async def immediate_close_client(port: int) -> list[str]:
    # A connection that closes before sending a byte, then a real one.
    bare = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    await bare.connect(("127.0.0.1", port))
    bare.close()
    async with PBClientFactory().connect_tcp("127.0.0.1", port) as factory:
        avatar = await factory.login(UsernamePassword(b"user", b"pass"), MIND)
        return [f"avatar id: {await avatar.call_remote('getAvatarId')!r}"]


# -- the tests -------------------------------------------------------------------


async def test_root_object_disconnect_and_reconnect() -> None:
    """NewCredTests.test_getRootObject, test_deadReferenceError and test_clientConnectionLost."""
    seen = await three_ways(PEER, "roots", server(passwords(user=b"pass")), roots_client)
    assert seen.client == [
        f"{attempt} {event}"
        for attempt in ("first", "second")
        for event in (
            "root: RemoteReference",
            "connection: disconnect notified",
            "root after the disconnect: DeadReferenceError",
        )
    ]
    assert seen.server == []


async def test_login_then_logout_when_the_connection_closes() -> None:
    """NewCredTests.test_loginLogout: the mind reaches the realm; closing the connection logs out."""
    seen = await three_ways(PEER, "logout", server(passwords(user=b"pass")), logout_client)
    assert seen.client == ["logged in: RemoteReference", "logged out once the connection closed: [b'user']"]
    assert seen.server == ["login b'user' mind 'BRAINS!'"] * 2


async def test_logout_after_the_avatar_is_released() -> None:
    """NewCredTests.test_logoutAfterDecref: releasing the last reference to the avatar logs out."""
    seen = await three_ways(PEER, "decref", server(passwords(foo=b"bar")), decref_client)
    assert seen.client == ["logged in: RemoteReference", "logouts after the release: [b'foo']"]
    assert seen.server == ["login b'foo' mind 'BRAINS!'"] * 2


async def test_concurrent_logins() -> None:
    """NewCredTests.test_concurrentLogin: two logins at once on one connection get their own avatars."""
    seen = await three_ways(
        PEER, "concurrent", server(passwords(foo=b"bar", baz=b"quux"), quiet=True), concurrent_client
    )
    assert seen.client == ["avatar ids: [b'foo', b'baz']"]
    assert seen.server == []


async def test_bad_logins() -> None:
    """NewCredTests.test_badUsernamePasswordLogin and test_anonymousLoginNotPermitted."""
    seen = await three_ways(PEER, "bad", server(passwords(user=b"pass")), bad_client)
    assert seen.client == [
        "unknown user failed: UnauthorizedLogin",
        "wrong password failed: UnauthorizedLogin",
        "anonymous failed: UnhandledCredentials",
    ]
    assert seen.server == []


async def test_anonymous_login() -> None:
    """NewCredTests.test_anonymousLogin: an anonymous-only portal lets anonymous in, not a password."""
    seen = await three_ways(PEER, "anonymous", server(AllowAnonymousAccess()), anonymous_client)
    assert seen.client == ["echo: 123", "password login failed: UnhandledCredentials"]
    assert seen.server == ["anonymous login, mind 'BRAINS!'"]


async def test_logins_with_multiple_checkers() -> None:
    """NewCredTests.test_anonymousLoginWithMultipleCheckers, test_authenticatedLoginWithMultipleCheckers."""
    seen = await three_ways(
        PEER, "multiple", server(AllowAnonymousAccess(), passwords(user=b"pass")), multiple_client
    )
    assert seen.client == ["anonymous echo: 123", "user add: 123"]
    assert seen.server == ["anonymous login, mind 'BRAINS!'", "login b'user' mind 'BRAINS!'"]


async def test_viewpoint_after_login() -> None:
    """NewCredTests.test_view: a Viewable got from the avatar is called with that avatar."""
    seen = await three_ways(PEER, "view", server(passwords(user=b"pass")), view_client)
    assert seen.client == ["view: RemoteReference", "check: True"]
    assert seen.server == [
        "login b'user' mind 'BRAINS!'",
        "the view was called with the perspective of b'user'",
    ]


async def test_avatar_that_is_not_an_avatar_subclass() -> None:
    """NSPTests.test_NSP: an avatar of no PB class still answers the client's calls."""
    seen = await three_ways(
        PEER, "catch-all", server(passwords(user=b"pass"), catch_all=True), catch_all_client
    )
    assert seen.client == ["answer: ('ANYTHING', ('here',), {'bar': 'baz'})"]
    assert seen.server == ["login b'user' mind 'BRAINS!'"]


async def test_logout_does_not_keep_the_mind() -> None:
    """NewCredLeakTests.test_logoutLeak: a logout holding the mind lets it go once the connection closes."""
    seen = await three_ways(PEER, "leak", server(passwords(user=b"pass"), leaky=True), leak_client)
    assert seen.client == ["after the first connection closed: mind collected"]
    assert seen.server == ["login b'user' mind a reference", "login b'user' mind None"]


class _ErrorsTo(logging.Handler):
    """Notes a line in the current server transcript for every warning or error trio_pb logs."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.saw: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.saw.append("logged a warning or an error")


@contextmanager
def _errors_noted() -> Iterator[_ErrorsTo]:
    handler = _ErrorsTo()
    logger = logging.getLogger("trio_pb")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


async def test_connection_closed_before_a_byte() -> None:
    """NewCredTests.test_immediateClose: a connection closed before a byte came logs no warning or error."""
    with _errors_noted() as handler:

        def root(saw: list[str]) -> Portal:
            handler.saw = saw
            return server(passwords(user=b"pass"))(saw)

        seen = await three_ways(PEER, "immediate-close", root, immediate_close_client)
    assert seen.client == ["avatar id: b'user'"]
    assert seen.server == ["login b'user' mind 'BRAINS!'"]
