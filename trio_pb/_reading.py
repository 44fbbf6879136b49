"""Who reads a broker's stream: its reader task, or a caller "leading" for its own answer.

On a plain socket, the reader task stands by once it has handed over the
answer to the last outstanding call, and a call made meanwhile (typically the
next one of a loop) is read for by its own caller instead of being passed on
by the reader: one task switch less in each round trip of sequential calls.
Whoever reads does exactly what the reader task would, in the same order and
in the broker's own context; the reader takes the socket back as soon as
that caller is done with it.

:class:`Baton` holds who reads and decides when the reader stands by and
when a caller may lead; the connection it reads for (the broker) is passed
to its methods as a :class:`ReadingConnection`, so that the baton holds no
reference to it.
"""

from __future__ import annotations

import contextvars
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import trio

from ._socket_io import without_tracebacks
from .errors import ProtocolError

__all__ = ["Baton", "ReadingConnection", "Settles"]


class Settles(Protocol):
    """A call waiting for its answer, as the baton sees it."""

    settled: bool


class ReadingConnection(Protocol):
    """What a reading caller needs from the connection it reads for (the broker)."""

    def room_to_read(self) -> bool:
        """Whether more may be read now: the peer's held-back calls have not reached their bound."""
        ...

    def take_in(self, data: bytes | bytearray | None) -> None:
        """Act on bytes read from the stream, as the reader task does."""
        ...

    def connection_lost(self) -> None:
        """The stream is gone: end the connection."""
        ...

    def broke_protocol(self, exc: ProtocolError) -> None:
        """The peer broke the protocol: end the connection, keeping *exc* as its error."""
        ...


class Baton:
    """Who reads the stream: the reader task, or a caller leading for its own answer.

    The reader parks only while someone is bound to wake it: a leader, or
    callers woken by an answer (:attr:`wakes_due`) who have not run yet.
    """

    __slots__ = (
        "crash",
        "direct",
        "leading",
        "on_socket",
        "parked",
        "reader",
        "receive",
        "run",
        "wakes_due",
    )

    def __init__(
        self,
        receive: Callable[[], Awaitable[bytes | bytearray | None]],
        context: contextvars.Context,
        *,
        direct: bool,
    ) -> None:
        #: Reads the stream once (the connection's, shared with its reader task).
        self.receive = receive
        #: Runs a function in the broker's context: incoming calls run there, whichever task reads.
        self.run = context.run
        #: Whether callers may lead at all: only on a plain socket.
        self.direct = direct
        #: The reader task, once it runs.
        self.reader: trio.lowlevel.Task | None = None
        #: Whether the reader task is parked (standing by).
        self.parked = False
        #: Whether the reader task is waiting on the stream itself.
        self.on_socket = False
        #: Whether a caller reads for its answer.
        self.leading = False
        #: Callers woken by an answer who have not run yet.
        self.wakes_due = 0
        #: What a leading caller met that is not its own (a bug, or a
        #: BaseException from a plain method), for the reader task to raise.
        self.crash: BaseException | None = None

    def should_park(self, calls_waiting: int) -> bool:
        """Whether the reader task should stand by (*calls_waiting*: our calls without their answers)."""
        # A caller reads, or one is about to run and may well make its next
        # call and read for it.
        return self.leading or (self.wakes_due != 0 and not calls_waiting and self.direct)

    async def park(self) -> None:
        """Park the reader task (the current task) until :meth:`release` or :meth:`wake_reader`."""

        def abort(_: Any) -> trio.lowlevel.Abort:
            self.parked = False
            return trio.lowlevel.Abort.SUCCEEDED

        self.parked = True
        await trio.lowlevel.wait_task_rescheduled(abort)

    def release(self) -> None:
        """Wake the parked reader task unless someone else is still bound to read."""
        if self.parked and not self.leading and not self.wakes_due:
            self.parked = False
            assert self.reader is not None
            trio.lowlevel.reschedule(self.reader)

    def wake_reader(self) -> None:
        """Wake the parked reader task whoever is bound to read (the connection is lost)."""
        if self.parked:
            # On its way out it closes the stream, which wakes a caller reading it.
            self.parked = False
            assert self.reader is not None
            trio.lowlevel.reschedule(self.reader)

    def woken(self) -> None:
        """A caller woken by an answer runs: the reader may be parked until now."""
        self.wakes_due -= 1
        self.release()

    def may_lead(self, connection: ReadingConnection) -> bool:
        """Whether a caller may read its answer itself right now (see :meth:`read_until_settled`)."""
        return (
            self.direct
            and not self.leading
            and not self.on_socket
            and self.reader is not None
            and connection.room_to_read()
            # Not from an except block: the peer's plain methods would run
            # with the caller's exception as their context.
            and sys.exc_info()[1] is None
        )

    async def read_until_settled(self, connection: ReadingConnection, pending: Settles) -> None:
        """Read in the calling task until *pending* is settled, or until reading must stop.

        The reader task is off the socket (parked, or about to park), so the
        answer is read by the task that waits for it: no wake-up of the
        reader, then of the caller.  Everything else that arrives meanwhile
        is handled as the reader would.  Reading stops early under
        backpressure, and the caller then waits like any other.
        """
        run = self.run
        receive = self.receive
        self.leading = True
        try:
            while not pending.settled and connection.room_to_read():
                # Only waiting belongs to the caller (its cancellation); what
                # happens to the connection is the broker's, as in the reader.
                try:
                    data = await receive()
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    without_tracebacks(exc)  # as in the writer: a cycle on Python 3.12+
                    run(connection.connection_lost)
                    break
                try:
                    run(connection.take_in, data)
                except ProtocolError as exc:
                    run(connection.broke_protocol, exc)
                except BaseException as exc:
                    # The reader task raises it out of open_broker, as if it had met it.
                    self.crash = exc
                    run(connection.connection_lost)
        finally:
            self.leading = False
            self.release()
