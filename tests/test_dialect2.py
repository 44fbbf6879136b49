"""The trio-pb-2 dialect in the sans-IO core: negotiation, and the blob commands (no I/O, no trio)."""

from __future__ import annotations

from typing import Any

import pytest
from core_pair import connected_pair, deliver

from trio_pb import banana, errors
from trio_pb.flavors import Root
from trio_pb.protocol import (
    EXTENSION_DIALECT,
    EXTENSION_DIALECT_2,
    NEED_DATA,
    Answer,
    IncomingCall,
    PBProtocol,
)

MiB = 1024 * 1024


class Echo(Root):
    def remote_echo(self, value: Any) -> Any:
        return value


def pump(sender: PBProtocol, receiver: PBProtocol) -> list[Any]:
    """Move everything, chunks included, from *sender* to *receiver*; the events it makes there."""
    events = deliver(sender, receiver)
    while sender.pump_blob():
        events += deliver(sender, receiver)
    return events


def handshake(server: PBProtocol, client: PBProtocol) -> None:
    deliver(server, client)
    deliver(client, server)


def test_trio_pb_2_is_offered_first_and_chosen_by_trio_pb() -> None:
    server = PBProtocol(None, is_client=False)
    assert banana.decode(server.data_to_send()) == [b"trio-pb-2", b"trio-pb-1", b"pb", b"none"]
    client, server = connected_pair()
    assert client.dialect == server.dialect == EXTENSION_DIALECT_2
    assert client.extended and server.extended


@pytest.mark.parametrize("older", ["server", "client"])
def test_a_trio_pb_1_only_peer_negotiates_trio_pb_1_and_works(older: str) -> None:
    server = PBProtocol(None, is_client=False, extensions=EXTENSION_DIALECT if older == "server" else True)
    server.set_name_for_local(b"root", Echo())
    client = PBProtocol(None, is_client=True, extensions=EXTENSION_DIALECT if older == "client" else True)
    handshake(server, client)
    assert client.dialect == server.dialect == EXTENSION_DIALECT
    deliver(server, client)  # the server's version: no limits command under trio-pb-1
    request = client.send_call(b"root", "echo", (b"hi",), {})
    [call] = deliver(client, server)
    assert isinstance(call, IncomingCall)
    server.send_answer(call.request_id, call.method(*call.args))
    assert deliver(server, client) == [Answer(request, b"hi")]
    with pytest.raises(errors.BananaEncodeError, match="does not speak trio-pb-2"):
        client.send_call(b"root", "echo", (b"x" * MiB,), {})
    assert not client.data_to_send()


def test_a_big_value_goes_as_blob_chunks_then_the_message() -> None:
    client, server = connected_pair(Echo())
    deliver(server, client)
    value = bytes(range(256)) * (MiB // 128)  # 2 MiB
    request = client.send_call(b"root", "echo", (value, "t" * (200 * 1024)), {})
    assert client.bytes_to_send == 0 and client.blobs_pending  # nothing is queued before the writer pumps
    sent = []
    while client.pump_blob():
        sent.append(banana.decode(client.data_to_send(), dialect=b"pb"))
    commands = [expression[0] for expression in sent]
    assert commands[0] == b"blob" and sent[0][2] == len(value)
    assert commands.count(b"chunk") == len(value) // (64 * 1024) + 200 // 64 + 1
    assert commands[-1] == b"withblobs" and sent[-1][1] == [1, 2]
    for expression in sent:
        server.receive_data(banana.encode(expression, dialect=b"pb"))
    [call] = deliver(server, server)
    assert isinstance(call, IncomingCall) and call.args == (value, "t" * (200 * 1024))
    server.send_answer(call.request_id, call.args[0])
    assert pump(server, client) == [Answer(request, value)]
    assert not server._requests.big.incoming and not client._requests.big.incoming


def test_a_ping_queued_during_a_big_value_goes_before_its_next_chunk() -> None:
    client, server = connected_pair(Echo())
    deliver(server, client)
    client.send_call(b"root", "echo", (b"v" * MiB,), {})
    assert client.pump_blob() and client.pump_blob()  # the announcement, a first chunk
    ping = client.send_ping()
    assert [type(event).__name__ for event in deliver(client, server)] == []
    assert deliver(server, client) == [Answer(ping, None)]


def calls_in_arrival_order(client: PBProtocol, server: PBProtocol) -> list[tuple[str, int]]:
    """Pump everything to *server*: the calls it gets, in order, as (method, size of the first argument)."""
    return [
        (event.method.__name__, len(event.args[0]))
        for event in pump(client, server)
        if isinstance(event, IncomingCall)
    ]


class Store(Root):
    def remote_set(self, value: bytes) -> None:
        pass

    def remote_get(self) -> None:
        pass


def test_a_small_call_overtakes_a_big_call_that_wants_an_answer() -> None:
    client, server = connected_pair(Store())
    deliver(server, client)
    client.send_call(b"root", "set", (b"b" * MiB,), {})
    assert client.pump_blob() and client.pump_blob()  # the announcement, a first chunk
    client.send_call(b"root", "get", (b"",), {})
    assert calls_in_arrival_order(client, server) == [("remote_get", 0), ("remote_set", MiB)]


@pytest.mark.parametrize("later", ["no answer", "answer", "deadline"])
def test_calls_wait_behind_a_big_call_that_wants_no_answer(later: str) -> None:
    # Its caller did not wait for it: the peer must run it before what the caller does next.
    client, server = connected_pair(Store())
    deliver(server, client)
    client.send_call(b"root", "set", (b"b" * MiB,), {}, answer_required=False)
    assert client.pump_blob() and client.pump_blob()
    queued = client.bytes_to_send
    client.send_call(
        b"root",
        "set",
        (b"s",),
        {},
        answer_required=later != "no answer",
        time_left=5.0 if later == "deadline" else None,
    )
    client.send_call(b"root", "get", (b"",), {})
    assert client.bytes_to_send == queued  # both wait behind the big one
    assert calls_in_arrival_order(client, server) == [
        ("remote_set", MiB),
        ("remote_set", 1),
        ("remote_get", 0),
    ]
    assert not client.blobs_pending


def test_a_release_waits_behind_any_big_message_in_transit() -> None:
    # The big message may name the reference released (a token it carries).
    client, server = connected_pair(Store())
    deliver(server, client)
    client.send_call(b"root", "set", (b"b" * MiB,), {})
    assert client.pump_blob()
    decoder = banana.Decoder(vocabulary=banana.PB_VOCABULARY)
    decoder.receive_data(client.data_to_send())
    client.send_decref(7)
    assert client.bytes_to_send == 0
    while client.pump_blob():
        decoder.receive_data(client.data_to_send())
    commands = [expression[0] for expression in decoder]
    assert commands[-2:] == [b"withblobs", b"decref"]


def test_a_call_cancelled_before_its_blobs_go_out_is_never_sent() -> None:
    client, server = connected_pair(Echo())
    deliver(server, client)
    request = client.send_call(b"root", "echo", (b"v" * MiB,), {})
    client.abandon(request)
    client.send_cancel(request)
    assert not client.blobs_pending and not client.data_to_send()
    assert client.abandoned_calls == 0  # no answer will come: none is awaited


def test_a_call_cancelled_mid_blob_is_taken_back_and_the_peer_drops_what_it_has() -> None:
    client, server = connected_pair(Store())
    deliver(server, client)
    request = client.send_call(b"root", "set", (b"a" * MiB, b"b" * MiB), {})
    for _ in range(1 + 16 + 2):  # the first blob, whole; the second announced, a chunk of it
        assert client.pump_blob()
    deliver(client, server)
    assert sorted(server._requests.big.incoming) == [1, 2] and server._requests.big.held == 2 * MiB
    client.send_decref(9)  # a release waits behind the big message
    client.abandon(request)
    client.send_cancel(request)
    assert not client.blobs_pending and client.abandoned_calls == 0
    data = client.data_to_send()
    decoder = banana.Decoder(vocabulary=banana.PB_VOCABULARY)
    decoder.receive_data(data)
    assert [expression[0] for expression in decoder] == [b"dropblobs", b"decref"]
    # The peer forgets both blobs, and nothing of the call runs there.
    server.receive_data(data)
    assert server.next_event() is NEED_DATA
    assert not server._requests.big.incoming and server._requests.big.held == 0


def feed(server: PBProtocol, *expressions: Any) -> list[Any]:
    for expression in expressions:
        server.receive_data(banana.encode(expression, dialect=b"pb"))
    return deliver(server, server)


def test_a_hostile_announcement_past_the_limit_is_a_protocol_error() -> None:
    _client, server = connected_pair(Echo())
    with pytest.raises(errors.ProtocolError, match="past this connection's limit"):
        feed(server, [b"blob", 1, 10 * 1024**3])
    assert not server._requests.big.incoming


@pytest.mark.parametrize(
    "expressions",
    [
        [[b"chunk", 7, b"data"]],
        [[b"blob", 1, 4], [b"chunk", 1, b"12345"]],
        [[b"blob", 1, 4], [b"blob", 1, 4]],
        [[b"blob", 1, 0]],
        [[b"blob", 1, 4], [b"withblobs", [1], [b"answer", 1, [b"trio_pb.blob", 1]]]],
        [[b"withblobs", [], [b"withblobs", [], [b"version", 6]]]],
        [[b"blob", 1, 4], [b"chunk", 1, b"1234"], [b"withblobs", [1], [b"answer", 1, [b"trio_pb.blob", 2]]]],
        [[b"dropblobs", [3]]],
        [[b"blob", 1, 4], [b"dropblobs", []]],
        [[b"blob", 1, 4], [b"dropblobs", 1]],
        [[b"blob", 1, 4], [b"dropblobs", [1]], [b"chunk", 1, b"1234"]],
    ],
    ids=[
        "unknown blob",
        "past its size",
        "reused id",
        "empty",
        "incomplete",
        "nested",
        "unclaimed",
        "drop unknown",
        "drop none",
        "drop not a list",
        "chunk after drop",
    ],
)
def test_malformed_blob_commands_are_protocol_errors(expressions: list[Any]) -> None:
    _client, server = connected_pair(Echo())
    with pytest.raises(errors.ProtocolError):
        feed(server, *expressions)


def test_the_open_blobs_count_against_the_limit_until_claimed() -> None:
    _client, server = connected_pair(Echo(), max_value_size=10)
    feed(server, [b"blob", 1, 6])
    with pytest.raises(errors.ProtocolError):
        feed(server, [b"blob", 2, 6])


def test_blob_commands_are_not_understood_under_trio_pb_1() -> None:
    _client, server = connected_pair(Echo(), extensions=EXTENSION_DIALECT)
    feed(server, [b"blob", 1, 6])
    assert server.conduct.count("unknown command") == 1


def test_the_connection_lost_frees_blobs_both_ways() -> None:
    client, server = connected_pair(Echo())
    client.send_call(b"root", "echo", (b"v" * MiB,), {})
    for _ in range(4):
        client.pump_blob()
    deliver(client, server)
    assert server._requests.big.incoming
    server.connection_lost()
    client.connection_lost()
    assert not server._requests.big.incoming and server._requests.big.held == 0
    assert not client.blobs_pending and not client.pump_blob()
