"""RemoteReference: the local handle on an object that lives on the peer.

A reference counts as one token of the peer's refcount (docs/protocol.rst, "PB messages"):
releasing it, with ``await ref.release()``, ``async with ref:``, or as a
fallback when it is garbage-collected, sends exactly one ``decref``.  The
garbage collector never does I/O itself: it only queues the decref to the
broker.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from .errors import JellyError
from .jelly import Jellier, Jellyable
from .typed import typed_reference

if TYPE_CHECKING:
    from ._connection_api import Connection
    from .broker import RemoteStream

__all__ = ["RemoteMethod", "RemoteReference"]

T = TypeVar("T")


def _named_call(coro: Coroutine[Any, Any, Any], spelling: str, name: str) -> Coroutine[Any, Any, Any]:
    """Name *coro* after the remote method it calls, for Python's "never awaited" warning.

    A call is sent only when awaited; a forgotten ``await`` sends nothing,
    and the warning Python then emits names the coroutine, so this makes it
    say which call it was (``RemoteReference.call_remote('echo')``).
    """
    if isinstance(coro, types.CoroutineType):
        # Names are built once per method: this runs on every call.
        names = _CALL_NAMES.get((spelling, name))
        if names is None:
            names = (f"{spelling}({name!r})", f"RemoteReference.{spelling}({name!r})")
            if len(_CALL_NAMES) < 4096:
                _CALL_NAMES[spelling, name] = names
        coro.__name__, coro.__qualname__ = names
    return coro


_CALL_NAMES: dict[tuple[str, str], tuple[str, str]] = {}


class RemoteReference(Jellyable):
    """A reference to an object on the peer; call it with :meth:`call_remote`.

    References to the same remote object compare and hash equal, whichever
    token they came from.
    """

    def __init__(self, broker: Connection, luid: int | bytes, *, counted: bool = True) -> None:
        self.broker = broker
        self.luid = luid
        # Named references (b"root") are not refcounted by the peer.
        self._counted = counted
        self._released = not counted

    def call_remote(self, _name: str, /, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, Any]:
        """Call ``remote_<_name>(*args, **kwargs)`` on the peer; await it for the result.

        Nothing is sent until the call is awaited (a never-awaited call
        warns, naming the method).  Raises the remote exception
        (:class:`~trio_pb.errors.RemoteError` unless its class is
        registered), or :class:`~trio_pb.errors.DeadReferenceError` if the
        connection is gone.  Cancelling the caller abandons the call; its
        answer is dropped.
        """
        return _named_call(self.broker.call(self.luid, _name, args, kwargs), "call_remote", _name)

    def stream(self, _name: str, /, *args: Any, **kwargs: Any) -> RemoteStream:
        """The remote stream of ``remote_<_name>(*args, **kwargs)``, an async generator on the peer.

        Use it as ``async with ref.stream("feed", n) as items: async for item in items: ...``;
        entering sends the call (between ``trio-pb-2`` peers only: toward any
        other it raises :class:`~trio_pb.errors.StreamsUnsupported`), leaving
        early closes the generator over there.  See the tutorial, "Streams".
        """
        return self.broker.stream(self.luid, _name, args, kwargs)

    def call_remote_no_answer(self, _name: str, /, *args: Any, **kwargs: Any) -> None:
        """Send a call that wants no answer (Twisted's ``pbanswer=False``).

        The peer runs it and sends nothing back, not even an error.
        """
        self.broker.call_no_answer(self.luid, _name, args, kwargs)

    def callRemote(self, _name: str, /, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, Any]:
        """Twisted's spelling of :meth:`call_remote`; ``pbanswer=False`` sends without waiting.

        Either way it must be awaited: nothing is sent before.
        """
        if "pbanswer" in kwargs:
            return _named_call(self._callRemote(_name, args, kwargs), "callRemote", _name)
        return _named_call(self.broker.call(self.luid, _name, args, kwargs), "callRemote", _name)

    async def _callRemote(self, name: str, args: Any, kwargs: Any) -> Any:
        if kwargs.pop("pbanswer") is False:
            self.call_remote_no_answer(name, *args, **kwargs)
            await trio.lowlevel.checkpoint()  # every async method checkpoints, as in trio
            return None
        return await self.broker.call(self.luid, name, args, kwargs)

    def remote_method(self, name: str) -> RemoteMethod:
        """A callable that calls *name* on this reference."""
        return RemoteMethod(self, name)

    remoteMethod = remote_method

    # Callable[..., T], not type[T]: mypy refuses a Protocol class where a
    # type[T] is expected (python/mypy#4717), and an interface is one.
    def typed(self, interface: Callable[..., T]) -> T:
        """This reference seen through *interface*, a :class:`typing.Protocol` of the remote methods.

        ``await ref.typed(Calculator).add(1, 2)`` is ``await ref.call_remote("add", 1, 2)``,
        with the arguments and the result checked by a type checker; a name
        the interface does not declare raises :class:`AttributeError` here.
        See :mod:`trio_pb.typed`.
        """
        return typed_reference(self, interface)

    def notify_on_disconnect(self, callback: Any) -> None:
        """Call ``callback(self)`` when the connection is lost."""
        self.broker.on_reference_disconnect(self, callback)

    def dont_notify_on_disconnect(self, callback: Any) -> None:
        """Undo :meth:`notify_on_disconnect`; raises ValueError if *callback* was not registered."""
        self.broker.cancel_reference_disconnect(self, callback)

    notifyOnDisconnect = notify_on_disconnect
    dontNotifyOnDisconnect = dont_notify_on_disconnect

    async def release(self) -> None:
        """Give this token back to the peer (one ``decref``); calling again does nothing."""
        self.release_nowait()
        await trio.lowlevel.checkpoint()

    def disown(self) -> None:
        """Forget this token without sending anything (its release is sent another way)."""
        if not self._released:
            self._released = True
            self.broker.forget_reference(self.luid)

    def release_nowait(self) -> None:
        """Like :meth:`release`, for synchronous code: the decref is queued at once."""
        if not self._released:
            self._released = True
            self.broker.release_reference(self.luid)

    async def __aenter__(self) -> RemoteReference:
        await trio.lowlevel.checkpoint()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.release()

    def __del__(self) -> None:
        if not getattr(self, "_released", True):
            self._released = True
            self.broker.release_reference_from_gc(self.luid)

    def jelly_for(self, jellier: Jellier) -> Any:
        if not self.broker.speaks_for(jellier.invoker):
            raise JellyError("a RemoteReference can only be sent back over the connection it came from")
        return [b"local", self.luid]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RemoteReference):
            return NotImplemented
        return self.broker is other.broker and self.luid == other.luid

    def __hash__(self) -> int:
        return hash(self.luid)

    def __repr__(self) -> str:
        return f"<RemoteReference {self.luid!r}{' released' if self._released and self._counted else ''}>"


class RemoteMethod:
    """One method of a remote object, callable like a local async function."""

    def __init__(self, reference: RemoteReference, name: str) -> None:
        self.reference = reference
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, Any]:
        # The reference's own coroutine, so a forgotten await names the method.
        return self.reference.call_remote(self.name, *args, **kwargs)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RemoteMethod):
            return NotImplemented
        return self.reference == other.reference and self.name == other.name

    def __hash__(self) -> int:
        return hash((self.reference, self.name))
