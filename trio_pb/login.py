"""Logging in over PB: the challenge/response exchange of Twisted PB, both ends.

Server: a :class:`~trio_pb.cred.Portal` given as a broker's root serves a
fresh :class:`PortalRoot` on each connection.  ``login(username)`` answers
``(challenge, challenger)``; the client calls ``respond(response, mind)`` on
the challenger, where ``response = md5(md5(password) + challenge)``; the
portal checks it (:class:`ChallengeResponse` is the credentials object) and
the avatar goes back by reference.  ``loginAnonymous(mind)`` skips the
challenge.  The session's logout runs exactly once: when the client has
released every reference to the avatar, or when the connection is lost.
Failed password logins are logged (a bounded number per connection), slow
down and finally close the connection, and count against the portal's
:class:`~trio_pb.cred.LoginLimiter`, as the portal's options say.

Client: ``await login(broker, credentials, mind)`` runs the exchange and
returns a :class:`~trio_pb.references.RemoteReference` to the avatar.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import logging
import secrets
from typing import TYPE_CHECKING, Any, Final

import trio

from ._credentials import (
    Anonymous,
    HashedPasswordCredentials,
    Logout,
    MD5PasswordCredentials,
    UsernamePassword,
)
from .errors import (
    JellyError,
    LoginFailed,
    LoginThrottled,
    ProtocolError,
    UnauthorizedLogin,
    UnhandledCredentials,
)
from .flavors import Referenceable, Viewable, ViewPoint
from .jelly import Jellier, Jellyable
from .references import RemoteReference

if TYPE_CHECKING:
    from ._connection_api import Connection
    from .conduct import PeerConduct
    from .cred import Portal

__all__ = [
    "CHALLENGE_SIZE",
    "ChallengeResponse",
    "PortalRoot",
    "challenge",
    "login",
    "make_challenge",
    "respond",
]

log = logging.getLogger("trio_pb")

#: Length of a login challenge in bytes (Twisted sends an MD5 digest).
CHALLENGE_SIZE: Final = 16

# How much of a username a log line shows; the peer chooses its length.
_USERNAME_SHOWN: Final = 64


def make_challenge() -> bytes:
    """A fresh random challenge; clients treat it as opaque bytes."""
    return secrets.token_bytes(CHALLENGE_SIZE)


def challenge() -> bytes:
    """A fresh random challenge, as :func:`make_challenge` makes (Twisted's ``pb.challenge``)."""
    return make_challenge()


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

    def __init__(self, broker: Connection, logout: Logout) -> None:
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
        protocol = jellier.invoker
        if protocol is None:
            raise JellyError("an avatar can only be sent over a connection")
        sent: Referenceable = self.avatar
        if isinstance(sent, Viewable):
            # A Viewable goes out as its ViewPoint for the perspective in force
            # (None here, as in Twisted): that is the reference the client
            # releases, so the logout must hang on it, not on the Viewable.
            sent = ViewPoint(protocol.serializing_perspective, sent)
        try:
            sexp = jellier.jelly(sent)
        except BaseException:
            self.session.logout()
            raise
        protocol.on_release(sent, self.session.logout)
        return sexp


class PortalRoot(Referenceable):
    """The root a :class:`~trio_pb.cred.Portal` serves on one connection.

    Remote methods (as Twisted's ``_PortalWrapper``): ``login(username)`` and
    ``loginAnonymous(mind)``.  The avatar is sent as is if it is a
    Referenceable (an :class:`~trio_pb.flavors.Avatar` answers with its
    ``perspective_*`` methods), otherwise wrapped so that calls reach its
    ``perspective_*`` methods.  A :class:`~trio_pb.flavors.Viewable` avatar
    is sent as its ViewPoint, whose ``view_*`` methods get None as the
    perspective, as in Twisted; releasing it logs out.  If the realm hands one object to several
    logins on a connection, their logouts run when the client has released
    every reference to it.

    It also keeps the connection's count of failed password logins, which
    delays further attempts and closes the connection as the portal's
    options say.
    """

    def __init__(self, portal: Portal, broker: Connection) -> None:
        self.portal = portal
        self.broker = broker
        #: The peer's IP address, for the portal's limiter (None if it has none).
        self.address = broker.peer_address
        #: Failed password logins on this connection.
        self.failures = 0
        # Attempts under way count as failures for the delay, so that
        # answering many challenges at once gains nothing; the lock makes
        # delayed attempts wait one after another, not side by side.
        self._checking = 0
        self._turn = trio.Lock()

    def remote_login(self, username: Any) -> tuple[bytes, _Challenger]:
        """Start a password login: ``(challenge, challenger)``; answer with ``challenger.respond``."""
        challenge = make_challenge()
        return challenge, _Challenger(self, username, challenge)

    async def remote_loginAnonymous(self, mind: Any) -> Any:
        """Log in without credentials; the portal needs an anonymous checker."""
        return await self._log_in(Anonymous(), mind)

    async def _log_in(self, credentials: Any, mind: Any) -> _AvatarHandoff | None:
        """Run the portal's login; return what sends the avatar to the client."""
        if isinstance(credentials, Anonymous):
            try:
                avatar, logout = await self.portal.login(credentials, mind, address=self.address)
            except LoginFailed as exc:
                # Nothing secret to guess: informative, not a warning.
                self._conduct.warning(
                    "refused login", "login refused (%s): %s", type(exc).__name__, exc, level=logging.INFO
                )
                raise
        else:
            avatar, logout = await self._log_in_counted(credentials, mind)
        session = _Session(self.broker, logout)
        if not session.active:
            # The connection was lost while the realm worked: nobody is left to answer.
            log.debug("connection lost during the login of %r; logged out", credentials)
            return None
        if not isinstance(avatar, Referenceable):
            avatar = _PerspectiveAdapter(avatar)
        return _AvatarHandoff(avatar, session)

    @property
    def _conduct(self) -> PeerConduct:
        return self.broker.conduct

    async def _log_in_counted(self, credentials: Any, mind: Any) -> tuple[Any, Logout]:
        """A password login: it waits its turn (delayed after failures), and a failure counts."""
        async with self._turn:
            delay = self.portal.delay_after(self.failures + self._checking)
            if delay > 0:
                await trio.sleep(delay)
        self._checking += 1
        try:
            return await self.portal.login(credentials, mind, address=self.address)
        except UnhandledCredentials as exc:
            # Not a guess: the client cannot log in this way at all.
            self._conduct.warning(
                "refused login", "login refused (%s): %s", type(exc).__name__, exc, level=logging.INFO
            )
            raise
        except UnauthorizedLogin as exc:
            self.failures += 1
            self._conduct.warning(
                "failed login",
                "login refused (%s) for username %s: %s",
                type(exc).__name__,
                _show_username(getattr(credentials, "username", None)),
                exc,
            )
            limit = self.portal.close_after_failures
            if limit is not None and self.failures >= limit:
                log.warning(
                    "%s: closing the connection after %d failed logins", self.broker.peer, self.failures
                )
                await self.broker.aclose()
            if isinstance(exc, LoginThrottled):
                # On the wire exactly what Twisted sends for a wrong password.
                raise UnauthorizedLogin(*exc.args) from None
            raise
        finally:
            self._checking -= 1


def _show_username(username: object) -> str:
    """The username for a log line: its repr, cut short (the peer chooses it)."""
    if isinstance(username, (bytes, str)):
        shown = repr(username[:_USERNAME_SHOWN])
        return shown + "..." if len(username) > _USERNAME_SHOWN else shown
    return f"<{type(username).__name__}>"


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


async def login(broker: Connection, credentials: Any, mind: Any = None) -> RemoteReference:
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
