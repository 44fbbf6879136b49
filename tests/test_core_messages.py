"""Every message of the PB protocol, well formed and malformed, through two PBProtocols and no trio.

In the h11 style: bytes are moved by hand between a client and a server
protocol (:mod:`core_pair`), and each test says what bytes one side queues
and what events, errors and bytes they make on the other.  Two tables hold
the coverage:

- :data:`WELL_FORMED`: for each command, a scenario that sends it the way
  the protocol does, checks its exact banana bytes and what the receiver
  makes of it, in both dialects (``pb``, and ``trio-pb-1``, where the
  extension commands exist);
- :data:`MALFORMED`: for each command, the ways a peer can get it wrong, and
  what the core does: fail that one call (an error answer is queued, or the
  call we made fails), count a violation (the conduct counter), ignore it
  with a warning, or raise a :class:`~trio_pb.errors.ProtocolError`, which
  closes the connection.

A test checks that both tables name every command of the protocol's
dispatch tables, so that a new command without tests fails.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
from core_pair import deliver

from trio_pb import Cacheable, Error, Referenceable, RemoteCopy, Root, banana, failures, protocol
from trio_pb.errors import InsecureJelly, JellyError, NoSuchMethod, ProtocolError, RemoteError
from trio_pb.jelly import CopyRegistry, jelly
from trio_pb.protocol import (
    EXTENSION_DIALECT,
    PROTOCOL_VERSION,
    Answer,
    CancelRequested,
    Failed,
    IncomingCall,
    PBProtocol,
    PeerReference,
    Ready,
)

PB = b"pb"
EXT = EXTENSION_DIALECT
DOCS = Path(__file__).parent.parent / "docs"

# -- the objects the server offers -------------------------------------------------


class Thing(Referenceable):
    def remote_name(self) -> str:
        return "thing"


class Counter(Cacheable):
    def __init__(self) -> None:
        self.value = 0
        self.stopped = 0

    def get_state_to_cache_and_observe_for(self, perspective: Any, observer: Any) -> Any:
        return {"value": self.value}

    def stopped_observing(self, perspective: Any, observer: Any) -> None:
        self.stopped += 1

    def set(self, value: int) -> None:
        self.value = value
        self.broadcast("set", value)


class Unwanted(Cacheable):
    """A Cacheable the client has no class for: its copy is refused (and given back)."""

    def get_state_to_cache_and_observe_for(self, perspective: Any, observer: Any) -> Any:
        return {}


class Mirror(RemoteCopy):
    """The client's copy of a Counter, rebuilt as a cached copy (as trio_pb.cache.RemoteCache is)."""

    value: int

    def unjelly_for(self, unjellier: Any, sexp: Any) -> Any:
        return unjellier.invoker.unjelly_cache(type(self), unjellier, sexp)

    def set_copyable_state(self, state: Any) -> None:
        self.__dict__.update(state)

    def resolve_remote_method(self, name: str) -> Any:
        return getattr(self, "observe_" + name)

    def observe_set(self, value: int) -> None:
        self.value = value


class Server(Root):
    def __init__(self) -> None:
        self.thing = Thing()
        self.counter = Counter()

    def remote_add(self, a: int, b: int) -> int:
        return a + b

    def remote_echo(self, value: Any) -> Any:
        return value

    def remote_thing(self) -> Thing:
        return self.thing

    def remote_counter(self) -> Counter:
        return self.counter

    def remote_unwanted(self) -> Unwanted:
        return Unwanted()


REGISTRY = CopyRegistry()
REGISTRY.register(Counter, Mirror)

# -- helpers -------------------------------------------------------------------------


def open_pair(dialect: bytes) -> tuple[PBProtocol, PBProtocol, Server]:
    """A client and a server protocol that agreed on *dialect*, with nothing left to send."""
    root = Server()
    server = PBProtocol(None, is_client=False, registry=REGISTRY, extensions=dialect == EXT and EXT)
    server.set_name_for_local(b"root", root)
    client = PBProtocol(None, is_client=True, registry=REGISTRY)
    assert deliver(server, client) == [Ready(dialect)]
    assert deliver(client, server) == [Ready(dialect)]
    assert deliver(server, client) == []  # the server's version
    assert client.data_to_send() == server.data_to_send() == b""
    return client, server, root


def expressions(data: bytes) -> list[Any]:
    """The expressions *data* carries (under the pb vocabulary, which both dialects use)."""
    decoder = banana.Decoder(vocabulary=banana.PB_VOCABULARY)
    decoder.receive_data(data)
    return list(decoder)


def inject(receiver: PBProtocol, *sent: Any) -> list[Any]:
    """Feed *receiver* the banana of each expression in *sent*, as a peer would; return its events."""
    receiver.receive_data(b"".join(banana.encode(expression) for expression in sent))
    events = []
    while (event := receiver.next_event()) is not banana.NEED_DATA:
        events.append(event)
    return events


def serve(server: PBProtocol, client: PBProtocol) -> Any:
    """Run the one call the client queued on the server, and bring its answer back."""
    [call] = deliver(client, server)
    assert isinstance(call, IncomingCall)
    server.send_answer(call.request_id, call.method(*call.args, **call.kwargs), call.perspective)
    [answer] = deliver(server, client)
    assert isinstance(answer, (Answer, Failed)) and answer.request_id == call.request_id
    return answer


def b128(value: int) -> bytes:
    return banana.int_to_b128(value)


# -- the well-formed messages, one scenario per command -------------------------------

#: command -> (scenario, the dialects it runs in).
WELL_FORMED: dict[bytes, tuple[Callable[[bytes], None], tuple[bytes, ...]]] = {}


def scenario(
    command: bytes, dialects: tuple[bytes, ...] = (PB, EXT)
) -> Callable[[Callable[[bytes], None]], Callable[[bytes], None]]:
    def register(function: Callable[[bytes], None]) -> Callable[[bytes], None]:
        WELL_FORMED[command] = (function, dialects)
        return function

    return register


@scenario(b"version")
def version_is_sent_by_both_sides_after_the_handshake(dialect: bytes) -> None:
    server = PBProtocol(None, is_client=False, extensions=dialect == EXT and EXT)
    client = PBProtocol(None, is_client=True)
    client.receive_data(server.data_to_send())
    assert client.next_event() == Ready(dialect)
    # The dialect chosen, then [b"version", 6]: a list of two, VOCAB 19, INT 6.
    version = b"\x02\x80" + b"\x13\x87" + b"\x06\x81"
    assert banana.encode([b"version", PROTOCOL_VERSION]) == version
    chosen = client.data_to_send()
    assert chosen.endswith(version)
    server.receive_data(chosen)
    assert server.next_event() == Ready(dialect)
    assert server.next_event() is banana.NEED_DATA  # the client's version makes no event
    assert server.data_to_send() == version
    assert deliver(server, client) == []
    assert client.data_to_send() == b"" and client.conduct.violations == 0


@scenario(b"message")
def message_becomes_an_incoming_call(dialect: bytes) -> None:
    client, server, _ = open_pair(dialect)
    assert client.send_call(b"root", "add", (1, 2), {}) == 1
    data = client.data_to_send()
    # A list of 7: VOCAB message, 1, b"root", b"add", 1 (answer wanted), the tuple, the dictionary.
    assert data == (
        b"\x07\x80\x1a\x87\x01\x81\x04\x82root\x03\x82add\x01\x81"
        + b"\x03\x80\x0b\x87\x01\x81\x02\x81"
        + b"\x01\x80\x05\x87"
    )
    server.receive_data(data)
    call = server.next_event()
    assert isinstance(call, IncomingCall)
    assert (call.request_id, call.answer_required, call.name, call.args, call.kwargs) == (
        1,
        True,
        "add",
        (1, 2),
        {},
    )
    assert (call.cache_luid, call.time_left) == (None, None)
    assert call.method(*call.args) == 3

    # Keyword arguments and no answer wanted; ids count on.
    assert client.send_call(b"root", "add", (1,), {"b": 2}, answer_required=False) == 2
    data = client.data_to_send()
    assert data == banana.encode(
        [b"message", 2, b"root", b"add", 0, [b"tuple", 1], [b"dictionary", [[b"unicode", b"b"], 2]]]
    )
    server.receive_data(data)
    call = server.next_event()
    assert isinstance(call, IncomingCall)
    assert (call.request_id, call.answer_required, call.args, call.kwargs) == (2, False, (1,), {"b": 2})
    assert server.data_to_send() == b""


@scenario(b"cachemessage")
def cachemessage_updates_a_cached_copy(dialect: bytes) -> None:
    client, server, root = open_pair(dialect)
    client.send_call(b"root", "counter", (), {})
    mirror = serve(server, client).value
    assert isinstance(mirror, Mirror) and mirror.value == 0
    luid = server.cache_luid(root.counter)
    assert luid is not None
    root.counter.set(5)  # the observer queues the update at once
    data = server.data_to_send()
    # The server's first request: no answer wanted, the cached object's luid as target.
    assert data == banana.encode([b"cachemessage", 1, luid, b"set", 0, [b"tuple", 5], [b"dictionary"]])
    client.receive_data(data)
    update = client.next_event()
    assert isinstance(update, IncomingCall)
    assert (update.cache_luid, update.answer_required, update.name, update.args) == (luid, False, "set", (5,))
    update.method(*update.args)
    assert mirror.value == 5
    assert client.data_to_send() == b""


@scenario(b"answer")
def answer_settles_a_call(dialect: bytes) -> None:
    client, server, root = open_pair(dialect)
    client.send_call(b"root", "add", (1, 2), {})
    [call] = deliver(client, server)
    server.send_answer(call.request_id, 3)
    data = server.data_to_send()
    assert data == b"\x03\x80\x1b\x87\x01\x81\x03\x81"  # [VOCAB answer, 1, 3]
    client.receive_data(data)
    assert client.next_event() == Answer(1, 3)

    # A jellied value, and a reference.
    client.send_call(b"root", "echo", ([1, b"x"],), {})
    [call] = deliver(client, server)
    server.send_answer(call.request_id, call.method(*call.args))
    data = server.data_to_send()
    assert data == banana.encode([b"answer", 2, [b"list", 1, b"x"]])
    client.receive_data(data)
    assert client.next_event() == Answer(2, [1, b"x"])

    client.send_call(b"root", "thing", (), {})
    [call] = deliver(client, server)
    server.send_answer(call.request_id, call.method())
    data = server.data_to_send()
    [[_, _, [tag, luid]]] = expressions(data)
    assert data == banana.encode([b"answer", 3, [b"remote", luid]]) and tag == b"remote"
    client.receive_data(data)
    answer = client.next_event()
    assert isinstance(answer, Answer) and isinstance(answer.value, PeerReference)
    assert answer.value.luid == luid


@scenario(b"error")
def error_fails_a_call(dialect: bytes) -> None:
    client, server, _ = open_pair(dialect)
    for _ in range(3):
        client.send_call(b"root", "add", (), {})
    assert len(deliver(client, server)) == 3

    # An exception that cannot cross as itself crosses as a CopyableFailure.
    problem = ValueError("no such luck")
    server.send_error(1, problem)
    data = server.data_to_send()
    state = jelly(failures.failure_state(problem))
    assert data == banana.encode([b"error", 1, [b"twisted.spread.pb.CopyableFailure", state]])
    client.receive_data(data)
    failed = client.next_event()
    assert isinstance(failed, Failed) and failed.request_id == 1
    assert isinstance(failed.error, RemoteError) and "no such luck" in str(failed.error)

    # A pb.Error is rebuilt as itself.
    server.send_error(2, Error("nope"))
    [failed] = deliver(server, client)
    assert isinstance(failed, Failed) and type(failed.error) is Error and str(failed.error) == "nope"

    # A very old peer's bare string.
    [failed] = inject(client, [b"error", 3, b"boom"])
    assert isinstance(failed, Failed) and failed.request_id == 3
    assert isinstance(failed.error, RemoteError) and "boom" in str(failed.error)


@scenario(b"decref")
def decref_releases_one_reference(dialect: bytes) -> None:
    client, server, root = open_pair(dialect)
    released = []
    server.on_release(root.thing, lambda: released.append(True))
    for _ in range(2):
        client.send_call(b"root", "thing", (), {})
        reference = serve(server, client).value
    assert isinstance(reference, PeerReference)
    sizes = server.table_sizes()
    assert (sizes.objects_exported, sizes.export_references) == (1, 2)

    client.send_decref(reference.luid)
    data = client.data_to_send()
    assert data == b"\x02\x80\x1d\x87" + b128(reference.luid) + b"\x81"  # [VOCAB decref, luid]
    server.receive_data(data)
    assert server.next_event() is banana.NEED_DATA
    assert server.table_sizes().export_references == 1 and released == []

    client.send_decref(reference.luid)
    assert deliver(client, server) == []
    assert server.table_sizes().objects_exported == 0 and released == [True]
    assert server.data_to_send() == b"" and server.conduct.violations == 0
    # One more than the peer held is a stray release.
    client.send_decref(reference.luid)
    assert deliver(client, server) == []
    assert server.conduct.violations == 1 and released == [True]


@scenario(b"decache")
def decache_releases_one_cached_copy(dialect: bytes) -> None:
    client, server, root = open_pair(dialect)
    client.send_call(b"root", "counter", (), {})
    serve(server, client)
    luid = server.cache_luid(root.counter)
    assert luid is not None and server.table_sizes().caches_exported == 1

    client.send_decache(luid)
    data = client.data_to_send()
    assert data == b"\x02\x80\x1e\x87" + b128(luid) + b"\x81"  # [VOCAB decache, luid]
    server.receive_data(data)
    assert server.next_event() is banana.NEED_DATA
    assert root.counter.stopped == 1 and server.table_sizes().caches_exported == 0
    assert server.cache_luid(root.counter) is None
    # The last copy released: the server says the luid is done with.
    assert server.data_to_send() == b"\x02\x80\x1f\x87" + b128(luid) + b"\x81"  # [VOCAB uncache, luid]
    assert server.conduct.violations == 0
    client.send_decache(luid)
    assert deliver(client, server) == []
    assert server.conduct.violations == 1 and root.counter.stopped == 1 and server.data_to_send() == b""


@scenario(b"uncache")
def uncache_ends_a_cached_copy(dialect: bytes) -> None:
    client, server, root = open_pair(dialect)
    client.send_call(b"root", "counter", (), {})
    serve(server, client)
    luid = server.cache_luid(root.counter)
    assert luid is not None and client.table_sizes().caches_imported == 1
    client.send_decache(luid)
    deliver(client, server)
    data = server.data_to_send()
    assert data == banana.encode([b"uncache", luid])
    client.receive_data(data)
    assert client.next_event() is banana.NEED_DATA
    assert client.table_sizes().caches_imported == 0
    # The luid is done with: a second uncache of it is a stray release.
    assert inject(client, [b"uncache", luid]) == []
    assert client.conduct.violations == 1

    # A copy the client refused (no class for it) is given back, and its uncache expected.
    client.send_call(b"root", "unwanted", (), {})
    failed = serve(server, client)
    assert isinstance(failed, Failed) and isinstance(failed.error, JellyError)
    data = client.data_to_send()
    [[command, refused]] = expressions(data)
    assert command == b"decache"
    server.receive_data(data)
    assert server.next_event() is banana.NEED_DATA
    data = server.data_to_send()
    assert data == banana.encode([b"uncache", refused])
    client.receive_data(data)
    assert client.next_event() is banana.NEED_DATA
    assert client.conduct.violations == 1 and client.data_to_send() == b""  # the one above


@scenario(b"didNotUnderstand")
def did_not_understand_answers_an_unknown_command(dialect: bytes) -> None:
    client, server, _ = open_pair(dialect)
    assert inject(server, [b"frobnicate", 1]) == []
    assert server.conduct.violations == 1
    data = server.data_to_send()
    assert data == b"\x02\x80" + b"\x10\x82didNotUnderstand" + b"\x0a\x82frobnicate"
    # Received, it is only logged: the peer did not understand something we sent.
    client.receive_data(data)
    assert client.next_event() is banana.NEED_DATA
    assert client.conduct.count("not understood") == 1 and client.conduct.violations == 0
    assert client.data_to_send() == b""


@scenario(b"cancel")
def cancel_asks_for_a_call_to_stop(dialect: bytes) -> None:
    client, server, _ = open_pair(dialect)
    client.send_call(b"root", "add", (1, 2), {})
    [call] = deliver(client, server)
    client.send_cancel(call.request_id)
    data = client.data_to_send()
    if dialect == PB:
        assert data == b""  # Twisted would drop the connection on a command it does not know
        return
    assert data == b"\x02\x80\x06\x82cancel\x01\x81"
    server.receive_data(data)
    assert server.next_event() == CancelRequested(1)
    assert server.data_to_send() == b""


@scenario(b"deadline")
def deadline_goes_right_before_its_message(dialect: bytes) -> None:
    client, server, _ = open_pair(dialect)
    message = [b"message", 1, b"root", b"add", 1, [b"tuple", 1, 2], [b"dictionary"]]
    client.send_call(b"root", "add", (1, 2), {}, time_left=2.5)
    data = client.data_to_send()
    if dialect == PB:
        assert data == banana.encode(message)
        server.receive_data(data)
        call = server.next_event()
        assert isinstance(call, IncomingCall) and call.time_left is None
        return
    deadline = b"\x03\x80\x08\x82deadline\x01\x81" + banana.encode(2.5)
    assert data == deadline + banana.encode(message)
    server.receive_data(data)
    call = server.next_event()
    assert isinstance(call, IncomingCall) and call.time_left == 2.5

    # A deadline already passed is sent as no time left.
    client.send_call(b"root", "add", (1, 2), {}, time_left=-3.0)
    assert expressions(client.data_to_send())[0] == [b"deadline", 2, 0.0]

    # From the peer: whole seconds are accepted; the deadline applies to its own message only.
    [call] = inject(server, [b"deadline", 7, 3], [*message[:1], 7, *message[2:]])
    assert isinstance(call, IncomingCall) and call.time_left == 3.0 and type(call.time_left) is float
    [call] = inject(server, [*message[:1], 8, *message[2:]])
    assert isinstance(call, IncomingCall) and call.time_left is None
    # One that is not followed by its message is ignored.
    [call] = inject(server, [b"deadline", 20, 1.0], [*message[:1], 9, *message[2:]])
    assert isinstance(call, IncomingCall) and call.time_left is None
    assert server.conduct.violations == 0


# Under pb there is no ping command (a peer's is not understood: see MALFORMED).
@scenario(b"ping", (EXT,))
def ping_is_answered_by_the_protocol(dialect: bytes) -> None:
    client, server, _ = open_pair(dialect)
    client.send_call(b"root", "add", (1, 2), {})
    [call] = deliver(client, server)
    server.send_answer(call.request_id, 3)
    request_id = client.send_ping()
    assert request_id == 2  # from the same counter as the calls
    data = client.data_to_send()
    assert data == b"\x02\x80\x04\x82ping\x02\x81"
    server.receive_data(data)
    assert server.next_event() is banana.NEED_DATA  # no user code runs: no event
    # The pong goes behind what was queued already.
    assert server.data_to_send() == banana.encode([b"answer", 1, 3]) + banana.encode([b"pong", 2])


@scenario(b"pong", (EXT,))
def pong_is_the_answer_to_a_ping(dialect: bytes) -> None:
    client, server, _ = open_pair(dialect)
    request_id = client.send_ping()
    assert deliver(client, server) == []
    data = server.data_to_send()
    assert data == b"\x02\x80\x04\x82pong" + b128(request_id) + b"\x81"
    client.receive_data(data)
    assert client.next_event() == Answer(request_id, None)
    assert client.data_to_send() == b""


@pytest.mark.parametrize(
    ("command", "dialect"),
    [
        pytest.param(command, dialect, id=f"{command.decode()} [{dialect.decode()}]")
        for command, (_, dialects) in sorted(WELL_FORMED.items())
        for dialect in dialects
    ],
)
def test_a_well_formed_message(command: bytes, dialect: bytes) -> None:
    run, _ = WELL_FORMED[command]
    run(dialect)


# -- the malformed messages ----------------------------------------------------------


@attrs.frozen
class Closes:
    """The connection must close: the protocol raises a ProtocolError whose message matches *match*."""

    match: str


@attrs.frozen
class FailsCall:
    """The peer's call fails: an error answer naming *text* is queued, after *also* (given-back tokens)."""

    text: str
    error: type[BaseException] = RemoteError
    also: tuple[Any, ...] = ()


@attrs.frozen
class FailsOurCall:
    """Our call (request 1) fails here: a Failed event, and *also* queued (given-back tokens)."""

    error: type[BaseException]
    also: tuple[Any, ...] = ()


@attrs.frozen
class Violation:
    """Counted against the peer, and answered with *reply* (if any); the connection stays."""

    reply: tuple[Any, ...] = ()


@attrs.frozen
class Ignored:
    """Only logged (a *kind* of warning), not counted: the peer did nothing wrong towards us."""

    kind: str


Outcome = Closes | FailsCall | FailsOurCall | Violation | Ignored


@attrs.frozen
class Case:
    command: bytes
    what: str
    sent: Any
    outcome: Outcome
    dialects: tuple[bytes, ...] = (PB, EXT)


def message(*fields: Any, command: bytes = b"message") -> list[Any]:
    """A message from the peer with its request id 1; *fields* replace the defaults from the left."""
    default = [1, b"root", b"add", 1, [b"tuple", 1, 2], [b"dictionary"]]
    return [command, *fields, *default[len(fields) :]]


ARITY = Closes("takes [0-9]+ fields, got [0-9]+")
NEVER_SENT = Closes("answer to a request never sent")
NOT_AN_INT = Closes("not an int")
NO_COMMAND = Closes("expected a command list")
BAD_DEADLINE = Closes("malformed deadline")
BAD_VERSION = Closes("Version Incompatibility")

MALFORMED: list[Case] = [
    Case(b"version", "another version", [b"version", 5], BAD_VERSION),
    Case(b"version", "a version that is not an int", [b"version", b"6"], BAD_VERSION),
    Case(b"version", "no field", [b"version"], ARITY),
    Case(b"version", "two fields", [b"version", 6, 6], ARITY),
    Case(b"message", "five fields", message()[:-1], ARITY),
    Case(b"message", "seven fields", [*message(), 0], ARITY),
    Case(b"message", "a request id that is not an int", message(b"1"), NOT_AN_INT),
    Case(b"message", "a float request id", message(1.0), NOT_AN_INT),
    Case(b"message", "an answer flag that is not an int", message(1, b"root", b"add", b"yes"), NOT_AN_INT),
    Case(b"message", "a method name that is not bytes", message(1, b"root", 7), FailsCall("method name")),
    Case(b"message", "a method name not in UTF-8", message(1, b"root", b"\xff"), FailsCall("UTF-8")),
    Case(b"message", "an unknown luid", message(1, 99), FailsCall("Invalid Object ID", Error)),
    Case(b"message", "an unknown name", message(1, b"nobody"), FailsCall("Invalid Object ID", Error)),
    Case(b"message", "a target that is a float", message(1, 1.5), FailsCall("Invalid Object ID", Error)),
    Case(
        b"message",
        "no such method",
        message(1, b"root", b"nothing"),
        FailsCall("remote_nothing", NoSuchMethod),
    ),
    Case(
        b"message",
        "arguments that are not a tuple",
        message(1, b"root", b"add", 1, [b"list", 1, 2]),
        FailsCall("tuple and a dict"),
    ),
    Case(
        b"message",
        "keyword arguments that are not a dict",
        message(1, b"root", b"add", 1, [b"tuple"], [b"tuple"]),
        FailsCall("tuple and a dict"),
    ),
    Case(
        b"message",
        "a keyword argument name not in UTF-8",
        message(1, b"root", b"add", 1, [b"tuple", 1], [b"dictionary", [b"\xff", 2]]),
        FailsCall("keyword argument name is not UTF-8"),
    ),
    Case(
        b"message",
        "a keyword argument name that is not a string",
        message(1, b"root", b"add", 1, [b"tuple", 1], [b"dictionary", [1, 2]]),
        FailsCall("keyword argument name is not a string"),
    ),
    Case(
        b"message",
        "arguments that may not be unjellied; their reference is given back",
        message(1, b"root", b"echo", 1, [b"tuple", [b"remote", 7], [b"frobnicate"]]),
        FailsCall("frobnicate", InsecureJelly, also=([b"decref", 7],)),
    ),
    Case(b"message", "an unknown luid, no answer wanted", message(1, 99, b"add", 0), Ignored("failed call")),
    Case(b"cachemessage", "five fields", message(command=b"cachemessage")[:-1], ARITY),
    Case(
        b"cachemessage", "a request id that is not an int", message(b"1", command=b"cachemessage"), NOT_AN_INT
    ),
    Case(
        b"cachemessage",
        "an unknown luid",
        message(1, 99, command=b"cachemessage"),
        FailsCall("Invalid cache ID", Error),
    ),
    Case(
        b"cachemessage",
        "a name for a luid",
        message(1, b"root", command=b"cachemessage"),
        FailsCall("Invalid cache ID", Error),
    ),
    Case(
        b"cachemessage",
        "an unknown luid, no answer wanted",
        message(1, 99, b"set", 0, command=b"cachemessage"),
        Ignored("failed call"),
    ),
    Case(b"answer", "to a request never sent", [b"answer", 2, 3], NEVER_SENT),
    Case(b"answer", "to request 0", [b"answer", 0, 3], NEVER_SENT),
    Case(b"answer", "to a negative request", [b"answer", -1, 3], NEVER_SENT),
    Case(b"answer", "a request id that is not an int", [b"answer", b"1", 3], NEVER_SENT),
    Case(b"answer", "a float request id", [b"answer", 1.0, 3], NEVER_SENT),
    Case(b"answer", "one field", [b"answer", 1], ARITY),
    Case(b"answer", "three fields", [b"answer", 1, 3, 4], ARITY),
    Case(
        b"answer",
        "a value that may not be unjellied",
        [b"answer", 1, [b"frobnicate"]],
        FailsOurCall(JellyError),
    ),
    Case(
        b"answer",
        "a value that may not be unjellied; its reference is given back",
        [b"answer", 1, [b"list", [b"remote", 7], [b"frobnicate"]]],
        FailsOurCall(JellyError, also=([b"decref", 7],)),
    ),
    Case(b"error", "to a request never sent", [b"error", 2, b"boom"], NEVER_SENT),
    Case(b"error", "a request id that is not an int", [b"error", b"1", b"boom"], NEVER_SENT),
    Case(b"error", "one field", [b"error", 1], ARITY),
    Case(b"error", "three fields", [b"error", 1, b"boom", b"boom"], ARITY),
    Case(
        b"error",
        "a failure that may not be unjellied",
        [b"error", 1, [b"frobnicate"]],
        FailsOurCall(JellyError),
    ),
    Case(b"decref", "an unknown luid", [b"decref", 99], Violation()),
    Case(b"decref", "a name (names are never counted)", [b"decref", b"root"], Violation()),
    Case(b"decref", "a float luid", [b"decref", 1.0], Violation()),
    Case(b"decref", "no field", [b"decref"], ARITY),
    Case(b"decref", "two fields", [b"decref", 1, 1], ARITY),
    Case(b"decache", "an unknown luid", [b"decache", 99], Violation()),
    Case(b"decache", "a luid that is not an int", [b"decache", b"x"], Violation()),
    Case(b"decache", "no field", [b"decache"], ARITY),
    Case(b"uncache", "an unknown luid", [b"uncache", 99], Violation()),
    Case(b"uncache", "a luid that is not an int", [b"uncache", b"x"], Violation()),
    Case(b"uncache", "two fields", [b"uncache", 1, 1], ARITY),
    Case(
        b"didNotUnderstand",
        "something that is not a command",
        [b"didNotUnderstand", 7],
        Ignored("not understood"),
    ),
    Case(b"didNotUnderstand", "no field", [b"didNotUnderstand"], ARITY),
    Case(b"didNotUnderstand", "two fields", [b"didNotUnderstand", b"x", b"y"], ARITY),
    Case(b"cancel", "a request id that is not an int", [b"cancel", b"1"], NOT_AN_INT, (EXT,)),
    Case(b"cancel", "no field", [b"cancel"], ARITY, (EXT,)),
    Case(b"cancel", "two fields", [b"cancel", 1, 1], ARITY, (EXT,)),
    Case(b"deadline", "negative seconds", [b"deadline", 1, -1.0], BAD_DEADLINE, (EXT,)),
    Case(b"deadline", "infinite seconds", [b"deadline", 1, math.inf], BAD_DEADLINE, (EXT,)),
    Case(b"deadline", "NaN seconds", [b"deadline", 1, math.nan], BAD_DEADLINE, (EXT,)),
    Case(b"deadline", "seconds that are not a number", [b"deadline", 1, b"2"], BAD_DEADLINE, (EXT,)),
    Case(b"deadline", "a request id that is not an int", [b"deadline", b"1", 2.0], BAD_DEADLINE, (EXT,)),
    Case(b"deadline", "one field", [b"deadline", 1], ARITY, (EXT,)),
    Case(b"ping", "a request id that is not an int", [b"ping", b"1"], NOT_AN_INT, (EXT,)),
    Case(b"ping", "no field", [b"ping"], ARITY, (EXT,)),
    Case(b"pong", "to a request never sent", [b"pong", 2], NEVER_SENT, (EXT,)),
    Case(b"pong", "a request id that is not an int", [b"pong", b"1"], NEVER_SENT, (EXT,)),
    Case(b"pong", "two fields", [b"pong", 1, 1], ARITY, (EXT,)),
    # The extension commands, well formed, are unknown commands under pb.
    Case(b"cancel", "under pb", [b"cancel", 1], Violation(([b"didNotUnderstand", b"cancel"],)), (PB,)),
    Case(
        b"deadline",
        "under pb",
        [b"deadline", 1, 2.0],
        Violation(([b"didNotUnderstand", b"deadline"],)),
        (PB,),
    ),
    Case(b"ping", "under pb", [b"ping", 1], Violation(([b"didNotUnderstand", b"ping"],)), (PB,)),
    Case(b"pong", "under pb", [b"pong", 1], Violation(([b"didNotUnderstand", b"pong"],)), (PB,)),
    # What is no command at all.
    Case(b"", "an unknown command", [b"frobnicate", 1], Violation(([b"didNotUnderstand", b"frobnicate"],))),
    Case(b"", "an empty list", [], NO_COMMAND),
    Case(b"", "a command that is not bytes", [7, 1], NO_COMMAND),
    Case(b"", "an atom", 7, NO_COMMAND),
    Case(b"", "a string", b"message", NO_COMMAND),
]


def _case_id(case: Case) -> str:
    return f"{case.command.decode() or '(none)'}: {case.what}"


@pytest.mark.parametrize(
    ("case", "dialect"),
    [
        pytest.param(case, dialect, id=f"{_case_id(case)} [{dialect.decode()}]")
        for case in MALFORMED
        for dialect in case.dialects
    ],
)
def test_a_malformed_message(case: Case, dialect: bytes) -> None:
    # The client's request 1 and the server's request 1 are both waiting for
    # their answers; the bytes of the client's call are dropped, and the
    # server gets the peer's malformed message instead.
    client, server, _ = open_pair(dialect)
    client.send_call(b"root", "add", (1, 2), {})
    client.data_to_send()
    server.send_call(b"root", "add", (1, 2), {})
    server.data_to_send()
    outcome = case.outcome
    if isinstance(outcome, Closes):
        with pytest.raises(ProtocolError, match=outcome.match):
            inject(server, case.sent)
        return
    events = inject(server, case.sent)
    queued = expressions(server.data_to_send())
    if isinstance(outcome, FailsCall):
        assert events == []
        assert queued[:-1] == list(outcome.also) and queued[-1][:2] == [b"error", 1]
        # The caller sees the error.
        client.receive_data(banana.encode(queued[-1]))
        failed = client.next_event()
        assert isinstance(failed, Failed) and failed.request_id == 1
        assert isinstance(failed.error, outcome.error) and outcome.text in str(failed.error)
        assert server.conduct.violations == 0
    elif isinstance(outcome, FailsOurCall):
        [failed] = events
        assert isinstance(failed, Failed) and failed.request_id == 1
        assert isinstance(failed.error, outcome.error)
        assert queued == list(outcome.also)
        assert server.conduct.violations == 0
    elif isinstance(outcome, Violation):
        assert events == [] and queued == list(outcome.reply)
        assert server.conduct.violations == 1
    else:
        assert events == [] and queued == []
        assert server.conduct.violations == 0 and server.conduct.count(outcome.kind) == 1
    # The connection goes on: the peer's next call is understood.
    [call] = inject(server, message(2))
    assert isinstance(call, IncomingCall) and call.request_id == 2


def test_a_stray_decref_of_a_name_keeps_the_named_object() -> None:
    client, server, _ = open_pair(PB)
    assert inject(server, [b"decref", b"root"]) == []
    assert server.conduct.violations == 1
    client.send_call(b"root", "add", (1, 2), {})
    assert serve(server, client) == Answer(1, 3)


@pytest.mark.parametrize("command", [b"decref", b"decache", b"uncache", b"didNotUnderstand"])
def test_a_long_list_in_a_release_or_did_not_understand_is_logged_cut_short(
    command: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    client, server, _ = open_pair(PB)
    with caplog.at_level("WARNING", logger="trio_pb"):
        assert inject(server, [command, [b"x" * 1000] * 1000]) == []
    [record] = caplog.records
    assert len(record.getMessage()) < 300


# -- the tables cover the protocol ------------------------------------------------------


def _known_commands() -> dict[bytes, bool]:
    """Every command the protocol dispatches, mapped to whether only the extension dialect has it."""
    return {
        **{command: False for command in protocol._COMMANDS},
        **{command: True for command in protocol._EXTENSION_COMMANDS},
    }


def test_the_tables_name_every_command_the_protocol_knows() -> None:
    known = set(_known_commands())
    assert set(WELL_FORMED) == known
    for command, (_, dialects) in WELL_FORMED.items():
        assert EXT in dialects and (PB in dialects or _known_commands()[command]), command
    assert {case.command for case in MALFORMED} - {b""} == known
    # Each command is got wrong at least once in each dialect that has it, once by its arity.
    for command, extension_only in _known_commands().items():
        assert any(case.command == command and case.outcome == ARITY for case in MALFORMED), command
        for dialect in (EXT,) if extension_only else (PB, EXT):
            assert any(case.command == command and dialect in case.dialects for case in MALFORMED), (
                command,
                dialect,
            )
        if extension_only:
            assert any(case.command == command and case.dialects == (PB,) for case in MALFORMED), command


def _documented(text: str) -> set[str]:
    return set(re.findall(r'``\[b"(\w+)"', text))


def test_docs_protocol_lists_every_command_and_which_are_extensions() -> None:
    text = (DOCS / "protocol.rst").read_text()
    base, extension = text.split("The extension dialects\n---", 1)
    known = _known_commands()
    assert _documented(base) == {command.decode() for command, ext in known.items() if not ext}
    # trio-pb-2's commands are documented in the same section (and tested in tests/test_dialect2.py).
    extended = {command.decode() for command, ext in known.items() if ext}
    assert _documented(extension) == extended | {
        command.decode() for command in protocol._EXTENSION_2_COMMANDS
    }


@pytest.mark.parametrize(
    ("expression", "captured"),
    [
        ([b"version", 6], "02 80 13 87 06 81"),
        (
            [b"message", 1, b"root", b"echo", 1, [b"tuple", 1], [b"dictionary"]],
            "07 80 1a 87 01 81 04 82 72 6f 6f 74 04 82 65 63 68 6f 01 81 02 80 0b 87 01 81 01 80 05 87",
        ),
    ],
)
def test_the_examples_of_docs_protocol_are_what_the_core_sends(expression: Any, captured: str) -> None:
    # Bytes captured from Twisted, as docs/protocol.rst gives them (its lines may break them).
    assert captured in " ".join((DOCS / "protocol.rst").read_text().split())
    server = PBProtocol(None, is_client=False, extensions=False)
    client = PBProtocol(None, is_client=True)
    client.receive_data(server.data_to_send())
    assert client.next_event() == Ready(PB)
    server.receive_data(client.data_to_send())
    assert server.next_event() == Ready(PB)
    if expression[0] == b"message":
        server.data_to_send()
        client.send_call(b"root", "echo", (1,), {})
        sent = client.data_to_send()
    else:
        sent = server.data_to_send()  # all the server sends once it knows the dialect
    assert sent == bytes.fromhex(captured) == banana.encode(expression)
