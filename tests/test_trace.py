"""The trace hook: every PB message sent and received, between trio_pb peers and with real Twisted."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from peers import run_twisted_client, twisted_server

import trio_pb
from trio_pb import banana
from trio_pb.connect import open_tcp_broker, serve_tcp
from trio_pb.protocol import PBProtocol, TracingProtocol
from trio_pb.testing import open_broker_pair
from trio_pb.trace import TraceEvent


class Thing(trio_pb.Referenceable):
    def remote_name(self) -> str:
        return "thing"


class Calc(trio_pb.Root):
    def remote_add(self, a: int, b: int) -> int:
        return a + b

    def remote_thing(self) -> Thing:
        return Thing()

    def remote_fail(self) -> None:
        raise trio_pb.Error("no")

    async def remote_later(self, value: object) -> object:
        await trio.lowlevel.checkpoint()
        return value


def brief(events: list[TraceEvent], direction: str) -> list[tuple[Any, ...]]:
    """(command, request id, fields) of the events in one direction, in order."""
    return [(e.command, e.request_id, e.fields) for e in events if e.direction == direction]


def assert_sizes_are_the_encodings(events: list[TraceEvent], dialect: bytes) -> None:
    """Each PB message's size is that of its fields encoded again: what went over the wire."""
    for event in events:
        if event.command not in ("dialects", "dialect"):
            expression = [event.command.encode(), *event.fields]
            assert event.size == len(banana.encode(expression, dialect=dialect)), event


async def test_a_conversation_between_trio_pb_peers_is_traced() -> None:
    events: list[TraceEvent] = []
    async with open_broker_pair(Calc(), trace=events.append) as (client, server):
        root = await client.root_object()
        assert await root.call_remote("add", 1, 2) == 3
        thing = await root.call_remote("thing")
        await thing.release()
        with pytest.raises(trio_pb.Error):
            await root.call_remote("fail")
        assert await root.call_remote("later", {"k": [1.5, b"x"]}) == {"k": [1.5, b"x"]}
        await trio.testing.wait_all_tasks_blocked()
        assert type(client._protocol) is TracingProtocol and type(server._protocol) is TracingProtocol
    # open_broker_pair gives both ends the same options: the one list has both ends' events.
    sent = brief(events, "sent")
    error = next(e for e in events if e.command == "error" and e.direction == "sent")
    assert error.request_id == 3
    assert error.fields[1][0] == b"twisted.spread.pb.CopyableFailure"
    messages = [entry for entry in sent if entry[0] == "message"]
    assert messages == [
        ("message", 1, (1, b"root", b"add", 1, [b"tuple", 1, 2], [b"dictionary"])),
        ("message", 2, (2, b"root", b"thing", 1, [b"tuple"], [b"dictionary"])),
        ("message", 3, (3, b"root", b"fail", 1, [b"tuple"], [b"dictionary"])),
        (
            "message",
            4,
            (
                4,
                b"root",
                b"later",
                1,
                [b"tuple", [b"dictionary", [[b"unicode", b"k"], [b"list", 1.5, b"x"]]]],
                [b"dictionary"],
            ),
        ),
    ]
    answers = [entry for entry in sent if entry[0] == "answer"]
    assert answers == [
        ("answer", 1, (1, 3)),
        ("answer", 2, (2, [b"remote", 1])),
        ("answer", 4, (4, [b"dictionary", [[b"unicode", b"k"], [b"list", 1.5, b"x"]]])),
    ]
    assert ("decref", None, (1,)) in sent
    # Every message sent by one end was received by the other, with the same fields and size.
    sends = sorted((e.command, e.fields.__repr__(), e.size) for e in events if e.direction == "sent")
    receipts = sorted((e.command, e.fields.__repr__(), e.size) for e in events if e.direction == "received")
    assert sends == receipts
    assert_sizes_are_the_encodings(events, b"trio-pb-1")
    assert all(e.peer == "the peer" for e in events)  # memory streams have no address


async def test_the_order_of_one_ends_trace() -> None:
    server_events: list[TraceEvent] = []
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(serve_tcp, Calc(), 0, host="127.0.0.1", trace=server_events.append)
        )
        port = listeners[0].socket.getsockname()[1]
        async with open_tcp_broker("127.0.0.1", port) as client:
            root = await client.root_object()
            assert await root.call_remote("add", 1, 2) == 3
            await (await root.call_remote("thing")).release()
            with pytest.raises(trio_pb.Error):
                await root.call_remote("fail")
            assert await root.call_remote("add", 2, 2) == 4
        nursery.cancel_scope.cancel()
    # The server's view, in the order things happened: the banana handshake, each call
    # taken in before its answer goes out, the release taken in before the next call.
    assert [(e.direction, e.command, e.request_id) for e in server_events] == [
        ("sent", "dialects", None),
        ("received", "dialect", None),
        ("sent", "version", None),
        ("sent", "limits", None),
        ("received", "version", None),
        ("received", "limits", None),
        ("received", "message", 1),
        ("sent", "answer", 1),
        ("received", "message", 2),
        ("sent", "answer", 2),
        ("received", "decref", None),
        ("received", "message", 3),
        ("sent", "error", 3),
        ("received", "message", 4),
        ("sent", "answer", 4),
    ]
    assert server_events[0].fields == ([b"trio-pb-2", b"trio-pb-1", b"pb", b"none"],)
    assert server_events[1].fields == (b"trio-pb-2",)
    offer = [b"trio-pb-2", b"trio-pb-1", b"pb", b"none"]
    assert server_events[0].size == len(banana.encode(offer, dialect=b"none"))
    host, _, client_port = server_events[0].peer.rpartition(":")
    assert host == "127.0.0.1" and int(client_port) > 0
    assert_sizes_are_the_encodings(server_events, b"trio-pb-2")
    assert server_events[-1].time >= server_events[0].time


async def test_messages_queued_together_are_traced_one_by_one() -> None:
    # A call and its deadline go out as one piece, and so does a big message with what waited behind it.
    events: list[TraceEvent] = []
    async with open_broker_pair(Calc(), trace=events.append) as (client, server):
        root = await client.root_object()
        with trio.fail_after(30):
            assert await root.call_remote("later", 7) == 7
        root.call_remote_no_answer("later", b"x" * (1024 * 1024))
        assert await root.call_remote("add", 1, 2) == 3
    sent = [e for e in events if e.direction == "sent" and e.command not in ("blob", "chunk")]
    commands = [e.command for e in sent]
    deadline = commands.index("deadline")
    call = sent[deadline + 1]
    assert call.command == "message" and call.request_id == sent[deadline].request_id
    withblobs = commands.index("withblobs")
    assert sent[withblobs + 1].command == "message" and sent[withblobs + 1].fields[2] == b"add"
    # Each its own size (the blob commands aside: their fields are the bytes sent by hand).
    assert_sizes_are_the_encodings([e for e in sent if e.command != "withblobs"], b"trio-pb-2")


async def test_without_the_option_the_protocol_is_the_plain_one() -> None:
    async with open_broker_pair(Calc()) as (client, server):
        # Not a subclass with a switch: the very class whose call path is measured.
        assert type(client._protocol) is PBProtocol and type(server._protocol) is PBProtocol


async def test_a_failing_trace_callback_is_logged_once_and_dropped(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[TraceEvent] = []

    def fragile(event: TraceEvent) -> None:
        seen.append(event)
        if event.command == "message":
            raise RuntimeError("the trace broke")

    async with open_broker_pair(Calc(), trace=fragile) as (client, _server):
        root = await client.root_object()
        assert await root.call_remote("add", 1, 2) == 3
        assert await root.call_remote("add", 3, 4) == 7
    failures = [r for r in caplog.records if "the trace callback" in r.getMessage()]
    # One end's callback failed at its first sent message, the other's at its first received one.
    assert len(failures) == 2
    assert all(r.exc_info is not None and "the trace broke" in str(r.exc_info[1]) for r in failures)
    assert [e.command for e in seen].count("message") == 2


async def test_log_trace_logs_each_message_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_pb.trace")
    async with open_broker_pair(Calc(), trace=trio_pb.log_trace) as (client, _server):
        root = await client.root_object()
        assert await root.call_remote("add", 1, 2) == 3
    lines = [r.getMessage() for r in caplog.records if r.name == "trio_pb.trace"]
    assert all(r.levelno == logging.DEBUG for r in caplog.records if r.name == "trio_pb.trace")
    assert "the peer sent message 1 b'root' b'add' 1 [b'tuple', 1, 2] [b'dictionary'] (31 bytes)" in lines
    assert "the peer received message 1 b'root' b'add' 1 [b'tuple', 1, 2] [b'dictionary'] (31 bytes)" in lines
    assert "the peer sent answer 1 3 (8 bytes)" in lines


def test_a_protocol_driven_by_hand_traces_too() -> None:
    events: list[TraceEvent] = []
    server = TracingProtocol(None, is_client=False, trace=events.append, peer="client")
    client = PBProtocol(None, is_client=True)
    client.receive_data(server.data_to_send())
    client.next_event()
    server.receive_data(client.data_to_send())
    server.next_event()
    client.send_call(b"root", "missing", (), {})
    server.receive_data(client.data_to_send())
    server.next_event()
    assert [(e.direction, e.command) for e in events] == [
        ("sent", "dialects"),
        ("received", "dialect"),
        ("sent", "version"),
        ("sent", "limits"),
        ("received", "version"),
        ("received", "limits"),
        ("received", "message"),
        ("sent", "error"),  # Invalid Object ID: nothing is registered as root
    ]
    offer = [b"trio-pb-2", b"trio-pb-1", b"pb", b"none"]
    size = len(banana.encode(offer, dialect=b"none"))
    assert str(events[0]) == f"client sent dialects {offer} ({size} bytes)"


# -- with real Twisted ------------------------------------------------------------


@pytest.mark.twisted
async def test_a_conversation_with_a_twisted_server_is_traced() -> None:
    events: list[TraceEvent] = []
    async with (
        twisted_server("twisted_peer.py", "server") as port,
        open_tcp_broker("127.0.0.1", port, trace=events.append) as broker,
    ):
        root = await broker.root_object()
        assert await root.call_remote("add", 1, 2) == 3
        thing = await root.call_remote("get_thing")
        assert await thing.call_remote("name") == "twisted thing"
        await thing.release()
        with pytest.raises(trio_pb.RemoteError):
            await root.call_remote("boom")
        assert await root.call_remote("add", 5) == 5
    assert brief(events, "sent") == [
        ("dialect", None, (b"pb",)),
        ("version", None, (6,)),
        ("message", 1, (1, b"root", b"add", 1, [b"tuple", 1, 2], [b"dictionary"])),
        ("message", 2, (2, b"root", b"get_thing", 1, [b"tuple"], [b"dictionary"])),
        ("message", 3, (3, 1, b"name", 1, [b"tuple"], [b"dictionary"])),
        ("decref", None, (1,)),
        ("message", 4, (4, b"root", b"boom", 1, [b"tuple"], [b"dictionary"])),
        ("message", 5, (5, b"root", b"add", 1, [b"tuple", 5], [b"dictionary"])),
    ]
    received = brief(events, "received")
    assert received[:2] == [("dialects", None, ([b"pb", b"none"],)), ("version", None, (6,))]
    assert [entry[:2] for entry in received[2:]] == [
        ("answer", 1),
        ("answer", 2),
        ("answer", 3),
        ("error", 4),
        ("answer", 5),
    ]
    assert received[2][2] == (1, 3)
    assert received[3][2] == (2, [b"remote", 1])
    assert received[4][2] == (3, [b"unicode", b"twisted thing"])
    assert received[5][2][1][0] == b"twisted.spread.pb.CopyableFailure"
    # Each answer is received after its call was sent.
    order = [(e.direction, e.request_id) for e in events]
    for request_id in range(1, 6):
        assert order.index(("sent", request_id)) < order.index(("received", request_id))
    assert_sizes_are_the_encodings(events, b"pb")
    assert {e.peer for e in events} == {f"127.0.0.1:{port}"}


class Two(trio_pb.Referenceable):
    def remote_three(self, arg: object) -> None:
        pass


class One(trio_pb.Root):
    def remote_getTwo(self) -> Two:
        return Two()

    def remote_done(self) -> str:
        return "done"


@pytest.mark.twisted
async def test_a_twisted_client_against_a_traced_trio_pb_server() -> None:
    events: list[TraceEvent] = []
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(serve_tcp, One(), 0, host="127.0.0.1", trace=events.append))
        port = listeners[0].socket.getsockname()[1]
        lines = await run_twisted_client("twisted_howto_basics_peer.py", "client", "pb1", str(port))
        nursery.cancel_scope.cancel()
    assert lines[-1] == "done"
    assert [(e.direction, e.command, e.fields) for e in events[:4]] == [
        ("sent", "dialects", ([b"trio-pb-2", b"trio-pb-1", b"pb", b"none"],)),
        ("received", "dialect", (b"pb",)),  # a Twisted client does not know the extension dialect
        ("sent", "version", (6,)),
        ("received", "version", (6,)),
    ]
    calls = [entry for entry in brief(events, "received") if entry[0] == "message"]
    assert calls == [
        ("message", 1, (1, b"root", b"getTwo", 1, [b"tuple"], [b"dictionary"])),
        ("message", 2, (2, 1, b"three", 1, [b"tuple", 12], [b"dictionary"])),
        ("message", 3, (3, b"root", b"done", 1, [b"tuple"], [b"dictionary"])),
    ]
    answers = [entry for entry in brief(events, "sent") if entry[0] == "answer"]
    assert answers == [
        ("answer", 1, (1, [b"remote", 1])),
        ("answer", 2, (2, [b"None"])),
        ("answer", 3, (3, [b"unicode", b"done"])),
    ]
    order = [(e.direction, e.command, e.request_id) for e in events]
    for request_id in (1, 2, 3):
        assert order.index(("received", "message", request_id)) < order.index(("sent", "answer", request_id))
    assert_sizes_are_the_encodings(events, b"pb")
