"""Exceptions across the wire: Twisted's CopyableFailure shape, both ways.

Toward the peer every exception travels as a ``twisted.spread.pb.CopyableFailure``
state dict, the one shape a Twisted peer always accepts and can ``trap`` by
class (docs/protocol.rst, "PB messages").  trio_pb's own error classes are named as their
Twisted counterparts, so ``failure.trap(pb.Error)`` or ``trap(NoSuchMethod)``
works on the Twisted side.  Coming back, a failure whose type is registered
here is raised as that class; anything else becomes a :class:`RemoteError`.
"""

from __future__ import annotations

import traceback
from typing import Any, Final

from . import errors
from .flavors import Copyable, RemoteCopy
from .jelly import CopyRegistry

__all__ = [
    "COPYABLE_FAILURE_TAG",
    "CopiedFailure",
    "CopyableFailure",
    "failure2Copyable",
    "failure_state",
    "register_error",
    "to_exception",
]

COPYABLE_FAILURE_TAG: Final = b"twisted.spread.pb.CopyableFailure"

# trio_pb class -> the name Twisted knows it by.
_WIRE_NAMES: dict[type[BaseException], str] = {
    errors.Error: "twisted.spread.pb.Error",
    errors.NoSuchMethod: "twisted.spread.flavors.NoSuchMethod",
    errors.DeadReferenceError: "twisted.spread.pb.DeadReferenceError",
    errors.PBConnectionLost: "twisted.spread.pb.PBConnectionLost",
    errors.ProtocolError: "twisted.spread.pb.ProtocolError",
    errors.InsecureJelly: "twisted.spread.jelly.InsecureJelly",
    errors.BananaError: "twisted.spread.banana.BananaError",
    errors.BananaEncodeError: "twisted.spread.banana.BananaError",
    errors.BananaDecodeError: "twisted.spread.banana.BananaError",
    errors.LoginFailed: "twisted.cred.error.LoginFailed",
    errors.UnauthorizedLogin: "twisted.cred.error.UnauthorizedLogin",
    errors.UnhandledCredentials: "twisted.cred.error.UnhandledCredentials",
    # trio_pb's own, under their own names: a trio_pb caller can catch them.
    errors.TooManyCalls: "trio_pb.errors.TooManyCalls",
}
# Wire name -> local class, for errors the caller can catch by their own class.
# The first class of a name wins: Twisted's BananaError arrives as the base.
_LOCAL_CLASSES: dict[str, type[BaseException]] = {}
for _cls, _name in _WIRE_NAMES.items():
    _LOCAL_CLASSES.setdefault(_name, _cls)
# trio_pb's own errors that a trio_pb peer sends, under their own names.
_LOCAL_CLASSES.update({f"{cls.__module__}.{cls.__name__}": cls for cls in (errors.CancelledByCaller,)})


def register_error(cls: type[BaseException], wire_name: str | None = None) -> None:
    """Let failures of *cls* arrive as *cls* itself instead of :class:`RemoteError`.

    *wire_name* is the qualified class name used on the wire in both
    directions (by default the class's own ``module.Name``): give a Twisted
    class's name to exchange errors with Twisted code that traps that class.
    Register the same class on both sides.
    """
    name = wire_name or f"{cls.__module__}.{cls.__name__}"
    _LOCAL_CLASSES[name] = cls
    if wire_name is not None:
        _WIRE_NAMES[cls] = wire_name


# The bases that only sort errors on this side (errors.py's families): not named on the wire.
_UNNAMED: frozenset[type] = frozenset({errors.PBError, errors.SerializationError, errors.DisconnectedError})
# Bases these classes had in Twisted's tree, or in trio_pb's before it had
# families, named in the parents right after them so that the bytes a peer
# receives stay what it always received (Twisted's DeadReferenceError is a
# pb.ProtocolError, for one).
_WIRE_BASES: dict[type, str] = {
    errors.JellyError: "twisted.spread.pb.ProtocolError",
    errors.BananaError: "twisted.spread.pb.ProtocolError",
    errors.DeadReferenceError: "twisted.spread.pb.ProtocolError",
}


def _wire_name(cls: type) -> str:
    return _WIRE_NAMES.get(cls) or f"{cls.__module__}.{cls.__name__}"


def _wire_parents(cls: type) -> list[str]:
    """The qualified names of *cls*'s classes as the peer is told them (Twisted's ``Failure.parents``)."""
    parents: list[str] = []
    for base in cls.__mro__:
        if base in _UNNAMED and base is not cls:
            continue
        for name in (_wire_name(base), _WIRE_BASES.get(base)):
            if name is not None and name not in parents:
                parents.append(name)
    return parents


def failure_state(exc: BaseException, *, unsafe_tracebacks: bool = False) -> dict[str, Any]:
    """The CopyableFailure state for *exc*, as Twisted builds it."""
    if unsafe_tracebacks:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    else:
        text = "Traceback unavailable\n"
    if isinstance(exc, errors.RemoteError):
        # A failure that came from a peer is passed on as what it was there,
        # as Twisted passes on a CopiedFailure: its class name, message, parents.
        kind, value = exc.remote_type, exc.value
        parents = list(exc.parents) or [kind.decode("utf-8", "replace")]
    else:
        kind, value = _wire_name(type(exc)).encode("utf-8"), str(exc)
        parents = _wire_parents(type(exc))
    # The keys in the order Twisted sends them, so the bytes match too.
    return {
        "count": 0,
        "type": kind,
        "value": value,
        "captureVars": False,
        "tb": None,
        "unsafeTracebacks": unsafe_tracebacks,
        "parents": parents,
        "frames": [],
        "stack": [],
        "traceback": text,
    }


class CopyableFailure(Copyable):
    """An exception to send by copy, in the shape of Twisted's ``pb.CopyableFailure``.

    The broker sends errors in this shape by itself; this is for sending an
    exception as a *value* (an argument, or inside an answer).  It goes out
    as :func:`failure_state` of :attr:`value` under
    :data:`COPYABLE_FAILURE_TAG`, and arrives as a :class:`CopiedFailure`
    (in Twisted, as a ``CopiedFailure`` too), which :func:`to_exception`
    turns into the exception to raise.
    """

    def __init__(self, exc: BaseException, *, unsafe_tracebacks: bool = False) -> None:
        #: The exception sent.
        self.value = exc
        #: Its class.
        self.type = type(exc)
        #: Whether the traceback text is sent (Twisted's ``unsafeTracebacks``).
        self.unsafe_tracebacks = unsafe_tracebacks

    def get_type_to_copy(self) -> bytes:
        return COPYABLE_FAILURE_TAG

    def get_state_to_copy(self) -> dict[str, Any]:
        return failure_state(self.value, unsafe_tracebacks=self.unsafe_tracebacks)

    def __repr__(self) -> str:
        return f"CopyableFailure({self.value!r})"


def failure2Copyable(fail: BaseException, unsafe_tracebacks: bool | int = False) -> CopyableFailure:
    """Twisted's ``pb.failure2Copyable``: a :class:`CopyableFailure` for the exception *fail*.

    trio_pb has no Failure objects, so *fail* is the exception itself.
    """
    return CopyableFailure(fail, unsafe_tracebacks=bool(unsafe_tracebacks))


class CopiedFailure(RemoteCopy):
    """A failure received from the peer; :func:`to_exception` makes it raisable."""

    def set_copyable_state(self, state: Any) -> None:
        if not isinstance(state, dict):
            state = {}
        self.state = {
            k.decode("utf-8", "replace") if isinstance(k, bytes) else k: v for k, v in state.items()
        }


def install(registry: CopyRegistry) -> None:
    """Register :class:`CopiedFailure` for the CopyableFailure tag in *registry*."""
    registry.register(COPYABLE_FAILURE_TAG, CopiedFailure)


def to_exception(payload: Any) -> BaseException:
    """The exception to raise in the caller for an ``error`` message's payload."""
    if isinstance(payload, BaseException):
        return payload
    if isinstance(payload, CopiedFailure):
        state = payload.state
        remote_type = state.get("type", b"")
        if isinstance(remote_type, str):
            remote_type = remote_type.encode("utf-8")
        elif not isinstance(remote_type, bytes):
            remote_type = repr(remote_type).encode("utf-8")
        value = state.get("value", "")
        value = value if isinstance(value, str) else repr(value)
        tb = state.get("traceback", "")
        tb = tb if isinstance(tb, str) else ""
        parents = state.get("parents") or []
        parents = tuple(p.decode("utf-8", "replace") if isinstance(p, bytes) else str(p) for p in parents)
        local = _LOCAL_CLASSES.get(remote_type.decode("utf-8", "replace"))
        if local is not None:
            exc = _make(local, value)
            exc.remote_traceback = tb  # type: ignore[attr-defined]
            return exc
        return errors.RemoteError(remote_type, value, tb, parents)
    # Very old peers send a bare string.
    text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(payload)
    return errors.RemoteError(type(payload).__name__.encode(), text)


def _make(cls: type[BaseException], value: str) -> BaseException:
    try:
        return cls(value) if value else cls()
    except TypeError:
        exc = cls.__new__(cls)
        exc.args = (value,)
        return exc
