"""serve_tcp / open_tcp_broker, unix sockets and TLS over real loopback sockets."""

from __future__ import annotations

import errno
import logging
import socket
import ssl
import struct
import sys
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme

from trio_pb import errors
from trio_pb.connect import _plain_connect_error, open_tcp_broker, open_unix_broker, serve_tcp, serve_unix
from trio_pb.flavors import Root
from trio_pb.testing import assert_no_leaks

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup


class Server(Root):
    def __init__(self) -> None:
        self.brokers: list[Any] = []
        self.slow_started = trio.Event()
        self.slow_cancelled = False

    def root_object(self, broker: Any) -> Server:
        self.brokers.append(broker)
        return self

    def remote_add(self, a: int, b: int = 0) -> int:
        return a + b

    async def remote_slow(self) -> None:
        self.slow_started.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            self.slow_cancelled = True
            raise


def port_of(listeners: list[trio.SocketListener]) -> int:
    port: int = listeners[0].socket.getsockname()[1]
    return port


async def start_server(nursery: trio.Nursery, root: Any, **options: Any) -> int:
    listeners = await nursery.start(partial(serve_tcp, root, 0, host="127.0.0.1", **options))
    return port_of(listeners)


async def wait_for(predicate: Callable[[], bool]) -> None:
    with trio.fail_after(5):
        while not predicate():
            await trio.sleep(0.01)


def closed_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_tcp_round_trip_and_many_clients() -> None:
    root = Server()
    async with trio.open_nursery() as nursery:
        port = await start_server(nursery, root)

        async def client(n: int) -> None:
            async with open_tcp_broker("127.0.0.1", port) as broker:
                remote = await broker.root_object()
                assert await remote.call_remote("add", n, b=1) == n + 1
                await assert_no_leaks(broker)

        async with trio.open_nursery() as clients:
            for n in range(5):
                clients.start_soon(client, n)
        assert len(root.brokers) == 5
        # An error in the block comes out as itself.
        with pytest.raises(KeyError):
            async with open_tcp_broker("127.0.0.1", port):
                raise KeyError("plain")
        # The server notices each client leaving.
        await wait_for(lambda: len(root.brokers) == 6 and not any(b.connected for b in root.brokers))
        nursery.cancel_scope.cancel()


async def test_connection_refused_raises_quickly_and_plainly() -> None:
    port = closed_port()
    with trio.fail_after(5), pytest.raises(ConnectionRefusedError):
        async with open_tcp_broker("127.0.0.1", port):
            pytest.fail("connected to a closed port")


def test_connect_errors_from_several_addresses_are_merged_when_they_agree() -> None:
    refused = [ConnectionRefusedError(111, f"Error connecting to {a}: refused") for a in ("::1", "127.0.0.1")]
    trio_error = OSError("all attempts to connect to localhost:1 failed")
    trio_error.__cause__ = ExceptionGroup("all attempts", refused)
    plain = _plain_connect_error(trio_error)
    assert type(plain) is ConnectionRefusedError
    assert plain.errno == 111
    assert "localhost:1" in str(plain)
    mixed = OSError("all attempts to connect to localhost:1 failed")
    mixed.__cause__ = ExceptionGroup("all attempts", [refused[0], TimeoutError(110, "timed out")])
    assert _plain_connect_error(mixed) is mixed


async def test_closing_the_server_fails_outstanding_calls() -> None:
    root = Server()
    failures: list[BaseException] = []
    async with trio.open_nursery() as outer:
        server_scope = trio.CancelScope()

        async def run_server(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
            with server_scope:
                async with trio.open_nursery() as nursery:
                    task_status.started(await start_server(nursery, root))

        port = await outer.start(run_server)
        async with open_tcp_broker("127.0.0.1", port) as broker:
            remote = await broker.root_object()

            async def call_slow() -> None:
                try:
                    await remote.call_remote("slow")
                except errors.DeadReferenceError as exc:
                    failures.append(exc)

            async with trio.open_nursery() as callers:
                callers.start_soon(call_slow)
                callers.start_soon(call_slow)
                await root.slow_started.wait()
                with trio.fail_after(5):
                    server_scope.cancel()
                    await broker.wait_closed()
            with pytest.raises(errors.DeadReferenceError):
                await remote.call_remote("add", 1)
    assert len(failures) == 2
    assert all(type(f) is errors.PBConnectionLost for f in failures)
    assert root.slow_cancelled


async def test_garbage_and_dropped_connections_do_not_kill_the_server(
    caplog: pytest.LogCaptureFixture,
) -> None:
    root = Server()

    def handshake_failures() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "PB handshake" in r.getMessage()]

    with caplog.at_level(logging.INFO, logger="trio_pb"):
        async with trio.open_nursery() as nursery:
            port = await start_server(nursery, root)
            # Not banana at all.
            garbage = await trio.open_tcp_stream("127.0.0.1", port)
            await garbage.send_all(b"\xff" * 100)
            await wait_for(lambda: len(handshake_failures()) == 1)
            await garbage.aclose()
            # Connects and leaves without a word, like a health check.
            silent = await trio.open_tcp_stream("127.0.0.1", port)
            await silent.aclose()
            await wait_for(lambda: len(handshake_failures()) == 2)
            async with open_tcp_broker("127.0.0.1", port) as broker:
                remote = await broker.root_object()
                assert await remote.call_remote("add", 2, 3) == 5
            nursery.cancel_scope.cancel()
    bad, silent_record = handshake_failures()
    assert bad.levelno == logging.WARNING
    assert "invalid type byte 0xff" in bad.getMessage()
    assert silent_record.levelno == logging.INFO
    assert "closed during the handshake" in silent_record.getMessage()


async def test_a_reset_connection_does_not_kill_the_server() -> None:
    root = Server()
    async with trio.open_nursery() as nursery:
        port = await start_server(nursery, root)
        raw = await trio.open_tcp_stream("127.0.0.1", port)
        await raw.send_all(b"\x02\x82pb")  # choose the pb dialect: the handshake is done
        await wait_for(lambda: len(root.brokers) == 1)
        # Abort: the server reads a reset, not an orderly end.
        raw.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.socket.close()
        await wait_for(lambda: not root.brokers[0].connected)
        async with open_tcp_broker("127.0.0.1", port) as broker:
            remote = await broker.root_object()
            assert await remote.call_remote("add", 4) == 4
        nursery.cancel_scope.cancel()


async def test_a_bug_in_one_connection_is_logged_and_the_server_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class FussyRoot(Server):
        def root_object(self, broker: Any) -> Server:
            if not self.brokers:
                self.brokers.append(None)
                raise RuntimeError("no root for the first one")
            return super().root_object(broker)

    async with trio.open_nursery() as nursery:
        port = await start_server(nursery, FussyRoot())
        with pytest.raises(errors.DeadReferenceError):
            async with open_tcp_broker("127.0.0.1", port) as broker:
                await broker.root_object()
        await wait_for(lambda: "no root for the first one" in caplog.text)
        async with open_tcp_broker("127.0.0.1", port) as broker:
            remote = await broker.root_object()
            assert await remote.call_remote("add", 1, 1) == 2
        nursery.cancel_scope.cancel()
    (record,) = [r for r in caplog.records if r.exc_info and "no root" in str(r.exc_info[1])]
    assert record.levelno == logging.ERROR


async def test_an_exception_from_serve_tcp_is_plain() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        # pytest.raises(OSError) does not match an ExceptionGroup.
        with pytest.raises(OSError) as info:
            await serve_tcp(Server(), taken.getsockname()[1], host="127.0.0.1")
    assert info.value.errno == errno.EADDRINUSE


async def test_unix_socket_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "pb.sock"
    root = Server()
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve_unix, root, path))
        assert path.exists()
        async with open_unix_broker(path) as broker:
            remote = await broker.root_object()
            assert await remote.call_remote("add", 40, 2) == 42
        nursery.cancel_scope.cancel()
    assert not path.exists()
    with pytest.raises(FileNotFoundError):
        async with open_unix_broker(path):
            pytest.fail("connected to a removed socket")


# -- TLS -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
async def tls_port(server_context: ssl.SSLContext) -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        yield await start_server(nursery, Server(), ssl_context=server_context)
        nursery.cancel_scope.cancel()


async def test_tls_round_trip(tls_port: int, client_context: ssl.SSLContext) -> None:
    async with open_tcp_broker("127.0.0.1", tls_port, ssl_context=client_context) as broker:
        assert isinstance(broker._stream, trio.SSLStream)
        remote = await broker.root_object()
        assert await remote.call_remote("add", 1, 2) == 3
    # The certificate is for these names only.
    with pytest.raises(ssl.SSLCertVerificationError):
        async with open_tcp_broker(
            "127.0.0.1", tls_port, ssl_context=client_context, server_hostname="example.com"
        ):
            pytest.fail("the wrong host name was accepted")


async def test_tls_failures_are_logged_and_the_server_keeps_serving(
    tls_port: int, client_context: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    stranger = ssl.create_default_context()
    trustme.CA().configure_trust(stranger)
    with caplog.at_level(logging.WARNING, logger="trio_pb"):
        with trio.fail_after(5), pytest.raises(ssl.SSLCertVerificationError):
            async with open_tcp_broker("127.0.0.1", tls_port, ssl_context=stranger):
                pytest.fail("a certificate from an unknown CA was accepted")
        await wait_for(lambda: "TLS handshake" in caplog.text)
        # A client that speaks PB without TLS (it chooses the pb dialect).
        plain = await trio.open_tcp_stream("127.0.0.1", tls_port)
        await plain.send_all(b"\x02\x82pb" * 16)
        await wait_for(lambda: caplog.text.count("TLS handshake") >= 2)
        await plain.aclose()
    async with open_tcp_broker("127.0.0.1", tls_port, ssl_context=client_context) as broker:
        remote = await broker.root_object()
        assert await remote.call_remote("add", 20, 22) == 42


async def test_tls_client_against_a_plain_server_fails_cleanly(client_context: ssl.SSLContext) -> None:
    async with trio.open_nursery() as nursery:
        port = await start_server(nursery, Server())
        with trio.fail_after(5), pytest.raises(ssl.SSLError):
            async with open_tcp_broker("127.0.0.1", port, ssl_context=client_context):
                pytest.fail("TLS with a server that does not speak it")
        nursery.cancel_scope.cancel()


async def test_a_silent_client_is_dropped_after_the_handshake_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trio_pb")
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(serve_tcp, Root(), 0, host="127.0.0.1", handshake_timeout=0.2)
        )
        port = listeners[0].socket.getsockname()[1]
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        received = b""
        with trio.fail_after(10):
            # The server's dialect offer, then end of file: it gave up on us.
            while chunk := await stream.receive_some():
                received += chunk
        assert received.startswith(b"\x04\x80")  # a list of four dialects
        await stream.aclose()
        nursery.cancel_scope.cancel()
    assert "did not finish the handshake" in caplog.text


class Recorder(Root):
    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def remote_record(self, index: int, blob: bytes) -> None:
        self.seen.append((index, len(blob)))

    def remote_count(self) -> int:
        return len(self.seen)


async def test_large_messages_over_tcp_keep_their_order() -> None:
    # Messages larger than the socket buffer: direct writes are partial and the
    # writer task sends the rest, before anything queued after them.
    recorder = Recorder()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(serve_tcp, recorder, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        async with open_tcp_broker("127.0.0.1", port) as broker:
            root = await broker.root_object()
            for index in range(30):
                root.call_remote_no_answer("record", index, bytes(500_000 + index))
                if index % 7 == 0:
                    await trio.sleep(0)
            assert await root.call_remote("count") == 30
        nursery.cancel_scope.cancel()
    assert recorder.seen == [(i, 500_000 + i) for i in range(30)]
