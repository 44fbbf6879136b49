"""Cached objects, the part with no trio: a Cacheable's state is copied once, then kept up to date.

The owner's :class:`Cacheable` is sent in full the first time a connection
sees it, and as a small ``cached`` token afterwards (docs/protocol.rst, "PB messages").
The holder gets a :class:`RemoteCache`; the owner keeps one
:class:`RemoteCacheObserver` per connection and calls ``observe_*`` methods
on the holder's copy through it.  On the holder, ``async for update in
cache.updates():`` follows those calls as they are applied (the iterator,
:class:`~trio_pb.cache.CacheUpdates`, belongs to the trio layer: the
connection makes it).  The sans-IO protocol uses the bookkeeping here
(:func:`new_proxy`, :func:`observers_of`), so nothing here imports trio;
the public names are re-exported by :mod:`trio_pb.cache`.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from .errors import LocalProtocolError
from .flavors import Copyable
from .jelly import Jellier

if TYPE_CHECKING:
    from ._connection_api import Caller, Connection

__all__ = [
    "DEFAULT_UPDATE_BUFFER",
    "CacheSlots",
    "CacheToken",
    "CacheUpdate",
    "Cacheable",
    "RemoteCacheObserver",
    "new_proxy",
    "observers_of",
]

#: Updates buffered per ``updates()`` iterator before the oldest are dropped.
DEFAULT_UPDATE_BUFFER = 256


class CacheSlots:
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


class Cacheable(Copyable, CacheSlots):
    """An object whose copies on the peers are kept up to date through observers.

    Override :meth:`get_state_to_cache_and_observe_for` to choose the state
    sent to each peer; the observers of the connections that hold a copy
    are in :attr:`observers`, and :meth:`broadcast` calls an ``observe_*``
    method on all of them.  :meth:`stopped_observing` runs when a peer
    released its last copy or went away.
    """

    # _pb_observers is a slot (CacheSlots): __dict__ is the state sent by default.
    _pb_observers: set[RemoteCacheObserver]

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
            return frozenset(observers_of(self))

    @observers.setter
    def observers(self, value: Any) -> None:
        self._pb_user_observers = value

    @observers.deleter
    def observers(self) -> None:
        with contextlib.suppress(AttributeError):
            del self._pb_user_observers

    def broadcast(self, _name: str, /, *args: Any, **kwargs: Any) -> None:
        """Call ``observe_<_name>`` on every copy, without waiting for answers."""
        for observer in list(observers_of(self)):
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

    def __init__(self, broker: Caller, cacheable: Cacheable, perspective: Any) -> None:
        self.broker = broker
        self.cacheable = cacheable
        self.perspective = perspective

    async def call_remote(self, _name: str, /, *args: Any, **kwargs: Any) -> Any:
        """Call ``observe_<_name>`` on the peer's copy and return its result."""
        return await self.broker.call(self._luid(), _name, args, kwargs, command=b"cachemessage")

    def call_remote_no_answer(self, _name: str, /, *args: Any, **kwargs: Any) -> None:
        """Call ``observe_<_name>`` on the peer's copy without waiting for an answer."""
        self.broker.call_no_answer(self._luid(), _name, args, kwargs, command=b"cachemessage")

    async def callRemote(self, _name: str, /, *args: Any, **kwargs: Any) -> Any:
        """Twisted's spelling of :meth:`call_remote`; ``pbanswer=False`` sends without waiting."""
        if kwargs.pop("pbanswer", True) is False:
            self.call_remote_no_answer(_name, *args, **kwargs)
            return None
        return await self.call_remote(_name, *args, **kwargs)

    def _luid(self) -> int:
        luid = self.broker.cache_luid(self.cacheable)
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


@attrs.define(eq=False)
class CacheToken:
    """One ``decache`` owed to the owner, held by one proxy (a RemoteCache) of a cached object."""

    #: The connection the decache goes to.
    broker: Connection
    luid: int
    released: bool = False

    def disown(self) -> None:
        """Forget the decache: it was given back another way, or never owed."""
        self.released = True


def observers_of(cacheable: Cacheable) -> set[RemoteCacheObserver]:
    """The live set of *cacheable*'s observers (one per connection holding a copy), for the protocol."""
    try:
        return cacheable._pb_observers
    except AttributeError:
        observers: set[RemoteCacheObserver] = set()
        cacheable._pb_observers = observers
        return observers


def new_proxy(master: Any, token: CacheToken | None = None) -> Any:
    """A new proxy of the cached object *master*: of its class, sharing its state, not initialised.

    Every ``cached`` token from the peer becomes its own proxy, holding the
    *token* of the one ``decache`` it owes (None: it owes nothing, as when a
    protocol is driven by hand); the proxies share one ``__dict__``, so an
    update applied through any of them is seen by all.
    """
    cls: Any = type(master)
    proxy = cls.__new__(cls)
    proxy.__dict__ = master.__dict__
    if token is not None:
        proxy._pb_token = token
    return proxy
