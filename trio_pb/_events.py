"""What :meth:`PBProtocol.next_event <trio_pb.protocol.PBProtocol.next_event>` returns: events and sentinels.

Every event is an :class:`Event`, frozen (like h11's): its fields are slots,
and setting or deleting one raises :class:`AttributeError`.  Events compare
equal when they are of the same class with equal fields.

The events of every call and answer are built on the hot path, so their
construction is measured (callgrind, instructions per call): a frozen attrs
class costs three times a plain one to build, since each field goes through
``object.__setattr__``; a named tuple is cheap to build but each field read
is a descriptor call, several per call in the broker.  So the protocol
builds :class:`IncomingCall` and :class:`Answer` with :func:`incoming_call`
and :func:`answer`: a plain object of the same slots, filled by ordinary
stores, then given its frozen class.  Fields are read as fast slots.

:data:`NEED_DATA` and :data:`PAUSED` are the two sentinels, each the only
member of an enum, so that ``event is NEED_DATA`` narrows the type.

This module imports nothing from trio_pb, and no trio.
"""

from __future__ import annotations

import enum
from typing import Any, Final, NoReturn

__all__ = [
    "NEED_DATA",
    "PAUSED",
    "Answer",
    "CancelRequested",
    "CreditGranted",
    "Event",
    "Failed",
    "IncomingCall",
    "NeedData",
    "Paused",
    "Ready",
    "StreamItem",
    "StreamRequested",
]


class NeedData(enum.Enum):
    """The type of :data:`NEED_DATA`."""

    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"

    __str__ = __repr__


class Paused(enum.Enum):
    """The type of :data:`PAUSED`."""

    PAUSED = "PAUSED"

    def __repr__(self) -> str:
        return "PAUSED"

    __str__ = __repr__


#: Returned when no complete message (or event) is buffered: feed more bytes.
NEED_DATA: Final = NeedData.NEED_DATA
#: Returned by :meth:`~trio_pb.protocol.PBProtocol.next_event` while the peer's calls are held
#: back until queued output drains.
PAUSED: Final = Paused.PAUSED

_set: Final = object.__setattr__
_new: Final = object.__new__


class Event:
    """The base of every event the protocol reports."""

    __slots__ = ()

    def _names(self) -> tuple[str, ...]:
        names: tuple[str, ...] = vars(type(self))["__slots__"]
        return names

    def _fields(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._names())

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._fields() == other._fields()

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash((type(self), self._fields()))

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._names())
        return f"{type(self).__name__}({fields})"


def _frozen(self: Event, name: str, value: Any = None) -> NoReturn:
    raise AttributeError(f"{type(self).__name__} events are frozen: cannot set or delete {name!r}")


# Each event class freezes itself (not Event): the mutable twins the hot
# paths build share Event as their base, and must keep plain stores.


class Ready(Event):
    """Event: the handshake is over; calls may be sent."""

    __slots__ = ("dialect",)
    __match_args__ = ("dialect",)
    __setattr__ = __delattr__ = _frozen

    dialect: bytes

    def __init__(self, dialect: bytes) -> None:
        _set(self, "dialect", dialect)


_CALL_FIELDS: Final = (
    "request_id",
    "answer_required",
    "method",
    "args",
    "kwargs",
    "perspective",
    "name",
    "cache_luid",
    "time_left",
)


class IncomingCall(Event):
    """Event: the peer called *method*; answer with ``send_answer``/``send_error`` if it wants an answer."""

    __slots__ = _CALL_FIELDS
    __match_args__ = (
        "request_id",
        "answer_required",
        "method",
        "args",
        "kwargs",
        "perspective",
        "name",
        "cache_luid",
        "time_left",
    )
    __setattr__ = __delattr__ = _frozen

    request_id: int
    answer_required: bool
    method: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    #: The perspective the answer is to be jellied with (the avatar, for Viewables).
    perspective: Any
    #: The method name as called.
    name: str
    #: For a ``cachemessage``: the luid of the cached object it updates.
    cache_luid: int | None
    #: Extension dialect only: the seconds the caller had left before its
    #: deadline when it sent the call (``None``: it had no deadline).
    time_left: float | None

    def __init__(
        self,
        request_id: int,
        answer_required: bool,
        method: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        perspective: Any,
        name: str = "",
        cache_luid: int | None = None,
        time_left: float | None = None,
    ) -> None:
        _set(self, "request_id", request_id)
        _set(self, "answer_required", answer_required)
        _set(self, "method", method)
        _set(self, "args", args)
        _set(self, "kwargs", kwargs)
        _set(self, "perspective", perspective)
        _set(self, "name", name)
        _set(self, "cache_luid", cache_luid)
        _set(self, "time_left", time_left)


class _IncomingCallBuilder(Event):
    # Same slots as IncomingCall, not frozen: incoming_call() fills one, then gives it its class.
    __slots__ = _CALL_FIELDS

    request_id: int
    answer_required: bool
    method: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    perspective: Any
    name: str
    cache_luid: int | None
    time_left: float | None


def incoming_call(
    request_id: int,
    answer_required: bool,
    method: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    perspective: Any,
    name: str,
    cache_luid: int | None,
    time_left: float | None,
) -> IncomingCall:
    """``IncomingCall(...)``, at the cost of building a plain object (see the module docstring)."""
    call = _new(_IncomingCallBuilder)
    call.request_id = request_id
    call.answer_required = answer_required
    call.method = method
    call.args = args
    call.kwargs = kwargs
    call.perspective = perspective
    call.name = name
    call.cache_luid = cache_luid
    call.time_left = time_left
    call.__class__ = IncomingCall  # type: ignore[assignment]
    return call  # type: ignore[return-value]


class CancelRequested(Event):
    """Event (extension dialect only): the peer gave up waiting for its call *request_id*."""

    __slots__ = ("request_id",)
    __match_args__ = ("request_id",)
    __setattr__ = __delattr__ = _frozen

    request_id: int

    def __init__(self, request_id: int) -> None:
        _set(self, "request_id", request_id)


class Answer(Event):
    """Event: the answer to one of our calls."""

    __slots__ = ("request_id", "value")
    __match_args__ = ("request_id", "value")
    __setattr__ = __delattr__ = _frozen

    request_id: int
    value: Any

    def __init__(self, request_id: int, value: Any) -> None:
        _set(self, "request_id", request_id)
        _set(self, "value", value)


class _AnswerBuilder(Event):
    # Same slots as Answer, not frozen: answer() fills one, then gives it its class.
    __slots__ = ("request_id", "value")

    request_id: int
    value: Any


def answer(request_id: int, value: Any) -> Answer:
    """``Answer(request_id, value)``, at the cost of building a plain object (see the module docstring)."""
    event = _new(_AnswerBuilder)
    event.request_id = request_id
    event.value = value
    event.__class__ = Answer  # type: ignore[assignment]
    return event  # type: ignore[return-value]


class Failed(Event):
    """Event: one of our calls failed; *error* is the exception to raise in the caller."""

    __slots__ = ("request_id", "error")  # noqa: RUF023 (the order of the fields)
    __match_args__ = ("request_id", "error")
    __setattr__ = __delattr__ = _frozen

    request_id: int
    #: The exception to raise in the caller.
    error: BaseException

    def __init__(self, request_id: int, error: BaseException) -> None:
        _set(self, "request_id", request_id)
        _set(self, "error", error)


class StreamRequested(Event):
    """Event (``trio-pb-2`` only): the peer called *call* as a stream, granting *window* items of credit.

    Run its method (an async generator) and send each item with
    ``send_item`` while :meth:`~trio_pb.protocol.PBProtocol.take_credit`
    allows, then answer the call to end the stream.
    """

    __slots__ = ("call", "window")
    __match_args__ = ("call", "window")
    __setattr__ = __delattr__ = _frozen

    call: IncomingCall
    window: int

    def __init__(self, call: IncomingCall, window: int) -> None:
        _set(self, "call", call)
        _set(self, "window", window)


class StreamItem(Event):
    """Event (``trio-pb-2`` only): the next item of our stream *request_id* (or why it cannot be read)."""

    __slots__ = ("error", "request_id", "value")
    __match_args__ = ("request_id", "value", "error")
    __setattr__ = __delattr__ = _frozen

    request_id: int
    value: Any
    #: Set instead of *value* when the item could not be unjellied.
    error: BaseException | None

    def __init__(self, request_id: int, value: Any, error: BaseException | None = None) -> None:
        _set(self, "request_id", request_id)
        _set(self, "value", value)
        _set(self, "error", error)


class CreditGranted(Event):
    """Event (``trio-pb-2`` only): the peer granted more credit to the stream *request_id* we produce."""

    __slots__ = ("request_id",)
    __match_args__ = ("request_id",)
    __setattr__ = __delattr__ = _frozen

    request_id: int

    def __init__(self, request_id: int) -> None:
        _set(self, "request_id", request_id)
