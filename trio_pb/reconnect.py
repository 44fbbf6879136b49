"""A client that reconnects: one ``async with`` block over a series of connections.

:func:`open_reconnecting_broker` (TCP, TLS) and
:func:`open_reconnecting_unix_broker` connect, and connect again whenever the
connection is lost, backing off exponentially with full jitter between
attempts (:class:`Backoff`).  :func:`open_reconnecting` does the same with any
function that opens a client broker.  Inside the block:

* ``conn.root`` (and ``conn.perspective`` after a login) stands for the
  server's root (the avatar) on whichever connection is up: a call waits
  until one is, and goes out on it once.  A call whose connection is lost
  before its answer comes raises :class:`~trio_pb.errors.PBConnectionLost`;
  it is never sent again, since the server may have run it.
* ``async for broker in conn.connections():`` yields each connection once
  its handshake (and login) is done, so that the application can set up
  again what a connection holds (subscriptions, cached objects).

Leaving the block closes the connection and stops reconnecting.  A failed
login (or a certificate refused) is not retried: it ends the block.
"""

from __future__ import annotations

import logging
import math
import os
import random
import ssl
import types
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any, Generic, TypeVar

import attrs
import trio

from ._groups import plain_errors
from .broker import Broker
from .connect import open_tcp_broker, open_unix_broker
from .errors import DeadReferenceError, DisconnectedError, LoginFailed, ProtocolError
from .options import BrokerOptions
from .references import RemoteReference

__all__ = [
    "CONNECT_TIMEOUT",
    "FATAL_ERRORS",
    "Backoff",
    "ReconnectStatistics",
    "ReconnectWait",
    "ReconnectingBroker",
    "ReconnectingReference",
    "open_reconnecting",
    "open_reconnecting_broker",
    "open_reconnecting_unix_broker",
]

log = logging.getLogger("trio_pb")

T = TypeVar("T")

#: Seconds one attempt may take to connect, finish its handshakes and log in.
CONNECT_TIMEOUT = 30.0

#: Errors that end the block instead of being retried: the same credentials,
#: or the same certificate, would fail again.
FATAL_ERRORS: tuple[type[BaseException], ...] = (LoginFailed, ssl.SSLCertVerificationError)

# How an attempt to connect can fail: tried again unless the error is one of
# the fatal ones.  Anything else (a bug, the server's own error) ends the block.
_RETRIED = (
    OSError,
    trio.BrokenResourceError,
    trio.TooSlowError,
    DisconnectedError,
    ProtocolError,
    LoginFailed,
)


def _non_negative(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{attribute.name} must be a number of seconds >= 0, not {value!r}")


@attrs.frozen(kw_only=True)
class Backoff:
    """How long to wait before each attempt to connect again: exponential, capped, with full jitter.

    After the *n*-th failure in a row, the wait is drawn uniformly from 0 to
    ``min(max_delay, initial_delay * factor ** (n - 1))`` ("full jitter"), so
    that clients dropped together by a server's restart do not come back
    together.  A connection that stayed up at least *reset_after* seconds
    starts the count again when it is lost; one lost sooner counts as a
    failure, so a server that accepts and drops at once is not hammered.
    *rng* draws the waits (its ``uniform(a, b)``): give a seeded
    :class:`random.Random` to make them reproducible.
    """

    #: The ceiling of the first wait, in seconds.
    initial_delay: float = attrs.field(default=0.5, validator=_non_negative)
    #: How much the ceiling grows with each failure in a row (at least 1).
    factor: float = 2.0
    #: The highest ceiling, in seconds.
    max_delay: float = attrs.field(default=30.0, validator=_non_negative)
    #: Seconds a connection must stay up for its loss to start the count again.
    reset_after: float = attrs.field(default=10.0, validator=_non_negative)
    #: Where the jitter comes from (None: a :class:`random.Random` of its own).
    rng: random.Random | None = attrs.field(default=None, eq=False)

    def __attrs_post_init__(self) -> None:
        if not self.factor >= 1:
            raise ValueError(f"factor must be at least 1, not {self.factor!r}")
        if self.max_delay < self.initial_delay:
            raise ValueError(
                f"max_delay ({self.max_delay!r}) must not be less than initial_delay ({self.initial_delay!r})"
            )

    def ceiling(self, failures: int) -> float:
        """The longest wait after *failures* failures in a row (at least 1)."""
        try:
            ceiling = self.initial_delay * self.factor ** max(failures - 1, 0)
        except OverflowError:
            return self.max_delay
        return min(self.max_delay, ceiling)

    def delay(self, failures: int, rng: random.Random) -> float:
        """A wait after *failures* failures in a row, drawn with *rng* (this one's own when it has one)."""
        return (self.rng or rng).uniform(0.0, self.ceiling(failures))


@attrs.frozen(kw_only=True)
class ReconnectStatistics:
    """The state of a :class:`ReconnectingBroker`, from its :meth:`~ReconnectingBroker.statistics`."""

    #: Whether a connection is up (handshake and login done, not lost yet).
    connected: bool
    #: The connection's broker while one is up, else None.
    broker: Broker | None
    #: Attempts to connect so far, successful or not.
    attempts: int
    #: Connections made so far (handshake and login done).
    connections: int
    #: Attempts that failed since the last connection was made (or since the start).
    failures: int
    #: Why the last attempt failed, or None if none has.
    last_error: BaseException | None
    #: While waiting to try again: when the next attempt starts, on trio's clock
    #: (:func:`trio.current_time`); None while connecting or connected.
    next_attempt_at: float | None = None


@attrs.frozen(kw_only=True)
class ReconnectWait:
    """A wait before the next attempt to connect, as :meth:`ReconnectingBroker.waits` yields it."""

    #: How long the wait lasts, in seconds (drawn by the :class:`Backoff`).
    delay: float
    #: When it ends and the next attempt starts, on trio's clock (:func:`trio.current_time`).
    next_attempt_at: float
    #: Why the attempt before it failed; None when the wait follows a connection that was lost.
    error: BaseException | None
    #: Attempts that failed since the last connection was made (or since the start).
    failures: int
    #: Connections made so far: 0 while the very first connection has not been made.
    connections: int

    @property
    def after_loss(self) -> bool:
        """Whether the wait follows a connection that was lost (rather than a failed attempt)."""
        return self.error is None


@attrs.frozen
class _Connection:
    """One connection that is up, with the references calls go to, and its number in the series."""

    number: int
    broker: Broker
    root: RemoteReference
    perspective: RemoteReference | None


class ReconnectingReference:
    """The server's root (or the avatar) on whichever connection is up; made by :class:`ReconnectingBroker`.

    It has a :class:`~trio_pb.references.RemoteReference`'s ways to call:
    :meth:`call_remote`, :meth:`callRemote` and :meth:`call_remote_no_answer`.
    """

    def __init__(self, owner: ReconnectingBroker, perspective: bool) -> None:
        self._owner = owner
        self._perspective = perspective

    def call_remote(self, _name: str, /, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, Any]:
        """Call ``_name`` on the connection that is up (waiting for one if none is) and return its answer.

        The call is sent once, on one connection: if that connection is lost
        before the answer comes, it raises
        :class:`~trio_pb.errors.PBConnectionLost` and is not sent again.
        Made while no connection is up, it waits for the next (cancel it
        with a cancel scope), unless the block was opened with
        ``wait_for_connection=False``: it then raises
        :class:`~trio_pb.errors.DeadReferenceError`.  Once the block is
        left, it raises :class:`~trio_pb.errors.DeadReferenceError`.
        """
        return _named(self._call(_name, args, kwargs), "call_remote", _name)

    async def _call(self, name: str, args: Any, kwargs: Any) -> Any:
        reference = await self._owner._reference(self._perspective)
        return await reference.call_remote(name, *args, **kwargs)

    def callRemote(self, _name: str, /, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, Any]:
        """Twisted's spelling of :meth:`call_remote`; ``pbanswer=False`` sends and wants no answer."""
        if kwargs.get("pbanswer", True) is False:
            del kwargs["pbanswer"]
            return _named(self._send_no_answer(_name, args, kwargs), "callRemote", _name)
        kwargs.pop("pbanswer", None)
        return _named(self._call(_name, args, kwargs), "callRemote", _name)

    async def _send_no_answer(self, name: str, args: Any, kwargs: Any) -> None:
        self.call_remote_no_answer(name, *args, **kwargs)
        await trio.lowlevel.checkpoint()

    def call_remote_no_answer(self, _name: str, /, *args: Any, **kwargs: Any) -> None:
        """Send a call that wants no answer on the connection that is up.

        It cannot wait: while no connection is up it raises
        :class:`~trio_pb.errors.DeadReferenceError` at once.
        """
        self._owner._reference_now(self._perspective).call_remote_no_answer(_name, *args, **kwargs)

    def __repr__(self) -> str:
        return f"<ReconnectingReference to the {'perspective' if self._perspective else 'root'}>"


class ReconnectingBroker:
    """A series of client connections to one server, one at a time; :func:`open_reconnecting` makes one.

    :attr:`root` is the server's root object and :attr:`perspective` the
    avatar (when logging in) on whichever connection is up;
    :meth:`connections` yields each connection as it comes up.
    """

    def __init__(
        self,
        *,
        wait_for_connection: bool,
        logs_in: bool,
    ) -> None:
        self._wait_for_connection = wait_for_connection
        self._logs_in = logs_in
        self._current: _Connection | None = None
        self._closed = False
        # Set, and replaced, whenever the connection comes, goes, or the block ends.
        self._changed = trio.Event()
        self._attempts = 0
        self._connections = 0
        self._failures = 0
        self._last_error: BaseException | None = None
        # The wait in progress, if any, and how many there have been.
        self._wait: ReconnectWait | None = None
        self._waits = 0
        self._root = ReconnectingReference(self, perspective=False)
        self._avatar = ReconnectingReference(self, perspective=True)

    @property
    def root(self) -> ReconnectingReference:
        """The server's root object, on whichever connection is up (Twisted's ``getRootObject``)."""
        return self._root

    @property
    def perspective(self) -> ReconnectingReference:
        """The avatar each connection logged in to, on whichever is up (Twisted's perspective).

        Only when the block logs in (``credentials=``); otherwise
        :class:`RuntimeError`.  Each connection logs in again, with the same
        credentials and mind, before calls go to it.
        """
        if not self._logs_in:
            raise RuntimeError("there is no perspective without credentials: use .root, or pass credentials=")
        return self._avatar

    @property
    def connected(self) -> bool:
        """Whether a connection is up now."""
        return self.broker is not None

    @property
    def broker(self) -> Broker | None:
        """The broker of the connection that is up, or None."""
        current = self._current
        return current.broker if current is not None and current.broker.connected else None

    def perspective_of(self, broker: Broker) -> RemoteReference:
        """The avatar *broker*'s connection logged in to, for calls that belong to that connection only.

        While handling a connection from :meth:`connections`, calls through
        it cannot end up on the next connection.  (Releasing it logs out:
        leave that to the end of the connection.)  Raises
        :class:`~trio_pb.errors.DeadReferenceError` if *broker* is no longer
        the connection that is up.
        """
        if not self._logs_in:
            raise RuntimeError("there is no perspective without credentials: pass credentials=")
        current = self._current
        if current is None or current.broker is not broker or not broker.connected:
            raise DeadReferenceError("that connection is no longer up")
        assert current.perspective is not None
        return current.perspective

    def connections(self) -> AsyncIterator[Broker]:
        """Each connection, once its handshake (and login) is done: ``async for broker in connections()``.

        It yields the connection that is up when it is first asked (if any),
        then each new one.  A connection is yielded once by each iterator.
        The iterator holds nothing back: reconnecting never waits for it,
        and a connection that came and went while its consumer was busy is
        skipped (the consumer gets the one after it).  The iteration ends
        when the block is left.
        """
        return _Newest(self, self._newest_connection)

    def waits(self) -> AsyncIterator[ReconnectWait]:
        """Each wait before an attempt to connect again, as it begins: ``async for wait in waits()``.

        What a user interface shows between connections ("reconnecting in
        3.2 s"): a wait begins after each lost connection and each failed
        attempt.  Like :meth:`connections`, it yields the wait in progress
        when it is first asked (if any), then each new one, and holds
        nothing back: a wait that began and ended while its consumer was
        busy is skipped.  The iteration ends when the block is left.
        """
        return _Newest(self, self._newest_wait)

    def statistics(self) -> ReconnectStatistics:
        """Whether a connection is up, which, and the attempts and failures so far."""
        wait = self._wait
        return ReconnectStatistics(
            connected=self.connected,
            broker=self.broker,
            attempts=self._attempts,
            connections=self._connections,
            failures=self._failures,
            last_error=self._last_error,
            next_attempt_at=wait.next_attempt_at if wait is not None else None,
        )

    # -- what the references and iterators use -------------------------------------

    def _up(self) -> _Connection | None:
        current = self._current
        return current if current is not None and current.broker.connected else None

    async def _reference(self, perspective: bool) -> RemoteReference:
        """The reference a call goes to: the root or the avatar of the connection that is up (waited for)."""
        # A broker found lost here has not sent the call: it waits for the next one.
        while True:
            if self._closed:
                await trio.lowlevel.checkpoint()
                raise DeadReferenceError("the reconnecting client is closed")
            current = self._up()
            if current is not None:
                return _pick(current, perspective)
            if not self._wait_for_connection:
                await trio.lowlevel.checkpoint()
                raise DeadReferenceError("not connected to the server")
            await self._changed.wait()

    def _reference_now(self, perspective: bool) -> RemoteReference:
        current = self._up()
        if current is None:
            raise DeadReferenceError("not connected to the server")
        return _pick(current, perspective)

    def _newest_connection(self) -> tuple[int, Broker] | None:
        current = self._up()
        return (current.number, current.broker) if current is not None else None

    def _newest_wait(self) -> tuple[int, ReconnectWait] | None:
        return (self._waits, self._wait) if self._wait is not None else None

    def _set_current(self, current: _Connection | None) -> None:
        self._current = current
        self._signal()

    def _signal(self) -> None:
        """Wake whoever waits for a change: a connection came or went, a wait began, the block ends."""
        self._changed.set()
        self._changed = trio.Event()

    def _close(self) -> None:
        self._closed = True
        self._set_current(None)

    # -- the connecting loop ----------------------------------------------------------

    async def _run(
        self,
        connect: Callable[[], AbstractAsyncContextManager[Broker]],
        *,
        peer: str,
        credentials: Any,
        mind: Any,
        backoff: Backoff,
        connect_timeout: float,
        max_attempts: int | None,
        fatal_errors: tuple[type[BaseException], ...],
    ) -> None:
        rng = random.Random()
        # Failures in a row for the backoff: failed attempts, and connections
        # lost before they stayed up long enough to start the count again.
        failures = 0
        while True:
            self._attempts += 1
            connected_at: float | None = None
            error: BaseException | None = None
            try:
                with trio.CancelScope(deadline=trio.current_time() + connect_timeout) as attempt:
                    async with connect() as broker:
                        root = await broker.root_object()
                        perspective = None
                        if credentials is not None:
                            perspective = await broker.login(credentials, mind)
                        attempt.deadline = math.inf
                        connected_at = trio.current_time()
                        self._connections += 1
                        self._failures = 0
                        self._set_current(_Connection(self._connections, broker, root, perspective))
                        log.info("connected to %s", broker.peer)
                        await broker.wait_closed()
                if attempt.cancelled_caught:
                    error = trio.TooSlowError(f"no connection within {connect_timeout:g} s")
            except Exception as exc:
                if isinstance(exc, fatal_errors) or not isinstance(exc, _RETRIED):
                    self._last_error = exc
                    raise
                error = exc
            finally:
                if self._current is not None:
                    self._set_current(None)
            now = trio.current_time()
            if connected_at is not None:
                stayed_up = now - connected_at >= backoff.reset_after
                failures = 1 if stayed_up else failures + 1
                log.warning(
                    "connection to %s lost%s", peer, f": {_why(broker.error)}" if broker.error else ""
                )
            else:
                assert error is not None
                failures += 1
                self._failures += 1
                self._last_error = error
                if max_attempts is not None and self._failures >= max_attempts:
                    raise error
            delay = backoff.delay(failures, rng)
            if error is not None:
                # The first failure since the last connection is news; the next ones are the same news.
                level = logging.WARNING if self._failures == 1 else logging.INFO
                log.log(
                    level, "connecting to %s failed (%s); next attempt in %.2g s", peer, _why(error), delay
                )
            self._waits += 1
            self._wait = ReconnectWait(
                delay=delay,
                next_attempt_at=now + delay,
                error=error,
                failures=self._failures,
                connections=self._connections,
            )
            self._signal()
            try:
                await trio.sleep(delay)
            finally:
                self._wait = None


def _named(coro: Coroutine[Any, Any, Any], spelling: str, name: str) -> Coroutine[Any, Any, Any]:
    """Name *coro* after the call, so that a forgotten ``await`` warns with the method's name."""
    if isinstance(coro, types.CoroutineType):
        coro.__qualname__ = f"ReconnectingReference.{spelling}({name!r})"
    return coro


def _pick(current: _Connection, perspective: bool) -> RemoteReference:
    if perspective:
        assert current.perspective is not None
        return current.perspective
    return current.root


def _why(error: BaseException) -> str:
    text = str(error) or str(error.__cause__ or "")
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class _Newest(Generic[T]):
    """The iterator of :meth:`ReconnectingBroker.connections` and :meth:`~ReconnectingBroker.waits`.

    *newest* gives the latest item of the series with its number, or None
    when there is none now (no connection up, no wait in progress); each
    number is yielded once, and the last one yielded is kept.
    """

    def __init__(self, owner: ReconnectingBroker, newest: Callable[[], tuple[int, T] | None]) -> None:
        self._owner = owner
        self._newest = newest
        self._last = 0

    def __aiter__(self) -> _Newest[T]:
        return self

    async def __anext__(self) -> T:
        owner = self._owner
        await trio.lowlevel.checkpoint()
        while True:
            newest = self._newest()
            if newest is not None and newest[0] > self._last:
                self._last, item = newest
                return item
            if owner._closed:
                raise StopAsyncIteration
            await owner._changed.wait()


@asynccontextmanager
async def open_reconnecting(
    connect: Callable[[], AbstractAsyncContextManager[Broker]],
    *,
    credentials: Any = None,
    mind: Any = None,
    backoff: Backoff | None = None,
    connect_timeout: float = CONNECT_TIMEOUT,
    wait_for_connection: bool = True,
    max_attempts: int | None = None,
    fatal_errors: tuple[type[BaseException], ...] = FATAL_ERRORS,
    peer: str = "the server",
) -> AsyncIterator[ReconnectingBroker]:
    """Keep a client connection up with ``connect()``, connecting again whenever it is lost.

    *connect* opens one client broker each time it is called (an async
    context manager such as ``partial(trio_pb.open_tcp_broker, host,
    port)``).  The block is entered at once; the first attempt starts then.
    With *credentials*, each connection logs in (passing *mind*) before it
    counts as up.  An attempt that fails with an :class:`OSError`, a broken
    stream, a lost connection, a :class:`~trio_pb.errors.ProtocolError` or
    that takes longer than *connect_timeout* seconds (to connect, finish
    its handshakes and log in) is tried again after a wait that *backoff*
    decides (:class:`Backoff`), as is a lost connection.  An error in
    *fatal_errors* (by default a failed login and a refused certificate),
    or any other error, ends the block with that error, as does the
    *max_attempts*-th attempt in a row that fails (None: never).  *peer* names the
    server in log lines.

    Leaving the block closes the connection, stops reconnecting, and makes
    calls still waiting for a connection raise
    :class:`~trio_pb.errors.DeadReferenceError`.
    """
    if max_attempts is not None and max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1 (or None), not {max_attempts!r}")
    if not connect_timeout > 0:
        raise ValueError(f"connect_timeout must be a positive number of seconds, not {connect_timeout!r}")
    conn = ReconnectingBroker(wait_for_connection=wait_for_connection, logs_in=credentials is not None)
    try:
        with plain_errors():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    partial(
                        conn._run,
                        connect,
                        peer=peer,
                        credentials=credentials,
                        mind=mind,
                        backoff=backoff or Backoff(),
                        connect_timeout=connect_timeout,
                        max_attempts=max_attempts,
                        fatal_errors=fatal_errors,
                    )
                )
                yield conn
                nursery.cancel_scope.cancel()
    finally:
        conn._close()


def open_reconnecting_broker(
    host: str | bytes,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    credentials: Any = None,
    mind: Any = None,
    backoff: Backoff | None = None,
    connect_timeout: float = CONNECT_TIMEOUT,
    wait_for_connection: bool = True,
    max_attempts: int | None = None,
    fatal_errors: tuple[type[BaseException], ...] = FATAL_ERRORS,
    **broker_options: Any,
) -> AbstractAsyncContextManager[ReconnectingBroker]:
    """Stay connected to the PB server at *host*:*port*: ``async with open_reconnecting_broker(...) as c:``.

    Each connection is made as :func:`~trio_pb.connect.open_tcp_broker`
    makes it (TLS with *ssl_context*, checking *server_hostname*), with
    *broker_options* (:class:`~trio_pb.options.BrokerOptions`: an unknown
    one raises :class:`TypeError` here); the other arguments are
    :func:`open_reconnecting`'s.
    """
    options = BrokerOptions.build("open_reconnecting_broker", broker_options)
    connect = partial(
        open_tcp_broker, host, port, ssl_context=ssl_context, server_hostname=server_hostname, options=options
    )
    name = host.decode("ascii", "replace") if isinstance(host, bytes) else host
    return open_reconnecting(
        connect,
        credentials=credentials,
        mind=mind,
        backoff=backoff,
        connect_timeout=connect_timeout,
        wait_for_connection=wait_for_connection,
        max_attempts=max_attempts,
        fatal_errors=fatal_errors,
        peer=f"{name}:{port}",
    )


def open_reconnecting_unix_broker(
    path: str | os.PathLike[str],
    *,
    credentials: Any = None,
    mind: Any = None,
    backoff: Backoff | None = None,
    connect_timeout: float = CONNECT_TIMEOUT,
    wait_for_connection: bool = True,
    max_attempts: int | None = None,
    fatal_errors: tuple[type[BaseException], ...] = FATAL_ERRORS,
    **broker_options: Any,
) -> AbstractAsyncContextManager[ReconnectingBroker]:
    """Stay connected to the PB server on the unix socket at *path*, as :func:`open_reconnecting_broker` does.

    While the server is down its socket file is usually gone: the
    :class:`FileNotFoundError` is retried like a refused connection.
    """
    options = BrokerOptions.build("open_reconnecting_unix_broker", broker_options)
    return open_reconnecting(
        partial(open_unix_broker, path, options=options),
        credentials=credentials,
        mind=mind,
        backoff=backoff,
        connect_timeout=connect_timeout,
        wait_for_connection=wait_for_connection,
        max_attempts=max_attempts,
        fatal_errors=fatal_errors,
        peer=os.fspath(path),
    )
