"""The compiled encoder against the pure one: the same bytes for plain data, or "not plain".

The pure path, ``Encoder.encode(jelly(value))``, is the reference.  For every value the C
encoder either returns exactly its bytes or ``None`` (use the general path), and ``None`` only
where the value is not plain (shared or cyclic containers, instances, subclasses ...) or where
the pure path refuses it (over a limit, a lone surrogate): the error is then always the pure
path's own.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import math
import os
from collections import OrderedDict
from types import ModuleType
from typing import Any

import pytest
from core_pair import connected_pair
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_pb import banana, protocol
from trio_pb.banana import PB_VOCABULARY, Encoder
from trio_pb.errors import BananaEncodeError, JellyError, SerializationError
from trio_pb.flavors import Root
from trio_pb.jelly import jelly


def _speedups() -> ModuleType:
    # The C module itself, whatever TRIO_PB_NO_EXTENSIONS says: these tests are about its code.
    try:
        from trio_pb import _speedups
    except ImportError:
        if os.environ.get("TRIO_PB_REQUIRE_EXTENSIONS", "") not in ("", "0"):
            raise
        pytest.skip("the compiled codec is not built here")
    return _speedups


DIALECTS = (b"pb", b"trio-pb-1", b"none")

# Words of the vocabulary, as bytes and as str: both go through the VOCAB table.
_words = st.sampled_from(PB_VOCABULARY[1:])
_atoms = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**460), max_value=2**460),
    st.sampled_from(
        [0, 1023, 1024, 2**21, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**63, -(2**63), 2**448]
    ),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, math.inf, -math.inf, math.nan]),
    st.text(),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=5),
    st.binary(),
    _words,
    _words.map(bytes.decode),
)
_hashable = st.recursive(
    _atoms,
    lambda inner: st.one_of(st.tuples(inner, inner), st.frozensets(inner, max_size=3)),
    max_leaves=6,
)


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(inner, max_size=6),
        st.lists(inner, max_size=6).map(tuple),
        st.dictionaries(_hashable, inner, max_size=5),
        st.sets(_hashable, max_size=4),
        st.frozensets(_hashable, max_size=4),
    )


plain_values = st.recursive(_atoms, _containers, max_leaves=40)


class Methods(Root):
    def remote_method(self, *args: Any, **kwargs: Any) -> None:
        pass


class Thing:
    def __init__(self, value: Any) -> None:
        self.value = value


class Colour(enum.IntEnum):
    RED = 1


class Text(str):
    pass


def _not_plain(value: Any) -> st.SearchStrategy[Any]:
    shared = [value]
    cyclic: list[Any] = [value]
    cyclic.append(cyclic)
    return st.sampled_from(
        [
            [shared, shared],
            {"a": shared, "b": [shared]},
            cyclic,
            Thing(value),
            [1, Thing(value)],
            (Colour.RED, value),
            [Text("x"), value],
            OrderedDict(a=value),
            [datetime.date(2020, 1, 2), value],
            {decimal.Decimal("1.5"): value},
            [(), ()],
            ["\ud800", value],
        ]
    )


non_plain_values = plain_values.flatmap(_not_plain)


def _pure(encoder: Encoder, value: Any) -> bytes | type[Exception]:
    try:
        return encoder.encode(jelly(value))
    except (JellyError, BananaEncodeError) as exc:
        return type(exc)


def _has_shared_container(value: Any) -> bool:
    seen: set[int] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) in (list, tuple, dict, set, frozenset):
            if id(item) in seen:
                return True
            seen.add(id(item))
            stack.extend(item.items() if type(item) is dict else item)
    return False


def _check(encoder: Encoder, value: Any) -> bytes | None:
    compiled = _speedups().encode_plain(encoder, value)
    expected = _pure(encoder, value)
    if compiled is not None:
        assert compiled == expected
    return compiled


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=plain_values, dialect=st.sampled_from(DIALECTS))
def test_plain_values_give_the_pure_bytes(value: Any, dialect: bytes) -> None:
    encoder = Encoder(dialect)
    compiled = _check(encoder, value)
    if compiled is None:
        # Only what the pure path refuses, or what it sends with references, is left to it.
        assert not isinstance(_pure(encoder, value), bytes) or _has_shared_container(value)


@settings(max_examples=200, deadline=None)
@given(value=non_plain_values, dialect=st.sampled_from(DIALECTS))
def test_non_plain_values_are_left_to_the_general_path(value: Any, dialect: bytes) -> None:
    assert _check(Encoder(dialect), value) is None


@settings(max_examples=300, deadline=None)
@given(
    value=plain_values,
    size_limit=st.integers(0, 40),
    depth_limit=st.integers(1, 6),
    message_size_limit=st.integers(0, 400),
    message_items_limit=st.integers(0, 60),
)
def test_values_over_a_limit_are_refused_by_the_pure_path(
    value: Any, size_limit: int, depth_limit: int, message_size_limit: int, message_items_limit: int
) -> None:
    encoder = Encoder(
        b"pb",
        size_limit=size_limit,
        depth_limit=depth_limit,
        message_size_limit=message_size_limit,
        message_items_limit=message_items_limit,
    )
    # Bytes from C only where the pure path gives the same bytes; never where it raises.
    _check(encoder, value)


@settings(max_examples=200, deadline=None)
@given(
    head=st.lists(st.one_of(st.integers(), st.binary(max_size=8), _words, st.floats()), max_size=5),
    values=st.lists(plain_values, max_size=3),
    dialect=st.sampled_from(DIALECTS),
)
def test_messages_give_the_pure_bytes(head: list[Any], values: list[Any], dialect: bytes) -> None:
    encoder = Encoder(dialect)
    compiled = _speedups().encode_message(encoder, tuple(head), tuple(values))
    try:
        # Each value is its own jelly operation, as in a PB message.
        expected: bytes | type[Exception] = encoder.encode([*head, *(jelly(value) for value in values)])
    except (JellyError, BananaEncodeError) as exc:
        expected = type(exc)
    if compiled is not None:
        assert compiled == expected
    else:
        assert not isinstance(expected, bytes) or any(_has_shared_container(value) for value in values)


def test_one_object_in_two_values_of_a_message_is_not_shared() -> None:
    # args and kwargs are jellied separately: a list in both is sent twice, without references.
    shared = [1, 2]
    encoder = Encoder(b"pb")
    compiled = _speedups().encode_message(encoder, (b"message",), ((shared,), {"x": shared}))
    assert compiled == encoder.encode([b"message", jelly((shared,)), jelly({"x": shared})])


def test_deep_values_are_left_to_the_general_path() -> None:
    value: Any = []
    for _ in range(150):
        value = [value]
    assert _speedups().encode_plain(Encoder(b"pb"), value) is None


def _sent(monkeypatch: pytest.MonkeyPatch, compiled: bool, send: Any) -> bytes:
    if not compiled:
        monkeypatch.setattr(protocol, "_encode_message", None)
    else:
        monkeypatch.setattr(protocol, "_encode_message", _speedups().encode_message)
    client, server = connected_pair(server_root=Methods())
    send(client, server)
    return client.data_to_send() + server.data_to_send()


@pytest.mark.parametrize(
    "args, kwargs, result",
    [
        ((1, 2), {}, 3),
        (("text", [1.5, None], {"k": (True, b"list")}), {"x": {1, 2}}, {"answer": ["é", -(2**70)]}),
        (([[], []],), {"n": frozenset({1})}, [Thing(1)]),
    ],
)
def test_the_protocol_sends_the_same_bytes_either_way(
    monkeypatch: pytest.MonkeyPatch, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any
) -> None:
    def send(client: protocol.PBProtocol, server: protocol.PBProtocol) -> None:
        client.send_call(b"root", "method", args, kwargs)
        data = client.data_to_send()
        sent.append(data)
        server.receive_data(data)
        call = server.next_event()
        assert isinstance(call, protocol.IncomingCall)
        assert (call.args, call.kwargs) == (args, kwargs)
        client.send_call(b"root", "method", args, kwargs, answer_required=False)
        server.send_answer(call.request_id, result)

    sent: list[bytes] = []

    compiled = _sent(monkeypatch, True, send)
    assert compiled == _sent(monkeypatch, False, send)
    assert sent[0] == sent[1]


def test_the_protocol_raises_the_pure_error_over_a_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    errors = []
    for compiled in (True, False):
        if compiled:
            monkeypatch.setattr(protocol, "_encode_message", _speedups().encode_message)
        else:
            monkeypatch.setattr(protocol, "_encode_message", None)
        # trio-pb-1: no big values in chunks, so banana's limit holds.
        client, _server = connected_pair(extensions=b"trio-pb-1")
        with pytest.raises(SerializationError) as info:
            client.send_call(b"root", "method", ("x" * (banana.SIZE_LIMIT + 1),), {})
        errors.append((type(info.value), str(info.value)))
    assert errors[0] == errors[1]
    assert errors[0][0] is BananaEncodeError
