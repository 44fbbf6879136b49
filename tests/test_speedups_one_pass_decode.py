"""The compiled one-pass unjelly of plain data against the pure Unjellier.

``_speedups.unjelly_plain`` builds plain data (None, bools, ints, floats, str, bytes, and lists,
tuples, dicts, sets, frozensets of them) from a decoded s-expression in one walk in C, and
declines (``NotImplemented``) anything else.  Untrusted bytes reach it, so on random plain and
non-plain values, mutated bytes and random expressions it must give what the pure path gives,
value and types, or the pure path's error class, or decline.
"""

from __future__ import annotations

import math
import os
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from test_speedups_differential import non_plain_values, plain_values

from trio_pb import banana, protocol
from trio_pb.banana import DEPTH_LIMIT
from trio_pb.errors import BananaDecodeError, DecodeBudgetExceeded, PBError
from trio_pb.jelly import (
    CopyRegistry,
    DummySecurityOptions,
    SecurityOptions,
    Unjellier,
    copy_registry,
    global_security,
    jelly,
)


def _speedups() -> ModuleType:
    # The C module itself, whatever TRIO_PB_NO_EXTENSIONS says: these tests are about its code.
    try:
        from trio_pb import _speedups
    except ImportError:
        if os.environ.get("TRIO_PB_REQUIRE_EXTENSIONS", "") not in ("", "0"):
            raise
        pytest.skip("the compiled codec is not built here")
    return _speedups


def _typed(value: Any) -> Any:
    """*value* with every type spelled out, so that 1, 1.0 and True, or a list and a tuple, differ."""
    kind = type(value)
    if kind in (list, tuple):
        return (kind.__name__, tuple(_typed(item) for item in value))
    if kind is dict:
        return ("dict", tuple((_typed(k), _typed(v)) for k, v in value.items()))
    if kind in (set, frozenset):
        return (kind.__name__, frozenset(_typed(item) for item in value))
    if kind is float:
        return ("float", value.hex() if not math.isnan(value) else "nan")
    return (kind.__name__, value)


def _pure(sexp: Any, budget: float | None, depth_limit: int) -> Any:
    try:
        unjellier = Unjellier(global_security, copy_registry, depth_limit=depth_limit, hash_budget=budget)
        return ("value", _typed(unjellier.unjelly_top(sexp)))
    except PBError as exc:
        return ("error", type(exc))


def _compare(sexp: Any, budget: float | None = None, depth_limit: int = DEPTH_LIMIT) -> bool:
    """Check the compiled result against the pure one; whether the compiled code declined."""
    try:
        result = _speedups().unjelly_plain(sexp, depth_limit, budget)
    except PBError as exc:
        assert _pure(sexp, budget, depth_limit) == ("error", type(exc))
        return False
    if result is NotImplemented:
        return True
    assert _pure(sexp, budget, depth_limit) == ("value", _typed(result))
    return False


def _decoded(value: Any) -> Any:
    """What the pure path decodes from the pure path's bytes for *value*."""
    saved = banana._compiled_parse
    banana._compiled_parse = None
    try:
        return banana.decode(banana.encode(jelly(value)))
    except PBError:
        assume(False)  # not sendable (an int over banana's limit): nothing to decode
    finally:
        banana._compiled_parse = saved


def _shares(sexp: Any) -> bool:
    """Whether the jelly of a value has a reference or dereference tag (a container it holds twice)."""
    if type(sexp) is not list:
        return False
    if sexp[0] in (b"reference", b"dereference"):
        return True
    if sexp[0] == b"dictionary":
        return any(_shares(key) or _shares(value) for key, value in sexp[1:])
    return any(_shares(item) for item in sexp[1:])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=plain_values, budget=st.sampled_from([None, 1.0]))
def test_plain_values_give_the_pure_value(value: Any, budget: float | None) -> None:
    sexp = _decoded(value)
    declined = _compare(sexp, budget)
    # Only a shared container (sent as reference/dereference) is left to the general path.
    assert declined == _shares(sexp)


@settings(max_examples=200, deadline=None)
@given(value=non_plain_values)
def test_non_plain_values_decline_or_agree(value: Any) -> None:
    try:
        sexp = jelly(value)
    except PBError:
        return
    _compare(sexp)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=plain_values, data=st.data())
def test_mutated_bytes_decline_or_agree(value: Any, data: st.DataObject) -> None:
    try:
        encoded = bytearray(banana.encode(jelly(value)))
    except PBError:
        return
    for _ in range(data.draw(st.integers(1, 4))):
        if not encoded:
            break
        index = data.draw(st.integers(0, len(encoded) - 1))
        encoded[index] = data.draw(st.integers(0, 255))
    try:
        sexp = banana.decode(bytes(encoded))
    except BananaDecodeError:
        return
    _compare(sexp, data.draw(st.sampled_from([None, 1.0, -1.0])), data.draw(st.integers(1, 8)))


_PLAIN_TAGS = [b"None", b"unicode", b"boolean", b"list", b"tuple", b"dictionary", b"set", b"frozenset"]
_tags = st.sampled_from([*_PLAIN_TAGS, b"reference", b"instance", b"datetime", b"nonsense", b"remote"])
_raw_atoms = st.one_of(
    st.integers(), st.floats(), st.binary(max_size=6), st.sampled_from([b"true", b"false", b"\xff"])
)
raw_sexps = st.recursive(
    _raw_atoms,
    lambda inner: st.one_of(
        st.builds(lambda tag, rest: [tag, *rest], _tags, st.lists(inner, max_size=10)),
        st.lists(inner, max_size=3),
    ),
    max_leaves=30,
)


@settings(max_examples=500, deadline=None)
@given(sexp=raw_sexps, budget=st.sampled_from([None, 1.0, -1.0]), depth_limit=st.integers(1, 6))
def test_random_expressions_decline_or_agree(sexp: Any, budget: float | None, depth_limit: int) -> None:
    _compare(sexp, budget, depth_limit)


@pytest.mark.parametrize(
    "value", [set(range(8)), frozenset(range(300)), {i: i for i in range(8)}, [{str(i): i for i in range(9)}]]
)
def test_a_spent_budget_raises_the_pure_error(value: Any) -> None:
    with pytest.raises(DecodeBudgetExceeded):
        _speedups().unjelly_plain(jelly(value), DEPTH_LIMIT, -1.0)
    assert _pure(jelly(value), -1.0, DEPTH_LIMIT) == ("error", DecodeBudgetExceeded)


def test_small_sets_and_dicts_are_untimed_as_in_the_pure_path() -> None:
    value = [set(range(7)), {i: i for i in range(7)}, frozenset(range(7))]
    assert _speedups().unjelly_plain(jelly(value), DEPTH_LIMIT, -1.0) == value


def test_nesting_past_the_depth_limit_declines() -> None:
    value: Any = 1
    for _ in range(6):
        value = [value]
    assert _speedups().unjelly_plain(jelly(value), 6, None) == value
    assert _speedups().unjelly_plain(jelly(value), 5, None) is NotImplemented


def test_very_deep_expressions_decline_without_recursing_far() -> None:
    sexp: Any = [b"None"]
    for _ in range(100_000):
        sexp = [b"list", sexp]
    assert _speedups().unjelly_plain(sexp, 10**9, None) is NotImplemented


def test_the_protocol_uses_it_only_for_the_default_meaning_of_the_tags() -> None:
    assert protocol._plain_data(global_security, copy_registry)
    assert protocol._plain_data(DummySecurityOptions(), copy_registry)
    taken = CopyRegistry(parent=copy_registry)
    taken.register_factory(b"unicode", str.upper)
    assert not protocol._plain_data(global_security, CopyRegistry(parent=taken))
    strict = SecurityOptions()
    strict.allowed_types.discard(b"frozenset")
    assert not protocol._plain_data(strict, copy_registry)
