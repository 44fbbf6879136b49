"""Flow control for calls: bounded in both directions, and no deadlock when both peers flood each other.

Our calls in flight are bounded (``max_calls_in_flight``: more callers wait,
first come first served, cancellably), our callers wait for room in the
send buffer, and while output is backed up only the peer's *calls* are held
back: answers, pings and the rest keep being read, so two peers that flood
each other keep answering each other.  Reading stops only when the held
calls reach their bound (``max_held_calls``).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from core_pair import connected_pair, deliver
from peers import run_twisted_client

import trio_pb
from trio_pb import banana
from trio_pb.banana import NEED_DATA
from trio_pb.broker import Broker, open_broker
from trio_pb.connect import serve_tcp
from trio_pb.errors import CancelledByCaller
from trio_pb.options import MAX_CALLS_IN_FLIGHT, MAX_HELD_CALLS, BrokerOptions
from trio_pb.protocol import PAUSED, PONG_RESERVE, Answer, Failed, IncomingCall, PBProtocol
from trio_pb.testing import assert_no_leaks, open_broker_pair

SEND_BUFFER = 16 * 1024


class Echo(trio_pb.Root):
    """Each side's root: answers at once, or calls the other side back first."""

    def __init__(self) -> None:
        self.peer: Any = None

    def remote_echo(self, value: Any) -> Any:
        return value

    async def remote_bounce(self, value: Any) -> Any:
        return await self.peer.call_remote("echo", value)


@asynccontextmanager
async def flooding_pair(transport: str, **options: Any) -> AsyncIterator[tuple[Broker, Broker]]:
    """Two brokers serving an :class:`Echo` each, over a stream that buffers nothing (or a socket)."""
    left: trio.abc.Stream
    right: trio.abc.Stream
    if transport == "lockstep":
        left, right = trio.testing.lockstep_stream_pair()
    else:
        left_socket, right_socket = trio.socket.socketpair()
        left, right = trio.SocketStream(left_socket), trio.SocketStream(right_socket)
    brokers: list[Broker] = []
    opened = trio.Event()
    done = trio.Event()

    async def serve(stream: trio.abc.Stream, server: bool) -> None:
        root = Echo()
        async with open_broker(stream, server=server, root=root, **options) as broker:
            root.peer = await broker.root_object()
            brokers.append(broker)
            if len(brokers) == 2:
                opened.set()
            await done.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve, left, True)
        nursery.start_soon(serve, right, False)
        await opened.wait()
        try:
            yield brokers[0], brokers[1]
        finally:
            done.set()


async def flood(broker: Broker, calls: int, size: int, answers: list[bool]) -> None:
    """Make *calls* calls at once to the peer's root, every third one calling back; record each answer."""
    root = await broker.root_object()

    async def one(i: int) -> None:
        value = [i, b"v" * size]
        answers.append(await root.call_remote("bounce" if i % 3 == 0 else "echo", value) == value)

    async with trio.open_nursery() as nursery:
        for i in range(calls):
            nursery.start_soon(one, i)


# -- both ways at once ----------------------------------------------------------


@pytest.mark.parametrize("transport", ["lockstep", "socket"])
async def test_two_peers_flooding_each_other_with_a_small_send_buffer_answer_every_call(
    transport: str,
) -> None:
    # Each side queues far more than its send buffer of calls to the other,
    # whose methods call back.  Before, both stopped reading once their
    # output passed the buffer, and neither's output could move again.
    calls = 1500
    with trio.fail_after(60):
        async with flooding_pair(transport, send_buffer=SEND_BUFFER, max_running_calls=calls) as (a, b):
            answers_a: list[bool] = []
            answers_b: list[bool] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(flood, a, calls, 200, answers_a)
                nursery.start_soon(flood, b, calls, 200, answers_b)
            assert answers_a == answers_b == [True] * calls
            await assert_no_leaks(a, b)


async def test_queued_bytes_stay_within_the_send_buffer_and_the_slack_while_flooding() -> None:
    # What is queued never passes the buffer by more than one message and the
    # pongs' reserve (docs/internals.rst, "Limits"), however many callers.
    size = 1000
    peaks = [0, 0]
    with trio.fail_after(60):
        async with flooding_pair("socket", send_buffer=SEND_BUFFER, max_running_calls=2000) as (a, b):

            async def watch() -> None:
                while True:
                    for i, broker in enumerate((a, b)):
                        peaks[i] = max(peaks[i], broker.statistics().bytes_queued)
                    await trio.lowlevel.checkpoint()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                answers: list[bool] = []
                async with trio.open_nursery() as flooding:
                    flooding.start_soon(flood, a, 2000, size, answers)
                    flooding.start_soon(flood, b, 2000, size, answers)
                nursery.cancel_scope.cancel()
            assert answers == [True] * 4000
    # Without the bound, 2000 calls of 1 KB each would have been queued at once.
    # (No pings here: the slack is a message or two, not the pongs' reserve.)
    assert 0 < max(peaks) <= SEND_BUFFER + 3 * size


# -- our calls in flight ---------------------------------------------------------


class Gate(trio_pb.Root):
    """Calls that wait until the test lets them go, each by its number."""

    def __init__(self) -> None:
        self.arrived: list[int] = []
        self.gates: dict[int, trio.Event] = {}

    async def remote_wait(self, i: int) -> int:
        self.arrived.append(i)
        await self.gates.setdefault(i, trio.Event()).wait()
        return i

    def remote_now(self) -> str:
        return "now"

    def let_go(self, i: int) -> None:
        self.gates.setdefault(i, trio.Event()).set()


def test_the_defaults_of_flow_control() -> None:
    options = BrokerOptions()
    assert options.max_calls_in_flight == MAX_CALLS_IN_FLIGHT == 1000
    assert options.max_held_calls == MAX_HELD_CALLS == 10_000
    # A peer with our defaults never fills the buffer of calls we hold back.
    assert MAX_CALLS_IN_FLIGHT < MAX_HELD_CALLS
    with pytest.raises(ValueError, match="max_calls_in_flight must be at least 1"):
        BrokerOptions(max_calls_in_flight=0)


async def test_callers_over_the_limit_wait_for_a_slot_in_order_and_a_cancelled_one_takes_none(
    each_transport: str,
) -> None:
    gate = Gate()
    async with open_broker_pair(gate, max_calls_in_flight=3) as (client, server):
        root = await client.root_object()
        results: list[int] = []

        async def call(i: int) -> None:
            results.append(await root.call_remote("wait", i))

        async with trio.open_nursery() as nursery:
            for i in range(1, 4):
                nursery.start_soon(call, i)
                await trio.testing.wait_all_tasks_blocked()
            assert client.statistics().calls_waiting == 3
            assert sorted(gate.arrived) == [1, 2, 3]
            for i in range(4, 8):
                nursery.start_soon(call, i)
                await trio.testing.wait_all_tasks_blocked()
            # Over the limit: nothing more was sent.
            assert client.statistics().calls_waiting == 3
            assert server.statistics().calls_running == 3
            # A cancel scope ends the wait of one queued in the middle.
            with trio.move_on_after(0.01) as scope:
                await root.call_remote("wait", 100)
            assert scope.cancelled_caught
            assert client.statistics().calls_waiting == 3
            for i in (2, 1, 3, 4, 5, 6, 7):
                gate.let_go(i)
                await trio.testing.wait_all_tasks_blocked()
                assert client.statistics().calls_waiting <= 3
        # The queued callers got their slots in the order they came; the
        # cancelled one never took one.
        assert gate.arrived[3:] == [4, 5, 6, 7]
        assert sorted(results) == list(range(1, 8))
        # Every slot is free again.
        async with trio.open_nursery() as nursery:
            for i in range(10, 13):
                nursery.start_soon(call, i)
                gate.let_go(i)
        assert await root.call_remote("now") == "now"
        await assert_no_leaks(client, server)


async def test_a_caller_waiting_for_a_slot_is_cancelled_at_once_by_a_cancelled_scope() -> None:
    gate = Gate()
    async with open_broker_pair(gate, max_calls_in_flight=1) as (client, _server):
        root = await client.root_object()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(root.call_remote, "wait", 1)
            await trio.testing.wait_all_tasks_blocked()
            with trio.CancelScope() as scope:
                scope.cancel()
                await root.call_remote("now")
            assert scope.cancelled_caught
            gate.let_go(1)
        assert await root.call_remote("now") == "now"


async def test_calls_back_from_the_peers_methods_are_not_held_to_the_limit() -> None:
    # Every slot of each side is held by a call whose method calls back: if
    # the calls back waited for a slot, nothing would ever finish.
    with trio.fail_after(30):
        async with flooding_pair("socket", max_calls_in_flight=2) as (a, b):
            answers: list[bool] = []
            async with trio.open_nursery() as nursery:
                for broker in (a, b):
                    root = await broker.root_object()
                    for i in range(6):
                        nursery.start_soon(_check_bounce, root, i, answers)
            assert answers == [True] * 12


async def _check_bounce(root: Any, i: int, answers: list[bool]) -> None:
    answers.append(await root.call_remote("bounce", i) == i)


# -- our callers wait for room in the send buffer -----------------------------------


@attrs.define
class SilentServer:
    """A hand-driven server (pb dialect) that never reads after the handshake, and a client broker of it."""

    stream: trio.abc.Stream
    client: Broker


@asynccontextmanager
async def client_of_a_silent_server(**options: Any) -> AsyncIterator[SilentServer]:
    client_stream, server_stream = trio.testing.lockstep_stream_pair()
    offer = PBProtocol(None, is_client=False, extensions=False).data_to_send()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server_stream.send_all, offer)
        async with open_broker(client_stream, server=False, **options) as client:
            yield SilentServer(server_stream, client)
        nursery.cancel_scope.cancel()


async def _received_calls(stream: trio.abc.Stream, count: int) -> list[Any]:
    """The arguments of the next *count* calls received on *stream* (after the client's handshake)."""
    decoder = banana.Decoder(vocabulary=banana.PB_VOCABULARY)
    calls: list[Any] = []
    while len(calls) < count:
        decoder.receive_data(await stream.receive_some())
        while (expression := decoder.next_expression()) is not NEED_DATA:
            if type(expression) is list and expression[0] == b"message":
                calls.append(expression[5])
    return calls


async def test_callers_wait_for_room_in_the_send_buffer_in_order_and_can_be_cancelled() -> None:
    size = 3000
    async with client_of_a_silent_server(send_buffer=10_000) as peer:
        root = peer.client.remote_for_name(b"root")
        async with trio.open_nursery() as nursery:
            for i in range(12):
                nursery.start_soon(root.call_remote, "store", i, b"s" * size)
                await trio.testing.wait_all_tasks_blocked()
            queued = peer.client.statistics().bytes_queued
            # The buffer and one message at most, not twelve messages.
            assert 10_000 < queued <= 10_000 + size + 100
            with trio.move_on_after(0.01) as scope:
                await root.call_remote("store", 100, b"s" * size)
            assert scope.cancelled_caught
            assert peer.client.statistics().bytes_queued == queued
            calls = await _received_calls(peer.stream, 12)
            nursery.cancel_scope.cancel()
    # In the order the callers came; the cancelled caller sent nothing.
    assert [call[1] for call in calls] == list(range(12))


# -- the peer's calls held back, the rest read on -------------------------------------


@attrs.define
class RawClient:
    """A hand-driven client of a server broker, in the extension dialect, over a stream that never buffers."""

    stream: trio.abc.Stream
    encoder: banana.Encoder
    server: Broker
    nursery: trio.Nursery


ANSWER_SIZE = 20_000


class Producer(trio_pb.Root):
    def remote_big(self) -> bytes:
        return b"x" * ANSWER_SIZE


@asynccontextmanager
async def raw_client_of(root: Any, **options: Any) -> AsyncIterator[RawClient]:
    client_stream, server_stream = trio.testing.lockstep_stream_pair()
    servers: list[Broker] = []
    async with trio.open_nursery() as nursery:

        async def serve() -> None:
            async with open_broker(server_stream, server=True, root=root, **options) as server:
                servers.append(server)
                await server.wait_closed()

        nursery.start_soon(serve)
        await client_stream.receive_some()  # the dialect offer
        await client_stream.send_all(banana.encode(b"trio-pb-1", dialect=b"none"))
        await trio.testing.wait_all_tasks_blocked()
        (server,) = servers
        yield RawClient(client_stream, banana.Encoder(b"trio-pb-1"), server, nursery)
        nursery.cancel_scope.cancel()


def _big_calls(encoder: banana.Encoder, ids: range) -> bytes:
    call = [b"message", 0, b"root", b"big", 1, [b"tuple"], [b"dictionary"]]
    return b"".join(encoder.encode([*call[:1], i, *call[2:]]) for i in ids)


async def _read_commands(stream: trio.abc.Stream, until: Any) -> list[Any]:
    decoder = banana.Decoder(vocabulary=banana.PB_VOCABULARY)
    commands: list[Any] = []
    while not until(commands):
        decoder.receive_data(await stream.receive_some())
        while (expression := decoder.next_expression()) is not NEED_DATA:
            if expression[0] != b"version":
                commands.append(expression[:2])
    return commands


async def test_pings_are_answered_while_the_peers_calls_are_held_back() -> None:
    async with raw_client_of(Producer(), send_buffer=100_000) as peer:
        # 30 calls of 20 KB answers, then a ping, and nothing read yet.
        await peer.stream.send_all(
            _big_calls(peer.encoder, range(1, 31)) + peer.encoder.encode([b"ping", 99])
        )
        await trio.testing.wait_all_tasks_blocked()
        held = peer.server.statistics().calls_held
        assert 0 < held < 30
        commands = await _read_commands(peer.stream, lambda commands: len(commands) == 31)
    # The pong overtook the answers of the calls held back when it came.
    assert commands.index([b"pong", 99]) < 31 - held
    assert [c[1] for c in commands if c[0] == b"answer"] == list(range(1, 31))


async def test_reading_stops_only_when_the_held_calls_reach_their_bound() -> None:
    async with raw_client_of(Producer(), send_buffer=100_000, max_held_calls=20) as peer:
        sent = 0

        async def send() -> None:
            # One call per write: each returns once the server has read it.
            nonlocal sent
            for i in range(1, 201):
                await peer.stream.send_all(_big_calls(peer.encoder, range(i, i + 1)))
                sent += 1

        peer.nursery.start_soon(send)
        await trio.testing.wait_all_tasks_blocked()
        stats = peer.server.statistics()
        assert stats.calls_held == 20
        assert sent < 40  # a few answered, 20 held, one the server could not take in
        assert stats.bytes_queued <= 100_000 + ANSWER_SIZE + 100
        # Once the client reads, everything is answered, in order.
        commands = await _read_commands(peer.stream, lambda commands: len(commands) == 200)
    assert [c[1] for c in commands] == list(range(1, 201))


# -- the same in the sans-IO core --------------------------------------------------


class Objects(trio_pb.Root):
    def __init__(self) -> None:
        self.seen: list[Any] = []

    def remote_thing(self) -> trio_pb.Referenceable:
        return trio_pb.Referenceable()

    def remote_take(self, thing: Any) -> None:
        self.seen.append(thing)

    def remote_five(self) -> int:
        return 5


def test_the_core_holds_calls_back_in_order_while_answers_and_pongs_go_on() -> None:
    client, server = connected_pair(Objects())
    client.set_name_for_local(b"root", Objects())
    # The server calls the client; the answer reaches it while it holds the client's calls.
    asked = server.send_call(b"root", "five", (), {})
    [call] = deliver(server, client)
    client.send_answer(call.request_id, call.method())
    first = client.send_call(b"root", "thing", (), {})
    second = client.send_call(b"root", "thing", (), {})
    ping = client.send_ping()
    server.pause_above = -1  # as if more than the send buffer were queued
    assert deliver(client, server) == [Answer(asked, 5)]
    assert server.holding and server.held_calls == 2
    # The pong went out at once; nothing else did.
    assert deliver(server, client) == [Answer(ping, None)]
    server.pause_above = sys.maxsize
    events = []
    while (event := server.next_event()) is not NEED_DATA:
        events.append(event)
    assert [(type(e), e.request_id) for e in events] == [(IncomingCall, first), (IncomingCall, second)]
    assert not server.holding and server.held_calls == 0


def test_a_release_waits_behind_the_held_call_before_it() -> None:
    client, server = connected_pair(Objects())
    thing = client.send_call(b"root", "thing", (), {})
    [call] = deliver(client, server)
    server.send_answer(call.request_id, call.method())
    [answer] = deliver(server, client)
    assert answer.request_id == thing
    reference = answer.value
    assert server.table_sizes().objects_exported == 1
    # A call that hands the object back, then its release, while the server holds calls.
    client.send_call(b"root", "take", (reference,), {})
    client.send_decref(reference.luid)
    server.pause_above = -1
    assert deliver(client, server) == []
    # The release waits behind the call: the object is still there when it runs.
    assert server.table_sizes().objects_exported == 1
    server.pause_above = sys.maxsize
    call = server.next_event()
    assert isinstance(call, IncomingCall)
    assert server.table_sizes().objects_exported == 1
    call.method(*call.args)
    assert server.next_event() is NEED_DATA
    assert server.table_sizes().objects_exported == 0


def test_a_held_call_cancelled_meanwhile_is_answered_as_cancelled_and_never_returned() -> None:
    client, server = connected_pair(Objects())
    assert server.extended
    kept = client.send_call(b"root", "thing", (), {})
    cancelled = client.send_call(b"root", "thing", (), {})
    client.send_cancel(cancelled)
    server.pause_above = -1
    assert deliver(client, server) == []
    server.pause_above = sys.maxsize
    [event] = deliver(client, server)
    assert isinstance(event, IncomingCall) and event.request_id == kept
    # None of it ran: its answer says it was cancelled.
    [failed] = deliver(server, client)
    assert isinstance(failed, Failed) and failed.request_id == cancelled
    assert isinstance(failed.error, CancelledByCaller)


def test_the_held_calls_have_a_bound_past_which_nothing_is_decoded() -> None:
    client, server = connected_pair(Objects(), max_held_calls=2)
    server.data_to_send()  # the handshake's
    for _ in range(4):
        client.send_call(b"root", "thing", (), {})
    client.send_ping()
    server.pause_above = -1
    server.receive_data(client.data_to_send())
    assert server.next_event() is PAUSED
    assert server.held_calls == 2
    # The ping behind them was not even decoded: nothing to send.
    assert server.data_to_send() == b""
    server.pause_above = sys.maxsize
    events = []
    while (event := server.next_event()) is not NEED_DATA:
        events.append(event)
    assert [type(e) for e in events] == [IncomingCall] * 4
    assert b"pong" in server.data_to_send()


def test_pings_wait_their_turn_past_the_pongs_reserve() -> None:
    client, server = connected_pair(Objects())
    server.data_to_send()  # the handshake's
    client.send_call(b"root", "thing", (), {})
    for _ in range(3):
        client.send_ping()
    server.pause_above = -PONG_RESERVE - 1  # the reserve is used up
    assert deliver(client, server) == []
    assert server.data_to_send() == b""
    server.pause_above = sys.maxsize
    events = []
    while (event := server.next_event()) is not NEED_DATA:
        events.append(event)
    assert [type(e) for e in events] == [IncomingCall]
    decoder = banana.Decoder(vocabulary=banana.PB_VOCABULARY)
    decoder.receive_data(server.data_to_send())
    assert [e[0] for e in decoder] == [b"pong"] * 3


def test_errors_of_calls_that_fail_while_held_wait_in_line() -> None:
    client, server = connected_pair(Objects())
    server.data_to_send()  # the handshake's
    first = client.send_call(b"root", "thing", (), {})
    nowhere = client.send_call(b"nowhere", "thing", (), {})
    server.pause_above = -1
    assert deliver(client, server) == []
    assert server.data_to_send() == b""  # the error is held with the calls
    server.pause_above = sys.maxsize
    event = server.next_event()
    assert isinstance(event, IncomingCall) and event.request_id == first
    server.send_answer(first, None)
    assert server.next_event() is NEED_DATA
    # Answered in the order the calls came, as when nothing is held.
    events = deliver(server, client)
    assert [(type(e), e.request_id) for e in events] == [(Answer, first), (Failed, nowhere)]


# -- a Twisted peer ---------------------------------------------------------------


class TwistedFloodRoot(trio_pb.Root):
    def remote_echo(self, i: int, payload: bytes) -> list[Any]:
        return [i, payload]

    async def remote_twice(self, i: int) -> int:
        await trio.lowlevel.checkpoint()
        return 2 * i


async def test_a_twisted_peer_flooding_a_trio_pb_server_gets_every_answer() -> None:
    calls = 3000
    async with trio.open_nursery() as nursery:
        serve = partial(
            serve_tcp,
            TwistedFloodRoot(),
            0,
            host="127.0.0.1",
            send_buffer=SEND_BUFFER,
            max_held_calls=500,
            max_running_calls=calls,
        )
        listeners = await nursery.start(serve)
        port = listeners[0].socket.getsockname()[1]
        lines = await run_twisted_client("twisted_flood_peer.py", "client", str(calls), "2000", str(port))
        nursery.cancel_scope.cancel()
    assert lines[-1] == f"ANSWERED {calls} 0"
