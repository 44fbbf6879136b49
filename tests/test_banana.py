"""Tests for trio_pb.banana, the sans-IO banana codec (pb-protocol.md section 1).

Golden bytes come from pb-protocol.md (1.1, 1.6, 1.7, appendices A and B) and
from real Twisted; where the note and Twisted disagree (two typos in 1.1),
Twisted wins.  The differential tests that run Twisted itself are in
test_banana_twisted.py; this file does not import Twisted.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import struct
import sys
import tracemalloc
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pbdata import APPENDIX_B_SEXP

from trio_pb import banana
from trio_pb.banana import (
    DEPTH_LIMIT,
    NEED_DATA,
    PB_VOCABULARY,
    PREFIX_LIMIT,
    SIZE_LIMIT,
    BananaConnection,
    Decoder,
    DialectSelected,
    Encoder,
    b128_to_int,
    decode,
    encode,
    int_to_b128,
)
from trio_pb.errors import BananaError, ProtocolError, SerializationError

BIG = 2**448 - 1  # the largest magnitude 64 prefix bytes can carry


# --------------------------------------------------------------------------
# Helpers and an independent reference encoder (written from the spec only)


def h(text: str) -> bytes:
    """Bytes from a hex dump such as ``"02 80 01 81"``."""
    return bytes.fromhex(text)


def ref_prefix(number: int) -> bytes:
    digits = []
    while True:
        number, digit = divmod(number, 128)
        digits.append(digit)
        if not number:
            return bytes(digits)


def ref_encode(obj: Any, vocabulary: tuple[bytes, ...] | None = None) -> bytes:
    """pb-protocol.md 1.1/1.5 taken literally, as an oracle for the real encoder."""
    if isinstance(obj, (list, tuple)):
        return ref_prefix(len(obj)) + b"\x80" + b"".join(ref_encode(x, vocabulary) for x in obj)
    if isinstance(obj, int):
        if 0 <= obj <= 2**31 - 1:
            return ref_prefix(obj) + b"\x81"
        if obj > 2**31 - 1:
            return ref_prefix(obj) + b"\x85"
        if obj >= -(2**31):
            return ref_prefix(-obj) + b"\x83"
        return ref_prefix(-obj) + b"\x86"
    if isinstance(obj, float):
        return b"\x84" + struct.pack("!d", obj)
    assert isinstance(obj, bytes)
    if vocabulary is not None and obj in vocabulary[1:]:
        return ref_prefix(vocabulary.index(obj)) + b"\x87"
    return ref_prefix(len(obj)) + b"\x82" + obj


def canon(obj: Any) -> Any:
    """A comparable form: tuples become lists, floats their bit pattern (NaN-safe)."""
    if isinstance(obj, (list, tuple)):
        return [canon(x) for x in obj]
    if isinstance(obj, float):
        return ("float", struct.pack("!d", obj))
    if isinstance(obj, int):
        return int(obj)
    return obj


def drain(decoder: Decoder, limit: int | None = None) -> list[Any]:
    """Every complete expression the decoder can give now.

    Each expression consumes at least one byte, so more than ``buffered + 1``
    calls without NEED_DATA means the decoder is not making progress.
    """
    out = []
    budget = decoder.buffered + 1 if limit is None else limit
    for _ in range(budget + 1):
        expression = decoder.next_expression()
        if expression is NEED_DATA:
            return out
        out.append(expression)
    raise AssertionError("decoder returned more expressions than it had bytes")


def feed(data: bytes, cuts: list[int] | None = None, **kwargs: Any) -> tuple[list[Any], Decoder]:
    """Feed *data* split at *cuts* (all bytes at once if None) and collect expressions."""
    decoder = Decoder(**kwargs)
    out = []
    bounds = [0, *sorted(set(cuts or [])), len(data)]
    for start, end in itertools.pairwise(bounds):
        decoder.receive_data(data[start:end])
        out.extend(drain(decoder))
    return out, decoder


def feed_bytewise(data: bytes, **kwargs: Any) -> list[Any]:
    return feed(data, list(range(1, len(data))), **kwargs)[0]


def pid(value: Any) -> str | None:
    """Short test ids for huge ints; pytest's default for everything else."""
    if type(value) is int and abs(value) > 2**64:
        return f"{'-' if value < 0 else ''}int{abs(value).bit_length()}bits"
    return None


def nest(depth: int) -> list[Any]:
    """*depth* nested non-empty lists with 1 in the middle."""
    obj: Any = 1
    for _ in range(depth):
        obj = [obj]
    return obj


# --------------------------------------------------------------------------
# Strategies

VOCAB_WORDS = list(PB_VOCABULARY[1:])
# Tags that look like protocol words but are not in the table (1.7).
NON_VOCAB_WORDS = [
    b"unicode",
    b"boolean",
    b"set",
    b"frozenset",
    b"datetime",
    b"date",
    b"time",
    b"timedelta",
    b"decimal",
    b"didNotUnderstand",
    b"root",
    b"method",
    b"none",
    b"NONE",
    b"Remote",
    b"",
]
INT_EDGES = [
    0,
    1,
    127,
    128,
    1023,
    1024,
    2**31 - 1,
    2**31,
    -(2**31),
    -(2**31) - 1,
    -1,
    -127,
    -128,
    -1023,
    -1024,
    2**63,
    -(2**63),
    BIG,
    -BIG,
    BIG // 128,
    -(BIG // 128),
]

ints = st.one_of(
    st.sampled_from(INT_EDGES),
    st.integers(-(2**31) - 3, 2**31 + 3),
    st.integers(-BIG, BIG),
)
byte_strings = st.one_of(
    st.binary(max_size=40), st.sampled_from(VOCAB_WORDS), st.sampled_from(NON_VOCAB_WORDS)
)
atoms = st.one_of(ints, st.floats(), byte_strings, st.booleans())
expressions = st.recursive(
    atoms,
    lambda children: st.one_of(st.lists(children, max_size=6), st.lists(children, max_size=4).map(tuple)),
    max_leaves=40,
)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------
# Prefix arithmetic (test_banana MathTests)


@pytest.mark.parametrize(
    "value",
    [*range(100), *range(1000, 1100), *range(1000000, 1000100), 1024**10],
)
def test_b128_round_trip_twisted_list(value: int) -> None:
    prefix = int_to_b128(value)
    assert b128_to_int(prefix) == value
    assert prefix == ref_prefix(value)
    assert all(byte < 0x80 for byte in prefix)


@given(st.integers(min_value=0, max_value=2**1000))
def test_b128_round_trip_any(value: int) -> None:
    prefix = int_to_b128(value)
    assert prefix == ref_prefix(value)
    assert b128_to_int(prefix) == value


def test_b128_examples() -> None:
    assert int_to_b128(0) == b"\x00"  # the encoder always writes a byte
    assert int_to_b128(300) == h("2c 02")  # low group first
    assert b128_to_int(b"") == 0  # an empty prefix reads as 0
    assert b128_to_int(h("2c 02")) == 300
    assert b128_to_int(h("7f") * 64) == BIG


# --------------------------------------------------------------------------
# Golden bytes

# pb-protocol.md 1.1, with the two typos corrected from real Twisted.
GOLDEN_1_1 = [
    (0, "00 81"),
    (1, "01 81"),
    (127, "7f 81"),
    (128, "00 01 81"),
    (300, "2c 02 81"),
    (-1, "01 83"),
    (2147483647, "7f 7f 7f 7f 07 81"),
    (2147483648, "00 00 00 00 08 85"),
    (-2147483648, "00 00 00 00 08 83"),
    (-2147483649, "01 00 00 00 08 86"),
    (1.0, "84 3f f0 00 00 00 00 00 00"),
    (-0.5, "84 bf e0 00 00 00 00 00 00"),
    (b"", "00 82"),
    (b"abc", "03 82 61 62 63"),
    ([], "00 80"),
    ([1, [b"a"]], "02 80 01 81 01 80 01 82 61"),
]

# Twisted's test_sizedIntegerTypes, spelled out.
GOLDEN_BOUNDARIES = [
    (2147483647 - 2, "7d 7f 7f 7f 07 81"),
    (2147483647 - 1, "7e 7f 7f 7f 07 81"),
    (2147483647, "7f 7f 7f 7f 07 81"),
    (2147483647 + 1, "00 00 00 00 08 85"),
    (2147483647 + 2, "01 00 00 00 08 85"),
    (2147483647 + 3, "02 00 00 00 08 85"),
    (-2147483648 + 2, "7e 7f 7f 7f 07 83"),
    (-2147483648 + 1, "7f 7f 7f 7f 07 83"),
    (-2147483648, "00 00 00 00 08 83"),
    (-2147483648 - 1, "01 00 00 00 08 86"),
    (-2147483648 - 2, "02 00 00 00 08 86"),
    (-2147483648 - 3, "03 00 00 00 08 86"),
    # Around the encoder's cached headers.
    (1023, "7f 07 81"),
    (1024, "00 08 81"),
    (-1023, "7f 07 83"),
    (-1024, "00 08 83"),
    (BIG, "7f " * 64 + "85"),
    (-BIG, "7f " * 64 + "86"),
    (True, "01 81"),
    (False, "00 81"),
]


@pytest.mark.parametrize("dialect", [b"pb", b"none"])
@pytest.mark.parametrize(("value", "wire"), GOLDEN_1_1 + GOLDEN_BOUNDARIES, ids=pid)
def test_golden_encodings(value: Any, wire: str, dialect: bytes) -> None:
    data = h(wire)
    assert encode(value, dialect=dialect) == data
    decoded = decode(data, dialect=dialect)
    assert canon(decoded) == canon(value)
    expected_type = int if type(value) is bool else type(value)
    assert type(decoded) is expected_type


# The whole vocabulary table of pb-protocol.md 1.7.
DOC_VOCABULARY = {
    1: b"None",
    2: b"class",
    3: b"dereference",
    4: b"reference",
    5: b"dictionary",
    6: b"function",
    7: b"instance",
    8: b"list",
    9: b"module",
    10: b"persistent",
    11: b"tuple",
    12: b"unpersistable",
    13: b"copy",
    14: b"cache",
    15: b"cached",
    16: b"remote",
    17: b"local",
    18: b"lcache",
    19: b"version",
    20: b"login",
    21: b"password",
    22: b"challenge",
    23: b"logged_in",
    24: b"not_logged_in",
    25: b"cachemessage",
    26: b"message",
    27: b"answer",
    28: b"error",
    29: b"decref",
    30: b"decache",
    31: b"uncache",
}


def test_vocabulary_table_is_exact() -> None:
    assert len(PB_VOCABULARY) == 32  # index 0 is a placeholder, never sent
    assert {i: w for i, w in enumerate(PB_VOCABULARY) if i} == DOC_VOCABULARY
    # trio_pb's extension dialect uses the pb vocabulary unchanged.
    assert banana.DIALECTS == {
        b"trio-pb-2": PB_VOCABULARY,
        b"trio-pb-1": PB_VOCABULARY,
        b"pb": PB_VOCABULARY,
        b"none": None,
    }


@pytest.mark.parametrize(("index", "word"), sorted(DOC_VOCABULARY.items()))
def test_vocab_word(index: int, word: bytes) -> None:
    token = bytes([index]) + b"\x87"
    assert encode(word, dialect=b"pb") == token
    assert encode([word], dialect=b"pb") == b"\x01\x80" + token  # the list fast path too
    assert decode(token, dialect=b"pb") == word
    # Under "none" the word is a plain STRING, and VOCAB is an error.
    plain = bytes([len(word)]) + b"\x82" + word
    assert encode(word, dialect=b"none") == plain
    assert decode(plain, dialect=b"pb") == word  # a STRING is always accepted
    with pytest.raises(BananaError):
        decode(token, dialect=b"none")


@pytest.mark.parametrize("word", NON_VOCAB_WORDS)
def test_non_vocab_words_travel_as_strings(word: bytes) -> None:
    assert encode(word, dialect=b"pb") == bytes([len(word)]) + b"\x82" + word


def test_vocab_examples_from_the_note() -> None:
    assert encode(b"remote", dialect=b"pb") == h("10 87")
    assert encode(b"None", dialect=b"pb") == h("01 87")
    assert decode(h("10 87"), dialect=b"pb") == b"remote"
    # A vocabulary word reached through a bytes subclass is still compressed.
    assert encode(type("B", (bytes,), {})(b"remote"), dialect=b"pb") == h("10 87")


APPENDIX_B_VOCAB = [b"list", b"None", b"remote", [b"unicode", b"list"]]
APPENDIX_B_VOCAB_WIRE = "04 80 08 87 01 87 10 87 02 80 07 82 75 6e 69 63 6f 64 65 08 87"

APPENDIX_B_ECHO = APPENDIX_B_SEXP
# Produced by Twisted 26.10.0's Banana.sendEncoded under the pb dialect.
APPENDIX_B_ECHO_WIRE = """
15 80 08 87 01 80 01 87 02 80 07 82 62 6f 6f 6c 65 61 6e 04 82 74 72 75 65 02 80 07 82 62 6f 6f 6c
65 61 6e 05 82 66 61 6c 73 65 00 81 01 83 00 00 00 00 08 85 01 00 00 00 08 86 00 00 00 00 00 00 00
00 00 00 00 00 00 00 04 85 84 3f f8 00 00 00 00 00 00 02 80 07 82 75 6e 69 63 6f 64 65 06 82 68 c3
a9 6c 6c 6f 05 82 62 79 74 65 73 03 80 0b 87 01 81 02 81 03 80 05 87 02 80 02 80 07 82 75 6e 69 63
6f 64 65 01 82 61 01 81 02 80 01 82 62 02 81 03 80 03 82 73 65 74 01 81 02 81 02 80 09 82 66 72 6f
7a 65 6e 73 65 74 03 81 02 80 08 82 64 61 74 65 74 69 6d 65 10 82 32 30 32 30 20 31 20 32 20 33 20
34 20 35 20 36 02 80 04 82 64 61 74 65 08 82 32 30 32 30 20 31 20 32 02 80 04 82 74 69 6d 65 07 82
31 20 32 20 33 20 34 02 80 09 82 74 69 6d 65 64 65 6c 74 61 05 82 31 20 32 20 33 03 80 07 82 64 65
63 69 6d 61 6c 7d 83 02 83
"""

# Appendix A messages as Twisted sends them under pb (b"copy" in a method name is VOCAB 13).
APPENDIX_A = [
    (
        [b"message", 1, b"root", b"copy", 1, [b"tuple"], [b"dictionary"]],
        "07 80 1a 87 01 81 04 82 72 6f 6f 74 0d 87 01 81 01 80 0b 87 01 80 05 87",
    ),
    (
        [b"answer", 3, [b"list", [b"cached", 1], [b"cached", 1]]],
        "03 80 1b 87 03 81 03 80 08 87 02 80 0f 87 01 81 02 80 0f 87 01 81",
    ),
    (
        [b"cachemessage", 1, 1, b"setV", 1, [b"tuple", 42], [b"dictionary"]],
        "07 80 19 87 01 81 01 81 04 82 73 65 74 56 01 81 02 80 0b 87 2a 81 01 80 05 87",
    ),
    (
        [b"message", 8, b"root", b"take", 1, [b"tuple", [b"remote", 1]], [b"dictionary"]],
        "07 80 1a 87 08 81 04 82 72 6f 6f 74 04 82 74 61 6b 65 01 81"
        " 02 80 0b 87 02 80 10 87 01 81 01 80 05 87",
    ),
    ([b"answer", 8, [b"local", 1]], "03 80 1b 87 08 81 02 80 11 87 01 81"),
    ([b"decache", 1], "02 80 1e 87 01 81"),
    ([b"uncache", 1], "02 80 1f 87 01 81"),
    ([b"version", 6], "02 80 13 87 06 81"),
]


@pytest.mark.parametrize(
    ("value", "wire"),
    [(APPENDIX_B_VOCAB, APPENDIX_B_VOCAB_WIRE), (APPENDIX_B_ECHO, APPENDIX_B_ECHO_WIRE), *APPENDIX_A],
)
def test_golden_pb_messages(value: Any, wire: str) -> None:
    data = h(wire)
    assert encode(value, dialect=b"pb") == data
    assert decode(data, dialect=b"pb") == value
    assert feed_bytewise(data, vocabulary=PB_VOCABULARY) == [value]
    # Under "none" the same message is longer but means the same.
    plain = encode(value, dialect=b"none")
    assert plain == ref_encode(value)
    assert decode(plain, dialect=b"none") == value


def test_appendix_b_all_types_under_none() -> None:
    # The same echo as Twisted's module-level encode (dialect none) produces it.
    data = encode(APPENDIX_B_ECHO, dialect=b"none")
    assert data.startswith(h("15 80 04 82") + b"list" + h("01 80 04 82") + b"None")
    assert data == ref_encode(APPENDIX_B_ECHO)
    # Four vocabulary words (list, None, tuple, dictionary): each STRING is len(word) bytes longer.
    assert len(data) - len(h(APPENDIX_B_ECHO_WIRE)) == 4 + 4 + 5 + 10


# pb-protocol.md 1.6, captured.
SERVER_OFFER = h("02 80 02 82 70 62 04 82 6e 6f 6e 65")
CLIENT_CHOICE = h("02 82 70 62")


def test_handshake_captures() -> None:
    server = BananaConnection(is_client=False)
    assert server.dialect is None
    assert server.data_to_send() == SERVER_OFFER
    assert server.data_to_send() == b""  # handed out once

    client = BananaConnection(is_client=True)
    assert client.data_to_send() == b""  # the client speaks second
    assert client.next_event() is NEED_DATA
    client.receive_data(SERVER_OFFER)
    assert client.next_event() == DialectSelected(b"pb")
    assert client.dialect == b"pb"
    assert client.data_to_send() == CLIENT_CHOICE
    assert client.next_event() is NEED_DATA  # the offer is not an application expression

    server.receive_data(CLIENT_CHOICE)
    assert server.next_event() == DialectSelected(b"pb")
    assert server.dialect == b"pb"
    assert server.data_to_send() == b""
    assert server.next_event() is NEED_DATA


def test_dialect_selected_event() -> None:
    assert DialectSelected(b"pb") == DialectSelected(b"pb")
    assert DialectSelected(b"pb") != DialectSelected(b"none")
    assert DialectSelected(b"pb") != b"pb"
    assert hash(DialectSelected(b"pb")) == hash(DialectSelected(b"pb"))
    assert repr(DialectSelected(b"pb")) == "DialectSelected(b'pb')"
    assert repr(NEED_DATA) == "NEED_DATA"


@settings(max_examples=200, deadline=None)
@given(expressions, st.sampled_from([b"pb", b"none"]))
def test_encoder_matches_reference(value: Any, dialect: bytes) -> None:
    vocabulary = PB_VOCABULARY if dialect == b"pb" else None
    assert encode(value, dialect=dialect) == ref_encode(value, vocabulary)
    assert Encoder(dialect).encode(value) == ref_encode(value, vocabulary)


# --------------------------------------------------------------------------
# The test_banana checklist (pb-protocol.md section 8)


def round_trip(value: Any, dialect: bytes = b"none") -> Any:
    data = encode(value, dialect=dialect)
    [result], decoder = feed(data, vocabulary=banana.DIALECTS[dialect])
    assert decoder.buffered == 0
    assert not decoder.in_expression
    return result


def test_round_trip_string() -> None:
    assert round_trip(b"hello") == b"hello"


@pytest.mark.parametrize("value", [10151, 1015, 2**31 - 1, 2**31, 2**64, BIG], ids=pid)
def test_round_trip_int(value: int) -> None:
    result = round_trip(value)
    assert result == value
    assert type(result) is int


@pytest.mark.parametrize("value", [-1015, -1, -(2**31), -(2**31) - 1, -BIG], ids=pid)
def test_round_trip_negative(value: int) -> None:
    result = round_trip(value)
    assert result == value
    assert type(result) is int


def test_round_trip_min_int32() -> None:  # test_crashNegativeLong
    assert encode(-2147483648) == h("00 00 00 00 08 83")
    assert round_trip(-2147483648) == -2147483648


@pytest.mark.parametrize("value", [1015.0, 0.0, -0.0, 1e308, 5e-324, math.inf, -math.inf])
def test_round_trip_float(value: float) -> None:
    result = round_trip(value)
    assert result == value
    assert type(result) is float
    assert math.copysign(1, result) == math.copysign(1, value)


def test_round_trip_nan() -> None:
    for nan in (math.nan, struct.unpack("!d", h("7f f8 00 00 00 00 00 01"))[0]):
        data = encode(nan)
        assert data == b"\x84" + struct.pack("!d", nan)  # the payload is kept bit for bit
        assert encode(decode(data)) == data


TWISTED_LIST = [1, 2, [3, 4], [30.5, 40.2], 5, [b"six", b"seven", [b"eight", 9]], [10], []]


@pytest.mark.parametrize("dialect", [b"pb", b"none"])
def test_round_trip_list(dialect: bytes) -> None:
    assert round_trip(TWISTED_LIST, dialect) == TWISTED_LIST
    assert round_trip((1, (2, b"x"), ()), dialect) == [1, [2, b"x"], []]  # tuples arrive as lists


class Unsupported:
    class Nested:
        pass


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("hello", "builtins.str"),
        (type, "builtins.type"),
        (Unsupported(), f"{__name__}.Unsupported"),
        (Unsupported.Nested(), f"{__name__}.Unsupported.Nested"),
        (None, "builtins.NoneType"),
        ({b"a": 1}, "builtins.dict"),
        ({1}, "builtins.set"),
        (bytearray(b"x"), "builtins.bytearray"),
        (memoryview(b"x"), "builtins.memoryview"),
        (1j, "builtins.complex"),
    ],
)
def test_unsupported_types(value: Any, name: str) -> None:
    for obj in (value, [1, b"a", [value]], (value,)):
        for dialect in (b"pb", b"none"):
            with pytest.raises(BananaError, match=f"Banana cannot send {name} objects") as info:
                encode(obj, dialect=dialect)
            assert isinstance(info.value, SerializationError)


def test_failed_encode_sends_nothing() -> None:
    server = BananaConnection(is_client=False)
    server.data_to_send()
    with pytest.raises(BananaError):
        server.send([b"ok", 1, "not bytes"])
    assert server.data_to_send() == b""
    assert server.send([b"ok", 1]) == h("02 80 02 82 6f 6b 01 81")


@pytest.mark.parametrize(
    "value", [2**448, -(2**448), 2**1000, -(2**1000)], ids=["2**448", "-2**448", "2**1000", "-2**1000"]
)
def test_encode_too_large_int(value: int) -> None:
    for obj in (value, [value], [1, [value]]):
        with pytest.raises(BananaError, match="int is too large to send"):
            encode(obj)


@pytest.mark.parametrize(
    ("value", "type_byte"), [(2**448, b"\x85"), (-(2**448), b"\x86")], ids=["2**448", "-2**448"]
)
def test_decode_too_large_int(value: int, type_byte: bytes) -> None:
    # What an encoder with a doubled prefix limit would send.
    data = int_to_b128(abs(value)) + type_byte
    assert len(data) == 66
    with pytest.raises(BananaError):
        decode(data)
    with pytest.raises(BananaError):
        feed_bytewise(data)
    assert decode(data, prefix_limit=PREFIX_LIMIT * 2) == value
    assert feed_bytewise(data, prefix_limit=PREFIX_LIMIT * 2) == [value]


def test_partial_feed_with_big_ints() -> None:  # test_partial
    value = [
        1,
        2,
        [3, 4],
        [30.5, 40.2],
        5,
        [b"six", b"seven", [b"eight", 9]],
        [10],
        sys.maxsize * 3,
        sys.maxsize * 2,
        sys.maxsize * -2,
    ]
    data = encode(value)
    assert feed_bytewise(data) == [value]


@pytest.mark.parametrize("header", [h("02 01 01 01 01 80"), h("02 01 01 01 01 82")])
def test_oversized_headers(header: bytes) -> None:
    with pytest.raises(BananaError, match="Security precaution"):
        feed_bytewise(header)
    with pytest.raises(BananaError, match="Security precaution"):
        decode(header)


def test_crash_string() -> None:
    with pytest.raises(BananaError, match="List too long"):
        feed(h("00 00 00 00 04 80"))


def test_vocab_without_pb_dialect() -> None:
    decoder = Decoder()
    decoder.receive_data(h("10 87"))
    with pytest.raises(BananaError) as info:
        decoder.next_expression()
    assert isinstance(info.value, ProtocolError)


def test_vocab_with_pb_dialect() -> None:
    assert feed(h("10 87"), vocabulary=PB_VOCABULARY)[0] == [b"remote"]


@pytest.mark.parametrize("index", [0, 32, 122, 2**40])
def test_vocab_index_not_in_table(index: int) -> None:
    with pytest.raises(BananaError):
        decode(int_to_b128(index) + b"\x87", dialect=b"pb")


def test_send_vocab_under_pb() -> None:
    assert Encoder(b"pb").encode(b"remote") == h("10 87")
    assert Encoder(b"none").encode(b"remote") == h("06 82") + b"remote"


def test_decode_is_stateless() -> None:
    with pytest.raises(BananaError):
        decode(b"\x7f" * 65 + b"\x85")
    assert decode(b"\x01\x81") == 1


# --------------------------------------------------------------------------
# Other decoder cases of pb-protocol.md 1.3 / 1.4


@pytest.mark.parametrize("type_byte", range(0x88, 0x100))
def test_unknown_type_byte(type_byte: int) -> None:
    with pytest.raises(BananaError):
        decode(bytes([1, type_byte]))
    with pytest.raises(BananaError):
        decode(bytes([type_byte]))


@pytest.mark.parametrize(
    ("data", "value"),
    [
        # Receivers accept any integer type for any magnitude.
        ("05 85", 5),
        ("05 86", -5),
        ("00 00 00 00 08 81", 2**31),
        ("00 00 00 00 00 01 83", -(2**35)),
        ("7f " * 64 + "81", BIG),
        ("7f " * 64 + "83", -BIG),
        ("00 83", 0),
        # An empty prefix reads as 0.
        ("81", 0),
        ("82", b""),
        ("80", []),
        ("85", 0),
        ("86", 0),
        ("01 80 80", [[]]),
        # A FLOAT's prefix is ignored.
        ("05 84 3f f0 00 00 00 00 00 00", 1.0),
        ("7f 7f 84 3f f0 00 00 00 00 00 00", 1.0),
        # Prefix bytes with high zeros.
        ("03 00 00 82 61 62 63", b"abc"),
    ],
    ids=pid,
)
def test_decoder_accepts(data: str, value: Any) -> None:
    assert decode(h(data)) == value
    assert feed_bytewise(h(data)) == [value]


@pytest.mark.parametrize(
    "data",
    [
        "",  # nothing
        "01",  # prefix only
        "03 82 61 62",  # string one byte short
        "84 3f f0 00 00 00 00 00",  # float one byte short
        "02 80 01 81",  # list one item short
        "01 81 01 81",  # bytes after the expression
    ],
)
def test_decode_needs_exactly_one_expression(data: str) -> None:
    with pytest.raises(BananaError):
        decode(h(data))


def test_strings_stay_bytes() -> None:
    result = decode(encode([b"a", [b"None", b"remote"]], dialect=b"pb"), dialect=b"pb")
    assert result == [b"a", [b"None", b"remote"]]
    assert type(result[0]) is bytes
    assert type(result[1][0]) is bytes


def test_encoder_accepts_subclasses() -> None:
    class MyInt(int):
        pass

    class MyFloat(float):
        pass

    class MyList(list):  # type: ignore[type-arg]
        pass

    class MyBytes(bytes):
        pass

    value = MyList([MyInt(5), MyFloat(1.5), MyBytes(b"x"), MyInt(2**40), MyBytes(b"y" * 2000)])
    assert encode(value) == encode([5, 1.5, b"x", 2**40, b"y" * 2000])


def test_encoder_rejects_cycles() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(BananaError):
        encode(cycle)


def test_unknown_dialect() -> None:
    with pytest.raises(ValueError, match="unknown banana dialect"):
        Encoder(b"xml")
    with pytest.raises(ValueError, match="unknown banana dialect"):
        decode(b"\x01\x81", dialect=b"xml")
    with pytest.raises(ValueError, match="unknown banana dialect"):
        BananaConnection(is_client=True, dialects=[b"pb", b"xml"])
    with pytest.raises(ValueError, match="at least one dialect"):
        BananaConnection(is_client=False, dialects=[])


# --------------------------------------------------------------------------
# Limits


def test_prefix_limit_64_accepted_65_refused() -> None:
    assert decode(h("7f") * 64 + b"\x81") == BIG
    assert feed_bytewise(h("7f") * 64 + b"\x81") == [BIG]
    assert feed(h("03") + h("00") * 63 + b"\x82abc")[0] == [b"abc"]  # high zero digits
    for type_byte in (b"\x81", b"\x82", b"\x80", b"\x84", b"\x87"):
        # 65 prefix bytes, the type byte arriving with them ...
        with pytest.raises(BananaError, match="prefix"):
            feed(h("00") * 65 + type_byte)
        # ... or one byte at a time.
        with pytest.raises(BananaError, match="prefix"):
            feed_bytewise(h("00") * 65 + type_byte)


def test_prefix_limit_before_the_type_byte() -> None:
    decoder = Decoder()
    for _ in range(64):
        decoder.receive_data(b"\x01")
        assert decoder.next_expression() is NEED_DATA
    assert decoder.in_expression
    decoder.receive_data(b"\x01")  # the 65th: no need to wait for the type byte
    with pytest.raises(BananaError, match="more than 64 bytes of prefix"):
        decoder.next_expression()

    # All 65 prefix bytes in one chunk, no type byte, after a good expression.
    decoder = Decoder()
    decoder.receive_data(h("01 81") + h("01") * 65)
    assert decoder.next_expression() == 1
    with pytest.raises(BananaError, match="more than 64 bytes of prefix"):
        decoder.next_expression()

    # 64 prefix bytes then the type byte in a later chunk is fine.
    decoder = Decoder()
    decoder.receive_data(h("7f") * 64)
    assert decoder.next_expression() is NEED_DATA
    decoder.receive_data(b"\x85")
    assert decoder.next_expression() == BIG


def test_prefix_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Decoder(prefix_limit=0)
    decoder = Decoder()
    with pytest.raises(ValueError, match="at least 1"):
        decoder.prefix_limit = -1
    assert decoder.prefix_limit == PREFIX_LIMIT


@pytest.mark.parametrize("limit", [1, 2, 4, 100])
def test_prefix_limit_configurable(limit: int) -> None:
    ok = h("01") * limit + b"\x81"
    bad = h("01") * (limit + 1) + b"\x81"
    assert feed(ok, prefix_limit=limit)[0] == [b128_to_int(ok[:-1])]
    assert feed_bytewise(ok, prefix_limit=limit) == [b128_to_int(ok[:-1])]
    with pytest.raises(BananaError, match="prefix"):
        feed(bad, prefix_limit=limit)
    with pytest.raises(BananaError, match="prefix"):
        feed_bytewise(bad, prefix_limit=limit)
    with pytest.raises(BananaError):
        feed(bad[:-1], prefix_limit=limit)


def test_prefix_limit_changed_between_reads() -> None:
    # Like Twisted's Banana.setPrefixLimit: the new limit applies to later parsing.
    decoder = Decoder()
    decoder.prefix_limit = 128
    data = int_to_b128(2**448) + b"\x85"
    decoder.receive_data(data)
    assert decoder.next_expression() == 2**448
    decoder.prefix_limit = 2
    decoder.receive_data(h("01 01 81 01 01 01 81"))
    assert decoder.next_expression() == 129
    with pytest.raises(BananaError):
        decoder.next_expression()


@pytest.mark.parametrize(("type_byte", "what"), [(b"\x82", "String"), (b"\x80", "List")])
def test_size_limit_on_receive(type_byte: bytes, what: str) -> None:
    # Exactly SIZE_LIMIT is accepted: the decoder waits for the payload.
    decoder = Decoder()
    decoder.receive_data(int_to_b128(SIZE_LIMIT) + type_byte)
    assert decoder.next_expression() is NEED_DATA
    assert decoder.in_expression
    # One more is refused as soon as the header is there.
    for feeder in (feed, feed_bytewise):
        with pytest.raises(BananaError, match=f"{what} too long"):
            feeder(int_to_b128(SIZE_LIMIT + 1) + type_byte)


def test_size_limit_string_of_exactly_the_limit() -> None:
    payload = bytes(range(256)) * (SIZE_LIMIT // 256)
    assert len(payload) == SIZE_LIMIT
    data = encode(payload)
    assert data[:4] == int_to_b128(SIZE_LIMIT) + b"\x82"
    assert decode(data) == payload
    with pytest.raises(BananaError, match=r"too long|limit"):
        encode(payload + b"x")
    with pytest.raises(BananaError):
        encode([b"", payload + b"x"])


def test_size_limit_list_of_exactly_the_limit() -> None:
    items = [0] * SIZE_LIMIT
    data = encode(items)
    assert data[:4] == h("00 00 28 80")
    assert len(data) == 4 + 2 * SIZE_LIMIT
    assert decode(data) == items
    assert encode(tuple(items)) == data
    for too_long in ([0] * (SIZE_LIMIT + 1), (0,) * (SIZE_LIMIT + 1), [[0] * (SIZE_LIMIT + 1)]):
        with pytest.raises(BananaError):
            encode(too_long)


@pytest.mark.parametrize("limit", [0, 1, 10, 1023, 1024, 1025, 5000])
def test_size_limit_configurable(limit: int) -> None:
    encoder = Encoder(b"none", size_limit=limit)
    oks: list[Any] = [b"x" * limit, [1] * limit]
    if limit >= 2:
        oks += [[b"x" * limit, [0] * limit], [[b"x" * limit], (b"y" * limit,)]]
    for ok in oks:
        data = encoder.encode(ok)
        assert data == ref_encode(ok)
        assert feed(data, size_limit=limit)[0] == [canon(ok)]
    for bad in (b"x" * (limit + 1), [1] * (limit + 1), [b"x" * (limit + 1)], [0, [0] * (limit + 1)]):
        with pytest.raises(BananaError):
            encoder.encode(bad)
        data = ref_encode(bad)
        with pytest.raises(BananaError, match="too long"):
            feed(data, size_limit=limit)


def test_size_limit_of_a_connection() -> None:
    server = BananaConnection(is_client=False, size_limit=100)
    client = BananaConnection(is_client=True, size_limit=100)
    client.receive_data(server.data_to_send())
    assert client.next_event() == DialectSelected(b"pb")
    server.receive_data(client.data_to_send())
    assert server.next_event() == DialectSelected(b"pb")
    assert client.encoder.size_limit == 100
    server.receive_data(client.send([b"x" * 100]))
    assert server.next_event() == [b"x" * 100]
    with pytest.raises(BananaError):
        client.send([b"x" * 101])
    server.receive_data(encode([b"x" * 101]))
    with pytest.raises(BananaError, match="String too long"):
        server.next_event()


def test_no_limit_on_whole_messages() -> None:
    value = [[b"y" * SIZE_LIMIT], [b"z" * SIZE_LIMIT]]
    assert decode(encode(value)) == value


def test_depth_limit() -> None:
    assert decode(encode(nest(DEPTH_LIMIT))) == nest(DEPTH_LIMIT)
    with pytest.raises(BananaError, match="nested"):
        decode(encode(nest(DEPTH_LIMIT + 1)))
    with pytest.raises(BananaError, match="nested"):
        feed_bytewise(encode(nest(DEPTH_LIMIT + 1)))
    # Configurable, on a decoder and on a connection.
    assert decode(encode(nest(3)), depth_limit=3) == nest(3)
    with pytest.raises(BananaError):
        decode(encode(nest(4)), depth_limit=3)
    server = BananaConnection(is_client=False, depth_limit=3)
    server.receive_data(CLIENT_CHOICE + encode(nest(3)) + encode(nest(4)))
    assert server.next_event() == DialectSelected(b"pb")
    assert server.next_event() == nest(3)
    with pytest.raises(BananaError):
        server.next_event()


def test_huge_declared_string_is_not_allocated_up_front() -> None:
    decoder = Decoder(size_limit=2**40)
    chunks = [int_to_b128(2**40) + b"\x82" + b"abc", *[b"x" * 100] * 100, int_to_b128(SIZE_LIMIT) + b"\x80"]
    tracemalloc.start()
    try:
        for chunk in chunks:
            decoder.receive_data(chunk)
            assert decoder.next_expression() is NEED_DATA
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 200_000
    assert decoder.buffered == sum(map(len, chunks))
    assert decoder.in_expression


def test_huge_declared_list_is_not_allocated_up_front() -> None:
    tracemalloc.start()
    try:
        decoder = Decoder(message_items_limit=4 * SIZE_LIMIT)
        decoder.receive_data(int_to_b128(SIZE_LIMIT) + b"\x80" + int_to_b128(SIZE_LIMIT) + b"\x80")
        assert decoder.next_expression() is NEED_DATA
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 200_000


# --------------------------------------------------------------------------
# Streaming


@FAST
@given(st.lists(expressions, min_size=1, max_size=4), st.data())
def test_random_splits_give_the_same_expressions(values: list[Any], data: st.DataObject) -> None:
    wire = b"".join(encode(v) for v in values)
    expected = [canon(v) for v in values]
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=30))
    got, decoder = feed(wire, cuts, vocabulary=PB_VOCABULARY)
    assert [canon(x) for x in got] == expected
    assert decoder.buffered == 0
    assert not decoder.in_expression
    assert next(iter(decoder), None) is None


@FAST
@given(expressions)
def test_byte_at_a_time(value: Any) -> None:
    wire = encode(value, dialect=b"pb")
    assert [canon(x) for x in feed_bytewise(wire, vocabulary=PB_VOCABULARY)] == [canon(value)]


def test_several_expressions_in_one_chunk() -> None:
    values = [[b"version", 6], 1, b"x", [], [[1.5]], -(2**40), b"None"]
    decoder = Decoder(vocabulary=PB_VOCABULARY)
    decoder.receive_data(b"".join(encode(v) for v in values) + h("03 82 61"))
    assert list(decoder) == values  # iteration stops at NEED_DATA
    assert decoder.in_expression
    assert decoder.buffered == 3
    decoder.receive_data(b"bc")
    assert decoder.next_expression() == b"abc"
    assert decoder.next_expression() is NEED_DATA
    assert not decoder.in_expression


def test_in_expression_with_open_list() -> None:
    decoder = Decoder()
    assert not decoder.in_expression
    decoder.receive_data(h("02 80 01 81"))
    assert decoder.next_expression() is NEED_DATA
    assert decoder.buffered == 0
    assert decoder.in_expression  # an unfinished list, no bytes left over
    decoder.receive_data(h("02 81"))
    assert decoder.next_expression() == [1, 2]
    assert not decoder.in_expression


def test_receive_data_accepts_buffers_and_copies_them() -> None:
    decoder = Decoder()
    chunk = bytearray(h("03 82 61"))
    decoder.receive_data(chunk)
    chunk[2] = 0x7A  # the decoder must not see later changes
    decoder.receive_data(memoryview(b"bc"))
    decoder.receive_data(b"")
    assert decoder.next_expression() == b"abc"


def test_vocabulary_can_change_between_expressions_of_one_chunk() -> None:
    decoder = Decoder()
    decoder.receive_data(h("02 82 70 62") + h("02 80 13 87 06 81"))
    assert decoder.next_expression() == b"pb"
    decoder.vocabulary = PB_VOCABULARY
    assert decoder.next_expression() == [b"version", 6]


def test_dialect_switch_mid_chunk_at_the_server() -> None:
    # The client's choice and its pb-encoded version arrive in one read.
    server = BananaConnection(is_client=False)
    server.data_to_send()
    server.receive_data(CLIENT_CHOICE + h("02 80 13 87 06 81") + h("10 87"))
    assert server.next_event() == DialectSelected(b"pb")
    assert server.next_event() == [b"version", 6]
    assert server.next_event() == b"remote"
    assert server.next_event() is NEED_DATA


def test_dialect_switch_mid_chunk_at_the_client() -> None:
    client = BananaConnection(is_client=True)
    client.receive_data(SERVER_OFFER + h("02 80 13 87 06 81"))
    assert client.next_event() == DialectSelected(b"pb")
    assert client.next_event() == [b"version", 6]
    assert client.data_to_send() == CLIENT_CHOICE


@FAST
@given(
    st.sampled_from([[b"pb", b"none"], [b"none", b"pb"], [b"pb"], [b"none"]]),
    st.sampled_from([[b"pb", b"none"], [b"none", b"pb"], [b"pb"], [b"none"]]),
    st.lists(expressions, max_size=3),
    st.lists(expressions, max_size=3),
    st.data(),
)
def test_handshake_and_exchange(
    server_dialects: list[bytes],
    client_dialects: list[bytes],
    to_server: list[Any],
    to_client: list[Any],
    data: st.DataObject,
) -> None:
    common = [d for d in server_dialects if d in client_dialects]
    assume(common)
    server = BananaConnection(is_client=False, dialects=server_dialects)
    client = BananaConnection(is_client=True, dialects=client_dialects)

    def deliver(conn: BananaConnection, wire: bytes) -> list[Any]:
        cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=5))
        events = []
        bounds = [0, *sorted(cuts), len(wire)]
        for start, end in itertools.pairwise(bounds):
            conn.receive_data(wire[start:end])
            while (event := conn.next_event()) is not NEED_DATA:
                events.append(event)
        return events

    offer = server.data_to_send()
    assert offer == encode(server_dialects, dialect=b"none")
    client_events = deliver(client, offer)
    assert client_events == [DialectSelected(common[0])]
    # The client's choice and everything it sends next travel together.
    wire = client.data_to_send() + b"".join(client.send(v) for v in to_server)
    assert client.data_to_send() == b""
    server_events = deliver(server, wire)
    assert server_events[0] == DialectSelected(common[0])
    assert [canon(e) for e in server_events[1:]] == [canon(v) for v in to_server]
    reply = b"".join(server.send(v) for v in to_client)
    assert reply == b"".join(encode(v, dialect=common[0]) for v in to_client)
    assert [canon(e) for e in deliver(client, reply)] == [canon(v) for v in to_client]
    assert server.dialect == client.dialect == common[0]
    assert not server.in_expression
    assert not client.in_expression


def test_server_preference_order_wins() -> None:
    client = BananaConnection(is_client=True, dialects=[b"none", b"pb"])
    client.receive_data(encode([b"xml", b"pb", b"none"], dialect=b"none"))
    assert client.next_event() == DialectSelected(b"pb")
    assert client.data_to_send() == CLIENT_CHOICE
    # Non-bytes entries in the offer are skipped, not errors.
    client = BananaConnection(is_client=True)
    client.receive_data(encode([1, [b"pb"], 2.5, b"none"], dialect=b"none"))
    assert client.next_event() == DialectSelected(b"none")
    assert client.send(b"remote") == h("06 82") + b"remote"


@pytest.mark.parametrize(
    "offer",
    [
        [b"xml"],
        [],
        [b"PB", b"NONE"],
        [[b"pb"]],
        b"pb",  # not a list: iterating it gives ints
        1,
        1.5,
    ],
)
def test_client_rejects_offer(offer: Any) -> None:
    client = BananaConnection(is_client=True)
    client.receive_data(encode(offer, dialect=b"none"))
    with pytest.raises(BananaError):
        client.next_event()
    assert client.dialect is None
    assert client.data_to_send() == b""


def test_client_with_no_common_dialect() -> None:
    client = BananaConnection(is_client=True, dialects=[b"none"])
    client.receive_data(encode([b"pb"], dialect=b"none"))
    with pytest.raises(BananaError, match="no dialect in common"):
        client.next_event()


@pytest.mark.parametrize(
    ("server_dialects", "choice"),
    [
        ([b"pb", b"none"], h("03 82") + b"xml"),
        ([b"pb", b"none"], encode([b"pb"])),
        ([b"pb", b"none"], encode(1)),
        ([b"pb", b"none"], encode(1.0)),
        ([b"pb", b"none"], encode([])),
        ([b"none"], CLIENT_CHOICE),  # known to the server, but not offered
        ([b"pb"], encode(b"none", dialect=b"none")),
    ],
)
def test_server_rejects_choice(server_dialects: list[bytes], choice: bytes) -> None:
    server = BananaConnection(is_client=False, dialects=server_dialects)
    server.data_to_send()
    server.receive_data(choice)
    with pytest.raises(BananaError, match="did not offer"):
        server.next_event()
    assert server.dialect is None


def test_vocab_before_the_handshake_is_an_error() -> None:
    server = BananaConnection(is_client=False)
    server.receive_data(h("10 87"))
    with pytest.raises(BananaError):
        server.next_event()
    client = BananaConnection(is_client=True)
    client.receive_data(h("02 80 10 87 01 87"))
    with pytest.raises(BananaError):
        client.next_event()


def test_encoding_before_and_after_the_handshake() -> None:
    server = BananaConnection(is_client=False)
    assert server.encoder.dialect == b"none"
    assert server.send(b"remote") == h("06 82") + b"remote"
    server.receive_data(CLIENT_CHOICE)
    server.next_event()
    assert server.encoder.dialect == b"pb"
    assert server.send(b"remote") == h("10 87")


# --------------------------------------------------------------------------
# Fuzzing: malformed input raises BananaError and nothing else, and stops.

FUZZ = settings(max_examples=300, deadline=timedelta(seconds=5), suppress_health_check=[HealthCheck.too_slow])


def fuzz_decode(data: bytes, cuts: list[int], **kwargs: Any) -> None:
    with contextlib.suppress(BananaError):
        feed(data, cuts, **kwargs)


@FUZZ
@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=10), st.booleans())
def test_fuzz_random_bytes(data: bytes, cuts: list[int], pb: bool) -> None:
    fuzz_decode(data, [c for c in cuts if c <= len(data)], vocabulary=PB_VOCABULARY if pb else None)


mutations = st.lists(
    st.tuples(
        st.sampled_from(["flip", "set", "insert", "delete"]), st.integers(0, 10**6), st.integers(0, 255)
    ),
    min_size=1,
    max_size=6,
)


def mutate(data: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    buf = bytearray(data)
    for op, where, byte in edits:
        at = where % (len(buf) + 1)
        if op == "insert":
            buf.insert(at, byte)
        elif buf and at < len(buf):
            if op == "flip":
                buf[at] ^= 1 << (byte % 8)
            elif op == "set":
                buf[at] = byte
            else:
                del buf[at]
    return bytes(buf)


@FUZZ
@given(expressions, mutations, st.lists(st.integers(0, 10**6), max_size=8), st.integers(0, 10**6))
def test_fuzz_mutated_encodings(value: Any, edits: Any, cuts: list[int], truncate: int) -> None:
    data = mutate(encode(value), edits)
    data = data[: truncate % (len(data) + 1)] if truncate % 3 == 0 else data
    fuzz_decode(data, [c % (len(data) + 1) for c in cuts], vocabulary=PB_VOCABULARY)
    fuzz_decode(data, [], prefix_limit=3, size_limit=5, depth_limit=2)


@FUZZ
@given(st.binary(max_size=200), st.booleans())
def test_fuzz_handshake(data: bytes, is_client: bool) -> None:
    conn = BananaConnection(is_client=is_client)
    conn.data_to_send()
    conn.receive_data(data)
    try:
        for _ in range(len(data) + 2):
            if conn.next_event() is NEED_DATA:
                break
        else:
            raise AssertionError("more events than bytes")
    except BananaError:
        pass


@FUZZ
@given(
    st.recursive(
        st.one_of(
            atoms,
            st.text(max_size=3),
            st.none(),
            st.complex_numbers(),
            st.just(object()),
            st.builds(bytearray, st.binary(max_size=3)),
        ),
        lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.binary(max_size=3), c, max_size=2)),
        max_leaves=10,
    )
)
def test_fuzz_encoder(value: Any) -> None:
    try:
        data = encode(value)
    except BananaError:
        return
    assert canon(decode(data)) == canon(value)


# --------------------------------------------------------------------------
# Linearity: count the bytes the decoder copies into its working buffer.


def bytes_copied(decoder: Decoder, chunks: list[bytes]) -> tuple[int, list[Any]]:
    """Feed *chunks*, draining after each; sum the sizes of every new working buffer.

    Each time the decoder replaces its buffer it has joined (copied) that many
    bytes.  A decoder that appends each chunk to everything it holds copies
    O(n**2) bytes for an n-byte message; a linear one O(n).
    """
    copied = 0
    out = []
    buffer = decoder._buffer
    for chunk in chunks:
        decoder.receive_data(chunk)
        while True:
            expression = decoder.next_expression()
            if decoder._buffer is not buffer:
                buffer = decoder._buffer
                copied += len(buffer)
            if expression is NEED_DATA:
                break
            out.append(expression)
    return copied, out


class EagerJoinDecoder(Decoder):
    """A deliberately quadratic decoder (Twisted's ``buffer + chunk``), to check the meter."""

    def receive_data(self, data: bytes) -> None:
        self._buffer = self._buffer[self._pos :] + bytes(data)
        self._pos = 0


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


LARGE_MESSAGES = {
    "one long string": [b"message", 1, bytes(range(256)) * 2000],
    "many small items": [[i, b"ab", [b"remote", i * 1000, 1.5]] for i in range(6000)],
    "many long strings": [b"z" * 5000 for _ in range(40)],
    "deep and wide": [*nest(200), list(range(5000))],
}


@pytest.mark.parametrize("name", sorted(LARGE_MESSAGES))
@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1500])
def test_decoding_in_small_chunks_is_linear(name: str, chunk_size: int) -> None:
    value = LARGE_MESSAGES[name]
    data = encode(value)
    if chunk_size == 1:
        data = data[:20_000]  # enough to cross many elements, quick to run
        value = None
    copied, out = bytes_copied(Decoder(vocabulary=PB_VOCABULARY), chunked(data, chunk_size))
    assert copied <= 3 * len(data) + 1000
    if value is not None:
        assert out == [value]


def test_the_copy_meter_detects_quadratic_decoding() -> None:
    value = LARGE_MESSAGES["one long string"]
    data = encode(value)
    chunks = chunked(data, 1500)
    linear, out = bytes_copied(Decoder(vocabulary=PB_VOCABULARY), chunks)
    quadratic, out2 = bytes_copied(EagerJoinDecoder(vocabulary=PB_VOCABULARY), chunks)
    assert out == out2 == [value]
    assert linear <= 3 * len(data)
    assert quadratic > 50 * len(data)


def test_several_messages_in_small_chunks_are_linear() -> None:
    values = [[b"answer", i, b"x" * (i % 300)] for i in range(3000)]
    data = b"".join(encode(v) for v in values)
    copied, out = bytes_copied(Decoder(vocabulary=PB_VOCABULARY), chunked(data, 100))
    assert out == values
    assert copied <= 3 * len(data) + 1000
