"""str and bytes usernames between trio_pb peers: sent as given, compared alike by trio_pb's checkers."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from trio_pb import errors
from trio_pb.cred import (
    FilePasswordChecker,
    HashedPasswordCredentials,
    InMemoryPasswordChecker,
    LoginLimiter,
    Portal,
    UsernamePassword,
)
from trio_pb.flavors import Avatar
from trio_pb.jelly import jelly
from trio_pb.login import login
from trio_pb.testing import open_broker_pair


class User(Avatar):
    def __init__(self, avatar_id: object) -> None:
        self.avatar_id = avatar_id

    def perspective_whoami(self) -> object:
        return self.avatar_id


class Realm:
    def request_avatar(self, avatar_id: object, mind: Any) -> tuple[User, None]:
        return User(avatar_id), None


class RecordingChecker(InMemoryPasswordChecker):
    def __init__(self, users: Any) -> None:
        super().__init__(users)
        self.received: list[object] = []

    def request_avatar_id(self, credentials: HashedPasswordCredentials) -> bytes:
        self.received.append(credentials.username)
        return super().request_avatar_id(credentials)


def test_username_keeps_its_type() -> None:
    assert UsernamePassword("alice", "pw").username == "alice"
    assert UsernamePassword(b"alice", b"pw").username == b"alice"
    # The password is what the response is computed from: always bytes.
    assert UsernamePassword("alice", "s\xe9cret").password == "s\xe9cret".encode()
    assert repr(UsernamePassword("alice", "pw")) == "UsernamePassword('alice', <hidden>)"
    with pytest.raises(TypeError, match="str or bytes"):
        UsernamePassword(42, b"pw")  # type: ignore[arg-type]


def test_a_str_username_is_jellied_as_unicode() -> None:
    # What a Twisted client sends for a str: the unicode tag, not a plain string.
    assert jelly(UsernamePassword("al\xefce", b"pw").username) == [b"unicode", "al\xefce".encode()]
    assert jelly(UsernamePassword(b"alice", b"pw").username) == b"alice"


@pytest.mark.parametrize("key", ["alice", b"alice"])
async def test_checkers_receive_the_username_as_the_client_gave_it(key: str | bytes) -> None:
    checker = RecordingChecker({key: b"secret"})
    async with open_broker_pair(Portal(Realm(), [checker])) as (client, _server):
        for username in ("alice", b"alice"):
            avatar = await login(client, UsernamePassword(username, b"secret"))
            async with avatar:
                # Either spelling is the same user; the avatar id is the name as bytes.
                assert await avatar.call_remote("whoami") == b"alice"
        with pytest.raises(errors.UnauthorizedLogin):
            await login(client, UsernamePassword("alice", b"wrong"))
    assert checker.received == ["alice", b"alice", "alice"]


async def test_portal_login_without_pb_takes_both_spellings(tmp_path: Any) -> None:
    path = tmp_path / "passwords"
    path.write_bytes("z\xf6e:secret\n".encode())
    for checker in (InMemoryPasswordChecker({"z\xf6e": "secret"}), FilePasswordChecker(path)):
        portal = Portal(Realm(), [checker])
        for username in ("z\xf6e", "z\xf6e".encode()):
            avatar, _ = await portal.login(UsernamePassword(username, b"secret"), None)
            assert avatar.avatar_id == "z\xf6e".encode()


async def test_the_limiter_counts_str_and_bytes_names_as_one(autojump_clock: trio.testing.MockClock) -> None:
    portal = Portal(
        Realm(),
        [InMemoryPasswordChecker({b"alice": b"secret"})],
        limiter=LoginLimiter(per_username=2, per_address=None),
        slow_after_failures=None,
    )
    async with open_broker_pair(portal) as (client, _server):
        for username in ("alice", b"alice"):
            with pytest.raises(errors.UnauthorizedLogin):
                await login(client, UsernamePassword(username, b"wrong"))
        assert portal.limiter is not None
        assert portal.limiter.throttled("alice")
        assert portal.limiter.throttled(b"alice")
        # Throttled whichever spelling is tried, even with the right password.
        with pytest.raises(errors.UnauthorizedLogin, match="too many failed logins"):
            await login(client, UsernamePassword(b"alice", b"secret"))
        with pytest.raises(errors.UnauthorizedLogin, match="too many failed logins"):
            await login(client, UsernamePassword("alice", b"secret"))
