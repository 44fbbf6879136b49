"""Logging in over PB: the challenge/response exchange of pb-protocol.md section 5, both ends.

Server: a :class:`~trio_pb.cred.Portal` given as a broker's root serves a
fresh :class:`PortalRoot` on each connection.  ``login(username)`` answers
``(challenge, challenger)``; the client calls ``respond(response, mind)`` on
the challenger, where ``response = md5(md5(password) + challenge)``; the
portal checks it (:class:`ChallengeResponse` is the credentials object) and
the avatar goes back by reference.  ``loginAnonymous(mind)`` skips the
challenge.  The session's logout runs exactly once: when the client has
released every reference to the avatar, or when the connection is lost.

Client: ``await login(broker, credentials, mind)`` runs the exchange and
returns a :class:`~trio_pb.references.RemoteReference` to the avatar.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import logging
import secrets
from typing import TYPE_CHECKING, Any, Final, cast

from .cred import (
    Anonymous,
    HashedPasswordCredentials,
    Logout,
    MD5PasswordCredentials,
    Portal,
    UsernamePassword,
)
from .errors import LoginFailed, ProtocolError, UnauthorizedLogin, UnhandledCredentials
from .flavors import Referenceable
from .jelly import Jellier, Jellyable
from .references import RemoteReference

if TYPE_CHECKING:
    from .broker import Broker
    from .protocol import PBProtocol

__all__ = ["CHALLENGE_SIZE", "ChallengeResponse", "PortalRoot", "login", "make_challenge", "respond"]

log = logging.getLogger("trio_pb")

#: Length of a login challenge in bytes (Twisted sends an MD5 digest).
CHALLENGE_SIZE: Final = 16


def make_challenge() -> bytes:
    """A fresh random challenge; clients treat it as opaque bytes."""
    return secrets.token_bytes(CHALLENGE_SIZE)


def respond(challenge: bytes, password: bytes) -> bytes:
    """The client's answer to *challenge*: ``md5(md5(password) + challenge)``, 16 raw bytes."""
    return hashlib.md5(hashlib.md5(password).digest() + challenge).digest()


class ChallengeResponse(HashedPasswordCredentials, MD5PasswordCredentials):
    """The credentials a PB password login gives the server's checkers.

    The password never crossed the wire, only the response to the challenge;
    a checker that knows the password (or its raw MD5 digest) tests it with
    :meth:`check_password` (or :meth:`check_md5_password`).
    """

    def __init__(self, username: Any, challenge: bytes, response: Any) -> None:
        # The username is whatever the client sent; checkers decide what they accept.
        self.username = username
        self.challenge = challenge
        self.response = response

    def check_md5_password(self, digest: bytes) -> bool:
        if not isinstance(self.response, bytes):
            return False
        expected = hashlib.md5(digest + self.challenge).digest()
        return hmac.compare_digest(expected, self.response)

    def check_password(self, password: bytes) -> bool:
        if isinstance(password, str):
            password = password.encode("utf-8")
        return self.check_md5_password(hashlib.md5(password).digest())

    def __repr__(self) -> str:
        return f"ChallengeResponse({self.username!r}, <challenge>, <response>)"


# -- server --------------------------------------------------------------------


class _Session:
    """One successful login: runs the realm's logout exactly once."""

    def __init__(self, broker: Broker, logout: Logout) -> None:
        self._broker = broker
        self._logout: Logout | None = logout
        if broker.connected:
            broker.notify_on_disconnect(self.logout)
        else:
            self.logout()

    @property
    def active(self) -> bool:
        return self._logout is not None

    def logout(self) -> None:
        logout, self._logout = self._logout, None
        if logout is None:
            return
        self._broker.dont_notify_on_disconnect(self.logout)
        try:
            result = logout()
        except Exception:
            log.exception("logout %r failed", logout)
            return
        if inspect.isawaitable(result):
            close = getattr(result, "close", None)
            if close is not None:
                close()
            log.error("logout %r returned an awaitable; it must be a plain function", logout)


class _PerspectiveAdapter(Referenceable):
    """Sends an avatar that is not a Referenceable: calls go to its ``perspective_*`` methods."""

    def __init__(self, avatar: Any) -> None:
        self.avatar = avatar
        self.answer_perspective = avatar

    def resolve_remote_method(self, name: str) -> Any:
        method = getattr(self.avatar, "perspective_" + name, None) if name.isidentifier() else None
        if method is None or not callable(method):
            raise AttributeError(f"No such method: perspective_{name}")
        return method


class _AvatarHandoff(Jellyable):
    """The answer to a login: jellies as the avatar's reference and ties logout to its release.

    Hooking the release when the answer is actually jellied means nothing is
    registered for an answer that never goes out (the broker's disconnect
    callback covers that case).
    """

    def __init__(self, avatar: Referenceable, session: _Session) -> None:
        self.avatar = avatar
        self.session = session

    def jelly_for(self, jellier: Jellier) -> Any:
        try:
            sexp = jellier.jelly(self.avatar)
        except BaseException:
            self.session.logout()
            raise
        protocol = cast("PBProtocol", jellier.invoker)
        protocol.on_release(self.avatar, self.session.logout)
        return sexp


class PortalRoot(Referenceable):
    """The root a :class:`~trio_pb.cred.Portal` serves on one connection.

    Remote methods (pb-protocol.md section 5): ``login(username)`` and
    ``loginAnonymous(mind)``.  The avatar is sent as is if it is a
    Referenceable (an :class:`~trio_pb.flavors.Avatar` answers with its
    ``perspective_*`` methods), otherwise wrapped so that calls reach its
    ``perspective_*`` methods.  If the realm hands one object to several
    logins on a connection, their logouts run when the client has released
    every reference to it.
    """

    def __init__(self, portal: Portal, broker: Broker) -> None:
        self.portal = portal
        self.broker = broker

    def remote_login(self, username: Any) -> tuple[bytes, _Challenger]:
        """Start a password login: ``(challenge, challenger)``; answer with ``challenger.respond``."""
        challenge = make_challenge()
        return challenge, _Challenger(self, username, challenge)

    async def remote_loginAnonymous(self, mind: Any) -> Any:
        """Log in without credentials; the portal needs an anonymous checker."""
        return await self._log_in(Anonymous(), mind)

    async def _log_in(self, credentials: Any, mind: Any) -> _AvatarHandoff | None:
        """Run the portal's login; return what sends the avatar to the client."""
        try:
            avatar, logout = await self.portal.login(credentials, mind)
        except LoginFailed as exc:
            log.info("login refused (%s): %s", type(exc).__name__, exc)
            raise
        session = _Session(self.broker, logout)
        if not session.active:
            # The connection was lost while the realm worked: nobody is left to answer.
            log.debug("connection lost during the login of %r; logged out", credentials)
            return None
        if not isinstance(avatar, Referenceable):
            avatar = _PerspectiveAdapter(avatar)
        return _AvatarHandoff(avatar, session)


class _Challenger(Referenceable):
    """Holds one challenge; ``respond(response, mind)`` finishes that login, once."""

    def __init__(self, root: PortalRoot, username: Any, challenge: bytes) -> None:
        self._root = root
        self._username = username
        self._challenge = challenge
        self._used = False

    async def remote_respond(self, response: Any, mind: Any) -> Any:
        if self._used:
            # A challenge is a nonce: a second answer to it is refused.
            raise UnauthorizedLogin("this challenge was already answered")
        self._used = True
        credentials = ChallengeResponse(self._username, self._challenge, response)
        return await self._root._log_in(credentials, mind)


# -- client ---------------------------------------------------------------------


async def login(broker: Broker, credentials: Any, mind: Any = None) -> RemoteReference:
    """Log in on the peer's portal and return a reference to the avatar.

    *credentials* is a :class:`~trio_pb.cred.UsernamePassword` or
    :class:`~trio_pb.cred.Anonymous`; *mind* is sent to the server's realm
    (usually None or a :class:`~trio_pb.flavors.Referenceable` it can call
    back).  The password itself is never sent.  Raises
    :class:`~trio_pb.errors.UnauthorizedLogin` for a wrong username or
    password, :class:`~trio_pb.errors.UnhandledCredentials` if the server
    (or this client) cannot handle that kind of credentials.  Releasing the
    avatar reference (``await avatar.release()``) logs out.
    """
    root = await broker.root_object()
    if isinstance(credentials, Anonymous):
        avatar = await root.call_remote("loginAnonymous", mind)
    elif isinstance(credentials, UsernamePassword):
        answer = await root.call_remote("login", credentials.username)
        if not (
            isinstance(answer, (tuple, list))
            and len(answer) == 2
            and isinstance(answer[0], bytes)
            and isinstance(answer[1], RemoteReference)
        ):
            raise ProtocolError(f"login answered {answer!r:.100}, not (challenge, challenger)")
        challenge, challenger = answer
        async with challenger:
            avatar = await challenger.call_remote("respond", respond(challenge, credentials.password), mind)
    else:
        raise UnhandledCredentials(f"cannot log in over PB with {type(credentials).__name__} credentials")
    if not isinstance(avatar, RemoteReference):
        raise ProtocolError(f"login answered {avatar!r:.100}, not a reference to an avatar")
    return avatar
