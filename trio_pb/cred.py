"""Who may log in, and as what: credentials, checkers, realms and the portal.

This is the part of ``twisted.cred`` that PB login uses, without zope
interfaces: a credentials *kind* is a class, and a checker lists the kinds
it can verify in ``credential_interfaces``.  A :class:`Portal` picks the
checker for the credentials it is given, asks it for an *avatar id*, then
asks its realm for the avatar that id stands for.

Nothing here does network I/O; :mod:`trio_pb.login` runs the PB
challenge/response exchange on top of it, as ordinary PB calls (docs/protocol.rst).  A
:class:`Portal` given as a broker's root serves that exchange.

Twisted's spellings (``UsernamePassword``, ``checkPassword``,
``requestAvatarId``, ``requestAvatar``, ``registerChecker``,
``InMemoryUsernamePasswordDatabaseDontUse``, ``FilePasswordDB`` ...) are
aliases here for people porting code.
"""

from __future__ import annotations

import hashlib
import inspect
import ipaddress
import logging
import math
import os
from collections import OrderedDict
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, Protocol

import trio

from ._credentials import (
    Anonymous,
    Credentials,
    HashedPasswordCredentials,
    IAnonymous,
    IUsernameHashedPassword,
    IUsernameMD5Password,
    IUsernamePassword,
    Logout,
    MD5PasswordCredentials,
    UsernamePassword,
    as_bytes,
)
from .errors import LoginThrottled, UnauthorizedLogin, UnhandledCredentials
from .flavors import TwistedHooks
from .login import PortalRoot

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
    "LoginLimiter",
    "Logout",
    "MD5PasswordCredentials",
    "Portal",
    "Realm",
    "UsernamePassword",
]

log = logging.getLogger("trio_pb")

#: The avatar id of an anonymous login (Twisted's ``checkers.ANONYMOUS``).
ANONYMOUS: Final[tuple[()]] = ()

#: Failed logins on one connection before each further attempt on it is delayed.
SLOW_AFTER_FAILURES: Final = 3
#: Failed logins on one connection after which it is closed.
CLOSE_AFTER_FAILURES: Final = 10
#: The delay of the first slowed attempt on a connection, in seconds; it doubles per failure.
FAILURE_DELAY: Final = 0.25
#: The longest delay of one attempt, in seconds.
MAX_FAILURE_DELAY: Final = 8.0


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
        return as_bytes(credentials.username)
    except (AttributeError, TypeError):
        raise UnauthorizedLogin("bad username or password") from None


class InMemoryPasswordChecker(Checker):
    """Usernames and plain passwords kept in a dict; the avatar id is the username, as bytes.

    Meant for tests and examples: the passwords sit in memory unhashed.  It
    verifies a PB login (challenge/response) and a :class:`UsernamePassword`.
    Usernames are kept as UTF-8 bytes, so a str and a bytes spelling of a
    name are the same user, whichever was added and whichever the client
    sends (unlike Twisted's checker, which tells them apart).
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
        self.users[as_bytes(username)] = as_bytes(password)

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
        name = as_bytes(username)
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


# -- the login limiter ------------------------------------------------------------------


class _Bucket:
    """What a limiter remembers of one username or address: attempts left, and since when."""

    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


class _Budget:
    """Token buckets of one kind (usernames or addresses), the least recently used forgotten first."""

    def __init__(self, capacity: int, period: float, max_entries: int) -> None:
        self.capacity = capacity
        self.rate = capacity / period
        self.max_entries = max_entries
        self.buckets: OrderedDict[bytes, _Bucket] = OrderedDict()

    def left(self, key: bytes, now: float) -> float:
        """How many attempts *key* has left now (refilled since it was last seen)."""
        bucket = self.buckets.get(key)
        if bucket is None:
            return self.capacity
        return min(self.capacity, bucket.tokens + (now - bucket.stamp) * self.rate)

    def take(self, key: bytes, now: float) -> None:
        tokens = self.left(key, now) - 1
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= self.max_entries:
                self.buckets.popitem(last=False)
            self.buckets[key] = _Bucket(tokens, now)
        else:
            bucket.tokens, bucket.stamp = tokens, now
            self.buckets.move_to_end(key)

    def give_back(self, key: bytes, now: float) -> None:
        bucket = self.buckets.get(key)
        if bucket is None:
            return
        tokens = self.left(key, now) + 1
        if tokens >= self.capacity:
            # A full bucket says nothing a missing one does not.
            del self.buckets[key]
        else:
            bucket.tokens, bucket.stamp = tokens, now

    def wait(self, key: bytes, now: float) -> float:
        """Seconds until *key* has an attempt again (0 if it has one)."""
        return max(0.0, (1 - self.left(key, now)) / self.rate)


def _digest(data: bytes) -> bytes:
    # Usernames come from the peer and may be long: the limiter keeps 16 bytes per name.
    return hashlib.blake2b(data, digest_size=16).digest()


def _username_key(username: object) -> bytes:
    if isinstance(username, (bytes, str)):
        return _digest(b"name:" + as_bytes(username))
    # Not a name any checker accepts: all such "usernames" of one type share a budget.
    return _digest(b"type:" + type(username).__qualname__.encode("utf-8", "replace"))


def _address_key(address: str) -> bytes:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return _digest(address.encode("utf-8", "replace"))
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        else:
            # One IPv6 host usually has a whole /64 to pick addresses from.
            return _digest(str(ipaddress.IPv6Network((ip, 64), strict=False)).encode())
    return _digest(str(ip).encode())


class LoginLimiter:
    """Budgets of login attempts per username and per address, shared by every connection of a portal.

    Each username has a budget of *per_username* attempts, and each address
    one of *per_address*; spent attempts come back steadily, a whole budget
    in *period* seconds (a token bucket), and an attempt that succeeds is
    given back at once, so in effect only failures count.  While a budget is
    empty, :meth:`attempt` raises :class:`~trio_pb.errors.LoginThrottled`
    and the portal refuses the login without asking its checker, even if the
    password is right.  None for a budget turns it off.

    IPv6 addresses share the budget of their /64 network, and IPv4-mapped
    ones that of the IPv4 address.  The limiter remembers at most
    *max_entries* usernames and as many addresses, forgetting the least
    recently seen first.  Time is trio's clock (:func:`trio.current_time`),
    so the methods must be called inside ``trio.run``.
    """

    def __init__(
        self,
        *,
        per_username: int | None = 10,
        per_address: int | None = 100,
        period: float = 60.0,
        max_entries: int = 10_000,
    ) -> None:
        for name, value in (("per_username", per_username), ("per_address", per_address)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, or None for no limit, not {value!r}")
        if not period > 0:
            raise ValueError(f"period must be a positive number of seconds, not {period!r}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, not {max_entries!r}")
        self.per_username = per_username
        self.per_address = per_address
        self.period = period
        self.max_entries = max_entries
        self._usernames = _Budget(per_username, period, max_entries) if per_username else None
        self._addresses = _Budget(per_address, period, max_entries) if per_address else None

    def _keys(self, username: object, address: str | None) -> list[tuple[_Budget, bytes, str]]:
        keys = []
        if self._usernames is not None and username is not None:
            keys.append((self._usernames, _username_key(username), "for this username"))
        if self._addresses is not None and address is not None:
            keys.append((self._addresses, _address_key(address), "from this address"))
        return keys

    def attempt(self, username: object, address: str | None = None) -> None:
        """Spend one attempt of *username* and of *address* (either may be None), or raise.

        Raises :class:`~trio_pb.errors.LoginThrottled`, spending nothing, if
        either budget is empty.  Call :meth:`succeeded` if the login works.
        """
        now = trio.current_time()
        keys = self._keys(username, address)
        for budget, key, whose in keys:
            wait = budget.wait(key, now)
            if wait > 0:
                raise LoginThrottled(
                    f"too many failed logins {whose}; try again in {math.ceil(round(wait, 3))} s",
                    retry_after=wait,
                )
        for budget, key, _ in keys:
            budget.take(key, now)

    def succeeded(self, username: object, address: str | None = None) -> None:
        """Give back the attempt :meth:`attempt` spent: the login worked."""
        now = trio.current_time()
        for budget, key, _ in self._keys(username, address):
            budget.give_back(key, now)

    def throttled(self, username: object = None, address: str | None = None) -> bool:
        """Whether an attempt for *username* or from *address* would be refused now."""
        now = trio.current_time()
        return any(budget.wait(key, now) > 0 for budget, key, _ in self._keys(username, address))

    def clear(self) -> None:
        """Forget every username and address (to let everyone in again at once)."""
        for budget in (self._usernames, self._addresses):
            if budget is not None:
                budget.buckets.clear()

    def __len__(self) -> int:
        """How many usernames and addresses the limiter remembers."""
        return sum(len(budget.buckets) for budget in (self._usernames, self._addresses) if budget is not None)

    def __repr__(self) -> str:
        return (
            f"LoginLimiter(per_username={self.per_username!r}, per_address={self.per_address!r}, "
            f"period={self.period!r}, max_entries={self.max_entries!r})"
        )


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

    Guessing passwords is limited in two ways.  On one connection, after
    *slow_after_failures* failed logins each further attempt waits
    *failure_delay* seconds, twice as long per failure up to
    *max_failure_delay*, and after *close_after_failures* the connection is
    closed (None turns either off).  Across connections, *limiter* (by
    default a fresh :class:`LoginLimiter` with its default budgets; None for
    none) refuses attempts for a username or from an address that failed too
    often.  Anonymous logins are not limited.
    """

    def __init__(
        self,
        realm: Any,
        checkers: Iterable[Any] = (),
        *,
        limiter: LoginLimiter | Literal["default"] | None = "default",
        slow_after_failures: int | None = SLOW_AFTER_FAILURES,
        close_after_failures: int | None = CLOSE_AFTER_FAILURES,
        failure_delay: float = FAILURE_DELAY,
        max_failure_delay: float = MAX_FAILURE_DELAY,
    ) -> None:
        if slow_after_failures is not None and slow_after_failures < 0:
            raise ValueError(f"slow_after_failures must not be negative, not {slow_after_failures!r}")
        if close_after_failures is not None and close_after_failures < 1:
            raise ValueError(f"close_after_failures must be at least 1, not {close_after_failures!r}")
        if not 0 <= failure_delay <= max_failure_delay:
            raise ValueError("the delays must satisfy 0 <= failure_delay <= max_failure_delay")
        self.realm = realm
        #: Credentials class -> the checker that verifies it.
        self.checkers: dict[type, Any] = {}
        for checker in checkers:
            self.register_checker(checker)
        #: The budgets of failed logins shared by all connections (None: no limit).
        self.limiter: LoginLimiter | None = LoginLimiter() if isinstance(limiter, str) else limiter
        self.slow_after_failures = slow_after_failures
        self.close_after_failures = close_after_failures
        self.failure_delay = failure_delay
        self.max_failure_delay = max_failure_delay

    def delay_after(self, failures: int) -> float:
        """How long, in seconds, a login attempt waits on a connection that saw *failures* failed ones."""
        if self.slow_after_failures is None or failures < self.slow_after_failures:
            return 0.0
        # The exponent is capped so that a huge count cannot overflow a float.
        doublings = min(failures - self.slow_after_failures, 64)
        return min(self.failure_delay * 2.0**doublings, self.max_failure_delay)

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

    async def login(self, credentials: Any, mind: Any, *, address: str | None = None) -> tuple[Any, Logout]:
        """Check *credentials* and return ``(avatar, logout)`` from the realm.

        Raises :class:`~trio_pb.errors.UnhandledCredentials` if no checker
        handles this kind of credentials, and
        :class:`~trio_pb.errors.UnauthorizedLogin` if they are wrong, or
        :class:`~trio_pb.errors.LoginThrottled` (without asking the checker)
        if the limiter has no attempt left for their username or for
        *address* (the client's IP address, when known).  The caller must
        call *logout* once when the session ends.
        """
        # Checkers and realms may be plain functions: checkpoint all the same, as in trio.
        await trio.lowlevel.checkpoint()
        checker = self._checker_for(credentials)
        request_avatar_id = getattr(checker, "request_avatar_id", None) or checker.requestAvatarId
        limiter = None if isinstance(credentials, Anonymous) else self.limiter
        if limiter is None:
            avatar_id = await _resolve(request_avatar_id(credentials))
        else:
            username = getattr(credentials, "username", None)
            limiter.attempt(username, address)
            avatar_id = await _resolve(request_avatar_id(credentials))
            limiter.succeeded(username, address)
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
        return PortalRoot(self, broker)

    rootObject = root_object
