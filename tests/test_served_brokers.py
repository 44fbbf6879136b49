"""A served connection (serve_tcp's) is read by its handler task and opens a nursery only when needed.

These check that the semantics are those of open_broker all the same:
async methods run (and end with the connection), a message too big for
the socket gets a writer task even when another task sends it, keepalive
closes a silent peer, and disconnection fails the calls in flight.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

import trio_pb
from trio_pb import errors
from trio_pb.protocol import PBProtocol, Ready

#: More than any socket buffer takes at once (in strings of at most banana's default size limit).
CHUNKS = [b"x" * 600_000] * 14
BIG = 14 * 600_000


class Server(trio_pb.Root):
    def __init__(self) -> None:
        self.brokers: list[trio_pb.Broker] = []
        self.minds: list[Any] = []
        self.waiting = trio.Event()
        self.ended = trio.Event()

    def root_object(self, broker: trio_pb.Broker) -> Server:
        self.brokers.append(broker)
        return self

    def remote_add(self, a: int, b: int) -> int:
        return a + b

    def remote_register(self, mind: Any) -> None:
        self.minds.append(mind)

    async def remote_double_later(self, x: int) -> int:
        await trio.sleep(0.01)
        return 2 * x

    async def remote_wait(self) -> None:
        self.waiting.set()
        try:
            await trio.sleep_forever()
        finally:
            self.ended.set()


class Mind(trio_pb.Referenceable):
    def remote_size(self, chunks: list[bytes]) -> int:
        return sum(len(chunk) for chunk in chunks)

    async def remote_never(self) -> None:
        await trio.sleep_forever()


def handler_task(server: Server) -> trio.lowlevel.Task:
    """The task trio's accept loop started for the (one) connection *server* serves."""
    [broker] = server.brokers
    [task] = [task for task in _all_tasks() if broker in _serve_broker_locals(task)]
    return task


def _serve_broker_locals(task: trio.lowlevel.Task) -> list[Any]:
    """The values of the local variables of the serve_broker call *task* is in, if it is in one."""
    coro: Any = task.coro
    while coro is not None and hasattr(coro, "cr_frame"):
        if coro.cr_code.co_name == "serve_broker" and coro.cr_frame is not None:
            return list(coro.cr_frame.f_locals.values())
        coro = coro.cr_await
    return []


def _all_tasks() -> list[trio.lowlevel.Task]:
    tasks, nurseries = [], list(trio.lowlevel.current_root_task().child_nurseries)
    while nurseries:
        for task in nurseries.pop().child_tasks:
            tasks.append(task)
            nurseries += task.child_nurseries
    return tasks


async def call_until_the_end(root: Any, name: str) -> None:
    """Call *name*, whose answer never comes: the call ends with the connection."""
    with pytest.raises(errors.PBConnectionLost):
        await root.call_remote(name)


async def start(nursery: trio.Nursery, root: Any, **options: Any) -> int:
    listeners = await nursery.start(partial(trio_pb.serve_tcp, root, 0, host="127.0.0.1", **options))
    port: int = listeners[0].socket.getsockname()[1]
    return port


async def test_an_async_method_opens_the_nursery_and_ends_with_the_connection() -> None:
    server = Server()
    async with trio.open_nursery() as nursery:
        port = await start(nursery, server)
        async with trio_pb.open_tcp_broker("127.0.0.1", port) as client:
            root = await client.root_object()
            assert await root.call_remote("add", 1, 2) == 3
            await trio.testing.wait_all_tasks_blocked()
            # Plain calls need no task: the handler task has no nursery of its own.
            assert handler_task(server).child_nurseries == []
            assert await root.call_remote("double_later", 21) == 42
            nursery.start_soon(call_until_the_end, root, "wait")
            await server.waiting.wait()
            [broker_nursery] = handler_task(server).child_nurseries
            assert len(broker_nursery.child_tasks) == 1  # the method; no reader task
            assert await root.call_remote("add", 2, 3) == 5
        # The method was cancelled when the connection ended, inside the handler.
        with trio.fail_after(5):
            await server.ended.wait()
            while server.brokers[0].connected:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()


async def test_a_message_too_big_for_the_socket_sent_by_another_task_gets_a_writer() -> None:
    server = Server()
    async with trio.open_nursery() as nursery:
        port = await start(nursery, server)
        async with trio_pb.open_tcp_broker("127.0.0.1", port) as client:
            root = await client.root_object()
            await root.call_remote("register", Mind())
            [mind] = server.minds
            await trio.testing.wait_all_tasks_blocked()
            assert handler_task(server).child_nurseries == []
            # This task is not the one serving the connection, which waits on
            # the socket: it must leave it to start the writer for the rest.
            with trio.fail_after(10):
                assert await mind.call_remote("size", CHUNKS) == BIG
                assert await mind.call_remote("size", [b"y"]) == 1
                await server.brokers[0].drain()
        nursery.cancel_scope.cancel()


async def test_disconnection_fails_a_served_brokers_calls_in_flight() -> None:
    server = Server()
    async with trio.open_nursery() as nursery:
        port = await start(nursery, server)
        async with trio_pb.open_tcp_broker("127.0.0.1", port) as client:
            root = await client.root_object()
            await root.call_remote("register", Mind())
        [mind] = server.minds
        with trio.fail_after(5), pytest.raises(errors.DeadReferenceError):
            await mind.call_remote("never")
        nursery.cancel_scope.cancel()


async def test_disconnection_fails_a_call_in_flight_with_connection_lost() -> None:
    server = Server()
    async with trio.open_nursery() as nursery:
        port = await start(nursery, server)
        outcome: list[BaseException] = []

        async def call_the_client() -> None:
            [mind] = server.minds
            try:
                await mind.call_remote("never")
            except BaseException as exc:
                outcome.append(exc)

        async with trio_pb.open_tcp_broker("127.0.0.1", port) as client:
            root = await client.root_object()
            await root.call_remote("register", Mind())
            nursery.start_soon(call_the_client)
            await trio.testing.wait_all_tasks_blocked()
            assert server.brokers[0].statistics().calls_waiting == 1
        with trio.fail_after(5):
            while not outcome:
                await trio.sleep(0.01)
        assert isinstance(outcome[0], errors.PBConnectionLost)
        nursery.cancel_scope.cancel()


async def test_keepalive_closes_a_served_connection_whose_peer_says_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="trio_pb")
    pb_server, pb_client = PBProtocol(None, is_client=False), PBProtocol(None, is_client=True)
    pb_client.receive_data(pb_server.data_to_send())
    assert isinstance(pb_client.next_event(), Ready)
    reply = pb_client.data_to_send()
    server = Server()
    async with trio.open_nursery() as nursery:
        port = await start(nursery, server, keepalive=0.1)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(reply)  # through the handshake, then silence
            with trio.fail_after(5):
                while await stream.receive_some():
                    pass  # the offer, the pings ... until the server closes
        assert isinstance(server.brokers[0].error, errors.PeerUnresponsive)
        nursery.cancel_scope.cancel()
    assert "no sign of life" in caplog.text
