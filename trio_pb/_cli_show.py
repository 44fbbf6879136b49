"""How the command line shows values of classes it does not have: copies and PB reference tokens.

``trio-pb call`` receives real answers, and ``trio-pb decode --unjelly`` rebuilds
the values in captured bytes; either may meet copies of classes this process
never registered, which are shown for what they are rather than refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import JellyError
from .jelly import CopyRegistry, Jellier, Unjellier

__all__ = ["AnyCopies", "Copy", "Token", "Tokens"]


class Copy:
    """A copy of a remote object whose class this process does not know: its tag and state.

    A Cacheable's copy also has the *luid* the sender keeps it under.
    """

    tag: str
    state: Any
    luid: int | None

    def unjelly_for(self, unjellier: Unjellier, sexp: list[Any]) -> Copy:
        self.tag = sexp[0].decode("utf-8", "replace")
        # [tag, state], or [tag, luid, state] for the first copy of a Cacheable.
        if not (len(sexp) == 2 or (len(sexp) == 3 and type(sexp[1]) is int)):
            raise JellyError(f"a copy of {self.tag} is [tag, state] or [tag, luid, state], not {sexp!r:.100}")
        self.luid = sexp[1] if len(sexp) == 3 else None
        self.state = None
        unjellier.when_ready(unjellier.unjelly(sexp[-1]), self._set)
        return self

    def _set(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        cached = "" if self.luid is None else f" (cached, luid {self.luid})"
        return f"<copy of {self.tag}{cached} {self.state!r}>"


class AnyCopies(CopyRegistry):
    """A registry that rebuilds any copy of an unregistered class as a :class:`Copy`, for display.

    A copy's tag is its class's qualified name, so it has a dot, which jelly's
    own tags do not.  No class of the sender's choosing is ever created.
    """

    def lookup_class(self, tag: bytes) -> type[Any] | None:
        cls = super().lookup_class(tag)
        if cls is None and b"." in tag and super().lookup_factory(tag) is None:
            return Copy
        return cls

    def __contains__(self, tag: object) -> bool:
        return super().__contains__(tag) or (isinstance(tag, bytes) and b"." in tag)


class Token:
    """A PB reference token (``remote``, ``local``, ``cached``, ``lcache``) in captured bytes."""

    def __init__(self, sexp: list[Any]) -> None:
        self.kind = sexp[0].decode("utf-8", "replace")
        self.luid = sexp[1] if len(sexp) > 1 else None

    def __repr__(self) -> str:
        return f"<{self.kind} {self.luid!r}>"


class Tokens:
    """The unjelly invoker of ``decode --unjelly``: reference tokens become :class:`Token` s (no broker).

    It only reads: jellying through it (which decode never does) is refused.
    """

    serializing_perspective: Any = None
    closed = True

    def unjelly_pb_tag(self, unjellier: Unjellier, sexp: list[Any]) -> Token:
        return Token(sexp)

    def unjelly_cache(self, cls: Any, unjellier: Unjellier, sexp: list[Any]) -> Any:
        # A registered RemoteCache's first copy: shown like any other copy.
        return Copy().unjelly_for(unjellier, sexp)

    def on_release(self, obj: Any, callback: Callable[[], Any]) -> None:
        raise JellyError("decoded bytes hold no objects to release")

    def register_reference(self, obj: Any) -> int:
        raise JellyError("decoded bytes cannot be sent references")

    def jelly_cacheable(self, cacheable: Any, jellier: Jellier) -> Any:
        raise JellyError("decoded bytes cannot be sent copies")
