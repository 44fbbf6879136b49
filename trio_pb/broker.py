"""The trio side of a PB connection: tasks, waiting callers, and the stream.

:func:`open_broker` runs a :class:`Broker` over any :class:`trio.abc.Stream`
in a nursery of its own.  The broker owns a reader task, which feeds the
sans-IO :class:`~trio_pb.protocol.PBProtocol` and acts on its events in
arrival order, and a writer task, which sends whatever the protocol has
queued, so that no caller's cancellation can ever cut a message in half.
Plain ``remote_*`` methods run inline, where the bytes are read; ``async
def`` ones run as tasks in the broker's nursery.

How the stream is read and written (directly on a plain socket) is
:mod:`trio_pb._socket_io`'s; who reads it, the reader task or a caller
reading for its own answer, is :mod:`trio_pb._reading`'s.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import functools
import inspect
import logging
import math
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import MappingProxyType
from typing import Any

import attrs
import trio

from ._caches import Cacheable, CacheToken, RemoteCacheObserver, new_proxy
from ._deadline import deadlines
from ._events import CreditGranted, StreamItem, StreamRequested
from ._groups import plain_errors
from ._reading import Baton
from ._socket_io import stream_io, without_tracebacks
from ._streams import Window
from .cache import CacheUpdate, CacheUpdates
from .conduct import PeerConduct
from .errors import (
    CancelledByCaller,
    DeadReferenceError,
    Error,
    PBConnectionLost,
    PeerUnresponsive,
    ProtocolError,
    TooManyCalls,
)
from .options import BrokerOptions, BrokerStatistics
from .protocol import (
    NEED_DATA,
    PAUSED,
    Answer,
    BareDriver,
    CancelRequested,
    Failed,
    IncomingCall,
    PBProtocol,
    Ready,
    TracingProtocol,
    _Goodbye,
)
from .references import RemoteReference

if sys.version_info < (3, 11):
    pass  # type: ignore[import-not-found,unused-ignore]

__all__ = ["Broker", "open_broker"]

log = logging.getLogger("trio_pb")

# Results that are certainly not awaitable, checked before the slower inspect.isawaitable.
_PLAIN_RESULTS = frozenset({type(None), bool, int, float, bytes, str, list, tuple, dict})
#: How long leaving open_broker waits for queued messages to go out.
_FLUSH_ON_CLOSE_SECONDS = 5.0
#: The most the writer task hands the stream at once.
_WRITE_CHUNK = 65536
#: About how much the writer takes from the protocol at once (what it holds until sent).
_WRITE_TAKE = 1024 * 1024
#: What a caller that waited holds (see Broker._wait_to_call): the turn of the
#: callers waiting for room, or a call back that takes no slot.
_HOLDS_TURN = 1
_UNCOUNTED = 2
#: The broker whose peer's call the current task runs (in the tasks of async methods).
_serving: contextvars.ContextVar[Broker | None] = contextvars.ContextVar("trio_pb_serving", default=None)


#: The callbacks registered on references with notify_on_disconnect, by reference.
_ReferenceCallbacks = dict[RemoteReference, list[Callable[[Any], object]]]


# No async method running (read only, shared by the connections that have none yet).
_NO_SCOPES: MappingProxyType[int, trio.CancelScope] = MappingProxyType({})


@attrs.define
class _PendingCall:
    """One of our calls, until its answer (or the end of the connection) settles it."""

    settled: bool = False
    value: Any = None
    error: BaseException | None = None
    #: The caller's task while it waits for another task to settle the call
    #: (or, for a stream, to bring an item): what :meth:`wake` reschedules.
    waiting: trio.lowlevel.Task | None = None
    #: Whether settling the call woke its caller: the reader may stand by until that caller runs.
    woken_by_answer: bool = False

    async def wait(self) -> None:
        """Wait until :meth:`wake`; a checkpoint, which cancellation ends.

        trio's own primitives, not a :class:`trio.Event` a call: one wait per
        call, and an Event (with its parking lot) costs several times more.
        """
        self.waiting = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._abandon_wait)

    def _abandon_wait(self, _: object) -> trio.lowlevel.Abort:
        self.waiting = None  # cancelled: nothing may reschedule the task any more
        return trio.lowlevel.Abort.SUCCEEDED

    def wake(self) -> bool:
        """Wake the caller if it waits; whether it did."""
        task = self.waiting
        if task is None:
            return False
        self.waiting = None
        trio.lowlevel.reschedule(task)
        return True

    def take_error(self) -> BaseException:
        """The error, no longer held here: raised by a frame that holds this object, it would be a cycle."""
        error, self.error = self.error, None
        assert error is not None
        return error


@attrs.define
class _StreamCall(_PendingCall):
    """One of our remote streams: a call whose items come before its answer (which ends it)."""

    request_id: int = 0
    window: Window = attrs.field(factory=lambda: Window(1))
    #: Items received, not consumed yet: (value, error), at most a window of them.
    items: collections.deque[tuple[Any, BaseException | None]] = attrs.field(factory=collections.deque)


class RemoteStream:
    """A remote stream's items: ``async with ref.stream(name, ...) as items: async for item in items``.

    Entering sends the call; leaving before the end (``break``, an error,
    a cancellation) closes the producer's generator on the far side.  The
    iteration ends with the stream, or raises what its generator raised, or
    :class:`~trio_pb.errors.PBConnectionLost` if the connection is lost.
    """

    __slots__ = ("_args", "_broker", "_call", "_kwargs", "_name", "_target")

    def __init__(self, broker: Broker, target: int | bytes, name: str, args: Any, kwargs: Any) -> None:
        self._broker = broker
        self._target = target
        self._name = name
        self._args = args
        self._kwargs = kwargs
        self._call: _StreamCall | None = None

    async def __aenter__(self) -> RemoteStream:
        if self._call is not None:
            raise RuntimeError("a RemoteStream can be entered only once")
        self._call = await self._broker._open_stream(self._target, self._name, self._args, self._kwargs)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._call is not None:
            self._broker._leave_stream(self._call)

    def __aiter__(self) -> RemoteStream:
        return self

    async def __anext__(self) -> Any:
        if self._call is None:
            raise RuntimeError("iterate a RemoteStream inside its async with block")
        return await self._broker._next_item(self._call)


class _NoPublicConstructor(type):
    """A metaclass whose classes cannot be called: they are made by their ``_create`` (as in trio)."""

    def __call__(cls, *args: object, **kwargs: object) -> Any:
        raise TypeError(
            f"{cls.__module__}.{cls.__qualname__} has no public constructor: "
            "open a connection with trio_pb.open_broker() (or open_tcp_broker, serve_tcp ...)"
        )


class Broker(metaclass=_NoPublicConstructor):
    """One PB connection: make calls with references it gives you, serve your objects.

    It has no public constructor: :func:`open_broker` (or
    :func:`~trio_pb.connect.open_tcp_broker`, :func:`~trio_pb.connect.serve_tcp`
    ...) makes one; calling ``Broker(...)`` raises :class:`TypeError`.
    """

    # Slots: an idle connection costs less (no instance dict), and attribute
    # access on the call path is no slower.
    __slots__ = (
        "__weakref__",
        "_blobs_out",
        "_bytes_sent",
        "_bytes_taken",
        "_cache_listeners",
        "_call_scopes",
        "_call_slots",
        "_closed",
        "_closing",
        "_context",
        "_credit_waiters",
        "_disconnect_callbacks",
        "_draining",
        "_gc_releases",
        "_holding",
        "_input_held",
        "_io",
        "_keepalive",
        "_last_ping_rtt",
        "_last_words",
        "_lost",
        "_max_running_calls",
        "_nursery",
        "_opened",
        "_pending",
        "_protocol",
        "_reading",
        "_ready",
        "_reference_disconnect_callbacks",
        "_references_imported",
        "_room_turn",
        "_room_waiters",
        "_send_buffer",
        "_serving",
        "_signs_of_life",
        "_slot_waiters",
        "_stream",
        "_stream_window",
        "_to_start",
        "_token",
        "_unsent",
        "_unsent_size",
        "_write_progress",
        "_writer_done",
        "_writer_wakeup",
        "error",
        "peer",
    )

    @classmethod
    def _create(
        cls,
        stream: trio.abc.Stream,
        nursery: trio.Nursery | None,
        *,
        is_client: bool,
        root: Any,
        options: BrokerOptions,
        peer: str | None = None,
    ) -> Broker:
        """The broker of *stream* (the private constructor); *peer* names the peer, if known already."""
        broker: Broker = type.__call__(
            cls, stream, nursery, is_client=is_client, root=root, options=options, peer=peer
        )
        return broker

    def __init__(
        self,
        stream: trio.abc.Stream,
        nursery: trio.Nursery | None,
        *,
        is_client: bool,
        root: Any,
        options: BrokerOptions,
        peer: str | None = None,
    ) -> None:
        self._stream = stream
        # The nursery of the tasks the broker starts.  A broker served in its
        # own task (serve_broker) opens it only when it first needs a task:
        # until then _serving is the scope its read loop runs in, cancelled
        # to have the serving task open the nursery and start _to_start.
        self._nursery = nursery
        self._serving: trio.CancelScope | None = None
        self._to_start: list[tuple[Callable[..., Any], tuple[Any, ...]]] | None = None
        # The keepalive interval of a served broker, whose task starts after the handshake.
        self._keepalive: float | None = None
        #: Who the peer is, for log lines: its address, when the stream has one.
        self.peer = peer if peer is not None else peer_name(stream)
        # A traced connection is a protocol of another class, so that an
        # untraced one makes no check per message.
        make_protocol: Callable[..., PBProtocol] = PBProtocol
        if options.trace is not None:
            make_protocol = functools.partial(TracingProtocol, trace=options.trace, peer=self.peer)
        self._protocol = make_protocol(
            self,
            is_client=is_client,
            security=options.security,
            registry=options.registry,
            unsafe_tracebacks=options.unsafe_tracebacks,
            max_references=options.max_references,
            extensions=options.extensions,
            conduct=PeerConduct(self.peer, max_violations=options.max_violations),
            decode_budget=options.decode_budget,
            max_message_size=options.max_message_size,
            max_message_items=options.max_message_items,
            max_held_calls=options.max_held_calls,
            max_value_size=options.max_value_size,
        )
        if root is not None:
            root_object = getattr(root, "root_object", None)
            self._protocol.set_name_for_local(b"root", root_object(self) if root_object else root)
        self._token = trio.lowlevel.current_trio_token()
        # Releases the garbage collector asked for, oldest first: sent before
        # any later call or answer from this side, as Twisted sends them at once.
        self._gc_releases: list[tuple[bool, int | bytes]] = []
        # Set at the end of the handshake (or of the connection), made by the first to wait for it.
        self._ready: trio.Event | None = None
        # Whether open_broker has yielded: until then a protocol error is raised
        # out of it, for its caller to report, and so is not logged here.
        self._opened = False
        # Whether the connection is gone; _closed is set then, if someone made it to wait for that.
        self._lost = False
        self._closed: trio.Event | None = None
        # The writer task's wake-up and end, made when it starts: on a plain
        # socket only once a write does not go straight out (or calls are
        # coalesced), so that an idle connection has no writer task.
        self._writer_wakeup: trio.Event | None = None
        self._writer_done: trio.Event | None = None
        self._closing = False
        # Whether the output queued at a goodbye is sent before the stream closes.
        self._last_words = False
        self._send_buffer = options.send_buffer
        # Whether the protocol holds blobs for the writer to pump out (trio-pb-2's big values).
        self._blobs_out = False
        self._max_running_calls = options.max_running_calls
        self._stream_window = options.stream_window
        # The producers of our streams waiting for credit, by request id (made at the first).
        self._credit_waiters: dict[int, trio.Event] | None = None
        # Free slots for our calls in flight, less the callers queued for one
        # (negative while some are): the callers queue in _slot_waiters, made
        # by the first to wait, and a freed slot goes straight to the first.
        self._call_slots = options.max_calls_in_flight
        self._slot_waiters: trio.lowlevel.ParkingLot | None = None
        # Whether a caller waits for room in the send buffer (or is about to
        # queue its call, having found it): later callers queue behind it in
        # _room_waiters (made by the first), and it passes the turn on.
        self._room_turn = False
        self._room_waiters: trio.lowlevel.ParkingLot | None = None
        # Output taken from the protocol and not yet handed to the stream: a
        # view that advances as it is written (never a copy of what is left),
        # and the size of the chunk it views, which stays in memory until the
        # view is done.  More output waits in the protocol until then.
        self._unsent: memoryview | None = None
        self._unsent_size = 0
        # Bytes ever taken from the protocol, and ever handed to the stream (for drain()).
        self._bytes_taken = 0
        self._bytes_sent = 0
        # Set (and dropped) whenever bytes go out: backpressure waits on it
        # (made by the first to wait, see _progress_made).
        self._write_progress: trio.Event | None = None
        # Tasks waiting for output to move (drain(), room in the send buffer):
        # while there are any, a direct write reports its progress too.
        self._draining = 0
        # Whether the peer's calls are held back until output drains, and
        # whether they have reached their bound (complete messages then wait
        # in the decoder, and nothing more is read).
        self._holding = False
        self._input_held = False
        # Reading and direct writes: straight on a plain TCP or unix socket (not TLS, not memory).
        self._io = stream_io(stream)
        self._pending: dict[int, _PendingCall] = {}
        # Incoming calls run in the broker's context, whichever task reads.
        self._context = contextvars.copy_context()
        # Who reads: the reader task, or a caller reading for its own answer.
        self._reading = Baton(self._io.receive, self._context, direct=self._io.direct)
        # Signs of life from the peer, counted for keepalive: bytes from it,
        # or our backlog going out (which needs it to acknowledge).
        self._signs_of_life = 0
        # The scopes of the async methods running for the peer, by request id.
        # The async methods of the peer's calls running now, by request id (a dict
        # made at the first: an empty one would cost every idle connection 64 bytes).
        self._call_scopes: dict[int, trio.CancelScope] | MappingProxyType[int, trio.CancelScope] = _NO_SCOPES
        # Tables most connections never use are made at their first entry.
        self._disconnect_callbacks: list[Callable[[], Any]] | None = None
        self._reference_disconnect_callbacks: _ReferenceCallbacks | None = None
        # The update iterators of the cached objects we hold copies of, by luid.
        self._cache_listeners: dict[int, list[CacheUpdates]] | None = None
        # The peer's references we hold tokens of, not released yet (for
        # statistics(): counted where RemoteReferences are made and released).
        self._references_imported = 0
        self._last_ping_rtt: float | None = None
        #: Why the connection ended, if the peer broke the protocol or keepalive
        #: saw no sign of life from it (None if it closed normally).
        self.error: BaseException | None = None

    # -- public API ------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the connection is still up."""
        return not self._lost

    def statistics(self) -> BrokerStatistics:
        """What this connection holds now: calls in flight each way, objects, caches, bytes queued.

        Computed when called (from the tables the connection keeps anyway),
        so it costs nothing per call; see :class:`~trio_pb.options.BrokerStatistics`.
        """
        tables = self._protocol.table_sizes()
        return BrokerStatistics(
            calls_waiting=len(self._pending),
            calls_running=len(self._call_scopes),
            calls_held=self._protocol.held_calls,
            calls_abandoned=self._protocol.abandoned_calls,
            objects_exported=tables.objects_exported,
            export_references=tables.export_references,
            references_imported=self._references_imported,
            caches_exported=tables.caches_exported,
            caches_imported=tables.caches_imported,
            cache_listeners=sum(len(listeners) for listeners in (self._cache_listeners or {}).values()),
            bytes_queued=self._bytes_taken - self._bytes_sent + self._protocol.bytes_to_send,
            last_ping_rtt=self._last_ping_rtt,
            connected=self.connected,
        )

    async def root_object(self) -> RemoteReference:
        """The peer's root object (Twisted's ``getRootObject``)."""
        await self._handshake_over()
        if self._lost:
            raise DeadReferenceError("the connection closed before the handshake finished")
        return RemoteReference(self, b"root", counted=False)

    getRootObject = root_object

    def set_name_for_local(self, name: bytes | str, obj: Any) -> None:
        """Let the peer call *obj* by *name* without a reference (like ``b"root"``; a str means its UTF-8)."""
        self._protocol.set_name_for_local(name, obj)

    setNameForLocal = set_name_for_local

    def remote_for_name(self, name: bytes | str) -> RemoteReference:
        """A reference to the object the peer registered under *name* (a str means its UTF-8)."""
        return RemoteReference(self, name.encode("utf-8") if isinstance(name, str) else name, counted=False)

    remoteForName = remote_for_name

    async def login(self, credentials: Any, mind: Any = None) -> RemoteReference:
        """Log in to the peer's portal; see :func:`trio_pb.login.login`."""
        from .login import login

        return await login(self, credentials, mind)

    def on_release(self, obj: Any, callback: Callable[[], Any]) -> None:
        """Call ``callback()`` once the peer has released every reference to *obj*."""
        self._protocol.on_release(obj, callback)

    def notify_on_disconnect(self, callback: Callable[[], Any]) -> None:
        """Call ``callback()`` when the connection is lost."""
        if self._disconnect_callbacks is None:
            self._disconnect_callbacks = []
        self._disconnect_callbacks.append(callback)

    def dont_notify_on_disconnect(self, callback: Callable[[], Any]) -> None:
        """Undo :meth:`notify_on_disconnect`; an unknown callback is ignored."""
        callbacks = self._disconnect_callbacks
        if callbacks is not None and callback in callbacks:
            callbacks.remove(callback)

    notifyOnDisconnect = notify_on_disconnect
    dontNotifyOnDisconnect = dont_notify_on_disconnect

    async def drain(self) -> None:
        """Wait until everything queued so far has been handed to the stream.

        Use it for backpressure when sending many no-answer calls (paging does).
        Raises :class:`~trio_pb.errors.DeadReferenceError` if the connection is lost first.
        """
        self._flush()
        target = self._bytes_taken + self._protocol.bytes_to_send
        if self._bytes_sent >= target:
            await trio.lowlevel.checkpoint()
            return
        self._draining += 1
        try:
            while self._bytes_sent < target:
                if self._lost:
                    raise DeadReferenceError("the connection was lost before the data was sent")
                await self._progress_made().wait()
        finally:
            self._draining -= 1

    async def ping(self) -> float:
        """Make a round trip to the peer and return how long it took, in seconds.

        Between two trio_pb peers this is a ``ping`` the peer's broker
        answers at once; with a Twisted peer, a call to an object that does
        not exist, which any PB peer answers with an error (and does not
        log).  Raises :class:`~trio_pb.errors.DeadReferenceError` if the
        connection is lost first.
        """
        if self._lost:
            raise DeadReferenceError("Calling Stale Broker")
        start = trio.current_time()
        try:
            await self._answer_to(self._protocol.send_ping())
        except DeadReferenceError:
            raise
        except Exception:
            pass  # an error is an answer too (the "Invalid Object ID" of a peer without pings)
        rtt = self._last_ping_rtt = trio.current_time() - start
        return rtt

    async def _handshake_over(self) -> None:
        """Wait until the handshake is done, or the connection gone (a checkpoint either way)."""
        if self._protocol.dialect is not None or self._lost:
            await trio.lowlevel.checkpoint()
            return
        if self._ready is None:
            self._ready = trio.Event()
        await self._ready.wait()

    async def _keep_alive(self, interval: float) -> None:
        # After a whole *interval* without a sign of life, ping; if the next
        # *interval* passes without one either (the pong, or any other byte,
        # or our backlog moving), the peer is taken for gone.  Only silence
        # counts: a peer sending a long message, or slowly reading ours, is
        # alive.  (Checking once an interval keeps the per-read cost to an
        # increment; the price is closing 2 to 3 intervals after the last sign.)
        while not self._lost:
            signs_of_life = self._signs_of_life
            await trio.sleep(interval)
            if self._signs_of_life != signs_of_life:
                continue
            self._ping_and_forget()
            await trio.sleep(interval)
            if self._signs_of_life == signs_of_life and not self._lost:
                log.warning(
                    "%s: closing the connection: no sign of life from the peer in %g s",
                    self.peer,
                    2 * interval,
                )
                self.error = PeerUnresponsive(f"no sign of life from the peer in {2 * interval:g} s")
                with trio.CancelScope(shield=True):
                    await self.aclose()
                return

    def _ping_and_forget(self) -> None:
        """Queue a ping whose answer (any bytes will do) is dropped when it comes."""
        if not self._lost:
            self._protocol.abandon(self._protocol.send_ping())
            self._flush()

    async def wait_closed(self) -> None:
        """Wait until the connection is gone."""
        if self._lost:
            await trio.lowlevel.checkpoint()
            return
        if self._closed is None:
            self._closed = trio.Event()
        await self._closed.wait()

    async def aclose(self) -> None:
        """Send what is queued, close the stream and fail every outstanding call."""
        if not self._closing and not self._lost:
            self._closing = True
            if self._writer_wakeup is not None or self._pending_output():
                # (Else there is nothing to send: no writer task is started for nothing.)
                self._wake_writer()
                await self._wait_for_writer()
        self._connection_lost()
        await self._close_stream()

    async def _wait_for_writer(self) -> None:
        """Wait (a bounded time, whatever cancels the caller) for the writer to send what is queued."""
        with trio.move_on_after(_FLUSH_ON_CLOSE_SECONDS) as scope:
            scope.shield = True
            done = self._writer_done
            if done is not None:  # else the writer never had anything to send
                await done.wait()

    async def _close_stream(self) -> None:
        """Close the stream at once, or after a goodbye's last words are sent."""
        if self._last_words:
            await self._wait_for_writer()
        await trio.aclose_forcefully(self._stream)

    # -- calls we make -----------------------------------------------------------

    async def call(
        self, target: int | bytes, name: str, args: Any, kwargs: Any, *, command: bytes = b"message"
    ) -> Any:
        """Call *name* on the peer's object *target* (a luid or a name) and return its answer.

        What :meth:`RemoteReference.call_remote <trio_pb.references.RemoteReference.call_remote>`
        runs; *command* is ``b"cachemessage"`` for a cached object's update.
        """
        if self._lost:
            raise DeadReferenceError("Calling Stale Broker")
        protocol = self._protocol
        self._call_slots -= 1
        waited = 0
        if (
            self._call_slots < 0
            or self._room_turn
            or protocol.bytes_to_send + self._unsent_size > self._send_buffer
        ):
            # Over the limit of calls in flight, or the send buffer is full
            # (or other callers wait for room before us).
            waited = await self._wait_to_call()
        try:
            if self._gc_releases:
                self._send_gc_releases()
            time_left = None
            if protocol.extended:
                deadline = deadlines.read()
                if deadline != math.inf:
                    time_left = deadline - trio.current_time()
            request_id = protocol.send_call(target, name, args, kwargs, command=command, time_left=time_left)
            if waited:
                waited = self._sent_after_waiting(waited)
            return await self._answer_to(request_id)
        finally:
            if waited:
                self._done_after_waiting(waited)
            else:
                self._call_slots += 1
                if self._call_slots <= 0:
                    self._hand_over_slot()

    def _sent_after_waiting(self, waited: int) -> int:
        """The call of a caller that waited is queued: pass the turn on; what it still holds."""
        if waited & _HOLDS_TURN:
            self._pass_turn()
        return waited & ~_HOLDS_TURN

    def _done_after_waiting(self, waited: int) -> None:
        """A caller that waited is done: give back what it still holds (*waited*, as from _wait_to_call)."""
        if waited & _HOLDS_TURN:
            self._pass_turn()  # the call could not be sent
        if not waited & _UNCOUNTED:
            self._call_slots += 1
            if self._call_slots <= 0:
                self._hand_over_slot()

    async def _wait_to_call(self) -> int:
        """Wait for a slot among the calls in flight, then for room to send; return what the caller holds.

        A checkpoint either way; callers wait first come, first served, for
        each.  The caller counted itself in :attr:`_call_slots` already; a
        caller cancelled (or failed) here leaves holding no slot and no turn.
        The flags returned: :data:`_HOLDS_TURN`, the turn of the callers
        waiting for room, to pass on (:meth:`_pass_turn`) once the message is
        queued; :data:`_UNCOUNTED`, a call back from a method running for the
        peer, which holds no slot.
        """
        flags = 0
        if self._call_slots < 0 and _serving.get() is self:
            # A method running for the peer calls it back.  The slots may all
            # be held by our calls whose answers wait for this very method:
            # waiting for one could deadlock, so it goes uncounted (there
            # are at most max_running_calls such methods).
            self._call_slots += 1
            flags = _UNCOUNTED
        elif self._call_slots < 0:
            waiters = self._slot_waiters
            if waiters is None:
                waiters = self._slot_waiters = trio.lowlevel.ParkingLot()
            try:
                await waiters.park()  # woken by _hand_over_slot: the slot is ours
            except BaseException:
                self._call_slots += 1  # left the queue: no slot taken, none to hand over
                raise
        try:
            if self._lost:
                raise DeadReferenceError("Calling Stale Broker")
            if self._room_turn or self._pending_output() > self._send_buffer:
                await self._wait_for_turn()
                flags |= _HOLDS_TURN
            else:
                await trio.lowlevel.checkpoint_if_cancelled()  # for a call back that took no slot
            return flags
        except BaseException:
            if not flags & _UNCOUNTED:
                self._call_slots += 1
                if self._call_slots <= 0:
                    self._hand_over_slot()
            raise

    async def _wait_for_turn(self) -> None:
        """Wait until the send buffer has room, callers one at a time in the order they came.

        Only the caller holding the turn waits for the writer's progress, so
        that room made by each write wakes one task, not every caller.  It
        returns holding the turn; raising, it has passed it on.
        """
        if self._room_turn:
            waiters = self._room_waiters
            if waiters is None:
                waiters = self._room_waiters = trio.lowlevel.ParkingLot()
            await waiters.park()  # woken by _pass_turn: the turn is ours
        else:
            self._room_turn = True
        try:
            await self._wait_for_room()
            if self._lost:
                raise DeadReferenceError("the connection was lost before the call could be sent")
        except BaseException:
            self._pass_turn()
            raise

    def _pass_turn(self) -> None:
        """Pass the turn of the callers waiting for room to the next one, if any."""
        waiters = self._room_waiters
        if waiters is not None and waiters.unpark():
            return
        self._room_turn = False

    def _hand_over_slot(self) -> None:
        """Give the slot just freed to the first caller queued for one."""
        waiters = self._slot_waiters
        if waiters is not None:
            waiters.unpark()

    async def _answer_to(self, request_id: int) -> Any:
        """Wait for the answer to *request_id*, just queued; raise the error if it failed."""
        pending = self._pending[request_id] = _PendingCall()
        if len(self._pending) == 1:
            # The only call in flight: out at once, no task switch.
            self._flush()
        else:
            # Others in flight: calls queued in the same scheduling round
            # (callers woken by one read's answers) go out in one write,
            # by the writer, which runs once they all wait.
            self._wake_writer()
        try:
            if self._reading.may_lead(self):
                # The reader task stands by: read the answer here, saving
                # the switch from the reader to this task (trio_pb._reading).
                await self._reading.read_until_settled(self, pending)
            if not pending.settled:
                await pending.wait()
        except BaseException:
            if self._pending.pop(request_id, None) is not None:
                # Cancelled: the answer, when it comes, is dropped quietly,
                # and an extended peer is told to stop working on it.
                self._protocol.abandon(request_id)
                self._protocol.send_cancel(request_id)
                self._flush()
            raise
        finally:
            if pending.woken_by_answer:
                # Woken by whoever read the answer: the reader may be parked until now.
                self._reading.woken()
        if pending.error is not None:
            if isinstance(pending.error, CancelledByCaller):
                # The peer stopped at our deadline (our cancel it only gets
                # once nobody waits).  If the deadline passed here too, or our
                # scope was cancelled, the answer may have been read in the
                # very turn the cancellation took effect, too late to
                # interrupt the wait: the call was cancelled, and this
                # checkpoint says so.  Otherwise the peer's word is raised.
                await trio.lowlevel.checkpoint()
            raise pending.take_error()
        return pending.value

    # -- remote streams we consume -----------------------------------------------

    def stream(self, target: int | bytes, name: str, args: Any, kwargs: Any) -> RemoteStream:
        """The remote stream of *name* on the peer's object *target*: enter it to send the call.

        What :meth:`RemoteReference.stream <trio_pb.references.RemoteReference.stream>` returns.
        """
        return RemoteStream(self, target, name, args, kwargs)

    async def _open_stream(self, target: int | bytes, name: str, args: Any, kwargs: Any) -> _StreamCall:
        if self._lost:
            raise DeadReferenceError("Calling Stale Broker")
        await trio.lowlevel.checkpoint()
        protocol = self._protocol
        if self._gc_releases:
            self._send_gc_releases()
        time_left = None
        deadline = deadlines.read()
        if deadline != math.inf:
            time_left = deadline - trio.current_time()
        window = self._stream_window
        request_id = protocol.send_stream_call(target, name, args, kwargs, window, time_left)
        call = _StreamCall(request_id=request_id, window=Window(window))
        self._pending[request_id] = call
        self._flush()
        return call

    async def _next_item(self, call: _StreamCall) -> Any:
        waited = False
        while not call.items:
            if call.settled:
                if call.error is not None:
                    if isinstance(call.error, CancelledByCaller):
                        await trio.lowlevel.checkpoint()  # our deadline passed: as for calls (_answer_to)
                    raise call.take_error()
                raise StopAsyncIteration
            try:
                await call.wait()
            finally:
                if call.woken_by_answer:
                    # Woken by whoever read the answer: the reader may be parked until now.
                    call.woken_by_answer = False
                    self._reading.woken()
            waited = True
        if not waited:
            await trio.lowlevel.checkpoint()
        value, error = call.items.popleft()
        grant = call.window.took()
        if grant and not call.settled:
            self._protocol.send_credit(call.request_id, grant)
            self._flush()
        if error is not None:
            raise error
        return value

    def _leave_stream(self, call: _StreamCall) -> None:
        """The consumer left the block: a stream not over yet is closed (its generator closed over there)."""
        call.items.clear()
        if self._pending.get(call.request_id) is call:
            del self._pending[call.request_id]
            if not self._lost:
                self._protocol.abandon(call.request_id)
                self._protocol.send_cancel(call.request_id)
                self._flush()

    def _stream_item(self, event: StreamItem) -> None:
        call = self._pending.get(event.request_id)
        if not isinstance(call, _StreamCall):
            raise ProtocolError(f"an item for request {event.request_id}, a call that is not a stream")
        if len(call.items) >= call.window.window:
            raise ProtocolError(
                f"the producer of stream {event.request_id} sent past the credit it was given"
            )
        call.items.append((event.value, event.error))
        call.wake()

    # -- remote streams we produce -----------------------------------------------

    def _run_stream(self, call: IncomingCall) -> None:
        protocol = self._protocol
        request_id = call.request_id
        if request_id in self._call_scopes:
            raise ProtocolError(f"the peer reused request id {request_id} while its call still runs")
        try:
            generator = call.method(*call.args, **call.kwargs)
        except Exception as exc:
            protocol.stream_done(request_id)
            self._fail_call(call, exc)
            return
        problem: Exception | None = None
        if not inspect.isasyncgen(generator):
            close = getattr(generator, "close", None)
            if close is not None:
                close()  # a coroutine that never started
            problem = Error(f"{call.name!r} is not an async generator: call it with call_remote, not stream")
        elif len(self._call_scopes) >= self._max_running_calls:
            problem = TooManyCalls(f"{self._max_running_calls} calls are running on this connection already")
        if problem is not None:
            protocol.stream_done(request_id)
            self._fail_call(call, problem)
            return
        scope = trio.CancelScope()
        if call.time_left is not None:
            scope.deadline = trio.current_time() + call.time_left
        if not isinstance(self._call_scopes, dict):
            self._call_scopes = {}
        self._call_scopes[request_id] = scope
        self._start_soon(self._feed_stream, call, generator, scope)

    async def _feed_stream(self, call: IncomingCall, generator: Any, scope: trio.CancelScope) -> None:
        """Run the generator of the peer's stream *call*, an item per credit, then end the stream."""
        _serving.set(self)
        protocol = self._protocol
        request_id = call.request_id
        with scope:
            try:
                async with contextlib.aclosing(generator):
                    while True:
                        while not protocol.take_credit(request_id):
                            # No credit: the generator is not advanced until the consumer grants more.
                            waiters = self._credit_waiters
                            if waiters is None:
                                waiters = self._credit_waiters = {}
                            waiter = waiters[request_id] = trio.Event()
                            try:
                                await waiter.wait()
                            finally:
                                del waiters[request_id]
                        try:
                            item = await generator.__anext__()
                        except StopAsyncIteration:
                            break
                        await self._wait_for_room()
                        if self._lost:
                            return
                        protocol.send_item(request_id, item, call.perspective)
                        self._flush()
                await self._wait_for_room()
            except Exception as exc:
                self._fail_call(call, exc)
            else:
                if not self._lost:
                    try:
                        self._call_done(call, None)
                    except ProtocolError as exc:
                        self._broke_protocol(exc)
                        await self._close_stream()
            finally:
                assert isinstance(self._call_scopes, dict)  # it holds this stream's scope
                del self._call_scopes[request_id]
                protocol.stream_done(request_id)
        if scope.cancelled_caught and not self._lost:
            # The consumer closed the stream, or its deadline passed.
            deadline_passed = trio.current_time() >= scope.deadline
            self._protocol.send_cancelled(request_id, deadline_passed=deadline_passed)
        self._flush()

    def call_no_answer(
        self, target: int | bytes, name: str, args: Any, kwargs: Any, *, command: bytes = b"message"
    ) -> None:
        """Send a call to *target* that wants no answer (see :meth:`call`)."""
        if self._lost:
            raise DeadReferenceError("Calling Stale Broker")
        if self._gc_releases:
            self._send_gc_releases()
        self._protocol.send_call(target, name, args, kwargs, answer_required=False, command=command)
        self._flush()

    # -- what references and cached objects need (trio_pb._connection_api.Connection) --

    def release_reference(self, luid: int | bytes) -> None:
        """Send one ``decref`` for the peer's object *luid* (a reference's release)."""
        # Every counted RemoteReference sends exactly one, here (or disowns its token).
        self._references_imported -= 1
        self._protocol.send_decref(luid)
        self._flush()

    def release_cache(self, luid: int) -> None:
        """Send one ``decache`` for the peer's cached object *luid* (a copy's release)."""
        self._protocol.send_decache(luid)
        self._flush()

    def release_cache_from_gc(self, luid: int) -> None:
        """Like :meth:`release_cache`, from a finalizer in any thread: sent before our next message."""
        self._gc_releases.append((True, luid))
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._send_gc_releases)

    def release_reference_from_gc(self, luid: int | bytes) -> None:
        """Like :meth:`release_reference`, from a finalizer in any thread: sent before our next message."""
        # Called from __del__, possibly in another thread or in the middle of
        # encoding a message: only queue it (a list's append and pop are atomic;
        # a list, not a deque, as an empty deque costs ~600 bytes per connection).
        self._gc_releases.append((False, luid))
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._send_gc_releases)

    def forget_reference(self, luid: int | bytes) -> None:
        """A reference to *luid* was disowned: its token is given back another way (nothing is sent)."""
        self._references_imported -= 1

    def _send_gc_releases(self) -> None:
        """Send the releases the garbage collector queued: due before our next call or answer."""
        releases = self._gc_releases
        while releases:
            cached, luid = releases.pop(0)
            if cached:
                assert isinstance(luid, int)
                self.release_cache(luid)
            else:
                self.release_reference(luid)

    def on_reference_disconnect(self, reference: RemoteReference, callback: Callable[[Any], object]) -> None:
        """Call ``callback(reference)`` when the connection is lost."""
        if self._reference_disconnect_callbacks is None:
            self._reference_disconnect_callbacks = {}
        self._reference_disconnect_callbacks.setdefault(reference, []).append(callback)

    def cancel_reference_disconnect(
        self, reference: RemoteReference, callback: Callable[[Any], object]
    ) -> None:
        """Undo :meth:`on_reference_disconnect`; raises ValueError if *callback* was not registered."""
        table = self._reference_disconnect_callbacks
        callbacks = table.get(reference, []) if table is not None else []
        callbacks.remove(callback)
        if not callbacks and table is not None:
            table.pop(reference, None)

    def speaks_for(self, invoker: Any) -> bool:
        """Whether *invoker* (a jellier's) serializes for this connection: references go back only there."""
        return invoker is self._protocol

    def cache_luid(self, cacheable: Any) -> int | None:
        """The luid under which the peer holds copies of *cacheable*, if it does."""
        return self._protocol.cache_luid(cacheable)

    def cache_updates(self, luid: int, buffer: int) -> CacheUpdates:
        """An iterator of the updates applied to our copy of the cached object *luid* from now on."""
        updates = CacheUpdates(buffer)
        if self._lost:
            updates.close(DeadReferenceError("the connection is closed"))
        elif luid not in self._protocol.locally_cached:
            updates.close()
        else:
            if self._cache_listeners is None:
                self._cache_listeners = {}
            self._cache_listeners.setdefault(luid, []).append(updates)
        return updates

    @property
    def conduct(self) -> PeerConduct:
        """The record of the peer's misbehaviour so far (bounded logging, when to give up)."""
        return self._protocol.conduct

    @property
    def peer_address(self) -> str | None:
        """The IP address of the peer, or None (a unix socket, a stream in memory)."""
        stream: Any = self._stream
        while isinstance(stream, trio.SSLStream):
            stream = stream.transport_stream
        if not isinstance(stream, trio.SocketStream):
            return None
        try:
            name = stream.socket.getpeername()
        except OSError:
            return None
        if isinstance(name, tuple) and isinstance(name[0], str):
            return name[0]
        return None

    # -- what the protocol asks of its driver (trio_pb._connection_api.ProtocolDriver) --

    def make_reference(self, luid: int) -> RemoteReference:
        """The RemoteReference a ``remote`` token from the peer becomes (the protocol calls this)."""
        # For statistics(): a token held, until released or disowned.
        self._references_imported += 1
        return RemoteReference(self, luid)

    def make_cache_proxy(self, master: Any, luid: int) -> tuple[Any, CacheToken]:
        """A new proxy of our copy *master*, owing one ``decache`` (the protocol calls this)."""
        token = CacheToken(self, luid)
        return new_proxy(master, token), token

    def make_cache_observer(self, cacheable: Cacheable, perspective: Any) -> RemoteCacheObserver:
        """The observer of the peer's new copy of *cacheable* (the protocol calls this)."""
        return RemoteCacheObserver(self, cacheable, perspective)

    def cache_ended(self, luid: int) -> None:
        """The peer uncached *luid*: its update iterators end (the protocol calls this)."""
        if self._cache_listeners is not None:
            for listener in self._cache_listeners.pop(luid, ()):
                listener.close()

    def blobs_queued(self) -> None:
        """A message waits for its blobs: the writer sends them a chunk at a time (called by the protocol)."""
        self._blobs_out = True
        self._wake_writer()

    def _cache_updated(self, call: IncomingCall) -> None:
        if self._cache_listeners is None:
            return
        listeners = self._cache_listeners.get(call.cache_luid)  # type: ignore[arg-type]
        if listeners:
            update = CacheUpdate(call.name, call.args, call.kwargs)
            for listener in listeners:
                listener.push(update)

    # -- the tasks ---------------------------------------------------------------

    async def _read(self) -> None:
        """The reader task of :func:`open_broker`: read until the connection is gone, then close it."""
        self._reading.reader = trio.lowlevel.current_task()
        try:
            await self._read_loop()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            without_tracebacks(exc)  # as in _write: a cycle on Python 3.12+
        except ProtocolError as exc:
            self._broke_protocol(exc)
        finally:
            self._connection_lost()
            with trio.CancelScope(shield=True):
                await self._close_stream()

    async def _read_loop(self) -> None:
        """Read and act on what arrives until the connection is gone (in the reader's task)."""
        reading = self._reading
        # (The baton's bound methods: new ones would cost 136 bytes per idle connection.)
        receive = reading.receive
        run = reading.run
        while not self._lost:
            if reading.should_park(len(self._pending)):
                await reading.park()
                continue
            if self._input_held:
                # The peer's held-back calls reached their bound (a peer
                # that sends calls but does not read the answers): read
                # nothing until output drains and they run.
                await self._wait_for_room()
                if reading.leading or self._lost:
                    continue
                run(self._resume_input)
                continue
            reading.on_socket = True
            try:
                data = await receive()
            finally:
                reading.on_socket = False
            run(self.take_in, data)
        if reading.crash is not None:
            raise reading.crash

    # -- serving in the task that accepted the connection (serve_broker) ---------

    def _handshake_done(self, serving: trio.CancelScope) -> None:
        """The handshake of a served broker is over: no more deadline, and keepalive starts."""
        serving.deadline = math.inf
        # From now on a protocol error is the broker's to log (serve_tcp logs one in the handshake).
        self._opened = True
        if self._keepalive is not None:
            self._start_soon(self._keep_alive, self._keepalive)

    # -- what the reading callers need (trio_pb._reading.ReadingConnection) --

    def room_to_read(self) -> bool:
        """Whether more may be read now: the peer's held-back calls have not reached their bound."""
        return not self._input_held

    def take_in(self, data: bytes | bytearray | None) -> None:
        """Act on bytes read from the stream; empty bytes end the connection, None is nothing."""
        if data is None:
            return
        if not data:
            if self._protocol.in_expression:
                log.warning("%s: connection closed in the middle of a message", self.peer)
            self._connection_lost()
            return
        self._signs_of_life += 1
        self._protocol.receive_data(data)  # the decoder keeps its own copy
        self._handle_events()

    def connection_lost(self) -> None:
        """The stream is gone: end the connection (fail our calls, cancel the peer's)."""
        self._connection_lost()

    def broke_protocol(self, exc: ProtocolError) -> None:
        """The peer broke the protocol: end the connection with *exc* as :attr:`error`."""
        self._broke_protocol(exc)

    # -- the tasks, continued ----------------------------------------------------

    def _resume_input(self) -> None:
        """Handle the held calls and the messages that waited in the decoder while answers were backed up."""
        self._input_held = self._holding = False
        self._handle_events()

    def _let_in_held(self) -> None:
        """In the writer, once output has drained: run the peer's held calls, as the reader would."""
        try:
            self._context.run(self._resume_input)
        except ProtocolError as exc:
            self._context.run(self._broke_protocol, exc)
            # The reader may be waiting on the stream: closing it ends the reader.
            self._start_soon(self._close_stream)

    async def _wait_for_room(self) -> None:
        """Wait while more than the send buffer's worth of output waits to go out."""
        if self._pending_output() <= self._send_buffer or self._lost:
            return
        self._draining += 1
        try:
            while self._pending_output() > self._send_buffer and not self._lost:
                await self._progress_made().wait()
        finally:
            self._draining -= 1

    async def _write(self) -> None:
        protocol = self._protocol
        wakeup, done = self._writer_wakeup, self._writer_done
        assert wakeup is not None and done is not None
        try:
            while True:
                await wakeup.wait()
                wakeup = self._writer_wakeup = trio.Event()
                if self._io.direct and self._unsent is None and protocol.bytes_to_send:
                    # Coalesced output (see _answer_to): straight into the
                    # socket if it takes it all, as _flush does.
                    self._write_directly()
                while True:
                    if self._holding and not self._closing and self._pending_output() <= self._send_buffer:
                        # Room again for the answers of the peer's calls held back.
                        self._let_in_held()
                    view = self._unsent
                    if view is None:
                        if not protocol.bytes_to_send:
                            # A chunk of a big value once the rest is out: what was
                            # queued meanwhile (a ping, small calls) never waits
                            # for more than one chunk.
                            if not self._blobs_out:
                                break
                            if not protocol.pump_blob():
                                self._blobs_out = False
                                break
                        data = protocol.data_to_send(_WRITE_TAKE)
                        self._bytes_taken += len(data)
                        view = self._unsent = memoryview(data)
                        self._unsent_size = len(data)
                    # In pieces: a backlog moving out means the peer takes it,
                    # a sign of life for keepalive even while it says nothing.
                    # (Not the last piece: bytes that fit into a buffer with
                    # room, a ping say, prove nothing.)
                    piece = view[:_WRITE_CHUNK]
                    await self._stream.send_all(piece)
                    rest = view[len(piece) :]
                    if rest:
                        self._unsent = rest
                    else:
                        # The whole chunk counted until now: it was held until now.
                        self._unsent = None
                        self._unsent_size = 0
                    self._bytes_sent += len(piece)
                    if rest:
                        self._signs_of_life += 1
                    self._progress()
                if self._closing:
                    break
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            # On Python 3.12 and later, the OSError that trio's SocketStream
            # turned into this error (in a @contextmanager) is left in a
            # reference cycle (CPython gh-129280): its traceback holds the
            # generator's frame, whose f_back is contextlib's __exit__ frame,
            # whose local `value` is the OSError.  Through f_back the cycle
            # holds the frames of send_all (the stream) and of this method
            # (the broker).  Without the tracebacks nothing holds the frames.
            without_tracebacks(exc)
            self._connection_lost()
        finally:
            done.set()
            self._progress()

    def _progress(self) -> None:
        event = self._write_progress
        if event is not None:
            event.set()
            self._write_progress = None

    def _progress_made(self) -> trio.Event:
        """The event set when bytes next go out (or the connection is lost)."""
        event = self._write_progress
        if event is None:
            event = self._write_progress = trio.Event()
        return event

    def _broke_protocol(self, exc: ProtocolError) -> None:
        if self._opened:
            log.error("%s: closing the connection: the peer broke the protocol: %s", self.peer, exc)
        self.error = without_tracebacks(exc)
        if isinstance(exc, _Goodbye):
            # The protocol queued an error that tells the peer why; as in
            # Twisted, it goes out before the stream closes (_close_stream).
            self._last_words = self._closing = True
            self._wake_writer()
        self._connection_lost()

    def _wake_writer(self) -> None:
        wakeup = self._writer_wakeup
        if wakeup is not None:
            wakeup.set()
        else:
            self._start_writer()

    def _start_writer(self) -> None:
        if self._lost and not self._closing:
            return  # nothing will be sent any more (and the nursery may be gone)
        self._writer_wakeup = trio.Event()
        self._writer_wakeup.set()
        self._writer_done = trio.Event()
        self._start_soon(self._write)

    def _start_soon(self, async_fn: Callable[..., Any], *args: Any) -> None:
        """Start a task of the broker in its nursery (the serving task opens it first if need be)."""
        nursery = self._nursery
        if nursery is not None:
            nursery.start_soon(async_fn, *args)
            return
        # Served without a nursery yet (serve_broker): the serving task
        # leaves its read loop at its next checkpoint, opens the nursery and
        # starts these, in this order.
        if self._to_start is None:
            self._to_start = []
        self._to_start.append((async_fn, args))
        assert self._serving is not None
        self._serving.cancel()

    def _start_queued(self, nursery: trio.Nursery) -> None:
        """Make *nursery* the broker's and start the tasks that waited for it."""
        self._nursery = nursery
        queued, self._to_start = self._to_start or [], None
        for async_fn, args in queued:
            nursery.start_soon(async_fn, *args)

    def _flush(self) -> None:
        """Send what the protocol queued: straight into the socket if it takes it all, else by the writer.

        The direct write saves a task switch per message.  It is a plain
        non-blocking ``os.write``, so it can neither block nor be cancelled
        half-way, and it only happens while the writer has nothing in hand,
        so messages keep their order.
        """
        if not self._protocol.bytes_to_send:
            return
        if self._io.direct and self._unsent is None and not self._lost and self._write_directly():
            return
        self._wake_writer()

    def _write_directly(self) -> bool:
        """Write all the protocol queued with one non-blocking write: whether the socket took it all.

        What it did not take is left in :attr:`_unsent` for the writer task.
        """
        data = self._protocol.data_to_send()
        self._bytes_taken += len(data)
        sent = self._io.write(data)  # 0 if full, closed or broken: the writer finds out which
        self._bytes_sent += sent
        if sent == len(data):
            if self._draining:
                self._progress()
            if self._holding:
                self._wake_writer()  # room again: the writer lets the held calls in
            return True
        self._unsent = memoryview(data)[sent:]
        self._unsent_size = len(data)
        return False

    def _pending_output(self) -> int:
        """How many bytes wait to be handed to the stream."""
        return self._protocol.bytes_to_send + self._unsent_size

    def _handle_events(self) -> None:
        protocol = self._protocol
        # Whatever a message makes us queue (an answer, an error, a pong ...),
        # the next one waits while more than the send buffer is queued.
        protocol.pause_above = self._send_buffer - self._unsent_size
        while True:
            event = protocol.next_event()
            if event is NEED_DATA:
                break
            if event is PAUSED:
                # The peer's calls are held until output drains (the writer
                # lets them in); everything else it sent was handled.  Past
                # their bound, take in nothing more: the rest waits in the
                # decoder, unparsed, and then in TCP.
                self._holding = True
                self._input_held = protocol.held_full
                break
            if isinstance(event, IncomingCall):
                self._run_call(event)
            elif isinstance(event, (Answer, Failed)):
                self._settle(event)
            elif isinstance(event, CancelRequested):
                scope = self._call_scopes.get(event.request_id)
                if scope is not None:
                    scope.cancel()
            elif isinstance(event, StreamItem):
                self._stream_item(event)
            elif isinstance(event, CreditGranted):
                waiter = self._credit_waiters.get(event.request_id) if self._credit_waiters else None
                if waiter is not None:
                    waiter.set()
            elif isinstance(event, StreamRequested):
                self._run_stream(event.call)
            elif isinstance(event, Ready):
                if self._ready is not None:
                    self._ready.set()
                if self._serving is not None:
                    self._handshake_done(self._serving)
        self._flush()

    def _settle(self, event: Answer | Failed) -> None:
        # The protocol reports only answers that someone waits for (late and
        # repeated ones it sorts out itself): the caller's task is in _pending.
        pending = self._pending.pop(event.request_id)
        if isinstance(event, Answer):
            self._settle_pending(pending, event.value, None)
        else:
            self._settle_pending(pending, None, event.error)

    def _settle_pending(self, pending: _PendingCall, value: Any, error: BaseException | None) -> None:
        pending.value = value
        pending.error = error
        pending.settled = True
        if pending.wake():
            pending.woken_by_answer = True
            self._reading.wakes_due += 1

    def _run_call(self, call: IncomingCall) -> None:
        # The protocol refuses a reused request id awaiting an answer; this
        # keeps calls that want none from sharing an entry of _call_scopes.
        if call.request_id in self._call_scopes:
            raise ProtocolError(f"the peer reused request id {call.request_id} while its call still runs")
        try:
            result = call.method(*call.args, **call.kwargs)
        except Exception as exc:
            self._fail_call(call, exc)
            return
        if type(result) not in _PLAIN_RESULTS and inspect.isawaitable(result):
            if len(self._call_scopes) >= self._max_running_calls:
                close = getattr(result, "close", None)
                if close is not None:
                    close()  # a coroutine that never started: none of its code ran
                self._fail_call(
                    call,
                    TooManyCalls(f"{self._max_running_calls} calls are running on this connection already"),
                )
                return
            # The scope exists from now on, so that a cancel or a reused
            # request id arriving before the task starts finds it.
            scope = trio.CancelScope()
            if call.time_left is not None:
                # The caller's deadline, carried over by the extension dialect.
                scope.deadline = trio.current_time() + call.time_left
            if not isinstance(self._call_scopes, dict):
                self._call_scopes = {}
            self._call_scopes[call.request_id] = scope
            self._start_soon(self._finish_async_call, call, result, scope)
        else:
            self._call_done(call, result)

    def _call_done(self, call: IncomingCall, result: Any) -> None:
        if call.cache_luid is not None:
            self._cache_updated(call)
        if call.answer_required:
            if self._gc_releases:
                self._send_gc_releases()  # dropped by the method: as in Twisted, released before it answers
            self._protocol.send_answer(call.request_id, result, call.perspective)

    async def _finish_async_call(self, call: IncomingCall, awaitable: Any, scope: trio.CancelScope) -> None:
        # What this task (and the tasks it starts) calls on the peer is a call back.
        _serving.set(self)
        with scope:
            try:
                result = await awaitable
                if call.answer_required:
                    # Answers finishing together must not pile up past the send buffer.
                    await self._wait_for_room()
            except Exception as exc:
                self._fail_call(call, exc)
            else:
                if not self._lost:
                    try:
                        self._call_done(call, result)
                    except ProtocolError as exc:
                        self._broke_protocol(exc)
                        await self._close_stream()
            finally:
                assert isinstance(self._call_scopes, dict)  # it holds this call's scope
                del self._call_scopes[call.request_id]
        if scope.cancelled_caught and call.answer_required and not self._lost:
            # The caller cancelled, or its deadline passed.
            deadline_passed = trio.current_time() >= scope.deadline
            self._protocol.send_cancelled(call.request_id, deadline_passed=deadline_passed)
        self._flush()

    def _fail_call(self, call: IncomingCall, exc: Exception) -> None:
        if not isinstance(exc, Error):
            self._protocol.conduct.warning(
                "method raised",
                "remote call %r raised; the peer receives the error",
                call.method,
                level=logging.ERROR,
                exc_info=exc,
            )
        if call.answer_required and not self._lost:
            if self._gc_releases:
                self._send_gc_releases()
            self._protocol.send_error(call.request_id, exc)

    def _connection_lost(self) -> None:
        if self._lost:
            return
        self._lost = True
        if self._closed is not None:
            self._closed.set()
        if self._ready is not None:
            self._ready.set()
        self._progress()
        self._protocol.connection_lost()
        self._protocol.conduct.summary()
        pending, self._pending = self._pending, {}
        for call in pending.values():
            error = PBConnectionLost("the connection was lost before the answer came")
            self._settle_pending(call, None, error)
        # On its way out the reader closes the stream, which wakes a caller reading it.
        self._reading.wake_reader()
        if self._slot_waiters is not None:
            self._slot_waiters.unpark_all()  # each finds the connection gone
        for scope in self._call_scopes.values():
            scope.cancel()
        for callback in list(self._disconnect_callbacks or ()):
            _run_callback(callback)
        for reference, callbacks in list((self._reference_disconnect_callbacks or {}).items()):
            for ref_callback in callbacks:
                _run_callback(ref_callback, reference)
        self._reference_disconnect_callbacks = None
        listeners, self._cache_listeners = self._cache_listeners or {}, None
        for updates in listeners.values():
            for listener in updates:
                listener.close(DeadReferenceError("the connection was lost"))

    def _break_cycles(self) -> None:
        """Drop what makes a closed broker part of a reference cycle, so that it is freed at once.

        Called when :func:`open_broker` is done with it.  Without this, a
        closed connection would wait for a full run of the garbage collector.
        """
        # Nothing the peer sends can arrive any more: no new RemoteReference needs us.
        self._protocol.driver = BareDriver(self._protocol)
        # A kept exception: its traceback holds the frames of our methods, which hold us.
        # (self.error has none: see _broke_protocol.)
        self._reading.crash = None
        # Called at the disconnect, and often holding us.
        self._disconnect_callbacks = None


def peer_name(stream: trio.abc.Stream) -> str:
    """The peer's address as ``host:port`` (or a unix socket's path), for log lines."""
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    if not isinstance(stream, trio.SocketStream):
        return "the peer"
    try:
        name = stream.socket.getpeername()
    except OSError:
        return "<unknown peer>"
    if isinstance(name, tuple):
        return f"{name[0]}:{name[1]}"
    return repr(name) if name else "<unix socket peer>"


def _run_callback(callback: Callable[..., Any], *args: Any) -> None:
    try:
        callback(*args)
    except Exception:
        log.exception("disconnect callback %r failed", callback)


class _BreakingCycles:
    """Once its block is done (with the broker's nursery), break the reference cycles of :attr:`broker`."""

    broker: Broker | None = None

    def __enter__(self) -> _BreakingCycles:
        return self

    def __exit__(self, *exc_info: object) -> None:
        broker, self.broker = self.broker, None
        if broker is not None:
            broker._break_cycles()


@asynccontextmanager
async def open_broker(
    stream: trio.abc.Stream,
    *,
    server: bool,
    root: Any = None,
    options: BrokerOptions | None = None,
    **keywords: Any,
) -> AsyncIterator[Broker]:
    """Run a PB broker over *stream* and yield it once the handshake is done.

    *server* is true on the side that accepted the connection (it speaks
    first).  *root* is the object the peer gets from ``root_object()``.
    Leaving the block sends what is queued, closes the stream, cancels every
    task the broker started and fails outstanding calls with
    :class:`~trio_pb.errors.PBConnectionLost`.  An exception from the block
    comes out as itself, not wrapped in an ExceptionGroup.

    A peer that breaks the protocol during the handshake makes this raise the
    :class:`~trio_pb.errors.ProtocolError`, which is left to the caller to
    report; once the block is entered, one is logged (naming the peer) and
    kept in the broker's ``error``.

    Every other keyword is a broker option: a field of :class:`~trio_pb.options.BrokerOptions`,
    which says what each does and its default (*extensions*,
    *handshake_timeout*, *keepalive*, the limits *send_buffer*,
    *max_running_calls*, *max_message_size*, *max_message_items*,
    *decode_budget*, *max_violations* ...).  *options*, a
    :class:`~trio_pb.options.BrokerOptions`, gives them all at once (keywords win over it).
    An unknown keyword raises :class:`TypeError` at once.
    """
    settings = BrokerOptions.build("open_broker", {"options": options, **keywords})
    with plain_errors(), _BreakingCycles() as cycles:
        async with trio.open_nursery() as nursery:
            broker = cycles.broker = Broker._create(
                stream, nursery, is_client=not server, root=root, options=settings
            )
            nursery.start_soon(broker._read)
            if broker._io.direct:
                broker._flush()  # the handshake, straight into the socket if it takes it
            else:
                broker._wake_writer()
            try:
                with trio.fail_after(settings.handshake_timeout):
                    await broker._handshake_over()
                if broker._lost:
                    raise broker.error or DeadReferenceError("the connection closed during the handshake")
                if settings.keepalive is not None:
                    nursery.start_soon(broker._keep_alive, settings.keepalive)
                broker._opened = True
                yield broker
            finally:
                with trio.CancelScope(shield=True):
                    await broker.aclose()
                nursery.cancel_scope.cancel()
                # This frame is in the traceback of an exception leaving
                # here (a failed handshake raises broker.error): it must not
                # hold the broker.  _BreakingCycles has it.
                del broker


async def serve_broker(
    stream: trio.abc.Stream, *, root: Any, options: BrokerOptions, peer: str | None = None
) -> None:
    """Serve one accepted connection in the calling task, until the connection is gone.

    What :func:`~trio_pb.connect.serve_tcp` runs for each connection: the
    same as ``async with open_broker(stream, server=True, ...)`` around
    ``await broker.wait_closed()``, except that the calling task reads the
    stream itself and the broker's nursery is opened only when the broker
    first needs a task (the writer, an ``async def`` method, keepalive),
    so that an idle connection costs little more than its socket.  A
    handshake that fails raises as in :func:`open_broker`, and one not done
    within ``options.handshake_timeout`` raises :class:`trio.TooSlowError`.
    *peer* names the peer in log lines (by default its address, as
    :func:`peer_name` gives it: a caller that has it already saves a copy).
    """
    # Until the nursery is needed, _start_soon cancels broker._serving: this
    # task leaves its read loop at its next checkpoint (waiting for the
    # socket, for room, or parked: nothing read is lost), opens the nursery,
    # starts the tasks and reads on inside it until the end.  (One function,
    # not a method called by it: a frame less for each idle connection.)
    broker = Broker._create(stream, None, is_client=False, root=root, options=options, peer=peer)
    broker._keepalive = options.keepalive
    broker._reading.reader = trio.lowlevel.current_task()
    # The handshake's deadline, lifted once it is done (_handshake_done).
    serving = broker._serving = trio.CancelScope(deadline=trio.current_time() + options.handshake_timeout)
    try:
        if broker._io.direct:
            broker._flush()  # the handshake, straight into the socket if it takes it
        else:
            broker._wake_writer()  # other streams are written by the writer task only
        with serving:
            await broker._read_loop()
        if broker._to_start is not None and not broker._lost:
            with plain_errors():
                async with trio.open_nursery() as nursery:
                    broker._start_queued(nursery)
                    serving = broker._serving = trio.CancelScope(deadline=serving.deadline)
                    try:
                        with serving:
                            await broker._read_loop()
                    finally:
                        with trio.CancelScope(shield=True):
                            await broker.aclose()
                        nursery.cancel_scope.cancel()
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        without_tracebacks(exc)  # as in Broker._write: a cycle on Python 3.12+
    except ProtocolError as exc:
        broker._broke_protocol(exc)
    finally:
        with trio.CancelScope(shield=True):
            if broker._nursery is None and (
                broker._to_start is not None or (broker._pending_output() and not broker._lost)
            ):
                # Tasks wanted at the very end (the writer, to send the last
                # words or what is queued) get a nursery now.
                with plain_errors():
                    async with trio.open_nursery() as nursery:
                        broker._start_queued(nursery)
                        await broker.aclose()
                        nursery.cancel_scope.cancel()
            else:
                await broker.aclose()
        broker._break_cycles()
        failure: BaseException | None = None
        if broker._protocol.dialect is None:
            if trio.current_time() >= serving.deadline:
                failure = trio.TooSlowError()
            else:
                failure = broker.error or DeadReferenceError("the connection closed during the handshake")
        # Not held by this frame, which the traceback of an exception from here holds.
        del broker
    if failure is not None:
        try:
            raise failure
        finally:
            del failure  # (as the error's traceback holds this frame)
