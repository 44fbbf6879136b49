"""Differential tests: trio_pb's jelly against real Twisted's, s-expression and wire byte for byte.

Twisted is used with ``taster=jelly.globalSecurity`` (what every PB broker
uses), never with its permissive default.
"""

from __future__ import annotations

import copy
import sys
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pbdata import decimals

from trio_pb import banana
from trio_pb.errors import BananaError, InsecureJelly, JellyError
from trio_pb.flavors import Copyable, RemoteCopy
from trio_pb.jelly import CopyRegistry, SecurityOptions, jelly, qual, unjelly

tj = pytest.importorskip("twisted.spread.jelly")
tb = pytest.importorskip("twisted.spread.banana")
tpb = pytest.importorskip("twisted.spread.pb")

pytestmark = pytest.mark.twisted


def tw_jelly(value: Any, taster: Any = None, invoker: Any = None) -> Any:
    return tj.jelly(value, taster=taster if taster is not None else tj.globalSecurity, invoker=invoker)


def tw_unjelly(sexp: Any, taster: Any = None) -> Any:
    return tj.unjelly(copy.deepcopy(sexp), taster=taster if taster is not None else tj.globalSecurity)


def check_same(value: Any, ours_security: Any = None, taster: Any = None) -> Any:
    """Both jellies agree exactly, on the s-expression and on the wire; returns it."""
    ours = jelly(value, security=ours_security)
    theirs = tw_jelly(value, taster)
    assert ours == theirs
    assert banana.encode(ours, dialect=b"none") == tb.encode(theirs)
    return ours


# --------------------------------------------------------------------------
# Values


ATOMS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**31) - 2, 2**31 + 2),
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
HASHABLES = st.recursive(
    ATOMS,
    lambda inner: st.lists(inner, max_size=3).map(tuple) | st.frozensets(inner, max_size=3),
    max_leaves=6,
)
VALUES = st.recursive(
    ATOMS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(HASHABLES, inner, max_size=4),
        st.sets(HASHABLES, max_size=4),
        st.frozensets(HASHABLES, max_size=4),
    ),
    max_leaves=15,
)


@st.composite
def shared_graphs(draw: Any) -> Any:
    """Values in which some containers appear several times (no cycles: Twisted's
    unjelly cannot take every cyclic shape)."""
    pool: list[Any] = []

    def pick() -> Any:
        return pool[draw(st.integers(0, len(pool) - 1))]

    for _ in range(draw(st.integers(1, 4))):
        size = draw(st.integers(0, 4))
        parts = [pick() if pool and draw(st.booleans()) else draw(VALUES) for _ in range(size)]
        kind = draw(st.sampled_from(["list", "tuple", "dict", "frozenset"]))
        if kind == "list":
            pool.append(parts)
        elif kind == "tuple":
            pool.append(tuple(parts))
        elif kind == "frozenset":
            pool.append(frozenset(draw(st.lists(HASHABLES, max_size=3))))
        else:
            keys = draw(st.lists(HASHABLES, min_size=size, max_size=size, unique=True))
            pool.append(dict(zip(keys, parts, strict=True)))
    top = [pick() for _ in range(draw(st.integers(1, 6)))]
    return tuple(top) if draw(st.booleans()) else top


@settings(max_examples=200, deadline=None)
@given(shared_graphs())
def test_differential_values(value):
    ours = check_same(value)
    theirs = tw_jelly(value)
    # Each side unjellies the other's output to an equal value.
    assert unjelly(theirs) == value
    assert tw_unjelly(ours) == value
    # And our banana decodes Twisted's bytes.
    assert unjelly(banana.decode(tb.encode(theirs), dialect=b"none")) == value
    assert tj.unjelly(tb.decode(banana.encode(ours, dialect=b"none")), taster=tj.globalSecurity) == value


@settings(max_examples=100, deadline=None)
@given(ATOMS)
def test_differential_atoms(value):
    ours = check_same(value)
    back = tw_unjelly(ours)
    assert back == value
    assert type(back) is type(value)
    back = unjelly(tw_jelly(value))
    assert back == value
    assert type(back) is type(value)


@pytest.mark.parametrize(
    "value",
    [
        Decimal("9.95"),
        Decimal(0),
        Decimal(123456),
        Decimal("-78.901"),
        Decimal("-0"),
        Decimal("-0.000"),
        Decimal("1E+30"),
        Decimal("-1.25"),
    ],
)
def test_decimal_forms_match_twisted(value):
    ours = check_same(value)
    assert unjelly(ours) == tw_unjelly(ours) == value


@pytest.mark.parametrize(
    "value",
    [2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**448 - 1, -(2**448) + 1, 0, -1, 1.5, -0.0, float("inf")],
)
def test_integer_and_float_boundaries_match_on_the_wire(value):
    check_same(value)
    check_same([value, [value]])


@pytest.mark.parametrize("value", [2**448, -(2**448)])
def test_integers_too_big_for_banana_fail_on_both_sides(value):
    assert jelly(value) == tw_jelly(value) == value
    with pytest.raises(BananaError):
        banana.encode(value, dialect=b"none")
    with pytest.raises(tb.BananaError):
        tb.encode(value)


# --------------------------------------------------------------------------
# Shared references and cycles


def _self_list() -> Any:
    c: list[Any] = []
    c.append(c)
    return c


def _stress() -> Any:
    reref: list[Any] = []
    top = ({"list": reref}, reref)
    reref.append(top)
    return top


def _more() -> Any:
    a: list[Any] = []
    t = (a,)
    a.append((t,))
    return t


def _self_dict() -> Any:
    d: dict[str, Any] = {}
    d["me"] = d
    d["l"] = [d, (d,)]
    return d


def _tuple_seen_again() -> Any:
    lst: list[Any] = []
    tup = (lst,)
    lst.append(tup)
    return [lst, tup, [tup]]


def _shared_order() -> Any:
    a, b = [1], [2]
    return [b, a, a, b, (a, b), {"a": a}]


@pytest.mark.parametrize(
    "make",
    [_self_list, _stress, _more, _self_dict, _tuple_seen_again, _shared_order],
    ids=lambda f: f.__name__,
)
def test_references_match_twisted(make):
    value = make()
    ours = check_same(value)
    back = unjelly(ours)
    # Re-jellying our copy gives the same references: identity survived.
    assert jelly(back) == ours
    if make is not _tuple_seen_again:  # Twisted's own unjelly asserts on this one
        assert tj.jelly(tw_unjelly(ours)) == ours


def test_captured_reference_forms_match_twisted():
    inner = [1]
    assert check_same((inner, inner)) == [b"tuple", [b"reference", 1, [b"list", 1]], [b"dereference", 1]]
    assert check_same(_self_list()) == [b"reference", 1, [b"list", [b"dereference", 1]]]


def test_twisted_cycles_unjelly_on_our_side():
    top = unjelly(tw_jelly(_stress()))
    assert top[0]["list"] is top[1]
    assert top[0]["list"][0] is top
    t = unjelly(tw_jelly(_more()))
    assert t[0][0][0] is t
    d = unjelly(tw_jelly(_self_dict()))
    assert d["me"] is d
    assert d["l"][0] is d
    assert d["l"][1][0] is d
    assert list(d) == ["me", "l"]


# --------------------------------------------------------------------------
# Instances


class Plain:
    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


class Slots:
    __slots__ = ("x", "y")


class SecErr(Exception):
    pass


def _both_tasters(*classes: type) -> tuple[SecurityOptions, Any]:
    ours = SecurityOptions()
    ours.allow_instances_of(*classes)
    theirs = tj.SecurityOptions()
    theirs.allowInstancesOf(*classes)
    return ours, theirs


def test_instances_match_twisted():
    ours_t, theirs_t = _both_tasters(Plain)
    shared = Plain(v=1)
    value = [Plain(a=1, b="two", c=[shared]), shared, Plain()]
    sexp = check_same(value, ours_t, theirs_t)
    if sys.version_info >= (3, 11):
        assert sexp[3] == [qual(Plain).encode(), [b"None"]]
    back = unjelly(sexp, security=ours_t)
    assert back[0].c[0] is back[1]
    assert back[0].b == "two"
    theirs = tj.unjelly(copy.deepcopy(sexp), taster=theirs_t)
    assert theirs[0].c[0] is theirs[1]
    assert unjelly(tj.jelly(value, taster=theirs_t), security=ours_t)[0].a == 1


def test_instance_cycles_match_twisted():
    ours_t, theirs_t = _both_tasters(Plain)
    a = Plain()
    a.me = a
    a.group = {a}
    a.frozen = frozenset([a])
    a.pair = (a, 1)
    sexp = check_same(a, ours_t, theirs_t)
    back = unjelly(tj.jelly(a, taster=theirs_t), security=ours_t)
    assert back.me is back
    assert next(iter(back.group)) is back
    assert next(iter(back.frozen)) is back
    assert back.pair == (back, 1)
    back = tj.unjelly(copy.deepcopy(sexp), taster=theirs_t)
    assert back.me is back


@pytest.mark.skipif(sys.version_info < (3, 11), reason="object.__getstate__ is new in 3.11")
def test_slots_and_exceptions_match_twisted():
    ours_t, theirs_t = _both_tasters(Slots, SecErr)
    obj = Slots()
    obj.x = 1
    obj.y = [2]
    check_same(obj, ours_t, theirs_t)
    sexp = check_same(SecErr("lost"), ours_t, theirs_t)
    assert sexp == [qual(SecErr).encode(), [b"None"]]


def test_unpersistable_matches_twisted():
    shared = Plain()
    sexp = check_same([Plain(), shared, shared, SecErr("x")])
    assert sexp[1] == [b"unpersistable", b"instance of class " + qual(Plain).encode() + b" deemed insecure"]
    assert sexp[3] == [b"dereference", 1]
    ours = unjelly(sexp)
    theirs = tw_unjelly(sexp)
    assert ours[0].reason == theirs[0].reason
    assert ours[1] is ours[2]


def test_classes_match_twisted():
    sexp = check_same([Plain, str])
    assert sexp == [b"list", [b"class", qual(Plain).encode()], [b"class", b"builtins.str"]]
    with pytest.raises(InsecureJelly):
        unjelly(sexp)
    with pytest.raises(tj.InsecureJelly):
        tw_unjelly(sexp)


@pytest.mark.parametrize(
    "sexp",
    [
        [b"class", b"os.PathLike"],
        [b"module", b"os"],
        [b"function", b"os.system"],
        [b"instance", [b"class", b"os.PathLike"], [b"dictionary"]],
        [b"os.PathLike", [b"None"]],
        [b"list", [b"colorsys.X", [b"None"]]],
        [b"notregistered", 1],
    ],
)
def test_insecure_on_both_sides(sexp):
    with pytest.raises(InsecureJelly):
        unjelly(sexp)
    with pytest.raises(tj.InsecureJelly):
        tw_unjelly(sexp)


@pytest.mark.parametrize("atom", [b"decimal", b"set", b"frozenset", b"list", b"dictionary", b"tuple"])
def test_fresh_security_options_agree_with_twisted(atom):
    value = {b"decimal": [Decimal(1)], b"set": [{1}], b"frozenset": [frozenset([1])]}.get(atom, [{"d": (1,)}])
    sexp = check_same(value)
    ours = SecurityOptions()
    ours.allow_basic_types()
    theirs = tj.SecurityOptions()
    theirs.allowBasicTypes()
    assert unjelly(sexp, security=ours) == tw_unjelly(sexp, theirs) == value
    ours.allowed_types.remove(atom)
    theirs.allowedTypes.pop(atom)
    with pytest.raises(InsecureJelly):
        unjelly(sexp, security=ours)
    with pytest.raises(tj.InsecureJelly):
        tw_unjelly(sexp, theirs)


def test_functions_cannot_cross_banana_in_twisted_either():
    sexp = tw_jelly(check_same)
    with pytest.raises(tb.BananaError):
        tb.encode(sexp)
    with pytest.raises(JellyError):
        jelly(check_same)


# --------------------------------------------------------------------------
# Copyable / RemoteCopy


class _TwistedInvoker:
    serializingPerspective = None


class _OurInvoker:
    serializing_perspective = None

    def unjelly_pb_tag(self, unjellier: Any, sexp: list[Any]) -> Any:
        raise AssertionError("no PB tags expected")


def _twin(base: type, name: str, **body: Any) -> type:
    return type(name, (base,), {"__module__": "twin.module", **body})


def _init(self: Any) -> None:
    self.x = 1
    self.y = "two"
    self.items = [1, (2,)]


OurPt = _twin(Copyable, "Pt", __init__=_init)
TheirPt = _twin(tpb.Copyable, "Pt", __init__=_init)
OurCopy = _twin(RemoteCopy, "PtCopy")
TheirCopy = _twin(tpb.RemoteCopy, "PtCopy")


def test_copyable_matches_twisted():
    ours = jelly(OurPt(), invoker=_OurInvoker())
    theirs = tj.jelly(TheirPt(), invoker=_TwistedInvoker())
    assert ours == theirs
    assert ours[0] == b"twin.module.Pt"
    assert banana.encode(ours) == banana.encode(theirs)
    obj = OurPt()
    pair = jelly([obj, obj], invoker=_OurInvoker())
    tobj = TheirPt()
    assert pair == tj.jelly([tobj, tobj], invoker=_TwistedInvoker())


def test_twisted_copy_unjellies_as_our_remote_copy():
    registry = CopyRegistry()
    registry.register(b"twin.module.Pt", OurCopy)
    obj = TheirPt()
    back = unjelly(tj.jelly([obj, obj], invoker=_TwistedInvoker()), registry=registry, invoker=_OurInvoker())
    assert type(back[0]) is OurCopy
    assert back[0] is back[1]
    assert back[0].__dict__ == {"x": 1, "y": "two", "items": [1, (2,)]}


def test_our_copy_unjellies_as_twisted_remote_copy():
    tj.setUnjellyableForClass(b"twin.module.Pt", TheirCopy)
    try:
        back = tj.unjelly(
            jelly(OurPt(), invoker=_OurInvoker()), taster=tj.globalSecurity, invoker=_TwistedInvoker()
        )
    finally:
        tj.unjellyableRegistry.pop(b"twin.module.Pt", None)
        tj.globalSecurity.allowedTypes.pop(b"twin.module.Pt", None)
    assert type(back) is TheirCopy
    assert back.__dict__ == {"x": 1, "y": "two", "items": [1, (2,)]}
