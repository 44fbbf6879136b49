"""Cached objects: a Cacheable's state is copied once, then kept up to date.

The owner's :class:`Cacheable` is sent in full the first time a connection
sees it, and as a small ``cached`` token afterwards (docs/protocol.rst, "PB messages").
The holder gets a :class:`RemoteCache`; the owner keeps one
:class:`RemoteCacheObserver` per connection and calls ``observe_*`` methods
on the holder's copy through it.  On the holder, ``async for update in
cache.updates():`` follows those calls as they are applied.

This is the trio layer's side (the proxies' async methods, the update
iterators); what the sans-IO protocol needs lives in a module with no trio
and is re-exported here.
"""

from __future__ import annotations

import collections
from typing import Any

import attrs
import trio

from ._caches import (
    DEFAULT_UPDATE_BUFFER,
    Cacheable,
    CacheSlots,
    CacheToken,
    CacheUpdate,
    RemoteCacheObserver,
)
from .errors import DeadReferenceError, JellyError
from .flavors import RemoteCopy, method_named
from .jelly import Jellier, Jellyable, Unjellier

__all__ = ["CacheUpdate", "CacheUpdates", "Cacheable", "RemoteCache", "RemoteCacheObserver"]


class CacheUpdates:
    """An async iterator over the updates applied to one cached object.

    Its buffer is bounded: when a consumer falls behind, the oldest updates
    are dropped (and counted in the next :attr:`CacheUpdate.missed`), so a
    slow consumer never stalls the connection nor grows memory.  Iteration
    ends when the cache is released or uncached, and raises
    :class:`~trio_pb.errors.DeadReferenceError` if the connection is lost.
    """

    def __init__(self, buffer: int = DEFAULT_UPDATE_BUFFER) -> None:
        if buffer < 1:
            raise ValueError("the update buffer must hold at least one update")
        self._queue: collections.deque[CacheUpdate] = collections.deque()
        self._buffer = buffer
        self._missed = 0
        self._wakeup = trio.Event()
        self._end: BaseException | None = None
        self._ended = False

    def push(self, update: CacheUpdate) -> None:
        """Add an update just applied (the connection calls this)."""
        if self._ended:
            return
        if len(self._queue) >= self._buffer:
            # The dropped update, and those it stood for, are missed before the next one.
            lost = 1 + self._queue.popleft().missed
            if self._queue:
                self._queue[0] = attrs.evolve(self._queue[0], missed=self._queue[0].missed + lost)
            else:
                self._missed += lost
        if self._missed:
            update = attrs.evolve(update, missed=self._missed)
            self._missed = 0
        self._queue.append(update)
        self._wakeup.set()

    def close(self, error: BaseException | None = None) -> None:
        """End the iteration; *error* is raised after the buffered updates (the connection calls this)."""
        if not self._ended:
            self._ended = True
            self._end = error
            self._wakeup.set()

    def __aiter__(self) -> CacheUpdates:
        return self

    async def __anext__(self) -> CacheUpdate:
        await trio.lowlevel.checkpoint()  # even with an update buffered, as trio's async methods do
        while not self._queue:
            if self._ended:
                if self._end is not None:
                    raise self._end
                raise StopAsyncIteration
            await self._wakeup.wait()
            self._wakeup = trio.Event()
        return self._queue.popleft()


class RemoteCache(RemoteCopy, Jellyable, CacheSlots):
    """The holder's copy of a :class:`Cacheable`; register it for the Cacheable's tag.

    Every token received becomes its own proxy object; all proxies of one
    cached object share their state, and each sends one ``decache`` when
    released (:meth:`release`, ``async with``, or garbage collection as a
    fallback).  ``observe_*`` methods apply the owner's updates.
    """

    # _pb_token, per proxy and not shared, is a slot (CacheSlots).

    def set_copyable_state(self, state: Any) -> None:
        # Update in place: every proxy shares this dict with the master copy.
        if state:
            self.__dict__.update(
                {k.decode("utf-8") if isinstance(k, bytes) else k: v for k, v in state.items()}
            )

    setCopyableState = set_copyable_state

    def resolve_remote_method(self, name: str) -> Any:
        """The ``observe_<name>`` method an update from the owner runs."""
        return method_named(self, "observe_", name, no_such=AttributeError)

    def unjelly_for(self, unjellier: Unjellier, sexp: list[Any]) -> Any:
        if len(sexp) != 3:
            raise JellyError(f"a cached object takes a luid and a state: {sexp!r:.100}")
        if unjellier.invoker is None:
            raise JellyError("a cached object can only be received through a broker")
        return unjellier.invoker.unjelly_cache(type(self), unjellier, sexp)

    def updates(self, *, buffer: int = DEFAULT_UPDATE_BUFFER) -> CacheUpdates:
        """An async iterator of the updates applied from now on (see :class:`CacheUpdates`)."""
        token = self._token()
        return token.broker.cache_updates(token.luid, buffer)

    async def release(self) -> None:
        """Give this copy back to the owner (one ``decache``); calling again does nothing."""
        self.release_nowait()
        await trio.lowlevel.checkpoint()

    def release_nowait(self) -> None:
        """Like :meth:`release`, for synchronous code."""
        token = getattr(self, "_pb_token", None)
        if token is not None and not token.released:
            token.released = True
            token.broker.release_cache(token.luid)

    async def __aenter__(self) -> RemoteCache:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.release()

    def __del__(self) -> None:
        token = getattr(self, "_pb_token", None)
        if token is not None and not token.released:
            token.released = True
            token.broker.release_cache_from_gc(token.luid)

    def _token(self) -> CacheToken:
        token = getattr(self, "_pb_token", None)
        if token is None:
            raise DeadReferenceError("this RemoteCache is not attached to a connection")
        return token  # type: ignore[no-any-return]

    def jelly_for(self, jellier: Jellier) -> Any:
        token = getattr(self, "_pb_token", None)
        if token is None or not token.broker.speaks_for(jellier.invoker):
            raise JellyError("a RemoteCache can only be sent back over the connection it came from")
        return [b"lcache", token.luid]
