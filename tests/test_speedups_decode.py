"""The compiled banana decoder against the pure one, on random, valid and mutated bytes.

Untrusted bytes reach this C code, so both decoders are fed the same bytes, split at the same
random points, with random limits; after every piece they must agree on what comes out (the same
expressions, or :data:`NEED_DATA`), on their state, and on the error: its class and message.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_pb import banana
from trio_pb.banana import NEED_DATA, PB_VOCABULARY, Decoder
from trio_pb.errors import BananaDecodeError
from trio_pb.jelly import jelly


def _speedups() -> ModuleType:
    try:
        from trio_pb import _speedups
    except ImportError:
        if os.environ.get("TRIO_PB_REQUIRE_EXTENSIONS", "") not in ("", "0"):
            raise
        pytest.skip("the compiled codec is not built here")
    return _speedups


def _with(parse: Callable[[Decoder], Any] | None, action: Callable[[], Any]) -> Any:
    saved = banana._compiled_parse
    banana._compiled_parse = parse
    try:
        return action()
    finally:
        banana._compiled_parse = saved


def _run(decoder: Decoder, chunks: list[bytes], parse: Callable[[Decoder], Any] | None) -> list[Any]:
    """What the decoder gives for each chunk, as comparable records, up to the first error."""
    log: list[Any] = []
    for chunk in chunks:
        decoder.receive_data(chunk)
        while True:
            try:
                expression = _with(parse, decoder.next_expression)
            except BananaDecodeError as exc:
                log.append(("error", type(exc), str(exc)))
                return log
            log.append(("state", decoder.buffered, decoder.in_expression, decoder.last_message_items))
            if expression is NEED_DATA:
                log.append("need data")
                break
            log.append(("expression", _comparable(expression)))
    return log


def _comparable(value: Any) -> Any:
    # nan != nan: compare floats by their bytes.
    if type(value) is float:
        return ("float", value.hex())
    if type(value) is list:
        return [_comparable(item) for item in value]
    return (type(value).__name__, value)


_limits = st.fixed_dictionaries(
    {},
    optional={
        "size_limit": st.integers(0, 80),
        "prefix_limit": st.integers(1, 12),
        "depth_limit": st.integers(1, 6),
        "message_size_limit": st.integers(0, 300),
        "message_items_limit": st.integers(0, 40),
    },
)

_plain = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        # What banana can send: at most 64 prefix digits.
        st.integers(min_value=-(2**440), max_value=2**440),
        st.floats(),
        st.text(max_size=8),
        st.binary(max_size=8),
        st.sampled_from(PB_VOCABULARY[1:]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=3), inner, max_size=3),
    ),
    max_leaves=20,
)


@st.composite
def _streams(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    """Valid banana (one to three messages), random bytes, or valid banana mutated."""
    kind = draw(st.sampled_from(["valid", "random", "mutated", "mutated"]))
    if kind == "random":
        data = draw(st.binary(max_size=60))
    else:
        dialect = draw(st.sampled_from([b"pb", b"none"]))
        values = draw(st.lists(_plain, min_size=1, max_size=3))
        data = b"".join(banana.encode(jelly(value), dialect=dialect) for value in values)
        if kind == "mutated":
            edits = draw(
                st.lists(st.tuples(st.integers(0, max(0, len(data) - 1)), st.integers(0, 3)), max_size=4)
            )
            buffer = bytearray(data)
            for at, edit in edits:
                at = min(at, len(buffer))
                byte = draw(
                    st.sampled_from(
                        [0x00, 0x01, 0x7F, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0xFF]
                    )
                )
                if edit == 0 and at < len(buffer):
                    buffer[at] = byte
                elif edit == 1:
                    buffer.insert(at, byte)
                elif edit == 2 and at < len(buffer):
                    del buffer[at]
                else:
                    buffer[at:at] = b"\x7f" * draw(st.integers(1, 12))
            data = bytes(buffer)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    return data, cuts


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=_streams(), limits=_limits, vocabulary=st.sampled_from([PB_VOCABULARY, None]))
def test_compiled_and_pure_decoders_agree(
    stream: tuple[bytes, list[int]], limits: dict[str, int], vocabulary: tuple[bytes, ...] | None
) -> None:
    data, cuts = stream
    chunks = _split(data, cuts)
    compiled = _run(Decoder(vocabulary=vocabulary, **limits), chunks, _speedups().decode_parse)
    pure = _run(Decoder(vocabulary=vocabulary, **limits), chunks, None)
    assert compiled == pure


@pytest.mark.parametrize(
    "data",
    [
        b"\x05" + b"\x00" * 9 + b"\x82hello",  # a ten-byte prefix with high zero digits: 5
        b"\x01" * 10 + b"\x81",  # an int wider than 64 bits
        b"\x7f" * 64 + b"\x83",  # the widest negative prefix allowed
        b"\x7f" * 65 + b"\x81",  # one byte of prefix too many
        b"\x01" * 10 + b"\x87",  # a VOCAB index wider than 64 bits
        b"\x01" * 10 + b"\x82",  # a string longer than 2**63
        b"\x02\x80\x01\x80\x01\x80",  # lists left open
        b"\x01\x80\x84\x00\x00\x00",  # a float cut short
        b"\x00\x80\x88",  # an invalid type byte
    ],
)
def test_edge_cases_agree(data: bytes) -> None:
    for chunks in ([data], [data[:i] for i in range(1, 2)] + [data[1:]], [bytes([b]) for b in data]):
        assert _run(Decoder(vocabulary=PB_VOCABULARY), chunks, _speedups().decode_parse) == _run(
            Decoder(vocabulary=PB_VOCABULARY), chunks, None
        )


def test_deep_nesting_is_refused_without_recursion() -> None:
    data = b"\x01\x80" * 100_000
    for parse in (_speedups().decode_parse, None):
        decoder = Decoder(vocabulary=PB_VOCABULARY, depth_limit=100_000)
        decoder.receive_data(data)
        assert _with(parse, decoder.next_expression) is NEED_DATA
        decoder.receive_data(b"\x00\x81")
        expression = _with(parse, decoder.next_expression)
        for _ in range(99_999):
            (expression,) = expression
        assert expression == [0]
