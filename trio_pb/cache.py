"""Cached objects: a Cacheable's state is copied once, then kept up to date.

The owner's :class:`Cacheable` is sent in full the first time a connection
sees it, and as a small ``cached`` token afterwards (pb-protocol.md 3.5, 4).
The holder gets a :class:`RemoteCache`; the owner keeps one
:class:`RemoteCacheObserver` per connection and calls ``observe_*`` methods
on the holder's copy through it.  On the holder, ``async for update in
cache.updates():`` follows those calls as they are applied.
"""

from __future__ import annotations

import collections
import contextlib
from typing import TYPE_CHECKING, Any, ClassVar

import attrs
import trio

from .errors import DeadReferenceError, JellyError, LocalProtocolError
from .flavors import Copyable, RemoteCopy, _method_named
from .jelly import Jellier, Jellyable, Unjellier

if TYPE_CHECKING:
    from .broker import Broker

__all__ = ["CacheUpdate", "CacheUpdates", "Cacheable", "RemoteCache", "RemoteCacheObserver"]

#: Updates buffered per ``updates()`` iterator before the oldest are dropped.
DEFAULT_UPDATE_BUFFER = 256


class _CacheSlots:
    """The per-object fields of both cache flavours, kept out of ``__dict__``.

    Declared in this one base rather than in each flavour: two bases that
    each add slots cannot be combined, and a class may well be a Cacheable
    and a RemoteCache at once (sent by one side, mirrored by the other).
    """

    # _pb_observers: a Cacheable's observers; _pb_user_observers: what ported
    # code assigned to ``observers`` (its own bookkeeping, kept apart from
    # ours); _pb_token: which decache a RemoteCache proxy owes (its __dict__
    # is shared with the other proxies).
    __slots__ = ("_pb_observers", "_pb_token", "_pb_user_observers")


class Cacheable(Copyable, _CacheSlots):
    """An object whose copies on the peers are kept up to date through observers.

    Override :meth:`get_state_to_cache_and_observe_for` to choose the state
    sent to each peer; the observers of the connections that hold a copy
    are in :attr:`observers`, and :meth:`broadcast` calls an ``observe_*``
    method on all of them.  :meth:`stopped_observing` runs when a peer
    released its last copy or went away.
    """

    # _pb_observers is a slot (_CacheSlots): __dict__ is the state sent by default.

    _twisted_aliases: ClassVar[dict[str, str]] = {
        **Copyable._twisted_aliases,
        "get_state_to_cache_and_observe_for": "getStateToCacheAndObserveFor",
        "stopped_observing": "stoppedObserving",
    }

    def get_state_to_cache_and_observe_for(self, perspective: Any, observer: RemoteCacheObserver) -> Any:
        """The state for a new copy on the peer that *observer* updates."""
        return self.get_state_to_copy_for(perspective)

    def stopped_observing(self, perspective: Any, observer: RemoteCacheObserver) -> None:
        """*observer*'s peer has no copy any more (released, or disconnected)."""

    getStateToCacheAndObserveFor = get_state_to_cache_and_observe_for
    stoppedObserving = stopped_observing

    @property
    def observers(self) -> Any:
        """The observers of every connection that holds a copy now.

        Twisted code keeps its own list here (``self.observers = []``, then
        ``append`` / ``remove``); once assigned, this is that object, as in
        Twisted.  trio_pb's own bookkeeping, which :meth:`broadcast` uses,
        is kept apart and unaffected.  ``del cacheable.observers`` goes back
        to the live frozenset.
        """
        try:
            return self._pb_user_observers
        except AttributeError:
            return frozenset(self._observer_set())

    @observers.setter
    def observers(self, value: Any) -> None:
        self._pb_user_observers = value

    @observers.deleter
    def observers(self) -> None:
        with contextlib.suppress(AttributeError):
            del self._pb_user_observers

    def _observer_set(self) -> set[RemoteCacheObserver]:
        try:
            return self._pb_observers
        except AttributeError:
            self._pb_observers: set[RemoteCacheObserver] = set()
            return self._pb_observers

    def broadcast(self, _name: str, /, *args: Any, **kwargs: Any) -> None:
        """Call ``observe_<_name>`` on every copy, without waiting for answers."""
        for observer in list(self._observer_set()):
            if observer.broker.connected:
                observer.call_remote_no_answer(_name, *args, **kwargs)

    def jelly_for(self, jellier: Jellier) -> Any:
        invoker = jellier.invoker
        if invoker is None:
            return super().jelly_for(jellier)
        return invoker.jelly_cacheable(self, jellier)


class RemoteCacheObserver:
    """The owner's handle on one connection's copy of a Cacheable.

    Observers of the same Cacheable, connection and perspective compare
    equal, so one stored in :meth:`Cacheable.get_state_to_cache_and_observe_for`
    can be found again in :meth:`Cacheable.stopped_observing`.
    """

    def __init__(self, broker: Broker, cacheable: Cacheable, perspective: Any) -> None:
        self.broker = broker
        self.cacheable = cacheable
        self.perspective = perspective

    async def call_remote(self, _name: str, /, *args: Any, **kwargs: Any) -> Any:
        """Call ``observe_<_name>`` on the peer's copy and return its result."""
        return await self.broker._call(self._luid(), _name, args, kwargs, command=b"cachemessage")

    def call_remote_no_answer(self, _name: str, /, *args: Any, **kwargs: Any) -> None:
        """Call ``observe_<_name>`` on the peer's copy without waiting for an answer."""
        self.broker._call_no_answer(self._luid(), _name, args, kwargs, command=b"cachemessage")

    async def callRemote(self, _name: str, /, *args: Any, **kwargs: Any) -> Any:
        """Twisted's spelling of :meth:`call_remote`; ``pbanswer=False`` sends without waiting."""
        if kwargs.pop("pbanswer", True) is False:
            self.call_remote_no_answer(_name, *args, **kwargs)
            return None
        return await self.call_remote(_name, *args, **kwargs)

    def _luid(self) -> int:
        luid = self.broker._protocol.cache_luid(self.cacheable)
        if luid is None:
            raise LocalProtocolError("the peer holds no copy of this cacheable (never sent, or released)")
        return luid

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RemoteCacheObserver):
            return NotImplemented
        return (
            self.broker is other.broker
            and self.cacheable is other.cacheable
            and self.perspective is other.perspective
        )

    def __hash__(self) -> int:
        return hash((id(self.broker), id(self.cacheable), id(self.perspective)))


@attrs.frozen
class CacheUpdate:
    """One ``observe_*`` call applied to a RemoteCache.

    *missed* counts the updates dropped just before this one because the
    iterator's buffer was full; the cache's state already includes them.
    """

    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    missed: int = 0


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

    def _push(self, update: CacheUpdate) -> None:
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

    def _close(self, error: BaseException | None = None) -> None:
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


@attrs.define(eq=False)
class _CacheToken:
    """One ``decache`` owed to the owner, held by one proxy."""

    broker: Any
    luid: int
    released: bool = False

    def disown(self) -> None:
        self.released = True


class RemoteCache(RemoteCopy, Jellyable, _CacheSlots):
    """The holder's copy of a :class:`Cacheable`; register it for the Cacheable's tag.

    Every token received becomes its own proxy object; all proxies of one
    cached object share their state, and each sends one ``decache`` when
    released (:meth:`release`, ``async with``, or garbage collection as a
    fallback).  ``observe_*`` methods apply the owner's updates.
    """

    # _pb_token, per proxy and not shared, is a slot (_CacheSlots).

    def set_copyable_state(self, state: Any) -> None:
        # Update in place: every proxy shares this dict with the master copy.
        if state:
            self.__dict__.update(
                {k.decode("utf-8") if isinstance(k, bytes) else k: v for k, v in state.items()}
            )

    setCopyableState = set_copyable_state

    def resolve_remote_method(self, name: str) -> Any:
        """The ``observe_<name>`` method an update from the owner runs."""
        return _method_named(self, "observe_", name, no_such=AttributeError)

    def unjelly_for(self, unjellier: Unjellier, sexp: list[Any]) -> Any:
        if len(sexp) != 3:
            raise JellyError(f"a cached object takes a luid and a state: {sexp!r:.100}")
        if unjellier.invoker is None:
            raise JellyError("a cached object can only be received through a broker")
        return unjellier.invoker.unjelly_cache(type(self), unjellier, sexp)

    def updates(self, *, buffer: int = DEFAULT_UPDATE_BUFFER) -> CacheUpdates:
        """An async iterator of the updates applied from now on (see :class:`CacheUpdates`)."""
        token = self._token()
        updates = CacheUpdates(buffer)
        token.broker._protocol.add_cache_listener(token.luid, updates)
        return updates

    async def release(self) -> None:
        """Give this copy back to the owner (one ``decache``); calling again does nothing."""
        self.release_nowait()
        await trio.lowlevel.checkpoint()

    def release_nowait(self) -> None:
        """Like :meth:`release`, for synchronous code."""
        token = getattr(self, "_pb_token", None)
        if token is not None and not token.released:
            token.released = True
            token.broker._decache(token.luid)

    async def __aenter__(self) -> RemoteCache:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.release()

    def __del__(self) -> None:
        token = getattr(self, "_pb_token", None)
        if token is not None and not token.released:
            token.released = True
            token.broker._decache_from_gc(token.luid)

    def _token(self) -> _CacheToken:
        token = getattr(self, "_pb_token", None)
        if token is None:
            raise DeadReferenceError("this RemoteCache is not attached to a connection")
        return token  # type: ignore[no-any-return]

    def jelly_for(self, jellier: Jellier) -> Any:
        token = getattr(self, "_pb_token", None)
        if token is None or jellier.invoker is not token.broker._protocol:
            raise JellyError("a RemoteCache can only be sent back over the connection it came from")
        return [b"lcache", token.luid]
