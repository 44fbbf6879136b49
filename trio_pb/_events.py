"""What :meth:`PBProtocol.next_event <trio_pb.protocol.PBProtocol.next_event>` returns: events and sentinels.

Every event is an :class:`Event`, immutable (like h11's).  An event is a
named tuple underneath, because building one is on the path of every call
and answer: a tuple costs a quarter of what a frozen attrs class costs to
build (measured with callgrind), and reading its fields is as fast as a
slot.  Events compare equal only to events of the same class.

:data:`NEED_DATA` and :data:`PAUSED` are the two sentinels, each the only
member of an enum, so that ``event is NEED_DATA`` narrows the type.

This module imports nothing from trio_pb, and no trio.
"""

from __future__ import annotations

import enum
from typing import Any, Final, NamedTuple

__all__ = [
    "NEED_DATA",
    "PAUSED",
    "Answer",
    "CancelRequested",
    "Event",
    "Failed",
    "IncomingCall",
    "NeedData",
    "Paused",
    "Ready",
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
#: Returned by :meth:`~trio_pb.protocol.PBProtocol.next_event` while too much output is queued.
PAUSED: Final = Paused.PAUSED


class Event:
    """The base of every event the protocol reports."""

    __slots__ = ()

    # Each event is also a tuple of its fields (see the module docstring):
    # without this, Answer(1, None) would equal Failed(1, None) and (1, None).
    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and tuple.__eq__(self, other)  # type: ignore[operator]

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash((type(self), tuple.__hash__(self)))  # type: ignore[arg-type]


class _ReadyFields(NamedTuple):
    dialect: bytes


class Ready(Event, _ReadyFields):
    """Event: the handshake is over; calls may be sent."""

    __slots__ = ()


class _IncomingCallFields(NamedTuple):
    request_id: int
    answer_required: bool
    method: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    #: The perspective the answer is to be jellied with (the avatar, for Viewables).
    perspective: Any
    #: The method name as called.
    name: str = ""
    #: For a ``cachemessage``: the luid of the cached object it updates.
    cache_luid: int | None = None
    #: Extension dialect only: the seconds the caller had left before its
    #: deadline when it sent the call (``None``: it had no deadline).
    time_left: float | None = None


class IncomingCall(Event, _IncomingCallFields):
    """Event: the peer called *method*; answer with ``send_answer``/``send_error`` if it wants an answer."""

    __slots__ = ()


class _CancelRequestedFields(NamedTuple):
    request_id: int


class CancelRequested(Event, _CancelRequestedFields):
    """Event (extension dialect only): the peer gave up waiting for its call *request_id*."""

    __slots__ = ()


class _AnswerFields(NamedTuple):
    request_id: int
    value: Any


class Answer(Event, _AnswerFields):
    """Event: the answer to one of our calls."""

    __slots__ = ()


class _FailedFields(NamedTuple):
    request_id: int
    #: The exception to raise in the caller.
    error: BaseException


class Failed(Event, _FailedFields):
    """Event: one of our calls failed; *error* is the exception to raise in the caller."""

    __slots__ = ()
