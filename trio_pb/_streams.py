"""Remote streams' credit bookkeeping, for the ``trio-pb-2`` dialect (sans-IO, no trio).

A stream is a call sent wrapped in ``stream`` (docs/protocol.rst, "Remote
streams"): the wrapper grants the first window of credit, the producer sends
one ``item`` per credit it holds, the consumer grants more with ``credit``
as it consumes, and the call's ordinary answer (or error) ends the stream.

:class:`Credits` is the producing side of one connection (what each of its
streams may still send); :class:`Window` is one consumed stream (when to
grant more).  Both are pure bookkeeping: the broker waits and wakes.
"""

from __future__ import annotations

from typing import Final

from .errors import ProtocolError

__all__ = ["MAX_CREDIT", "STREAM_WINDOW", "Credits", "Window"]

#: The default of the ``stream_window`` option: items a producer may send ahead of its consumer.
STREAM_WINDOW: Final = 16
#: The most credit one stream may hold: a peer granting more breaks the protocol.
MAX_CREDIT: Final = 1 << 20


class Credits:
    """The credit of the streams we produce on one connection: items each may still send, by request id."""

    __slots__ = ("credit",)

    def __init__(self) -> None:
        self.credit: dict[int, int] = {}

    def opened(self, request_id: int, window: object) -> None:
        """The peer opened stream *request_id* with *window* items of credit."""
        if type(window) is not int or not 0 < window <= MAX_CREDIT:
            raise ProtocolError(f"stream with a window that is not a positive int: {window!r:.20}")
        self.credit[request_id] = window

    def granted(self, request_id: object, count: object) -> bool:
        """The peer granted *count* more items: whether that stream still runs (else the grant is stale)."""
        if type(request_id) is not int or type(count) is not int or count <= 0:
            raise ProtocolError(f"malformed credit: {request_id!r:.20}, {count!r:.20}")
        credit = self.credit
        left = credit.get(request_id)
        if left is None:
            return False  # crossed the stream's end or its close: nothing to do
        if left + count > MAX_CREDIT:
            raise ProtocolError(f"credit for stream {request_id} past {MAX_CREDIT} items")
        credit[request_id] = left + count
        return True

    def take(self, request_id: int) -> bool:
        """Spend one credit of *request_id* for the item about to be produced; False: none left, wait."""
        credit = self.credit
        left = credit.get(request_id, 0)
        if left <= 0:
            return False
        credit[request_id] = left - 1
        return True

    def closed(self, request_id: int) -> None:
        """Stream *request_id* ended (or never was one): forget its credit."""
        self.credit.pop(request_id, None)


class Window:
    """The consumer's side of one stream: how many items it consumed since its last grant."""

    __slots__ = ("consumed", "window")

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError(f"a stream window must be at least 1, not {window}")
        self.window = window
        self.consumed = 0

    def took(self) -> int:
        """One item consumed: the credit to grant now (0: none yet; half a window at a time)."""
        self.consumed += 1
        if self.consumed * 2 >= self.window:
            grant, self.consumed = self.consumed, 0
            return grant
        return 0
