"""Helpers for testing code that uses trio_pb: a connected broker pair, and a leak check."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import trio
import trio.testing

from ._groups import plain_errors
from .broker import Broker, open_broker
from .options import BrokerOptions

__all__ = ["assert_no_leaks", "open_broker_pair"]


@asynccontextmanager
async def open_broker_pair(
    root: Any = None,
    *,
    client_root: Any = None,
    transport: Literal["memory", "socket"] = "memory",
    **options: Any,
) -> AsyncIterator[tuple[Broker, Broker]]:
    """A client broker and a server broker connected to each other.

    *root* is the server's root object, *client_root* the client's; other
    keyword arguments are broker options for both
    (:class:`~trio_pb.options.BrokerOptions`; an unknown one raises
    :class:`TypeError` at once).
    *transport* ``"memory"`` connects them with in-memory streams;
    ``"socket"`` with a connected pair of real sockets, which takes the
    brokers' socket-only code paths.  Yields ``(client, server)``.
    """
    settings = BrokerOptions.build("open_broker_pair", options)
    client_stream: trio.abc.Stream
    server_stream: trio.abc.Stream
    if transport == "memory":
        client_stream, server_stream = trio.testing.memory_stream_pair()
    elif transport == "socket":
        client_socket, server_socket = trio.socket.socketpair()
        client_stream, server_stream = trio.SocketStream(client_socket), trio.SocketStream(server_socket)
    else:
        raise ValueError(f"unknown transport {transport!r}: use 'memory' or 'socket'")
    with plain_errors():
        async with trio.open_nursery() as nursery:
            server_ready, server_get = trio.open_memory_channel[Broker](1)
            done = trio.Event()

            async def serve() -> None:
                async with open_broker(server_stream, server=True, root=root, options=settings) as server:
                    await server_ready.send(server)
                    await done.wait()

            nursery.start_soon(serve)
            async with open_broker(client_stream, server=False, root=client_root, options=settings) as client:
                server = await server_get.receive()
                try:
                    yield client, server
                finally:
                    done.set()


async def assert_no_leaks(*brokers: Broker) -> None:
    """Assert that the brokers hold no references, cached copies, pending calls or running calls.

    Collects garbage first and lets queued decrefs reach the peer, so that
    references dropped without ``release()`` count as released.  What is
    checked is :meth:`Broker.statistics() <trio_pb.broker.Broker.statistics>`.
    """
    gc.collect()
    for _ in range(5):
        await trio.testing.wait_all_tasks_blocked()
    for broker in brokers:
        stats = broker.statistics()
        assert not stats.objects_exported, (
            f"the peer still holds {stats.export_references} references to {stats.objects_exported} objects"
        )
        assert not stats.references_imported, (
            f"{stats.references_imported} references to the peer's objects are not released"
        )
        assert not stats.caches_exported, f"the peer still holds copies of {stats.caches_exported} Cacheables"
        assert not stats.caches_imported, f"copies of {stats.caches_imported} of the peer's objects kept"
        assert not stats.calls_waiting, f"{stats.calls_waiting} calls still waiting for answers"
        assert not stats.calls_running, f"{stats.calls_running} of the peer's calls still running"
