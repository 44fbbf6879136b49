"""Broker.statistics(): what a connection holds, followed through a conversation."""

from __future__ import annotations

import gc
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import trio_pb
from trio_pb.banana import NEED_DATA
from trio_pb.broker import Broker, open_broker
from trio_pb.cache import Cacheable, RemoteCache
from trio_pb.flavors import Referenceable, Root
from trio_pb.jelly import CopyRegistry
from trio_pb.options import BrokerStatistics
from trio_pb.protocol import PBProtocol, Ready
from trio_pb.testing import assert_no_leaks, open_broker_pair

# Every test runs over memory streams and over real sockets (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("each_transport")


class Counter(Cacheable):
    def __init__(self) -> None:
        self.value = 0


class RemoteCounter(RemoteCache):
    def observe_set(self, value: int) -> None:
        self.value = value


class Thing(Referenceable):
    pass


class Service(Root):
    def __init__(self) -> None:
        self.counter = Counter()
        self.thing = Thing()
        self.gate = trio.Event()
        self.started = 0

    async def remote_wait(self) -> str:
        self.started += 1
        await self.gate.wait()
        return "done"

    def remote_thing(self) -> Thing:
        return self.thing

    def remote_things(self) -> list[Thing]:
        return [self.thing, Thing()]

    def remote_counter(self) -> Counter:
        return self.counter


def registry() -> CopyRegistry:
    reg = CopyRegistry()
    reg.register(Counter, RemoteCounter)
    return reg


async def settle() -> None:
    gc.collect()
    for _ in range(5):
        await trio.testing.wait_all_tasks_blocked()


def counts(broker: Broker) -> dict[str, Any]:
    """The statistics that count things (all but the ping time and the bytes)."""
    stats = attrs.asdict(broker.statistics())
    del stats["last_ping_rtt"], stats["bytes_queued"], stats["connected"]
    return stats


def nothing_held() -> dict[str, int]:
    names = [field.name for field in attrs.fields(BrokerStatistics)]
    return {name: 0 for name in names if name not in ("last_ping_rtt", "bytes_queued", "connected")}


async def test_a_fresh_connection_holds_nothing() -> None:
    async with open_broker_pair(Service()) as (client, server):
        for broker in (client, server):
            stats = broker.statistics()
            assert isinstance(stats, trio_pb.BrokerStatistics)
            assert counts(broker) == nothing_held()
            assert stats.connected
            assert stats.last_ping_rtt is None
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            stats.connected = False  # type: ignore[misc]
    assert not client.statistics().connected
    assert not server.statistics().connected


async def test_calls_in_flight_both_ways() -> None:
    service = Service()
    async with open_broker_pair(service) as (client, server), trio.open_nursery() as nursery:
        root = await client.root_object()
        for _ in range(3):
            nursery.start_soon(root.call_remote, "wait")
        while service.started < 3:
            await trio.testing.wait_all_tasks_blocked()
        assert client.statistics().calls_waiting == 3
        assert client.statistics().calls_running == 0
        assert server.statistics().calls_running == 3
        assert server.statistics().calls_waiting == 0
        service.gate.set()
        await settle()
        assert counts(client) == counts(server) == nothing_held()


async def test_abandoned_calls_count_until_their_answers_come() -> None:
    # Without the extensions a cancelled call goes on running on the peer,
    # and its answer is still due.
    service = Service()
    async with open_broker_pair(service, extensions=False) as (client, server):
        root = await client.root_object()
        with trio.move_on_after(0.01):
            await root.call_remote("wait")
        await settle()
        assert client.statistics().calls_waiting == 0
        assert client.statistics().calls_abandoned == 1
        assert server.statistics().calls_running == 1
        service.gate.set()
        await settle()
        assert client.statistics().calls_abandoned == 0
        assert server.statistics().calls_running == 0


async def test_references_given_and_released() -> None:
    async with open_broker_pair(Service()) as (client, server):
        root = await client.root_object()
        assert client.statistics().references_imported == 0  # the root is not counted
        first = await root.call_remote("thing")
        both = await root.call_remote("things")
        stats = server.statistics()
        assert (stats.objects_exported, stats.export_references) == (2, 3)
        assert client.statistics().references_imported == 3
        await first.release()
        await settle()
        stats = server.statistics()
        assert (stats.objects_exported, stats.export_references) == (2, 2)
        assert client.statistics().references_imported == 2
        # Dropped without release(): the garbage collector's decref counts too.
        del first, both
        await settle()
        assert client.statistics().references_imported == 0
        assert (server.statistics().objects_exported, server.statistics().export_references) == (0, 0)
        await assert_no_leaks(client, server)


async def test_caches_and_update_listeners_given_and_released() -> None:
    service = Service()
    async with open_broker_pair(service, registry=registry()) as (client, server):
        root = await client.root_object()
        counter = await root.call_remote("counter")
        again = await root.call_remote("counter")
        assert server.statistics().caches_exported == 1  # one Cacheable, two copies
        assert client.statistics().caches_imported == 1
        assert client.statistics().cache_listeners == 0
        updates = counter.updates()
        also = again.updates()
        assert client.statistics().cache_listeners == 2
        assert server.statistics().caches_imported == client.statistics().caches_exported == 0
        await counter.release()
        await settle()
        assert server.statistics().caches_exported == 1  # a copy still held
        await again.release()
        await settle()
        assert server.statistics().caches_exported == 0
        assert client.statistics().caches_imported == 0
        assert client.statistics().cache_listeners == 0
        del updates, also
        await assert_no_leaks(client, server)


async def test_ping_round_trip_time() -> None:
    async with open_broker_pair(Service()) as (client, server):
        assert client.statistics().last_ping_rtt is None
        rtt = await client.ping()
        assert client.statistics().last_ping_rtt == rtt
        assert rtt >= 0
        assert server.statistics().last_ping_rtt is None  # answering is not pinging


async def test_assert_no_leaks_sees_a_held_reference() -> None:
    async with open_broker_pair(Service()) as (client, server):
        root = await client.root_object()
        thing = await root.call_remote("thing")
        with pytest.raises(AssertionError, match="references"):
            await assert_no_leaks(client)
        with pytest.raises(AssertionError, match="references"):
            await assert_no_leaks(server)
        await thing.release()
        await assert_no_leaks(client, server)


async def test_bytes_queued_behind_a_slow_reader() -> None:
    # A hand-driven peer on a real socket that stops reading after the handshake.
    ours, theirs = trio.socket.socketpair()
    peer_stream = trio.SocketStream(theirs)
    peer = PBProtocol(None, is_client=True)

    async def handshake() -> None:
        while True:
            peer.receive_data(await peer_stream.receive_some(65536))
            if isinstance(peer.next_event(), Ready):
                break
        await peer_stream.send_all(peer.data_to_send())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(handshake)
        async with open_broker(trio.SocketStream(ours), server=True) as server:
            assert server.statistics().bytes_queued == 0
            target = server.remote_for_name("anything")
            sent = 0
            while sent < 8 * 1024 * 1024:
                target.call_remote_no_answer("page", b"x" * 65536)
                sent += 65536
            await trio.testing.wait_all_tasks_blocked()
            queued = server.statistics().bytes_queued
            assert 0 < queued < sent + 65536  # the socket's buffers took the rest

            async def read_all() -> None:
                while True:
                    data = await peer_stream.receive_some(1 << 20)
                    if not data:
                        return
                    peer.receive_data(data)
                    while peer.next_event() is not NEED_DATA:
                        pass

            nursery.start_soon(read_all)
            with trio.fail_after(10):
                await server.drain()
            assert server.statistics().bytes_queued == 0
