"""The compiled decode of plain ``message``/``answer`` commands straight from the bytes.

``Decoder.next_expression(plain=True, ...)`` hands a whole command of plain data, decoded by
``_speedups.decode_plain`` with no s-expression lists in between, to the protocol as a tuple of
its fields already unjellied; anything else it declines, consuming nothing, and the general path
(banana's parse, then the protocol's unjelly of each field) runs.  These bytes come from peers:
on random plain and non-plain values, mutated bytes, random splits and random limits, the
compiled path must give the general path's values, or decline, and leave every error to it.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_speedups_differential import non_plain_values, plain_values
from test_speedups_one_pass_decode import _typed as _typed_value

from trio_pb import _accel, banana
from trio_pb.banana import DEPTH_LIMIT, DIALECTS, Decoder, Encoder
from trio_pb.errors import PBError
from trio_pb.jelly import Unjellier, copy_registry, global_security, jelly

_PB = DIALECTS[b"pb"]


@pytest.fixture(autouse=True)
def _compiled() -> None:
    # These tests are about the C code: run them wherever it is built.
    if _accel.decode_plain is None:
        try:
            from trio_pb import _speedups
        except ImportError:
            if os.environ.get("TRIO_PB_REQUIRE_EXTENSIONS", "") not in ("", "0"):
                raise
            pytest.skip("the compiled codec is not built here")
        banana._compiled_plain = _speedups.decode_plain
        banana._compiled_parse = _speedups.decode_parse


def _yes() -> bool:
    return True


def _typed(value: Any) -> Any:
    try:
        return _spelled(value)
    except RecursionError:
        # A cyclic value: never built by the compiled path (jelly sends it with references).
        return ("cyclic",)


def _spelled(value: Any) -> Any:
    """*value* with every type spelled out, as text (some values the general path builds, such
    as Unpersistable, have no equality), sets in an order that does not depend on hashing."""
    kind = type(value)
    if kind in (list, tuple):
        return f"{kind.__name__}({', '.join(_spelled(item) for item in value)})"
    if kind is dict:
        return f"dict({', '.join(f'{_spelled(k)}: {_spelled(v)}' for k, v in value.items())})"
    if kind in (set, frozenset):
        return f"{kind.__name__}({', '.join(sorted(_spelled(item) for item in value))})"
    return repr(_typed_value(value))


def _unjelly(sexp: Any, budget: float | None) -> Any:
    return Unjellier(global_security, copy_registry, hash_budget=budget).unjelly_top(sexp)


def _general(expression: Any, budget: float | None) -> Any:
    """What the protocol would make of a parsed command: its fields, each unjellied on its own."""
    if type(expression) is list and len(expression) == 7 and expression[0] == b"message":
        head = expression[:5]
        try:
            return (
                "value",
                _typed((*head, _unjelly(expression[5], budget), _unjelly(expression[6], budget))),
            )
        except PBError as exc:
            return ("error", type(exc))
    if type(expression) is list and len(expression) == 3 and expression[0] == b"answer":
        try:
            return ("value", _typed((*expression[:2], _unjelly(expression[2], budget))))
        except PBError as exc:
            return ("error", type(exc))
    return ("other", _typed(expression))


def _run(pieces: list[bytes], limits: dict[str, int], budget: float | None, plain: bool) -> list[Any]:
    """Feed the pieces to one decoder; every expression (unjellied as the protocol would), then the end."""
    decoder = Decoder(vocabulary=_PB, **limits)
    out: list[Any] = []
    try:
        for piece in pieces:
            decoder.receive_data(piece)
            while True:
                expression = decoder.next_expression(_yes if plain else None, budget)
                if expression is banana.NEED_DATA:
                    break
                if type(expression) is tuple:
                    assert plain
                    out.append(("value", _typed(expression)))
                else:
                    out.append(_general(expression, budget))
            # A command being scanned stays buffered from its start (the general path consumes
            # what it parsed): only in_expression agrees.
            out.append(("state", decoder.in_expression))
    except PBError as exc:
        out.append(("error", type(exc)))
    return out


def _check(pieces: list[bytes], limits: dict[str, int], budget: float | None) -> None:
    assert _run(pieces, limits, budget, plain=True) == _run(pieces, limits, budget, plain=False)


def _command(kind: int, request_id: int, value: Any, kwargs: Any) -> list[Any]:
    if kind:
        return [b"answer", request_id, jelly(value)]
    return [b"message", request_id, b"root", b"echo", 1, jelly((value,)), jelly(kwargs)]


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


_limits = st.fixed_dictionaries(
    {},
    optional={
        "size_limit": st.integers(1, 40),
        "prefix_limit": st.integers(1, 4),
        "depth_limit": st.integers(1, 8),
        "message_size_limit": st.integers(1, 400),
        "message_items_limit": st.integers(1, 60),
    },
)
_budgets = st.sampled_from([None, 1.0, -1.0])


def test_a_plain_message_and_answer_come_built() -> None:
    encoder = Encoder(b"pb")
    args = ([{"a": [1, 2.5, "x", -3, None, True]}, {"b": frozenset({(1, 2)})}],)
    data = encoder.encode(_command(0, 1, args[0], {"k": {1, 2}})) + encoder.encode(_command(1, 7, "ok", None))
    decoder = Decoder(vocabulary=_PB)
    decoder.receive_data(data)
    assert decoder.next_expression(_yes, 1.0) == (b"message", 1, b"root", b"echo", 1, args, {"k": {1, 2}})
    assert decoder.next_expression(_yes, 1.0) == (b"answer", 7, "ok")
    assert decoder.buffered == 0


def test_declining_consumes_nothing() -> None:
    shared = [1]
    data = Encoder(b"pb").encode(_command(1, 3, [shared, shared], None))
    decoder = Decoder(vocabulary=_PB)
    decoder.receive_data(data)
    # A shared list (reference/dereference tags) is not plain: the whole command is parsed.
    assert decoder.next_expression(_yes, None) == [b"answer", 3, jelly([shared, shared])]
    assert decoder.buffered == 0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=st.lists(st.tuples(st.integers(0, 1), plain_values, plain_values), min_size=1, max_size=3),
    cuts=st.lists(st.integers(0, 10_000), max_size=4),
    limits=_limits,
    budget=_budgets,
)
def test_plain_commands_split_and_limited(
    values: list[tuple[int, Any, Any]], cuts: list[int], limits: dict[str, int], budget: float | None
) -> None:
    encoder = Encoder(b"pb")
    try:
        data = b"".join(
            encoder.encode(_command(kind, i + 1, value, {"k": kw}))
            for i, (kind, value, kw) in enumerate(values)
        )
    except PBError:
        return
    _check(_split(data, cuts), limits, budget)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=non_plain_values, kind=st.integers(0, 1), cuts=st.lists(st.integers(0, 10_000), max_size=2))
def test_non_plain_commands(value: Any, kind: int, cuts: list[int]) -> None:
    try:
        data = Encoder(b"pb").encode(_command(kind, 5, value, {}))
    except PBError:
        return
    _check(_split(data, cuts), {}, None)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.integers(0, 1),
    value=plain_values,
    mutations=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
    cuts=st.lists(st.integers(0, 10_000), max_size=2),
    limits=_limits,
    budget=_budgets,
)
def test_mutated_commands(
    kind: int,
    value: Any,
    mutations: list[tuple[int, int]],
    cuts: list[int],
    limits: dict[str, int],
    budget: float | None,
) -> None:
    try:
        encoded = bytearray(Encoder(b"pb").encode(_command(kind, 9, value, {"x": value})))
    except PBError:
        return
    for index, byte in mutations:
        encoded[index % len(encoded)] = byte
    _check(_split(bytes(encoded), cuts), limits, budget)


@pytest.mark.parametrize("depth", [DEPTH_LIMIT - 2, DEPTH_LIMIT + 5, 3000])
def test_deep_nesting(depth: int) -> None:
    # Past jelly's depth limit the compiled path declines and the general path refuses it.
    sexp: Any = [b"list"]
    for _ in range(depth):
        sexp = [b"list", sexp]
    data = Encoder(b"pb", depth_limit=10_000, message_items_limit=10**6).encode([b"answer", 1, sexp])
    _check([data], {"depth_limit": 10_000}, None)


def _big_answer() -> bytes:
    value = [{"name": f"item {i}", "tags": [i, -i, 1.5], "ok": i % 2 == 0} for i in range(200)]
    return Encoder(b"pb").encode(_command(1, 4, value, None))


@given(
    value=plain_values,
    kind=st.integers(0, 1),
    cuts=st.lists(st.integers(0, 10**6), max_size=3),
    mutation=st.one_of(st.none(), st.tuples(st.integers(0, 10**6), st.integers(0, 255))),
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_big_commands_are_scanned_before_they_are_built(
    value: Any, kind: int, cuts: list[int], mutation: tuple[int, int] | None
) -> None:
    # Over 16 KiB buffered, a command is scanned first, whether it is all there or not.
    encoder = Encoder(b"pb")
    count = 64
    while True:
        try:
            # Lists of their own: one list met twice would go as a small reference.
            data = bytearray(encoder.encode(_command(kind, 5, [[i, value] for i in range(count)], {})))
        except PBError:
            return  # not sendable at all (an int past banana's prefix limit): nothing to decode
        if len(data) > 20_000:
            break
        count *= 2
    assert len(data) > 16 * 1024
    if mutation is not None:
        data[mutation[0] % len(data)] = mutation[1]
    _check(_split(bytes(data), cuts), {}, 1.0)


def test_a_command_in_pieces_comes_built() -> None:
    # Received in a few large reads, the command is scanned as it comes, then built at once.
    data = _big_answer()
    decoder = Decoder(vocabulary=_PB)
    third = len(data) // 3
    for piece in (data[:third], data[third : 2 * third]):
        decoder.receive_data(piece)
        assert decoder.next_expression(_yes, 1.0) is banana.NEED_DATA
        assert decoder.in_expression
    decoder.receive_data(data[2 * third :])
    built = decoder.next_expression(_yes, 1.0)
    assert type(built) is tuple and built[:2] == (b"answer", 4)
    assert decoder.buffered == 0 and not decoder.in_expression
    _check([data[:third], data[third : 2 * third], data[2 * third :]], {}, 1.0)


def test_a_trickled_command_goes_to_the_general_path() -> None:
    # Small reads would make every byte copied again and again: the general parse takes over.
    data = _big_answer()
    decoder = Decoder(vocabulary=_PB)
    results = []
    for i in range(0, len(data), 7):
        decoder.receive_data(data[i : i + 7])
        results.append(decoder.next_expression(_yes, 1.0))
    assert type(results[-1]) is list and results[-1][:2] == [b"answer", 4]
    assert all(result is banana.NEED_DATA for result in results[:-1])
    _check([data[i : i + 7] for i in range(0, len(data), 7)], {}, 1.0)
