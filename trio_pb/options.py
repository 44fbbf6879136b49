"""A connection's options, each defined once with its default, and what a connection holds.

:class:`BrokerOptions` is the one place every option of
:func:`~trio_pb.broker.open_broker` is written out: the functions that open
connections (``serve_tcp``, ``open_tcp_broker``, the factories,
``open_broker_pair``) take the same keywords and check them here, at once.
:class:`BrokerStatistics` is what :meth:`~trio_pb.broker.Broker.statistics`
returns.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from ._blobs import MAX_VALUE_SIZE
from ._streams import STREAM_WINDOW
from .banana import MESSAGE_ITEMS_LIMIT, MESSAGE_SIZE_LIMIT
from .conduct import MAX_VIOLATIONS
from .jelly import CopyRegistry, SecurityOptions
from .protocol import DECODE_BUDGET, MAX_BROKER_REFS, MAX_HELD_CALLS
from .trace import TraceEvent

__all__ = [
    "MAX_CALLS_IN_FLIGHT",
    "MAX_HELD_CALLS",
    "MAX_RUNNING_CALLS",
    "SEND_BUFFER",
    "BrokerOptions",
    "BrokerStatistics",
]

#: While more than this many bytes wait to be sent, a broker holds back its peer's
#: calls (it goes on reading everything else) and its own callers wait.
SEND_BUFFER = 16 * 1024 * 1024
#: How many of the peer's calls to ``async def`` methods may run at once on one connection.
#: Each holds its answer until there is room to send it, so this times the size of
#: your largest answer is what the peer's calls can make a connection hold.
MAX_RUNNING_CALLS = 100
#: How many of our calls may await their answers at once on one connection; more
#: callers wait, first come first served.  Far more than a pipeline needs to keep a
#: connection busy, and a tenth of :data:`MAX_HELD_CALLS`, so that a peer with
#: the defaults never fills the buffer of calls we hold back while flooding us.
MAX_CALLS_IN_FLIGHT = 1000


def _positive_seconds(instance: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{attribute.name} must be a positive number of seconds, not {value!r}")


def _at_least_one(instance: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not value >= 1:
        raise ValueError(f"{attribute.name} must be at least 1, not {value!r}")


@attrs.frozen(kw_only=True)
class BrokerOptions:
    """Every option of a broker, with its default: the keywords of :func:`open_broker`.

    :func:`open_broker`, :func:`~trio_pb.connect.serve_tcp`,
    :func:`~trio_pb.connect.open_tcp_broker`, the factories and
    :func:`~trio_pb.testing.open_broker_pair` all take these as keyword
    arguments (or one of these objects as ``options=``), and refuse an
    unknown one at once with a :class:`TypeError` that names it.  The limits
    bound what the peer can make a connection hold; docs/internals.rst,
    "Limits", says what the peer sees past each.
    """

    #: What the peer may make us rebuild (None: :data:`~trio_pb.jelly.global_security`).
    security: SecurityOptions | None = None
    #: Copy registrations for this connection, on top of the global ones.
    registry: CopyRegistry | None = None
    #: Whether errors sent to the peer carry their tracebacks (Twisted's ``unsafeTracebacks``).
    unsafe_tracebacks: bool = False
    #: How many of our objects the peer may hold references to (Twisted's ``MAX_BROKER_REFS``).
    max_references: int = MAX_BROKER_REFS
    #: Whether to speak trio_pb's extension dialects with a peer that knows them (a
    #: cancelled call then cancels the peer's ``async def`` method too, big values
    #: travel in chunks, streams work); a Twisted peer never sees the difference.
    #: A dialect name (``b"trio-pb-1"``) offers and accepts that one and those below it only.
    extensions: bool | bytes = True
    #: Seconds the PB handshake may take before :class:`trio.TooSlowError` is
    #: raised (servers default to :data:`~trio_pb.connect.HANDSHAKE_TIMEOUT`,
    #: so that a client that says nothing cannot hold a task forever).
    handshake_timeout: float = math.inf
    #: Seconds without a sign of life from the peer (bytes received, or a backlog
    #: of ours going out) after which it is pinged; if the next such interval
    #: passes without one either, the connection is closed and
    #: :attr:`Broker.error` is a :class:`~trio_pb.errors.PeerUnresponsive`.
    #: None: never (a vanished peer is then noticed only when TCP gives up).
    keepalive: float | None = attrs.field(default=None, validator=_positive_seconds)
    #: Bytes of output queued past which the peer's calls are held back
    #: (answers, pings and releases still flow) and our callers wait until
    #: it drains; see docs/internals.rst, "Backpressure".
    send_buffer: int = SEND_BUFFER
    #: How many of the peer's calls to ``async def`` methods may run at once
    #: (more are refused with :class:`~trio_pb.errors.TooManyCalls`).
    max_running_calls: int = MAX_RUNNING_CALLS
    #: How many of our calls may await their answers at once: one more waits
    #: (a checkpoint: a cancel scope ends its wait) for the first call to
    #: finish, callers in the order they came.
    max_calls_in_flight: int = attrs.field(default=MAX_CALLS_IN_FLIGHT, validator=_at_least_one)
    #: How many of the peer's calls may be held back, unrun, while our output is
    #: backed up (they may take as many bytes as one message, ``max_message_size``);
    #: past either bound the broker stops reading until they have run.
    max_held_calls: int = MAX_HELD_CALLS
    #: The most bytes one message may take, either way.
    max_message_size: int = MESSAGE_SIZE_LIMIT
    #: The most banana elements one message may hold, either way.
    max_message_items: int = MESSAGE_ITEMS_LIMIT
    #: The most bytes of big strings (over 64 KiB each) one message may carry, either way,
    #: between peers that speak ``trio-pb-2`` (``trio_pb._blobs.MAX_VALUE_SIZE``, 256 MiB).
    max_value_size: int = MAX_VALUE_SIZE
    #: The items a producer may send ahead of us in each remote stream we consume
    #: (``trio_pb._streams.STREAM_WINDOW``, 16): its credit, granted again half a window at a time.
    stream_window: int = attrs.field(default=STREAM_WINDOW, validator=_at_least_one)
    #: CPU seconds the sets and dicts of one message may cost to build (None: no limit).
    decode_budget: float | None = DECODE_BUDGET
    #: Protocol violations (stray releases, unknown commands ...) before the connection is closed.
    max_violations: int = MAX_VIOLATIONS
    #: Called with a :class:`~trio_pb.trace.TraceEvent` for every message sent and received,
    #: for debugging (:func:`trio_pb.log_trace` logs them); None: no trace, and no cost.
    trace: Callable[[TraceEvent], object] | None = None

    @classmethod
    def build(cls, caller: str, keywords: Mapping[str, Any]) -> BrokerOptions:
        """The options given as *caller*'s keywords; an unknown one is a :class:`TypeError` naming it.

        ``options`` among them, a :class:`BrokerOptions`, gives the starting
        point (else the defaults); the other keywords override its fields.
        """
        fields = dict(keywords)
        base = fields.pop("options", None)
        unknown = sorted(set(fields) - _OPTION_NAMES)
        if unknown:
            raise TypeError(
                f"{caller}() got an unknown broker option {unknown[0]!r}; "
                f"the options are: {', '.join(sorted(_OPTION_NAMES))}"
            )
        if base is None:
            return cls(**fields)
        if not isinstance(base, BrokerOptions):
            raise TypeError(f"{caller}(): options must be a BrokerOptions, not {type(base).__name__}")
        return attrs.evolve(base, **fields) if fields else base


_OPTION_NAMES = frozenset(field.name for field in attrs.fields(BrokerOptions))


@attrs.frozen(kw_only=True)
class BrokerStatistics:
    """What a connection holds at one moment, from :meth:`Broker.statistics` (for debugging and tests).

    Like trio's ``statistics()`` methods: a snapshot, computed when asked
    for, that costs the connection nothing the rest of the time.
    """

    #: Our calls waiting for their answers.
    calls_waiting: int
    #: The peer's calls to ``async def`` methods running here (plain methods run inline).
    calls_running: int
    #: The peer's calls held back, not run yet, while our output is backed up.
    calls_held: int
    #: Our calls we stopped waiting for (cancelled) whose answers are still due.
    calls_abandoned: int
    #: Our objects the peer holds references to (counted ones, not names like ``b"root"``).
    objects_exported: int
    #: The references the peer holds to them, in all (the sum of their refcounts).
    export_references: int
    #: References to the peer's objects held here and not released yet.
    references_imported: int
    #: Our Cacheables the peer holds copies of.
    caches_exported: int
    #: The peer's cached objects we hold copies of.
    caches_imported: int
    #: ``updates()`` iterators following the peer's cached objects here.
    cache_listeners: int
    #: Bytes queued for the peer and not yet handed to the stream.
    bytes_queued: int
    #: Seconds the last :meth:`Broker.ping` took (None before the first).
    last_ping_rtt: float | None
    #: Whether the connection is still up.
    connected: bool
