"""A trace of every PB message a connection sends and receives, for debugging.

A broker opened with ``trace=callback`` (a :class:`~trio_pb.options.BrokerOptions`
field) calls ``callback(event)`` with a :class:`TraceEvent` for each message, as
it is queued for the peer or decoded from the peer's bytes; :func:`log_trace`
is such a callback, which logs each event on the ``trio_pb.trace`` logger at
DEBUG.  A broker without the option makes no check per message at all: it is a
different protocol class that traces (docs/internals.rst, "Statistics"; the
tutorial's "Looking inside a broker").  This module is sans-IO, like the protocol.
"""

from __future__ import annotations

import logging
import reprlib
from typing import Any, Final, Literal

import attrs

__all__ = ["REQUEST_COMMANDS", "TraceEvent", "log_trace"]

#: The commands whose first field is a request id (the others' is an object id, or nothing).
REQUEST_COMMANDS: Final = frozenset(
    {"message", "cachemessage", "answer", "error", "cancel", "deadline", "ping", "pong"}
)

trace_log = logging.getLogger("trio_pb.trace")

_repr = reprlib.Repr()
_repr.maxlevel = 4
_repr.maxlist = _repr.maxtuple = 8
_repr.maxstring = _repr.maxother = 60


@attrs.frozen
class TraceEvent:
    """One PB message that crossed a connection, as the trace callback sees it."""

    #: ``"sent"`` (queued for the peer) or ``"received"`` (decoded from the peer's bytes).
    direction: Literal["sent", "received"]
    #: The command: ``"message"``, ``"answer"``, ``"error"``, ``"decref"`` ...; the banana
    #: handshake is ``"dialects"`` (the server's offer) and ``"dialect"`` (the client's choice).
    command: str
    #: The request id, for the commands that carry one (:data:`REQUEST_COMMANDS`), else None.
    request_id: int | None
    #: The fields after the command, decoded from banana but not unjellied: jelly's
    #: s-expressions (``[b"tuple", 1, 2]``), with the objects' ids rather than the objects.
    fields: tuple[Any, ...]
    #: The message's size on the wire, in bytes.
    size: int
    #: When it was queued or decoded: :func:`time.time`, comparable with log records.
    time: float
    #: The peer: its address as ``host:port`` (or a unix socket's path), when the stream has one.
    peer: str

    def __str__(self) -> str:
        words = [self.peer, self.direction, self.command, *map(_repr.repr, self.fields)]
        return f"{' '.join(words)} ({self.size} bytes)"


def make_event(
    direction: Literal["sent", "received"],
    expression: Any,
    size: int,
    time: float,
    peer: str,
    *,
    handshake: bool = False,
) -> TraceEvent:
    """The event of one decoded *expression*: a command list, or (*handshake*) banana's offer or choice."""
    if handshake:
        command = "dialects" if type(expression) is list else "dialect"
        fields: tuple[Any, ...] = (expression,)
    elif type(expression) is list and expression and type(expression[0]) is bytes:
        command = expression[0].decode("utf-8", "replace")
        fields = tuple(expression[1:])
    else:
        command = "?"  # not a command list: the protocol refuses it (a ProtocolError)
        fields = (expression,)
    first = fields[0] if fields else None
    request_id = first if command in REQUEST_COMMANDS and type(first) is int else None
    return TraceEvent(direction, command, request_id, fields, size, time, peer)


def log_trace(event: TraceEvent) -> None:
    """A trace callback that logs each event on the ``trio_pb.trace`` logger, at DEBUG."""
    trace_log.debug("%s", event)
