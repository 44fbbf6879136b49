"""The broker, two peers in one process: calls, references, errors, disconnection, cancellation."""

from __future__ import annotations

import logging
import math

import pytest
import trio
import trio.testing

import trio_pb
from trio_pb import errors, options
from trio_pb.broker import Broker, open_broker
from trio_pb.flavors import Copyable, Referenceable, RemoteCopy, Root, Viewable
from trio_pb.jelly import CopyRegistry
from trio_pb.protocol import PBProtocol
from trio_pb.testing import assert_no_leaks, open_broker_pair

# Every test runs over memory streams and over real sockets (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("each_transport")


class Thing(Referenceable):
    def __init__(self, name: str = "thing") -> None:
        self.name = name

    def remote_name(self) -> str:
        return self.name


class Point(Copyable):
    def __init__(self, x: int, y: int) -> None:
        self.x = x
        self.y = y


class RemotePoint(RemoteCopy):
    made_by_init = False

    def __init__(self) -> None:
        self.made_by_init = True


class QuotaError(errors.Error):
    pass


class Watcher(Viewable):
    def view_who(self, perspective: object) -> object:
        return perspective


class Server(Root):
    def __init__(self) -> None:
        self.thing = Thing()
        self.seen: list[object] = []
        self.slow_started = trio.Event()
        self.slow_cancelled = False

    def remote_add(self, a: int, b: int = 0) -> int:
        return a + b

    def remote_echo(self, value: object) -> object:
        return value

    def remote_echo_kwargs(self, *args: object, **kwargs: object) -> object:
        return (args, kwargs)

    async def remote_sleep_then(self, value: object) -> object:
        await trio.sleep(0.5)
        return value

    async def remote_slow(self) -> None:
        self.slow_started.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            self.slow_cancelled = True
            raise

    def remote_get_thing(self) -> Thing:
        return self.thing

    def remote_same_thing_twice(self) -> list[Thing]:
        return [self.thing, self.thing]

    def remote_is_thing(self, obj: object) -> bool:
        return obj is self.thing

    def remote_point(self) -> Point:
        return Point(1, 2)

    def remote_boom(self) -> None:
        raise ValueError("bad value")

    def remote_quota(self) -> None:
        raise QuotaError("over quota")

    async def remote_call_back(self, ref: trio_pb.RemoteReference, value: object) -> object:
        # The server calls the client before answering the client's call.
        return await ref.call_remote("twice", value)

    def remote_record(self, value: object) -> None:
        self.seen.append(value)

    def remote_unsendable(self) -> object:
        return object()

    def remote_watcher(self) -> Watcher:
        return Watcher()


class Doubler(Referenceable):
    def remote_twice(self, value: int) -> int:
        return value * 2


async def test_calls_with_args_kwargs_and_async_methods() -> None:
    server_root = Server()
    async with open_broker_pair(server_root) as (client, server):
        root = await client.root_object()
        assert await root.call_remote("add", 1, 2) == 3
        assert await root.call_remote("add", 1, b=41) == 42
        assert await root.callRemote("add", 2, 3) == 5
        assert await root.remote_method("add")(4, 5) == 9
        value = {"a": [1, 2.5, b"x", None, True], "b": ("t", frozenset({1}))}
        assert await root.call_remote("echo", value) == value
        assert await root.call_remote("echo_kwargs", 1, name="n", _name="x") == (
            (1,),
            {"name": "n", "_name": "x"},
        )
        async with trio.open_nursery() as nursery:
            results: list[object] = []

            async def slow_call(v: int) -> None:
                results.append(await root.call_remote("sleep_then", v))

            for v in range(3):
                nursery.start_soon(slow_call, v)
            # A slow async method does not block the connection.
            assert await root.call_remote("add", 7) == 7
        assert sorted(results) == [0, 1, 2]  # type: ignore[type-var]
        await assert_no_leaks(client, server)


async def test_references_are_counted_and_come_back_as_local() -> None:
    server_root = Server()
    async with open_broker_pair(server_root) as (client, server):
        root = await client.root_object()
        thing = await root.call_remote("get_thing")
        assert isinstance(thing, trio_pb.RemoteReference)
        assert await thing.call_remote("name") == "thing"
        assert await root.call_remote("is_thing", thing) is True
        twice = await root.call_remote("same_thing_twice")
        # Two tokens, one luid, refcount 2 on the server.
        assert twice[0] == twice[1] == thing
        stats = server.statistics()
        assert (stats.objects_exported, stats.export_references) == (1, 3)
        await thing.release()
        await thing.release()  # a second release sends nothing
        async with twice[0], twice[1]:
            pass
        del twice
        await assert_no_leaks(client, server)


async def test_reference_dropped_without_release_is_collected() -> None:
    async with open_broker_pair(Server()) as (client, server):
        root = await client.root_object()
        thing = await root.call_remote("get_thing")
        assert server.statistics().objects_exported == 1
        del thing
        await assert_no_leaks(client, server)


async def test_server_calls_client_object_before_answering() -> None:
    async with open_broker_pair(Server()) as (client, server):
        root = await client.root_object()
        assert await root.call_remote("call_back", Doubler(), 21) == 42
        await assert_no_leaks(client, server)


async def test_copyable_arrives_as_registered_remote_copy() -> None:
    registry = CopyRegistry()
    registry.register(Point, RemotePoint)
    async with open_broker_pair(Server(), registry=registry) as (client, _server):
        root = await client.root_object()
        point = await root.call_remote("point")
        assert isinstance(point, RemotePoint)
        assert (point.x, point.y) == (1, 2)
        assert point.made_by_init is False


async def test_unregistered_copy_fails_the_call_not_the_connection() -> None:
    async with open_broker_pair(Server()) as (client, server):
        root = await client.root_object()
        with pytest.raises(errors.InsecureJelly):
            await root.call_remote("point")
        assert await root.call_remote("add", 1, 1) == 2
        # References inside an answer that cannot be unjellied are given back.
        with pytest.raises(errors.InsecureJelly):
            await root.call_remote("echo", {b"remote": 5, "x": [Thing("a"), Point(3, 4), Thing("b")]})
        await assert_no_leaks(client, server)


async def test_remote_errors() -> None:
    async with open_broker_pair(Server()) as (client, _server):
        root = await client.root_object()
        with pytest.raises(errors.RemoteError) as info:
            await root.call_remote("boom")
        assert info.value.remote_type == b"builtins.ValueError"
        assert info.value.value == "bad value"
        assert "builtins.Exception" in info.value.parents
        assert info.value.remote_traceback == "Traceback unavailable\n"
        with pytest.raises(errors.NoSuchMethod):
            await root.call_remote("missing")
        with pytest.raises(errors.RemoteError) as quota:
            await root.call_remote("quota")
        assert "twisted.spread.pb.Error" in quota.value.parents
        # The connection is still fine.
        assert await root.call_remote("add", 2, 2) == 4


async def test_registered_error_arrives_as_itself_and_is_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    from trio_pb.failures import register_error

    register_error(QuotaError)
    async with open_broker_pair(Server()) as (client, _server):
        root = await client.root_object()
        with caplog.at_level(logging.ERROR, logger="trio_pb"), pytest.raises(QuotaError, match="over quota"):
            await root.call_remote("quota")
    assert not [r for r in caplog.records if "quota" in r.getMessage()]


async def test_unsafe_tracebacks_send_the_traceback() -> None:
    async with open_broker_pair(Server(), unsafe_tracebacks=True) as (client, _server):
        root = await client.root_object()
        with pytest.raises(errors.RemoteError) as info:
            await root.call_remote("boom")
        assert "remote_boom" in info.value.remote_traceback


async def test_unsendable_argument_fails_that_call_only() -> None:
    # trio-pb-1: strings past banana's limit cannot be sent (trio-pb-2 sends them in chunks).
    async with open_broker_pair(Server(), extensions=b"trio-pb-1") as (client, server):
        root = await client.root_object()
        with pytest.raises(errors.BananaError):
            await root.call_remote("echo", b"x" * (640 * 1024 + 1))
        with pytest.raises(errors.JellyError):
            await root.call_remote("echo", print)
        # A Referenceable registered for a call that could not be sent is not leaked.
        with pytest.raises(errors.BananaError):
            await root.call_remote("echo", [Doubler(), b"x" * (640 * 1024 + 1)])
        assert await root.call_remote("add", 3) == 3
        await assert_no_leaks(client, server)


async def test_unsendable_result_becomes_an_error() -> None:
    async with open_broker_pair(Server()) as (client, _server):
        root = await client.root_object()
        # object() is not an allowed class: Twisted sends it as unpersistable data.
        result = await root.call_remote("unsendable")
        assert type(result).__name__ == "Unpersistable"


async def test_no_answer_calls() -> None:
    server_root = Server()
    async with open_broker_pair(server_root) as (client, server):
        root = await client.root_object()
        assert root.call_remote_no_answer("record", 1) is None
        assert await root.callRemote("record", 2, pbanswer=False) is None
        root.call_remote_no_answer("boom")  # errors are only logged on the server
        assert await root.call_remote("add", 0) == 0
        assert server_root.seen == [1, 2]
        await assert_no_leaks(client, server)


async def test_viewable_gets_the_perspective() -> None:
    async with open_broker_pair(Server()) as (client, _server):
        root = await client.root_object()
        watcher = await root.call_remote("watcher")
        # Returned from a remote_ method, the perspective is None (as in Twisted).
        assert await watcher.call_remote("who") is None


async def test_cancelled_call_drops_the_late_answer_and_cancels_nothing_else() -> None:
    server_root = Server()
    async with open_broker_pair(server_root) as (client, server):
        root = await client.root_object()
        with trio.move_on_after(0.05) as scope:
            await root.call_remote("sleep_then", 1)
        assert scope.cancelled_caught
        assert client.statistics().calls_waiting == 0
        await trio.sleep(0.6)  # the late answer arrives and is dropped quietly
        assert await root.call_remote("add", 5) == 5
        assert client.statistics().calls_abandoned == 0
        await assert_no_leaks(client, server)


async def test_disconnect_fails_outstanding_calls_and_later_calls() -> None:
    server_root = Server()
    disconnected: list[object] = []
    async with open_broker_pair(server_root) as (client, server):
        root = await client.root_object()
        thing = await root.call_remote("get_thing")
        client.notify_on_disconnect(lambda: disconnected.append("broker"))
        thing.notify_on_disconnect(lambda ref: disconnected.append(ref))
        async with trio.open_nursery() as nursery:
            failures: list[BaseException] = []

            async def wait_forever() -> None:
                try:
                    await root.call_remote("slow")
                except errors.DeadReferenceError as exc:
                    failures.append(exc)

            for _ in range(3):
                nursery.start_soon(wait_forever)
            await server_root.slow_started.wait()
            await trio.testing.wait_all_tasks_blocked()
            await server._stream.aclose()
        assert len(failures) == 3
        assert all(isinstance(f, errors.PBConnectionLost) for f in failures)
        assert disconnected == ["broker", thing]
        with pytest.raises(errors.DeadReferenceError):
            await root.call_remote("add", 1)
        await trio.testing.wait_all_tasks_blocked()
        assert server_root.slow_cancelled


async def test_a_failing_release_callback_is_logged_and_stops_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def fail() -> None:
        raise RuntimeError("callback failed")

    server_root = Server()
    released: list[str] = []
    async with open_broker_pair(server_root, client_root=Silent()) as (client, server):
        root = await client.root_object()
        thing = await root.call_remote("get_thing")
        server.on_release(server_root.thing, fail)
        server.on_release(server_root.thing, lambda: released.append("after"))
        await thing.release()
        assert await root.call_remote("add", 1) == 1  # the connection is up
        assert released == ["after"]

        # On a lost connection too: the callbacks fail, outstanding calls still end.
        thing = await root.call_remote("get_thing")
        server.on_release(server_root.thing, fail)
        client_root = await server.root_object()
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:

                async def wait_for_client() -> None:
                    with pytest.raises(errors.PBConnectionLost):
                        await client_root.call_remote("never_answered")

                nursery.start_soon(wait_for_client)
                await trio.testing.wait_all_tasks_blocked()
                await client._stream.aclose()
    assert caplog.text.count("release callback") == 2


class Silent(Root):
    async def remote_never_answered(self) -> None:
        await trio.sleep_forever()


async def test_leaving_open_broker_fails_outstanding_calls_and_raises_plain_errors() -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()

    async def serve() -> None:
        async with open_broker(server_stream, server=True, root=Server()) as server:
            await server.wait_closed()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        with pytest.raises(KeyError):
            async with open_broker(client_stream, server=False) as client:
                raise KeyError("plain")
        assert not client.connected


async def test_protocol_violation_closes_the_connection(caplog: pytest.LogCaptureFixture) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    # Behave as a client: choose pb, then (once connected) send garbage.
    await client_stream.send_all(b"\x02\x82pb")
    async with open_broker(server_stream, server=True, root=Server()) as server:
        await client_stream.send_all(b"\x01\x88")
        with trio.fail_after(5):
            await server.wait_closed()
        assert isinstance(server.error, errors.BananaError)
    assert "broke the protocol" in caplog.text


async def test_protocol_violation_during_handshake_is_raised_by_open_broker() -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    await client_stream.send_all(b"\x03\x82xml")
    with pytest.raises(errors.BananaError, match="did not offer"):
        async with open_broker(server_stream, server=True, root=Server()):
            pytest.fail("the handshake cannot succeed")


async def test_unknown_command_gets_did_not_understand() -> None:
    from trio_pb import banana

    client_stream, server_stream = trio.testing.memory_stream_pair()
    await client_stream.send_all(b"\x02\x82pb" + banana.encode([b"frobnicate", 1]))
    async with open_broker(server_stream, server=True, root=Server()) as server:
        decoder = banana.Decoder(vocabulary=banana.PB_VOCABULARY)
        seen: list[object] = []
        with trio.fail_after(5):
            while [b"didNotUnderstand", b"frobnicate"] not in seen:
                decoder.receive_data(await client_stream.receive_some())
                seen.extend(decoder)
        assert server.connected


async def test_a_request_id_reused_while_its_call_runs_is_a_protocol_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from trio_pb import banana

    client_stream, server_stream = trio.testing.memory_stream_pair()
    call = [b"message", 1, b"root", b"slow", 1, [b"tuple"], [b"dictionary"]]
    await client_stream.send_all(b"\x02\x82pb")
    async with open_broker(server_stream, server=True, root=Server()) as server:
        # Two calls of an async method under one request id, from a broken client.
        await client_stream.send_all(banana.encode(call) * 2)
        with trio.fail_after(5):
            await server.wait_closed()
        assert isinstance(server.error, errors.ProtocolError)
        assert "reused request id 1" in str(server.error)
    assert "broke the protocol" in caplog.text


async def test_extension_dialect_carries_cancellation_to_the_callee() -> None:
    server_root = Server()
    async with open_broker_pair(server_root) as (client, server):
        assert client._protocol.extended and server._protocol.extended
        root = await client.root_object()
        with trio.move_on_after(0.2):
            await root.call_remote("slow")
        with trio.fail_after(5):
            while not server_root.slow_cancelled:
                await trio.sleep(0.01)
        # The callee's error answer lets the caller forget the request id.
        assert await root.call_remote("add", 1) == 1
        assert client.statistics().calls_abandoned == 0
        await assert_no_leaks(client, server)


class DeadlineProbe(Root):
    async def remote_time_left(self) -> float:
        await trio.lowlevel.checkpoint()
        return trio.current_effective_deadline() - trio.current_time()

    async def remote_ask(self) -> float:
        # A call made by the callee inherits the deadline it was given.
        peer = await self.broker.root_object()
        return await peer.call_remote("time_left")

    def root_object(self, broker: Broker) -> DeadlineProbe:
        self.broker = broker
        return self


async def test_extension_dialect_carries_the_callers_deadline() -> None:
    async with open_broker_pair(DeadlineProbe(), client_root=DeadlineProbe()) as (client, server):
        root = await client.root_object()
        assert await root.call_remote("time_left") == math.inf
        with trio.fail_after(30):
            assert 0 < await root.call_remote("time_left") <= 30
            assert 0 < await root.call_remote("ask") <= 30
        await assert_no_leaks(client, server)


async def test_the_callers_deadline_ends_the_callee_without_a_cancel(monkeypatch: pytest.MonkeyPatch) -> None:
    server_root = Server()
    async with open_broker_pair(server_root) as (client, server):
        root = await client.root_object()
        # As if the cancel were lost: the callee still stops at the deadline.
        # On the class (PBProtocol has __slots__); the server sends none here anyway.
        monkeypatch.setattr(PBProtocol, "send_cancel", lambda self, request_id: None)
        with trio.move_on_after(0.2):
            await root.call_remote("slow")
        with trio.fail_after(5):
            while not server_root.slow_cancelled:
                await trio.sleep(0.01)
        # Its error answer (the deadline passed) let the caller forget the request id.
        await trio.testing.wait_all_tasks_blocked()
        assert client.statistics().calls_abandoned == 0
        await assert_no_leaks(client, server)


def test_deadline_commands_are_checked() -> None:
    from trio_pb.protocol import PBProtocol

    protocol = PBProtocol(None, is_client=False)
    for request_id, seconds in [(1, -1.0), (1, math.nan), (1, math.inf), (b"1", 1.0), (1, b"1"), (1, True)]:
        with pytest.raises(errors.ProtocolError, match="malformed deadline"):
            protocol._deadline(request_id, seconds)
    protocol._deadline(7, 2)
    assert protocol._requests.next_deadline == (7, 2.0)


async def test_without_extensions_the_callee_runs_on() -> None:
    server_root = Server()
    async with open_broker_pair(server_root, extensions=False) as (client, server):
        assert not client._protocol.extended
        root = await client.root_object()
        with trio.move_on_after(0.2):
            await root.call_remote("slow")
        await trio.sleep(0.1)
        assert server_root.slow_started.is_set()
        assert not server_root.slow_cancelled


async def test_without_extensions_no_deadline_is_sent() -> None:
    async with open_broker_pair(DeadlineProbe(), extensions=False) as (client, _server):
        root = await client.root_object()
        with trio.fail_after(30):
            assert await root.call_remote("time_left") == math.inf


async def test_extended_server_still_offers_pb_first_to_twisted() -> None:
    from trio_pb import banana

    client_stream, server_stream = trio.testing.memory_stream_pair()
    # A Twisted client picks pb from the offer and speaks pb.
    await client_stream.send_all(b"\x02\x82pb")
    async with open_broker(server_stream, server=True, root=Server()) as server:
        decoder = banana.Decoder()
        decoder.receive_data(await client_stream.receive_some())
        assert decoder.next_expression() == [b"trio-pb-2", b"trio-pb-1", b"pb", b"none"]
        assert not server._protocol.extended


class BadState(Copyable):
    def get_state_to_copy_for(self, perspective: object) -> object:
        raise ValueError("no state today")


class Misc(Root):
    def remote_bad_state(self) -> BadState:
        return BadState()

    def remote_many(self) -> Thing:
        return Thing()

    async def remote_call_named(self, name: bytes) -> object:
        return await self.broker.remote_for_name(name).call_remote("twice", 4)

    def root_object(self, broker: object) -> Misc:
        self.broker = broker
        return self


async def test_copyable_whose_state_hook_fails() -> None:
    async with open_broker_pair(Misc()) as (client, server):
        root = await client.root_object()
        with pytest.raises(errors.RemoteError, match="no state today"):
            await root.call_remote("bad_state")
        # Sending one fails the call at once, before anything is written.
        with pytest.raises(ValueError, match="no state today"):
            await root.call_remote("echo", BadState())
        assert client.connected and server.connected


async def test_named_objects_on_the_client_are_callable_by_the_server() -> None:
    async with open_broker_pair(Misc()) as (client, server):
        client.set_name_for_local(b"foo", Doubler())
        root = await client.root_object()
        assert await root.call_remote("call_named", b"foo") == 8
        with pytest.raises(errors.Error, match="Invalid Object ID"):
            await root.call_remote("call_named", b"bar")


async def test_reference_quota_then_goodbye() -> None:
    async with open_broker_pair(Misc()) as (client, server):
        root = await client.root_object()
        held = []
        # The root is one named object: MAX_BROKER_REFS (1024) more fit.
        for _ in range(1024):
            held.append(await root.call_remote("many"))
        for _ in range(3):
            with pytest.raises(errors.Error, match="Maximum PB reference count exceeded"):
                await root.call_remote("many")
        # The fourth violation is answered once more, as by Twisted, then the connection closes.
        with pytest.raises(errors.Error, match="Goodbye"):
            await root.call_remote("many")
        await client.wait_closed()
        assert isinstance(server.error, errors.ProtocolError)


async def test_factory_copies_and_remote_method_equality() -> None:
    registry = CopyRegistry()
    registry.register_factory(Point, lambda state: ("point", state["x"], state["y"]))
    async with open_broker_pair(Server(), registry=registry) as (client, server):
        root = await client.root_object()
        assert await root.call_remote("point") == ("point", 1, 2)
        thing = await root.call_remote("get_thing")
        again = await root.call_remote("get_thing")
        assert thing.remote_method("name") == again.remote_method("name")
        assert thing.remote_method("name") != thing.remote_method("other")
        assert hash(thing) == hash(again)


async def test_dont_notify_on_disconnect_of_unknown_callback_raises() -> None:
    async with open_broker_pair(Root()) as (client, _server):
        root = await client.root_object()
        with pytest.raises(ValueError):
            root.dont_notify_on_disconnect(print)
        root.notify_on_disconnect(print)
        root.dont_notify_on_disconnect(print)
        with pytest.raises(ValueError):
            root.dont_notify_on_disconnect(print)


class Failing(Root):
    def remote_sync_fail(self) -> None:
        raise KeyError("sync")

    async def remote_async_fail(self) -> None:
        await trio.sleep(0)
        raise KeyError("async")

    def remote_expected(self) -> None:
        raise errors.Error("expected")


async def test_unexpected_errors_are_logged_once_expected_ones_not_at_all(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with open_broker_pair(Failing()) as (client, _server):
        root = await client.root_object()
        for name in ("sync_fail", "async_fail"):
            with pytest.raises(errors.RemoteError) as info:
                await root.call_remote(name)
            assert info.value.remote_type == b"builtins.KeyError"
        with pytest.raises(errors.Error, match="expected"):
            await root.call_remote("expected")
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name == "trio_pb"]
    assert [r.exc_info[1].args[0] for r in logged if r.exc_info and r.exc_info[1]] == ["sync", "async"]


class BigAnswers(Root):
    def remote_big(self) -> bytes:
        return b"x" * 600_000


async def test_a_peer_that_does_not_read_answers_is_not_read_from_either() -> None:
    from trio_pb import banana, broker

    # A client that sends many calls and never reads: once its queue passes the
    # high-water mark the server holds the calls back, and once they reach
    # their bound it stops reading, instead of queueing without end.
    client_stream, server_stream = trio.testing.lockstep_stream_pair()
    async with trio.open_nursery() as nursery:

        async def serve() -> None:
            async with open_broker(
                server_stream, server=True, root=BigAnswers(), max_held_calls=50
            ) as server:
                servers.append(server)
                await server.wait_closed()

        servers: list[broker.Broker] = []
        nursery.start_soon(serve)
        encoder = banana.Encoder(b"pb")
        call = [b"message", 1, b"root", b"big", 1, [b"tuple"], [b"dictionary"]]
        # Read only the offer, answer pb, then flood without reading.
        await client_stream.receive_some()
        await client_stream.send_all(b"\x02\x82pb")
        sent = 0
        with trio.move_on_after(1):
            for request_id in range(1, 200):
                call[1] = request_id
                await client_stream.send_all(encoder.encode(call))
                sent += 1
        (server,) = servers
        queued = server._pending_output()
        # Blocked well before 200 answers of 600 KB (120 MB) were queued.
        assert sent < 199
        assert server.statistics().calls_held == 50
        assert queued < options.SEND_BUFFER + 2_000_000
        nursery.cancel_scope.cancel()


async def test_too_deep_to_be_accepted_fails_the_call_not_the_connection() -> None:
    async with open_broker_pair(Server()) as (client, _server):
        root = await client.root_object()
        deep: object = 1
        for _ in range(127):  # 254 banana levels pass; the wrappers push it past 256
            deep = {"d": deep}
        with pytest.raises(errors.SerializationError):
            await root.call_remote("echo", deep)
        assert await root.call_remote("add", 1, 1) == 2


class TwistedStyleRoot(Root):
    """Ported code overrides Twisted's names; trio_pb must call them."""

    def rootObject(self, broker: object) -> Root:
        return PerConnection()


class PerConnection(Root):
    def remote_which(self) -> str:
        return "per connection"


async def test_twisted_spelled_overrides_are_used() -> None:
    async with open_broker_pair(TwistedStyleRoot()) as (client, _server):
        root = await client.root_object()
        assert await root.call_remote("which") == "per connection"


class ProtocolLevelError(errors.Error):
    pass


async def test_register_error_wire_name_is_used_both_ways() -> None:
    from trio_pb import failures

    failures.register_error(ProtocolLevelError, "twisted.spread.pb.ProtocolLevelError")
    state = failures.failure_state(ProtocolLevelError("x"))
    assert state["type"] == b"twisted.spread.pb.ProtocolLevelError"
    assert state["parents"][:2] == ["twisted.spread.pb.ProtocolLevelError", "twisted.spread.pb.Error"]


def test_security_options_copy_is_independent() -> None:
    from trio_pb.jelly import global_security

    mine = global_security.copy()
    mine.allow_types(b"extra")
    assert mine.is_type_allowed(b"extra") and mine.is_type_allowed(b"remote")
    assert not global_security.is_type_allowed(b"extra")
