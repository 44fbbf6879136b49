"""Banana's bounds on whole messages: their size, their element count, and a partial one's memory."""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_pb.banana import (
    MESSAGE_ITEMS_LIMIT,
    MESSAGE_SIZE_LIMIT,
    NEED_DATA,
    SIZE_LIMIT,
    BananaConnection,
    Decoder,
    Encoder,
    int_to_b128,
)
from trio_pb.errors import BananaError


def elements(sexp: Any) -> int:
    """How many banana elements *sexp* is made of, itself included."""
    if isinstance(sexp, list):
        return 1 + sum(elements(item) for item in sexp)
    return 1


def decode_all(data: bytes, chunk: int = 65536, **limits: int) -> list[Any]:
    decoder = Decoder(**limits)
    out = []
    for start in range(0, len(data), chunk):
        decoder.receive_data(data[start : start + chunk])
        while (expression := decoder.next_expression()) is not NEED_DATA:
            out.append(expression)
    return out


sexps = st.recursive(
    st.one_of(st.integers(-(2**70), 2**70), st.binary(max_size=20)),
    lambda children: st.lists(children, max_size=6),
    max_leaves=40,
)


def test_defaults() -> None:
    assert MESSAGE_SIZE_LIMIT == 64 * 1024 * 1024
    assert MESSAGE_ITEMS_LIMIT == 1024 * 1024
    decoder = Decoder()
    assert decoder.message_size_limit == MESSAGE_SIZE_LIMIT
    assert decoder.message_items_limit == MESSAGE_ITEMS_LIMIT


@given(st.lists(sexps, min_size=1, max_size=4))
def test_the_elements_of_each_message_are_counted(messages: list[Any]) -> None:
    decoder = Decoder(vocabulary=None)
    encoder = Encoder(b"none")
    for message in messages:
        decoder.receive_data(encoder.encode(message))
        assert decoder.next_expression() == message
        assert decoder.last_message_items == elements(message)


def test_items_limit_is_inclusive_and_counts_every_level() -> None:
    # [[1, 2, 3], [4, 5]]: 1 + 2 lists + 5 ints = 8 elements.
    message = [[1, 2, 3], [4, 5]]
    data = Encoder(b"none").encode(message)
    assert decode_all(data, message_items_limit=8) == [message]
    with pytest.raises(BananaError, match="more than 7 elements"):
        decode_all(data, message_items_limit=7)


def test_items_limit_refuses_many_empty_lists_before_building_them() -> None:
    # The cheapest elements on the wire: one byte each, a Python list each once decoded.
    limit = 10_000
    inner = int_to_b128(1000) + b"\x80" + b"\x80" * 1000
    data = int_to_b128(100) + b"\x80" + inner * 100
    tracemalloc.start()
    try:
        with pytest.raises(BananaError, match="elements"):
            decode_all(data, chunk=4096, message_items_limit=limit)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Refused after about 10,000 of the 100,100 lists, not after all of them.
    assert peak < 56 * 3 * limit


def test_the_items_limit_is_per_message() -> None:
    message = [b"x"] * 9  # 10 elements
    data = Encoder(b"none").encode(message) * 5
    assert decode_all(data, message_items_limit=10) == [message] * 5


@pytest.mark.parametrize("chunk", [1, 7, 65536])
def test_size_limit_is_inclusive_whatever_the_reads(chunk: int) -> None:
    message = [b"a" * 100, b"b" * 100]
    data = Encoder(b"none").encode(message)
    assert decode_all(data, chunk=chunk, message_size_limit=len(data)) == [message]
    with pytest.raises(BananaError, match=f"more than {len(data) - 1} bytes"):
        decode_all(data, chunk=chunk, message_size_limit=len(data) - 1)


def test_size_limit_counts_across_many_strings() -> None:
    # Each string is within the per-string limit; together they are not.
    message = [b"x" * SIZE_LIMIT] * 4
    data = Encoder(b"none").encode(message)
    with pytest.raises(BananaError, match="bytes"):
        decode_all(data, message_size_limit=2 * SIZE_LIMIT)
    assert decode_all(data) == [message]


def test_a_string_announced_past_the_size_limit_is_refused_before_it_arrives() -> None:
    decoder = Decoder(message_size_limit=1000)
    decoder.receive_data(b"\x02\x80" + int_to_b128(2000) + b"\x82" + b"x" * 10)
    with pytest.raises(BananaError, match="more than 1000 bytes"):
        decoder.next_expression()


def test_a_partial_message_held_while_dripping_costs_about_its_size() -> None:
    # A 640 KiB string inside a message, one byte per read: the decoder must not
    # keep an object per read (it used to cost 42 bytes per byte).
    payload = b"z" * SIZE_LIMIT
    data = Encoder(b"none").encode([b"message", payload])
    decoder = Decoder()
    tracemalloc.start()
    try:
        for i in range(len(data) - 1):
            decoder.receive_data(data[i : i + 1])
            assert decoder.next_expression() is NEED_DATA
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 2 * len(data)
    decoder.receive_data(data[-1:])
    assert decoder.next_expression() == [b"message", payload]


def test_dripping_stays_linear() -> None:
    # Byte at a time over many messages: every byte is copied a bounded number of times.
    message = [b"abc" * 50, 12345, [b"x", 1.5]]
    data = Encoder(b"none").encode(message) * 200
    assert decode_all(data, chunk=1) == [message] * 200


def test_encoder_refuses_a_message_over_the_size_limit_and_accepts_the_limit() -> None:
    message = [b"a" * 1000, b"b" * 1000]
    size = len(Encoder(b"none").encode(message))
    assert len(Encoder(b"none", message_size_limit=size).encode(message)) == size
    with pytest.raises(BananaError, match=f"cannot send a message of {size} bytes"):
        Encoder(b"none", message_size_limit=size - 1).encode(message)


def test_encoder_counts_elements_as_the_decoder_does() -> None:
    message = [[1, [2, [3, []]]], (4, 5), b"six"]
    count = elements([list(item) if isinstance(item, tuple) else item for item in message])
    Encoder(b"none", message_items_limit=count).encode(message)
    with pytest.raises(BananaError, match=f"cannot send a message of {count} elements"):
        Encoder(b"none", message_items_limit=count - 1).encode(message)


def test_connection_passes_its_limits_to_both_directions() -> None:
    server = BananaConnection(is_client=False, message_items_limit=5)
    client = BananaConnection(is_client=True, message_items_limit=5)
    client.receive_data(server.data_to_send())
    client.next_event()
    server.receive_data(client.data_to_send())
    server.next_event()
    with pytest.raises(BananaError, match="cannot send"):
        client.send([1, 2, 3, 4, 5])
    server.receive_data(Encoder(b"pb").encode([1, 2, 3, 4, 5]))
    with pytest.raises(BananaError, match="more than 5 elements"):
        server.next_event()
    server_ok = BananaConnection(is_client=False)
    assert server_ok.last_message_items == 0
