"""The credentials a PB client proves who it is with (re-exported by :mod:`trio_pb.cred`).

Kept apart from the portal and checkers so that :mod:`trio_pb.login`, which
the portal serves, needs only these and no import runs in a circle.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any, ClassVar

from .flavors import TwistedHooks

__all__ = [
    "Anonymous",
    "Credentials",
    "HashedPasswordCredentials",
    "IAnonymous",
    "IUsernameHashedPassword",
    "IUsernameMD5Password",
    "IUsernamePassword",
    "Logout",
    "MD5PasswordCredentials",
    "UsernamePassword",
    "as_bytes",
]

#: What a realm returns besides the avatar: called once when the session ends.
Logout = Callable[[], object]


def as_bytes(value: object) -> bytes:
    """A username or password as bytes, a str taken as UTF-8: how checkers compare names."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(f"expected bytes, got {type(value).__name__}")


# -- credentials -----------------------------------------------------------------


class Credentials:
    """Base class of everything a client can prove who it is with."""


class HashedPasswordCredentials(TwistedHooks, Credentials):
    """A username, and a way to test a candidate password without knowing the real one.

    A checker that stores plain passwords verifies these with
    :meth:`check_password`.  Twisted calls this kind ``IUsernameHashedPassword``.
    """

    _twisted_aliases: ClassVar[dict[str, str]] = {"check_password": "checkPassword"}

    #: As the client gave it: str or bytes (over PB, whatever the peer sent).
    username: Any

    def check_password(self, password: bytes) -> bool:
        """Whether *password* (the plain password the server stores) is the right one."""
        raise NotImplementedError

    checkPassword = check_password


class MD5PasswordCredentials(TwistedHooks, Credentials):
    """A username, and a way to test the raw MD5 digest of a password.

    For checkers that store ``md5(password).digest()`` (16 raw bytes, not hex)
    instead of the password.  Twisted calls this kind ``IUsernameMD5Password``.
    """

    _twisted_aliases: ClassVar[dict[str, str]] = {"check_md5_password": "checkMD5Password"}

    #: As the client gave it: str or bytes (over PB, whatever the peer sent).
    username: Any

    def check_md5_password(self, digest: bytes) -> bool:
        """Whether *digest* is the MD5 digest of the right password."""
        raise NotImplementedError

    checkMD5Password = check_md5_password


class UsernamePassword(HashedPasswordCredentials):
    """A username and a plain password: what a client logs in with.

    The username keeps the type it is given, as in Twisted: over PB a str is
    sent as a str and bytes as bytes, and a server's checker may tell them
    apart (Twisted's in-memory checker does; trio_pb's do not).  The
    password is kept as bytes (a str is encoded as UTF-8); over PB it never
    leaves the client: :func:`trio_pb.login.login` answers the server's
    challenge with it.  Used directly with :meth:`Portal.login`, it is checked
    against the stored password.
    """

    username: bytes | str

    def __init__(self, username: bytes | str, password: bytes | str) -> None:
        if not isinstance(username, (bytes, str)):
            raise TypeError(f"a username is str or bytes, not {type(username).__name__}")
        self.username = username
        self.password = as_bytes(password)

    def check_password(self, password: bytes) -> bool:
        return hmac.compare_digest(as_bytes(password), self.password)

    def __repr__(self) -> str:
        return f"UsernamePassword({self.username!r}, <hidden>)"


class Anonymous(Credentials):
    """Credentials of a client that does not say who it is."""

    def __repr__(self) -> str:
        return "Anonymous()"


# Twisted's interface names, for checkers ported from Twisted.
IUsernamePassword = UsernamePassword
IUsernameHashedPassword = HashedPasswordCredentials
IUsernameMD5Password = MD5PasswordCredentials
IAnonymous = Anonymous
