"""Sending data in pages, wire-compatible with ``twisted.spread.util``.

Paging is ordinary PB calls (``message`` requests; see docs/protocol.rst).  The receiver passes
a collector object; the sender calls ``gotPage(page)`` on it once per page,
then ``endedPaging()``, both without asking for an answer.

Sending: :func:`send_pages` sends bytes or a binary file (read one chunk at a
time; a chunk is dropped once queued) and waits for
:meth:`~trio_pb.broker.Broker.drain` between pages, so a slow connection
slows the sender instead of filling memory.  :class:`StringPager`,
:class:`FilePager` and :class:`Pager` are the Twisted classes; where
Twisted's start paging when created, these start when you ``await
pager.run()``.

Receiving: :class:`PageCollector` is an async iterator of the pages, and
:func:`get_all_pages` is Twisted's ``getAllPages``.

**The collector's buffer policy.**  Pages arrive as calls that want no
answer, so the collector cannot refuse or slow down a page: it can only keep
it or drop it.  It keeps pages until they are taken by ``async for``, up to
*max_buffered* bytes (``len()`` of bytes and str pages) and *max_pages*
pages.  A page beyond either limit *overflows* the collector: the buffered
pages are dropped at once, every later page is ignored, and the iteration
raises :class:`PageBufferOverflow`.  Memory therefore never grows without
bound, and a consumer never sees data with a hole in it.
"""

from __future__ import annotations

import collections
import inspect
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import trio

from ._groups import plain_errors
from .errors import PBConnectionLost, PBError
from .flavors import Referenceable, TwistedHooks
from .jelly import Invoker, Jellier
from .references import RemoteReference

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MAX_BUFFERED",
    "DEFAULT_MAX_PAGES",
    "CallbackPageCollector",
    "FilePager",
    "PageBufferOverflow",
    "PageCollector",
    "Pager",
    "PagingError",
    "StringPager",
    "getAllPages",
    "get_all_pages",
    "send_pages",
]

#: Bytes per page, as Twisted's StringPager.
DEFAULT_CHUNK_SIZE = 8192
#: How many bytes of pages a :class:`PageCollector` holds for its consumer by default.
DEFAULT_MAX_BUFFERED = 16 * 1024 * 1024
#: How many pages a :class:`PageCollector` holds for its consumer by default.
DEFAULT_MAX_PAGES = 4096


class PagingError(PBError):
    """Paging did not finish: the pages are incomplete."""


class PageBufferOverflow(PagingError):
    """More pages arrived than a :class:`PageCollector` may hold; the pages were dropped."""


class SupportsRead(Protocol):
    """A binary file: ``read(size)`` returns bytes, or an awaitable of bytes (trio's async files)."""

    def read(self, size: int, /) -> Any: ...


# -- sending -------------------------------------------------------------------


class Pager(TwistedHooks):
    """Sends pages to a remote collector (``twisted.spread.util.Pager``).

    Subclasses override :meth:`next_page` (or Twisted's ``nextPage``), which
    returns the next page (or an awaitable of it) and calls
    :meth:`stop_paging` when it returns the last one.  :meth:`run` sends the
    pages, waiting for the connection to take each one before making the
    next, then ``endedPaging``, then calls ``callback(*args, **kwargs)``.
    """

    _twisted_aliases: ClassVar[dict[str, str]] = {
        "next_page": "nextPage",
        "stop_paging": "stopPaging",
        "send_next_page": "sendNextPage",
    }

    def __init__(
        self,
        collector: RemoteReference,
        callback: Callable[..., object] | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        self.collector = collector
        self.callback = callback
        self.callback_args = args
        self.callback_kwargs = kwargs
        self.still_paging = True
        self._started = False

    def next_page(self) -> Any:
        """The next page to send (or an awaitable of it); override this."""
        raise NotImplementedError

    def stop_paging(self) -> None:
        """Say that the page just made is the last one."""
        self.still_paging = False

    async def send_next_page(self) -> None:
        """Make the next page and queue it (``gotPage``, no answer)."""
        page = self.next_page()
        if inspect.isawaitable(page):
            page = await page
        else:
            await trio.lowlevel.checkpoint()  # every async method checkpoints, as in trio
        self.collector.call_remote_no_answer("gotPage", page)

    async def run(self) -> None:
        """Send every page, then ``endedPaging``, then call the callback.

        Returns once ``endedPaging`` has been handed to the connection.
        Raises :class:`~trio_pb.errors.DeadReferenceError` if the connection
        is lost first.  A pager runs once.
        """
        if self._started:
            raise RuntimeError("a pager can only run once")
        self._started = True
        broker = self.collector.broker
        while self.still_paging:
            await self.send_next_page()
            await broker.drain()
        self.collector.call_remote_no_answer("endedPaging")
        await broker.drain()
        if self.callback is not None:
            self.callback(*self.callback_args, **self.callback_kwargs)

    nextPage = next_page
    stopPaging = stop_paging
    sendNextPage = send_next_page


class StringPager(Pager):
    """Sends bytes (or str) in pages of *chunk_size*, as Twisted's ``StringPager``.

    Like Twisted's, it sends at least one page: empty data is sent as one
    empty page before ``endedPaging``.
    """

    def __init__(
        self,
        collector: RemoteReference,
        data: bytes | bytearray | memoryview | str,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        callback: Callable[..., object] | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, not {chunk_size}")
        super().__init__(collector, callback, *args, **kwargs)
        self.data = data
        self.chunk_size = chunk_size
        self.pointer = 0

    def next_page(self) -> bytes | str:
        page = self.data[self.pointer : self.pointer + self.chunk_size]
        self.pointer += self.chunk_size
        if self.pointer >= len(self.data):
            self.stop_paging()
        return page if isinstance(page, (bytes, str)) else bytes(page)


class FilePager(Pager):
    """Reads a binary file in chunks and sends each one, as Twisted's ``FilePager``.

    *file* needs ``read(size)``, plain or async (:func:`trio.wrap_file`, or
    ``await trio.open_file(...)``).  A chunk is read only when the previous
    one has been handed to the connection, and is not kept.  An empty file
    sends only ``endedPaging``.
    """

    def __init__(
        self,
        collector: RemoteReference,
        file: SupportsRead,
        callback: Callable[..., object] | None = None,
        *args: Any,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        **kwargs: Any,
    ) -> None:
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, not {chunk_size}")
        super().__init__(collector, callback, *args, **kwargs)
        self.file = file
        self.chunk_size = chunk_size

    async def next_page(self) -> bytes:
        chunk = self.file.read(self.chunk_size)
        if inspect.isawaitable(chunk):
            chunk = await chunk
        else:
            await trio.lowlevel.checkpoint()  # a plain file: checkpoint all the same, as in trio
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise TypeError(f"the file must be opened in binary mode; read() returned {type(chunk).__name__}")
        return bytes(chunk)

    async def send_next_page(self) -> None:
        chunk = await self.next_page()
        if not chunk:
            self.stop_paging()
            return
        self.collector.call_remote_no_answer("gotPage", chunk)
        del chunk


async def send_pages(
    collector: RemoteReference,
    source: bytes | bytearray | memoryview | SupportsRead,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> None:
    """Send *source* to the peer's page *collector*, page by page, then ``endedPaging``.

    *source* is bytes (sent as :class:`StringPager` does) or a binary file
    (sent as :class:`FilePager` does).  Between pages it waits until the
    connection has taken the previous one.  Returns once ``endedPaging`` is
    sent; raises :class:`~trio_pb.errors.DeadReferenceError` if the
    connection is lost first.
    """
    pager: Pager
    if isinstance(source, (bytes, bytearray, memoryview)):
        pager = StringPager(collector, source, chunk_size)
    else:
        pager = FilePager(collector, source, chunk_size=chunk_size)
    await pager.run()


# -- receiving -------------------------------------------------------------------


class PageCollector(Referenceable):
    """Receives pages from a pager; ``async for page in collector:`` takes them in order.

    The iteration ends after ``endedPaging``.  It raises
    :class:`PageBufferOverflow` if more than *max_buffered* bytes or
    *max_pages* pages wait to be taken (see the module docstring),
    :class:`~trio_pb.errors.PBConnectionLost` (after the pages already
    received) if the connection is lost first, and :class:`PagingError` if
    the sender releases its reference to the collector without ending.
    A collector receives one sequence of pages, from one connection.
    """

    def __init__(
        self, *, max_buffered: int = DEFAULT_MAX_BUFFERED, max_pages: int = DEFAULT_MAX_PAGES
    ) -> None:
        if max_buffered < 0 or max_pages < 1:
            raise ValueError("max_buffered must be >= 0 and max_pages >= 1")
        self.max_buffered = max_buffered
        self.max_pages = max_pages
        self._pages: collections.deque[tuple[Any, int]] = collections.deque()
        #: Bytes of pages waiting to be taken.
        self.buffered = 0
        #: Whether ``endedPaging`` has arrived.
        self.ended = False
        self._failure: Callable[[], BaseException] | None = None
        self._dropping = False
        self._changed = trio.Event()
        self._watched: set[int] = set()

    # -- called by the sender -------------------------------------------------

    def remote_gotPage(self, page: Any) -> None:
        if self.ended or self._dropping:
            return
        size = len(page) if isinstance(page, (bytes, bytearray, str)) else 0
        if self.buffered + size > self.max_buffered or len(self._pages) >= self.max_pages:
            limits = f"{self.max_buffered} bytes or {self.max_pages} pages"
            self._overflow(f"more than {limits} of pages arrived before they were taken")
            return
        self._pages.append((page, size))
        self.buffered += size
        self._wake()

    def remote_endedPaging(self) -> None:
        if not self.ended and not self._dropping:
            self.ended = True
            self._wake()

    # -- taken by the consumer -------------------------------------------------

    def __aiter__(self) -> PageCollector:
        return self

    async def __anext__(self) -> Any:
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            if self._pages:
                page, size = self._pages.popleft()
                self.buffered -= size
                await trio.lowlevel.cancel_shielded_checkpoint()
                return page
            if self._failure is not None:
                raise self._failure()
            if self.ended:
                raise StopAsyncIteration
            await self._changed.wait()

    # -- failures ----------------------------------------------------------------

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _fail(self, failure: Callable[[], BaseException]) -> None:
        """End the iteration with ``failure()`` once the buffered pages are taken."""
        if self.ended or self._dropping:
            return
        self._dropping = True
        self._failure = failure
        self._wake()

    def _overflow(self, message: str) -> None:
        self._fail(lambda: PageBufferOverflow(message))
        self._pages.clear()
        self.buffered = 0

    def jelly_for(self, jellier: Jellier) -> Any:
        sexp = super().jelly_for(jellier)
        # Learn when the sender lets go of us (or the connection is lost), so
        # that the iteration fails instead of waiting for ever.
        invoker = jellier.invoker
        if invoker is not None and id(invoker) not in self._watched:
            self._watched.add(id(invoker))
            invoker.on_release(self, lambda: self._released(invoker))
        return sexp

    def _released(self, invoker: Invoker) -> None:
        self._watched.discard(id(invoker))
        if invoker.closed:
            self._fail(lambda: PBConnectionLost("the connection was lost before the last page"))
        else:
            self._fail(lambda: PagingError("the sender released the collector without ending the paging"))


class CallbackPageCollector(Referenceable):
    """Twisted's ``CallbackPageCollector``: calls ``callback(pages)`` after ``endedPaging``.

    It keeps every page, without limit; prefer :class:`PageCollector`.
    """

    def __init__(self, callback: Callable[[list[Any]], object]) -> None:
        self.pages: list[Any] = []
        self.callback = callback

    def remote_gotPage(self, page: Any) -> None:
        self.pages.append(page)

    def remote_endedPaging(self) -> None:
        self.callback(self.pages)


async def get_all_pages(ref: RemoteReference, method_name: str, /, *args: Any, **kwargs: Any) -> list[Any]:
    """Call ``ref``'s *method_name* with a new collector and return every page it sends.

    As Twisted's ``getAllPages``: the remote method gets a
    :class:`PageCollector` as its first argument, followed by *args* and
    *kwargs*.  Pages are usually bytes (``b"".join(pages)``).  Returns after
    ``endedPaging`` and the method's answer; raises the method's error if it
    fails, and :class:`~trio_pb.errors.PBConnectionLost` or
    :class:`PagingError` if the pages stop before the end.  All the pages
    are kept in memory; use :class:`PageCollector` directly to process them
    as they come.
    """
    collector = PageCollector()
    pages: list[Any] = []
    call_errors: list[Exception] = []
    failure: Exception | None = None

    async def call() -> None:
        try:
            await ref.call_remote(method_name, collector, *args, **kwargs)
        except Exception as exc:
            call_errors.append(exc)
            collector._fail(lambda: PagingError(f"{method_name} failed"))

    with plain_errors():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            try:
                async for page in collector:
                    pages.append(page)
            except Exception as exc:
                failure = exc
                nursery.cancel_scope.cancel()
    # An exception raised from here must not stay in this frame (or in the
    # list ``call`` shares): its traceback holds the frame, a cycle.
    error = call_errors[0] if call_errors else failure
    call_errors.clear()
    del failure
    if error is not None:
        try:
            raise error
        finally:
            del error
    return pages


getAllPages = get_all_pages
