"""Login (twisted.cred over PB) between two trio_pb peers: portal, checkers, realm, logout."""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from trio_pb import errors
from trio_pb.broker import Broker
from trio_pb.cred import (
    ANONYMOUS,
    AllowAnonymousAccess,
    Anonymous,
    Checker,
    FilePasswordChecker,
    FilePasswordDB,
    InMemoryPasswordChecker,
    InMemoryUsernamePasswordDatabaseDontUse,
    IPerspective,
    IUsernameHashedPassword,
    Portal,
    UsernamePassword,
)
from trio_pb.flavors import Avatar, Referenceable, Viewable
from trio_pb.login import CHALLENGE_SIZE, ChallengeResponse, login, respond
from trio_pb.references import RemoteReference
from trio_pb.testing import assert_no_leaks, open_broker_pair

# Every test runs over memory streams and over real sockets (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("each_transport")


class Mind(Referenceable):
    """What the client passes with its login; the server calls it back."""

    def __init__(self) -> None:
        self.greetings: list[object] = []

    def remote_greet(self, text: object) -> str:
        self.greetings.append(text)
        return "thanks"


class Watcher(Viewable):
    def view_who(self, perspective: Any) -> object:
        return perspective.name

    def view_is_avatar(self, perspective: Any, avatar: object) -> bool:
        return perspective is avatar


class User(Avatar):
    def __init__(self, name: object, mind: Any) -> None:
        self.name = name
        self.mind = mind

    def perspective_whoami(self) -> object:
        return self.name

    def perspective_add(self, a: int, b: int) -> int:
        return a + b

    def perspective_watcher(self) -> Watcher:
        return Watcher()

    def perspective_self_again(self) -> User:
        return self

    async def perspective_call_mind(self, text: str) -> object:
        return await self.mind.call_remote("greet", text)


class Realm:
    """Makes a fresh User per login and records logouts; keeps only weak references."""

    def __init__(self) -> None:
        self.logouts: list[object] = []
        self.minds: list[weakref.ref[Any]] = []
        self.avatars: list[weakref.ref[User]] = []

    def make(self, avatar_id: object, mind: Any) -> tuple[User, Callable[[], None]]:
        avatar = User(avatar_id, mind)
        self.avatars.append(weakref.ref(avatar))
        if isinstance(mind, RemoteReference):
            self.minds.append(weakref.ref(mind))

        def logout() -> None:
            # Closes over the mind on purpose: it must still not leak.
            self.logouts.append((avatar_id, mind)[0])

        return avatar, logout

    def request_avatar(self, avatar_id: object, mind: Any) -> tuple[User, Callable[[], None]]:
        return self.make(avatar_id, mind)


class AsyncRealm(Realm):
    """Greets the mind before answering: the login waits for the client's mind."""

    async def request_avatar(self, avatar_id: object, mind: Any) -> tuple[User, Callable[[], None]]:
        if mind is not None:
            assert await mind.call_remote("greet", f"welcome {avatar_id!r}") == "thanks"
        return self.make(avatar_id, mind)


USERS = {b"alice": b"secret", b"bob": b"hunter2"}


def make_portal(realm: Any = None, *, anonymous: bool = False) -> Portal:
    checkers: list[Any] = [InMemoryPasswordChecker(USERS)]
    if anonymous:
        checkers.append(AllowAnonymousAccess())
    return Portal(realm if realm is not None else Realm(), checkers)


async def settle() -> None:
    """Let queued decrefs and answers through, collecting garbage before and after."""
    gc.collect()
    for _ in range(5):
        await trio.testing.wait_all_tasks_blocked()
    gc.collect()


def session_callbacks(broker: Broker) -> list[Any]:
    """Disconnect callbacks the login code registered and did not remove."""
    return [
        cb
        for cb in broker._disconnect_callbacks or ()
        if getattr(cb, "__qualname__", "").startswith("_Session")
    ]


# -- the credentials and the challenge -------------------------------------------


def test_respond_is_md5_of_md5_password_and_challenge() -> None:
    challenge = bytes(range(16))
    expected = hashlib.md5(hashlib.md5(b"secret").digest() + challenge).digest()
    assert respond(challenge, b"secret") == expected
    assert len(expected) == 16


def test_challenge_response_checks_plain_and_md5_passwords() -> None:
    challenge = os.urandom(16)
    creds = ChallengeResponse(b"alice", challenge, respond(challenge, b"secret"))
    assert creds.check_password(b"secret")
    assert creds.checkPassword(b"secret")
    assert not creds.check_password(b"Secret")
    assert creds.check_md5_password(hashlib.md5(b"secret").digest())
    assert creds.checkMD5Password(hashlib.md5(b"secret").digest())
    assert not creds.check_md5_password(hashlib.md5(b"secret").hexdigest().encode())
    assert isinstance(creds, IUsernameHashedPassword)
    # A response that is not bytes is simply wrong.
    assert not ChallengeResponse(b"alice", challenge, "text").check_password(b"secret")
    assert "secret" not in repr(creds)


def test_username_password_credentials() -> None:
    creds = UsernamePassword("alice", "s\xe9cret")
    assert (creds.username, creds.password) == ("alice", "s\xe9cret".encode())
    assert creds.check_password("s\xe9cret".encode())
    assert not creds.check_password(b"other")
    assert "cret" not in repr(creds)


async def test_portal_login_without_pb() -> None:
    realm = Realm()
    portal = make_portal(realm, anonymous=True)
    avatar, logout = await portal.login(UsernamePassword(b"bob", b"hunter2"), None)
    assert isinstance(avatar, User)
    assert avatar.name == b"bob"
    logout()
    assert realm.logouts == [b"bob"]
    avatar, _ = await portal.login(Anonymous(), "mind")
    assert (avatar.name, avatar.mind) == (ANONYMOUS, "mind")
    with pytest.raises(errors.UnauthorizedLogin):
        await portal.login(UsernamePassword(b"bob", b"wrong"), None)
    with pytest.raises(errors.UnauthorizedLogin):
        await portal.login(UsernamePassword(b"carol", b"hunter2"), None)
    with pytest.raises(errors.UnhandledCredentials):
        await portal.login(object(), None)
    assert set(portal.list_credential_interfaces()) == {IUsernameHashedPassword, Anonymous}


async def test_portal_accepts_twisted_style_checkers_and_realms() -> None:
    class TwistedChecker:
        credentialInterfaces = (UsernamePassword,)

        def requestAvatarId(self, credentials: UsernamePassword) -> bytes:
            if credentials.password != b"open sesame":
                raise errors.UnauthorizedLogin()
            return credentials.username.upper()

    class SubclassedChecker(Checker):
        credentialInterfaces = (Anonymous,)

        async def requestAvatarId(self, credentials: Anonymous) -> str:
            await trio.sleep(0)
            return "guest"

    class TwistedRealm:
        def requestAvatar(self, avatar_id: Any, mind: Any, *interfaces: Any) -> Any:
            assert IPerspective in interfaces
            return IPerspective, ("avatar", avatar_id), None

    portal = Portal(TwistedRealm())
    portal.registerChecker(TwistedChecker())
    portal.register_checker(SubclassedChecker())
    avatar, logout = await portal.login(UsernamePassword(b"ali", b"open sesame"), None)
    assert avatar == ("avatar", b"ALI")
    logout()  # None from the realm becomes a callable that does nothing
    assert (await portal.login(Anonymous(), None))[0] == ("avatar", "guest")
    with pytest.raises(errors.UnauthorizedLogin):
        await portal.login(UsernamePassword(b"ali", b"wrong"), None)
    with pytest.raises(TypeError, match="lists no credentials"):
        portal.register_checker(object())


def test_in_memory_checker_spellings() -> None:
    checker = InMemoryUsernamePasswordDatabaseDontUse({b"a": b"1"}, b="2")
    checker.addUser("c", "3")
    assert checker.users == {b"a": b"1", b"b": b"2", b"c": b"3"}
    assert checker.requestAvatarId(UsernamePassword(b"b", b"2")) == b"b"
    assert checker.credentialInterfaces == checker.credential_interfaces


# -- login over PB -----------------------------------------------------------------


async def test_login_and_perspective_calls() -> None:
    realm = Realm()
    async with open_broker_pair(make_portal(realm)) as (client, server):
        avatar = await login(client, UsernamePassword(b"alice", b"secret"))
        assert isinstance(avatar, RemoteReference)
        assert await avatar.call_remote("whoami") == b"alice"
        assert await avatar.call_remote("add", 2, b=40) == 42
        with pytest.raises(errors.RemoteError) as info:
            await avatar.call_remote("missing")
        assert info.value.remote_type == b"builtins.AttributeError"
        # The realm got the checker's avatar id and no mind.
        assert [ref() is not None for ref in realm.avatars] == [True]
        assert realm.minds == []
        assert realm.logouts == []
        await avatar.release()
        await settle()
        assert realm.logouts == [b"alice"]
        assert not server._protocol._release_callbacks
        assert session_callbacks(server) == []
        await assert_no_leaks(client, server)


async def test_login_exchange_follows_twisted() -> None:
    realm = Realm()
    async with open_broker_pair(make_portal(realm)) as (client, server):
        root = await client.root_object()
        challenge, challenger = await root.call_remote("login", b"alice")
        assert isinstance(challenge, bytes)
        assert len(challenge) == CHALLENGE_SIZE
        assert isinstance(challenger, RemoteReference)
        # Challenges are random.
        other_challenge, other = await root.call_remote("login", b"alice")
        assert other_challenge != challenge
        assert other != challenger
        await other.release()
        avatar = await challenger.call_remote("respond", respond(challenge, b"secret"), None)
        assert await avatar.call_remote("whoami") == b"alice"
        # A challenge is answered once only, even with the right response.
        with pytest.raises(errors.UnauthorizedLogin):
            await challenger.call_remote("respond", respond(challenge, b"secret"), None)
        await challenger.release()
        await avatar.release()
        await settle()
        assert realm.logouts == [b"alice"]
        await assert_no_leaks(client, server)


async def test_logout_waits_for_every_reference_to_the_avatar() -> None:
    realm = Realm()
    async with open_broker_pair(make_portal(realm)) as (client, server):
        avatar = await login(client, UsernamePassword(b"alice", b"secret"))
        again = await avatar.call_remote("self_again")
        assert again == avatar
        await avatar.release()
        await settle()
        assert realm.logouts == []
        assert await again.call_remote("whoami") == b"alice"
        del again  # released by the garbage collector
        await settle()
        assert realm.logouts == [b"alice"]
        assert session_callbacks(server) == []
        await assert_no_leaks(client, server)
    # Leaving the connection does not log out a second time.
    assert realm.logouts == [b"alice"]


async def test_logout_on_disconnect_runs_once() -> None:
    realm = Realm()
    async with open_broker_pair(make_portal(realm)) as (client, server):
        avatar = await login(client, UsernamePassword(b"alice", b"secret"))
        bob = await login(client, UsernamePassword(b"bob", b"hunter2"))
        assert await bob.call_remote("whoami") == b"bob"
        await bob.release()
        await settle()
        assert realm.logouts == [b"bob"]
        await trio.aclose_forcefully(client._stream)
        with trio.fail_after(5):
            await server.wait_closed()
        assert realm.logouts == [b"bob", b"alice"]
        del avatar
        await settle()
        assert session_callbacks(server) == []
    assert realm.logouts == [b"bob", b"alice"]


async def test_leaving_the_connection_logs_out() -> None:
    realm = Realm()
    async with open_broker_pair(make_portal(realm)) as (client, _server):
        avatar = await login(client, UsernamePassword(b"alice", b"secret"))
        assert await avatar.call_remote("whoami") == b"alice"
        assert realm.logouts == []
    assert realm.logouts == [b"alice"]


@pytest.mark.parametrize(
    ("username", "password"),
    [(b"alice", b"wrong"), (b"carol", b"secret"), (b"alice", b""), ("alice", b"wrong")],
)
async def test_bad_username_or_password(username: bytes, password: bytes, caplog: Any) -> None:
    realm = Realm()
    async with open_broker_pair(make_portal(realm)) as (client, server):
        with caplog.at_level(logging.INFO, logger="trio_pb"), pytest.raises(errors.UnauthorizedLogin):
            await login(client, UsernamePassword(username, password))
        assert "login refused (UnauthorizedLogin)" in caplog.text
        assert realm.avatars == []
        # The connection is fine, and the right password still works.
        avatar = await login(client, UsernamePassword(b"alice", b"secret"))
        assert await avatar.call_remote("whoami") == b"alice"
        await avatar.release()
        await assert_no_leaks(client, server)
    assert realm.logouts == [b"alice"]


async def test_str_username_is_taken_as_utf8() -> None:
    async with open_broker_pair(make_portal()) as (client, _server):
        # The client sends bytes; a str one from another client is encoded by the checker.
        root = await client.root_object()
        challenge, challenger = await root.call_remote("login", "alice")
        avatar = await challenger.call_remote("respond", respond(challenge, b"secret"), None)
        assert await avatar.call_remote("whoami") == b"alice"


async def test_anonymous_login_allowed() -> None:
    realm = Realm()
    async with open_broker_pair(make_portal(realm, anonymous=True)) as (client, server):
        avatar = await login(client, Anonymous())
        assert await avatar.call_remote("whoami") == ANONYMOUS
        await avatar.release()
        await settle()
        assert realm.logouts == [ANONYMOUS]
        await assert_no_leaks(client, server)


async def test_anonymous_login_refused_without_a_checker() -> None:
    realm = Realm()
    async with open_broker_pair(make_portal(realm)) as (client, server):
        with pytest.raises(errors.UnhandledCredentials):
            await login(client, Anonymous())
        # Password logins still work, and a password login to an anonymous-only portal is unhandled.
        avatar = await login(client, UsernamePassword(b"bob", b"hunter2"))
        await avatar.release()
        await assert_no_leaks(client, server)
    async with open_broker_pair(Portal(realm, [AllowAnonymousAccess()])) as (client, _server):
        with pytest.raises(errors.UnhandledCredentials):
            await login(client, UsernamePassword(b"bob", b"hunter2"))
    assert realm.avatars and len(realm.avatars) == 1


async def test_unknown_credentials_kind_is_refused_by_the_client() -> None:
    async with open_broker_pair(make_portal()) as (client, _server):
        with pytest.raises(errors.UnhandledCredentials):
            await login(client, object())


async def test_concurrent_logins_get_their_own_challengers_and_avatars() -> None:
    both_asked = trio.Event()
    asked: list[object] = []

    class SlowRealm(Realm):
        async def request_avatar(self, avatar_id: object, mind: Any) -> tuple[User, Callable[[], None]]:
            asked.append(avatar_id)
            if len(asked) == 2:
                both_asked.set()
            # Neither login finishes before both are in the realm at once.
            await both_asked.wait()
            return self.make(avatar_id, mind)

    realm = SlowRealm()
    avatars: dict[bytes, RemoteReference] = {}
    async with open_broker_pair(make_portal(realm)) as (client, server):

        async def log_in(name: bytes) -> None:
            avatars[name] = await login(client, UsernamePassword(name, USERS[name]))

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(log_in, b"alice")
                nursery.start_soon(log_in, b"bob")
        assert sorted(asked) == [b"alice", b"bob"]  # type: ignore[type-var]
        assert avatars[b"alice"] != avatars[b"bob"]
        assert await avatars[b"alice"].call_remote("whoami") == b"alice"
        assert await avatars[b"bob"].call_remote("whoami") == b"bob"
        await avatars.pop(b"bob").release()
        await settle()
        assert realm.logouts == [b"bob"]
        await avatars.pop(b"alice").release()
        await settle()
        assert realm.logouts == [b"bob", b"alice"]
        await assert_no_leaks(client, server)


async def test_same_user_twice_gets_two_avatars_and_two_logouts() -> None:
    realm = Realm()
    async with open_broker_pair(make_portal(realm)) as (client, server):
        first = await login(client, UsernamePassword(b"alice", b"secret"))
        second = await login(client, UsernamePassword(b"alice", b"secret"))
        assert first != second
        await first.release()
        await settle()
        assert realm.logouts == [b"alice"]
        await second.release()
        await settle()
        assert realm.logouts == [b"alice", b"alice"]
        await assert_no_leaks(client, server)


async def test_server_calls_the_mind_before_and_after_the_login() -> None:
    realm = AsyncRealm()
    mind = Mind()
    async with open_broker_pair(make_portal(realm)) as (client, server):
        avatar = await login(client, UsernamePassword(b"alice", b"secret"), mind)
        # The realm called the mind before the login answer arrived.
        assert mind.greetings == ["welcome b'alice'"]
        assert await avatar.call_remote("call_mind", "later") == "thanks"
        assert mind.greetings == ["welcome b'alice'", "later"]
        await avatar.release()
        await settle()
        assert realm.logouts == [b"alice"]
        # The server let go of the mind along with the avatar.
        assert [ref() for ref in realm.minds] == [None]
        await assert_no_leaks(client, server)


async def test_anonymous_login_with_a_mind() -> None:
    realm = AsyncRealm()
    mind = Mind()
    async with open_broker_pair(make_portal(realm, anonymous=True)) as (client, _server):
        avatar = await login(client, Anonymous(), mind=mind)
        assert mind.greetings == ["welcome ()"]
        assert await avatar.call_remote("call_mind", "hi") == "thanks"


async def test_viewable_from_a_perspective_method_sees_the_avatar() -> None:
    realm = Realm()
    async with open_broker_pair(make_portal(realm)) as (client, server):
        alice = await login(client, UsernamePassword(b"alice", b"secret"))
        bob = await login(client, UsernamePassword(b"bob", b"hunter2"))
        alice_watcher = await alice.call_remote("watcher")
        bob_watcher = await bob.call_remote("watcher")
        assert await alice_watcher.call_remote("who") == b"alice"
        assert await bob_watcher.call_remote("who") == b"bob"
        # The perspective is the avatar object itself.
        assert await alice_watcher.call_remote("is_avatar", alice) is True
        assert await alice_watcher.call_remote("is_avatar", bob) is False
        for ref in (alice_watcher, bob_watcher, alice, bob):
            await ref.release()
        await settle()
        assert sorted(realm.logouts) == [b"alice", b"bob"]  # type: ignore[type-var]
        await assert_no_leaks(client, server)


async def test_no_mind_leaked_after_an_abrupt_disconnect() -> None:
    realm = Realm()
    async with open_broker_pair(make_portal(realm)) as (client, server):
        avatar = await login(client, UsernamePassword(b"alice", b"secret"), Mind())
        assert await avatar.call_remote("whoami") == b"alice"
        assert realm.minds[0]() is not None
        await trio.aclose_forcefully(client._stream)
        with trio.fail_after(5):
            await server.wait_closed()
        await settle()
        assert realm.logouts == [b"alice"]
        # Neither the avatar nor the mind it and the logout hold is kept by the server.
        assert realm.minds[0]() is None
        assert realm.avatars[0]() is None
        assert session_callbacks(server) == []
        assert not server._protocol._release_callbacks


async def test_no_mind_leaked_when_the_connection_drops_during_the_login() -> None:
    realm_entered = trio.Event()

    class StuckRealm(Realm):
        async def request_avatar(self, avatar_id: object, mind: Any) -> tuple[User, Callable[[], None]]:
            self.minds.append(weakref.ref(mind))
            realm_entered.set()
            await trio.sleep_forever()
            raise AssertionError("not reached")

    realm = StuckRealm()
    async with open_broker_pair(make_portal(realm)) as (client, server):
        async with trio.open_nursery() as nursery:

            async def try_login() -> None:
                with pytest.raises(errors.PBConnectionLost):
                    await login(client, UsernamePassword(b"alice", b"secret"), Mind())

            nursery.start_soon(try_login)
            await realm_entered.wait()
            await trio.aclose_forcefully(client._stream)
        with trio.fail_after(5):
            await server.wait_closed()
        await settle()
        assert realm.logouts == []
        assert realm.minds[0]() is None


async def test_realm_finishing_after_the_disconnect_is_logged_out_at_once() -> None:
    holder: list[Broker] = []

    class LateRealm(Realm):
        async def request_avatar(self, avatar_id: object, mind: Any) -> tuple[User, Callable[[], None]]:
            client, server = holder
            # Shielded, the realm finishes its work although the connection is lost
            # (and the broker cancels the login) meanwhile.
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(client._stream)
                await server.wait_closed()
            return self.make(avatar_id, mind)

    realm = LateRealm()
    async with open_broker_pair(make_portal(realm)) as (client, server):
        holder[:] = [client, server]
        with pytest.raises(errors.PBConnectionLost):
            await login(client, UsernamePassword(b"alice", b"secret"))
        await settle()
        assert realm.logouts == [b"alice"]
        assert realm.avatars[0]() is None
        assert session_callbacks(server) == []


async def test_login_whose_answer_is_never_sent_logs_out_on_disconnect() -> None:
    realm = Realm()
    async with open_broker_pair(make_portal(realm)) as (client, server):
        root = await client.root_object()
        challenge, challenger = await root.call_remote("login", b"alice")
        # Asked not to answer, the server never sends the avatar: only the disconnect ends it.
        challenger.call_remote_no_answer("respond", respond(challenge, b"secret"), None)
        await settle()
        assert len(realm.avatars) == 1
        assert realm.logouts == []
        await trio.aclose_forcefully(client._stream)
        with trio.fail_after(5):
            await server.wait_closed()
        assert realm.logouts == [b"alice"]
        await settle()
        assert realm.avatars[0]() is None
        assert session_callbacks(server) == []


async def test_avatar_that_cannot_be_sent_is_logged_out_at_once() -> None:
    realm = Realm()
    # Room for the root and the challenger only: the avatar's reference is refused.
    async with open_broker_pair(make_portal(realm), max_references=1) as (client, server):
        with pytest.raises(errors.Error, match="Maximum PB reference count"):
            await login(client, UsernamePassword(b"alice", b"secret"))
        await settle()
        assert realm.logouts == [b"alice"]
        assert session_callbacks(server) == []
        assert not server._protocol._release_callbacks
        # The connection goes on.
        assert server.connected


def test_session_logs_out_once_whatever_fires_first() -> None:
    from trio_pb.login import _Session

    class FakeBroker:
        connected = True

        def __init__(self) -> None:
            self.callbacks: list[Callable[[], object]] = []

        def notify_on_disconnect(self, callback: Callable[[], object]) -> None:
            self.callbacks.append(callback)

        def dont_notify_on_disconnect(self, callback: Callable[[], object]) -> None:
            if callback in self.callbacks:
                self.callbacks.remove(callback)

    broker = FakeBroker()
    logouts: list[int] = []
    session = _Session(broker, lambda: logouts.append(1))  # type: ignore[arg-type]
    snapshot = list(broker.callbacks)
    session.logout()  # the avatar was released ...
    for callback in snapshot:  # ... and the disconnect callbacks were already being run
        callback()
    session.logout()
    assert logouts == [1]
    assert broker.callbacks == []
    # On a broker that is already gone, the logout runs at once.
    broker.connected = False
    _Session(broker, lambda: logouts.append(2))  # type: ignore[arg-type]
    assert logouts == [1, 2]
    assert broker.callbacks == []


async def test_avatar_that_is_not_referenceable_is_sent_by_reference() -> None:
    class Plain:
        def perspective_hello(self, who: str) -> str:
            return f"hello {who}"

    logouts: list[object] = []

    class PlainRealm:
        def request_avatar(self, avatar_id: object, mind: Any) -> tuple[Plain, Callable[[], None]]:
            return Plain(), lambda: logouts.append(avatar_id)

    async with open_broker_pair(make_portal(PlainRealm())) as (client, server):
        avatar = await login(client, UsernamePassword(b"bob", b"hunter2"))
        assert await avatar.call_remote("hello", "bob") == "hello bob"
        with pytest.raises(errors.RemoteError, match="perspective_nope"):
            await avatar.call_remote("nope")
        await avatar.release()
        await settle()
        assert logouts == [b"bob"]
        await assert_no_leaks(client, server)


async def test_referenceable_avatar_is_sent_as_is() -> None:
    class Echoer(Referenceable):
        def remote_echo(self, value: object) -> object:
            return value

    echoer = Echoer()
    logouts: list[object] = []

    class EchoRealm:
        def request_avatar(self, avatar_id: object, mind: Any) -> tuple[Echoer, Callable[[], None]]:
            return echoer, lambda: logouts.append(avatar_id)

    portal = Portal(EchoRealm(), [AllowAnonymousAccess()])
    async with open_broker_pair(portal) as (client, server):
        avatar = await login(client, Anonymous())
        assert await avatar.call_remote("echo", [1, b"x"]) == [1, b"x"]
        await avatar.release()
        await settle()
        assert logouts == [ANONYMOUS]
        await assert_no_leaks(client, server)


async def test_failing_logout_is_logged(caplog: Any) -> None:
    class BadLogoutRealm:
        def request_avatar(self, avatar_id: object, mind: Any) -> tuple[User, Callable[[], None]]:
            def logout() -> None:
                raise RuntimeError("logout broke")

            return User(avatar_id, mind), logout

    async with open_broker_pair(make_portal(BadLogoutRealm())) as (client, _server):
        avatar = await login(client, UsernamePassword(b"bob", b"hunter2"))
        await avatar.release()
        await settle()
        assert "logout broke" in caplog.text
        # The connection goes on.
        avatar = await login(client, UsernamePassword(b"bob", b"hunter2"))
        assert await avatar.call_remote("whoami") == b"bob"


async def test_each_connection_gets_its_own_login_root() -> None:
    portal = make_portal()
    async with open_broker_pair(portal) as (_, first), open_broker_pair(portal) as (_, second):
        first_root = first._protocol.local_objects[b"root"].obj
        second_root = second._protocol.local_objects[b"root"].obj
        assert first_root is not second_root
        assert first_root.broker is first
        assert second_root.broker is second


# -- the password file checker ---------------------------------------------------


def write_passwords(path: Path, text: bytes) -> None:
    path.write_bytes(text)


async def test_password_file_checker(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    write_passwords(path, b"# comment line\nalice:secret\r\n\nbob:with spaces  \nbroken line\nalice:second\n")
    checker = FilePasswordChecker(path)
    assert await checker.load() == {b"alice": b"secret", b"bob": b"with spaces  "}
    assert await checker.get_user(b"bob") == (b"bob", b"with spaces  ")
    with pytest.raises(KeyError):
        await checker.getUser(b"carol")
    realm = Realm()
    async with open_broker_pair(Portal(realm, [checker])) as (client, server):
        avatar = await login(client, UsernamePassword(b"alice", b"secret"))
        assert await avatar.call_remote("whoami") == b"alice"
        bob = await login(client, UsernamePassword(b"bob", b"with spaces  "))
        assert await bob.call_remote("whoami") == b"bob"
        for username, password in [(b"alice", b"second"), (b"bob", b"with spaces"), (b"carol", b"x")]:
            with pytest.raises(errors.UnauthorizedLogin):
                await login(client, UsernamePassword(username, password))
        # The file is read again at each login.
        write_passwords(path, b"alice:changed\n")
        with pytest.raises(errors.UnauthorizedLogin):
            await login(client, UsernamePassword(b"alice", b"secret"))
        changed = await login(client, UsernamePassword(b"alice", b"changed"))
        for ref in (avatar, bob, changed):
            await ref.release()
        await assert_no_leaks(client, server)


async def test_password_file_options(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    write_passwords(path, b"1000|Alice|secret\n")
    checker = FilePasswordDB(
        str(path), delimiter=b"|", username_field=1, password_field=2, case_sensitive=False, cache=True
    )
    assert await checker.request_avatar_id(UsernamePassword(b"ALICE", b"secret")) == b"alice"
    with pytest.raises(errors.UnauthorizedLogin):
        await checker.request_avatar_id(UsernamePassword(b"alice", b"Secret"))
    # Cached: the file is not read again while its modification time stays the same.
    stat = path.stat()
    write_passwords(path, b"1000|Alice|other\n")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert await checker.request_avatar_id(UsernamePassword(b"alice", b"secret")) == b"alice"
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert await checker.request_avatar_id(UsernamePassword(b"alice", b"other")) == b"alice"


async def test_unreadable_password_file_refuses_logins(tmp_path: Path, caplog: Any) -> None:
    checker = FilePasswordChecker(tmp_path / "missing")
    async with open_broker_pair(Portal(Realm(), [checker])) as (client, _server):
        with pytest.raises(errors.UnauthorizedLogin):
            await login(client, UsernamePassword(b"alice", b"secret"))
    assert "cannot read the password file" in caplog.text
