"""The typed interfaces between trio_pb's layers.

Two directions, both declared here so that neither side reaches into the
other's privates:

- :class:`ProtocolDriver`: what the sans-IO :class:`~trio_pb.protocol.PBProtocol`
  asks of whoever drives it (the broker): to make the objects that tokens
  from the peer become, and to hear that a cached object ended.  The
  protocol builds no trio-layer object itself.
- :class:`Connection`: what references, cached objects, paging and login
  need from a connection (:class:`~trio_pb.broker.Broker` implements it).

Nothing here imports trio: the protocol imports this module.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .broker import RemoteStream
    from .cache import CacheUpdates
    from .conduct import PeerConduct
    from .references import RemoteReference

__all__ = ["Caller", "Connection", "Disownable", "ProtocolDriver"]


class Disownable(Protocol):
    """Something that owes the peer one release, which it can forget (its release went another way)."""

    def disown(self) -> None: ...


class ProtocolDriver(Protocol):
    """What a :class:`~trio_pb.protocol.PBProtocol` needs from its driver."""

    def make_reference(self, luid: int) -> Disownable:
        """The object a ``remote`` token for *luid* becomes (it owes one ``decref``)."""
        ...

    def make_cache_proxy(self, master: Any, luid: int) -> tuple[Any, Disownable]:
        """A new proxy of the cached *master* (it owes one ``decache``), and the token it owes it by."""
        ...

    def make_cache_observer(self, cacheable: Any, perspective: Any) -> Any:
        """The observer through which *cacheable*'s owner updates the peer's new copy."""
        ...

    def cache_ended(self, luid: int) -> None:
        """The peer uncached *luid*: no update of it will come."""
        ...

    def blobs_queued(self) -> None:
        """A message waits for its blobs: call ``pump_blob()`` whenever the rest of the output is out."""
        ...


class Caller(Protocol):
    """What a cached object's observer needs: to call the peer's copy."""

    @property
    def connected(self) -> bool:
        """Whether the connection is still up."""
        ...

    def call(
        self, target: int | bytes, name: str, args: Any, kwargs: Any, *, command: bytes = b"message"
    ) -> Coroutine[Any, Any, Any]:
        """Call *name* on the peer's object *target*; await it for the answer."""
        ...

    def call_no_answer(
        self, target: int | bytes, name: str, args: Any, kwargs: Any, *, command: bytes = b"message"
    ) -> None:
        """Send a call that wants no answer."""
        ...

    def cache_luid(self, cacheable: Any) -> int | None:
        """The luid under which the peer holds copies of *cacheable*, if it does."""
        ...


class Connection(Caller, Protocol):
    """What references, cached objects, paging and login need from one PB connection."""

    #: Who the peer is, for log lines.
    peer: str

    @property
    def conduct(self) -> PeerConduct:
        """The record of the peer's misbehaviour, for bounded logging."""
        ...

    @property
    def peer_address(self) -> str | None:
        """The peer's IP address, or None (a unix socket, a stream in memory)."""
        ...

    def release_reference(self, luid: int | bytes) -> None:
        """Send one ``decref`` for *luid* now."""
        ...

    def release_reference_from_gc(self, luid: int | bytes) -> None:
        """Queue one ``decref`` for *luid*, sent before the next message; safe from a finalizer."""
        ...

    def forget_reference(self, luid: int | bytes) -> None:
        """A reference's token for *luid* was given back another way: count it released, send nothing."""
        ...

    def release_cache(self, luid: int) -> None:
        """Send one ``decache`` for *luid* now."""
        ...

    def release_cache_from_gc(self, luid: int) -> None:
        """Queue one ``decache`` for *luid*, sent before the next message; safe from a finalizer."""
        ...

    def cache_updates(self, luid: int, buffer: int) -> CacheUpdates:
        """An iterator of the updates applied to the cached object *luid* from now on."""
        ...

    def speaks_for(self, invoker: Any) -> bool:
        """Whether *invoker* (a jellier's) serializes for this connection."""
        ...

    def stream(self, target: int | bytes, name: str, args: Any, kwargs: Any) -> RemoteStream:
        """The remote stream of *name* on the peer's object *target* (an async context manager)."""
        ...

    def on_reference_disconnect(self, reference: Any, callback: Callable[[Any], object]) -> None:
        """Call ``callback(reference)`` when the connection is lost."""
        ...

    def cancel_reference_disconnect(self, reference: Any, callback: Callable[[Any], object]) -> None:
        """Undo :meth:`on_reference_disconnect`; ValueError if *callback* was not registered."""
        ...

    def notify_on_disconnect(self, callback: Callable[[], Any]) -> None:
        """Call ``callback()`` when the connection is lost."""
        ...

    def dont_notify_on_disconnect(self, callback: Callable[[], Any]) -> None:
        """Undo :meth:`notify_on_disconnect`."""
        ...

    async def root_object(self) -> RemoteReference:
        """The peer's root object."""
        ...

    async def drain(self) -> None:
        """Wait until what is queued for the peer has been handed to the stream."""
        ...

    async def aclose(self) -> None:
        """Close the connection."""
        ...
