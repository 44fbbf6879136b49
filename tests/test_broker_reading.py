"""Who reads a broker's socket: the reader task, or a caller waiting for its own answer.

On a socket, a caller whose call is the only one outstanding reads the answer
itself while the reader task stands by (see ``trio_pb._reading``).  These tests
check that this path is taken and that it behaves like the reader task in
everything else: calls from the peer served in order and in the broker's
context, cancellation, lost connections, protocol errors, and the reader
taking over again whenever no caller is reading.
"""

from __future__ import annotations

import contextvars
import logging
import random
import sys
from typing import Any

import pytest
import trio
import trio.testing

from trio_pb import errors
from trio_pb.broker import Broker
from trio_pb.flavors import Root
from trio_pb.testing import assert_no_leaks, open_broker_pair

request_name: contextvars.ContextVar[str] = contextvars.ContextVar("request_name", default="unset")


class ClientRoot(Root):
    """What the server calls back on the client."""

    def __init__(self) -> None:
        self.seen: list[tuple[trio.lowlevel.Task, str]] = []
        self.pinged = trio.Event()
        self.doubled_by: list[trio.lowlevel.Task] = []
        self.exception_seen: BaseException | None = None

    def remote_where(self) -> str:
        self.seen.append((trio.lowlevel.current_task(), request_name.get()))
        return "here"

    async def remote_where_async(self) -> str:
        await trio.lowlevel.checkpoint()
        return request_name.get()

    def remote_ping(self) -> None:
        self.pinged.set()

    def remote_double(self, value: int) -> int:
        self.doubled_by.append(trio.lowlevel.current_task())
        return 2 * value

    def remote_fail(self) -> None:
        self.exception_seen = sys.exc_info()[1]
        raise ValueError("the method failed")


class ServerRoot(Root):
    def __init__(self) -> None:
        self.broker: Broker | None = None
        self.release = trio.Event()
        self.hanging = trio.Event()
        self.random = random.Random(3)

    async def client_root(self) -> Any:
        assert self.broker is not None
        return await self.broker.root_object()

    async def remote_call_back(self, method: str) -> Any:
        client = await self.client_root()
        return await client.call_remote(method)

    async def remote_traceback_of(self, method: str) -> str:
        client = await self.client_root()
        with pytest.raises(errors.RemoteError) as info:
            await client.call_remote(method)
        return str(info.value.remote_traceback)

    async def remote_hang(self) -> None:
        self.hanging.set()
        await self.release.wait()

    async def remote_later(self, value: int) -> int:
        for _ in range(self.random.randrange(3)):
            await trio.lowlevel.checkpoint()
        if value % 5 == 0:
            # Now and then a call back in the middle, answered by whoever reads.
            client = await self.client_root()
            value = await client.call_remote("double", value) // 2
        return value

    def remote_add(self, a: int, b: int) -> int:
        return a + b


async def server_broker(server_root: ServerRoot, server: Broker) -> None:
    server_root.broker = server
    await trio.testing.wait_all_tasks_blocked()


async def warm_root(client: Broker) -> Any:
    """The server's root, after one call: the reader task now stands by for the next caller."""
    root = await client.root_object()
    assert await root.call_remote("add", 0, 0) == 0
    return root


async def until_reading(client: Broker, server_root: ServerRoot) -> None:
    """Wait until ``hang`` runs on the server, and check that its caller is the one reading."""
    await server_root.hanging.wait()
    await trio.testing.wait_all_tasks_blocked()
    assert client._reading.leading


async def hang_while(client: Broker, root: Any, server_root: ServerRoot, action: Any) -> None:
    """Call ``hang`` in this task; once it reads, run *action*, which must fail the call."""

    async def act() -> None:
        await until_reading(client, server_root)
        await action()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(act)
            with pytest.raises(errors.PBConnectionLost):
                await root.call_remote("hang")


async def hang_then_cancel(client: Broker, root: Any, server_root: ServerRoot) -> None:
    """Call ``hang`` in this task, and cancel it once this task is reading."""
    server_root.hanging = trio.Event()

    async def cancel_when_reading() -> None:
        await until_reading(client, server_root)
        scope.cancel()

    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as scope:
            nursery.start_soon(cancel_when_reading)
            await root.call_remote("hang")
    assert scope.cancelled_caught


async def test_a_lone_caller_reads_its_own_answer() -> None:
    client_root, server_root = ClientRoot(), ServerRoot()
    async with open_broker_pair(server_root, client_root=client_root, transport="socket") as (client, server):
        await server_broker(server_root, server)
        root = await client.root_object()
        # The first call of a sequence is read by the reader task, which then
        # stands by: from the next one on, the caller reads.
        for _ in range(3):
            assert await root.call_remote("call_back", "where") == "here"
        readers = [task for task, _ in client_root.seen]
        # The server's call back arrived while this task waited: this task ran it.
        assert readers[0] is not trio.lowlevel.current_task()
        assert readers[1:] == [trio.lowlevel.current_task()] * 2
        await assert_no_leaks(client, server)


@pytest.mark.parametrize("transport", ["memory", "socket"])
async def test_incoming_calls_run_in_the_brokers_context(transport: Any) -> None:
    client_root, server_root = ClientRoot(), ServerRoot()
    pair = open_broker_pair(server_root, client_root=client_root, transport=transport)
    async with pair as (client, server):
        await server_broker(server_root, server)
        root = await warm_root(client)
        request_name.set("the caller's")
        # Whoever reads, the peer's calls do not see the caller's context variables.
        assert await root.call_remote("call_back", "where") == "here"
        assert await root.call_remote("call_back", "where_async") == "unset"
        ((task, name),) = client_root.seen
        assert name == "unset"
        # On a socket, this task read (and so ran the plain method); in memory, the reader did.
        assert (task is trio.lowlevel.current_task()) == (transport == "socket")


@pytest.mark.parametrize("transport", ["memory", "socket"])
async def test_the_callers_exception_does_not_reach_the_peers_calls(transport: Any) -> None:
    client_root, server_root = ClientRoot(), ServerRoot()
    pair = open_broker_pair(server_root, client_root=client_root, transport=transport, unsafe_tracebacks=True)
    async with pair as (client, server):
        await server_broker(server_root, server)
        root = await warm_root(client)
        try:
            raise KeyError("the caller's secret")
        except KeyError:
            # From an except block, so the caller does not read: the peer's plain
            # method must not run with this exception as its context.
            traceback = await root.call_remote("traceback_of", "fail")
        assert "the method failed" in traceback
        assert "the caller's secret" not in traceback
        assert client_root.exception_seen is None
        # Out of the except block, this task reads again.
        assert await root.call_remote("call_back", "where") == "here"
        assert (client_root.seen[-1][0] is trio.lowlevel.current_task()) == (transport == "socket")


async def test_disconnect_callbacks_run_in_the_brokers_context() -> None:
    server_root = ServerRoot()
    seen: list[str] = []
    async with open_broker_pair(server_root, transport="socket") as (client, server):
        await server_broker(server_root, server)
        client.notify_on_disconnect(lambda: seen.append(request_name.get()))
        root = await warm_root(client)
        request_name.set("the caller's")
        # Garbage from the server, read by this task: the connection ends here.
        await hang_while(client, root, server_root, lambda: server._stream.send_all(b"\x01\xff"))
    assert seen == ["unset"]


async def test_a_cancelled_reading_caller_hands_the_socket_back() -> None:
    client_root, server_root = ClientRoot(), ServerRoot()
    async with open_broker_pair(server_root, client_root=client_root, transport="socket") as (client, server):
        await server_broker(server_root, server)
        root = await warm_root(client)
        with trio.fail_after(5):
            await hang_then_cancel(client, root, server_root)
        # Nobody calls now: the reader task must be back on the socket to see this.
        (await server_root.client_root()).call_remote_no_answer("ping")
        with trio.fail_after(5):
            await client_root.pinged.wait()
        assert await root.call_remote("add", 2, 3) == 5
        server_root.release.set()
        await assert_no_leaks(client, server)


async def test_the_reader_serves_the_peer_once_the_caller_has_its_answer() -> None:
    client_root, server_root = ClientRoot(), ServerRoot()
    async with open_broker_pair(server_root, client_root=client_root, transport="socket") as (client, server):
        await server_broker(server_root, server)
        root = await client.root_object()
        for value in range(5):
            # The second of two calls in a row is read by this task (the first
            # makes the reader stand by)...
            for _ in range(2):
                assert await root.call_remote("call_back", "where") == "here"
            # ... and once it has its answer, the reader is back on the socket.
            with trio.fail_after(5):
                assert await (await server_root.client_root()).call_remote("double", value) == 2 * value
        assert [task for task, _ in client_root.seen] == [
            client._reading.reader,
            trio.lowlevel.current_task(),
        ] * 5
        assert client_root.doubled_by == [client._reading.reader] * 5
        await assert_no_leaks(client, server)


async def test_one_reading_caller_and_many_waiting_ones() -> None:
    client_root, server_root = ClientRoot(), ServerRoot()
    async with open_broker_pair(server_root, client_root=client_root, transport="socket") as (client, server):
        await server_broker(server_root, server)
        root = await warm_root(client)
        results: dict[int, list[int]] = {}

        async def caller(n: int) -> None:
            results[n] = [await root.call_remote("later", n * 100 + i) for i in range(30)]

        async def callers_while_one_reads() -> None:
            await until_reading(client, server_root)
            async with trio.open_nursery() as nursery:
                for n in range(8):
                    nursery.start_soon(caller, n)
            server_root.release.set()

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(callers_while_one_reads)
                # This task reads for everyone until hang answers, after all the others.
                await root.call_remote("hang")
        assert results == {n: [n * 100 + i for i in range(30)] for n in range(8)}
        # So it ran every plain method the server called meanwhile.
        assert client_root.doubled_by == [trio.lowlevel.current_task()] * 48
        await assert_no_leaks(client, server)


async def test_closing_the_broker_wakes_a_reading_caller() -> None:
    server_root = ServerRoot()
    async with open_broker_pair(server_root, transport="socket") as (client, server):
        await server_broker(server_root, server)
        root = await warm_root(client)

        await hang_while(client, root, server_root, client.aclose)
        server_root.release.set()


async def test_a_connection_lost_elsewhere_wakes_a_reading_caller() -> None:
    # As when the writer task finds the stream broken: nothing closed the
    # socket, nothing arrives on it, and still the reading caller must not hang.
    server_root = ServerRoot()
    async with open_broker_pair(server_root, transport="socket") as (client, server):
        await server_broker(server_root, server)
        root = await warm_root(client)

        async def lose() -> None:
            client._connection_lost()

        await hang_while(client, root, server_root, lose)
        server_root.release.set()


async def test_the_peer_leaving_fails_a_reading_caller() -> None:
    server_root = ServerRoot()
    async with open_broker_pair(server_root, transport="socket") as (client, server):
        await server_broker(server_root, server)
        root = await warm_root(client)

        await hang_while(client, root, server_root, lambda: trio.aclose_forcefully(server._stream))
        with trio.fail_after(5):
            await client.wait_closed()
        assert client.error is None


async def test_garbage_read_by_a_caller_closes_the_connection(caplog: pytest.LogCaptureFixture) -> None:
    server_root = ServerRoot()
    async with open_broker_pair(server_root, transport="socket") as (client, server):
        await server_broker(server_root, server)
        root = await warm_root(client)

        # 0xff is no banana type.
        await hang_while(client, root, server_root, lambda: server._stream.send_all(b"\x01\xff"))
        with trio.fail_after(5):
            await client.wait_closed()
        assert isinstance(client.error, errors.BananaError)
    assert "broke the protocol" in caplog.text


async def test_an_unexpected_error_met_by_a_reading_caller_ends_the_broker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A bug in handling incoming data is not the caller's: like one in the
    # reader task, it comes out of open_broker.  The caller's call fails.
    server_root = ServerRoot()
    failures: list[BaseException] = []
    with pytest.raises(RuntimeError, match="a bug"):
        async with open_broker_pair(server_root, transport="socket") as (client, server):
            await server_broker(server_root, server)
            root = await warm_root(client)

            settle = Broker._settle

            def broken(broker: Broker, event: Any) -> None:
                if broker is client:
                    raise RuntimeError("a bug")
                settle(broker, event)

            # On the class: a Broker has __slots__.
            monkeypatch.setattr(Broker, "_settle", broken)
            with trio.fail_after(5):
                try:
                    await root.call_remote("add", 1, 2)
                except errors.PBConnectionLost as exc:
                    failures.append(exc)
                await trio.sleep_forever()
    assert len(failures) == 1


class Interrupt(BaseException):
    pass


class InterruptingClient(Root):
    def remote_interrupt(self) -> None:
        raise Interrupt("from a plain method")


class InterruptingServer(ServerRoot):
    def remote_interrupt_and_answer(self) -> str:
        # The call and this answer reach the client in one read.
        assert self.broker is not None
        self.broker.remote_for_name(b"root").call_remote_no_answer("interrupt")
        return "answered"


async def test_a_base_exception_met_by_a_reading_caller_ends_the_broker() -> None:
    # Not the caller's exception: like in the reader task, it comes out of
    # open_broker, and every call fails, instead of surfacing in the caller.
    server_root = InterruptingServer()
    outcomes: list[object] = []
    with pytest.raises(Interrupt):
        async with open_broker_pair(
            server_root, client_root=InterruptingClient(), transport="socket", extensions=False
        ) as (client, server):
            await server_broker(server_root, server)
            root = await warm_root(client)
            with trio.fail_after(5):
                try:
                    await root.call_remote("interrupt_and_answer")
                except errors.PBConnectionLost as exc:
                    outcomes.append(exc)
                await trio.sleep_forever()
    assert len(outcomes) == 1


async def test_no_error_is_logged_for_a_cancelled_reading_caller(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_pb")
    server_root = ServerRoot()
    async with open_broker_pair(server_root, transport="socket") as (client, server):
        await server_broker(server_root, server)
        root = await warm_root(client)
        for _ in range(3):
            # Each call is read by its caller: the one before it made the reader stand by.
            assert await root.call_remote("add", 0, 0) == 0
            await hang_then_cancel(client, root, server_root)
        server_root.release.set()
        assert await root.call_remote("add", 1, 1) == 2
        await assert_no_leaks(client, server)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
