"""The PB protocol state machine for one connection, without I/O.

:class:`PBProtocol` is the broker's sans-IO core (docs/protocol.rst, "PB messages"):
it runs the banana handshake, numbers requests, keeps the tables of objects
the peer holds references to, turns incoming expressions into events and
outgoing calls, answers and errors into bytes.  It never runs user code
except the jelly hooks of the objects it serializes, and it imports no trio:
:mod:`trio_pb.broker` drives it.

Everything the peer sends is processed strictly in arrival order, so that
reference counts and the meaning of ``local`` tokens stay consistent.  A
problem confined to one call (bad arguments, an unknown object, an answer
that cannot be unjellied) fails that call; a broken protocol raises
:class:`~trio_pb.errors.ProtocolError` and the connection must be closed.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import math
import reprlib
import sys
import time
import types
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs

from . import failures
from ._accel import decode_plain as _decode_plain
from ._accel import encode_message as _encode_message
from ._accel import unjelly_plain as _unjelly_plain
from ._blobs import MAX_VALUE_SIZE, BigValues
from ._caches import RemoteCacheObserver, new_proxy, observers_of
from ._events import (
    NEED_DATA,
    PAUSED,
    Answer,
    CancelRequested,
    CreditGranted,
    Event,
    Failed,
    IncomingCall,
    NeedData,
    Paused,
    Ready,
    StreamItem,
    StreamRequested,
)
from ._events import answer as _answer_event
from ._events import incoming_call as _incoming_call
from ._streams import Credits
from .banana import (
    DEPTH_LIMIT,
    DIALECTS,
    MESSAGE_ITEMS_LIMIT,
    MESSAGE_SIZE_LIMIT,
    BananaConnection,
    Decoder,
    DialectSelected,
)
from .conduct import PeerConduct
from .errors import (
    BananaEncodeError,
    CancelledByCaller,
    DeadReferenceError,
    Error,
    JellyError,
    LocalProtocolError,
    ProtocolError,
    SerializationError,
    StreamsUnsupported,
)
from .jelly import (
    CopyRegistry,
    DummySecurityOptions,
    Jellier,
    Jellyable,
    SecurityOptions,
    Unjellier,
    copy_registry,
    global_security,
    jelly,
)
from .trace import TraceEvent, make_event

if TYPE_CHECKING:
    from ._connection_api import Disownable, ProtocolDriver

__all__ = [
    "DECODE_BUDGET",
    "MAX_ABANDONED",
    "MAX_BROKER_REFS",
    "MAX_HELD_CALLS",
    "MAX_UNANSWERED_DECACHES",
    "PONG_RESERVE",
    "EXTENSION_DIALECT",
    "EXTENSION_DIALECT_2",
    "NEED_DATA",
    "PAUSED",
    "PROTOCOL_VERSION",
    "TableSizes",
    "TracingProtocol",
    "Answer",
    "BareDriver",
    "CancelRequested",
    "Event",
    "Failed",
    "IncomingCall",
    "NeedData",
    "PBProtocol",
    "PeerReference",
    "Paused",
    "Ready",
    "State",
]

log = logging.getLogger("trio_pb")

PROTOCOL_VERSION: Final = 6
#: The banana dialect under which two trio_pb peers may use extensions:
#: the pb vocabulary plus commands Twisted does not know (``cancel``, ``deadline``,
#: ``ping``, ``pong``).
EXTENSION_DIALECT: Final = b"trio-pb-1"
#: The dialect offered before it: trio-pb-1's commands, plus big values in
#: chunks and remote streams (docs/protocol.rst, "The extension dialects").
EXTENSION_DIALECT_2: Final = b"trio-pb-2"
#: How many objects the peer may hold references to (Twisted's MAX_BROKER_REFS).
MAX_BROKER_REFS: Final = 1024
#: How many refused cached objects may wait for the peer's ``uncache`` at once.
MAX_UNANSWERED_DECACHES: Final = 4096
#: How many calls we stopped waiting for may go unanswered before the oldest is given up.
MAX_ABANDONED: Final = 10_000
#: CPU seconds that building the sets and dicts of one message may take: far more
#: than any honest message needs (hashing a million items takes a few
#: hundredths of a second), far less than a message built to be slow.
DECODE_BUDGET: Final = 0.1
#: How many of the peer's calls may be held back, unrun, while our output is backed up
#: (see :attr:`PBProtocol.pause_above`); past it, nothing more is decoded.
MAX_HELD_CALLS: Final = 10_000
#: Bytes past :attr:`PBProtocol.pause_above` up to which pings are still answered at once.
PONG_RESERVE: Final = 65536


class State(enum.Enum):
    """Where a :class:`PBProtocol` is in the life of its connection."""

    #: The banana dialect is being negotiated: nothing can be sent yet.
    HANDSHAKE = "HANDSHAKE"
    #: Calls, answers and releases flow both ways.
    OPEN = "OPEN"
    #: The connection is gone (:meth:`PBProtocol.connection_lost`): nothing more is sent.
    CLOSED = "CLOSED"


# Module constants, cheaper to reach than State.OPEN on the hot path.
_HANDSHAKE: Final = State.HANDSHAKE
_OPEN: Final = State.OPEN
_CLOSED: Final = State.CLOSED


class _Goodbye(ProtocolError):
    """The peer kept asking for more than its quota: its error answer is queued, then the connection closes.

    The driver sends what is queued before it closes the stream, so that the
    caller sees the error (as with Twisted) rather than a lost connection.
    """


class _Requests:
    """Where each request id of the connection is in its life, both ways.

    Every id of ours below the protocol's next one is in :attr:`waiting`
    or :attr:`pings` (someone waits for its answer), in :attr:`abandoned` (nobody waits, its
    answer is still due) or finished (answered, or sent wanting no answer),
    except that one up to :attr:`given_up_to` may have been given up instead
    (see :meth:`PBProtocol.abandon`).  So above :attr:`given_up_to`, an
    answer to an id in none of these tables is a repeated one; and memory is
    bounded by the waiting callers and :data:`MAX_ABANDONED`, whatever the
    peer does.  :attr:`incoming` holds the peer's requests that await our
    answer.  (One object, so that PBProtocol keeps few attributes.)
    """

    __slots__ = (
        "abandoned",
        "big",
        "given_up_to",
        "held",
        "incoming",
        "max_held",
        "next_deadline",
        "pings",
        "streams",
        "waiting",
    )

    def __init__(self, max_held: int, big: BigValues) -> None:
        # The blobs of trio-pb-2, kept here so that PBProtocol keeps few attributes.
        self.big = big
        # Dicts used as sets: subscripts cost less than set methods on the hot path.
        self.waiting: dict[int, None] = {}
        # Our pings awaiting their pong, apart: a pong settles only a ping, an answer only a call.
        # (Made at the first: most connections never ping nor abandon a call.)
        self.pings: dict[int, None] | None = None
        self.abandoned: dict[int, None] | None = None  # oldest first (a dict as an ordered set)
        self.given_up_to = 0
        self.incoming: dict[int, None] = {}
        # The (request id, seconds) of a ``deadline`` that announces the next message.
        self.next_deadline: tuple[int, float] | None = None
        #: The peer's calls held back while our output is backed up: none held until
        #: :meth:`holding` makes the table (most connections never hold a call).
        self.held = _NOTHING_HELD
        #: How many of the peer's calls may be held (the ``max_held_calls`` option).
        self.max_held = max_held
        #: The credit of the streams we produce (made at the first: most connections stream nothing).
        self.streams: Credits | None = None

    def producing(self) -> Credits:
        """The credit table of the streams we produce, made now if need be."""
        streams = self.streams
        if streams is None:
            streams = self.streams = Credits()
        return streams

    def holding(self, max_size: int) -> _Held:
        """The table of held calls, made now if need be, taking at most *max_size* bytes."""
        held = self.held
        if held is _NOTHING_HELD:
            held = self.held = _Held(self.max_held, max_size)
        return held


class _Held:
    """The peer's calls held back, unrun, while output is backed up, and what keeps its place behind them.

    Each entry is ``(size, function, argument)``: its size as received, and
    what :meth:`PBProtocol.next_event` does with it once there is room again,
    ``function(argument)``, which returns the event to hand over (the call
    itself) or None (a release or an error answer that waited in line).
    """

    __slots__ = ("calls", "deferring", "entries", "max_entries", "max_size", "size")

    def __init__(self, max_entries: int, max_size: int) -> None:
        # A deque once something is held (an empty one costs 760 bytes a connection).
        self.entries: deque[tuple[int, Callable[[Any], Event | None], Any]] | tuple[()] = ()
        #: The bytes of the entries, as received.
        self.size = 0
        self.max_entries = max_entries
        self.max_size = max_size
        #: Whether each held call that wants an answer was cancelled meanwhile, by request id
        #: (made at the first: most connections never hold a call).
        self.calls: dict[int, bool] | None = None
        #: The size of the call being held now, while it is made into an event (0: none).
        self.deferring = 0

    def push(self, size: int, function: Callable[[Any], Event | None], argument: Any) -> None:
        entries = self.entries
        if not isinstance(entries, deque):
            entries = self.entries = deque()
        entries.append((size, function, argument))
        self.size += size

    def pop(self) -> tuple[int, Callable[[Any], Event | None], Any]:
        """The oldest entry, no longer held."""
        entries = self.entries
        assert isinstance(entries, deque)
        entry = entries.popleft()
        self.size -= entry[0]
        return entry

    @property
    def full(self) -> bool:
        """Whether nothing more may be held: what follows waits, undecoded."""
        return len(self.entries) >= self.max_entries or self.size >= self.max_size

    def hold_answer(self, request_id: int) -> None:
        """Note that the held call *request_id* wants an answer (and is not cancelled yet)."""
        if self.calls is None:
            self.calls = {}
        self.calls[request_id] = False

    def cancel(self, request_id: int) -> bool:
        """Mark the held call *request_id* cancelled; False if no such call is held."""
        calls = self.calls
        if calls is None or request_id not in calls:
            return False
        calls[request_id] = True
        return True

    def was_cancelled(self, request_id: int) -> bool:
        """Whether the held call *request_id*, now taking its turn, was cancelled while it waited."""
        calls = self.calls
        return calls.pop(request_id, False) if calls is not None else False

    def clear(self) -> None:
        self.entries = ()
        self.calls = None
        self.size = 0


# No call held: what every connection's table of held calls is until it holds one (never
# changed: PBProtocol._next_holding makes a connection its own table before it holds anything).
_NOTHING_HELD: Final = _Held(sys.maxsize, sys.maxsize)

# The Cacheables of a connection that has sent none (read only, shared).
_NO_CACHE_LUIDS: Final[MappingProxyType[int, int]] = MappingProxyType({})


@attrs.define
class _Local:
    obj: Any
    refcount: int
    puid: Any


@attrs.define
class _CacheEntry:
    """A Cacheable the peer holds copies of: one ``decache`` is owed per copy."""

    cacheable: Any
    perspective: Any
    observer: Any
    count: int


@attrs.frozen
class PeerReference(Jellyable):
    """What a ``remote`` token becomes in a protocol driven by hand: the peer's object, by luid.

    Call it with ``send_call(ref.luid, ...)``; give its token back with
    ``send_decref(ref.luid)`` (nothing is sent on its own).  It can be sent
    back to the same connection, where it stands for the peer's own object.
    """

    driver: BareDriver
    luid: int

    def disown(self) -> None:
        """Nothing to forget: a reference made by hand is released by hand."""

    def jelly_for(self, jellier: Jellier) -> Any:
        if jellier.invoker is None or jellier.invoker is not self.driver.protocol:
            raise JellyError("a reference can only be sent back over the connection it came from")
        return [b"local", self.luid]


class _NothingOwed:
    def disown(self) -> None:
        pass


_NOTHING_OWED: Final = _NothingOwed()


class BareDriver:
    """The driver of a protocol driven by hand, with no I/O and no trio (tests, tools).

    Tokens from the peer become :class:`PeerReference` s and cache proxies
    that owe nothing by themselves; a Cacheable's observers queue their
    updates on the protocol at once (``call_no_answer``), and cannot wait
    for answers.
    """

    def __init__(self, protocol: PBProtocol) -> None:
        # Weak: the protocol holds its driver.
        self._protocol = weakref.ref(protocol)

    @property
    def protocol(self) -> PBProtocol | None:
        """The protocol this drives (None once it is gone)."""
        return self._protocol()

    @property
    def connected(self) -> bool:
        """Whether the protocol is still open."""
        protocol = self._protocol()
        return protocol is not None and not protocol.closed

    def make_reference(self, luid: int) -> PeerReference:
        return PeerReference(self, luid)

    def make_cache_proxy(self, master: Any, luid: int) -> tuple[Any, Disownable]:
        return new_proxy(master), _NOTHING_OWED

    def make_cache_observer(self, cacheable: Any, perspective: Any) -> RemoteCacheObserver:
        return RemoteCacheObserver(self, cacheable, perspective)

    def cache_ended(self, luid: int) -> None:
        pass

    def blobs_queued(self) -> None:
        pass  # whoever drives it by hand calls pump_blob()

    async def call(
        self, target: int | bytes, name: str, args: Any, kwargs: Any, *, command: bytes = b"message"
    ) -> Any:
        raise Error("a protocol driven by hand cannot wait for answers: use send_call and next_event")

    def call_no_answer(
        self, target: int | bytes, name: str, args: Any, kwargs: Any, *, command: bytes = b"message"
    ) -> None:
        protocol = self._protocol()
        if protocol is None:
            raise DeadReferenceError("the protocol is gone")
        protocol.send_call(target, name, args, kwargs, answer_required=False, command=command)

    def cache_luid(self, cacheable: Any) -> int | None:
        protocol = self._protocol()
        return protocol.cache_luid(cacheable) if protocol is not None else None


@attrs.frozen
class TableSizes:
    """How much the object and cache tables hold (see :meth:`PBProtocol.table_sizes`)."""

    #: Our objects the peer holds references to (by luid; names are not counted).
    objects_exported: int
    #: The sum of their refcounts: the references the peer holds to them.
    export_references: int
    #: Our Cacheables the peer holds copies of.
    caches_exported: int
    #: The peer's cached objects we hold copies of.
    caches_imported: int


class PBProtocol:
    """One end of a PB connection, as a state machine (see the module docstring).

    *driver* makes the objects that the peer's tokens become (the trio
    :class:`~trio_pb.broker.Broker` makes RemoteReferences bound to itself);
    None drives the protocol by hand, with a :class:`BareDriver`.
    """

    # Slots, not an instance dict: less memory per connection, and attribute
    # access on the call path at least as fast (no shared-key dict to keep small).
    __slots__ = (
        "__weakref__",
        "_banana",
        "_cache_luids",
        "_dropped_masters",
        "_luids",
        "_made",
        "_next_luid",
        "_next_request_id",
        "_outgoing",
        "_registered",
        "_release_callbacks",
        "_requests",
        "_unwanted_uncaches",
        "bytes_to_send",
        "conduct",
        "decode_budget",
        "driver",
        "extended",
        "local_objects",
        "locally_cached",
        "max_references",
        "pause_above",
        "registry",
        "remotely_cached",
        "security",
        "serializing_answer",
        "serializing_perspective",
        "state",
        "unsafe_tracebacks",
    )

    def __init__(
        self,
        driver: ProtocolDriver | None,
        *,
        is_client: bool,
        security: SecurityOptions | None = None,
        registry: CopyRegistry | None = None,
        extensions: bool | bytes = True,
        unsafe_tracebacks: bool = False,
        max_references: int = MAX_BROKER_REFS,
        conduct: PeerConduct | None = None,
        decode_budget: float | None = DECODE_BUDGET,
        max_message_size: int = MESSAGE_SIZE_LIMIT,
        max_message_items: int = MESSAGE_ITEMS_LIMIT,
        max_held_calls: int = MAX_HELD_CALLS,
        max_value_size: int = MAX_VALUE_SIZE,
    ) -> None:
        #: Makes what the peer's tokens become (see :class:`~trio_pb._connection_api.ProtocolDriver`).
        self.driver: ProtocolDriver = driver if driver is not None else BareDriver(self)
        #: The peer's misbehaviour so far: bounded logging, and when to give up.
        self.conduct = conduct if conduct is not None else PeerConduct()
        self.security = security if security is not None else global_security
        if registry is None:
            # Shared by the connections that use the process-wide registry:
            # nothing registers in a connection's registry afterwards.
            self.registry = _DEFAULT_REGISTRY
        else:
            self.registry = CopyRegistry(parent=registry)
            failures.install(self.registry)
        self.unsafe_tracebacks = unsafe_tracebacks
        self.max_references = max_references
        #: CPU seconds the sets and dicts of one message may cost to build; None: no limit.
        self.decode_budget = decode_budget
        # A trio_pb server offers its extension dialect first: a Twisted
        # client does not know it and picks pb, a trio_pb client picks it.
        # extensions=b"trio-pb-1" offers that dialect and those below it only.
        dialects = _EXTENSION_OFFERS[extensions if type(extensions) is bytes else bool(extensions)]
        self._banana = BananaConnection(
            is_client=is_client,
            dialects=dialects,
            message_size_limit=max_message_size,
            message_items_limit=max_message_items,
        )
        #: Whether the peer speaks trio_pb's extensions (known after the handshake).
        #: Derived from :attr:`dialect`, kept as an attribute because every call reads it.
        self.extended = False
        #: The connection's state: HANDSHAKE, then OPEN, then CLOSED.
        self.state = _HANDSHAKE
        self._outgoing: list[bytes] = []
        #: How many bytes are queued for the peer and not yet taken by data_to_send().
        self.bytes_to_send = 0
        #: While more than this many bytes are queued, the peer's calls are held back (set by the driver).
        self.pause_above = sys.maxsize
        self._queue_handshake(self._banana.data_to_send())
        #: The perspective Viewables are jellied for at this moment.
        self.serializing_perspective: Any = None
        #: Whether what is being jellied is an answer to the peer.
        self.serializing_answer = False
        self._next_request_id = 1
        self._next_luid = 1
        #: Objects the peer can call, by luid or by name.
        self.local_objects: dict[int | bytes, _Local] = {}
        self._luids: dict[Any, int] = {}
        # (is_cache, luid) registered by the jelly in progress, undone if sending fails.
        self._registered: list[tuple[bool, int]] | None = None
        self._release_callbacks: dict[Any, list[Any]] | None = None  # made at the first
        #: Cacheables the peer holds copies of, by luid.
        self.remotely_cached: dict[int, _CacheEntry] = {}
        # Our luid of each Cacheable the peer holds, by id() (a dict at the first).
        self._cache_luids: dict[int, int] | MappingProxyType[int, int] = _NO_CACHE_LUIDS
        #: The master copies of the peer's Cacheables we hold, by luid.
        self.locally_cached: dict[int, Any] = {}
        # What the unjelly in progress created, to disown if it fails.
        self._made: list[Any] | None = None
        # (Made by the first, for the unjelly in progress.)
        self._dropped_masters: list[int] | None = None
        # Cached objects we refused, whose uncache is expected and ignored
        # (made at the first: an empty set costs 216 bytes per connection).
        self._unwanted_uncaches: set[int] | None = None
        # The held calls take at most as many bytes as one message may.
        self._requests = _Requests(max_held_calls, BigValues(max_value_size))

    # -- bytes in, bytes out ----------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        if self.state is _CLOSED:
            return  # the connection is gone: what still arrives is nobody's to act on
        self._banana.receive_data(data)

    def data_to_send(self, max_bytes: int | None = None) -> bytes:
        """The bytes queued for the peer, all of them or about *max_bytes* (whole messages, at least one)."""
        outgoing = self._outgoing
        if max_bytes is None or self.bytes_to_send <= max_bytes:
            data = b"".join(outgoing)
            outgoing.clear()
        else:
            count = taken = 0
            while taken < max_bytes:
                taken += len(outgoing[count])
                count += 1
            data = b"".join(outgoing[:count])
            del outgoing[:count]
        self.bytes_to_send -= len(data)
        return data

    @property
    def is_client(self) -> bool:
        """Whether this is the end that connected (the server speaks first)."""
        return self._banana.is_client

    # Every attribute of this class costs on the hot path once there are more
    # than CPython shares cheaply (about 30): keep what can be derived derived.

    @property
    def closed(self) -> bool:
        """Whether the connection is gone (the state is CLOSED)."""
        return self.state is _CLOSED

    @property
    def dialect(self) -> bytes | None:
        """The banana dialect agreed in the handshake (``None`` until then)."""
        return self._banana.dialect

    @property
    def in_expression(self) -> bool:
        """Whether part of an expression has arrived without the rest."""
        return self._banana.in_expression

    def next_event(self) -> Event | NeedData | Paused:
        """The next event, :data:`NEED_DATA`, or :data:`PAUSED`.

        While more than :attr:`pause_above` bytes wait to be sent, the peer's
        calls are *held back*: decoded and unjellied in arrival order, but
        returned (as :class:`IncomingCall` s, or answered with their errors)
        only once :meth:`data_to_send` has taken enough, so that a peer cannot
        make us queue answers faster than it reads them.  Everything else
        goes on meanwhile: answers and errors, pongs, cancels, and pings
        (answered while the excess stays under :data:`PONG_RESERVE`); the
        peer's releases keep their place behind the calls held before them.

        :data:`PAUSED` (as in h11) means that calls are held: call again once
        :meth:`data_to_send` has taken enough.  Bytes may still be fed
        meanwhile (the answers among them are what lets output drain), unless
        :attr:`held_full`: the held calls have reached their bound
        (``max_held_calls``, or as many bytes as one message may take), and
        nothing more is decoded until they have room.

        Once the connection is lost (:meth:`connection_lost`), there are no
        more events: it is :data:`NEED_DATA` whatever was received, since
        every table the peer's messages refer to is gone.

        Raises :class:`~trio_pb.errors.ProtocolError` when the peer broke the
        protocol; the connection must then be closed.
        """
        if self.state is _CLOSED:
            return NEED_DATA
        held = self._requests.held.entries
        while True:
            if held or self.bytes_to_send > self.pause_above:
                holding = self._next_holding()
                if holding is None:
                    held = self._requests.held.entries
                    continue
                return holding
            if _decode_plain is None:
                expression: object = self._banana.next_event()
            else:
                # The check is passed, not made: most calls find no bytes to decode.
                expression = self._banana.next_event(self._plain_now, self.decode_budget)
            if expression is NEED_DATA:
                return NEED_DATA
            if isinstance(expression, DialectSelected):
                return self._open(expression.dialect)
            event = self._dispatch(expression)
            if event is not None:
                return event

    def _open(self, dialect: bytes) -> Ready:
        # The banana handshake is over (the client's choice goes out now): the connection is open.
        self._queue_handshake(self._banana.data_to_send())
        self._send([b"version", PROTOCOL_VERSION])
        self.extended = dialect in (EXTENSION_DIALECT, EXTENSION_DIALECT_2)
        if dialect == EXTENSION_DIALECT_2:
            big = self._requests.big
            big.active = True
            self._send([b"limits", big.limit])
        self.state = _OPEN
        return Ready(dialect)

    def _queue_handshake(self, data: bytes) -> None:
        # Banana's own handshake bytes, not a PB message (TracingProtocol tells them apart).
        self._queue(data)

    def _next_holding(self) -> Event | NeedData | Paused | None:
        """One step of :meth:`next_event` while calls are held or output is backed up (None: go on)."""
        # The held calls take at most as many bytes as one message may.
        held = self._requests.holding(self._banana.message_size_limit)
        if held.entries and self.bytes_to_send <= self.pause_above:
            # Room again: the oldest held entry goes first.
            _, function, argument = held.pop()
            return function(argument)
        if held.full:
            return PAUSED
        before = self._banana.buffered
        if _decode_plain is None:
            expression: object = self._banana.next_event()
        else:
            expression = self._banana.next_event(self._plain_now, self.decode_budget)
        if expression is NEED_DATA:
            return PAUSED if held.entries else NEED_DATA
        if isinstance(expression, DialectSelected):
            return self._open(expression.dialect)
        size = before - self._banana.buffered
        command = expression[0] if isinstance(expression, (list, tuple)) and expression else None
        if command == b"message" or command == b"cachemessage":
            # Made into a call now, so that its tokens mean what they mean at
            # arrival; run later.  An error it fails with waits in line too.
            held.deferring = size
            try:
                call = self._dispatch(expression)
            finally:
                held.deferring = 0
            if call is not None:
                assert isinstance(call, IncomingCall)
                held.push(size, self._held_call, call)
                if call.answer_required:
                    held.hold_answer(call.request_id)
            return None
        if (command in _RELEASES and held.entries) or (
            command == b"ping" and self.bytes_to_send > self.pause_above + PONG_RESERVE
        ):
            # A release must not overtake a call held before it (its method
            # may still run on what the release lets go); pongs are small
            # but not free: past the reserve, a ping waits its turn.
            held.push(size, self._dispatch, expression)
            return None
        return self._dispatch(expression)

    def _held_call(self, call: IncomingCall) -> IncomingCall | None:
        """A held call's turn: the call, or (cancelled while it waited) its CancelledByCaller answer."""
        if call.answer_required and self._requests.held.was_cancelled(call.request_id):
            # None of it runs: it never started.
            self.send_cancelled(call.request_id, deadline_passed=False)
            return None
        return call

    def _send_held_error(self, answer: tuple[int, BaseException]) -> None:
        """A held call's error answer (a call that failed before it could run): its turn came."""
        self.send_error(*answer)

    @property
    def held_full(self) -> bool:
        """Whether the held calls have reached their bound: feed no more bytes until they have room."""
        return self._requests.held.full

    @property
    def holding(self) -> bool:
        """Whether calls of the peer (or releases behind them) are held back, waiting for room to send."""
        return bool(self._requests.held.entries)

    @property
    def held_calls(self) -> int:
        """How many of the peer's calls are held back now (counted when asked)."""
        return sum(1 for _, function, _ in self._requests.held.entries if function == self._held_call)

    def _send(self, expression: list[Any]) -> None:
        self._queue(self._banana.send(expression))

    def _send_release(self, expression: list[Any]) -> None:
        """Queue a release (decref, decache, uncache), behind any big message in transit.

        A big message that is still sending its blobs may name what the
        release lets go: the release must not reach the peer first.
        """
        self._queue_in_order(self._banana.send(expression), call=False)

    def _queue_in_order(self, data: bytes, *, call: bool) -> None:
        """Queue *data*, behind the big message in transit it must not overtake if any (BigValues.hold)."""
        big = self._requests.big
        if not (big.outgoing and big.hold(data, call=call)):
            self._queue(data)

    def _queue(self, data: bytes) -> None:
        self.bytes_to_send += len(data)
        outgoing = self._outgoing
        outgoing.append(data)
        if len(outgoing) >= _PACK_AT:
            # A backlog of many small messages (answers a peer does not read)
            # must cost its bytes, not an object each: the small ones at the
            # end are joined into one.  Only a backlog ever gets this long.
            start = len(outgoing)
            while start and len(outgoing[start - 1]) < _PACK_BELOW:
                start -= 1
            if len(outgoing) - start > 1:
                outgoing[start:] = [b"".join(outgoing[start:])]

    # -- incoming expressions -----------------------------------------------

    def _dispatch(self, expression: Any) -> Event | None:
        if type(expression) is not list or not expression or type(expression[0]) is not bytes:
            if type(expression) is tuple:
                # A message or answer of plain data the compiled decoder built from the bytes.
                f = expression
                if f[0] == b"message":
                    return self._message(f[1], f[2], f[3], f[4], f[5], f[6], decoded=True)
                return self._answer(f[1], f[2], decoded=True)
            raise ProtocolError(f"expected a command list, got {expression!r:.100}")
        command = expression[0]
        entry = _COMMANDS.get(command)
        if entry is None and self.extended:
            entry = _EXTENSION_COMMANDS.get(command)
            if entry is None and self._requests.big.active:
                entry = _EXTENSION_2_COMMANDS.get(command)
        if entry is None:
            self._send([b"didNotUnderstand", command])
            self.conduct.violation(
                "unknown command", "sent the unknown command %r; answered didNotUnderstand", command[:100]
            )
            return None
        handler, arity = entry
        if len(expression) - 1 != arity:
            raise ProtocolError(f"{command.decode()} takes {arity} fields, got {len(expression) - 1}")
        event: Event | None = handler(self, *expression[1:])
        return event

    def _version(self, version: Any) -> None:
        if version != PROTOCOL_VERSION:
            raise ProtocolError(f"Version Incompatibility: {PROTOCOL_VERSION} {version!r:.20}")

    def _cachemessage(
        self, request_id: Any, target: Any, name: Any, answer_required: Any, args: Any, kwargs: Any
    ) -> IncomingCall | None:
        return self._message(request_id, target, name, answer_required, args, kwargs, cache=True)

    def _message(
        self,
        request_id: Any,
        target: Any,
        name: Any,
        answer_required: Any,
        args: Any,
        kwargs: Any,
        cache: bool = False,
        decoded: bool = False,
    ) -> IncomingCall | None:
        if type(request_id) is not int or type(answer_required) is not int:
            raise ProtocolError("message with a request id or answer flag that is not an int")
        wants_answer = bool(answer_required)
        requests = self._requests
        time_left = None
        if requests.next_deadline is not None:
            deadline_id, seconds = requests.next_deadline
            requests.next_deadline = None
            if deadline_id == request_id:
                time_left = seconds
        if wants_answer:
            incoming = requests.incoming
            if request_id in incoming:
                raise ProtocolError(f"the peer reused request id {request_id} while its call still runs")
            incoming[request_id] = None
        try:
            # A message that is well framed but cannot be made into a call
            # fails that call (a SerializationError), as Twisted fails it.
            if type(name) is not bytes:
                raise JellyError(f"method name is not bytes: {name!r:.100}")
            try:
                method_name = name.decode("utf-8")
            except UnicodeDecodeError:
                raise JellyError(f"method name is not UTF-8: {name!r:.100}") from None
            if cache:
                obj = self.locally_cached.get(target) if type(target) is int else None
                if obj is None:
                    raise Error(f"Invalid cache ID {target!r:.20}")
            else:
                local = self.local_objects.get(target) if type(target) in (int, bytes) else None
                if local is None:
                    raise Error("Invalid Object ID")
                obj = local.obj
            if decoded:
                # Unjellied already, straight from the bytes (only ever plain data).
                call_args, call_kwargs = args, kwargs
            else:
                plain = self._plain_tags
                call_args = _simple_args(args) if plain else None
                if call_args is None:
                    call_args = self.unjelly(args)
                call_kwargs = {} if plain and kwargs == [b"dictionary"] else self.unjelly(kwargs)
            if type(call_args) is not tuple or type(call_kwargs) is not dict:
                raise JellyError("call arguments must be a tuple and a dict")
            if any(type(key) is not str for key in call_kwargs):
                call_kwargs = _keyword_names(call_kwargs)
            method = obj.resolve_remote_method(method_name)
        except (Error, SerializationError, AttributeError) as exc:
            # One call's problem; a ProtocolError (a decode budget spent, too
            # many violations) passes and ends the connection.
            if wants_answer:
                held = self._requests.held
                if held.deferring:
                    held.push(held.deferring, self._send_held_error, (request_id, exc))
                else:
                    self.send_error(request_id, exc)
                if isinstance(exc, AttributeError):
                    # As Twisted does, a call of a method that does not exist
                    # is logged as an unexpected failure (NoSuchMethod is no
                    # Error).  Without its traceback (only the lookup's, sent
                    # already if unsafe): a kept log record would otherwise
                    # keep the call's arguments, references included, alive.
                    self.conduct.warning(
                        "method raised",
                        "remote call of %r failed; the peer receives the error",
                        method_name,
                        level=logging.ERROR,
                        exc_info=exc.with_traceback(None),
                    )
            else:
                self.conduct.warning("failed call", "a call with no answer failed: %r", exc)
            return None
        perspective = getattr(obj, "answer_perspective", None)
        return _incoming_call(
            request_id,
            wants_answer,
            method,
            call_args,
            call_kwargs,
            perspective,
            method_name,
            target if cache else None,
            time_left,
        )

    def _answer(self, request_id: Any, result: Any, decoded: bool = False) -> Answer | Failed | None:
        try:
            # One dict operation on the hot path (an int, checked after: a
            # float or bool equal to an id must not pass for it).
            del self._requests.waiting[request_id]
            waited = type(request_id) is int
        except (KeyError, TypeError):
            waited = False
        if waited:
            # An atom needs no unjelly, nor a value the compiled decoder built.
            if type(result) is not list or decoded:
                return _answer_event(request_id, result)
        elif not self._late_answer(request_id):
            if type(result) is list and not decoded:
                # Unjellied all the same: the references it carries are released.
                with contextlib.suppress(JellyError):
                    self.unjelly(result)
            return None
        try:
            return Answer(request_id, self.unjelly(result))
        except JellyError as exc:
            return Failed(request_id, exc)

    def _plain_now(self) -> bool:
        """Whether the compiled decoder may build plain data itself (the tags have their default meaning)."""
        return _plain_data(self.security, self.registry)

    @property
    def _plain_tags(self) -> bool:
        # Whether tuple and dictionary mean what they always mean here (no
        # registry took them over, the security options allow them).
        return (
            b"tuple" not in self.registry
            and b"dictionary" not in self.registry
            and self.security.is_type_allowed(b"tuple")
            and self.security.is_type_allowed(b"dictionary")
        )

    def _error(self, request_id: Any, payload: Any) -> Failed | None:
        wanted = self._expected_answer(request_id)
        try:
            event = Failed(request_id, failures.to_exception(self.unjelly(payload)))
        except JellyError as exc:
            event = Failed(request_id, exc)
        return event if wanted else None

    def _expected_answer(self, request_id: Any) -> bool:
        """Whether an answer to *request_id* is for a caller who waits (it then no longer waits)."""
        requests = self._requests
        if type(request_id) is int:
            waiting = requests.waiting
            if request_id in waiting:
                del waiting[request_id]
                return True
            # An error may answer a ping too (a peer that cannot pong says why).
            pings = requests.pings
            if pings and request_id in pings:
                del pings[request_id]
                return True
        return self._late_answer(request_id)

    def _late_answer(self, request_id: Any) -> bool:
        """Sort out an answer to a call nobody waits for: always False (it makes no event), or raises."""
        if type(request_id) is not int or not 0 < request_id < self._next_request_id:
            raise ProtocolError(f"answer to a request never sent: {request_id!r:.20}")
        requests = self._requests
        abandoned = requests.abandoned
        if abandoned and request_id in abandoned:
            del abandoned[request_id]  # the late answer to a call we stopped waiting for
        elif self.state is _CLOSED:
            pass  # our calls were failed already
        elif request_id <= requests.given_up_to:
            self.conduct.warning(
                "late answer",
                "dropped the answer to request %d, given up (or answered already)",
                request_id,
                level=logging.DEBUG,
            )
        else:
            self.conduct.violation(
                "answered twice",
                "the peer answered request %d, which was answered already or wanted no answer",
                request_id,
            )
        return False

    def abandon(self, request_id: int) -> None:
        """Stop waiting for the answer to our call *request_id*: when it comes, it makes no event.

        Raises :class:`~trio_pb.errors.LocalProtocolError` if no answer to
        *request_id* is awaited (a no-op once the connection is closed).
        """
        requests = self._requests
        pings = requests.pings
        if request_id in requests.waiting:
            del requests.waiting[request_id]
        elif pings and request_id in pings:
            del pings[request_id]
        elif self.state is _CLOSED:
            return
        else:
            raise LocalProtocolError(f"no answer to request {request_id} is awaited")
        abandoned = requests.abandoned
        if abandoned is None:
            abandoned = requests.abandoned = {}
        abandoned[request_id] = None
        if len(abandoned) > MAX_ABANDONED:
            # A peer that never answers (a Deferred that never fires) must
            # not grow this forever: the oldest is given up.  From now on an
            # answer to an id up to the highest given up cannot be told from
            # a repeated answer, and is dropped with a debug line either way.
            oldest = next(iter(abandoned))
            del abandoned[oldest]
            if not requests.given_up_to:
                self.conduct.warning(
                    "given up",
                    "%d calls that were cancelled here are still unanswered; the oldest are given up, "
                    "and their answers, should they come, are dropped",
                    MAX_ABANDONED,
                )
            requests.given_up_to = max(requests.given_up_to, oldest)

    @property
    def abandoned_calls(self) -> int:
        """How many of our calls nobody waits for any more still have their answer due."""
        return len(self._requests.abandoned or ())

    def _refuse(self, what: str) -> LocalProtocolError:
        if self.state is _HANDSHAKE:
            return LocalProtocolError(f"cannot {what} before the handshake is over")
        return LocalProtocolError(f"cannot {what}: the connection is closed")

    def _decref(self, luid: Any) -> None:
        local = self.local_objects.get(luid) if type(luid) is int else None
        if local is None:
            # Twisted drops the connection at once; a few stray decrefs harm nobody.
            self.conduct.violation("stray release", "released an unknown reference %r", _short(luid))
            return
        local.refcount -= 1
        if local.refcount <= 0:
            self._forget(luid, local)

    def _decache(self, luid: Any) -> None:
        entry = self.remotely_cached.get(luid) if type(luid) is int else None
        if entry is None:
            self.conduct.violation("stray release", "released an unknown cached object %r", _short(luid))
            return
        entry.count -= 1
        if entry.count <= 0:
            self._stop_observing(luid, entry)
            self._send_release([b"uncache", luid])

    def _uncache(self, luid: Any) -> None:
        if type(luid) is not int:
            # No cached object has such a luid: a stray release, as for decref and decache.
            self.conduct.violation("stray release", "uncached an unknown cached object %r", _short(luid))
            return
        unwanted = self._unwanted_uncaches
        if self.locally_cached.pop(luid, None) is None and (unwanted is None or luid not in unwanted):
            self.conduct.violation("stray release", "uncached an unknown cached object %r", _short(luid))
        if unwanted is not None:
            unwanted.discard(luid)
        self.driver.cache_ended(luid)

    def _cancel(self, request_id: Any) -> CancelRequested | None:
        if type(request_id) is not int:
            raise ProtocolError(f"cancel of a request id that is not an int: {request_id!r:.20}")
        requests = self._requests
        if requests.held.cancel(request_id):
            return None  # answered as cancelled when its turn comes
        # A cancel of a call answered already crossed its answer: nothing is left to cancel.
        return CancelRequested(request_id) if request_id in requests.incoming else None

    def _deadline(self, request_id: Any, seconds: Any) -> None:
        if type(request_id) is not int or type(seconds) not in (int, float) or not 0 <= seconds < math.inf:
            raise ProtocolError(f"malformed deadline: {request_id!r:.20}, {seconds!r:.20}")
        self._requests.next_deadline = (request_id, float(seconds))

    def _limits(self, max_value_size: Any) -> None:
        if type(max_value_size) is not int or max_value_size < 0:
            raise ProtocolError(f"malformed limits: {max_value_size!r:.20}")
        big = self._requests.big
        # The peer's limit is most often our own: then the one int object serves (32 bytes a connection).
        big.peer_limit = big.limit if max_value_size == big.limit else max_value_size

    def _blob(self, blob_id: Any, size: Any) -> None:
        self._requests.big.announced(blob_id, size)

    def _chunk(self, blob_id: Any, data: Any) -> None:
        self._requests.big.chunk(blob_id, data)

    def _dropblobs(self, blob_ids: Any) -> None:
        self._requests.big.drop(blob_ids)

    def _withblobs(self, blob_ids: Any, command: Any) -> Event | None:
        command = self._requests.big.claim(blob_ids, command)
        if not command or type(command[0]) is not bytes or command[0] not in _CARRY_BLOBS:
            raise ProtocolError(f"withblobs around a command that cannot carry blobs: {command[:1]!r:.40}")
        return self._dispatch(command)

    def _stream(self, window: Any, command: Any) -> StreamRequested | None:
        if type(window) is not int or window <= 0:
            raise ProtocolError(f"stream with a window that is not a positive int: {window!r:.20}")
        if type(command) is not list or len(command) != 7 or command[0] != b"message" or command[4] != 1:
            raise ProtocolError(
                f"stream around something other than a call that wants its answer: {command!r:.60}"
            )
        call = self._message(*command[1:])
        if call is None:
            return None  # it cannot be called: its error answer is queued (or held)
        self._requests.producing().opened(call.request_id, window)
        return StreamRequested(call, window)

    def _credit(self, request_id: Any, count: Any) -> CreditGranted | None:
        if self._requests.producing().granted(request_id, count):
            return CreditGranted(request_id)
        return None

    def _item(self, request_id: Any, value: Any) -> StreamItem | None:
        requests = self._requests
        if type(request_id) is int and request_id in requests.waiting:
            if type(value) is not list:
                return StreamItem(request_id, value)
            try:
                return StreamItem(request_id, self.unjelly(value))
            except JellyError as exc:
                return StreamItem(request_id, None, exc)
        abandoned = requests.abandoned
        if type(request_id) is int and abandoned and request_id in abandoned:
            # An item of a stream we closed, crossing our cancel: its references are released.
            if type(value) is list:
                with contextlib.suppress(JellyError):
                    self.unjelly(value)
            return None
        if self.state is not _CLOSED:
            self.conduct.violation("stray item", "sent an item of no open stream: %r", _short(request_id))
        return None

    # -- remote streams (trio-pb-2) -------------------------------------------

    def send_stream_call(
        self,
        target: int | bytes,
        name: str,
        args: Any,
        kwargs: Any,
        window: int,
        time_left: float | None = None,
    ) -> int:
        """Queue a call of *name* as a stream granting *window* items of credit; return its request id.

        Its items come as :class:`StreamItem` events, its end as the call's
        :class:`Answer` (or :class:`Failed`).  Raises
        :class:`~trio_pb.errors.StreamsUnsupported` toward a peer without
        ``trio-pb-2``, sending nothing.
        """
        if self.state is not _OPEN:
            raise self._refuse("open a stream")
        if not self._requests.big.active:
            raise StreamsUnsupported(
                f"cannot open a stream of {name!r}: the peer (dialect {self.dialect!r}) does not speak "
                "trio-pb-2, which remote streams need (Twisted PB has no streams)"
            )
        if type(window) is not int or window <= 0:
            raise ValueError(f"a stream window must be a positive int, not {window!r}")
        request_id = self._next_request_id
        with self._sending():
            message = [
                b"message",
                request_id,
                target,
                name.encode("utf-8"),
                1,
                jelly(tuple(args), security=self.security, invoker=self),
                jelly(dict(kwargs), security=self.security, invoker=self),
            ]
            data = self._banana.send([b"stream", window, message])
        if time_left is not None:
            self._queue(self._banana.send([b"deadline", request_id, max(0.0, float(time_left))]))
        self._queue(data)
        self._next_request_id += 1
        self._requests.waiting[request_id] = None
        return request_id

    def send_credit(self, request_id: int, count: int) -> None:
        """Grant the producer of our stream *request_id* *count* more items (nothing once it ended)."""
        if self.state is _OPEN and request_id in self._requests.waiting:
            self._send([b"credit", request_id, count])

    def take_credit(self, request_id: int) -> bool:
        """Spend one credit of the stream *request_id* we produce: False if it has none (wait for a grant)."""
        streams = self._requests.streams
        return streams is not None and streams.take(request_id)

    def send_item(self, request_id: int, value: Any, perspective: Any = None) -> None:
        """Queue the next item of the stream *request_id* we produce (after :meth:`take_credit`).

        Raises :class:`~trio_pb.errors.LocalProtocolError` unless that
        stream is still open, or a :class:`~trio_pb.errors.SerializationError`
        if *value* cannot be sent (then nothing is).
        """
        if request_id not in self._requests.incoming:
            raise self._no_answer_due(request_id)
        if type(value) in _ATOMS:
            data = self._banana.send([b"item", request_id, value])
        else:
            with self._sending(perspective, answer=True):
                data = self._banana.send(
                    [b"item", request_id, jelly(value, security=self.security, invoker=self)]
                )
        self._queue(data)

    def stream_done(self, request_id: int) -> None:
        """The stream *request_id* we produce is over (ended, failed or closed): forget its credit."""
        streams = self._requests.streams
        if streams is not None:
            streams.closed(request_id)

    def send_ping(self) -> int:
        """Queue a ping by the best route the peer has, and return the request id its answer takes.

        To an extended peer, a ``ping`` its protocol answers with a ``pong``
        (an :class:`Answer`); to any other, a call to an object that does not
        exist, which any PB peer answers with an error (a :class:`Failed`),
        and does not log.
        """
        if not self.extended:
            return self.send_call(_PING_TARGET, "ping", (), {})
        if self.state is not _OPEN:
            raise self._refuse("ping")
        request_id = self._next_request_id
        self._next_request_id += 1
        self._send([b"ping", request_id])
        requests = self._requests
        if requests.pings is None:
            requests.pings = {}
        requests.pings[request_id] = None
        return request_id

    def _ping(self, request_id: Any) -> None:
        if type(request_id) is not int:
            raise ProtocolError(f"ping with a request id that is not an int: {request_id!r:.20}")
        self._send([b"pong", request_id])

    def _pong(self, request_id: Any) -> Answer | None:
        pings = self._requests.pings
        if type(request_id) is int and pings and request_id in pings:
            del pings[request_id]
            return Answer(request_id, None)
        self._late_answer(request_id)  # a pong for a call, or a repeated one: no event
        return None

    def send_cancel(self, request_id: int) -> None:
        """Tell an extended peer we stopped waiting for *request_id* (a no-op toward Twisted)."""
        if self.extended and self.state is _OPEN:
            big = self._requests.big
            taken = big.take_back(request_id) if big.outgoing else None
            if taken is None:
                self._send([b"cancel", request_id])
                return
            # A call still sending its blobs is taken back: the rest of them
            # and its message are never sent, so nothing runs and no answer
            # comes; the peer forgets the blobs it has of it.
            announced, held_behind = taken
            requests = self._requests
            if requests.abandoned is not None:
                requests.abandoned.pop(request_id, None)
            if announced:
                self._send([b"dropblobs", announced])
            for data in held_behind:
                self._queue_in_order(data, call=False)  # releases: behind what is still in transit

    def _did_not_understand(self, command: Any) -> None:
        self.conduct.warning("not understood", "did not understand our command %r", _short(command))

    # -- references ------------------------------------------------------------

    def set_name_for_local(self, name: bytes | str, obj: Any) -> None:
        """Make *obj* callable by the peer under *name* (``b"root"`` for the root; a str is sent as UTF-8)."""
        self.local_objects[name.encode("utf-8") if isinstance(name, str) else name] = _Local(obj, 0, None)

    def register_reference(self, obj: Any) -> int:
        """The luid of *obj* for one more ``remote`` token (jelly's hook for Referenceables)."""
        puid = obj.process_unique_id()
        luid = self._luids.get(puid)
        if luid is not None:
            self.local_objects[luid].refcount += 1
        else:
            self._check_quota(len(self.local_objects))
            luid = self._new_luid()
            self._luids[puid] = luid
            self.local_objects[luid] = _Local(obj, 1, puid)
        if self._registered is not None:
            self._registered.append((False, luid))
        return luid

    def _new_luid(self) -> int:
        # One counter for references and caches, never reused (docs/protocol.rst, "PB messages").
        luid = self._next_luid
        self._next_luid += 1
        return luid

    def _check_quota(self, size: int, what: str = "reference") -> None:
        # Twisted's rule: refuse while more than the maximum are held (names count),
        # and give up on a peer that keeps trying.
        if size > self.max_references:
            # Only the peer's requests count towards the goodbye; our own
            # calls just fail.
            if self.serializing_answer:
                limit = self.max_references
                self.conduct.warning("reference quota", "asked for references past the limit of %d", limit)
                if self.conduct.count("reference quota") > 3:
                    raise _Goodbye(f"Maximum PB {what} count exceeded.  Goodbye.")
            raise Error(f"Maximum PB {what} count exceeded.")

    def jelly_cacheable(self, cacheable: Any, jellier: Any) -> Any:
        """Jelly's hook for Cacheables: the full state the first time, ``cached`` after."""
        luid = self._cache_luids.get(id(cacheable))
        if luid is not None:
            self.remotely_cached[luid].count += 1
            if self._registered is not None:
                self._registered.append((True, luid))
            return [b"cached", luid]

        def first_copy() -> list[Any]:
            self._check_quota(len(self.remotely_cached), "cache")
            perspective = self.serializing_perspective
            new_luid = self._new_luid()
            observer = self.driver.make_cache_observer(cacheable, perspective)
            if not isinstance(self._cache_luids, dict):
                self._cache_luids = {}
            self._cache_luids[id(cacheable)] = new_luid
            self.remotely_cached[new_luid] = _CacheEntry(cacheable, perspective, observer, 1)
            if self._registered is not None:
                self._registered.append((True, new_luid))
            observers_of(cacheable).add(observer)
            tag = cacheable.get_type_to_copy_for(perspective)
            state = cacheable.get_state_to_cache_and_observe_for(perspective, observer)
            return [tag, new_luid, jellier.jelly(state)]

        return jellier.jelly_shared(cacheable, first_copy)

    def table_sizes(self) -> TableSizes:
        """How much the object and cache tables hold now (counted when asked: nothing per call)."""
        exported = [local.refcount for luid, local in self.local_objects.items() if type(luid) is int]
        return TableSizes(
            objects_exported=len(exported),
            export_references=sum(exported),
            caches_exported=len(self.remotely_cached),
            caches_imported=len(self.locally_cached),
        )

    def cache_luid(self, cacheable: Any) -> int | None:
        """The luid under which the peer holds copies of *cacheable*, if it does."""
        return self._cache_luids.get(id(cacheable))

    def _stop_observing(self, luid: int, entry: _CacheEntry, *, peer_has_it: bool = True) -> None:
        """Run the Cacheable's ``stopped_observing`` hook and forget the peer's copy.

        As in Twisted, the hook runs while the peer still has its copy, so a
        last message to the observer goes out (before the ``uncache`` that
        :meth:`_decache` sends next).  *peer_has_it* is false for a copy that
        never left: it is forgotten first, so the hook cannot address it.
        """
        if not peer_has_it:
            self._forget_cache(luid, entry)
        observers_of(entry.cacheable).discard(entry.observer)
        try:
            entry.cacheable.stopped_observing(entry.perspective, entry.observer)
        except DeadReferenceError as exc:
            if not self.closed:
                log.exception("stopped_observing of %r failed", entry.cacheable)
            else:
                # A goodbye to a peer that is gone: refused, as it must be, and no fault of the hook.
                log.debug("stopped_observing of %r could not reach the lost peer: %s", entry.cacheable, exc)
        except Exception:
            log.exception("stopped_observing of %r failed", entry.cacheable)
        if peer_has_it:
            self._forget_cache(luid, entry)

    def _forget_cache(self, luid: int, entry: _CacheEntry) -> None:
        # Only this entry's keys: the hook may have run code that touched the tables.
        if self.remotely_cached.get(luid) is entry:
            del self.remotely_cached[luid]
        if self._cache_luids.get(id(entry.cacheable)) == luid:
            assert isinstance(self._cache_luids, dict)  # it holds the entry
            del self._cache_luids[id(entry.cacheable)]

    def unjelly_cache(self, cls: Any, unjellier: Unjellier, sexp: list[Any]) -> Any:
        """Jelly's hook for a Cacheable's first copy: ``[tag, luid, state]``."""
        luid = sexp[1]
        if type(luid) is not int or luid in self.locally_cached:
            raise JellyError(f"a cached object with a bad or reused luid: {luid!r:.20}")
        if len(self.locally_cached) >= self.max_references:
            raise JellyError(f"the peer sent more than {self.max_references} cached objects")
        master = cls.__new__(cls)
        self.locally_cached[luid] = master
        if self._dropped_masters is None:
            self._dropped_masters = []
        self._dropped_masters.append(luid)
        proxy, token = self.driver.make_cache_proxy(master, luid)
        if self._made is not None:
            self._made.append(token)
        proxy.__init__()
        unjellier.when_ready(unjellier.unjelly(sexp[2]), proxy.set_copyable_state)
        return proxy

    def on_release(self, obj: Any, callback: Any) -> None:
        """Call ``callback()`` once the peer has released every reference to *obj*."""
        if self._release_callbacks is None:
            self._release_callbacks = {}
        self._release_callbacks.setdefault(obj.process_unique_id(), []).append(callback)

    def _forget(self, luid: int, local: _Local) -> None:
        del self.local_objects[luid]
        del self._luids[local.puid]
        for callback in self._release_callbacks.pop(local.puid, ()) if self._release_callbacks else ():
            # User code: its failure must not stop the decref, or the
            # cleanup of a lost connection, half-way.
            try:
                callback()
            except Exception:
                log.exception("release callback %r failed", callback)

    def unjelly_pb_tag(self, unjellier: Unjellier, sexp: list[Any]) -> Any:
        """Jelly's hook for ``remote`` and ``local`` tokens."""
        tag = sexp[0]
        if len(sexp) != 2 or type(sexp[1]) is not int:
            if tag == b"local" and len(sexp) == 2 and type(sexp[1]) is bytes:
                # A reference the peer got by name (the root, remote_for_name)
                # comes back under that name; names are never counted.
                named = self.local_objects.get(sexp[1])
                return named.obj if named is not None else None
            raise JellyError(f"{tag.decode()} takes one int luid: {sexp!r:.100}")
        luid = sexp[1]
        if tag == b"remote":
            reference = self.driver.make_reference(luid)
            if self._made is not None:
                self._made.append(reference)
            return reference
        if tag == b"local":
            local = self.local_objects.get(luid)
            return local.obj if local is not None else None
        if tag == b"cached":
            master = self.locally_cached.get(luid)
            if master is None:
                raise JellyError(f"cached token for unknown luid {luid}")
            proxy, token = self.driver.make_cache_proxy(master, luid)
            if self._made is not None:
                self._made.append(token)
            return proxy
        entry = self.remotely_cached.get(luid)  # lcache
        if entry is None:
            raise JellyError(f"lcache token for unknown luid {luid}")
        return entry.cacheable

    def unjelly(self, sexp: Any) -> Any:
        """Unjelly what the peer sent; if that fails, give back every token it carried.

        The peer counted one reference (or cached copy) per token it sent, so
        a message we cannot unjelly must still be answered with exactly one
        ``decref``/``decache`` per token, or the peer would keep those objects
        until the connection ends.
        """
        if _unjelly_plain is not None and type(sexp) is list and _plain_data(self.security, self.registry):
            # Plain data (no tokens to give back) in one walk in C; anything else declines.
            value = _unjelly_plain(sexp, DEPTH_LIMIT, self.decode_budget)
            if value is not NotImplemented:
                return value
        self._made = []
        try:
            unjellier = Unjellier(self.security, self.registry, self, hash_budget=self.decode_budget)
            return unjellier.unjelly_top(sexp)
        except JellyError:
            for made in self._made:
                made.disown()
            for luid in self._dropped_masters or ():
                self.locally_cached.pop(luid, None)
            self._give_back_tokens(sexp)
            raise
        finally:
            self._made = None
            self._dropped_masters = None

    def _give_back_tokens(self, sexp: Any) -> None:
        stack = [sexp]
        while stack:
            node = stack.pop()
            if type(node) is not list or not node:
                continue
            tag = node[0]
            if tag == b"dictionary":
                # Entries are [key, value] pairs, not tagged nodes.
                for pair in node[1:]:
                    if type(pair) is list:
                        stack.extend(pair)
            elif len(node) == 2 and type(node[1]) is int and tag in (b"remote", b"cached"):
                self._send_release([b"decref" if tag == b"remote" else b"decache", node[1]])
            elif (
                len(node) == 3 and type(tag) is bytes and type(node[1]) is int and tag not in _NOT_CACHE_TAGS
            ):
                # [tag, luid, state]: the first copy of a Cacheable.  An honest
                # peer answers each decache with an uncache soon; past the
                # bound (a peer that lets them pile up) a copy is neither
                # given back nor remembered: the peer keeps it until the end.
                if self._unwanted_uncaches is None:
                    self._unwanted_uncaches = set()
                if len(self._unwanted_uncaches) < MAX_UNANSWERED_DECACHES:
                    self._unwanted_uncaches.add(node[1])
                    self._send_release([b"decache", node[1]])
                stack.append(node[2])
            else:
                stack.extend(node[1:])

    @contextmanager
    def _sending(self, perspective: Any = None, *, answer: bool = False) -> Iterator[None]:
        """Jelly and encode one message: on failure, undo the references it registered."""
        self._registered = []
        self.serializing_perspective = perspective
        self.serializing_answer = answer
        try:
            yield
        except BaseException:
            for is_cache, luid in self._registered:
                if is_cache:
                    self._undo_cache(luid)
                else:
                    self._decref(luid)
            raise
        finally:
            self._registered = None
            self.serializing_perspective = None
            self.serializing_answer = False

    # -- outgoing messages ----------------------------------------------------

    def send_call(
        self,
        target: int | bytes,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        answer_required: bool = True,
        command: bytes = b"message",
        time_left: float | None = None,
    ) -> int:
        """Queue a call and return its request id; raises if it cannot be sent, sending nothing.

        *time_left*: the seconds before the caller's deadline, which an
        extended peer is told so that its method is cancelled by then too.
        Raises :class:`~trio_pb.errors.LocalProtocolError` unless the state is
        OPEN.  With *answer_required*, the answer is awaited until it comes
        (an :class:`Answer` or :class:`Failed` event) or :meth:`abandon`.
        """
        if self.state is not _OPEN:
            raise self._refuse("send a call")
        request_id = self._next_request_id
        try:
            if (
                _encode_message is not None
                and (
                    plain := _encode_message(
                        self._banana.encoder,
                        (command, request_id, target, name.encode("utf-8"), int(answer_required)),
                        (args if type(args) is tuple else tuple(args), kwargs),
                    )
                )
                is not None
            ):
                # The compiled codec took it: plain data, the same bytes as jelly and banana make.
                data = plain
            elif not kwargs and all(type(arg) in _ATOMS for arg in args):
                # The commonest call, atoms only: what jelly would make, without a Jellier.
                data = self._banana.send(
                    [
                        command,
                        request_id,
                        target,
                        name.encode("utf-8"),
                        int(answer_required),
                        [b"tuple", *args],
                        [b"dictionary"],
                    ]
                )
            else:
                with self._sending():
                    message = [
                        command,
                        request_id,
                        target,
                        name.encode("utf-8"),
                        int(answer_required),
                        jelly(tuple(args), security=self.security, invoker=self),
                        jelly(dict(kwargs), security=self.security, invoker=self),
                    ]
                    data = self._banana.send(message)
        except BananaEncodeError as exc:
            # Strings too big for banana: in chunks under trio-pb-2 (the rare path).
            fields = (command, request_id, target, name, answer_required, args, kwargs)
            self._call_with_blobs(exc, fields, None if time_left is None else (request_id, time_left))
        else:
            if time_left is not None and self.extended:
                # Right before its call, so that nothing can come between the two.
                data = self._banana.send([b"deadline", request_id, max(0.0, float(time_left))]) + data
            # _queue_in_order(data, call=True), inline: every call goes this way.
            big = self._requests.big
            if not (big.outgoing and big.hold(data, call=True)):
                self._queue(data)
        self._next_request_id += 1
        if answer_required:
            self._requests.waiting[request_id] = None
        return request_id

    def _call_with_blobs(self, problem: BananaEncodeError, fields: Any, deadline: Any) -> None:
        # Apart from send_call: a closure there would make its variables cells, slower on every call.
        command, request_id, target, name, answer_required, args, kwargs = fields
        self._send_with_blobs(
            problem,
            lambda: [
                command,
                request_id,
                target,
                name.encode("utf-8"),
                int(answer_required),
                jelly(tuple(args), security=self.security, invoker=self),
                jelly(dict(kwargs), security=self.security, invoker=self),
            ],
            deadline,
            in_order=not answer_required,
        )

    def _answer_with_blobs(
        self, problem: BananaEncodeError, request_id: int, result: Any, perspective: Any
    ) -> None:
        self._send_with_blobs(
            problem,
            lambda: [b"answer", request_id, jelly(result, security=self.security, invoker=self)],
            None,
            perspective=perspective,
            answer=True,
        )

    def _send_with_blobs(
        self,
        problem: BananaEncodeError,
        build: Any,
        deadline: tuple[int, float] | None,
        *,
        perspective: Any = None,
        answer: bool = False,
        in_order: bool = False,
    ) -> None:
        """Queue the message *build()* makes with its big strings as blobs, or raise as banana did.

        Toward a peer without trio-pb-2, *problem* is raised, saying why.
        The message (after its ``deadline``, if any) goes out once its
        blobs have, a chunk at a time, as :meth:`pump_blob` is called;
        *in_order* (a call that wants no answer): later calls wait for it.
        """
        big = self._requests.big
        if not big.active:
            if "cannot send a string" in str(problem):
                raise BananaEncodeError(
                    f"{problem}: the peer (dialect {self.dialect!r}) does not speak trio-pb-2, under which "
                    "bigger strings (up to max_value_size) travel in chunks"
                ) from None
            raise problem
        with self._sending(perspective, answer=answer):
            message = build()
            blobs = big.extract(message)
            data = self._banana.send([b"withblobs", [blob_id for blob_id, _ in blobs], message])
        request_id = None
        if deadline is not None:
            request_id, time_left = deadline
            data = self._banana.send([b"deadline", request_id, max(0.0, float(time_left))]) + data
        elif not answer:
            request_id = message[1]
        big.push(blobs, data, request_id, in_order=in_order)
        self.driver.blobs_queued()

    @property
    def blobs_pending(self) -> bool:
        """Whether blobs (or the messages waiting for them) remain to be queued by :meth:`pump_blob`."""
        return bool(self._requests.big.outgoing)

    def pump_blob(self) -> bool:
        """Queue the next chunk of the blobs being sent (or the message they complete): whether there was one.

        The driver calls it when the rest of the output is out, so that a
        big value never holds up the messages sent after it for more than
        one chunk.
        """
        if self.state is not _OPEN:
            return False
        data = self._requests.big.next_piece(self._banana.send)
        if data is None:
            return False
        self._queue(data)
        return True

    def send_answer(self, request_id: int, result: Any, perspective: Any = None) -> None:
        """Queue the answer to an incoming call; a result that cannot be sent becomes an error.

        Raises :class:`~trio_pb.errors.LocalProtocolError`, sending nothing,
        unless the peer's request *request_id* awaits an answer.
        """
        try:
            del self._requests.incoming[request_id]
        except KeyError:
            raise self._no_answer_due(request_id) from None
        try:
            if (
                _encode_message is not None
                and (plain := _encode_message(self._banana.encoder, (b"answer", request_id), (result,)))
                is not None
            ):
                data = plain
            elif type(result) in _ATOMS:
                # An atom is its own jelly: no Jellier needed.
                data = self._banana.send([b"answer", request_id, result])
            else:
                if type(result) is types.AsyncGeneratorType:
                    # Jelly would send it as an Unpersistable: say what it is instead.
                    raise SerializationError(
                        "the method is an async generator, a remote stream: consume it with "
                        "RemoteReference.stream(), not a plain call"
                    )
                with self._sending(perspective, answer=True):
                    data = self._banana.send(
                        [b"answer", request_id, jelly(result, security=self.security, invoker=self)]
                    )
        except ProtocolError as exc:
            if isinstance(exc, _Goodbye):
                # Twisted's last word: the caller is told why, then the connection closes.
                self._send_error(request_id, Error(str(exc)))
            raise
        except BananaEncodeError as exc:
            try:
                self._answer_with_blobs(exc, request_id, result, perspective)
            except SerializationError as problem:
                self.conduct.warning(
                    "unsendable answer", "cannot send the answer to request %d: %s", request_id, problem
                )
                self._send_error(request_id, problem)
            return
        except SerializationError as exc:
            self.conduct.warning(
                "unsendable answer", "cannot send the answer to request %d: %s", request_id, exc
            )
            self._send_error(request_id, exc)
            return
        except Exception as exc:
            # A Copyable's state hook failed, a quota was hit...: the caller gets the error.
            self.conduct.warning(
                "unsendable answer", "cannot send the answer to request %d: %r", request_id, exc
            )
            self._send_error(request_id, exc)
            return
        self._queue(data)

    def send_error(self, request_id: int, exc: BaseException) -> None:
        """Queue an error answer: *exc* itself when it can cross as itself, else its CopyableFailure state.

        As in Twisted, an exception that is :class:`~trio_pb.jelly.Jellyable`
        (a Copyable error, say) or whose class the security options allow is
        jellied as it is, so that the peer can rebuild that class.  If that
        fails, the caller still gets an answer: the CopyableFailure.

        Raises :class:`~trio_pb.errors.LocalProtocolError`, sending nothing,
        unless the peer's request *request_id* awaits an answer.
        """
        try:
            del self._requests.incoming[request_id]
        except KeyError:
            raise self._no_answer_due(request_id) from None
        self._send_error(request_id, exc)

    def send_cancelled(self, request_id: int, *, deadline_passed: bool) -> None:
        """Answer the peer's request *request_id*, whose method was cancelled, with CancelledByCaller.

        The peer cancelled the call (*deadline_passed* false) or its deadline
        passed; either way this answer lets it forget the request id.
        """
        if deadline_passed:
            error = CancelledByCaller("the caller's deadline passed")
        else:
            error = CancelledByCaller("the caller cancelled the call")
        self.send_error(request_id, error)

    def _no_answer_due(self, request_id: int) -> LocalProtocolError:
        if self.state is not _OPEN:
            return self._refuse("answer")
        return LocalProtocolError(
            f"request {request_id!r:.20} awaits no answer: never received, wanting none, or answered already"
        )

    def _send_error(self, request_id: int, exc: BaseException) -> None:
        """Queue the error answer to *request_id*, already taken off the requests that await one."""
        if isinstance(exc, Jellyable) or self.security.is_class_allowed(type(exc)):
            try:
                with self._sending():
                    data = self._banana.send(
                        [b"error", request_id, jelly(exc, security=self.security, invoker=self)]
                    )
            except Exception as problem:
                self.conduct.warning(
                    "unsendable error",
                    "cannot send %r as itself (%r); sending it as a CopyableFailure",
                    exc,
                    problem,
                )
            else:
                self._queue(data)
                return
        state = failures.failure_state(exc, unsafe_tracebacks=self.unsafe_tracebacks)
        payload = [failures.COPYABLE_FAILURE_TAG, jelly(state, security=self.security)]
        self._send([b"error", request_id, payload])

    def _undo_cache(self, luid: int) -> None:
        # A copy that never left: forget it without telling the peer.
        entry = self.remotely_cached.get(luid)
        if entry is not None:
            entry.count -= 1
            if entry.count <= 0:
                self._stop_observing(luid, entry, peer_has_it=False)

    def send_decache(self, luid: int) -> None:
        """Queue the release of one copy of a cached object the peer gave us."""
        if self.state is not _CLOSED:
            self._send_release([b"decache", luid])

    def send_decref(self, luid: int | bytes) -> None:
        """Queue the release of one token of a reference the peer gave us."""
        if self.state is not _CLOSED and type(luid) is int:
            self._send_release([b"decref", luid])

    def connection_lost(self) -> None:
        """Forget everything the peer held: it is gone."""
        self.state = _CLOSED
        big = self._requests.big
        big.lost()
        self._requests = _Requests(self._requests.max_held, big)
        for luid, local in list(self.local_objects.items()):
            if type(luid) is int:
                self._forget(luid, local)
        self.local_objects.clear()
        for luid, entry in list(self.remotely_cached.items()):
            self._stop_observing(luid, entry)
        self.locally_cached.clear()


class TracingProtocol(PBProtocol):
    """A :class:`PBProtocol` that calls *trace* with a :class:`~trio_pb.trace.TraceEvent` per message.

    The broker makes one instead of a PBProtocol when given the ``trace``
    option, so that a connection without it makes no check per message.
    Every message queued for the peer is decoded back from its bytes, and
    every message from the peer is traced as it is taken in, before it is
    acted on; the peer's plain data is decoded on the general path (not
    straight from the bytes), so that its fields are the s-expressions that
    crossed.  If *trace* raises, the error is logged and tracing stops.
    """

    __slots__ = ("_peer", "_trace", "_traced_in")

    def __init__(
        self,
        driver: ProtocolDriver | None,
        *,
        trace: Callable[[TraceEvent], object],
        peer: str = "the peer",
        **options: Any,
    ) -> None:
        # Set first: the constructor queues the server's dialect offer.
        self._trace: Callable[[TraceEvent], object] | None = trace
        self._peer = peer
        # Bytes of the peer's traced so far: a message's size is what it adds.
        self._traced_in = 0
        super().__init__(driver, **options)

    def _emit(self, direction: Literal["sent", "received"], data: Any, size: int, handshake: bool) -> None:
        trace = self._trace
        if trace is None:
            return
        try:
            if direction == "received":
                trace(make_event(direction, data, size, time.time(), self._peer, handshake=handshake))
                return
            # What is queued at once may be several messages (a call and its deadline, a big
            # message and what waited behind it): one event each.
            banana = self._banana
            decoder = Decoder(
                vocabulary=DIALECTS[banana.dialect or b"none"],
                message_size_limit=banana.message_size_limit,
                message_items_limit=banana.message_items_limit,
            )
            decoder.receive_data(data)
            start = 0
            for expression in decoder:
                end = decoder.consumed
                size, start = end - start, end
                trace(make_event(direction, expression, size, time.time(), self._peer, handshake=handshake))
        except Exception:
            # Whatever went wrong, the message itself is queued or taken in already.
            self._trace = None
            log.exception(
                "%s: the trace callback %r failed; this connection is no longer traced", self._peer, trace
            )

    def _traced_received(self, expression: Any, handshake: bool) -> None:
        consumed = self._banana.bytes_consumed
        size, self._traced_in = consumed - self._traced_in, consumed
        self._emit("received", expression, size, handshake)

    def _queue(self, data: bytes) -> None:
        super()._queue(data)
        self._emit("sent", data, len(data), handshake=False)

    def _queue_handshake(self, data: bytes) -> None:
        super()._queue(data)
        if data:
            self._emit("sent", data, len(data), handshake=True)

    def _open(self, dialect: bytes) -> Ready:
        self._traced_received(self._banana.peer_handshake, handshake=True)
        return super()._open(dialect)

    def _dispatch(self, expression: Any) -> Event | None:
        self._traced_received(expression, handshake=False)
        return super()._dispatch(expression)

    def _plain_now(self) -> bool:
        return False


def _short(value: Any) -> Any:
    """*value* cut short if it is a long bytes, a big int or a list (for log lines about peer input)."""
    if type(value) is bytes and len(value) > 100:
        return value[:100] + b"..."
    if type(value) is int and value.bit_length() > 200:
        return f"<int of {value.bit_length()} bits>"
    if type(value) is list:
        return _CutList(value)
    return value


class _CutList:
    """A list the peer sent, whose repr (made only if the line is logged) shows its first few items."""

    __slots__ = ("value",)

    def __init__(self, value: list[Any]) -> None:
        self.value = value

    def __repr__(self) -> str:
        return reprlib.repr(self.value)


def _keyword_names(kwargs: dict[Any, Any]) -> dict[str, Any]:
    """*kwargs* with bytes names decoded (older peers send bytes); a name that is not text fails the call."""
    named = {}
    for key, value in kwargs.items():
        if type(key) is bytes:
            try:
                key = key.decode("utf-8")
            except UnicodeDecodeError:
                raise JellyError(f"a keyword argument name is not UTF-8: {key!r:.100}") from None
        elif type(key) is not str:
            raise JellyError(f"a keyword argument name is not a string: {key!r:.100}")
        named[key] = value
    return named


# The tags the compiled unjelly_plain builds itself, as the pure Unjellier does by default.
_PLAIN_DATA_TAGS: Final = frozenset(
    {b"None", b"boolean", b"unicode", b"list", b"tuple", b"dictionary", b"set", b"frozenset"}
)


#: The registry of connections given none: the process-wide one, and the failures PB sends.
_DEFAULT_REGISTRY: Final = CopyRegistry(parent=copy_registry)
failures.install(_DEFAULT_REGISTRY)


def _plain_data(security: SecurityOptions, registry: CopyRegistry) -> bool:
    """Whether every plain-data tag means what it means by default (allowed, and no registry took it over)."""
    kind = type(security)
    if kind is SecurityOptions:
        allowed = security.allowed_types >= _PLAIN_DATA_TAGS
    else:
        allowed = kind is DummySecurityOptions or all(
            security.is_type_allowed(tag) for tag in _PLAIN_DATA_TAGS
        )
    if not allowed:
        return False
    node: CopyRegistry | None = registry
    while node is not None:
        if type(node) is not CopyRegistry:
            return not any(tag in node for tag in _PLAIN_DATA_TAGS)
        if not (_PLAIN_DATA_TAGS.isdisjoint(node.classes) and _PLAIN_DATA_TAGS.isdisjoint(node.factories)):
            return False
        node = node.parent
    return True


def _simple_args(args: Any) -> tuple[Any, ...] | None:
    """The arguments, if they are a tuple of atoms (what unjelly would return, made directly)."""
    if type(args) is list and args and args[0] == b"tuple" and all(type(arg) is not list for arg in args[1:]):
        return tuple(args[1:])
    return None


# Once this many messages are queued, the small ones (shorter than _PACK_BELOW) at the end are joined.
_PACK_AT: Final = 256
_PACK_BELOW: Final = 4096

# What send_ping() calls on a peer without the extension dialect: a name nobody registers.
_PING_TARGET: Final = b"trio_pb.ping"

# Values jelly sends as they are.
_ATOMS: Final = frozenset({bytes, int, float})

# The peer's releases: held behind the calls held before them.
_RELEASES: Final = frozenset({b"decref", b"decache", b"uncache"})

# Commands only sent and understood under the extension dialect.
_EXTENSION_COMMANDS: Final[dict[bytes, tuple[Any, int]]] = {
    b"cancel": (PBProtocol._cancel, 1),
    b"deadline": (PBProtocol._deadline, 2),
    b"ping": (PBProtocol._ping, 1),
    b"pong": (PBProtocol._pong, 1),
}

# Commands only sent and understood under trio-pb-2 (on top of trio-pb-1's).
_EXTENSION_2_COMMANDS: Final[dict[bytes, tuple[Any, int]]] = {
    b"limits": (PBProtocol._limits, 1),
    b"blob": (PBProtocol._blob, 2),
    b"chunk": (PBProtocol._chunk, 2),
    b"withblobs": (PBProtocol._withblobs, 2),
    b"dropblobs": (PBProtocol._dropblobs, 1),
    b"stream": (PBProtocol._stream, 2),
    b"credit": (PBProtocol._credit, 2),
    b"item": (PBProtocol._item, 2),
}

# The commands a withblobs may wrap.
_CARRY_BLOBS: Final = frozenset({b"message", b"cachemessage", b"answer", b"error"})

# The dialects offered (by a server) and accepted (by a client), by the extensions option
# (one tuple each for all connections).
_EXTENSION_OFFERS: Final[dict[bool | bytes, tuple[bytes, ...]]] = {
    True: (EXTENSION_DIALECT_2, EXTENSION_DIALECT, b"pb", b"none"),
    EXTENSION_DIALECT_2: (EXTENSION_DIALECT_2, EXTENSION_DIALECT, b"pb", b"none"),
    EXTENSION_DIALECT: (EXTENSION_DIALECT, b"pb", b"none"),
    False: (b"pb", b"none"),
}

# Tags whose lists are never a Cacheable's [tag, luid, state] first copy.
_NOT_CACHE_TAGS: Final = frozenset(
    {b"list", b"tuple", b"set", b"frozenset", b"dictionary", b"reference", b"instance", b"decimal"}
)

_COMMANDS: Final[dict[bytes, tuple[Any, int]]] = {
    b"version": (PBProtocol._version, 1),
    b"message": (PBProtocol._message, 6),
    b"cachemessage": (PBProtocol._cachemessage, 6),
    b"decache": (PBProtocol._decache, 1),
    b"uncache": (PBProtocol._uncache, 1),
    b"answer": (PBProtocol._answer, 2),
    b"error": (PBProtocol._error, 2),
    b"decref": (PBProtocol._decref, 1),
    b"didNotUnderstand": (PBProtocol._did_not_understand, 1),
}
