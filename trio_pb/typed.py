"""Typed remote interfaces: a :class:`typing.Protocol` names a remote object's methods.

On the calling side, ``ref.typed(Calculator)`` (:meth:`RemoteReference.typed
<trio_pb.references.RemoteReference.typed>`) gives an object whose methods are
remote calls that a type checker checks against the interface.  On the
serving side, :func:`implements` declares that a Referenceable serves an
interface, and :func:`check_implements` says where its methods do not match
(docs/tutorial.rst, "Typed remote interfaces").  Nothing here changes what
crosses the wire: a typed call is the ``call_remote`` of the same name.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from .errors import Error
from .failures import register_error
from .flavors import Avatar, Viewable

if typing.TYPE_CHECKING:
    from .references import RemoteMethod, RemoteReference

__all__ = ["BadArguments", "TypedReference", "check_implements", "implements", "interface_methods"]

T = TypeVar("T")
C = TypeVar("C", bound=type)


class BadArguments(Error, TypeError):
    """A call's arguments do not match the interface its object declared (``validate=True``).

    Raised on the serving side before the method runs, and sent to the
    caller, which receives it as itself (this class is registered); the
    connection is unharmed.
    """


register_error(BadArguments)


def interface_methods(interface: type) -> dict[str, Callable[..., Any]]:
    """The methods *interface* declares, by name: its public functions and those of its bases."""
    if not isinstance(interface, type):
        raise TypeError(f"an interface is a class (a typing.Protocol), not {interface!r}")
    methods: dict[str, Callable[..., Any]] = {}
    for klass in reversed(interface.__mro__):
        if klass in (object, typing.Protocol, typing.Generic):
            continue
        for name, value in vars(klass).items():
            if not name.startswith("_") and inspect.isfunction(value):
                methods[name] = value
    return methods


class TypedReference:
    """A :class:`~trio_pb.references.RemoteReference` seen through an interface.

    Made by :meth:`RemoteReference.typed <trio_pb.references.RemoteReference.typed>`:
    each method of the interface is a remote call of that name, and any
    other name fails here, before anything is sent.
    """

    __slots__ = ("_interface", "_methods", "_reference")

    def __init__(self, reference: RemoteReference, interface: type) -> None:
        self._reference = reference
        self._interface = interface
        self._methods = frozenset(interface_methods(interface))

    def __getattr__(self, name: str) -> RemoteMethod:
        # Only names the slots do not hold get here: the interface's methods, or mistakes.
        if name not in self._methods:
            raise AttributeError(f"{self._interface.__name__} has no remote method {name!r}")
        return self._reference.remote_method(name)

    def __dir__(self) -> list[str]:
        return sorted(self._methods)

    def __repr__(self) -> str:
        return f"<{self._interface.__name__} at {self._reference!r}>"


def typed_reference(reference: RemoteReference, interface: Callable[..., T]) -> T:
    """*reference* seen through *interface*, a class (what ``RemoteReference.typed`` returns)."""
    if not isinstance(interface, type):
        raise TypeError(f"an interface is a class (a typing.Protocol), not {interface!r}")
    proxy: Any = TypedReference(reference, interface)
    return typing.cast(T, proxy)


# -- the serving side ----------------------------------------------------------


def _prefix(cls: type) -> str:
    # The prefix the broker resolves a peer's call with, for each flavour.
    if issubclass(cls, Avatar):
        return "perspective_"
    if issubclass(cls, Viewable):
        return "view_"
    return "remote_"


def _hints(function: Callable[..., Any]) -> dict[str, Any]:
    # Annotations that cannot be resolved (a name only a TYPE_CHECKING block
    # imports) are not compared rather than failing the check.
    try:
        return typing.get_type_hints(function)
    except Exception:
        return {}


def _parameters(function: Callable[..., Any], skip: int) -> list[inspect.Parameter]:
    return list(inspect.signature(function).parameters.values())[skip:]


_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_BY_KEYWORD = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def _compare(where: str, declared: Callable[..., Any], method: Callable[..., Any], skip: int) -> list[str]:
    """How *method* (an implementation's function) differs from *declared*, in words.

    What counts is whether every call the interface allows reaches the
    method as meant: its positional parameters in the same order with the
    same names, its keyword-only ones accepted by name, a default wherever
    the interface has one, and nothing more that lacks a default.
    """
    wanted = _parameters(declared, 1)
    try:
        given = _parameters(method, 1 + skip)
    except (TypeError, ValueError):
        return []  # a builtin or a callable object: nothing to compare
    problems = []
    kinds = {p.kind for p in given}
    any_positional = inspect.Parameter.VAR_POSITIONAL in kinds
    any_keyword = inspect.Parameter.VAR_KEYWORD in kinds
    wanted_positional = [p.name for p in wanted if p.kind in _POSITIONAL]
    given_positional = [p.name for p in given if p.kind in _POSITIONAL]
    if not any_positional and wanted_positional != given_positional[: len(wanted_positional)]:
        problems.append(
            f"{where} takes ({', '.join(given_positional)}), the interface ({', '.join(wanted_positional)})"
        )
        return problems
    by_name = {p.name: p for p in given if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    for parameter in wanted:
        mine = by_name.pop(parameter.name, None)
        if mine is None:
            if parameter.kind is parameter.KEYWORD_ONLY and not any_keyword:
                problems.append(f"{where} takes no parameter {parameter.name!r}")
            continue
        if parameter.kind in _BY_KEYWORD and mine.kind not in _BY_KEYWORD:
            problems.append(f"{where}: parameter {parameter.name!r} cannot be passed by name")
        if parameter.kind in _POSITIONAL and mine.kind not in _POSITIONAL:
            problems.append(f"{where}: parameter {parameter.name!r} cannot be passed by position")
        if parameter.default is not parameter.empty and mine.default is mine.empty:
            problems.append(f"{where}: parameter {parameter.name!r} needs a default, as in the interface")
    for extra in by_name.values():
        if extra.default is extra.empty:
            problems.append(f"{where} has a parameter {extra.name!r} the interface does not pass")
    wanted_hints, given_hints = _hints(declared), _hints(method)
    for parameter in wanted:
        name = parameter.name
        if name in wanted_hints and name in given_hints and _differ(wanted_hints[name], given_hints[name]):
            problems.append(
                f"{where}: parameter {name!r} is {_type_name(given_hints[name])}, "
                f"the interface says {_type_name(wanted_hints[name])}"
            )
    if (
        "return" in wanted_hints
        and "return" in given_hints
        and _differ(wanted_hints["return"], given_hints["return"])
    ):
        problems.append(
            f"{where} returns {_type_name(given_hints['return'])}, "
            f"the interface says {_type_name(wanted_hints['return'])}"
        )
    return problems


def _differ(wanted: Any, given: Any) -> bool:
    # Any on either side is a choice not to say, not a mismatch.
    return wanted is not Any and given is not Any and wanted != given


def _type_name(hint: Any) -> str:
    """*hint* as it is written in a modern annotation (``int | None``, ``dict[str, int]``)."""
    if hint is type(None) or hint is None:
        return "None"
    if hint is Ellipsis:
        return "..."
    origin = typing.get_origin(hint)
    arguments = typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        return " | ".join(_type_name(each) for each in arguments)
    if origin is not None and arguments:
        name = getattr(origin, "__qualname__", None) or repr(origin).replace("typing.", "")
        return f"{name}[{', '.join(_type_name(each) for each in arguments)}]"
    if isinstance(hint, type):
        return hint.__qualname__
    return repr(hint).replace("typing.", "")


def implementation_problems(cls: type, interface: type | None = None) -> list[str]:
    """What :func:`check_implements` would complain of, one sentence each (empty: nothing)."""
    interfaces = (interface,) if interface is not None else getattr(cls, "__pb_interfaces__", ())
    if not interfaces:
        return [f"{cls.__name__} declares no interface (decorate it with trio_pb.implements)"]
    prefix = _prefix(cls)
    skip = 1 if prefix == "view_" else 0  # a view_ method takes the perspective first
    problems = []
    for each in interfaces:
        for name, declared in interface_methods(each).items():
            method = getattr(cls, prefix + name, None)
            if method is None or not callable(method):
                problems.append(f"{cls.__name__} has no {prefix}{name} (for {each.__name__}.{name})")
                continue
            where = f"{cls.__name__}.{prefix}{name} (for {each.__name__}.{name})"
            problems.extend(_compare(where, declared, getattr(method, "__wrapped__", method), skip))
    return problems


def check_implements(cls: type, interface: type | None = None) -> None:
    """Raise :class:`TypeError` if *cls* does not serve the methods of its interfaces.

    *interface*: the one to check against (by default, those declared with
    :func:`implements`).  Each of its methods needs a ``remote_`` method of
    the same name (``perspective_`` on an Avatar, ``view_`` on a Viewable,
    after the perspective) taking the same parameters, in the same order,
    with defaults where the interface has them; annotations are compared
    where both sides have them and they resolve.  The message lists every
    mismatch.
    """
    problems = implementation_problems(cls, interface)
    if problems:
        raise TypeError(f"{cls.__name__} does not implement its interface:\n  " + "\n  ".join(problems))


def implements(*interfaces: type, validate: bool = False) -> Callable[[C], C]:
    """Declare that the decorated Referenceable (Root, Avatar, Viewable ...) serves *interfaces*.

    The class is checked at once with :func:`check_implements`, so a
    mismatch is a :class:`TypeError` where the class is defined.  With
    *validate*, the arguments of each call to these methods are checked
    against the interface's annotations before the method runs (the simple
    types: ``int``, ``float``, ``str``, ``bytes``, ``bool``, ``None``,
    classes, ``list``/``tuple``/``set``/``dict`` of them, ``Optional`` and
    unions; anything else is not checked); a call that does not match fails
    with :class:`BadArguments`, and the connection stays up.  Validation
    wraps the methods of the decorated class itself: decorate a subclass that
    overrides them too.
    """
    if not interfaces:
        raise TypeError("implements() needs at least one interface")
    for interface in interfaces:
        interface_methods(interface)  # a class, or a TypeError now

    def declare(cls: C) -> C:
        # The interfaces of its bases too: a subclass serves what they serve.
        target: Any = cls
        target.__pb_interfaces__ = tuple(dict.fromkeys((*getattr(cls, "__pb_interfaces__", ()), *interfaces)))
        check_implements(cls)
        if validate:
            prefix = _prefix(cls)
            for interface in interfaces:
                for name, declared in interface_methods(interface).items():
                    method = getattr(cls, prefix + name)
                    setattr(cls, prefix + name, _validating(interface, name, declared, method, prefix))
        return cls

    return declare


def _validating(
    interface: type, name: str, declared: Callable[..., Any], method: Callable[..., Any], prefix: str
) -> Callable[..., Any]:
    """*method* behind a check of its arguments against *declared*'s signature and annotations."""
    signature = inspect.signature(declared)
    parameters = list(signature.parameters.values())[1:]
    signature = signature.replace(parameters=parameters)
    hints = _hints(declared)
    checks = {p.name: hints[p.name] for p in parameters if p.name in hints}
    skip = 1 if prefix == "view_" else 0
    where = f"{interface.__name__}.{name}"

    def checked(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            bound = signature.bind(*args[skip:], **kwargs)
        except TypeError as exc:
            raise BadArguments(f"{where}: {exc}") from None
        for argument, value in bound.arguments.items():
            hint = checks.get(argument)
            if hint is not None and not _matches(value, hint):
                raise BadArguments(
                    f"{where}: argument {argument!r} must be {_type_name(hint)}, not {type(value).__name__}"
                )
        # The method's own result: a coroutine for an async def, which the broker runs as a task.
        return method(self, *args, **kwargs)

    checked.__name__ = method.__name__
    checked.__qualname__ = method.__qualname__
    checked.__doc__ = method.__doc__
    checked.__wrapped__ = method  # type: ignore[attr-defined]
    return checked


def _matches(value: Any, hint: Any) -> bool:
    """Whether *value* has type *hint*, for the simple types; True for anything not checked."""
    if hint is Any or hint is object:
        return True
    if hint is None or hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float))  # an int is a float, as for type checkers
    origin = typing.get_origin(hint)
    if origin is None:
        return isinstance(value, hint) if isinstance(hint, type) else True
    arguments = typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        return any(_matches(value, each) for each in arguments)
    if origin in (list, set, frozenset):
        return isinstance(value, origin) and (
            not arguments or all(_matches(item, arguments[0]) for item in value)
        )
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(arguments) == 2 and arguments[1] is Ellipsis:
            return all(_matches(item, arguments[0]) for item in value)
        if arguments == ((),):
            return value == ()
        return len(value) == len(arguments) and all(map(_matches, value, arguments))
    if origin is dict or origin is Mapping:
        return isinstance(value, dict) and (
            not arguments
            or all(_matches(k, arguments[0]) and _matches(v, arguments[1]) for k, v in value.items())
        )
    if origin is typing.Literal:
        return value in arguments
    return True
