"""How a broker reads and writes its stream: straight on a plain socket, else through the stream.

:func:`stream_io` gives a broker one of two objects with the same small
interface: :class:`SocketIO` on a plain TCP or unix socket (not TLS, not
memory), which reads with one ``os.read`` once the socket is readable and
writes what the socket takes at once with one non-blocking ``os.write``;
:class:`StreamIO` on any other stream, which reads with the stream's own
``receive_some`` and never writes directly (everything goes through the
broker's writer task and ``send_all``).  The direct paths save a task
switch or a failed read per message; they can neither block nor be
cancelled half-way.
"""

from __future__ import annotations

import os
import sys

import trio

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

__all__ = ["RECEIVE_SIZE", "SocketIO", "StreamIO", "stream_io", "without_tracebacks"]

#: The most bytes read from the stream at once.
RECEIVE_SIZE = 65536


class StreamIO:
    """Reading through the stream's ``receive_some``; no direct writes (:attr:`direct` is false)."""

    __slots__ = ("_stream", "direct")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        #: Whether :meth:`write` may be used (the broker's writer sends everything otherwise).
        self.direct = False

    async def receive(self) -> bytes | bytearray | None:
        """The next bytes from the peer: empty at end of file (never None here)."""
        return await self._stream.receive_some(RECEIVE_SIZE)

    def write(self, data: bytes) -> int:
        """Write nothing: this stream is written by the broker's writer task only."""
        return 0


class SocketIO:
    """Reading and writing a plain socket's file descriptor directly (:attr:`direct` is true)."""

    __slots__ = ("_socket", "direct")

    def __init__(self, socket: trio.socket.SocketType) -> None:
        self._socket = socket
        #: Whether :meth:`write` may be used.
        self.direct = True

    async def receive(self) -> bytes | bytearray | None:
        """The next bytes from the peer: empty at end of file, None if there were none after all."""
        socket = self._socket
        # Wait, then read once: trio's receive_some() reads first, and that
        # read fails (EAGAIN) whenever the peer is slower than we are.
        # The stream may have been closed by another task, before or during the wait.
        if socket.fileno() < 0:
            raise trio.ClosedResourceError
        await trio.lowlevel.wait_readable(socket)
        fd = socket.fileno()  # -1 once closed: never a stale number
        if fd < 0:
            raise trio.ClosedResourceError
        try:
            return os.read(fd, RECEIVE_SIZE)
        except BlockingIOError:
            return None
        except OSError as exc:
            raise trio.BrokenResourceError from exc

    def write(self, data: bytes) -> int:
        """Write what the socket takes of *data* at once, without blocking: how many bytes it took.

        0 if it is full, closed or broken (the writer task, which sends the
        rest, finds out which): a closed socket's descriptor is -1, never a
        stale number.
        """
        try:
            return os.write(self._socket.fileno(), data)
        except OSError:
            return 0


def stream_io(stream: trio.abc.Stream) -> SocketIO | StreamIO:
    """The way to read and write *stream*: directly if it is a plain socket, else through its methods."""
    if isinstance(stream, trio.SocketStream) and os.name == "posix":
        return SocketIO(stream.socket)
    return StreamIO(stream)


def without_tracebacks(error: BaseException) -> BaseException:
    """*error*, once it has been caught for good, without the tracebacks that hold the frames it went through.

    Kept on a broker, a traceback would keep the frames of the broker's own
    methods, and so the broker itself, in a reference cycle (as the errors
    of a stream's methods do on Python 3.12+, CPython gh-129280).  The
    exceptions it caused or interrupted lose theirs too.
    """
    seen: set[int] = set()
    chain: list[BaseException | None] = [error]
    while chain:
        exc = chain.pop()
        if exc is None or id(exc) in seen:
            continue
        seen.add(id(exc))
        exc.__traceback__ = None
        chain += [exc.__cause__, exc.__context__]
        if isinstance(exc, BaseExceptionGroup):
            chain += exc.exceptions
    return error
