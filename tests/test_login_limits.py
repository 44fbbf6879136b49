"""Password guessing is limited: per connection (log, slow, close) and across connections (LoginLimiter)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

import trio_pb
from trio_pb import errors, failures
from trio_pb.broker import Broker
from trio_pb.connect import open_tcp_broker, serve_tcp
from trio_pb.cred import (
    AllowAnonymousAccess,
    Anonymous,
    HashedPasswordCredentials,
    InMemoryPasswordChecker,
    LoginLimiter,
    Portal,
    UsernamePassword,
)
from trio_pb.flavors import Avatar
from trio_pb.login import login
from trio_pb.testing import open_broker_pair

USERS = {b"alice": b"secret", b"bob": b"hunter2"}


class User(Avatar):
    def __init__(self, name: object) -> None:
        self.name = name

    def perspective_whoami(self) -> object:
        return self.name


class Realm:
    def request_avatar(self, avatar_id: object, mind: Any) -> tuple[User, Callable[[], None]]:
        return User(avatar_id), lambda: None


class CountingChecker(InMemoryPasswordChecker):
    """Counts the credentials it is asked about: a throttled login must not reach it."""

    def __init__(self) -> None:
        super().__init__(USERS)
        self.asked: list[bytes] = []

    def request_avatar_id(self, credentials: HashedPasswordCredentials) -> bytes:
        self.asked.append(credentials.username)
        return super().request_avatar_id(credentials)


def make_portal(checker: Any = None, **options: Any) -> Portal:
    checkers = [checker or InMemoryPasswordChecker(USERS), AllowAnonymousAccess()]
    return Portal(Realm(), checkers, **options)


async def whoami(client: Broker, username: bytes, password: bytes) -> object:
    avatar = await login(client, UsernamePassword(username, password))
    async with avatar:
        return await avatar.call_remote("whoami")


async def fail(client: Broker, username: bytes = b"alice") -> None:
    with pytest.raises(errors.UnauthorizedLogin):
        await login(client, UsernamePassword(username, b"wrong"))


def login_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "trio_pb" and r.levelno == logging.WARNING]


# -- per connection: logging -------------------------------------------------------


@pytest.mark.usefixtures("each_transport")
async def test_failed_login_is_a_warning_naming_the_username_and_the_peer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with open_broker_pair(make_portal()) as (client, server):
        with caplog.at_level(logging.INFO, logger="trio_pb"):
            await fail(client)
            await fail(client, b"x" * 100_000)
        first, second = login_warnings(caplog)
        assert first.getMessage() == (
            f"{server.peer}: login refused (UnauthorizedLogin) for username b'alice': "
            "bad username or password"
        )
        # A username of the peer's choosing is cut short in the log.
        assert f"username b'{'x' * 64}'...: " in second.getMessage()
        assert len(second.getMessage()) < 300
        # The connection is fine, and the right password still works.
        assert await whoami(client, b"alice", b"secret") == b"alice"


async def test_a_flood_of_failures_logs_a_bounded_number_of_lines(caplog: pytest.LogCaptureFixture) -> None:
    portal = make_portal(limiter=None, slow_after_failures=None, close_after_failures=None)
    async with open_broker_pair(portal) as (client, server):
        with caplog.at_level(logging.INFO, logger="trio_pb"):
            for _ in range(50):
                await fail(client)
        messages = [r.getMessage() for r in login_warnings(caplog)]
        assert len(messages) == 11
        assert all("login refused (UnauthorizedLogin)" in m for m in messages[:10])
        assert (
            messages[10]
            == f"{server.peer}: further failed login messages from this peer are counted, not logged"
        )
        assert server._protocol.conduct.count("failed login") == 50
        assert await whoami(client, b"alice", b"secret") == b"alice"


async def test_unhandled_credentials_are_logged_at_info_and_not_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    portal = Portal(Realm(), [InMemoryPasswordChecker(USERS)], close_after_failures=1)
    async with open_broker_pair(portal) as (client, server):
        with caplog.at_level(logging.INFO, logger="trio_pb"):
            for _ in range(3):
                with pytest.raises(errors.UnhandledCredentials):
                    await login(client, Anonymous())
        assert login_warnings(caplog) == []
        assert "login refused (UnhandledCredentials)" in caplog.text
        assert await whoami(client, b"alice", b"secret") == b"alice"


# -- per connection: slowing down and closing ---------------------------------------


async def timed_failure(client: Broker) -> float:
    start = trio.current_time()
    await fail(client)
    return trio.current_time() - start


async def test_attempts_after_a_few_failures_wait_longer_each_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    portal = make_portal(
        limiter=None,
        slow_after_failures=3,
        close_after_failures=None,
        failure_delay=0.25,
        max_failure_delay=8,
    )
    async with open_broker_pair(portal) as (client, _server):
        waits = [await timed_failure(client) for _ in range(10)]
        assert waits == pytest.approx([0, 0, 0, 0.25, 0.5, 1, 2, 4, 8, 8])
        # The right password waits its turn as well, and works.
        start = trio.current_time()
        assert await whoami(client, b"alice", b"secret") == b"alice"
        assert trio.current_time() - start == pytest.approx(8)
    # A new connection starts afresh.
    async with open_broker_pair(portal) as (client, _server):
        assert await timed_failure(client) == 0


def test_delay_after() -> None:
    portal = make_portal(slow_after_failures=2, failure_delay=1, max_failure_delay=5)
    assert [portal.delay_after(n) for n in range(7)] == [0, 0, 1, 2, 4, 5, 5]
    assert portal.delay_after(10**9) == 5
    assert make_portal(slow_after_failures=None).delay_after(10**9) == 0


async def test_the_connection_is_closed_after_the_last_allowed_failure(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # The defaults: slowed after 3 failures, closed at the 10th.
    async with open_broker_pair(make_portal()) as (client, server):
        for _ in range(9):
            await fail(client)
        assert client.connected
        with pytest.raises(errors.PBConnectionLost):
            await login(client, UsernamePassword(b"alice", b"wrong"))
        with trio.fail_after(1):
            await server.wait_closed()
            await client.wait_closed()
        assert not client.connected
        with pytest.raises(errors.DeadReferenceError):
            await login(client, UsernamePassword(b"alice", b"secret"))
    assert f"{server.peer}: closing the connection after 10 failed logins" in caplog.text


async def test_answering_many_challenges_at_once_gains_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    checker = CountingChecker()
    portal = make_portal(checker, limiter=None, slow_after_failures=3, close_after_failures=10)
    async with open_broker_pair(portal) as (client, server):
        root = await client.root_object()
        challenges = [await root.call_remote("login", b"alice") for _ in range(30)]
        outcomes: list[str] = []

        async def respond(challenger: trio_pb.RemoteReference) -> None:
            try:
                await challenger.call_remote("respond", b"\0" * 16, None)
            except errors.UnauthorizedLogin:
                outcomes.append("refused")
            except errors.PBConnectionLost:
                outcomes.append("lost")

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for _challenge, challenger in challenges:
                nursery.start_soon(respond, challenger)
        # The checker saw exactly as many guesses as one connection may make, one after another.
        assert len(checker.asked) == 10
        assert outcomes.count("refused") == 9
        assert outcomes.count("lost") == 21
        assert trio.current_time() - start == pytest.approx(0.25 + 0.5 + 1 + 2 + 4 + 8 + 8)
        assert not server.connected


@pytest.mark.usefixtures("each_transport")
async def test_closing_takes_effect_on_either_transport() -> None:
    async with open_broker_pair(make_portal(slow_after_failures=None, close_after_failures=2)) as (
        client,
        server,
    ):
        await fail(client)
        with pytest.raises(errors.PBConnectionLost):
            await login(client, UsernamePassword(b"alice", b"wrong"))
        with trio.fail_after(5):
            await server.wait_closed()
            await client.wait_closed()


async def test_anonymous_logins_are_not_slowed(autojump_clock: trio.testing.MockClock) -> None:
    async with open_broker_pair(make_portal(close_after_failures=None)) as (client, _server):
        for _ in range(8):
            await fail(client)
        start = trio.current_time()
        guest = await login(client, Anonymous())
        assert await guest.call_remote("whoami") == ()
        assert trio.current_time() == start


# -- across connections: the limiter ------------------------------------------------


async def test_many_connections_share_the_budget_of_a_username(
    autojump_clock: trio.testing.MockClock,
) -> None:
    checker = CountingChecker()
    portal = make_portal(checker, limiter=LoginLimiter(per_username=5, per_address=None, period=60))
    for _ in range(5):
        async with open_broker_pair(portal) as (client, _server):
            await fail(client)
    assert len(checker.asked) == 5
    async with open_broker_pair(portal) as (client, _server):
        # The right password is refused too, without asking the checker, and the
        # client sees the UnauthorizedLogin Twisted would send.
        with pytest.raises(errors.UnauthorizedLogin) as info:
            await login(client, UsernamePassword(b"alice", b"secret"))
        assert type(info.value) is errors.UnauthorizedLogin
        assert str(info.value) == "too many failed logins for this username; try again in 12 s"
        assert len(checker.asked) == 5
        # Other users are not affected.
        assert await whoami(client, b"bob", b"hunter2") == b"bob"
        # One attempt comes back every period / per_username seconds.
        await trio.sleep(12)
        assert await whoami(client, b"alice", b"secret") == b"alice"
        await fail(client)
        with pytest.raises(errors.UnauthorizedLogin, match="too many failed logins"):
            await login(client, UsernamePassword(b"alice", b"secret"))
    assert portal.limiter is not None
    assert portal.limiter.throttled(b"alice")
    assert not portal.limiter.throttled(b"bob")


async def test_successful_logins_use_up_no_budget(autojump_clock: trio.testing.MockClock) -> None:
    portal = make_portal(limiter=LoginLimiter(per_username=2, per_address=2))
    for _ in range(3):
        assert await portal.login(UsernamePassword(b"alice", b"secret"), None, address="10.0.0.1")
    for _ in range(2):
        with pytest.raises(errors.UnauthorizedLogin):
            await portal.login(UsernamePassword(b"alice", b"wrong"), None, address="10.0.0.1")
    with pytest.raises(errors.LoginThrottled) as info:
        await portal.login(UsernamePassword(b"alice", b"secret"), None, address="10.0.0.2")
    assert info.value.retry_after == pytest.approx(30)


async def test_an_address_budget_covers_every_username() -> None:
    limiter = LoginLimiter(per_username=None, per_address=3)
    portal = make_portal(limiter=limiter)
    for name in (b"alice", b"bob", b"carol"):
        with pytest.raises(errors.UnauthorizedLogin):
            await portal.login(UsernamePassword(name, b"wrong"), None, address="192.0.2.7")
    with pytest.raises(errors.LoginThrottled, match="from this address"):
        await portal.login(UsernamePassword(b"bob", b"hunter2"), None, address="192.0.2.7")
    # The same address written as IPv4-mapped IPv6 is the same address.
    with pytest.raises(errors.LoginThrottled):
        await portal.login(UsernamePassword(b"bob", b"hunter2"), None, address="::ffff:192.0.2.7")
    assert await portal.login(UsernamePassword(b"bob", b"hunter2"), None, address="192.0.2.8")
    assert await portal.login(UsernamePassword(b"bob", b"hunter2"), None)
    # Anonymous logins are not limited.
    assert await portal.login(Anonymous(), None, address="192.0.2.7")


async def test_ipv6_addresses_share_the_budget_of_their_64_network() -> None:
    limiter = LoginLimiter(per_username=None, per_address=2)
    limiter.attempt(b"a", "2001:db8:0:1::1")
    limiter.attempt(b"b", "2001:db8:0:1:ffff::2")
    assert limiter.throttled(address="2001:db8:0:1::3")
    assert not limiter.throttled(address="2001:db8:0:2::1")


async def test_the_address_budget_applies_over_tcp() -> None:
    # Real loopback connections: the limiter sees the peer's IP address.
    portal = make_portal(limiter=LoginLimiter(per_username=None, per_address=3))
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(serve_tcp, portal, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        for name in (b"alice", b"bob", b"carol"):
            async with open_tcp_broker("127.0.0.1", port) as client:
                await fail(client, name)
        async with open_tcp_broker("127.0.0.1", port) as client:
            with pytest.raises(errors.UnauthorizedLogin, match="too many failed logins from this address"):
                await login(client, UsernamePassword(b"bob", b"hunter2"))
            guest = await login(client, Anonymous())
            assert await guest.call_remote("whoami") == ()
        nursery.cancel_scope.cancel()


async def test_the_limiter_remembers_a_bounded_number_of_names(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = LoginLimiter(per_username=1, per_address=1, max_entries=100)
    for i in range(1000):
        limiter.attempt(f"user{i}".encode(), f"10.0.{i // 256}.{i % 256}")
    assert len(limiter) == 200
    # The most recent are remembered; the oldest were forgotten.
    assert limiter.throttled(b"user999")
    assert limiter.throttled(address="10.0.3.231")
    assert not limiter.throttled(b"user0")
    assert not limiter.throttled(address="10.0.0.0")
    # A huge username costs no more memory than a short one.
    limiter.attempt(b"x" * 600_000)
    assert limiter.throttled(b"x" * 600_000)
    assert not limiter.throttled(b"x" * 599_999)
    # Budgets that have refilled are forgotten when used successfully, and clear() forgets all.
    await trio.sleep(60)
    limiter.attempt(b"user999")
    limiter.succeeded(b"user999")
    assert len(limiter) == 199
    limiter.clear()
    assert len(limiter) == 0


async def test_str_and_bytes_usernames_share_a_budget() -> None:
    limiter = LoginLimiter(per_username=1)
    limiter.attempt("alice")
    assert limiter.throttled(b"alice")
    # Usernames no checker accepts share one budget per type.
    limiter.attempt([1, 2])
    assert limiter.throttled([3])
    assert not limiter.throttled(None)


async def test_a_throttled_login_is_sent_as_a_wrong_password_is(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[dict[str, Any]] = []
    real_failure_state = failures.failure_state

    def spy(exc: BaseException, **options: Any) -> dict[str, Any]:
        state = real_failure_state(exc, **options)
        sent.append(state)
        return state

    monkeypatch.setattr(failures, "failure_state", spy)
    portal = make_portal(limiter=LoginLimiter(per_username=1))
    async with open_broker_pair(portal) as (client, _server):
        await fail(client)
        await fail(client)
    wrong, throttled = sent
    assert throttled["value"].startswith("too many failed logins")
    # Same class name and parents as a wrong password: a Twisted client traps it as UnauthorizedLogin.
    del wrong["value"], throttled["value"]
    assert throttled == wrong
    assert wrong["type"] == b"twisted.cred.error.UnauthorizedLogin"


def test_options_are_checked() -> None:
    with pytest.raises(ValueError):
        LoginLimiter(per_username=0)
    with pytest.raises(ValueError):
        LoginLimiter(period=0)
    with pytest.raises(ValueError):
        LoginLimiter(max_entries=0)
    with pytest.raises(ValueError):
        make_portal(close_after_failures=0)
    with pytest.raises(ValueError):
        make_portal(slow_after_failures=-1)
    with pytest.raises(ValueError):
        make_portal(failure_delay=2, max_failure_delay=1)


def test_a_portal_has_its_own_generous_limiter_by_default() -> None:
    first, second = make_portal(), make_portal()
    assert isinstance(first.limiter, LoginLimiter)
    assert first.limiter is not second.limiter
    assert (first.limiter.per_username, first.limiter.per_address) == (10, 100)
    assert make_portal(limiter=None).limiter is None
    assert trio_pb.LoginLimiter is LoginLimiter
    assert trio_pb.LoginThrottled is errors.LoginThrottled
