"""Who may log in, and as what: credentials, checkers, realms and the portal.

This is the part of ``twisted.cred`` that PB login uses, without zope
interfaces: a credentials *kind* is a class, and a checker lists the kinds
it can verify in ``credential_interfaces``.  A :class:`Portal` picks the
checker for the credentials it is given, asks it for an *avatar id*, then
asks its realm for the avatar that id stands for.

Nothing here does network I/O; :mod:`trio_pb.login` runs the PB
challenge/response exchange on top of it (pb-protocol.md section 5).  A
:class:`Portal` given as a broker's root serves that exchange.

Twisted's spellings (``UsernamePassword``, ``checkPassword``,
``requestAvatarId``, ``requestAvatar``, ``registerChecker``,
``InMemoryUsernamePasswordDatabaseDontUse``, ``FilePasswordDB`` ...) are
aliases here for people porting code.
"""

from __future__ import annotations

import hmac
import inspect
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Final, Protocol

import trio

from .errors import UnauthorizedLogin, UnhandledCredentials
from .flavors import TwistedHooks

if TYPE_CHECKING:
    from .flavors import Referenceable

__all__ = [
    "ANONYMOUS",
    "AllowAnonymousAccess",
    "Anonymous",
    "Checker",
    "Credentials",
    "CredentialsChecker",
    "FilePasswordChecker",
    "FilePasswordDB",
    "HashedPasswordCredentials",
    "IAnonymous",
    "ICredentialsChecker",
    "IPerspective",
    "IRealm",
    "IUsernameHashedPassword",
    "IUsernameMD5Password",
    "IUsernamePassword",
    "InMemoryPasswordChecker",
    "InMemoryUsernamePasswordDatabase",
    "InMemoryUsernamePasswordDatabaseDontUse",
    "Logout",
    "MD5PasswordCredentials",
    "Portal",
    "Realm",
    "UsernamePassword",
]

log = logging.getLogger("trio_pb")

#: The avatar id of an anonymous login (Twisted's ``checkers.ANONYMOUS``).
ANONYMOUS: Final[tuple[()]] = ()

#: What a realm returns besides the avatar: called once when the session ends.
Logout = Callable[[], object]


def _as_bytes(value: object) -> bytes:
    """Usernames and passwords are bytes on the wire; a str is taken as UTF-8."""
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

    username: bytes

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

    username: bytes

    def check_md5_password(self, digest: bytes) -> bool:
        """Whether *digest* is the MD5 digest of the right password."""
        raise NotImplementedError

    checkMD5Password = check_md5_password


class UsernamePassword(HashedPasswordCredentials):
    """A username and a plain password: what a client logs in with.

    Both are bytes (a str is encoded as UTF-8).  Over PB the password itself
    never leaves the client: :func:`trio_pb.login.login` answers the server's
    challenge with it.  Used directly with :meth:`Portal.login`, it is checked
    against the stored password.
    """

    def __init__(self, username: bytes | str, password: bytes | str) -> None:
        self.username = _as_bytes(username)
        self.password = _as_bytes(password)

    def check_password(self, password: bytes) -> bool:
        return hmac.compare_digest(_as_bytes(password), self.password)

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


# -- checkers ----------------------------------------------------------------------


class CredentialsChecker(Protocol):
    """What a :class:`Portal` needs from a checker.

    ``credential_interfaces`` lists the credentials classes it verifies;
    ``request_avatar_id`` returns (or, if ``async``, resolves to) the avatar id
    of valid credentials and raises :class:`~trio_pb.errors.UnauthorizedLogin`
    otherwise.  Objects using Twisted's spellings (``credentialInterfaces``,
    ``requestAvatarId``) are accepted too.
    """

    credential_interfaces: Sequence[type]

    def request_avatar_id(self, credentials: Any) -> Any: ...


ICredentialsChecker = CredentialsChecker


class Checker(TwistedHooks):
    """A convenient base class for checkers: either spelling of each hook works."""

    _twisted_aliases: ClassVar[dict[str, str]] = {
        "credential_interfaces": "credentialInterfaces",
        "request_avatar_id": "requestAvatarId",
    }

    credential_interfaces: Sequence[type] = ()
    credentialInterfaces: Sequence[type] = ()

    def request_avatar_id(self, credentials: Any) -> Any:
        """The avatar id for *credentials* (may be a coroutine); raise UnauthorizedLogin if wrong."""
        raise NotImplementedError

    requestAvatarId = request_avatar_id


def _check_password(credentials: HashedPasswordCredentials, username: bytes, stored: bytes | None) -> bytes:
    """*username* if *credentials* match the *stored* password, else UnauthorizedLogin."""
    if stored is None:
        # Unknown user: do the same work as for a known one, and fail the same way.
        credentials.check_password(b"\0" * 16)
        raise UnauthorizedLogin("bad username or password")
    if credentials.check_password(stored):
        return username
    raise UnauthorizedLogin("bad username or password")


def _username_of(credentials: Any) -> bytes:
    try:
        return _as_bytes(credentials.username)
    except (AttributeError, TypeError):
        raise UnauthorizedLogin("bad username or password") from None


class InMemoryPasswordChecker(Checker):
    """Usernames and plain passwords kept in a dict; the avatar id is the username.

    Meant for tests and examples: the passwords sit in memory unhashed.  It
    verifies a PB login (challenge/response) and a :class:`UsernamePassword`.
    """

    credential_interfaces: Sequence[type] = (HashedPasswordCredentials,)

    def __init__(
        self,
        users: Mapping[bytes, bytes | str] | Mapping[str, bytes | str] | None = None,
        /,
        **more: bytes | str,
    ) -> None:
        self.users: dict[bytes, bytes] = {}
        for username, password in (users or {}).items():
            self.add_user(username, password)
        for name, secret in more.items():
            self.add_user(name, secret)

    def add_user(self, username: bytes | str, password: bytes | str) -> None:
        """Add a user, or change the password of an existing one."""
        self.users[_as_bytes(username)] = _as_bytes(password)

    addUser = add_user

    def request_avatar_id(self, credentials: HashedPasswordCredentials) -> bytes:
        username = _username_of(credentials)
        return _check_password(credentials, username, self.users.get(username))


InMemoryUsernamePasswordDatabase = InMemoryPasswordChecker
InMemoryUsernamePasswordDatabaseDontUse = InMemoryPasswordChecker


class FilePasswordChecker(Checker):
    """Users and plain passwords read from a file, one ``user:password`` a line.

    Like Twisted's ``FilePasswordDB`` without a hash function.  Lines are
    split on *delimiter*; the username and password are the fields at
    *username_field* and *password_field*.  Blank lines, lines starting with
    ``#`` and lines with too few fields are skipped; only the line ending is
    stripped, so a password may end in spaces.  With *case_sensitive* false,
    usernames are compared in lower case.  The file is read (in a worker
    thread) at each login, or with *cache* only when its modification time
    changes.  An unreadable file fails the login with UnauthorizedLogin and
    logs the reason.
    """

    credential_interfaces: Sequence[type] = (HashedPasswordCredentials,)

    def __init__(
        self,
        filename: str | os.PathLike[str],
        delimiter: bytes = b":",
        username_field: int = 0,
        password_field: int = 1,
        case_sensitive: bool = True,
        cache: bool = False,
    ) -> None:
        self.filename = os.fspath(filename)
        self.delimiter = delimiter
        self.username_field = username_field
        self.password_field = password_field
        self.case_sensitive = case_sensitive
        self.cache = cache
        self._cached: dict[bytes, bytes] | None = None
        self._cached_mtime: float | None = None

    def _parse(self, data: bytes) -> dict[bytes, bytes]:
        users: dict[bytes, bytes] = {}
        for line in data.splitlines():
            if not line.strip() or line.startswith(b"#"):
                continue
            fields = line.split(self.delimiter)
            if max(self.username_field, self.password_field) >= len(fields):
                continue
            username = fields[self.username_field]
            if not self.case_sensitive:
                username = username.lower()
            # The first line for a user wins.
            users.setdefault(username, fields[self.password_field])
        return users

    async def load(self) -> dict[bytes, bytes]:
        """Every user and password in the file (from the cache if allowed and fresh)."""
        path = trio.Path(self.filename)
        if self.cache:
            mtime = (await path.stat()).st_mtime
            if self._cached is None or mtime != self._cached_mtime:
                self._cached = self._parse(await path.read_bytes())
                self._cached_mtime = mtime
            return self._cached
        return self._parse(await path.read_bytes())

    async def get_user(self, username: bytes | str) -> tuple[bytes, bytes]:
        """``(username, password)`` as in the file; raises KeyError for an unknown user."""
        name = _as_bytes(username)
        if not self.case_sensitive:
            name = name.lower()
        return name, (await self.load())[name]

    getUser = get_user

    async def request_avatar_id(self, credentials: HashedPasswordCredentials) -> bytes:
        username = _username_of(credentials)
        if not self.case_sensitive:
            username = username.lower()
        try:
            users = await self.load()
        except OSError as exc:
            log.error("cannot read the password file %s: %s", self.filename, exc)
            raise UnauthorizedLogin("the password file cannot be read") from None
        return _check_password(credentials, username, users.get(username))


FilePasswordDB = FilePasswordChecker


class AllowAnonymousAccess(Checker):
    """Lets :class:`Anonymous` credentials in, with the avatar id :data:`ANONYMOUS`."""

    credential_interfaces: Sequence[type] = (Anonymous,)

    def request_avatar_id(self, credentials: Anonymous) -> tuple[()]:
        return ANONYMOUS


# -- realms and the portal -------------------------------------------------------------------


class IPerspective:
    """Marker passed to Twisted-style ``requestAvatar(avatar_id, mind, *interfaces)`` realms."""


_AvatarAndLogout = tuple[Any, Logout | None] | tuple[Any, Any, Logout | None]


class Realm(Protocol):
    """Makes the avatar for an avatar id: ``request_avatar(avatar_id, mind) -> (avatar, logout)``.

    *mind* is what the client sent with its login (a
    :class:`~trio_pb.references.RemoteReference` to an object the server may
    call back, or None).  The method may be ``async``.  *avatar* is usually an
    :class:`~trio_pb.flavors.Avatar` (``perspective_*`` methods) or any
    :class:`~trio_pb.flavors.Referenceable`; *logout* is a plain callable
    (or None) that runs once when the session ends.

    A Twisted-style realm with ``requestAvatar(avatar_id, mind, *interfaces)``
    returning ``(interface, avatar, logout)`` works too: it gets
    :class:`IPerspective` as its interface.
    """

    def request_avatar(self, avatar_id: Any, mind: Any) -> _AvatarAndLogout | Awaitable[_AvatarAndLogout]: ...


IRealm = Realm


def _no_logout() -> None:
    pass


async def _resolve(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class Portal:
    """Checks credentials, then gets the avatar from the realm.

    Give a Portal as the root of a server broker
    (``open_broker(stream, server=True, root=portal)``) to let PB clients
    log in: each connection gets its own login root
    (:class:`trio_pb.login.PortalRoot`).
    """

    def __init__(self, realm: Any, checkers: Iterable[Any] = ()) -> None:
        self.realm = realm
        #: Credentials class -> the checker that verifies it.
        self.checkers: dict[type, Any] = {}
        for checker in checkers:
            self.register_checker(checker)

    def register_checker(self, checker: Any, *credential_interfaces: type) -> None:
        """Let *checker* verify the given credentials classes (by default, those it lists)."""
        if not credential_interfaces:
            listed: Any = getattr(checker, "credential_interfaces", None)
            if not listed:
                listed = getattr(checker, "credentialInterfaces", ())
            credential_interfaces = tuple(listed)
        if not credential_interfaces:
            raise TypeError(f"{checker!r} lists no credentials classes it can check")
        for interface in credential_interfaces:
            self.checkers[interface] = checker

    registerChecker = register_checker

    def list_credential_interfaces(self) -> list[type]:
        """The credentials classes some checker of this portal verifies."""
        return list(self.checkers)

    listCredentialsInterfaces = list_credential_interfaces

    def _checker_for(self, credentials: Any) -> Any:
        for cls in type(credentials).__mro__:
            if cls in self.checkers:
                return self.checkers[cls]
        for interface, checker in self.checkers.items():
            if isinstance(credentials, interface):
                return checker
        raise UnhandledCredentials(f"no checker for {type(credentials).__name__} credentials")

    async def login(self, credentials: Any, mind: Any) -> tuple[Any, Logout]:
        """Check *credentials* and return ``(avatar, logout)`` from the realm.

        Raises :class:`~trio_pb.errors.UnhandledCredentials` if no checker
        handles this kind of credentials, and
        :class:`~trio_pb.errors.UnauthorizedLogin` if they are wrong.  The
        caller must call *logout* once when the session ends.
        """
        checker = self._checker_for(credentials)
        request_avatar_id = getattr(checker, "request_avatar_id", None) or checker.requestAvatarId
        avatar_id = await _resolve(request_avatar_id(credentials))
        request_avatar = getattr(self.realm, "request_avatar", None)
        if request_avatar is not None:
            result = await _resolve(request_avatar(avatar_id, mind))
        else:
            result = await _resolve(self.realm.requestAvatar(avatar_id, mind, IPerspective))
        if not isinstance(result, tuple) or len(result) not in (2, 3):
            raise TypeError(f"the realm must return (avatar, logout), not {result!r:.100}")
        avatar, logout = result[-2:]
        return avatar, logout if logout is not None else _no_logout

    def root_object(self, broker: Any) -> Referenceable:
        """A fresh login root for one connection (the broker calls this)."""
        from .login import PortalRoot

        return PortalRoot(self, broker)

    rootObject = root_object
