"""The kinds of objects PB sends: by copy now, by reference and by cache with the broker.

Each class here has snake_case hooks; the Twisted spellings
(``getStateToCopy``, ``setCopyableState`` ...) are aliases, and a subclass
may override either spelling: :class:`TwistedHooks` makes the other one
follow, so code ported from Twisted keeps working unchanged.
"""

from __future__ import annotations

from functools import partial
from typing import Any, ClassVar, Protocol, runtime_checkable

from .errors import JellyError, NoSuchMethod
from .jelly import Jellier, Jellyable, Unjellier, Unjellyable, qual

__all__ = [
    "AsReferenceable",
    "Avatar",
    "Copyable",
    "IPBRoot",
    "Referenceable",
    "RemoteCopy",
    "Root",
    "Serializable",
    "TwistedHooks",
    "ViewPoint",
    "Viewable",
]

#: Twisted's ``flavors.Serializable``, the base of every kind of object PB
#: sends: here that base is :class:`~trio_pb.jelly.Jellyable`.  Subclass one of
#: the flavours (Copyable, Referenceable, Cacheable ...) rather than this.
Serializable = Jellyable


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
        # Every base's aliases, not just the first one's: a class can be both
        # a Copyable and a RemoteCopy.
        aliases: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            aliases.update(klass.__dict__.get("_twisted_aliases", {}))
        own = cls.__dict__
        for snake, camel in aliases.items():
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
        if not state and not isinstance(state, dict):
            state = {}  # None (an empty __dict__ from Python >= 3.11); an empty dict is kept below
        if any(isinstance(key, bytes) for key in state):
            state = {key.decode("utf-8") if isinstance(key, bytes) else key: v for key, v in state.items()}
        # Adopt the dict itself: shared references still being resolved fill it in later.
        self.__dict__ = state

    setCopyableState = set_copyable_state

    def set_state_for(self, unjellier: Unjellier, state: Any) -> None:
        self.set_copyable_state(state)


def method_named(obj: Any, prefix: str, name: str, *, no_such: type[Exception]) -> Any:
    """*obj*'s method ``<prefix><name>`` that a peer may call, or raise *no_such* (for every flavour)."""
    method = getattr(obj, prefix + name, None) if name.isidentifier() else None
    if method is None or not callable(method):
        raise no_such(f"No such method: {prefix}{name}")
    return method


class Referenceable(TwistedHooks, Jellyable):
    """An object passed by reference: the peer gets a RemoteReference and calls ``remote_*``.

    Methods may be plain functions, which answer in order, inline, or
    ``async def``, which run as tasks in the broker's nursery.
    """

    _twisted_aliases: ClassVar[dict[str, str]] = {"process_unique_id": "processUniqueID"}

    #: The perspective used to jelly what this object's methods return.
    answer_perspective: Any = None

    def resolve_remote_method(self, name: str) -> Any:
        """The callable that runs when the peer calls *name*; raises NoSuchMethod."""
        return method_named(self, "remote_", name, no_such=NoSuchMethod)

    def process_unique_id(self) -> Any:
        """The key under which the broker counts references to this object."""
        return id(self)

    processUniqueID = process_unique_id

    def jelly_for(self, jellier: Jellier) -> Any:
        if jellier.invoker is None:
            raise JellyError(f"a {type(self).__name__} can only be sent through a broker")
        return [b"remote", jellier.invoker.register_reference(self)]


@runtime_checkable
class IPBRoot(Protocol):
    """What a server broker's *root* may be: an object that makes the root for each connection.

    Twisted's ``IPBRoot``.  :class:`Root` and :class:`~trio_pb.cred.Portal`
    are such objects; the broker calls ``root_object(broker)`` once per
    connection and serves what it returns.  A root without the method is
    served as it is.
    """

    def root_object(self, broker: Any) -> Any: ...


class AsReferenceable(Referenceable):
    """A Referenceable standing for another object: calling ``name`` runs ``obj.<prefix>_<name>``.

    Twisted's ``AsReferenceable(obj, messageType)``.  With the default
    prefix ``"remote"``, *obj* answers like a Referenceable without being
    one (an unknown name fails with NoSuchMethod); with ``"perspective"`` its
    ``perspective_*`` methods are called, and so on.  Answers are jellied
    with *obj*'s ``answer_perspective``, if it has one (an Avatar's is
    itself).  Each AsReferenceable is a reference of its own.
    """

    def __init__(self, obj: Any, prefix: str = "remote") -> None:
        self.obj = obj
        self.prefix = prefix
        self.answer_perspective = getattr(obj, "answer_perspective", None)

    def resolve_remote_method(self, name: str) -> Any:
        # The errors Twisted's dispatchers give: NoSuchMethod for remote_*, AttributeError
        # (as Avatar and ViewPoint do) for the other prefixes.
        no_such: type[Exception] = NoSuchMethod if self.prefix == "remote" else AttributeError
        return method_named(self.obj, self.prefix + "_", name, no_such=no_such)

    def __repr__(self) -> str:
        return f"AsReferenceable({self.obj!r}, {self.prefix!r})"


class Root(Referenceable):
    """The object a server offers first; clients get it with ``await broker.root_object()``."""

    _twisted_aliases: ClassVar[dict[str, str]] = {"root_object": "rootObject"}

    def root_object(self, broker: Any) -> Referenceable:
        """The root to serve on *broker*; the default shares this object with every connection."""
        return self

    rootObject = root_object


class ViewPoint(Referenceable):
    """A Viewable as seen by one perspective: calls run ``view_*(perspective, ...)``."""

    def __init__(self, perspective: Any, viewable: Viewable) -> None:
        self.perspective = perspective
        self.viewable = viewable
        self.answer_perspective = perspective

    def process_unique_id(self) -> Any:
        return (id(self.perspective), id(self.viewable))

    def resolve_remote_method(self, name: str) -> Any:
        method = method_named(self.viewable, "view_", name, no_such=AttributeError)
        return partial(method, self.perspective)


class Viewable(Referenceable):
    """A Referenceable whose ``view_*`` methods learn which perspective (avatar) called them.

    The perspective is the one in force when the object was sent: the avatar
    if a ``perspective_*`` method returned it, otherwise ``None``.
    """

    def jelly_for(self, jellier: Jellier) -> Any:
        perspective = jellier.invoker.serializing_perspective if jellier.invoker is not None else None
        return ViewPoint(perspective, self).jelly_for(jellier)


class Avatar(Referenceable):
    """What a login returns: the peer calls its ``perspective_*`` methods."""

    @property
    def answer_perspective(self) -> Any:
        return self

    def resolve_remote_method(self, name: str) -> Any:
        return method_named(self, "perspective_", name, no_such=AttributeError)
