"""Jelly: Python object graphs to s-expressions and back, as Twisted does it.

:func:`jelly` turns a value into nested lists of ``bytes``, ``int`` and
``float`` that banana can carry; :func:`unjelly` turns them back
(docs/protocol.rst, "Jelly: objects").  Shared objects and cycles survive the
trip through ``reference``/``dereference`` tags.

Unjellying is where a peer can attack: :class:`SecurityOptions` decides which
tags, modules and classes may be created, and the default,
:data:`global_security`, allows data types and PB's reference tags but imports
nothing by name.  Every malformed or disallowed input raises
:class:`~trio_pb.errors.JellyError` (or its subclass
:class:`~trio_pb.errors.InsecureJelly`), never another exception.

Like banana, this module is sans-IO.  The broker takes part through an
*invoker*: Jellyable objects ask ``jellier.invoker`` for luids, and the PB
reference tags (``remote``, ``local``, ``cached``, ``lcache``) are handed to
``invoker.unjelly_pb_tag``.
"""

from __future__ import annotations

import datetime
import decimal
import importlib
import time
import types
import warnings
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, Final, Protocol

from .banana import DEPTH_LIMIT
from .errors import DecodeBudgetExceeded, InsecureJelly, JellyError

__all__ = [
    "PB_REFERENCE_TAGS",
    "DummySecurityOptions",
    "Jellier",
    "Jellyable",
    "SecurityOptions",
    "Unjellier",
    "Unjellyable",
    "Unpersistable",
    "CopyRegistry",
    "global_security",
    "copy_registry",
    "jelly",
    "unjelly",
    "qual",
    "set_unjellyable_for_class",
    "set_unjellyable_factory_for_class",
    "set_unjellyable_for_class_tree",
    "setUnjellyableForClass",
    "setUnjellyableFactoryForClass",
    "setUnjellyableForClassTree",
]

#: The tags of PB's reference tokens, which only a broker can resolve.
PB_REFERENCE_TAGS: Final = frozenset({b"remote", b"local", b"cached", b"lcache"})

_BASIC_TYPES: Final = (
    b"None",
    b"bool",
    b"boolean",
    b"string",
    b"str",
    b"int",
    b"float",
    b"datetime",
    b"time",
    b"date",
    b"timedelta",
    b"NoneType",
    b"unicode",
    b"decimal",
    b"set",
    b"frozenset",
)
_CONTAINER_TYPES: Final = (
    b"dictionary",
    b"list",
    b"tuple",
    b"reference",
    b"dereference",
    b"unpersistable",
    b"persistent",
    b"long_int",
    b"long",
    b"dict",
)


def qual(cls: type) -> str:
    """The name jelly gives a class: ``module.Name`` (``__name__``, not ``__qualname__``)."""
    return f"{cls.__module__}.{cls.__name__}"


def _type_name(tag_or_class: bytes | str | type) -> bytes:
    if isinstance(tag_or_class, type):
        return qual(tag_or_class).encode("utf-8")
    if isinstance(tag_or_class, str):
        return tag_or_class.encode("utf-8")
    return bytes(tag_or_class)


# --------------------------------------------------------------------------
# Security


class SecurityOptions:
    """What unjelly may create: which tags, which modules, which classes.

    A fresh instance allows only atoms and the simple data tags (not even
    lists); :meth:`allow_basic_types` adds containers and shared references.
    A tag containing a dot names a class and passes the tag check, so the
    module and class lists are the real gate for instances.
    """

    def __init__(self) -> None:
        self.allowed_types: set[bytes] = set(_BASIC_TYPES)
        self.allowed_modules: set[str] = set()
        self.allowed_classes: set[type] = set()

    def allow_basic_types(self) -> None:
        """Allow lists, tuples, dicts, shared references and the other plain containers."""
        self.allow_types(*_CONTAINER_TYPES)

    def allow_types(self, *types_: bytes | str | type) -> None:
        """Allow these tags (given as bytes, str, or a class meaning its qualified name)."""
        self.allowed_types.update(_type_name(t) for t in types_)

    def allow_modules(self, *modules: str | types.ModuleType) -> None:
        """Allow instances of classes from these modules to be unjellied by name."""
        for module in modules:
            self.allowed_modules.add(module if isinstance(module, str) else module.__name__)

    def allow_instances_of(self, *classes: type) -> None:
        """Allow these classes to be rebuilt by name, with their modules and basic types."""
        self.allow_basic_types()
        self.allow_types(b"instance", b"class", b"classobj", b"module")
        for cls in classes:
            self.allow_types(cls)
            self.allow_modules(cls.__module__)
            self.allowed_classes.add(cls)

    def copy(self) -> SecurityOptions:
        """A separate SecurityOptions that allows the same things, to extend without sharing."""
        other = type(self).__new__(type(self))
        other.allowed_types = set(self.allowed_types)
        other.allowed_modules = set(self.allowed_modules)
        other.allowed_classes = set(self.allowed_classes)
        return other

    def is_type_allowed(self, tag: bytes) -> bool:
        """Whether an s-expression tag may be unjellied at all."""
        return tag in self.allowed_types or b"." in tag

    def is_module_allowed(self, module: str) -> bool:
        return module in self.allowed_modules

    def is_class_allowed(self, cls: type) -> bool:
        return cls in self.allowed_classes

    # Twisted's spellings.
    allowBasicTypes = allow_basic_types
    allowTypes = allow_types
    allowModules = allow_modules
    allowInstancesOf = allow_instances_of
    isTypeAllowed = is_type_allowed
    isModuleAllowed = is_module_allowed
    isClassAllowed = is_class_allowed


class DummySecurityOptions(SecurityOptions):
    """Allows everything.  Only for data you trust completely, never for a network peer."""

    def is_type_allowed(self, tag: bytes) -> bool:
        return True

    def is_module_allowed(self, module: str) -> bool:
        return True

    def is_class_allowed(self, cls: type) -> bool:
        return True

    isTypeAllowed = is_type_allowed
    isModuleAllowed = is_module_allowed
    isClassAllowed = is_class_allowed


def _make_global_security() -> SecurityOptions:
    options = SecurityOptions()
    options.allow_basic_types()
    options.allow_types(*PB_REFERENCE_TAGS)
    return options


#: The default security for every broker and for :func:`unjelly`: data types,
#: containers and PB reference tags; no modules, no classes.  To allow more on
#: one broker only, extend a copy: ``options = global_security.copy()``.
global_security: Final = _make_global_security()


# --------------------------------------------------------------------------
# The copy registry


class CopyRegistry:
    """Maps copy tags to the local classes or factories that rebuild them.

    The process-wide :data:`copy_registry` is what Twisted's
    ``setUnjellyableForClass`` fills.  A broker can be given its own registry
    instead, to decide exactly which classes its peer may create; *parent*
    lets a registry add to another one rather than replace it.  A registered
    tag is allowed by unjelly whatever the security options say:
    registering a class is the explicit permission to create it.
    """

    def __init__(self, parent: CopyRegistry | None = None) -> None:
        self.parent = parent
        self.classes: dict[bytes, type[Any]] = {}
        self.factories: dict[bytes, Callable[[Any], Any]] = {}

    def register(self, tag_or_class: bytes | str | type, cls: type) -> None:
        """Rebuild objects sent with this tag as instances of *cls*.

        *cls* is made with ``__new__`` (its ``__init__`` is not called); if it
        has ``unjelly_for`` that builds it, otherwise its state is set
        with ``__setstate__`` or by assigning ``__dict__``.
        """
        self.classes[_type_name(tag_or_class)] = cls

    def register_factory(self, tag_or_class: bytes | str | type, factory: Callable[[Any], Any]) -> None:
        """Rebuild objects sent with this tag by calling ``factory(state)``."""
        self.factories[_type_name(tag_or_class)] = factory

    def lookup_class(self, tag: bytes) -> type[Any] | None:
        cls = self.classes.get(tag)
        if cls is None and self.parent is not None:
            return self.parent.lookup_class(tag)
        return cls

    def lookup_factory(self, tag: bytes) -> Callable[[Any], Any] | None:
        factory = self.factories.get(tag)
        if factory is None and self.parent is not None:
            return self.parent.lookup_factory(tag)
        return factory

    def __contains__(self, tag: object) -> bool:
        return (
            tag in self.classes or tag in self.factories or (self.parent is not None and tag in self.parent)
        )


#: The process-wide registry (Twisted's ``unjellyableRegistry``).
copy_registry: Final = CopyRegistry()


def set_unjellyable_for_class(tag_or_class: bytes | str | type, cls: type) -> None:
    """Register *cls* in the process-wide registry to rebuild *tag_or_class*."""
    copy_registry.register(tag_or_class, cls)


def set_unjellyable_factory_for_class(
    tag_or_class: bytes | str | type, factory: Callable[[Any], Any]
) -> None:
    """Register ``factory(state)`` in the process-wide registry for *tag_or_class*."""
    copy_registry.register_factory(tag_or_class, factory)


def set_unjellyable_for_class_tree(module: types.ModuleType, base: type, prefix: str | None = None) -> None:
    """Register every subclass of *base* found in *module* under ``prefix.Name``.

    As in Twisted, *Name* is the name the class has in *module*, *prefix*
    defaults to the module's name, and an empty *prefix* gives just ``Name``.
    """
    if prefix is None:
        prefix = module.__name__
    for name, value in vars(module).items():
        if isinstance(value, type) and issubclass(value, base):
            set_unjellyable_for_class(f"{prefix}.{name}" if prefix else name, value)


setUnjellyableForClass = set_unjellyable_for_class
setUnjellyableFactoryForClass = set_unjellyable_factory_for_class
setUnjellyableForClassTree = set_unjellyable_for_class_tree


# --------------------------------------------------------------------------
# Objects that take part in jelly


class Jellyable:
    """An object that decides how it is jellied.

    The default sends ``[qualified class name, jelly(get_state_for(jellier))]``
    and, like other containers, is sent once per call and then referred to.
    """

    def get_state_for(self, jellier: Jellier) -> Any:
        return self.__dict__

    def jelly_for(self, jellier: Jellier) -> Any:
        return jellier.jelly_shared(
            self, lambda: [qual(type(self)).encode("utf-8"), jellier.jelly(self.get_state_for(jellier))]
        )


class Unjellyable:
    """A registered class that rebuilds itself from its s-expression."""

    def set_state_for(self, unjellier: Unjellier, state: Any) -> None:
        self.__dict__ = state

    def unjelly_for(self, unjellier: Unjellier, sexp: list[Any]) -> Any:
        if len(sexp) != 2:
            raise JellyError(f"{sexp[0]!r} takes exactly one state element")
        state = unjellier.unjelly(sexp[1])
        unjellier.when_ready(state, lambda s: self.set_state_for(unjellier, s))
        return self


class Unpersistable:
    """Stands in for something the sender could not or would not send."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"Unpersistable({self.reason!r})"


class Invoker(Protocol):
    """What jelly and the flavours' hooks need from a connection's :class:`~trio_pb.protocol.PBProtocol`."""

    #: The perspective Viewables are jellied for at this moment.
    serializing_perspective: Any

    @property
    def closed(self) -> bool:
        """Whether the connection is over (its objects were all released)."""
        ...

    def on_release(self, obj: Any, callback: Callable[[], Any]) -> None:
        """Call ``callback()`` once the peer has released every reference to *obj*."""
        ...

    def unjelly_pb_tag(self, unjellier: Unjellier, sexp: list[Any]) -> Any: ...

    def register_reference(self, obj: Any) -> int: ...

    def jelly_cacheable(self, cacheable: Any, jellier: Jellier) -> Any: ...

    def unjelly_cache(self, cls: Any, unjellier: Unjellier, sexp: list[Any]) -> Any: ...


# --------------------------------------------------------------------------
# Jellying

_ATOMS: Final = frozenset({bytes, int, float})


class Jellier:
    """One top-level jelly operation: its own space of reference ids."""

    def __init__(
        self,
        security: SecurityOptions,
        invoker: Invoker | None = None,
        persistent_store: Callable[[Any, Jellier], Any] | None = None,
    ) -> None:
        self.security = security
        self.invoker = invoker
        self.persistent_store = persistent_store
        # id(obj) -> the s-expression placed for it (an empty list while it is
        # still being built); id(obj) -> reference id, once seen twice.
        self._seen: dict[int, list[Any]] = {}
        self._ref_ids: dict[int, int] = {}
        self._next_ref = 1
        # Tracked objects stay alive until the end, so that their ids cannot
        # be reused by temporaries (such as a state dict built on the fly).
        self._keep: list[Any] = []

    def jelly(self, obj: Any) -> Any:
        """The s-expression for *obj* within this operation."""
        kind = type(obj)
        if kind in _ATOMS:
            return obj
        if kind is str:
            return [b"unicode", obj.encode("utf-8")]
        if kind is list:
            return self._shared(obj, self._list_body)
        if kind is dict:
            return self._shared(obj, self._dict_body)
        if kind is tuple:
            return self._shared(obj, self._tuple_body)
        if obj is None:
            return [b"None"]
        if kind is bool:
            return [b"boolean", b"true" if obj else b"false"]
        if isinstance(obj, Jellyable):
            seen = self._seen.get(id(obj))
            if seen is not None:
                return self._back_reference(id(obj), seen)
            return obj.jelly_for(self)
        if kind is set:
            return self._shared(obj, self._set_body)
        if kind is frozenset:
            return self._shared(obj, self._frozenset_body)
        if kind is datetime.datetime:
            _refuse_tzinfo(obj)
            fields: tuple[int, ...] = (
                obj.year,
                obj.month,
                obj.day,
                obj.hour,
                obj.minute,
                obj.second,
                obj.microsecond,
            )
            return [b"datetime", _join_ints(fields)]
        if kind is datetime.date:
            return [b"date", _join_ints((obj.year, obj.month, obj.day))]
        if kind is datetime.time:
            _refuse_tzinfo(obj)
            return [b"time", _join_ints((obj.hour, obj.minute, obj.second, obj.microsecond))]
        if kind is datetime.timedelta:
            return [b"timedelta", _join_ints((obj.days, obj.seconds, obj.microseconds))]
        if kind is decimal.Decimal:
            return _jelly_decimal(obj)
        if isinstance(obj, type):
            return [b"class", qual(obj).encode("utf-8")]
        if isinstance(
            obj,
            (types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.ModuleType),
        ):
            # Twisted emits a str name for these, which banana then refuses.
            raise JellyError(f"cannot send {kind.__name__} objects: {obj!r:.100}")
        return self._shared(obj, self._instance_body)

    # Containers and instances are tracked by identity: the second time one
    # is met, its first s-expression is rewritten in place to
    # [b"reference", id, <original>] and a [b"dereference", id] goes here.

    def jelly_shared(self, obj: Any, build: Callable[[], list[Any]]) -> list[Any]:
        """Jelly *obj* with ``build()``, or refer back to it if it was already sent."""
        return self._shared(obj, lambda _obj: build())

    def _shared(self, obj: Any, body_of: Callable[[Any], list[Any]]) -> list[Any]:
        oid = id(obj)
        seen = self._seen.get(oid)
        if seen is not None:
            return self._back_reference(oid, seen)
        holder: list[Any] = []
        self._seen[oid] = holder
        self._keep.append(obj)
        body = body_of(obj)
        if holder:
            # A cycle came back here while the body was being built.
            holder[2] = body
            return holder
        self._seen[oid] = body
        return body

    def _back_reference(self, oid: int, sexp: list[Any]) -> list[Any]:
        ref = self._ref_ids.get(oid)
        if ref is None:
            ref = self._next_ref
            self._next_ref += 1
            self._ref_ids[oid] = ref
            if sexp:
                sexp[:] = [b"reference", ref, sexp[:]]
            else:
                sexp.extend((b"reference", ref, None))
        return [b"dereference", ref]

    def _items(self, tag: bytes, items: Iterable[Any]) -> list[Any]:
        jelly = self.jelly
        body = [tag]
        body.extend([item if type(item) in _ATOMS else jelly(item) for item in items])
        return body

    def _dict_body(self, obj: dict[Any, Any]) -> list[Any]:
        # str keys, and atom and str values, the usual cases, are built inline.
        jelly = self.jelly
        body: list[Any] = [b"dictionary"]
        append = body.append
        for key, value in obj.items():
            # The key first: shared objects get their reference ids in Twisted's order.
            key_sexp = [b"unicode", key.encode("utf-8")] if type(key) is str else jelly(key)
            kind = type(value)
            if kind in _ATOMS:
                pass
            elif kind is str:
                value = [b"unicode", value.encode("utf-8")]
            else:
                value = jelly(value)
            append([key_sexp, value])
        return body

    def _list_body(self, obj: list[Any]) -> list[Any]:
        return self._items(b"list", obj)

    def _tuple_body(self, obj: tuple[Any, ...]) -> list[Any]:
        return self._items(b"tuple", obj)

    def _set_body(self, obj: set[Any]) -> list[Any]:
        return self._items(b"set", obj)

    def _frozenset_body(self, obj: frozenset[Any]) -> list[Any]:
        return self._items(b"frozenset", obj)

    def _instance_body(self, obj: Any) -> list[Any]:
        cls = type(obj)
        if self.persistent_store is not None:
            persistent_id = self.persistent_store(obj, self)
            if persistent_id is not None:
                return [b"persistent", persistent_id]
        if not self.security.is_class_allowed(cls):
            return [b"unpersistable", f"instance of class {qual(cls)} deemed insecure".encode()]
        get_state = getattr(obj, "__getstate__", None)
        state = get_state() if get_state is not None else obj.__dict__
        return [qual(cls).encode("utf-8"), self.jelly(state)]


def _refuse_tzinfo(value: datetime.datetime | datetime.time) -> None:
    if value.tzinfo is not None:
        raise JellyError(f"cannot send a {type(value).__name__} with a time zone (Twisted cannot)")


def _join_ints(values: tuple[int, ...]) -> bytes:
    return b" ".join(b"%d" % v for v in values)


def _jelly_decimal(value: decimal.Decimal) -> list[Any]:
    if not value.is_finite():
        raise JellyError(f"cannot send a non-finite Decimal: {value}")
    sign, digits, exponent = value.as_tuple()
    # Not int(str): that is limited to 4300 digits.  The sign of -0 is lost, as in Twisted.
    number = int(decimal.Decimal((sign, digits, 0)))
    assert isinstance(exponent, int)
    return [b"decimal", number, exponent]


# --------------------------------------------------------------------------
# Unjellying


class _Pending:
    """A value that does not exist yet while an s-expression is being unjellied.

    Either a ``dereference`` to a ``reference`` still being built, or a
    container (tuple, set, frozenset, instance) that waits for one.  Whoever
    holds a ``_Pending`` asks to be told its value with :meth:`when_ready`.
    """

    __slots__ = ("_waiters", "resolved", "value")

    def __init__(self) -> None:
        self.resolved = False
        self.value: Any = None
        self._waiters: list[Callable[[Any], None]] = []

    def when_ready(self, callback: Callable[[Any], None]) -> None:
        if self.resolved:
            callback(self.value)
        else:
            self._waiters.append(callback)

    def resolve(self, value: Any) -> None:
        if isinstance(value, _Pending):
            value.when_ready(self.resolve)
            return
        self.resolved = True
        self.value = value
        waiters, self._waiters = self._waiters, []
        for callback in waiters:
            callback(value)


def _utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JellyError(f"unicode that is not UTF-8: {exc}") from None


def _blank(cls: Any) -> Any:
    """An instance of *cls* made without calling ``__init__``, as jelly always does."""
    return cls.__new__(cls)


def _insert_pair(mapping: dict[Any, Any], pair: list[Any]) -> None:
    mapping[pair[0]] = pair[1]


def _when_all_ready(items: list[Any], build: Callable[[list[Any]], Any]) -> Any:
    """``build(items)`` now, or a _Pending for it once every pending item is known."""
    missing = []
    for index, item in enumerate(items):
        if isinstance(item, _Pending):
            if item.resolved:
                items[index] = item.value
            else:
                missing.append(index)
    if not missing:
        return build(items)
    result = _Pending()
    count = [len(missing)]

    def fill(index: int, value: Any) -> None:
        items[index] = value
        count[0] -= 1
        if not count[0]:
            result.resolve(build(items))

    for index in missing:
        items[index].when_ready(lambda value, index=index: fill(index, value))
    return result


#: Sets and dicts are built this many items at a time, each piece timed.
_HASH_CHUNK: Final = 256
#: Sets and dicts smaller than this are built untimed (colliding, they cost a few comparisons per item).
_UNTIMED_BELOW: Final = 8
#: The widest reference id accepted: ints this narrow hash to themselves, so ids cannot collide.
_REFERENCE_ID_BITS: Final = 60


class Unjellier:
    """One top-level unjelly operation: its own space of reference ids.

    With a *hash_budget* (seconds), building the sets and dicts of the
    operation may cost at most that much CPU time (:func:`time.thread_time`,
    which other processes' load does not disturb); past it,
    :class:`~trio_pb.errors.DecodeBudgetExceeded` is raised.  Size limits
    cannot bound this: a set or dict of values whose hashes collide costs
    quadratic time in its size.  Only the hashing is timed, a piece of
    :data:`_HASH_CHUNK` items at a time, because honest hashing is cheap (a
    few microseconds per piece) whatever else a large message costs, and an
    attack is all hashing.
    """

    def __init__(
        self,
        security: SecurityOptions,
        registry: CopyRegistry,
        invoker: Invoker | None = None,
        persistent_load: Callable[[Any, Unjellier], Any] | None = None,
        depth_limit: int = DEPTH_LIMIT,
        hash_budget: float | None = None,
    ) -> None:
        self.security = security
        self.registry = registry
        self.invoker = invoker
        self.persistent_load = persistent_load
        self.depth_limit = depth_limit
        #: CPU seconds that building sets and dicts may still take (None: no limit).
        self.hash_budget = hash_budget
        self._depth = 0
        self._references: dict[int, Any] = {}
        self._forward: dict[int, _Pending] = {}
        self._forwards_made = 0
        # Forwards resolved with a value that was itself still pending.
        self._unsettled: list[_Pending] = []
        self._post_unjelly: list[Any] = []
        self._handlers: dict[bytes, Callable[[Unjellier, list[Any]], Any]] = {}

    def unjelly_top(self, sexp: Any) -> Any:
        """Unjelly a whole s-expression and finish it (placeholders, ``postUnjelly``)."""
        try:
            result = self.unjelly(sexp)
        except RecursionError:
            raise JellyError("jelly is nested too deeply") from None
        except JellyError:
            raise
        except (TypeError, ValueError, IndexError, KeyError, AttributeError, OverflowError) as exc:
            raise JellyError(f"malformed jelly: {type(exc).__name__}: {exc}") from exc
        if self._forward:
            raise JellyError(f"dereference to undefined ids {sorted(self._forward)!r:.100}")
        if isinstance(result, _Pending) and result.resolved:
            result = result.value
        if isinstance(result, _Pending) or not all(f.resolved for f in self._unsettled):
            # Such as a tuple that contains itself: no order of building can make it.
            raise JellyError("reference cycle that cannot be resolved")
        for obj in self._post_unjelly:
            obj.postUnjelly()
        return result

    def when_ready(self, value: Any, callback: Callable[[Any], None]) -> None:
        """Call ``callback(value)`` now, or once *value* is known if it is still pending."""
        if isinstance(value, _Pending):
            value.when_ready(callback)
        else:
            callback(value)

    def unjelly(self, sexp: Any) -> Any:
        """Unjelly a part of the current s-expression (for ``unjelly_for`` hooks)."""
        if type(sexp) is not list:
            return sexp
        if not sexp:
            raise JellyError("empty list where a jelly tag was expected")
        tag = sexp[0]
        if type(tag) is not bytes:
            raise JellyError(f"jelly tag is not bytes: {tag!r:.100}")
        handler = self._handlers.get(tag)
        if handler is None:
            handler = self._handlers[tag] = self._handler_for(tag)
        self._depth += 1
        if self._depth > self.depth_limit:
            raise JellyError(f"jelly is nested more than {self.depth_limit} deep")
        # No try/finally: an exception abandons the whole operation.
        result = handler(self, sexp)
        self._depth -= 1
        return result

    def _spend(self, seconds: float) -> None:
        """Charge *seconds* of hashing to the budget; raise once it is spent."""
        assert self.hash_budget is not None
        self.hash_budget -= seconds
        if self.hash_budget < 0:
            raise DecodeBudgetExceeded("the message costs more work to decode than it is allowed")

    def _hashed(self, items: list[Any]) -> set[Any]:
        """``set(items)``, a timed piece at a time (see the class docstring)."""
        if len(items) < _UNTIMED_BELOW or self.hash_budget is None:
            return set(items)
        clock = time.thread_time
        result: set[Any] = set()
        for start in range(0, len(items), _HASH_CHUNK):
            began = clock()
            result.update(items[start : start + _HASH_CHUNK])
            self._spend(clock() - began)
        return result

    def _frozen(self, items: list[Any]) -> frozenset[Any]:
        result = self._hashed(items)
        if len(items) < _UNTIMED_BELOW or self.hash_budget is None:
            return frozenset(result)
        # Copying the hashed set rehashes nothing, but its table probes collide as much.
        began = time.thread_time()
        frozen = frozenset(result)
        self._spend(time.thread_time() - began)
        return frozen

    def _handler_for(self, tag: bytes) -> Callable[[Unjellier, list[Any]], Any]:
        """How to unjelly *tag*, decided once per operation (security, then registries, then built-ins)."""
        if not self.security.is_type_allowed(tag) and tag not in self.registry:
            raise InsecureJelly(f"type not allowed: {tag!r:.100}")
        cls = self.registry.lookup_class(tag)
        if cls is not None:
            return partial(Unjellier._registered_class, cls=cls)
        factory = self.registry.lookup_factory(tag)
        if factory is not None:
            return partial(Unjellier._registered_factory, factory=factory)
        handler = _HANDLERS.get(tag)
        if handler is not None:
            return handler
        if tag in PB_REFERENCE_TAGS:
            return Unjellier._pb_tag
        return Unjellier._unjelly_instance_sexp

    def _registered_class(self, sexp: list[Any], cls: Any) -> Any:
        # A registered function (Twisted allows one) is called like unjelly_for.
        instance = _blank(cls) if isinstance(cls, type) else None
        unjelly_for = getattr(instance, "unjelly_for", None) if instance is not None else cls
        if unjelly_for is not None:
            result = unjelly_for(self, sexp)
        else:
            result = self._set_state(instance, self._one_state(sexp))
        self._note_post_unjelly(result)
        return result

    def _registered_factory(self, sexp: list[Any], factory: Callable[[Any], Any]) -> Any:
        return self._call_factory(factory, self._one_state(sexp))

    def _pb_tag(self, sexp: list[Any]) -> Any:
        if self.invoker is None:
            raise InsecureJelly(f"{sexp[0]!r} needs a broker to unjelly")
        return self.invoker.unjelly_pb_tag(self, sexp)

    def _unjelly_instance_sexp(self, sexp: list[Any]) -> Any:
        return self._unjelly_instance(sexp[0], sexp)

    def _note_post_unjelly(self, result: Any) -> None:
        if getattr(result, "postUnjelly", None) is not None:
            self._post_unjelly.append(result)

    def _call_factory(self, factory: Callable[[Any], Any], state: Any) -> Any:
        if not isinstance(state, _Pending):
            return factory(state)
        result = _Pending()
        state.when_ready(lambda value: result.resolve(factory(value)))
        return result

    def _one_state(self, sexp: list[Any]) -> Any:
        if len(sexp) != 2:
            raise JellyError(f"{sexp[0]!r:.100} takes exactly one state element")
        return self.unjelly(sexp[1])

    def _set_state(self, instance: Any, state: Any) -> Any:
        def apply(value: Any) -> None:
            set_state = getattr(instance, "__setstate__", None)
            if set_state is not None:
                set_state(value)
            elif isinstance(value, dict):
                instance.__dict__ = value
            elif isinstance(value, tuple) and len(value) == 2:
                # (dict or None, slots) from an object with __slots__.
                dict_state, slot_state = value
                if isinstance(dict_state, dict):
                    instance.__dict__.update(dict_state)
                if isinstance(slot_state, dict):
                    for name, slot_value in slot_state.items():
                        setattr(instance, name, slot_value)

        self.when_ready(state, apply)
        return instance

    def _unjelly_instance(self, tag: bytes, sexp: list[Any]) -> Any:
        cls = self._allowed_class(tag)
        result = self._set_state(_blank(cls), self._one_state(sexp))
        self._note_post_unjelly(result)
        return result

    def _allowed_class(self, name: bytes) -> type[Any]:
        text = name.decode("utf-8", "replace")
        module_name, dot, class_name = text.rpartition(".")
        if not dot or not self.security.is_module_allowed(module_name):
            # Twisted's words, with the tag as text: the peer may show or compare them.
            raise InsecureJelly(f"Module {module_name} not allowed (in type {text}).")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise JellyError(f"cannot import module {module_name!r}: {exc}") from exc
        cls = getattr(module, class_name, None)
        if not isinstance(cls, type) or not self.security.is_class_allowed(cls):
            raise InsecureJelly(f"Class {name.decode('utf-8', 'replace')} not allowed.")
        return cls

    # -- the built-in tags ------------------------------------------------

    def _list(self, sexp: list[Any]) -> Any:
        # Every pending value comes from a forward dereference, so a list
        # built while there were none cannot hold one: skip the scan.
        forwards_before = self._forwards_made
        could_wait = bool(self._forward)
        items = self._unjelly_items(sexp)
        if could_wait or self._forwards_made != forwards_before:
            for index, item in enumerate(items):
                if isinstance(item, _Pending):
                    item.when_ready(partial(items.__setitem__, index))
        return items

    def _unjelly_items(self, sexp: list[Any]) -> list[Any]:
        # A loop, not a comprehension: before Python 3.12 a comprehension is
        # one more frame per level, and a Twisted peer can send values nested
        # as deep as banana's limit.
        unjelly = self.unjelly
        items = sexp[1:]
        for index, item in enumerate(items):
            if type(item) is list:
                items[index] = unjelly(item)
        return items

    def _tuple(self, sexp: list[Any]) -> Any:
        return _when_all_ready(self._unjelly_items(sexp), tuple)

    def _set(self, sexp: list[Any]) -> Any:
        return _when_all_ready(self._unjelly_items(sexp), self._hashed)

    def _frozenset(self, sexp: list[Any]) -> Any:
        return _when_all_ready(self._unjelly_items(sexp), self._frozen)

    def _dictionary(self, sexp: list[Any]) -> Any:
        result: dict[Any, Any] = {}
        unjelly = self.unjelly
        # str keys are decoded inline, unless a registry took over the unicode tag.
        inline_str = self._handlers.get(b"unicode") is Unjellier._unicode
        # Built a piece at a time: the keys and values of a piece are unjellied
        # first, then inserted, and only the insertion is timed (see the class).
        timed = len(sexp) > _UNTIMED_BELOW and self.hash_budget is not None
        clock = time.thread_time
        for start in range(1, len(sexp), _HASH_CHUNK):
            entries = []
            for pair in sexp[start : start + _HASH_CHUNK]:
                if type(pair) is not list or len(pair) != 2:
                    raise JellyError(f"dictionary entry is not a [key, value] pair: {pair!r:.100}")
                key = pair[0]
                if (
                    inline_str
                    and type(key) is list
                    and len(key) == 2
                    and key[0] == b"unicode"
                    and type(key[1]) is bytes
                ):
                    # Bad UTF-8 raises UnicodeDecodeError: unjelly_top makes it a JellyError.
                    key = key[1].decode("utf-8")
                else:
                    key = unjelly(key)
                value = pair[1]
                if type(value) is list:
                    if inline_str and len(value) == 2 and value[0] == b"unicode" and type(value[1]) is bytes:
                        value = value[1].decode("utf-8")
                    else:
                        value = unjelly(value)
                entries.append((key, value))
            began = clock() if timed else 0.0
            for key, value in entries:
                if isinstance(key, _Pending) or isinstance(value, _Pending):
                    if not isinstance(key, _Pending):
                        result[key] = None  # holds the key's place in the sender's order
                    _when_all_ready([key, value], partial(_insert_pair, result))
                else:
                    result[key] = value
            if timed:
                self._spend(clock() - began)
        return result

    def _none(self, sexp: list[Any]) -> None:
        return None

    def _unicode(self, sexp: list[Any]) -> str:
        # The commonest tag of all: checked inline rather than through _atom.
        if len(sexp) != 2 or type(sexp[1]) is not bytes:
            raise JellyError(f"unicode takes one bytes: {sexp!r:.100}")
        return _utf8(sexp[1])

    def _boolean(self, sexp: list[Any]) -> bool:
        value = self._atom(sexp, bytes)
        if value == b"true":
            return True
        if value == b"false":
            return False
        raise JellyError(f"boolean must be b'true' or b'false', not {value!r:.100}")

    def _atom(self, sexp: list[Any], kind: type) -> Any:
        if len(sexp) != 2 or type(sexp[1]) is not kind:
            raise JellyError(f"{sexp[0]!r} takes one {kind.__name__}: {sexp!r:.100}")
        return sexp[1]

    def _numbers(self, sexp: list[Any], count: int) -> list[int]:
        fields = self._atom(sexp, bytes).split()
        if len(fields) != count:
            raise JellyError(f"{sexp[0]!r} takes {count} numbers: {sexp!r:.100}")
        return [int(field) for field in fields]

    def _datetime(self, sexp: list[Any]) -> datetime.datetime:
        year, month, day, hour, minute, second, microsecond = self._numbers(sexp, 7)
        return datetime.datetime(year, month, day, hour, minute, second, microsecond)

    def _date(self, sexp: list[Any]) -> datetime.date:
        return datetime.date(*self._numbers(sexp, 3))

    def _time(self, sexp: list[Any]) -> datetime.time:
        hour, minute, second, microsecond = self._numbers(sexp, 4)
        return datetime.time(hour, minute, second, microsecond)

    def _timedelta(self, sexp: list[Any]) -> datetime.timedelta:
        return datetime.timedelta(*self._numbers(sexp, 3))

    def _decimal(self, sexp: list[Any]) -> decimal.Decimal:
        if len(sexp) != 3 or type(sexp[1]) is not int or type(sexp[2]) is not int:
            raise JellyError(f"decimal takes two ints: {sexp!r:.100}")
        value, exponent = sexp[1], sexp[2]
        digits = decimal.Decimal(abs(value)).as_tuple().digits  # not str(): limited to 4300 digits
        return decimal.Decimal((1 if value < 0 else 0, digits, exponent))

    def _reference(self, sexp: list[Any]) -> Any:
        if len(sexp) != 3 or type(sexp[1]) is not int:
            raise JellyError(f"reference takes an id and a value: {sexp!r:.100}")
        ref = sexp[1]
        if ref.bit_length() > _REFERENCE_ID_BITS:
            # Twisted numbers them from 1; wider ones could be chosen to collide in _references.
            raise JellyError(f"reference id of more than {_REFERENCE_ID_BITS} bits")
        if ref in self._references:
            raise JellyError(f"reference id {ref} is defined twice")
        value = self.unjelly(sexp[2])
        if ref in self._references:
            raise JellyError(f"reference id {ref} is defined twice")
        self._references[ref] = value
        if isinstance(value, _Pending):
            # Later dereferences get the real value once it is known.
            value.when_ready(partial(self._references.__setitem__, ref))
        forward = self._forward.pop(ref, None)
        if forward is not None:
            forward.resolve(value)
            if not forward.resolved:
                self._unsettled.append(forward)
        return value

    def _dereference(self, sexp: list[Any]) -> Any:
        ref = self._atom(sexp, int)
        if ref.bit_length() > _REFERENCE_ID_BITS:
            raise JellyError(f"dereference id of more than {_REFERENCE_ID_BITS} bits")
        if ref in self._references:
            return self._references[ref]
        forward = self._forward.get(ref)
        if forward is None:
            forward = self._forward[ref] = _Pending()
            self._forwards_made += 1
        return forward

    def _unpersistable(self, sexp: list[Any]) -> Unpersistable:
        if len(sexp) != 2:
            raise JellyError(f"unpersistable takes one reason: {sexp!r:.100}")
        return Unpersistable(f"Unpersistable data: {sexp[1]!r}")

    def _persistent(self, sexp: list[Any]) -> Any:
        if len(sexp) != 2:
            raise JellyError(f"persistent takes one id: {sexp!r:.100}")
        if self.persistent_load is None:
            return Unpersistable("Persistent callback not found")
        return self.persistent_load(sexp[1], self)

    def _class(self, sexp: list[Any]) -> type[Any]:
        return self._allowed_class(self._atom(sexp, bytes))

    def _instance(self, sexp: list[Any]) -> Any:
        warnings.warn(
            "the 'instance' jelly tag is deprecated since Twisted 15.0",
            DeprecationWarning,
            stacklevel=2,
        )
        if len(sexp) != 3:
            raise JellyError(f"instance takes a class and a state: {sexp!r:.100}")
        cls = self.unjelly(sexp[1])
        if not isinstance(cls, type):
            raise JellyError(f"instance of something that is not a class: {cls!r:.100}")
        return self._set_state(_blank(cls), self.unjelly(sexp[2]))


_HANDLERS: Final[dict[bytes, Callable[[Unjellier, list[Any]], Any]]] = {
    b"None": Unjellier._none,
    b"unicode": Unjellier._unicode,
    b"boolean": Unjellier._boolean,
    b"list": Unjellier._list,
    b"tuple": Unjellier._tuple,
    b"dictionary": Unjellier._dictionary,
    b"set": Unjellier._set,
    b"frozenset": Unjellier._frozenset,
    b"datetime": Unjellier._datetime,
    b"date": Unjellier._date,
    b"time": Unjellier._time,
    b"timedelta": Unjellier._timedelta,
    b"decimal": Unjellier._decimal,
    b"reference": Unjellier._reference,
    b"dereference": Unjellier._dereference,
    b"unpersistable": Unjellier._unpersistable,
    b"persistent": Unjellier._persistent,
    b"class": Unjellier._class,
    b"instance": Unjellier._instance,
}


def jelly(
    obj: Any,
    *,
    security: SecurityOptions | None = None,
    invoker: Invoker | None = None,
    persistent_store: Callable[[Any, Jellier], Any] | None = None,
) -> Any:
    """The s-expression for *obj*.

    Instances of classes that *security* (default :data:`global_security`)
    does not allow are sent as ``unpersistable`` rather than refused, as
    Twisted does.  Raises :class:`JellyError` for values jelly cannot carry.
    """
    jellier = Jellier(security if security is not None else global_security, invoker, persistent_store)
    try:
        return jellier.jelly(obj)
    except RecursionError:
        raise JellyError("value is nested too deeply to send") from None
    except UnicodeEncodeError as exc:
        raise JellyError(f"cannot send a str that is not valid Unicode: {exc}") from None


def unjelly(
    sexp: Any,
    *,
    security: SecurityOptions | None = None,
    registry: CopyRegistry | None = None,
    invoker: Invoker | None = None,
    persistent_load: Callable[[Any, Unjellier], Any] | None = None,
    depth_limit: int = DEPTH_LIMIT,
    budget: float | None = None,
) -> Any:
    """The Python value for *sexp*, created only as far as *security* allows.

    *security* defaults to :data:`global_security` and *registry* to the
    process-wide :data:`copy_registry`.  With a *budget* (CPU seconds),
    building sets and dicts beyond it raises
    :class:`~trio_pb.errors.DecodeBudgetExceeded` (see :class:`Unjellier`).
    """
    unjellier = Unjellier(
        security if security is not None else global_security,
        registry if registry is not None else copy_registry,
        invoker,
        persistent_load,
        depth_limit,
        budget,
    )
    return unjellier.unjelly_top(sexp)
