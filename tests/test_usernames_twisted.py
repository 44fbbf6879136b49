"""str and bytes usernames against real Twisted: each side sends the username in the type it was given."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from peers import twisted_client_against, twisted_server

from trio_pb import errors
from trio_pb.broker import open_broker
from trio_pb.cred import HashedPasswordCredentials, InMemoryPasswordChecker, Portal, UsernamePassword
from trio_pb.flavors import Avatar
from trio_pb.login import login


async def whoami(port: int, username: bytes | str) -> object:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with open_broker(stream, server=False) as broker:
        avatar = await login(broker, UsernamePassword(username, b"secret"))
        async with avatar:
            return await avatar.call_remote("whoami")


async def test_str_username_logs_in_to_a_str_keyed_twisted_checker() -> None:
    # Twisted's chat listing: checker.addUser("alice", ...).  The name must arrive as a str.
    async with twisted_server("twisted_usernames_peer.py", "server", "str") as port:
        assert await whoami(port, "alice") == "alice"
        # Twisted's checker tells the two spellings apart; a trio_pb client sends what it is given.
        with pytest.raises(errors.UnauthorizedLogin):
            await whoami(port, b"alice")


async def test_bytes_username_logs_in_to_a_bytes_keyed_twisted_checker() -> None:
    async with twisted_server("twisted_usernames_peer.py", "server", "bytes") as port:
        assert await whoami(port, b"alice") == b"alice"
        with pytest.raises(errors.UnauthorizedLogin):
            await whoami(port, "alice")


class User(Avatar):
    def __init__(self, avatar_id: object) -> None:
        self.avatar_id = avatar_id

    def perspective_whoami(self) -> object:
        return self.avatar_id


class Realm:
    def request_avatar(self, avatar_id: object, mind: Any) -> tuple[User, None]:
        return User(avatar_id), None


class RecordingChecker(InMemoryPasswordChecker):
    """Notes the username each login brings, as the checker receives it."""

    def __init__(self, users: Any) -> None:
        super().__init__(users)
        self.received: list[object] = []

    def request_avatar_id(self, credentials: HashedPasswordCredentials) -> bytes:
        self.received.append(credentials.username)
        return super().request_avatar_id(credentials)


@pytest.mark.parametrize("key", ["alice", b"alice"])
async def test_twisted_client_str_and_bytes_usernames_on_a_trio_pb_server(key: str | bytes) -> None:
    checker = RecordingChecker({key: b"secret"})
    lines = await twisted_client_against(Portal(Realm(), [checker]), "twisted_usernames_peer.py", "client")
    # The checker sees the type the Twisted client sent; trio_pb's in-memory checker takes both
    # spellings for the same user, whichever it was given, and its avatar id is bytes.
    assert checker.received == ["alice", b"alice"]
    assert lines == ["'alice' whoami b'alice'", "b'alice' whoami b'alice'", "done"]
