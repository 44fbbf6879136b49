"""open_reconnecting_broker: one block over a server restarted several times, no call replayed.

Servers are stopped and started again on the same port (or socket path), in
process and once as a real process that is killed; the backoff is timed on
trio's MockClock with seeded jitter.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import socket
import ssl
import sys
import textwrap
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import attrs
import pytest
import trio
import trio.testing
import trustme

import trio_pb
from trio_pb.broker import Broker, open_broker
from trio_pb.cred import InMemoryPasswordChecker, Portal
from trio_pb.errors import DeadReferenceError, PBConnectionLost, UnauthorizedLogin
from trio_pb.flavors import Avatar, Root
from trio_pb.reconnect import (
    Backoff,
    ReconnectingBroker,
    ReconnectStatistics,
    ReconnectWait,
    open_reconnecting,
    open_reconnecting_broker,
    open_reconnecting_unix_broker,
)

FAST = Backoff(initial_delay=0.01, max_delay=0.05)


class Service(Root):
    """Counts every call it runs, by method, across all its connections."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.slow_started = trio.Event()
        self.brokers: list[Any] = []

    def root_object(self, broker: Any) -> Service:
        self.brokers.append(broker)
        return self

    def remote_add(self, a: int, b: int) -> int:
        self.calls["add"] += 1
        return a + b

    def remote_note(self, value: object) -> None:
        self.calls["note"] += 1

    async def remote_slow(self) -> None:
        self.calls["slow"] += 1
        self.slow_started.set()
        await trio.sleep_forever()


class Server:
    """A server that can be stopped and started again on the same port (or path)."""

    def __init__(self, nursery: trio.Nursery, root: Any, serve: Callable[..., Any]) -> None:
        self.nursery = nursery
        self.root = root
        self.serve = serve
        self.scope: trio.CancelScope | None = None
        self.starts = 0

    async def start(self) -> list[trio.SocketListener]:
        async def run(task_status: trio.TaskStatus[list[trio.SocketListener]]) -> None:
            with trio.CancelScope() as self.scope:
                await self.serve(self.root, task_status=task_status)

        self.starts += 1
        listeners: list[trio.SocketListener] = await self.nursery.start(run)
        return listeners

    def stop(self) -> None:
        assert self.scope is not None
        self.scope.cancel()


async def start_tcp(nursery: trio.Nursery, root: Any, **options: Any) -> tuple[Server, int]:
    """A server on a free loopback port, started; returns it and the port."""
    port = 0

    async def serve(root: Any, *, task_status: Any) -> None:
        await trio_pb.serve_tcp(root, port, host="127.0.0.1", task_status=task_status, **options)

    server = Server(nursery, root, serve)
    listeners = await server.start()
    port = listeners[0].socket.getsockname()[1]
    return server, port


async def wait_for(predicate: Callable[[], bool], timeout: float = 10) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.005)


async def next_connection(connections: AsyncIterator[Broker]) -> Broker:
    with trio.fail_after(10):
        return await connections.__anext__()


# -- calls before, during and after restarts ---------------------------------------------


async def test_calls_before_during_and_after_restarts_are_never_replayed() -> None:
    service = Service()
    async with trio.open_nursery() as nursery:
        server, port = await start_tcp(nursery, service)
        async with open_reconnecting_broker("127.0.0.1", port, backoff=FAST) as conn:
            connections = conn.connections()
            seen = [await next_connection(connections)]
            assert await conn.root.call_remote("add", 1, 2) == 3  # before
            for restart in range(1, 4):
                service.slow_started = trio.Event()

                async def stop_when_slow_runs() -> None:
                    await service.slow_started.wait()
                    server.stop()

                nursery.start_soon(stop_when_slow_runs)
                with trio.fail_after(10), pytest.raises(PBConnectionLost):
                    await conn.root.call_remote("slow")  # during: outstanding when it drops
                await server.start()
                assert await conn.root.call_remote("add", restart, 10) == restart + 10  # after
                seen.append(await next_connection(connections))
            stats = conn.statistics()
        # Each slow call ran exactly once: the lost ones were not sent again.
        assert service.calls == {"add": 4, "slow": 3}
        assert stats.connections == 4 and stats.connected
        # One connection per server start, each yielded once, in order.
        assert len(set(map(id, seen))) == 4
        assert [broker.connected for broker in seen] == [False] * 4
        nursery.cancel_scope.cancel()


async def test_a_call_made_while_disconnected_waits_for_the_next_connection() -> None:
    service = Service()
    async with trio.open_nursery() as nursery:
        server, port = await start_tcp(nursery, service)
        async with open_reconnecting_broker("127.0.0.1", port, backoff=FAST) as conn:
            assert await conn.root.call_remote("add", 1, 1) == 2
            server.stop()
            await wait_for(lambda: not conn.connected)
            answers: list[int] = []

            async def call() -> None:
                answers.append(await conn.root.callRemote("add", 2, 3))

            nursery.start_soon(call)
            # Reconnecting goes on meanwhile (each attempt refused), and the call waits.
            await wait_for(lambda: conn.statistics().failures >= 3)
            assert answers == [] and service.calls["add"] == 1
            assert isinstance(conn.statistics().last_error, ConnectionRefusedError)
            # A cancel scope gives up on it as on any trio call.
            with trio.move_on_after(0.05) as scope:
                await conn.root.call_remote("add", 0, 0)
            assert scope.cancelled_caught
            await server.start()
            await wait_for(lambda: answers == [5])
        assert service.calls["add"] == 2
        nursery.cancel_scope.cancel()


async def test_wait_for_connection_false_fails_fast_while_disconnected() -> None:
    service = Service()
    async with trio.open_nursery() as nursery:
        server, port = await start_tcp(nursery, service)
        server.stop()
        async with open_reconnecting_broker(
            "127.0.0.1", port, backoff=FAST, wait_for_connection=False
        ) as conn:
            with pytest.raises(DeadReferenceError, match="not connected"):
                await conn.root.call_remote("add", 1, 2)
            with pytest.raises(DeadReferenceError):
                conn.root.call_remote_no_answer("note", 1)
            await server.start()
            await wait_for(lambda: conn.connected)
            assert await conn.root.call_remote("add", 1, 2) == 3
        nursery.cancel_scope.cancel()


async def test_no_answer_calls_go_to_the_connection_that_is_up() -> None:
    service = Service()
    async with trio.open_nursery() as nursery:
        _, port = await start_tcp(nursery, service)
        async with open_reconnecting_broker("127.0.0.1", port, backoff=FAST) as conn:
            # Nothing is up yet: a call that cannot wait fails at once.
            with pytest.raises(DeadReferenceError):
                conn.root.call_remote_no_answer("note", 0)
            await next_connection(conn.connections())
            conn.root.call_remote_no_answer("note", 1)
            assert await conn.root.callRemote("note", 2, pbanswer=False) is None
            await wait_for(lambda: service.calls["note"] == 2)
            assert await conn.root.callRemote("add", 1, 2, pbanswer=True) == 3
        nursery.cancel_scope.cancel()


async def test_calls_checkpoint() -> None:
    service = Service()
    async with trio.open_nursery() as nursery:
        _, port = await start_tcp(nursery, service)
        async with open_reconnecting_broker("127.0.0.1", port, backoff=FAST) as conn:
            connections = conn.connections()
            await next_connection(connections)
            with trio.testing.assert_checkpoints():
                await conn.root.call_remote("add", 1, 2)
            with trio.testing.assert_checkpoints():
                await conn.root.callRemote("note", 1, pbanswer=False)
            with trio.testing.assert_checkpoints():
                with trio.move_on_after(0.01):
                    await connections.__anext__()  # none new: waits
        nursery.cancel_scope.cancel()


async def test_a_forgotten_await_is_named_after_the_call() -> None:
    async with open_reconnecting_broker("127.0.0.1", 1, backoff=FAST) as conn:
        call = conn.root.call_remote("add", 1, 2)
        assert call.__qualname__ == "ReconnectingReference.call_remote('add')"
        call.close()  # never awaited: nothing was sent
        call = conn.root.callRemote("note", 1, pbanswer=False)
        assert call.__qualname__ == "ReconnectingReference.callRemote('note')"
        call.close()


# -- connections() ----------------------------------------------------------------------


async def test_a_slow_consumer_of_connections_does_not_hold_up_reconnecting() -> None:
    service = Service()
    async with trio.open_nursery() as nursery:
        server, port = await start_tcp(nursery, service)
        async with open_reconnecting_broker("127.0.0.1", port, backoff=FAST) as conn:
            connections = conn.connections()
            first = await next_connection(connections)
            # Two restarts while this consumer does not ask: both reconnect.
            for expected in (2, 3):
                server.stop()
                await wait_for(lambda: not conn.connected)
                await server.start()
                await wait_for(lambda: conn.statistics().connections == expected)  # noqa: B023
            # The second connection came and went: it is skipped, the third is yielded.
            third = await next_connection(connections)
            assert third is conn.broker and third is not first and third.connected
            # An iterator started now yields the connection that is up.
            assert await next_connection(conn.connections()) is third
        # Leaving the block ends every iteration.
        assert [broker async for broker in connections] == []
        nursery.cancel_scope.cancel()


async def test_connections_are_yielded_to_each_iterator_for_resubscribing() -> None:
    service = Service()
    async with trio.open_nursery() as nursery:
        server, port = await start_tcp(nursery, service)
        async with open_reconnecting_broker("127.0.0.1", port, backoff=FAST) as conn:
            subscribed: list[tuple[str, Broker]] = []

            async def subscriber(name: str, task_status: trio.TaskStatus[None]) -> None:
                connections = conn.connections()
                task_status.started()
                async for broker in connections:
                    root = await broker.root_object()  # this connection's, not the next one's
                    await root.call_remote("note", name)
                    subscribed.append((name, broker))

            await nursery.start(subscriber, "a")
            await nursery.start(subscriber, "b")
            await wait_for(lambda: len(subscribed) == 2)
            server.stop()
            await wait_for(lambda: not conn.connected)
            await server.start()
            await wait_for(lambda: len(subscribed) == 4)
            brokers = [broker for _, broker in subscribed]
            assert brokers[0] is brokers[1] and brokers[2] is brokers[3] and brokers[0] is not brokers[2]
            assert sorted(name for name, _ in subscribed) == ["a", "a", "b", "b"]
        assert service.calls["note"] == 4
        nursery.cancel_scope.cancel()


# -- backoff, on a mock clock -----------------------------------------------------------------


class Ceiling(random.Random):
    """Jitter that always draws the highest wait, to read the ceilings themselves."""

    def uniform(self, a: float, b: float) -> float:
        return b


class Flaky:
    """A connector whose attempts fail, or connect to an in-memory server and stay up, as the test says.

    Records the (mock) time of each attempt.
    """

    def __init__(self, nursery: trio.Nursery, plan: list[float | None]) -> None:
        # None: the attempt is refused; a number: it connects and the server drops it after that many seconds.
        self.nursery = nursery
        self.plan = plan
        self.times: list[float] = []

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[Broker]:
        self.times.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        step = self.plan.pop(0) if self.plan else None
        if step is None:
            raise ConnectionRefusedError(111, "Connection refused")
        client_stream, server_stream = trio.testing.memory_stream_pair()

        async def serve() -> None:
            async with open_broker(server_stream, server=True, root=Service()):
                await trio.sleep(step)

        self.nursery.start_soon(serve)
        async with open_broker(client_stream, server=False) as broker:
            yield broker


# Seconds of mock time a test on the mock clock may take (its waits add up to minutes).
MOCK_TIMEOUT = 10_000.0


def delays(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(times)]


@pytest.mark.parametrize("autojump_clock", [0], indirect=True)
async def test_backoff_grows_to_its_cap_with_seeded_full_jitter(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        flaky = Flaky(nursery, [None] * 8)
        backoff = Backoff(initial_delay=1.0, factor=2.0, max_delay=10.0, rng=random.Random(1234))
        async with open_reconnecting(flaky.connect, backoff=backoff) as conn:
            await wait_for(lambda: len(flaky.times) == 9, MOCK_TIMEOUT)
            assert conn.statistics().attempts == 9
        ceilings = [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0, 10.0]
        replay = random.Random(1234)
        expected = [replay.uniform(0.0, ceiling) for ceiling in ceilings]
        assert delays(flaky.times) == pytest.approx(expected)
        assert all(0 <= d <= c for d, c in zip(delays(flaky.times), ceilings, strict=True))
        # The first attempt is made at once.
        assert flaky.times[0] == pytest.approx(0.0, abs=1e-9)

        flaky = Flaky(nursery, [None] * 6)
        async with open_reconnecting(flaky.connect, backoff=attrs.evolve(backoff, rng=Ceiling())):
            await wait_for(lambda: len(flaky.times) == 7, MOCK_TIMEOUT)
        assert delays(flaky.times) == pytest.approx([1.0, 2.0, 4.0, 8.0, 10.0, 10.0])


@pytest.mark.parametrize("autojump_clock", [0], indirect=True)
async def test_backoff_starts_again_once_a_connection_stayed_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        # Refused twice; up 30 s (longer than reset_after); refused; up 1 s (shorter); refused.
        flaky = Flaky(nursery, [None, None, 30.0, None, 1.0, None, None])
        backoff = Backoff(initial_delay=1.0, factor=3.0, max_delay=100.0, reset_after=10.0, rng=Ceiling())
        async with open_reconnecting(flaky.connect, backoff=backoff) as conn:
            await wait_for(lambda: len(flaky.times) == 8, MOCK_TIMEOUT)
            assert conn.statistics().connections == 2
        waits = delays(flaky.times)
        # 1, 3 (refused twice), then 30 s up + 1 (the count started again), 3 (refused);
        # then 1 s up + 9 (that short connection counted as a failure), 27 (refused).
        assert waits == pytest.approx([1.0, 3.0, 30.0 + 1.0, 3.0, 1.0 + 9.0, 27.0, 81.0])


@pytest.mark.parametrize("autojump_clock", [0], indirect=True)
async def test_max_attempts_ends_the_block_with_the_last_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        flaky = Flaky(nursery, [None] * 10)
        conn: ReconnectingBroker | None = None
        with pytest.raises(ConnectionRefusedError):
            async with open_reconnecting(flaky.connect, max_attempts=3, backoff=FAST) as conn:
                await trio.sleep_forever()
        assert len(flaky.times) == 3
        assert conn is not None and conn.statistics().attempts == 3


@pytest.mark.parametrize("autojump_clock", [0], indirect=True)
async def test_an_attempt_that_hangs_times_out_and_is_retried(autojump_clock: trio.testing.MockClock) -> None:
    attempts: list[float] = []

    @asynccontextmanager
    async def hang() -> AsyncIterator[Broker]:
        attempts.append(trio.current_time())
        await trio.sleep_forever()
        yield cast(Broker, None)

    backoff = Backoff(initial_delay=1.0, max_delay=1.0, rng=Ceiling())
    async with open_reconnecting(hang, connect_timeout=5.0, backoff=backoff) as conn:
        await wait_for(lambda: len(attempts) == 3, MOCK_TIMEOUT)
        assert isinstance(conn.statistics().last_error, trio.TooSlowError)
    assert delays(attempts) == pytest.approx([6.0, 6.0])


@pytest.mark.parametrize("autojump_clock", [0], indirect=True)
async def test_each_wait_is_yielded_as_it_begins_with_its_delay_and_reason(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        # Refused twice, up 30 s (the loss starts the count again), refused, up.
        flaky = Flaky(nursery, [None, None, 30.0, None, 1000.0])
        backoff = Backoff(initial_delay=1.0, factor=2.0, max_delay=100.0, reset_after=10.0, rng=Ceiling())
        seen: list[tuple[ReconnectWait, ReconnectStatistics]] = []
        async with open_reconnecting(flaky.connect, backoff=backoff) as conn:
            waits = conn.waits()

            async def consume() -> None:
                async for wait in waits:
                    seen.append((wait, conn.statistics()))

            nursery.start_soon(consume)
            await wait_for(lambda: conn.statistics().connections == 2, MOCK_TIMEOUT)
            assert conn.statistics().next_attempt_at is None  # connected: no attempt planned
        assert [wait async for wait in waits] == []  # the block is left: the iteration ends
    assert [(w.delay, w.failures, w.connections, w.after_loss) for w, _ in seen] == [
        (1.0, 1, 0, False),
        (2.0, 2, 0, False),
        (1.0, 0, 1, True),
        (2.0, 1, 1, False),  # the loss counted as the first failure in a row, this refusal the second
    ]
    assert all(isinstance(w.error, ConnectionRefusedError) for w, _ in seen if not w.after_loss)
    assert seen[2][0].error is None
    # Each wait ends when the next attempt starts; meanwhile the statistics say when that is.
    attempts_after = flaky.times[1:]
    assert [w.next_attempt_at for w, _ in seen] == pytest.approx(attempts_after)
    assert [stats.next_attempt_at for _, stats in seen] == pytest.approx(attempts_after)
    assert all(not stats.connected for _, stats in seen)


@pytest.mark.parametrize("autojump_clock", [0], indirect=True)
async def test_a_consumer_of_waits_gets_the_one_in_progress_and_skips_those_over(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        flaky = Flaky(nursery, [None] * 10)
        backoff = Backoff(initial_delay=1.0, factor=2.0, max_delay=100.0, rng=Ceiling())
        async with open_reconnecting(flaky.connect, backoff=backoff) as conn:
            await wait_for(lambda: len(flaky.times) == 4, MOCK_TIMEOUT)  # three waits over, the fourth begun
            waits = conn.waits()
            wait = await waits.__anext__()
            assert (wait.failures, wait.delay) == (4, 8.0)
            assert wait.next_attempt_at == conn.statistics().next_attempt_at
            # The next one is the one after it, not the same one again.
            later = await waits.__anext__()
            assert (later.failures, later.delay) == (5, 16.0)
            assert later.next_attempt_at == pytest.approx(wait.next_attempt_at + 16.0)


def test_backoff_validates_its_settings() -> None:
    with pytest.raises(ValueError, match="factor"):
        Backoff(factor=0.5)
    with pytest.raises(ValueError, match="max_delay"):
        Backoff(initial_delay=5.0, max_delay=1.0)
    with pytest.raises(ValueError, match="initial_delay"):
        Backoff(initial_delay=-1.0)
    assert Backoff(initial_delay=1.0, factor=10.0, max_delay=60.0).ceiling(10_000) == 60.0


async def test_options_are_checked_at_once() -> None:
    with pytest.raises(TypeError, match="unknown broker option 'keep_alive'"):
        open_reconnecting_broker("127.0.0.1", 1, keep_alive=5)
    with pytest.raises(TypeError, match="unknown broker option"):
        open_reconnecting_unix_broker("/nonexistent", bogus=1)
    with pytest.raises(ValueError, match="max_attempts"):
        async with open_reconnecting_broker("127.0.0.1", 1, max_attempts=0):
            pass


# -- leaving the block -------------------------------------------------------------------


async def test_leaving_the_block_closes_the_connection_and_stops_reconnecting() -> None:
    service = Service()
    async with trio.open_nursery() as nursery:
        server, port = await start_tcp(nursery, service)
        waiting: list[BaseException] = []
        async with open_reconnecting_broker("127.0.0.1", port, backoff=FAST) as conn:
            broker = await next_connection(conn.connections())
            assert conn.broker is broker and conn.connected

            async def call_from_elsewhere() -> None:
                try:
                    await conn.root.call_remote("add", 1, 2)
                except DeadReferenceError as exc:
                    waiting.append(exc)

        # Closed: the connection too, on both sides.
        assert not broker.connected and not conn.connected and conn.broker is None
        await wait_for(lambda: not service.brokers[-1].connected)
        # A call made afterwards, from a task outside the block, fails and does not wait.
        with trio.fail_after(5):
            await call_from_elsewhere()
        assert len(waiting) == 1
        # Nothing reconnects any more.
        attempts = conn.statistics().attempts
        await trio.sleep(0.1)
        assert conn.statistics().attempts == attempts == 1
        assert len(service.brokers) == 1
        nursery.cancel_scope.cancel()


async def test_a_call_waiting_for_a_connection_fails_when_the_block_is_left() -> None:
    async with trio.open_nursery() as nursery:
        service = Service()
        server, port = await start_tcp(nursery, service)
        server.stop()
        errors: list[BaseException] = []
        started = trio.Event()
        async with open_reconnecting_broker("127.0.0.1", port, backoff=FAST) as conn:

            async def wait_and_call() -> None:
                started.set()
                try:
                    await conn.root.call_remote("add", 1, 2)
                except DeadReferenceError as exc:
                    errors.append(exc)

            nursery.start_soon(wait_and_call)
            await started.wait()
            await wait_for(lambda: conn.statistics().attempts >= 2)
        await wait_for(lambda: len(errors) == 1)
        assert "closed" in str(errors[0])
        nursery.cancel_scope.cancel()


async def test_an_error_in_the_block_comes_out_as_itself() -> None:
    service = Service()
    async with trio.open_nursery() as nursery:
        _, port = await start_tcp(nursery, service)
        with pytest.raises(KeyError):
            async with open_reconnecting_broker("127.0.0.1", port, backoff=FAST):
                raise KeyError("mine")
        nursery.cancel_scope.cancel()


# -- login -------------------------------------------------------------------------------


class User(Avatar):
    def __init__(self, name: str) -> None:
        self.name = name

    def perspective_whoami(self) -> str:
        return self.name


class Realm:
    def __init__(self) -> None:
        self.logins = 0
        self.logouts = 0

    def request_avatar(self, avatar_id: bytes, mind: Any) -> tuple[User, Callable[[], None]]:
        self.logins += 1

        def logout() -> None:
            self.logouts += 1

        return User(avatar_id.decode()), logout


def portal(realm: Realm) -> Portal:
    return Portal(realm, [InMemoryPasswordChecker(alice="wonderland")])


async def test_each_connection_logs_in_again_and_perspective_is_the_avatar() -> None:
    realm = Realm()
    credentials = trio_pb.UsernamePassword("alice", "wonderland")
    async with trio.open_nursery() as nursery:
        server, port = await start_tcp(nursery, portal(realm))
        async with open_reconnecting_broker("127.0.0.1", port, credentials=credentials, backoff=FAST) as conn:
            connections = conn.connections()
            first = await next_connection(connections)
            assert await conn.perspective.call_remote("whoami") == "alice"
            assert await conn.perspective_of(first).call_remote("whoami") == "alice"
            server.stop()
            await wait_for(lambda: realm.logouts == 1)
            await server.start()
            second = await next_connection(connections)
            assert realm.logins == 2
            assert await conn.perspective.callRemote("whoami") == "alice"
            with pytest.raises(DeadReferenceError):
                conn.perspective_of(first)
            assert conn.perspective_of(second) is not None
        await wait_for(lambda: realm.logouts == 2)
        nursery.cancel_scope.cancel()


async def test_perspective_needs_credentials() -> None:
    service = Service()
    async with trio.open_nursery() as nursery:
        _, port = await start_tcp(nursery, service)
        async with open_reconnecting_broker("127.0.0.1", port, backoff=FAST) as conn:
            broker = await next_connection(conn.connections())
            with pytest.raises(RuntimeError, match="credentials"):
                conn.perspective  # noqa: B018
            with pytest.raises(RuntimeError, match="credentials"):
                conn.perspective_of(broker)
        nursery.cancel_scope.cancel()


async def test_a_wrong_password_ends_the_block_and_is_not_retried() -> None:
    realm = Realm()
    wrong = trio_pb.UsernamePassword("alice", "rabbit")
    async with trio.open_nursery() as nursery:
        _, port = await start_tcp(nursery, portal(realm))
        conn: ReconnectingBroker | None = None
        with trio.fail_after(10), pytest.raises(UnauthorizedLogin):
            async with open_reconnecting_broker("127.0.0.1", port, credentials=wrong, backoff=FAST) as conn:
                await conn.perspective.call_remote("whoami")
        assert conn is not None and conn.statistics().attempts == 1
        # Unless the application asks for it, with a bound.
        with trio.fail_after(10), pytest.raises(UnauthorizedLogin):
            async with open_reconnecting_broker(
                "127.0.0.1", port, credentials=wrong, backoff=FAST, fatal_errors=(), max_attempts=3
            ) as conn:
                await trio.sleep_forever()
        assert conn.statistics().attempts == 3
        assert realm.logins == 0
        nursery.cancel_scope.cancel()


# -- transports ---------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no unix sockets on this platform")
async def test_unix_socket_server_restarted(tmp_path: Path) -> None:
    path = tmp_path / "pb.sock"
    service = Service()
    async with trio.open_nursery() as nursery:

        async def serve(root: Any, *, task_status: Any) -> None:
            await trio_pb.serve_unix(root, path, task_status=task_status)

        server = Server(nursery, service, serve)
        async with open_reconnecting_unix_broker(path, backoff=FAST) as conn:
            # The socket does not exist yet: FileNotFoundError is retried.
            await wait_for(lambda: conn.statistics().failures >= 2)
            assert isinstance(conn.statistics().last_error, FileNotFoundError)
            await server.start()
            for n in range(3):
                assert await conn.root.call_remote("add", n, 1) == n + 1
                server.stop()
                await wait_for(lambda: not path.exists() and not conn.connected)
                await server.start()
            assert await conn.root.call_remote("add", 1, 1) == 2
            assert conn.statistics().connections == 4
        nursery.cancel_scope.cancel()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def test_tls_server_restarted(ca: trustme.CA) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    service = Service()
    async with trio.open_nursery() as nursery:
        server, port = await start_tcp(nursery, service, ssl_context=server_context)
        async with open_reconnecting_broker(
            "127.0.0.1", port, ssl_context=client_context, server_hostname="localhost", backoff=FAST
        ) as conn:
            for n in range(3):
                assert await conn.root.call_remote("add", n, 2) == n + 2
                broker = conn.broker
                assert broker is not None and isinstance(broker._stream, trio.SSLStream)
                server.stop()
                await wait_for(lambda: not conn.connected)
                await server.start()
            assert await conn.root.call_remote("add", 1, 1) == 2
        # A certificate that is refused would be refused again: it ends the block.
        stranger = ssl.create_default_context()
        trustme.CA().configure_trust(stranger)
        with trio.fail_after(10), pytest.raises(ssl.SSLCertVerificationError):
            async with open_reconnecting_broker(
                "127.0.0.1", port, ssl_context=stranger, backoff=FAST
            ) as conn:
                await conn.root.call_remote("add", 1, 1)
        assert conn.statistics().attempts == 1
        nursery.cancel_scope.cancel()


# -- a real server process, killed and started again ---------------------------------------

SERVER_PROCESS = textwrap.dedent(
    """
    import os, sys
    import trio, trio_pb

    class Service(trio_pb.Root):
        def remote_pid(self):
            return os.getpid()

        def remote_record(self, token):
            with open(sys.argv[2], "a") as log:
                log.write(token + "\\n")
            return token

        async def remote_record_and_hang(self, token):
            self.remote_record(token)
            await trio.sleep_forever()

    async def main():
        async def ready(task_status=trio.TASK_STATUS_IGNORED):
            await trio_pb.serve_tcp(Service(), int(sys.argv[1]), host="127.0.0.1", task_status=task_status)

        async with trio.open_nursery() as nursery:
            await nursery.start(ready)
            print("ready", flush=True)

    trio.run(main)
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_a_killed_server_process_restarted(tmp_path: Path) -> None:
    port = free_port()
    record = tmp_path / "calls.txt"
    record.touch()
    env = {**os.environ, "PYTHONPATH": str(Path(trio_pb.__file__).parent.parent)}

    async def start_process() -> trio.Process:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-c", SERVER_PROCESS, str(port), str(record)], stdout=-1, env=env
        )
        assert process.stdout is not None
        with trio.fail_after(30):
            assert (await process.stdout.receive_some(100)).startswith(b"ready")
        return process

    async def kill(process: trio.Process) -> None:
        if process.returncode is None:
            process.kill()
        await process.wait()
        assert process.stdout is not None
        await process.stdout.aclose()

    process = await start_process()
    try:
        async with open_reconnecting_broker("127.0.0.1", port, backoff=FAST) as conn:
            pids = []
            for n in range(3):
                pids.append(await conn.root.call_remote("pid"))
                assert await conn.root.call_remote("record", f"before-{n}") == f"before-{n}"

                async def kill_when_recorded(token: str) -> None:
                    await wait_for(lambda: token in record.read_text())
                    await kill(process)  # noqa: B023

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(kill_when_recorded, f"during-{n}")
                    with trio.fail_after(30), pytest.raises(PBConnectionLost):
                        await conn.root.call_remote("record_and_hang", f"during-{n}")
                process = await start_process()
                assert await conn.root.call_remote("record", f"after-{n}") == f"after-{n}"
            pids.append(await conn.root.call_remote("pid"))
        assert len(set(pids)) == 4  # four processes served the calls
        lines = record.read_text().split()
        # Every call ran once, in order: none was replayed on the next process.
        expected = []
        for n in range(3):
            expected += [f"before-{n}", f"during-{n}", f"after-{n}"]
        assert lines == expected
    finally:
        await kill(process)


async def test_lost_connections_and_failed_attempts_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    service = Service()
    async with trio.open_nursery() as nursery:
        server, port = await start_tcp(nursery, service)
        with caplog.at_level(logging.INFO, logger="trio_pb"):
            async with open_reconnecting_broker("127.0.0.1", port, backoff=FAST) as conn:
                await conn.root.call_remote("add", 1, 1)
                server.stop()
                await wait_for(lambda: conn.statistics().failures >= 3)
        messages = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "trio_pb"]
        assert (logging.WARNING, f"connection to 127.0.0.1:{port} lost") in messages
        failed = [(level, text) for level, text in messages if text.startswith("connecting to")]
        # The first failure in a row is a warning, the next ones are informative.
        assert failed[0][0] == logging.WARNING and "ConnectionRefusedError" in failed[0][1]
        assert {level for level, _ in failed[1:]} == {logging.INFO}
        nursery.cancel_scope.cancel()
