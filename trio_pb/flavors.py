"""The kinds of objects PB sends: by copy now, by reference and by cache with the broker.

Each class here has snake_case hooks; the Twisted spellings
(``getStateToCopy``, ``setCopyableState`` ...) are aliases, and a subclass
may override either spelling: :class:`TwistedHooks` makes the other one
follow, so code ported from Twisted keeps working unchanged.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .jelly import Jellier, Jellyable, Unjellier, Unjellyable, qual

__all__ = ["Copyable", "RemoteCopy", "TwistedHooks"]


class TwistedHooks:
    """Keeps each snake_case hook and its Twisted alias pointing at one function.

    Subclasses list their hooks in ``_twisted_aliases`` (snake name to
    Twisted name).  When a subclass defines one spelling, the other is set
    to the same function, so calls by either name, and ``super()`` calls,
    reach the same code.
    """

    _twisted_aliases: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for snake, camel in cls._twisted_aliases.items():
            own = cls.__dict__
            if camel in own and snake not in own:
                setattr(cls, snake, own[camel])
            elif snake in own and camel not in own:
                setattr(cls, camel, own[snake])


class Copyable(TwistedHooks, Jellyable):
    """An object sent by copy: the peer gets its state, rebuilt as a :class:`RemoteCopy`.

    The tag defaults to the class's qualified name and the state to
    ``__dict__``; override :meth:`get_state_to_copy_for` to send something
    that depends on the perspective (the avatar) it is sent to.
    """

    _twisted_aliases: ClassVar[dict[str, str]] = {
        "get_state_to_copy": "getStateToCopy",
        "get_state_to_copy_for": "getStateToCopyFor",
        "get_type_to_copy": "getTypeToCopy",
        "get_type_to_copy_for": "getTypeToCopyFor",
    }

    def get_state_to_copy(self) -> Any:
        return self.__dict__

    def get_state_to_copy_for(self, perspective: Any) -> Any:
        return self.get_state_to_copy()

    def get_type_to_copy(self) -> bytes:
        return qual(type(self)).encode("utf-8")

    def get_type_to_copy_for(self, perspective: Any) -> bytes:
        return self.get_type_to_copy()

    getStateToCopy = get_state_to_copy
    getStateToCopyFor = get_state_to_copy_for
    getTypeToCopy = get_type_to_copy
    getTypeToCopyFor = get_type_to_copy_for

    def jelly_for(self, jellier: Jellier) -> Any:
        invoker = jellier.invoker
        perspective = invoker.serializing_perspective if invoker is not None else None

        def build() -> list[Any]:
            tag = self.get_type_to_copy_for(perspective)
            return [tag, jellier.jelly(self.get_state_to_copy_for(perspective))]

        return jellier.jelly_shared(self, build)


class RemoteCopy(TwistedHooks, Unjellyable):
    """The local class a :class:`Copyable` is rebuilt as; register it for the copy's tag.

    It is created without calling ``__init__``; :meth:`set_copyable_state`
    then receives the state.  The default adopts a dict state as
    ``__dict__``, with bytes keys (from Python 2 peers) turned into str.
    """

    _twisted_aliases: ClassVar[dict[str, str]] = {"set_copyable_state": "setCopyableState"}

    def set_copyable_state(self, state: Any) -> None:
        if not state:
            state = {}
        if any(isinstance(key, bytes) for key in state):
            state = {key.decode("utf-8") if isinstance(key, bytes) else key: v for key, v in state.items()}
        # Adopt the dict itself: shared references still being resolved fill it in later.
        self.__dict__ = state

    setCopyableState = set_copyable_state

    def set_state_for(self, unjellier: Unjellier, state: Any) -> None:
        self.set_copyable_state(state)
