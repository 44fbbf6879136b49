"""Differential tests: trio_pb.banana against Twisted's twisted.spread.banana.

Twisted is the reference peer: our bytes must equal Twisted's byte for byte,
each side must decode the other's output to the same value, malformed input
must be refused by both, and the dialect handshake must interoperate.
"""

from __future__ import annotations

import itertools
import struct
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_pb.banana import (
    NEED_DATA,
    PB_VOCABULARY,
    SIZE_LIMIT,
    BananaConnection,
    Decoder,
    DialectSelected,
    decode,
    encode,
    int_to_b128,
)
from trio_pb.errors import BananaError

tw_banana = pytest.importorskip("twisted.spread.banana")
from twisted.internet.testing import StringTransport  # noqa: E402

pytestmark = pytest.mark.twisted

BIG = 2**448 - 1
DIALECTS = [b"pb", b"none"]


# --------------------------------------------------------------------------
# Driving Twisted's Banana protocol


class TwistedPeer(tw_banana.Banana):  # type: ignore[misc]
    """A Twisted Banana protocol on a StringTransport that records what it receives."""

    def __init__(self, is_client: bool = True, dialect: bytes | None = None, ready: list[Any] | None = None):
        super().__init__(isClient=int(is_client))
        self.received: list[Any] = []
        self.ready = ready or []
        self.makeConnection(StringTransport())
        if dialect is not None:
            self._selectDialect(dialect)

    def expressionReceived(self, lst: Any) -> None:
        self.received.append(lst)

    def connectionReady(self) -> None:
        # What pb.Broker does: send at once, without waiting for the peer.
        for expression in self.ready:
            self.sendEncoded(expression)

    def take(self) -> bytes:
        data: bytes = self.transport.value()
        self.transport.clear()
        return data

    def pending(self) -> bool:
        return bool(self.listStack) or bool(self.buffer)


def tw_encode(obj: Any, dialect: bytes) -> bytes:
    peer = TwistedPeer(dialect=dialect)
    peer.take()
    peer.sendEncoded(obj)
    return peer.take()


def tw_feed(data: bytes, dialect: bytes, cuts: list[int] | None = None) -> tuple[list[Any], Exception | None]:
    """Twisted's expressions from *data* split at *cuts*, and the exception it raised, if any."""
    peer = TwistedPeer(dialect=dialect)
    bounds = [0, *sorted(set(cuts or [])), len(data)]
    try:
        for start, end in itertools.pairwise(bounds):
            if end > start:
                peer.dataReceived(data[start:end])
    except Exception as exc:  # Twisted raises BananaError, NotImplementedError or KeyError
        return peer.received, exc
    return peer.received, None


def our_feed(
    data: bytes, dialect: bytes, cuts: list[int] | None = None
) -> tuple[list[Any], Exception | None]:
    decoder = Decoder(vocabulary=PB_VOCABULARY if dialect == b"pb" else None)
    out: list[Any] = []
    bounds = [0, *sorted(set(cuts or [])), len(data)]
    try:
        for start, end in itertools.pairwise(bounds):
            decoder.receive_data(data[start:end])
            while (expression := decoder.next_expression()) is not NEED_DATA:
                out.append(expression)
    except BananaError as exc:
        return out, exc
    return out, None


def canon(obj: Any) -> Any:
    """A comparable form: tuples become lists, floats their bit pattern (NaN-safe)."""
    if isinstance(obj, (list, tuple)):
        return [canon(x) for x in obj]
    if isinstance(obj, float):
        return ("float", struct.pack("!d", obj))
    if isinstance(obj, int):
        return int(obj)
    return obj


# --------------------------------------------------------------------------
# Strategies

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
    -1024,
    2**63,
    -(2**63),
    sys.maxsize * 3,
    sys.maxsize * -2,
    BIG,
    -BIG,
]
ints = st.one_of(st.sampled_from(INT_EDGES), st.integers(-(2**31) - 3, 2**31 + 3), st.integers(-BIG, BIG))
byte_strings = st.one_of(
    st.binary(max_size=30),
    st.sampled_from(PB_VOCABULARY[1:]),
    st.sampled_from([b"unicode", b"root", b"none", b"NONE", b"didNotUnderstand", b""]),
)
atoms = st.one_of(ints, st.floats(), byte_strings, st.booleans())
expressions = st.recursive(
    atoms,
    lambda children: st.one_of(st.lists(children, max_size=6), st.lists(children, max_size=4).map(tuple)),
    max_leaves=40,
)

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------
# Encoding: byte for byte


@SETTINGS
@given(expressions, st.sampled_from(DIALECTS))
def test_same_bytes_as_twisted(value: Any, dialect: bytes) -> None:
    assert encode(value, dialect=dialect) == tw_encode(value, dialect)


@SETTINGS
@given(expressions)
def test_same_bytes_as_twisted_module_encode(value: Any) -> None:
    # Twisted's module-level encode() uses the "none" dialect.
    assert encode(value, dialect=b"none") == tw_banana.encode(value)


@SETTINGS
@given(expressions, st.sampled_from(DIALECTS))
def test_each_decodes_the_other(value: Any, dialect: bytes) -> None:
    ours = encode(value, dialect=dialect)
    theirs = tw_encode(value, dialect)
    got, error = tw_feed(ours, dialect)
    assert error is None
    assert [canon(x) for x in got] == [canon(value)]
    assert canon(decode(theirs, dialect=dialect)) == canon(value)


@SETTINGS
@given(st.lists(expressions, min_size=1, max_size=4), st.sampled_from(DIALECTS), st.data())
def test_same_expressions_from_the_same_splits(
    values: list[Any], dialect: bytes, data: st.DataObject
) -> None:
    wire = b"".join(tw_encode(v, dialect) for v in values)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=20))
    theirs, their_error = tw_feed(wire, dialect, cuts)
    ours, our_error = our_feed(wire, dialect, cuts)
    assert their_error is None
    assert our_error is None
    assert [canon(x) for x in ours] == [canon(x) for x in theirs] == [canon(v) for v in values]


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (2147483647, "7f 7f 7f 7f 07 81"),  # pb-protocol.md 1.1 drops a 7f here
        (2147483648, "00 00 00 00 08 85"),  # and here
        (-2147483648, "00 00 00 00 08 83"),
        (-2147483649, "01 00 00 00 08 86"),
        (300, "2c 02 81"),
        (-0.5, "84 bf e0 00 00 00 00 00 00"),
        ([1, [b"a"]], "02 80 01 81 01 80 01 82 61"),
        (
            [b"list", b"None", b"remote", [b"unicode", b"list"]],
            "04 80 08 87 01 87 10 87 02 80 07 82 75 6e 69 63 6f 64 65 08 87",
        ),
        (b"remote", "10 87"),
        ([b"version", 6], "02 80 13 87 06 81"),
    ],
    ids=lambda x: x if isinstance(x, str) else None,
)
def test_golden_bytes_agree_with_twisted(value: Any, wire: str) -> None:
    assert tw_encode(value, b"pb") == bytes.fromhex(wire) == encode(value, dialect=b"pb")


def test_vocabulary_agrees_with_twisted() -> None:
    assert {w: i for i, w in enumerate(PB_VOCABULARY) if i} == tw_banana.Banana.outgoingVocabulary


@pytest.mark.parametrize("value", [2**448, -(2**448), [1, 2**448]], ids=["2**448", "-2**448", "nested"])
def test_too_large_ints_refused_by_both(value: Any) -> None:
    with pytest.raises(tw_banana.BananaError):
        tw_encode(value, b"pb")
    with pytest.raises(BananaError, match="int is too large to send"):
        encode(value)


class Custom:
    class Inner:
        pass


@pytest.mark.parametrize("value", ["hello", type, Custom(), Custom.Inner(), None, {1: 2}, bytearray(b"x")])
def test_unsupported_type_messages_match(value: Any) -> None:
    with pytest.raises(tw_banana.BananaError) as theirs:
        tw_encode([1, value], b"pb")
    with pytest.raises(BananaError) as ours:
        encode([1, value])
    assert str(theirs.value).split(":")[0] == str(ours.value).split(":")[0]
    assert str(ours.value).startswith("Banana cannot send ")


@pytest.mark.parametrize(
    "value",
    [b"x" * SIZE_LIMIT, [0] * SIZE_LIMIT, b"x" * (SIZE_LIMIT + 1), (0,) * (SIZE_LIMIT + 1)],
    ids=["string-limit", "list-limit", "string-over", "tuple-over"],
)
def test_send_size_limit_agrees(value: Any) -> None:
    try:
        theirs: bytes | None = tw_encode(value, b"pb")
    except tw_banana.BananaError:
        theirs = None
    if theirs is None:
        with pytest.raises(BananaError):
            encode(value)
    else:
        assert encode(value) == theirs


# --------------------------------------------------------------------------
# Decoding malformed input: Twisted refuses iff we do


@pytest.mark.parametrize(
    "data",
    [
        "02 01 01 01 01 80",
        "02 01 01 01 01 82",
        "00 00 00 00 04 80",
        "01 88",
        "ff",
        "10 87",
        "7a 87",
        "00 87",
        "7f " * 65 + "85",
        "00 " * 65,
        "00 00 28 80",  # exactly SIZE_LIMIT: both wait
        "00 00 28 82",
        "01 00 28 80",  # one more: both refuse
        "01 00 28 82",
        "7f " * 64 + "81",
        "03 82 61 62",
        "05 84 3f f0 00 00 00 00 00 00",
    ],
)
@pytest.mark.parametrize("dialect", DIALECTS)
def test_known_inputs_agree(data: str, dialect: bytes) -> None:
    wire = bytes.fromhex(data)
    for cuts in ([], list(range(1, len(wire)))):
        theirs, their_error = tw_feed(wire, dialect, cuts)
        ours, our_error = our_feed(wire, dialect, cuts)
        assert (their_error is None) == (our_error is None), (their_error, our_error)
        assert [canon(x) for x in ours] == [canon(x) for x in theirs]


def differential(wire: bytes, dialect: bytes, cuts: list[int]) -> None:
    theirs, their_error = tw_feed(wire, dialect, cuts)
    ours, our_error = our_feed(wire, dialect, cuts)
    assert (their_error is None) == (our_error is None), (their_error, our_error)
    # Both deliver the same expressions before the error (or the end of the data).
    assert [canon(x) for x in ours] == [canon(x) for x in theirs]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=120), st.sampled_from(DIALECTS), st.lists(st.integers(0, 120), max_size=6))
def test_random_bytes_agree(wire: bytes, dialect: bytes, cuts: list[int]) -> None:
    differential(wire, dialect, [c for c in cuts if c <= len(wire)])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(expressions, min_size=1, max_size=3),
    st.sampled_from(DIALECTS),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4),
    st.lists(st.integers(0, 10**6), max_size=6),
)
def test_mutated_encodings_agree(
    values: list[Any], dialect: bytes, edits: list[tuple[int, int]], cuts: list[int]
) -> None:
    buf = bytearray(b"".join(tw_encode(v, b"pb") for v in values))
    for where, byte in edits:
        buf[where % len(buf)] = byte
    wire = bytes(buf)
    differential(wire, dialect, [c % (len(wire) + 1) for c in cuts])


def test_decode_doubled_prefix_limit_encoding() -> None:
    # Twisted's test_decodeTooLargeLong: encode with a doubled limit, decode with the normal one.
    for value in (2**448, -(2**448)):
        peer = TwistedPeer(dialect=b"none")
        peer.setPrefixLimit(128)
        peer.take()
        peer.sendEncoded(value)
        wire = peer.take()
        assert wire == int_to_b128(abs(value)) + (b"\x85" if value > 0 else b"\x86")
        with pytest.raises(BananaError):
            decode(wire)
        assert decode(wire, prefix_limit=128) == value


# --------------------------------------------------------------------------
# The handshake against a real Twisted peer


def test_our_client_with_twisted_server() -> None:
    server = TwistedPeer(is_client=False, ready=[[b"version", 6]])
    offer = server.take()
    assert offer == bytes.fromhex("02 80 02 82 70 62 04 82 6e 6f 6e 65")
    client = BananaConnection(is_client=True)
    client.receive_data(offer)
    assert client.next_event() == DialectSelected(b"pb")
    # Choice, version and a first message in one write, as a Twisted client may do.
    server.dataReceived(
        client.data_to_send() + client.send([b"version", 6]) + client.send([b"message", 1, b"root"])
    )
    assert server.currentDialect == b"pb"
    assert server.received == [[b"version", 6], [b"message", 1, b"root"]]
    reply = server.take()
    assert reply == bytes.fromhex("02 80 13 87 06 81")  # VOCAB-encoded: the server switched mid-chunk
    client.receive_data(reply)
    assert client.next_event() == [b"version", 6]


def test_twisted_client_with_our_server() -> None:
    server = BananaConnection(is_client=False)
    client = TwistedPeer(is_client=True, ready=[[b"version", 6], [b"remote", b"None"]])
    client.dataReceived(server.data_to_send())
    assert client.currentDialect == b"pb"
    # The choice and the pb-encoded expressions arrive in one read.
    wire = client.take()
    assert wire.startswith(bytes.fromhex("02 82 70 62 02 80 13 87 06 81"))
    server.receive_data(wire)
    assert server.next_event() == DialectSelected(b"pb")
    assert server.next_event() == [b"version", 6]
    assert server.next_event() == [b"remote", b"None"]
    assert server.next_event() is NEED_DATA
    client.dataReceived(server.send([b"answer", 1, [b"list", b"tuple"]]))
    assert client.received == [[b"answer", 1, [b"list", b"tuple"]]]


@pytest.mark.parametrize(
    ("server_dialects", "client_dialects", "expected"),
    [
        ([b"pb", b"none"], [b"pb", b"none"], b"pb"),
        ([b"none", b"pb"], [b"pb", b"none"], b"none"),
        ([b"none"], [b"pb", b"none"], b"none"),
    ],
)
def test_twisted_client_picks_like_ours(
    server_dialects: list[bytes], client_dialects: list[bytes], expected: bytes
) -> None:
    server = BananaConnection(is_client=False, dialects=server_dialects)
    offer = server.data_to_send()
    twisted_client = TwistedPeer(is_client=True)
    twisted_client.knownDialects = client_dialects
    twisted_client.dataReceived(offer)
    our_client = BananaConnection(is_client=True, dialects=client_dialects)
    our_client.receive_data(offer)
    assert our_client.next_event() == DialectSelected(expected)
    assert twisted_client.currentDialect == expected
    assert twisted_client.take() == our_client.data_to_send()


def test_twisted_client_without_common_dialect_disconnects() -> None:
    # Twisted closes cleanly; we raise BananaError, which closes the connection.
    server = BananaConnection(is_client=False, dialects=[b"none"])
    offer = server.data_to_send()
    twisted_client = TwistedPeer(is_client=True)
    twisted_client.knownDialects = [b"pb"]
    twisted_client.dataReceived(offer)
    assert twisted_client.transport.disconnecting
    our_client = BananaConnection(is_client=True, dialects=[b"pb"])
    our_client.receive_data(offer)
    with pytest.raises(BananaError):
        our_client.next_event()


@pytest.mark.parametrize("choice", [b"xml", [b"pb"], 1])
def test_bad_choice_closes_both_servers(choice: Any) -> None:
    twisted_server = TwistedPeer(is_client=False)
    twisted_server.dataReceived(encode(choice, dialect=b"none"))
    assert twisted_server.transport.disconnecting
    assert twisted_server.currentDialect is None
    server = BananaConnection(is_client=False)
    server.receive_data(encode(choice, dialect=b"none"))
    with pytest.raises(BananaError):
        server.next_event()
