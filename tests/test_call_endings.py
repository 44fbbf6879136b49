"""How a call ends for its caller: cancelled, answered late, or answered twice.

A cancelled caller sees :class:`trio.Cancelled`, even when the peer's
"cancelled by caller" answer is already in hand as its cancellation takes
effect.  Late answers to calls nobody waits for any more are dropped without
a warning, however many there are; an answer to a call that was answered
already is reported, as the peer's violation of the protocol.
"""

from __future__ import annotations

import logging
import select
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import pytest
import trio
import trio.testing

from trio_pb import errors, protocol
from trio_pb.banana import NEED_DATA
from trio_pb.broker import Broker, open_broker
from trio_pb.conduct import MAX_VIOLATIONS, TooManyViolations
from trio_pb.flavors import Root
from trio_pb.protocol import IncomingCall, PBProtocol
from trio_pb.testing import assert_no_leaks, open_broker_pair


class Sleeper(Root):
    """A server whose methods take their time."""

    def __init__(self) -> None:
        self.gate = trio.Event()
        self.waiting = 0

    def remote_add(self, a: int, b: int = 0) -> int:
        return a + b

    async def remote_sleep(self) -> None:
        await trio.sleep_forever()

    async def remote_wait(self, value: int) -> int:
        self.waiting += 1
        await self.gate.wait()
        return value


class Interrupter(Root):
    """A client whose plain method, called by the peer right after an answer, interrupts the caller.

    Whatever the peer sends in one piece is handled in one go, plain
    methods included, before the task waiting for the answer runs: this is
    how a test makes something happen between an answer's arrival and its
    caller seeing it.
    """

    def __init__(self) -> None:
        self.clock: trio.testing.MockClock | None = None
        self.scope: trio.CancelScope | None = None
        #: The task that ran the last method: the reader task, or a caller reading for itself.
        self.ran_in: trio.lowlevel.Task | None = None

    def remote_hold_up(self, seconds: float) -> None:
        # The loop is held up (by this very method, say) while time passes.
        self.ran_in = trio.lowlevel.current_task()
        assert self.clock is not None
        self.clock.jump(seconds)

    def remote_cancel_the_caller(self) -> None:
        self.ran_in = trio.lowlevel.current_task()
        assert self.scope is not None
        self.scope.cancel()


class ScriptedServer:
    """The server end of a connection, played by the test with trio_pb's own sans-IO protocol.

    It sends exactly what a trio_pb server would, but when the test says so.
    """

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.protocol = PBProtocol(None, is_client=False)
        self.protocol.set_name_for_local(b"root", Sleeper())

    async def send(self) -> None:
        """Send, in one piece, everything queued since the last send."""
        await self.stream.send_all(self.protocol.data_to_send())

    async def next_call(self) -> IncomingCall:
        """The next call the client makes (after the handshake, which happens on the way)."""
        while True:
            event = self.protocol.next_event()
            if isinstance(event, IncomingCall):
                return event
            if event is NEED_DATA:
                await self.send()
                data = await self.stream.receive_some()
                assert data, "the client closed the connection"
                self.protocol.receive_data(data)


@asynccontextmanager
async def scripted_pair(
    client_root: Any, transport: Literal["memory", "socket"]
) -> AsyncIterator[tuple[Broker, ScriptedServer]]:
    """A client broker connected to a :class:`ScriptedServer` (extension dialect on)."""
    client_stream: trio.abc.Stream
    server_stream: trio.abc.Stream
    if transport == "memory":
        client_stream, server_stream = trio.testing.memory_stream_pair()
    else:
        client_socket, server_socket = trio.socket.socketpair()
        client_stream, server_stream = trio.SocketStream(client_socket), trio.SocketStream(server_socket)
    peer = ScriptedServer(server_stream)
    await peer.send()  # the offer: the client's handshake is over once it has it
    async with open_broker(client_stream, server=False, root=client_root) as client:
        yield client, peer


async def answer_next_call(peer: ScriptedServer, value: Any) -> None:
    call = await peer.next_call()
    peer.protocol.send_answer(call.request_id, value)
    await peer.send()


async def warm_root(client: Broker) -> Any:
    """The peer's root, after one call (answered 0): on a socket, the next caller reads its own answer.

    Provided that the call comes next, with no checkpoint in between (which
    would let the reader task go back to the socket).
    """
    root = await client.root_object()
    assert await root.call_remote("add", 0) == 0
    return root


# -- A caller whose scope was cancelled sees trio.Cancelled -----------------------------------


async def test_a_deadline_that_passes_as_the_answer_arrives_is_a_cancellation(
    each_transport: Literal["memory", "socket"], mock_clock: trio.testing.MockClock
) -> None:
    # The server's deadline (the caller's, carried over) passed: it answers
    # "cancelled by caller".  Here, the loop runs late, and the caller's own
    # deadline passes while that answer is already read.
    client_root = Interrupter()
    client_root.clock = mock_clock
    async with scripted_pair(client_root, each_transport) as (client, peer):

        async def cancelled_at_the_deadline() -> None:
            await answer_next_call(peer, 0)
            call = await peer.next_call()
            assert call.time_left == 10
            peer.protocol.send_error(
                call.request_id, errors.CancelledByCaller("the caller's deadline passed")
            )
            peer.protocol.send_call(b"root", "hold_up", (10,), {}, answer_required=False)
            await peer.send()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancelled_at_the_deadline)
            root = await warm_root(client)
            with trio.move_on_after(10) as scope:
                await root.call_remote("sleep")
        assert scope.cancelled_caught
        # On a socket the caller read the answer itself; in memory the reader task did.
        assert (client_root.ran_in is trio.lowlevel.current_task()) == (each_transport == "socket")
        assert client.statistics().calls_waiting == client.statistics().calls_abandoned == 0
        # The connection goes on.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(answer_next_call, peer, 5)
            assert await root.call_remote("add", 5) == 5


async def test_a_scope_cancelled_as_the_answer_arrives_is_a_cancellation(
    each_transport: Literal["memory", "socket"],
) -> None:
    client_root = Interrupter()
    async with scripted_pair(client_root, each_transport) as (client, peer):

        async def cancelled_as_the_scope_is() -> None:
            await answer_next_call(peer, 0)
            call = await peer.next_call()
            # The server's clock ran ahead: it saw the caller's deadline pass
            # and says so, while the caller cancels its scope.
            peer.protocol.send_error(
                call.request_id, errors.CancelledByCaller("the caller's deadline passed")
            )
            peer.protocol.send_call(b"root", "cancel_the_caller", (), {}, answer_required=False)
            await peer.send()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancelled_as_the_scope_is)
            root = await warm_root(client)
            with trio.move_on_after(60) as scope:
                client_root.scope = scope
                await root.call_remote("sleep")
        assert scope.cancelled_caught
        assert (client_root.ran_in is trio.lowlevel.current_task()) == (each_transport == "socket")
        assert client.statistics().calls_waiting == client.statistics().calls_abandoned == 0


async def test_a_deadline_that_passes_while_the_answer_travels_between_two_loops_is_a_cancellation() -> None:
    # The real thing: the server runs in a trio run of its own (as in another
    # process), the caller's deadline travels to it, and its async method is
    # cancelled there.  The caller's loop is held up (as a busy process's
    # would be) until that answer has arrived, so that it sees the answer and
    # its own deadline pass in the same turn.  (In one trio run this cannot
    # happen: the server's deadline, carried over, never expires before the
    # caller's, and the caller, still waiting then, is interrupted at once.)
    client_socket, server_socket = socket.socketpair()
    server_root = Sleeper()

    def serve() -> None:
        async def main() -> None:
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(server_socket))
            async with open_broker(stream, server=True, root=server_root) as server:
                await server.wait_closed()

        trio.run(main)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, serve)
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(client_socket))
        async with open_broker(stream, server=False) as client:
            root = await client.root_object()
            assert await root.call_remote("add", 1) == 1  # now the caller reads for itself

            async def hold_up_the_loop() -> None:
                await trio.testing.wait_all_tasks_blocked()
                assert client._reading.leading  # the caller is the one reading
                # Blocking on purpose: nothing in this run moves meanwhile.
                readable, _, _ = select.select([client_socket], [], [], 10)
                assert readable, "the server did not answer"

            with trio.move_on_after(0.2) as scope:
                nursery.start_soon(hold_up_the_loop)
                await root.call_remote("sleep")
            assert scope.cancelled_caught
            assert client.statistics().calls_waiting == client.statistics().calls_abandoned == 0
            assert await root.call_remote("add", 2) == 2


async def test_cancelled_by_caller_reaches_a_caller_still_waiting_as_itself(
    each_transport: str, autojump_clock: trio.testing.MockClock
) -> None:
    # A caller that moved its deadline later after making the call: the
    # server still stops at the deadline it was told, and the caller, still
    # waiting, learns why.
    async with open_broker_pair(Sleeper()) as (client, server):
        root = await client.root_object()
        with trio.move_on_after(1) as scope:
            async with trio.open_nursery() as nursery:

                async def postpone() -> None:
                    await trio.testing.wait_all_tasks_blocked()
                    scope.deadline += 10

                nursery.start_soon(postpone)
                with pytest.raises(errors.CancelledByCaller, match="deadline passed"):
                    await root.call_remote("sleep")
        assert not scope.cancelled_caught
        await assert_no_leaks(client, server)


# -- Late answers are dropped quietly, repeated answers reported -----------------------------


async def cancel_calls(root: Any, count: int) -> None:
    """Make *count* calls to ``wait`` and stop waiting for each at once."""
    for value in range(count):
        with trio.CancelScope() as scope:
            scope.cancel()
            await root.call_remote("wait", value)


async def until_answered(client: Broker) -> None:
    with trio.fail_after(60):
        while client.statistics().calls_abandoned:
            await trio.sleep(0.01)
    await trio.testing.wait_all_tasks_blocked()


async def test_late_answers_to_many_cancelled_calls_raise_no_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Without the extension dialect (as with a Twisted server) nothing tells
    # the server: it answers every call, long after the caller gave up.
    # (Over memory streams only, to save time: which task reads does not
    # matter here, and the next test covers both transports.)
    server_root = Sleeper()
    count = protocol.MAX_ABANDONED + 5_000
    # All of them run at once on the server, past the default limit on running calls.
    async with open_broker_pair(server_root, extensions=False, max_running_calls=count) as (client, server):
        root = await client.root_object()
        await cancel_calls(root, count)
        with trio.fail_after(60):
            while server_root.waiting < count:
                await trio.sleep(0.01)
        assert client.statistics().calls_abandoned <= protocol.MAX_ABANDONED
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="trio_pb"):
            server_root.gate.set()
            await until_answered(client)
        warnings = [record for record in caplog.records if record.levelno >= logging.WARNING]
        assert not warnings, [record.getMessage() for record in warnings]
        assert client._protocol.conduct.violations == 0
        assert client.connected
        await assert_no_leaks(client, server)


async def test_a_peer_that_never_answers_cancelled_calls_is_given_up_on(
    each_transport: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(protocol, "MAX_ABANDONED", 5)
    server_root = Sleeper()
    async with open_broker_pair(server_root, extensions=False) as (client, server):
        root = await client.root_object()
        with caplog.at_level(logging.DEBUG, logger="trio_pb"):
            await cancel_calls(root, 8)
            # Memory stays bounded: the oldest calls are given up, and that is said once.
            assert client.statistics().calls_abandoned == 5
            given_up = [r for r in caplog.records if "given up" in r.getMessage()]
            assert [r.levelno for r in given_up] == [logging.WARNING]
            assert client.peer in given_up[0].getMessage()
            caplog.clear()
            # Should the answers come after all, none is taken for a repeated one.
            server_root.gate.set()
            await until_answered(client)
        late = [r for r in caplog.records if "given up" in r.getMessage()]
        assert len(late) == 3
        assert all(r.levelno == logging.DEBUG for r in caplog.records)
        assert client._protocol.conduct.violations == 0
        # A repeated answer to a call of after that is still found out.
        await answer_twice(root, server)
        assert client._protocol.conduct.count("answered twice") == 1


async def answer_twice(root: Any, server: Broker) -> int:
    """Make a call, then have the server answer it a second time; return its request id."""
    assert await root.call_remote("add", 1) == 1
    request_id: int = root.broker._protocol._next_request_id - 1
    # send_answer refuses a second answer: the broken peer's message is queued by hand.
    server._protocol._send([b"answer", request_id, 1])
    server._flush()
    await trio.testing.wait_all_tasks_blocked()
    return request_id


async def test_an_answer_to_a_call_answered_already_is_a_violation(
    each_transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_broker_pair(Sleeper()) as (client, server):
        root = await client.root_object()
        request_id = await answer_twice(root, server)
        assert client._protocol.conduct.count("answered twice") == 1
        assert client._protocol.conduct.violations == 1
        (record,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert f"request {request_id}" in record.getMessage()
        assert client.peer in record.getMessage()
        # One violation is not the end of the connection.
        assert await root.call_remote("add", 2) == 2


async def test_a_peer_that_keeps_answering_twice_is_disconnected(each_transport: str) -> None:
    async with open_broker_pair(Sleeper()) as (client, server):
        root = await client.root_object()
        assert await root.call_remote("add", 1) == 1
        request_id = client._protocol._next_request_id - 1
        for _ in range(MAX_VIOLATIONS + 1):
            # send_answer refuses a second answer: the broken peer's message is queued by hand.
            server._protocol._send([b"answer", request_id, 1])
        server._flush()
        with trio.fail_after(5):
            await client.wait_closed()
        assert isinstance(client.error, TooManyViolations)
