"""What an error crosses the wire as, trio_pb at both ends.

An exception that is Jellyable (a Copyable error) or whose class the security
options allow crosses as itself, as in Twisted; any other as a CopyableFailure
state.  And the reference quota's last word: the answer that says goodbye
arrives before the connection closes.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from trio_pb import banana, errors, failures
from trio_pb.banana import NEED_DATA
from trio_pb.broker import open_broker
from trio_pb.cache import Cacheable
from trio_pb.failures import COPYABLE_FAILURE_TAG
from trio_pb.flavors import Copyable, Referenceable, RemoteCopy, Root
from trio_pb.jelly import CopyRegistry, SecurityOptions, global_security, qual, unjelly
from trio_pb.protocol import IncomingCall, PBProtocol, Ready
from trio_pb.testing import assert_no_leaks, open_broker_pair

# Every test that uses open_broker_pair runs over memory streams and over real sockets.
pytestmark = pytest.mark.usefixtures("each_transport")


class CopiedError(errors.Error, Copyable, RemoteCopy):
    """A pb.Error that is also a Copyable: it crosses as itself."""

    def __init__(self, code: int) -> None:
        super().__init__(f"code {code}")
        self.code = code


class PlainCopiedError(Exception, Copyable, RemoteCopy):
    """Not a pb.Error: Twisted sends it as itself too."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class AllowedError(errors.Error):
    """A plain class, sent as itself where the security options allow it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnsendableError(errors.Error, Copyable, RemoteCopy):
    """A Copyable error whose state cannot be jellied."""

    def get_state_to_copy(self) -> Any:
        raise RuntimeError("no state for you")


class FunctionInState(AllowedError):
    """An allowed class whose state holds something jelly cannot carry."""


def registry_for(*classes: type) -> CopyRegistry:
    registry = CopyRegistry()
    for cls in classes:
        registry.register(qual(cls).encode(), cls)
    return registry


def allowing(*classes: type) -> SecurityOptions:
    security = global_security.copy()
    security.allow_instances_of(*classes)
    return security


class Raiser(Root):
    def remote_copied(self, code: int) -> None:
        raise CopiedError(code)

    async def remote_copied_later(self, code: int) -> None:
        await trio.sleep(0)
        raise CopiedError(code)

    def remote_plain_copied(self) -> None:
        raise PlainCopiedError("not a pb.Error")

    def remote_allowed(self) -> None:
        raise AllowedError("allowed")

    def remote_unsendable(self) -> None:
        raise UnsendableError("cannot copy me")

    def remote_function_in_state(self) -> None:
        error = FunctionInState("holds a function")
        error.hook = print  # type: ignore[attr-defined]
        raise error

    def remote_plain(self) -> None:
        raise errors.Error("a plain error")


async def test_a_copyable_error_arrives_as_itself() -> None:
    registry = registry_for(CopiedError, PlainCopiedError)
    async with open_broker_pair(Raiser(), registry=registry) as (client, server):
        root = await client.root_object()
        with pytest.raises(CopiedError) as info:
            await root.call_remote("copied", 7)
        assert info.value.code == 7
        with pytest.raises(CopiedError) as info:
            await root.call_remote("copied_later", 8)
        assert info.value.code == 8
        with pytest.raises(PlainCopiedError) as plain:
            await root.call_remote("plain_copied")
        assert plain.value.detail == "not a pb.Error"
        # Errors that are not Jellyable still come as CopyableFailures.
        with pytest.raises(errors.Error, match="a plain error"):
            await root.call_remote("plain")
        await assert_no_leaks(client, server)


async def test_an_error_of_an_allowed_class_arrives_as_itself() -> None:
    security = allowing(AllowedError)
    async with open_broker_pair(Raiser(), security=security) as (client, server):
        root = await client.root_object()
        with pytest.raises(AllowedError) as info:
            await root.call_remote("allowed")
        assert info.value.reason == "allowed"


async def test_an_error_that_cannot_cross_as_itself_falls_back_to_a_copyable_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = registry_for(UnsendableError)
    security = allowing(FunctionInState)
    async with open_broker_pair(Raiser(), registry=registry, security=security) as (client, server):
        root = await client.root_object()
        with pytest.raises(errors.RemoteError) as info:
            await root.call_remote("unsendable")
        assert info.value.remote_type == qual(UnsendableError).encode()
        assert info.value.value == "cannot copy me"
        with pytest.raises(errors.RemoteError) as info:
            await root.call_remote("function_in_state")
        assert info.value.remote_type == qual(FunctionInState).encode()
        assert info.value.value == "holds a function"
        assert client.connected and server.connected
    assert any("as a CopyableFailure" in record.getMessage() for record in caplog.records)


async def test_a_receiver_that_does_not_know_the_class_fails_only_that_call() -> None:
    # The server sends the error as itself; a client without the class refuses it.
    registry = registry_for(CopiedError)
    async with trio.open_nursery() as nursery:
        client_stream, server_stream = trio.testing.memory_stream_pair()

        async def serve() -> None:
            async with open_broker(server_stream, server=True, root=Raiser(), registry=registry) as server:
                await server.wait_closed()

        nursery.start_soon(serve)
        async with open_broker(client_stream, server=False) as client:
            root = await client.root_object()
            with pytest.raises(errors.InsecureJelly):
                await root.call_remote("copied", 1)
            with pytest.raises(errors.Error, match="a plain error"):
                await root.call_remote("plain")
            assert client.connected


# -- the wire shape, one protocol driven by hand ------------------------------------


def error_payload(security: SecurityOptions | None, method: Any) -> Any:
    """The payload of the ``error`` answering a call to *method*, as a Twisted peer receives it."""
    server = PBProtocol(None, is_client=False, security=security)
    encoder, decoder = banana.Encoder(b"pb"), banana.Decoder()

    class Target:
        def resolve_remote_method(self, name: str) -> Any:
            return method

    server.set_name_for_local(b"root", Target())
    decoder.receive_data(server.data_to_send())
    assert list(decoder)  # the dialect offer
    decoder.vocabulary = banana.PB_VOCABULARY
    server.receive_data(banana.encode(b"pb", dialect=b"none"))
    server.receive_data(encoder.encode([b"message", 1, b"root", b"go", 1, [b"tuple"], [b"dictionary"]]))
    (call,) = [event for event in iter(server.next_event, NEED_DATA) if isinstance(event, IncomingCall)]
    try:
        call.method()
    except Exception as exc:
        server.send_error(call.request_id, exc)
    decoder.receive_data(server.data_to_send())
    (reply,) = [reply for reply in decoder if reply[0] == b"error"]
    return reply[2]


def test_the_wire_shapes() -> None:
    def copied() -> None:
        raise CopiedError(3)

    def allowed() -> None:
        raise AllowedError("why")

    def plain() -> None:
        raise errors.Error("plain")

    tag = qual(CopiedError).encode()
    assert error_payload(None, copied) == [
        tag,
        [b"dictionary", [[b"unicode", b"code"], 3]],
    ]
    assert error_payload(allowing(AllowedError), allowed) == [
        qual(AllowedError).encode(),
        [b"dictionary", [[b"unicode", b"reason"], [b"unicode", b"why"]]],
    ]
    # Not allowed: the CopyableFailure state, as before.
    assert error_payload(None, allowed)[0] == COPYABLE_FAILURE_TAG
    assert error_payload(allowing(AllowedError), plain)[0] == COPYABLE_FAILURE_TAG


# -- the reference quota's last word ----------------------------------------------


class Thing(Referenceable):
    def remote_name(self) -> str:
        return "thing"


class Handout(Root):
    """Hands out a new reference per call, so that the peer soon holds too many."""

    def remote_many(self) -> Thing:
        return Thing()

    async def remote_many_later(self) -> Thing:
        await trio.sleep(0)
        return Thing()


@pytest.mark.parametrize("method", ["many", "many_later"])
async def test_the_reference_quota_answers_goodbye_then_closes(method: str) -> None:
    async with open_broker_pair(Handout(), max_references=2) as (client, server):
        root = await client.root_object()
        # The root is one named object: two more fit.
        held = [await root.call_remote(method) for _ in range(2)]
        for _ in range(3):
            with pytest.raises(errors.Error) as info:
                await root.call_remote(method)
            assert str(info.value) == "Maximum PB reference count exceeded."
        # The fourth time the answer says goodbye, and then the connection closes.
        with pytest.raises(errors.Error) as info:
            await root.call_remote(method)
        assert str(info.value) == "Maximum PB reference count exceeded.  Goodbye."
        with trio.fail_after(5):
            await client.wait_closed()
        assert isinstance(server.error, errors.ProtocolError)
        assert len(held) == 2


class Asker(Root):
    """Calls the client back, and takes the client's calls while it waits for the answer."""

    async def remote_ask(self, client_root: Any) -> Any:
        return await client_root.call_remote("go")


class GreedyClient(Referenceable):
    def __init__(self) -> None:
        self.seen: list[str] = []
        self.held: list[Any] = []
        self.server_root: Any = None

    async def remote_go(self) -> None:
        for _ in range(20):
            try:
                self.held.append(await self.server_root.call_remote("many"))
                self.seen.append("reference")
            except errors.Error as exc:
                self.seen.append(str(exc))
            except errors.DeadReferenceError:
                self.seen.append("lost")
                return


async def test_the_goodbye_goes_out_while_the_server_waits_for_its_own_call() -> None:
    class Both(Handout, Asker):
        pass

    greedy = GreedyClient()
    async with open_broker_pair(Both(), client_root=greedy, max_references=3) as (client, server):
        root = greedy.server_root = await client.root_object()
        with pytest.raises(errors.DeadReferenceError):
            await root.call_remote("ask", greedy)
        await client.wait_closed()
    # Beside the root, three references fit.
    assert greedy.seen == [
        *["reference"] * 3,
        *["Maximum PB reference count exceeded."] * 3,
        "Maximum PB reference count exceeded.  Goodbye.",
        "lost",
    ]


class Cached(Cacheable):
    def __init__(self) -> None:
        self.n = 1


class Answering(Root):
    def remote_answer(self) -> None:
        """Never run: the tests answer the call themselves."""


def answers(result: Any, count: int, **options: Any) -> tuple[list[Any], list[Exception]]:
    """The answers a server protocol sends for *count* requests answered with ``result()``.

    Also what ``send_answer`` raised, which makes the driver close the connection.
    """
    server = PBProtocol(None, is_client=False, **options)
    server.set_name_for_local(b"root", Answering())
    decoder = banana.Decoder()
    decoder.receive_data(server.data_to_send())
    assert list(decoder)  # the dialect offer
    decoder.vocabulary = banana.PB_VOCABULARY
    server.receive_data(banana.encode(b"pb", dialect=b"none"))
    assert isinstance(server.next_event(), Ready)
    raised: list[Exception] = []
    for request_id in range(1, count + 1):
        # The peer's request first: send_answer refuses to answer one never received.
        call = [b"message", request_id, b"root", b"answer", 1, [b"tuple"], [b"dictionary"]]
        server.receive_data(banana.encode(call, dialect=b"pb"))
        assert isinstance(server.next_event(), IncomingCall)
        try:
            server.send_answer(request_id, result())
        except errors.ProtocolError as exc:
            raised.append(exc)
            break
    decoder.receive_data(server.data_to_send())
    registry = CopyRegistry()
    failures.install(registry)
    replies = []
    for reply in decoder:
        if reply[0] == b"answer":
            replies.append("answer")
        elif reply[0] == b"error":
            assert reply[2][0] == COPYABLE_FAILURE_TAG
            replies.append(str(failures.to_exception(unjelly(reply[2], registry=registry))))
    return replies, raised


@pytest.mark.parametrize(("result", "what", "fit"), [(Thing, "reference", 1), (Cached, "cache", 2)])
def test_the_goodbye_is_an_error_answer_in_twisteds_words(result: Any, what: str, fit: int) -> None:
    # With a limit of 1: the root (a name) counts for references, nothing for caches.
    replies, raised = answers(result, 10, max_references=1)
    assert replies == [
        *["answer"] * fit,
        *[f"Maximum PB {what} count exceeded."] * 3,
        f"Maximum PB {what} count exceeded.  Goodbye.",
    ]
    (error,) = raised
    assert isinstance(error, errors.ProtocolError)
