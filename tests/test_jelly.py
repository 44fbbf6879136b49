"""Jelly: exact s-expressions, shared references, security, Copyable/RemoteCopy, robustness.

Golden forms come from ``shared/pb-protocol.md`` (section 2 and appendices
A and B); the ``test_jelly`` checklist of section 8 is translated below.
Differential tests against real Twisted live in ``test_jelly_twisted.py``.
"""

from __future__ import annotations

import datetime
import enum
import gc
import os
import sys
import types
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pbdata import APPENDIX_B_SEXP, decimals

from trio_pb import banana
from trio_pb import jelly as jelly_mod
from trio_pb.errors import InsecureJelly, JellyError
from trio_pb.flavors import Copyable, RemoteCopy
from trio_pb.jelly import (
    CopyRegistry,
    DummySecurityOptions,
    Jellyable,
    SecurityOptions,
    Unjellyable,
    Unpersistable,
    copy_registry,
    global_security,
    jelly,
    qual,
    set_unjellyable_factory_for_class,
    set_unjellyable_for_class,
    set_unjellyable_for_class_tree,
    unjelly,
)

D = datetime


def tag(cls: type) -> bytes:
    return qual(cls).encode()


def u(text: str) -> list[Any]:
    return [b"unicode", text.encode()]


def roundtrip(value: Any, security: SecurityOptions | None = None, **unjelly_kw: Any) -> Any:
    return unjelly(jelly(value, security=security), security=security, **unjelly_kw)


@pytest.fixture
def restore_globals():
    """Undo registrations in the process-wide registry and global_security."""
    classes = dict(copy_registry.classes)
    factories = dict(copy_registry.factories)
    types_ = set(global_security.allowed_types)
    modules = set(global_security.allowed_modules)
    allowed_classes = set(global_security.allowed_classes)
    yield
    copy_registry.classes.clear()
    copy_registry.classes.update(classes)
    copy_registry.factories.clear()
    copy_registry.factories.update(factories)
    global_security.allowed_types.clear()
    global_security.allowed_types.update(types_)
    global_security.allowed_modules.clear()
    global_security.allowed_modules.update(modules)
    global_security.allowed_classes.clear()
    global_security.allowed_classes.update(allowed_classes)


class FakeInvoker:
    """What jelly needs from a broker: a serializing perspective and the PB tags."""

    def __init__(self, perspective: Any = None) -> None:
        self.serializing_perspective = perspective
        self.pb_tags: list[list[Any]] = []

    def unjelly_pb_tag(self, unjellier: Any, sexp: list[Any]) -> Any:
        self.pb_tags.append(sexp)
        return ("pb", *sexp)


# Classes used by the tests (module level, so that they can be found by name).


class A:
    def amethod(self) -> None:
        pass


class B:
    def bmethod(self) -> None:
        pass


class C:
    def cmethod(self) -> None:
        pass


class Empty:
    pass


class Slotted:
    __slots__ = ("x", "y")

    def __init__(self, x: Any = None, y: Any = None) -> None:
        self.x = x
        self.y = y

    def __getstate__(self) -> dict[str, Any]:
        return {"x": self.x, "y": self.y}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.x = state["x"]
        self.y = state["y"]


class BareSlots:
    """__slots__ and no state hooks: Python >= 3.11 sends (None, {slots})."""

    __slots__ = ("x", "y")


class SimpleJellyTest:
    def __init__(self, x: Any, y: Any) -> None:
        self.x = x
        self.y = y


class TupleState:
    def __init__(self, other: Any) -> None:
        self.other = other

    def __getstate__(self) -> tuple[Any]:
        return (self.other,)

    def __setstate__(self, state: tuple[Any]) -> None:
        self.other = state[0]

    def __hash__(self) -> int:
        return hash(self.other)


class SecErr(Exception):
    pass


class Color(enum.IntEnum):
    RED = 1


class Inited:
    """Counts __init__ calls; jelly must never call __init__ when rebuilding."""

    inits = 0

    def __init__(self) -> None:
        type(self).inits += 1
        self.made_by_init = True


class PostUnjelly:
    def postUnjelly(self) -> None:
        self.post_unjellied = True


class TestNode(Jellyable):
    __test__ = False
    classAttr = 4

    def __init__(self, parent: TestNode | None = None) -> None:
        if parent is not None:
            self.id = parent.id + 1
            parent.children.append(self)
        else:
            self.id = 1
        self.parent = parent
        self.children: list[TestNode] = []


def afunc() -> None:
    pass


# --------------------------------------------------------------------------
# 2.1: every type that can cross banana, exactly


APPENDIX_B_VALUE = [
    None,
    True,
    False,
    0,
    -1,
    2147483648,
    -2147483649,
    2**100,
    1.5,
    "h\xe9llo",
    b"bytes",
    (1, 2),
    {"a": 1, b"b": 2},
    {1, 2},
    frozenset([3]),
    D.datetime(2020, 1, 2, 3, 4, 5, 6),
    D.date(2020, 1, 2),
    D.time(1, 2, 3, 4),
    D.timedelta(1, 2, 3),
    Decimal("-1.25"),
]


def test_appendix_b_all_types_golden():
    assert jelly(APPENDIX_B_VALUE) == APPENDIX_B_SEXP
    back = unjelly(APPENDIX_B_SEXP)
    assert back == APPENDIX_B_VALUE
    assert [type(x) for x in back] == [type(x) for x in APPENDIX_B_VALUE]


def test_appendix_b_all_types_through_banana():
    for dialect in (b"pb", b"none"):
        wire = banana.encode(jelly(APPENDIX_B_VALUE), dialect=dialect)
        assert unjelly(banana.decode(wire, dialect=dialect)) == APPENDIX_B_VALUE


def test_appendix_b_vocabulary_words_in_data():
    sexp = jelly([b"None", b"remote", "list"])
    assert sexp == [b"list", b"None", b"remote", [b"unicode", b"list"]]
    wire = banana.encode(sexp, dialect=b"pb")
    assert wire == bytes.fromhex("04 80 08 87 01 87 10 87 02 80 07 82") + b"unicode" + bytes.fromhex("08 87")
    assert unjelly(banana.decode(wire, dialect=b"pb")) == [b"None", b"remote", "list"]


@pytest.mark.parametrize(
    ("value", "sexp"),
    [
        (b"", b""),
        (b"abc", b"abc"),
        (0, 0),
        (-(2**200), -(2**200)),
        (2.5, 2.5),
        (None, [b"None"]),
        (True, [b"boolean", b"true"]),
        (False, [b"boolean", b"false"]),
        ("", [b"unicode", b""]),
        ("\u20ac", [b"unicode", "\u20ac".encode()]),
        ([], [b"list"]),
        ((), [b"tuple"]),
        ({}, [b"dictionary"]),
        (set(), [b"set"]),
        (frozenset(), [b"frozenset"]),
        ([1, [2]], [b"list", 1, [b"list", 2]]),
        ({"k": [None]}, [b"dictionary", [[b"unicode", b"k"], [b"list", [b"None"]]]]),
        (D.datetime(1, 1, 1), [b"datetime", b"1 1 1 0 0 0 0"]),
        (D.date(9999, 12, 31), [b"date", b"9999 12 31"]),
        (D.time(), [b"time", b"0 0 0 0"]),
        (D.timedelta(-1, 5, 7), [b"timedelta", b"-1 5 7"]),
        (D.timedelta(microseconds=-1), [b"timedelta", b"-1 86399 999999"]),
    ],
)
def test_exact_forms(value, sexp):
    assert jelly(value) == sexp
    back = unjelly(sexp)
    assert back == value
    assert type(back) is type(value)


def test_dict_keeps_insertion_order_and_key_types():
    value = {"b": 1, b"a": 2, 3: "c", (1, "x"): None, None: True}
    assert jelly(value) == [
        b"dictionary",
        [u("b"), 1],
        [b"a", 2],
        [3, u("c")],
        [[b"tuple", 1, u("x")], [b"None"]],
        [[b"None"], [b"boolean", b"true"]],
    ]
    back = unjelly(jelly(value))
    assert list(back.items()) == list(value.items())
    assert [type(k) for k in back] == [type(k) for k in value]


def test_bool_before_int():
    assert jelly([True, 1, False, 0]) == [b"list", [b"boolean", b"true"], 1, [b"boolean", b"false"], 0]
    back = unjelly(jelly([True, 1, False, 0]))
    assert [type(x) for x in back] == [bool, int, bool, int]
    assert back[0] is True
    assert back[2] is False


@pytest.mark.parametrize("word", [b"True", b"1", b"", b"TRUE"])
def test_boolean_must_be_true_or_false(word):
    with pytest.raises(JellyError):
        unjelly([b"boolean", word])


def test_int_subclass_goes_down_the_instance_path():
    # Twisted only sends exact ints; an IntEnum is an instance, and not an allowed one.
    assert jelly(Color.RED) == [b"unpersistable", b"instance of class " + tag(Color) + b" deemed insecure"]


def test_str_is_unicode_and_stays_str():
    sexp = jelly("blah")
    assert sexp == [b"unicode", b"blah"]
    back = unjelly(sexp)
    assert back == "blah"
    assert type(back) is str
    assert type(unjelly(jelly(b"blah"))) is bytes


def test_unicode_that_is_not_utf8_is_a_jelly_error():
    with pytest.raises(JellyError):
        unjelly([b"unicode", b"\xff\xfe"])


def test_str_that_cannot_be_encoded_is_a_jelly_error():
    with pytest.raises(JellyError):
        jelly("\ud800")


@pytest.mark.parametrize(
    ("value", "sexp"),
    [
        (Decimal("9.95"), [b"decimal", 995, -2]),
        (Decimal(0), [b"decimal", 0, 0]),
        (Decimal(123456), [b"decimal", 123456, 0]),
        (Decimal("-78.901"), [b"decimal", -78901, -3]),
        (Decimal("1E+5"), [b"decimal", 1, 5]),
        (Decimal("0.000"), [b"decimal", 0, -3]),
        (Decimal("-1.25"), [b"decimal", -125, -2]),
    ],
)
def test_decimal_forms(value, sexp):
    assert jelly(value) == sexp
    back = unjelly(sexp)
    assert back == value
    assert back.as_tuple() == value.as_tuple()


def test_decimal_checklist_list():
    decimal_data = [
        b"list",
        [b"decimal", 995, -2],
        [b"decimal", 0, 0],
        [b"decimal", 123456, 0],
        [b"decimal", -78901, -3],
    ]
    values = [Decimal("9.95"), Decimal(0), Decimal(123456), Decimal("-78.901")]
    assert jelly(values) == decimal_data
    assert unjelly(decimal_data) == values
    assert roundtrip(values) is not values


def test_decimal_negative_zero_loses_its_sign():
    assert jelly(Decimal("-0")) == [b"decimal", 0, 0]
    assert jelly(Decimal("-0.00")) == [b"decimal", 0, -2]
    assert unjelly([b"decimal", 0, -2]).as_tuple() == Decimal("0.00").as_tuple()


@pytest.mark.parametrize("value", [Decimal("NaN"), Decimal("sNaN"), Decimal("Inf"), Decimal("-Infinity")])
def test_non_finite_decimal_is_refused(value):
    with pytest.raises(JellyError):
        jelly(value)


def test_decimal_with_more_digits_than_int_str_allows():
    # int(str) is limited to 4300 digits; jelly must not depend on it.
    value = Decimal("-" + "7" * 5000 + "e-3")
    sexp = jelly(value)
    assert sexp == [b"decimal", -int(Decimal("7" * 5000)), -3]
    assert unjelly(sexp) == value


@pytest.mark.parametrize(
    "sexp",
    [
        [b"decimal", 1],
        [b"decimal", 1, 2, 3],
        [b"decimal", 1.5, 0],
        [b"decimal", b"1", 0],
        [b"decimal", 1, b"F"],
        [b"decimal", 1, 10**30],
    ],
)
def test_malformed_decimal(sexp):
    with pytest.raises(JellyError):
        unjelly(sexp)


@pytest.mark.parametrize(
    "value",
    [
        D.datetime(2020, 1, 2, tzinfo=D.timezone.utc),
        D.time(1, 2, tzinfo=D.timezone(D.timedelta(hours=1))),
    ],
)
def test_timezone_aware_values_are_refused(value):
    with pytest.raises(JellyError):
        jelly(value)


@pytest.mark.parametrize(
    "sexp",
    [
        [b"datetime", b"2020 1 2 3 4 5"],
        [b"datetime", b"2020 13 2 3 4 5 6"],
        [b"date", b"2020 1"],
        [b"date", 2020],
        [b"date", b"a b c"],
        [b"time", b"25 0 0 0"],
        [b"timedelta", b"1 2"],
        [b"timedelta", b"999999999999 0 0"],
    ],
)
def test_malformed_time_values(sexp):
    with pytest.raises(JellyError):
        unjelly(sexp)


def test_time_types_round_trip_through_banana():
    # Checklist: datetime, date, time and timedelta round trip, also through banana.
    sample_date = D.date(2020, 7, 11)
    sample_time = D.time(1, 16, 5, 344)
    sample_datetime = D.datetime.combine(sample_date, sample_time)
    sample_delta = sample_datetime - D.datetime(2020, 7, 3)
    for value in (sample_date, sample_time, sample_datetime, sample_delta):
        wire = banana.encode(jelly(value), dialect=b"none")
        assert unjelly(banana.decode(wire, dialect=b"none")) == value
    now = D.datetime.now()
    values = [now, D.datetime.now() - now]
    back = roundtrip(values)
    assert back == values
    assert back is not values


def test_set_and_frozenset_round_trip():
    for values in ([{1, 2, 3}], [frozenset([1, 2, 3])]):
        back = roundtrip(values)
        assert back == values
        assert type(back[0]) is type(values[0])
        assert back is not values


def test_unjelly_of_a_non_list_returns_it_unchanged():
    for value in (b"x", 5, 1.5, A, (1, 2)):
        assert unjelly(value) is value


@pytest.mark.parametrize("sexp", [[], [b"list", []], [5], [[b"list"]], ["list"], [None]])
def test_list_without_bytes_tag_is_a_jelly_error(sexp):
    with pytest.raises(JellyError):
        unjelly(sexp)


def test_unpersistable_is_data():
    value = unjelly([b"unpersistable", b"it broke"])
    assert isinstance(value, Unpersistable)
    assert value.reason == "Unpersistable data: b'it broke'"


def test_persistent_without_load_hook_is_unpersistable():
    value = unjelly([b"persistent", b"7"])
    assert isinstance(value, Unpersistable)
    assert value.reason == "Persistent callback not found"


# --------------------------------------------------------------------------
# 2.2: shared references and cycles


def test_captured_shared_list():
    inner = [1]
    assert jelly((inner, inner)) == [b"tuple", [b"reference", 1, [b"list", 1]], [b"dereference", 1]]
    back = unjelly(jelly((inner, inner)))
    assert back == ([1], [1])
    assert back[0] is back[1]


def test_captured_self_containing_list():
    cyc: list[Any] = []
    cyc.append(cyc)
    assert jelly(cyc) == [b"reference", 1, [b"list", [b"dereference", 1]]]
    back = unjelly(jelly(cyc))
    assert back[0] is back


def test_ids_are_assigned_on_second_sighting():
    a, b = [1], [2]
    # b is seen first, but a is the first to be seen twice: a gets id 1.
    assert jelly([b, a, a, b]) == [
        b"list",
        [b"reference", 2, [b"list", 2]],
        [b"reference", 1, [b"list", 1]],
        [b"dereference", 1],
        [b"dereference", 2],
    ]
    # Not shared: no reference at all; every jelly() call starts again at 1.
    assert jelly([a, b]) == [b"list", [b"list", 1], [b"list", 2]]
    assert jelly((b, b)) == [b"tuple", [b"reference", 1, [b"list", 2]], [b"dereference", 1]]


def test_first_occurrence_is_rewritten_in_place_when_nested():
    shared = {"k": 1}
    value = [[shared], (shared, shared)]
    assert jelly(value) == [
        b"list",
        [b"list", [b"reference", 1, [b"dictionary", [u("k"), 1]]]],
        [b"tuple", [b"dereference", 1], [b"dereference", 1]],
    ]
    back = unjelly(jelly(value))
    assert back[0][0] is back[1][0] is back[1][1]


def test_atoms_are_not_tracked():
    big = 2**100
    text = "same"
    moment = D.date(2020, 1, 1)
    price = Decimal("1.5")
    assert jelly([big, big, text, text, moment, moment, price, price, A, A]) == [
        b"list",
        big,
        big,
        u("same"),
        u("same"),
        [b"date", b"2020 1 1"],
        [b"date", b"2020 1 1"],
        [b"decimal", 15, -1],
        [b"decimal", 15, -1],
        [b"class", tag(A)],
        [b"class", tag(A)],
    ]


def test_every_container_kind_is_tracked():
    lst, tup, dct, st_, fst = [1], (2,), {3: 4}, {5}, frozenset([6])
    sexp = jelly([lst, tup, dct, st_, fst, lst, tup, dct, st_, fst])
    assert sexp[6:] == [[b"dereference", n] for n in range(1, 6)]
    assert sexp[1:6] == [
        [b"reference", 1, [b"list", 1]],
        [b"reference", 2, [b"tuple", 2]],
        [b"reference", 3, [b"dictionary", [3, 4]]],
        [b"reference", 4, [b"set", 5]],
        [b"reference", 5, [b"frozenset", 6]],
    ]
    back = unjelly(sexp)
    for i in range(5):
        assert back[i] is back[i + 5]


def test_identity_checklist():
    x: list[Any] = []
    x.append(x)
    x.append(x)
    z = unjelly(jelly(x))
    assert z[0] is z[1]
    assert z[0][0] is z


def test_stress_references():
    reref: list[Any] = []
    toplevel = ({"list": reref}, reref)
    reref.append(toplevel)
    z = unjelly(jelly(toplevel))
    assert type(z) is tuple
    assert z[0]["list"] is z[1]
    assert z[0]["list"][0] is z


def test_more_references():
    a: list[Any] = []
    t = (a,)
    a.append((t,))
    z = unjelly(jelly(t))
    assert z[0][0][0] is z


def test_cycle_through_dict_value():
    d: dict[str, Any] = {}
    d["me"] = d
    d["list"] = [d]
    sexp = jelly(d)
    assert sexp == [
        b"reference",
        1,
        [b"dictionary", [u("me"), [b"dereference", 1]], [u("list"), [b"list", [b"dereference", 1]]]],
    ]
    back = unjelly(sexp)
    assert back["me"] is back
    assert back["list"][0] is back
    assert list(back) == ["me", "list"]


def test_cycle_through_tuple_inside_list():
    lst: list[Any] = []
    tup = (lst, 1)
    lst.append(tup)
    back = unjelly(jelly(tup))
    assert type(back) is tuple
    assert back[0][0] is back
    back = unjelly(jelly(lst))
    assert back[0][0] is back


def test_shared_tuple_inside_cycle_is_seen_again_after_it_resolves():
    # The tuple is still a placeholder when it is first referenced and is
    # met again (in a new list) once it is complete.  Twisted cannot unjelly
    # this; trio_pb must not leak a placeholder into the result.
    lst: list[Any] = []
    tup = (lst,)
    lst.append(tup)
    value = [lst, tup, [tup], {"t": tup}, (tup, 2)]
    sexp = jelly(value)
    assert sexp[:4] == [
        b"list",
        [b"reference", 1, [b"list", [b"reference", 2, [b"tuple", [b"dereference", 1]]]]],
        [b"dereference", 2],
        [b"list", [b"dereference", 2]],
    ]
    back = unjelly(sexp)
    rl, rt = back[0], back[1]
    assert type(rt) is tuple
    assert rl[0] is rt
    assert rt[0] is rl
    assert back[2][0] is rt
    assert back[3]["t"] is rt
    assert back[4][0] is rt
    assert_no_placeholders(back)


def test_placeholders_resolve_in_tuples_sets_dicts_and_state():
    security = SecurityOptions()
    security.allow_instances_of(SimpleJellyTest)
    obj = SimpleJellyTest(None, None)
    obj.x = (obj, frozenset([obj]))
    obj.y = {"me": obj, obj: "as key"}
    back = roundtrip(obj, security)
    assert type(back) is SimpleJellyTest
    assert back.x[0] is back
    assert next(iter(back.x[1])) is back
    assert back.y["me"] is back
    assert back.y[back] == "as key"
    assert_no_placeholders(back)


def test_forward_dereference_outside_a_cycle_resolves():
    sexp = [b"tuple", [b"dereference", 1], [b"reference", 1, [b"list", 5]], [b"set", [b"dereference", 1]]]
    with pytest.raises(JellyError):  # a set cannot hold a list...
        unjelly(sexp)
    sexp = [b"tuple", [b"dereference", 1], [b"reference", 1, [b"tuple", 5]], [b"set", [b"dereference", 1]]]
    back = unjelly(sexp)  # ...but it can hold a tuple
    assert back == ((5,), (5,), {(5,)})
    assert back[0] is back[1]
    assert_no_placeholders(back)


@pytest.mark.parametrize(
    "sexp",
    [
        [b"dereference", 1],
        [b"list", [b"dereference", 1]],
        [b"list", [b"reference", 1, [b"list"]], [b"dereference", 2]],
        [b"tuple", [b"dereference", 3]],
        [b"dictionary", [1, [b"dereference", 3]]],
    ],
)
def test_dereference_to_an_undefined_id(sexp):
    with pytest.raises(JellyError):
        unjelly(sexp)


@pytest.mark.parametrize(
    "sexp",
    [
        [b"list", [b"reference", 1, [b"list"]], [b"reference", 1, [b"list"]]],
        [b"reference", 1, [b"list", [b"reference", 1, [b"list"]]]],
        [b"reference", 1, [b"reference", 1, [b"list"]]],
    ],
)
def test_duplicate_reference_id(sexp):
    with pytest.raises(JellyError, match="twice"):
        unjelly(sexp)


@pytest.mark.parametrize(
    "sexp",
    [
        # Cycles that no Python object can have: a tuple or set containing itself.
        [b"reference", 1, [b"tuple", [b"dereference", 1]]],
        [b"list", [b"reference", 1, [b"tuple", [b"dereference", 1]]], [b"list", [b"dereference", 1]]],
        [b"list", [b"reference", 1, [b"dereference", 1]]],
        [b"reference", 1, [b"frozenset", [b"reference", 2, [b"tuple", [b"dereference", 1]]]]],
    ],
)
def test_impossible_cycles_are_jelly_errors(sexp):
    with pytest.raises(JellyError):
        unjelly(sexp)


def test_cycle_through_dict_key_is_a_jelly_error():
    sexp = [b"reference", 1, [b"dictionary", [[b"dereference", 1], 1]]]
    with pytest.raises(JellyError):
        unjelly(sexp)


@pytest.mark.parametrize(
    "sexp",
    [
        [b"reference", b"1", [b"list"]],
        [b"reference", 1],
        [b"dereference", b"1"],
        [b"dereference", True],
        [b"dereference"],
    ],
)
def test_malformed_references(sexp):
    with pytest.raises(JellyError):
        unjelly(sexp)


def test_tracked_objects_stay_alive_so_ids_are_not_reused():
    # Each __getstate__ call makes a fresh dict; if the jellier let them die,
    # a later one could get the same id() and be sent as a dereference.
    class Fresh:
        def __getstate__(self) -> dict[str, Any]:
            return {"n": 1}

    security = DummySecurityOptions()
    values = [Fresh() for _ in range(50)]
    sexp = jelly(values, security=security)
    assert "dereference" not in repr(sexp)
    gc.collect()


# --------------------------------------------------------------------------
# 2.3: plain instances and state


def test_instance_of_an_allowed_class():
    security = SecurityOptions()
    security.allow_instances_of(SimpleJellyTest)
    obj = SimpleJellyTest(1, "two")
    sexp = jelly(obj, security=security)
    assert sexp == [tag(SimpleJellyTest), [b"dictionary", [u("x"), 1], [u("y"), u("two")]]]
    back = unjelly(sexp, security=security)
    assert type(back) is SimpleJellyTest
    assert back.__dict__ == obj.__dict__


def test_instance_of_a_class_not_allowed_is_unpersistable():
    assert jelly(A()) == [b"unpersistable", b"instance of class " + tag(A) + b" deemed insecure"]


def test_captured_unpersistable_plain():
    class Plain:
        __module__ = "__main__"

    assert jelly(Plain()) == [b"unpersistable", b"instance of class __main__.Plain deemed insecure"]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="object.__getstate__ is new in 3.11")
def test_empty_instance_state_is_none_on_311():
    security = SecurityOptions()
    security.allow_instances_of(Empty)
    assert jelly(Empty(), security=security) == [tag(Empty), [b"None"]]


@pytest.mark.parametrize("state", [[b"None"], [b"dictionary"]])
def test_empty_instance_state_both_forms_accepted(state):
    security = SecurityOptions()
    security.allow_instances_of(Empty)
    back = unjelly([tag(Empty), state], security=security)
    assert type(back) is Empty
    assert back.__dict__ == {}


def test_exception_instance_loses_its_message():
    security = SecurityOptions()
    security.allow_instances_of(SecErr)
    sexp = jelly(SecErr("the message"), security=security)
    if sys.version_info >= (3, 11):
        assert sexp == [tag(SecErr), [b"None"]]
    back = unjelly(sexp, security=security)
    assert type(back) is SecErr
    assert back.args == ()


def test_nested_class_uses_name_not_qualname():
    class Outer:
        class Inner:
            pass

    assert jelly(Outer.Inner()) == [
        b"unpersistable",
        b"instance of class " + Outer.Inner.__module__.encode() + b".Inner deemed insecure",
    ]
    assert jelly(Outer.Inner) == [b"class", Outer.Inner.__module__.encode() + b".Inner"]


def test_new_style_instance_keeps_shared_sub_objects():
    security = SecurityOptions()
    security.allow_instances_of(Empty)
    n = Empty()
    n.x = 1
    n2 = Empty()
    n.n2 = n2
    n.n3 = n2
    m = roundtrip(n, security)
    assert isinstance(m, Empty)
    assert m.n2 is m.n3
    assert m.x == 1


def test_slots_with_getstate_and_setstate():
    security = SecurityOptions()
    security.allow_instances_of(Slotted)
    n = Slotted(1, [2])
    sexp = jelly(n, security=security)
    assert sexp == [tag(Slotted), [b"dictionary", [u("x"), 1], [u("y"), [b"list", 2]]]]
    m = unjelly(sexp, security=security)
    assert isinstance(m, Slotted)
    assert (m.x, m.y) == (1, [2])


@pytest.mark.skipif(sys.version_info < (3, 11), reason="object.__getstate__ is new in 3.11")
def test_bare_slots_send_a_none_and_slots_tuple():
    security = SecurityOptions()
    security.allow_instances_of(BareSlots)
    obj = BareSlots()
    obj.x = 1
    obj.y = "y"
    sexp = jelly(obj, security=security)
    assert sexp == [tag(BareSlots), [b"tuple", [b"None"], [b"dictionary", [u("x"), 1], [u("y"), u("y")]]]]
    back = unjelly(sexp, security=security)
    assert (back.x, back.y) == (1, "y")


def test_instance_is_built_without_init():
    security = SecurityOptions()
    security.allow_instances_of(Inited)
    obj = Inited()
    before = Inited.inits
    back = roundtrip(obj, security)
    assert Inited.inits == before
    assert back.made_by_init is True  # from the state, not from __init__


def test_non_dict_state_without_setstate_is_ignored():
    security = SecurityOptions()
    security.allow_instances_of(Empty)
    back = unjelly([tag(Empty), [b"list", 1, 2]], security=security)
    assert type(back) is Empty
    assert back.__dict__ == {}


def test_set_state_checklist():
    a = A()
    t1 = TupleState(a)
    t2 = TupleState(a)
    t3 = TupleState((t1, t2))
    d = {t1: t1, t2: t2, t3: t3, "t3": t3}
    security = SecurityOptions()
    security.allow_instances_of(A, TupleState)
    t3prime = roundtrip(d, security)["t3"]
    assert t3prime.other[0].other is t3prime.other[1].other
    assert type(t3prime.other[0].other) is A


def test_post_unjelly_runs_after_everything():
    security = SecurityOptions()
    security.allow_instances_of(PostUnjelly)
    back = roundtrip([PostUnjelly(), PostUnjelly()], security)
    assert [obj.post_unjellied for obj in back] == [True, True]


def test_simple_checklist():
    security = SecurityOptions()
    security.allow_instances_of(SimpleJellyTest)
    a = SimpleJellyTest(1, 2)
    b = roundtrip(a, security)
    assert a.__dict__ == b.__dict__


def test_jellyable_tree():
    n = TestNode()
    n1 = TestNode(n)
    TestNode(n1)
    TestNode(n)
    security = SecurityOptions()
    security.allow_instances_of(TestNode)
    m = roundtrip(n, security)

    def check(a: TestNode, b: TestNode) -> None:
        assert type(b) is TestNode
        assert a.id == b.id
        assert b.classAttr == 4
        assert len(a.children) == len(b.children)
        for child in b.children:
            assert child.parent is b
        for x, y in zip(a.children, b.children, strict=True):
            check(x, y)

    check(n, m)


def test_unjellyable_registered_for_a_jellyable(restore_globals):
    class JellyableTestClass(Jellyable):
        pass

    set_unjellyable_for_class(JellyableTestClass, Unjellyable)
    obj = JellyableTestClass()
    obj.attribute = "value"
    sexp = jelly(obj)
    assert sexp == [tag(JellyableTestClass), [b"dictionary", [u("attribute"), u("value")]]]
    back = unjelly(sexp)
    assert type(back) is Unjellyable
    assert back.attribute == "value"


def test_persistent_store_and_load_preserve_identity():
    store: dict[bytes, Any] = {}

    def persistent_store(obj: Any, jellier: Any) -> bytes:
        key = b"%d" % (len(store) + 1)
        store[key] = obj
        return key

    def persistent_load(key: bytes, unjellier: Any) -> Any:
        return store[key]

    a = SimpleJellyTest(1, 2)
    b = SimpleJellyTest(3, 4)
    c = SimpleJellyTest(5, 6)
    a.b = b
    a.c = c
    c.b = b
    value = [a, b, c, b]
    sexp = jelly(value, persistent_store=persistent_store)
    assert sexp[1] == [b"persistent", b"1"]
    assert sexp[4] == [b"dereference", 1]
    x = unjelly(sexp, persistent_load=persistent_load)
    assert x[0] is a
    assert x[1] is b
    assert x[3] is b
    assert store


def test_instance_atom_is_deprecated_but_accepted():
    sexp = [b"instance", [b"class", tag(A)], [b"dictionary", [u("k"), 1]]]
    with pytest.warns(DeprecationWarning):
        back = unjelly(sexp, security=DummySecurityOptions())
    assert type(back) is A
    assert back.k == 1
    with pytest.raises(InsecureJelly):
        unjelly(sexp)


# --------------------------------------------------------------------------
# Classes, and what cannot cross banana (functions, modules, methods)


@pytest.mark.parametrize("cls", [A, str, int, D.datetime])
def test_class_objects_round_trip_when_allowed(cls):
    sexp = jelly([cls])
    assert sexp == [b"list", [b"class", tag(cls)]]
    assert unjelly(sexp, security=DummySecurityOptions()) == [cls]
    # banana can carry it...
    assert banana.decode(banana.encode(sexp)) == sexp
    # ...but the default security refuses it.
    with pytest.raises(InsecureJelly):
        unjelly(sexp)


def test_class_security_checklist():
    taster = SecurityOptions()
    taster.allow_instances_of(A, B)
    a, b, c = A(), B(), C()
    a.b = b
    a.c = c
    a.x = b
    b.c = c
    friendly = jelly(a, security=taster)
    x = unjelly(friendly, security=taster)
    assert isinstance(x.c, Unpersistable)
    assert x.c.reason == f"Unpersistable data: b'instance of class {qual(C)} deemed insecure'"
    assert x.x is x.b
    assert x.b.c is x.c
    mean = jelly(a, security=DummySecurityOptions())
    with pytest.raises(InsecureJelly):
        unjelly(mean, security=taster)
    assert unjelly(jelly(A, security=taster), security=taster) is A
    with pytest.raises(InsecureJelly):
        unjelly(jelly(C), security=taster)


@pytest.mark.parametrize(
    "value",
    [afunc, A.amethod, A().amethod, len, [].append, os, sys, pytest, types, (afunc,), {"f": afunc}],
    ids=repr,
)
def test_functions_methods_and_modules_are_refused(value):
    # Twisted jellies these with a str name, which banana then refuses.
    with pytest.raises(JellyError):
        jelly(value)
    with pytest.raises(JellyError):
        jelly(value, security=DummySecurityOptions())


def test_lotsa_types_checklist():
    items = [[1, 2, 3], not bool(1), bool(1), "test", 20.3, (1, 2, 3), None, {"a": 1}]
    for item in items:
        assert unjelly(jelly(item)) == item
    assert unjelly(jelly(A), security=DummySecurityOptions()) is A


@pytest.mark.parametrize(
    "sexp",
    [
        [b"function", tag(A) + b".amethod"],
        [b"module", b"os"],
        [b"method", b"amethod", [b"None"], [b"class", tag(A)]],
    ],
)
def test_function_module_and_method_tags_are_refused(sexp):
    with pytest.raises(InsecureJelly):
        unjelly(sexp)
    security = SecurityOptions()
    security.allow_instances_of(A)  # also allows the "module" and "class" tags
    with pytest.raises(InsecureJelly):
        unjelly(sexp, security=security)


# --------------------------------------------------------------------------
# 2.5, 2.6: security


BASIC = {
    b"None", b"bool", b"boolean", b"string", b"str", b"int", b"float", b"datetime", b"time",
    b"date", b"timedelta", b"NoneType", b"unicode", b"decimal", b"set", b"frozenset",
}  # fmt: skip
CONTAINERS = {
    b"dictionary", b"list", b"tuple", b"reference", b"dereference", b"unpersistable",
    b"persistent", b"long_int", b"long", b"dict",
}  # fmt: skip
PB_TAGS = {b"remote", b"local", b"cached", b"lcache"}


def test_fresh_security_options():
    options = SecurityOptions()
    assert options.allowed_types == BASIC
    assert not options.allowed_modules
    assert not options.allowed_classes
    options.allow_basic_types()
    assert options.allowed_types == BASIC | CONTAINERS


def test_fresh_security_options_rejects_dictionary_and_containers():
    taster = SecurityOptions()
    with pytest.raises(InsecureJelly):
        unjelly(jelly({}), security=taster)
    for value in ([], (), {"a": 1}):
        with pytest.raises(InsecureJelly):
            unjelly(jelly(value), security=taster)
    for value in (None, True, "x", Decimal(1), {1}, frozenset(), D.date(2000, 1, 1)):
        assert unjelly(jelly(value), security=taster) == value


def test_global_security_defaults(restore_globals):
    assert global_security.allowed_types >= BASIC | CONTAINERS | PB_TAGS
    for forbidden in (b"class", b"module", b"function", b"method", b"instance", b"classobj"):
        assert not global_security.is_type_allowed(forbidden)
    assert not global_security.allowed_modules
    assert not global_security.allowed_classes
    assert unjelly(jelly([1, (2,), {3: {4}}])) == [1, (2,), {3: {4}}]


def test_global_security_imports_nothing_by_name():
    module = "colorsys"
    if module in sys.modules:  # pragma: no cover - only if something else imported it
        pytest.skip(f"{module} is already imported")
    for sexp in (
        [module.encode() + b".Color", [b"None"]],
        [b"class", module.encode() + b".rgb_to_hsv"],
        [b"module", module.encode()],
        [b"function", module.encode() + b".rgb_to_hsv"],
        [b"instance", [b"class", module.encode() + b".X"], [b"dictionary"]],
    ):
        with pytest.raises(InsecureJelly):
            unjelly(sexp)
        with pytest.raises(InsecureJelly):
            unjelly(sexp, security=SecurityOptions())
    assert module not in sys.modules


def test_allowed_module_but_not_class():
    security = SecurityOptions()
    security.allow_modules(sys.modules[__name__])
    assert security.allowed_modules == {__name__}
    with pytest.raises(InsecureJelly, match="Class"):
        unjelly([tag(A), [b"None"]], security=security)
    with pytest.raises(InsecureJelly):
        unjelly([__name__.encode() + b".os", [b"None"]], security=security)  # not a class
    with pytest.raises(InsecureJelly, match="Module"):
        unjelly([b"os.PathLike", [b"None"]], security=security)


def test_allow_instances_of():
    security = SecurityOptions()
    security.allow_instances_of(A, B)
    assert security.allowed_types >= BASIC | CONTAINERS | {b"instance", b"class", b"classobj", b"module"}
    assert tag(A) in security.allowed_types
    assert security.allowed_modules == {A.__module__}
    assert security.allowed_classes == {A, B}
    assert security.is_class_allowed(A)
    assert not security.is_class_allowed(C)
    assert security.is_module_allowed(A.__module__)
    assert not security.is_module_allowed("os")
    assert security.is_type_allowed(b"any.dotted.Name")
    assert not security.is_type_allowed(b"undotted")


def test_allow_types_accepts_bytes_str_and_classes():
    security = SecurityOptions()
    security.allow_types(b"one", "two", A)
    assert {b"one", b"two", tag(A)} <= security.allowed_types
    assert security.allowTypes == security.allow_types
    assert security.allowBasicTypes == security.allow_basic_types
    assert security.allowInstancesOf == security.allow_instances_of
    assert security.isClassAllowed(A) is False


@pytest.mark.parametrize(
    ("value", "atom"),
    [
        ([Decimal("9.95")], b"decimal"),
        ([{1, 2, 3}], b"set"),
        ([frozenset([1, 2, 3])], b"frozenset"),
        ([None], b"None"),
        ([D.date(2020, 1, 1)], b"date"),
    ],
)
def test_removing_a_type_makes_it_insecure(value, atom):
    sexp = jelly(value)
    taster = SecurityOptions()
    taster.allow_basic_types()
    assert unjelly(sexp, security=taster) == value
    taster.allowed_types.remove(atom)
    with pytest.raises(InsecureJelly):
        unjelly(sexp, security=taster)


def test_dummy_security_allows_everything():
    dummy = DummySecurityOptions()
    assert dummy.is_type_allowed(b"anything")
    assert dummy.is_module_allowed("os")
    assert dummy.is_class_allowed(object)
    obj = SimpleJellyTest(1, [2])
    back = roundtrip(obj, dummy)
    assert type(back) is SimpleJellyTest
    assert back.__dict__ == {"x": 1, "y": [2]}


class Registered(RemoteCopy):
    pass


def test_registered_undotted_tag_is_allowed(restore_globals):
    sexp = [b"undottedtag", [b"dictionary", [u("a"), 1]]]
    with pytest.raises(InsecureJelly):
        unjelly(sexp)
    set_unjellyable_for_class(b"undottedtag", Registered)
    back = unjelly(sexp)
    assert type(back) is Registered
    assert back.a == 1
    # Even with options that know nothing of it: registering is the permission.
    back = unjelly([b"undottedtag", [b"None"]], security=SecurityOptions())
    assert type(back) is Registered


def test_registered_class_by_class_object(restore_globals):
    class Sent(Copyable):
        pass

    set_unjellyable_for_class(Sent, Registered)
    obj = Sent()
    obj.v = [1]
    back = unjelly(jelly(obj))
    assert type(back) is Registered
    assert back.v == [1]


def test_registry_is_consulted_before_builtins():
    registry = CopyRegistry()
    registry.register(b"list", Registered)
    back = unjelly([b"list", [b"dictionary", [u("z"), 2]]], registry=registry)
    assert type(back) is Registered
    assert back.z == 2
    assert unjelly([b"list", 1, 2]) == [1, 2]


def test_private_registry_isolation():
    private = CopyRegistry()
    private.register(b"privtag", Registered)
    private.register_factory(b"privfactory", lambda state: ("made", state))
    assert b"privtag" in private
    assert b"privtag" not in copy_registry
    back = unjelly([b"privtag", [b"None"]], registry=private)
    assert type(back) is Registered
    assert unjelly([b"privfactory", 3], registry=private) == ("made", 3)
    for sexp in ([b"privtag", [b"None"]], [b"privfactory", 3]):
        with pytest.raises(InsecureJelly):
            unjelly(sexp)
    # A dotted tag passes the type check but not the module check.
    private.register(tag(Registered), Registered)
    assert type(unjelly([tag(Registered), [b"None"]], registry=private)) is Registered
    with pytest.raises(InsecureJelly):
        unjelly([tag(Registered), [b"None"]])


def test_parent_registry_is_consulted(restore_globals):
    parent = CopyRegistry()
    parent.register(b"fromparent", Registered)
    parent.register_factory(b"factoryparent", lambda state: ("parent", state))
    child = CopyRegistry(parent=parent)
    child.register_factory(b"factoryparent", lambda state: ("child", state))
    assert b"fromparent" in child
    assert b"fromparent" not in CopyRegistry()
    assert type(unjelly([b"fromparent", [b"None"]], registry=child)) is Registered
    assert unjelly([b"factoryparent", 1], registry=child) == ("child", 1)
    assert unjelly([b"factoryparent", 1], registry=parent) == ("parent", 1)
    # A broker's private registry layered on the process-wide one.
    set_unjellyable_for_class(b"globaltag", Registered)
    layered = CopyRegistry(parent=copy_registry)
    assert type(unjelly([b"globaltag", [b"None"]], registry=layered)) is Registered
    assert b"globaltag" not in CopyRegistry()
    with pytest.raises(InsecureJelly):
        unjelly([b"globaltag", [b"None"]], registry=CopyRegistry())


def test_set_unjellyable_factory_for_class(restore_globals):
    made: list[Any] = []

    def factory(state: Any) -> Any:
        made.append(state)
        return ("built", state)

    set_unjellyable_factory_for_class(b"factorytag", factory)
    value = unjelly([b"list", [b"factorytag", [b"dictionary", [u("a"), 1]]]])
    assert value == [("built", {"a": 1})]
    assert made == [{"a": 1}]
    with pytest.raises(JellyError):
        unjelly([b"factorytag"])
    with pytest.raises(JellyError):
        unjelly([b"factorytag", 1, 2])


def test_factory_inside_a_cycle():
    registry = CopyRegistry()
    registry.register_factory(b"box", lambda state: ("box", state))
    sexp = [b"reference", 1, [b"list", [b"box", [b"list", [b"dereference", 1]]]]]
    back = unjelly(sexp, registry=registry)
    assert back[0][0] == "box"
    assert back[0][1][0] is back
    sexp = [b"reference", 1, [b"box", [b"tuple", [b"dereference", 1]]]]
    with pytest.raises(JellyError):  # a factory result that contains itself through a tuple
        unjelly(sexp, registry=registry)


def test_registered_function_gets_the_sexp():
    registry = CopyRegistry()
    calls: list[Any] = []

    def rebuild(unjellier: Any, sexp: list[Any]) -> Any:
        calls.append(sexp)
        return ("rebuilt", unjellier.unjelly(sexp[1]))

    registry.register(b"functag", rebuild)  # type: ignore[arg-type]
    assert unjelly([b"functag", u("x")], registry=registry) == ("rebuilt", "x")
    assert calls == [[b"functag", u("x")]]


def test_set_unjellyable_for_class_tree(restore_globals):
    module = types.ModuleType("copied_tree")

    class Base(RemoteCopy):
        pass

    class Leaf(Base):
        pass

    module.Base = Base
    module.Alias = Leaf
    module.Other = A
    set_unjellyable_for_class_tree(module, Base)
    assert copy_registry.lookup_class(b"copied_tree.Base") is Base
    assert copy_registry.lookup_class(b"copied_tree.Alias") is Leaf
    assert copy_registry.lookup_class(b"copied_tree.Other") is None
    set_unjellyable_for_class_tree(module, Base, "pfx")
    assert copy_registry.lookup_class(b"pfx.Alias") is Leaf
    set_unjellyable_for_class_tree(module, Base, "")
    assert copy_registry.lookup_class(b"Alias") is Leaf
    assert type(unjelly([b"Alias", [b"None"]])) is Leaf


def test_pb_tags_need_an_invoker():
    for name in PB_TAGS:
        with pytest.raises(InsecureJelly):
            unjelly([name, 1])
    invoker = FakeInvoker()
    assert unjelly([b"list", [b"remote", 1], [b"lcache", 2]], invoker=invoker) == [
        ("pb", b"remote", 1),
        ("pb", b"lcache", 2),
    ]
    assert invoker.pb_tags == [[b"remote", 1], [b"lcache", 2]]


# --------------------------------------------------------------------------
# 4: Copyable / RemoteCopy


class Pt(Copyable, RemoteCopy):
    __module__ = "__main__"  # to match the capture in Appendix A byte for byte

    def __init__(self) -> None:
        self.x = 1
        self.y = "two"


class CustomTag(Copyable):
    def __init__(self) -> None:
        self.a = 1

    def getTypeToCopy(self) -> bytes:
        return b"customtag"


def test_appendix_a_copy_forms():
    sexp = jelly([Pt(), CustomTag()], invoker=FakeInvoker())
    assert sexp == [
        b"list",
        [
            b"__main__.Pt",
            [b"dictionary", [[b"unicode", b"x"], 1], [[b"unicode", b"y"], [b"unicode", b"two"]]],
        ],
        [b"customtag", [b"dictionary", [[b"unicode", b"a"], 1]]],
    ]
    wire = banana.encode(sexp)
    assert banana.decode(wire) == sexp


class Counted(RemoteCopy):
    inits = 0

    def __init__(self) -> None:
        type(self).inits += 1


def test_remote_copy_is_built_without_init():
    registry = CopyRegistry()
    registry.register(b"counted", Counted)
    before = Counted.inits
    back = unjelly([b"list", *[[b"counted", [b"dictionary", [u("a"), 1]]]] * 3], registry=registry)
    assert Counted.inits == before
    assert [type(x) for x in back] == [Counted] * 3
    assert [x.a for x in back] == [1, 1, 1]


@pytest.mark.parametrize("state", [[b"None"], [b"dictionary"]])
def test_remote_copy_empty_state(state):
    registry = CopyRegistry()
    registry.register(b"counted", Counted)
    back = unjelly([b"counted", state], registry=registry)
    assert back.__dict__ == {}


def test_remote_copy_bytes_keys_become_str():
    registry = CopyRegistry()
    registry.register(b"counted", Counted)
    back = unjelly([b"counted", [b"dictionary", [b"a", 1], [u("b"), 2]]], registry=registry)
    assert back.__dict__ == {"a": 1, "b": 2}


@pytest.mark.parametrize("state", [5, [b"list", 1], u("text")])
def test_remote_copy_state_that_is_not_a_dict(state):
    registry = CopyRegistry()
    registry.register(b"counted", Counted)
    with pytest.raises(JellyError):
        unjelly([b"counted", state], registry=registry)


class SnakeState(RemoteCopy):
    def set_copyable_state(self, state: Any) -> None:
        self.got = ("snake", state)


class CamelState(RemoteCopy):
    def setCopyableState(self, state: Any) -> None:
        self.got = ("camel", state)


class CamelChild(CamelState):
    def setCopyableState(self, state: Any) -> None:
        super().setCopyableState(state)
        self.child = True


class SnakeChildOfCamel(CamelState):
    def set_copyable_state(self, state: Any) -> None:
        super().set_copyable_state(state)
        self.snake_child = True


class BothWays(Copyable, RemoteCopy):
    """Copyable and RemoteCopy at once, overriding the Twisted spelling."""

    def setCopyableState(self, state: Any) -> None:
        self.got = ("both", state)


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        (SnakeState, {"got": ("snake", {"k": 1})}),
        (CamelState, {"got": ("camel", {"k": 1})}),
        (CamelChild, {"got": ("camel", {"k": 1}), "child": True}),
        (SnakeChildOfCamel, {"got": ("camel", {"k": 1}), "snake_child": True}),
        (BothWays, {"got": ("both", {"k": 1})}),
    ],
)
def test_set_copyable_state_either_spelling(cls, expected):
    registry = CopyRegistry()
    registry.register(b"t", cls)
    back = unjelly([b"t", [b"dictionary", [u("k"), 1]]], registry=registry)
    assert type(back) is cls
    assert back.__dict__ == expected
    # Both names reach the same code, whichever one is called.
    other = cls.__new__(cls)
    other.setCopyableState({"k": 1})
    assert other.__dict__ == expected
    other = cls.__new__(cls)
    other.set_copyable_state({"k": 1})
    assert other.__dict__ == expected


class CamelCopy(Copyable):
    def __init__(self) -> None:
        self.secret = "s"
        self.public = 1

    def getStateToCopy(self) -> dict[str, Any]:
        return {"public": self.public}


class SnakeCopy(Copyable):
    def get_state_to_copy(self) -> dict[str, Any]:
        return {"snake": True}


class PerPerspective(Copyable):
    def getStateToCopyFor(self, perspective: Any) -> dict[str, Any]:
        return {"for": perspective}

    def getTypeToCopyFor(self, perspective: Any) -> bytes:
        return b"pp-" + (perspective or "nobody").encode()


@pytest.mark.parametrize("invoker", [None, FakeInvoker()])
def test_get_state_to_copy_either_spelling(invoker):
    assert jelly(CamelCopy(), invoker=invoker) == [tag(CamelCopy), [b"dictionary", [u("public"), 1]]]
    assert jelly(SnakeCopy(), invoker=invoker) == [
        tag(SnakeCopy),
        [b"dictionary", [u("snake"), [b"boolean", b"true"]]],
    ]
    assert CamelCopy().get_state_to_copy() == {"public": 1}
    assert SnakeCopy().getStateToCopy() == {"snake": True}
    assert CamelCopy().get_state_to_copy_for("p") == {"public": 1}


def test_per_perspective_state_and_type():
    obj = PerPerspective()
    assert jelly(obj, invoker=FakeInvoker("alice")) == [b"pp-alice", [b"dictionary", [u("for"), u("alice")]]]
    assert jelly(obj, invoker=FakeInvoker()) == [b"pp-nobody", [b"dictionary", [u("for"), [b"None"]]]]
    assert jelly(obj) == [b"pp-nobody", [b"dictionary", [u("for"), [b"None"]]]]


def test_copyable_sent_twice_is_referenced():
    obj = CustomTag()
    sexp = jelly([obj, obj], invoker=FakeInvoker())
    assert sexp == [
        b"list",
        [b"reference", 1, [b"customtag", [b"dictionary", [u("a"), 1]]]],
        [b"dereference", 1],
    ]
    registry = CopyRegistry()
    registry.register(b"customtag", Registered)
    back = unjelly(sexp, registry=registry)
    assert back[0] is back[1]
    assert back[0].a == 1


class ClassA(Copyable, RemoteCopy):
    def __init__(self) -> None:
        self.ref = ClassB(self)


class ClassB(Copyable, RemoteCopy):
    def __init__(self, ref: ClassA) -> None:
        self.ref = ref


@pytest.mark.parametrize("invoker", [None, FakeInvoker()])
def test_circular_copyable_pair(restore_globals, invoker):
    set_unjellyable_for_class(ClassA, ClassA)
    set_unjellyable_for_class(ClassB, ClassB)
    sexp = jelly(ClassA(), invoker=invoker)
    assert sexp == [
        b"reference",
        1,
        [
            tag(ClassA),
            [b"dictionary", [u("ref"), [tag(ClassB), [b"dictionary", [u("ref"), [b"dereference", 1]]]]]],
        ],
    ]
    a = unjelly(sexp)
    assert type(a) is ClassA
    assert type(a.ref) is ClassB
    assert a.ref.ref is a


def test_set_and_frozenset_cycles_through_instances():
    security = SecurityOptions()
    security.allow_instances_of(SimpleJellyTest)
    s: set[Any] = set()
    a = SimpleJellyTest(s, None)
    s.add(a)
    res = roundtrip(a, security)
    assert isinstance(res.x, set)
    assert list(res.x) == [res]
    b = SimpleJellyTest(None, None)
    b.x = frozenset([b])
    res = roundtrip(b, security)
    assert isinstance(res.x, frozenset)
    assert list(res.x) == [res]


def test_cycle_through_remote_copy_state():
    registry = CopyRegistry()
    registry.register(b"node", Registered)
    sexp = [b"reference", 1, [b"node", [b"dictionary", [u("me"), [b"tuple", [b"dereference", 1]]]]]]
    back = unjelly(sexp, registry=registry)
    assert back.me == (back,)


def test_remote_copy_state_completed_after_set_copyable_state():
    # The state dict is still empty when set_copyable_state runs (its only
    # key is a forward reference); the default must adopt that very dict.
    registry = CopyRegistry()
    registry.register(b"node", Registered)
    sexp = [
        b"tuple",
        [b"node", [b"dictionary", [[b"dereference", 2], 1]]],
        [b"reference", 2, [b"tuple", 7]],
    ]
    back = unjelly(sexp, registry=registry)
    assert type(back[0]) is Registered
    assert back[0].__dict__ == {(7,): 1}
    assert next(iter(back[0].__dict__)) is back[1]


# --------------------------------------------------------------------------
# Property tests: round trips keep values and sharing


HASHABLE_ATOMS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**448) + 1, 2**448 - 1),
    st.floats(allow_nan=False),
    st.binary(max_size=10),
    st.text(max_size=10),
    st.datetimes(),
    st.dates(),
    st.times(),
    st.timedeltas(),
    decimals(),
)


def _hashables(with_sets: bool) -> st.SearchStrategy[Any]:
    def extend(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        tuples = st.lists(inner, max_size=3).map(tuple)
        return tuples | st.frozensets(inner, max_size=3) if with_sets else tuples

    return st.recursive(HASHABLE_ATOMS, extend, max_leaves=6)


def _values(with_sets: bool) -> st.SearchStrategy[Any]:
    hashables = _hashables(with_sets)

    def extend(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        kinds = [
            st.lists(inner, max_size=4),
            st.lists(inner, max_size=4).map(tuple),
            st.dictionaries(hashables, inner, max_size=4),
        ]
        if with_sets:
            kinds += [st.sets(hashables, max_size=4), st.frozensets(hashables, max_size=4)]
        return st.one_of(kinds)

    return st.recursive(HASHABLE_ATOMS, extend, max_leaves=15)


STRATEGIES = {with_sets: (_values(with_sets), _hashables(with_sets)) for with_sets in (True, False)}


@st.composite
def shared_graphs(draw: Any, with_sets: bool = True) -> Any:
    """Values in which some containers appear several times."""
    values, hashables = STRATEGIES[with_sets]
    pool: list[Any] = []

    def pick() -> Any:
        return pool[draw(st.integers(0, len(pool) - 1))]

    for _ in range(draw(st.integers(1, 4))):
        size = draw(st.integers(0, 4))
        parts = [pick() if pool and draw(st.booleans()) else draw(values) for _ in range(size)]
        kind = draw(st.sampled_from(["list", "tuple", "dict"]))
        if kind == "list":
            pool.append(parts)
        elif kind == "tuple":
            pool.append(tuple(parts))
        else:
            keys = draw(st.lists(hashables, min_size=size, max_size=size, unique=True))
            pool.append(dict(zip(keys, parts, strict=True)))
    top = [pick() for _ in range(draw(st.integers(1, 6)))]
    return tuple(top) if draw(st.booleans()) else top


@settings(max_examples=100, deadline=None)
@given(shared_graphs(with_sets=True))
def test_round_trip_equal(value):
    back = unjelly(jelly(value))
    assert back == value
    assert_no_placeholders(back)
    wire = banana.encode(jelly(value))
    assert unjelly(banana.decode(wire)) == value


@settings(max_examples=150, deadline=None)
@given(shared_graphs(with_sets=False))
def test_round_trip_keeps_sharing(value):
    # Without sets the order is fixed, so jelly of the copy must be identical,
    # references and all.
    sexp = jelly(value)
    assert jelly(unjelly(sexp)) == sexp


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from(["list", "dict", "tuple-in-list"]), min_size=1, max_size=6))
def test_round_trip_keeps_cycles(kinds):
    # A chain of containers whose last one points back to the first.
    def attach(container: Any, child: Any) -> None:
        if isinstance(container, list):
            container.append(child)
        else:
            container["n"] = child

    root: list[Any] = []
    current: Any = root
    for kind in kinds:
        if kind == "list":
            nxt: Any = []
            attach(current, nxt)
        elif kind == "dict":
            nxt = {}
            attach(current, nxt)
        else:
            nxt = []
            attach(current, (nxt,))
        current = nxt
    attach(current, root)
    sexp = jelly(root)
    back = unjelly(sexp)
    assert jelly(back) == sexp
    assert_no_placeholders(back)


@st.composite
def cyclic_graphs(draw: Any) -> Any:
    """Random graphs of lists, dicts and instances (which may form any cycle)
    and tuples over them (which are built after their items)."""
    mutables: list[Any] = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["list", "dict", "instance"]))
        mutables.append([] if kind == "list" else {} if kind == "dict" else SimpleJellyTest(None, None))
    nodes = list(mutables)

    def pick() -> Any:
        if draw(st.integers(0, 3)) == 0:
            return draw(st.integers(0, 9))
        return nodes[draw(st.integers(0, len(nodes) - 1))]

    for _ in range(draw(st.integers(0, 4))):
        # From a list: on Python 3.10, tuple() of an empty generator can make an
        # empty tuple that is not the () singleton, which unjelly gives back.
        nodes.append(tuple([pick() for _ in range(draw(st.integers(0, 3)))]))
    for node in mutables:
        items = [pick() for _ in range(draw(st.integers(0, 3)))]
        if isinstance(node, list):
            node.extend(items)
        elif isinstance(node, dict):
            node.update((f"k{i}", item) for i, item in enumerate(items))
        else:
            node.x = items
            node.y = pick()
    return [pick() for _ in range(draw(st.integers(1, 4)))]


GRAPH_SECURITY = SecurityOptions()
GRAPH_SECURITY.allow_instances_of(SimpleJellyTest)


@settings(max_examples=300, deadline=None)
@given(cyclic_graphs())
def test_round_trip_keeps_any_cyclic_graph(value):
    sexp = jelly(value, security=GRAPH_SECURITY)
    back = unjelly(sexp, security=GRAPH_SECURITY)
    assert_no_placeholders(back)
    assert jelly(back, security=GRAPH_SECURITY) == sexp


# --------------------------------------------------------------------------
# Robustness: hostile s-expressions only ever raise JellyError


def assert_no_placeholders(value: Any) -> None:
    """No unresolved stand-in (trio_pb.jelly._Pending) may reach the caller."""
    seen: set[int] = set()
    stack = [value]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        assert not isinstance(obj, jelly_mod._Pending), "placeholder leaked into the result"
        if isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
        elif isinstance(obj, dict):
            stack.extend(obj)
            stack.extend(obj.values())
        elif hasattr(obj, "__dict__") and not isinstance(obj, type):
            stack.append(vars(obj))


class FuzzCopy(RemoteCopy):
    pass


class FuzzUnjellyable(Unjellyable):
    pass


class FuzzSetState:
    def __setstate__(self, state: Any) -> None:
        self.state = state


KNOWN_TAGS = [
    b"None", b"unicode", b"boolean", b"list", b"tuple", b"dictionary", b"set", b"frozenset",
    b"datetime", b"date", b"time", b"timedelta", b"decimal", b"reference", b"dereference",
    b"unpersistable", b"persistent", b"class", b"instance", b"module", b"function", b"method",
    b"remote", b"local", b"cached", b"lcache", b"fuzzcopy", b"fuzzfactory", b"fuzzunjellyable",
    tag(SimpleJellyTest), tag(FuzzSetState), tag(Empty), tag(A), b"colorsys.X", b"true", b"false",
    b"1 2 3", b"2020 1 2 3 4 5 6",
]  # fmt: skip

SEXP_LEAVES = st.one_of(
    st.sampled_from(KNOWN_TAGS),
    st.binary(max_size=6),
    st.integers(-2, 4),
    st.integers(),
    st.floats(),
)
SEXPS = st.recursive(
    SEXP_LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.tuples(st.sampled_from(KNOWN_TAGS), st.lists(inner, max_size=4)).map(lambda t: [t[0], *t[1]]),
        st.tuples(st.sampled_from([b"dictionary"]), st.lists(st.lists(inner, min_size=2, max_size=2))).map(
            lambda t: [t[0], *t[1]]
        ),
        st.tuples(st.sampled_from([b"reference"]), st.integers(1, 3), inner).map(list),
        st.tuples(st.sampled_from([b"dereference"]), st.integers(1, 3)).map(list),
    ),
    max_leaves=25,
)


def _fuzz_registry() -> CopyRegistry:
    registry = CopyRegistry()
    registry.register(b"fuzzcopy", FuzzCopy)
    registry.register(b"fuzzunjellyable", FuzzUnjellyable)
    registry.register_factory(b"fuzzfactory", lambda state: ("made", state))
    return registry


def _fuzz_security() -> SecurityOptions:
    security = SecurityOptions()
    security.allow_instances_of(SimpleJellyTest, FuzzSetState, Empty)
    security.allow_types(*PB_TAGS)
    return security


FUZZ_REGISTRY = _fuzz_registry()
FUZZ_SECURITY = _fuzz_security()


@pytest.mark.filterwarnings("ignore:the 'instance' jelly tag:DeprecationWarning")
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SEXPS)
def test_hostile_sexps_only_raise_jelly_error(sexp):
    modules_before = set(sys.modules)
    for kwargs in (
        {},
        {"security": FUZZ_SECURITY, "registry": FUZZ_REGISTRY, "invoker": FakeInvoker()},
        {"security": SecurityOptions(), "registry": FUZZ_REGISTRY},
    ):
        try:
            result = unjelly(sexp, **kwargs)
        except JellyError:
            continue
        assert_no_placeholders(result)
    assert set(sys.modules) == modules_before


REFERENCE_GRAPHS = st.recursive(
    st.integers(0, 3) | st.just([b"None"]),
    lambda inner: st.one_of(
        st.tuples(
            st.sampled_from([b"list", b"tuple", b"set", b"frozenset", b"fuzzcopy", b"fuzzfactory"]),
            st.lists(inner, max_size=3),
        ).map(
            lambda t: [t[0], *t[1]] if t[0] not in (b"fuzzcopy", b"fuzzfactory") else [t[0], [b"list", *t[1]]]
        ),
        st.lists(st.tuples(inner, inner).map(list), max_size=2).map(lambda pairs: [b"dictionary", *pairs]),
        st.tuples(st.just(b"reference"), st.integers(1, 3), inner).map(list),
        st.tuples(st.just(b"dereference"), st.integers(1, 3)).map(list),
    ),
    max_leaves=12,
)


@settings(max_examples=500, deadline=None)
@given(REFERENCE_GRAPHS)
def test_hostile_reference_graphs_resolve_or_raise_jelly_error(sexp):
    # Forward references, cycles through immutable containers and factories:
    # either every placeholder is resolved or the whole unjelly fails.
    try:
        result = unjelly(sexp, registry=FUZZ_REGISTRY)
    except JellyError:
        return
    assert_no_placeholders(result)


@pytest.mark.parametrize("tag_name", [b"list", b"tuple", b"set", b"frozenset", b"dictionary", b"reference"])
def test_deep_nesting_is_a_jelly_error(tag_name):
    def nest(depth: int) -> Any:
        sexp: Any = 1
        for level in range(depth):
            if tag_name == b"dictionary":
                sexp = [tag_name, [1, sexp]]
            elif tag_name == b"reference":
                sexp = [tag_name, level + 1, [b"tuple", sexp]]
            else:
                sexp = [b"frozenset" if tag_name == b"set" else tag_name, sexp]
        return sexp

    with pytest.raises(JellyError):
        unjelly(nest(100_000))
    with pytest.raises(JellyError):
        unjelly(nest(300))
    # As deep as banana can carry still works.
    depth = 128 if tag_name == b"reference" else banana.DEPTH_LIMIT
    assert unjelly(nest(depth)) is not None
    with pytest.raises(JellyError):
        unjelly(nest(11), depth_limit=10)


def test_deep_nesting_when_jellying_is_a_jelly_error():
    value: Any = []
    for _ in range(100_000):
        value = [value]
    with pytest.raises(JellyError):
        jelly(value)
    value = []
    for _ in range(150):
        value = [value]
    assert unjelly(jelly(value)) == value
