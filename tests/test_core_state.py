"""The protocol core's events, state and request lifecycle, driven by hand with no trio (h11 style)."""

from __future__ import annotations

from typing import Any

import pytest
from core_pair import connected_pair, deliver

from trio_pb import banana, errors, protocol
from trio_pb.flavors import Copyable, Root
from trio_pb.protocol import (
    EXTENSION_DIALECT,
    NEED_DATA,
    PAUSED,
    Answer,
    CancelRequested,
    Event,
    Failed,
    IncomingCall,
    PBProtocol,
    Ready,
)


class Calculator(Root):
    def remote_add(self, a: int, b: int) -> int:
        return a + b


class Unsendable(Copyable):
    def get_state_to_copy(self) -> Any:
        raise ValueError("not today")


def incoming_call(server: PBProtocol, client: PBProtocol) -> IncomingCall:
    [call] = deliver(client, server)
    assert isinstance(call, IncomingCall)
    return call


# -- events ------------------------------------------------------------------


def test_every_event_the_protocol_reports_is_an_event() -> None:
    server = PBProtocol(None, is_client=False)
    server.set_name_for_local(b"root", Calculator())
    client = PBProtocol(None, is_client=True)
    [ready] = deliver(server, client)
    assert isinstance(ready, Ready) and isinstance(ready, Event)
    deliver(client, server)
    client.send_call(b"root", "add", (1, 2), {})
    call = incoming_call(server, client)
    server.send_answer(call.request_id, 3)
    [answer] = deliver(server, client)
    assert isinstance(answer, Event) and answer == Answer(1, 3)


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (protocol.Ready(b"pb"), "dialect"),
        (protocol.IncomingCall(1, True, None, (), {}, None), "request_id"),
        (protocol.CancelRequested(1), "request_id"),
        (protocol.Answer(1, 3), "value"),
        (protocol.Failed(1, ValueError()), "error"),
    ],
)
def test_events_are_frozen(event: Any, field: str) -> None:
    before = repr(event)
    with pytest.raises(AttributeError):
        setattr(event, field, 2)
    with pytest.raises(AttributeError):
        delattr(event, field)
    with pytest.raises(AttributeError):
        event.new_attribute = 1
    assert repr(event) == before


def test_the_events_built_on_the_hot_path_are_frozen_too() -> None:
    client, server = connected_pair(Calculator())
    client.send_call(b"root", "add", (1, 2), {})
    call = incoming_call(server, client)
    assert type(call) is IncomingCall
    with pytest.raises(AttributeError):
        call.args = (3, 4)
    server.send_answer(call.request_id, 3)
    [answer] = deliver(server, client)
    assert type(answer) is Answer and answer == Answer(call.request_id, 3)
    with pytest.raises(AttributeError):
        answer.value = 4
    assert call == IncomingCall(call.request_id, True, call.method, (1, 2), {}, None, "add", None, None)


def test_events_equal_only_events_of_their_own_class() -> None:
    assert Answer(1, None) == Answer(1, None)
    assert Answer(1, None) != Failed(1, None)
    assert Answer(1, None) != (1, None)
    assert Failed(1, ValueError()) != Failed(1, ValueError())  # exceptions compare by identity
    assert hash(Answer(1, 2)) == hash(Answer(1, 2))
    assert repr(Answer(1, 3)) == "Answer(request_id=1, value=3)"


def test_the_sentinels_are_singletons_of_their_own_types() -> None:
    assert repr(NEED_DATA) == "NEED_DATA" and repr(PAUSED) == "PAUSED"
    assert type(NEED_DATA) is protocol.NeedData and type(PAUSED) is protocol.Paused
    assert not isinstance(NEED_DATA, Event) and not isinstance(PAUSED, Event)
    client, server = connected_pair(max_held_calls=0)
    assert client.next_event() is NEED_DATA
    client.send_call(b"root", "add", (1, 2), {})
    server.receive_data(client.data_to_send())
    server.pause_above = -1
    assert server.next_event() is PAUSED


# -- state -------------------------------------------------------------------


def test_the_state_goes_from_handshake_to_open_to_closed() -> None:
    server = PBProtocol(None, is_client=False)
    client = PBProtocol(None, is_client=True)
    assert server.state is client.state is protocol.State.HANDSHAKE
    assert client.dialect is None and not client.extended
    deliver(server, client)  # the offer: the client picks, and is open
    assert client.state is protocol.State.OPEN and server.state is protocol.State.HANDSHAKE
    deliver(client, server)  # its choice: the server is open too
    assert server.state is protocol.State.OPEN
    assert client.dialect == server.dialect == protocol.EXTENSION_DIALECT_2
    assert client.extended and server.extended
    client.connection_lost()
    assert client.state is protocol.State.CLOSED and client.closed


def test_the_dialect_is_kept_apart_from_the_state() -> None:
    client, server = connected_pair(extensions=False)
    assert client.state is server.state is protocol.State.OPEN
    assert client.dialect == server.dialect == b"pb"
    assert not client.extended and not server.extended


def test_the_protocol_has_no_instance_dict() -> None:
    # Slots: an idle connection costs less, and attribute access stays fast
    # however many attributes it has (a shared-key dict stops at 30).
    client, server = connected_pair()
    assert not hasattr(client, "__dict__") and not hasattr(server, "__dict__")


# -- local misuse is refused, and nothing is queued ------------------------------


def refused(proto: PBProtocol, action: Any) -> None:
    """Check that *action* raises LocalProtocolError and that *proto* queued nothing for it."""
    queued = proto.bytes_to_send
    with pytest.raises(errors.LocalProtocolError):
        action()
    assert proto.bytes_to_send == queued


def test_nothing_can_be_sent_before_the_handshake() -> None:
    client = PBProtocol(None, is_client=True)
    refused(client, lambda: client.send_call(b"root", "add", (1, 2), {}))
    refused(client, lambda: client.send_call(b"root", "add", (1, 2), {}, answer_required=False))
    refused(client, client.send_ping)
    refused(client, lambda: client.send_answer(1, 3))
    refused(client, lambda: client.send_error(1, ValueError()))
    server = PBProtocol(None, is_client=False, extensions=False)
    server.data_to_send()  # the dialect offer
    refused(server, server.send_ping)
    # The request ids were not used up: the first call, once open, is request 1.
    client, server = connected_pair()
    assert client.send_call(b"root", "add", (1, 2), {}) == 1


@pytest.mark.parametrize("extensions", [True, False])
def test_nothing_can_be_sent_after_close(extensions: bool) -> None:
    client, server = connected_pair(Calculator(), extensions=extensions)
    client.send_call(b"root", "add", (1, 2), {})
    call = incoming_call(server, client)
    server.connection_lost()
    refused(server, lambda: server.send_answer(call.request_id, 3))
    refused(server, lambda: server.send_error(call.request_id, ValueError()))
    refused(server, lambda: server.send_call(b"root", "add", (1, 2), {}))
    refused(server, server.send_ping)


def test_nothing_received_after_close_makes_an_event() -> None:
    # What was on its way when the connection was lost (here the rest of a big value, whose
    # blob the loss forgot) is nobody's to act on: no event, and no error about it.
    client, server = connected_pair(Calculator())
    client.send_call(b"root", "add", (b"x" * 700_000, b""), {}, answer_required=False)
    while client.pump_blob():
        pass
    data = client.data_to_send()
    server.receive_data(data[: len(data) // 2])
    assert server.next_event() is NEED_DATA
    server.connection_lost()
    server.receive_data(data[len(data) // 2 :])
    assert server.next_event() is NEED_DATA


def test_an_answer_to_a_request_never_received_is_refused() -> None:
    client, server = connected_pair(Calculator())
    refused(server, lambda: server.send_answer(99, 3))
    refused(server, lambda: server.send_error(99, ValueError()))
    # Not even the id of one of our own calls.
    server.send_call(b"root", "add", (1, 2), {})
    server.data_to_send()
    refused(server, lambda: server.send_answer(1, 3))


def test_an_answer_to_a_call_that_wants_none_is_refused() -> None:
    client, server = connected_pair(Calculator())
    client.send_call(b"root", "add", (1, 2), {}, answer_required=False)
    call = incoming_call(server, client)
    assert not call.answer_required
    refused(server, lambda: server.send_answer(call.request_id, 3))
    refused(server, lambda: server.send_error(call.request_id, ValueError()))


@pytest.mark.parametrize("first", ["answer", "error"])
def test_a_request_is_answered_once(first: str) -> None:
    client, server = connected_pair(Calculator())
    client.send_call(b"root", "add", (1, 2), {})
    call = incoming_call(server, client)
    if first == "answer":
        server.send_answer(call.request_id, 3)
    else:
        server.send_error(call.request_id, ValueError("no"))
    assert server.bytes_to_send
    server.data_to_send()
    refused(server, lambda: server.send_answer(call.request_id, 3))
    refused(server, lambda: server.send_error(call.request_id, ValueError()))


def test_an_unsendable_answer_still_answers_once() -> None:
    client, server = connected_pair(Calculator())
    client.send_call(b"root", "add", (1, 2), {})
    call = incoming_call(server, client)
    server.send_answer(call.request_id, Unsendable())  # its hook fails: an error goes instead
    [failed] = deliver(server, client)
    assert isinstance(failed, Failed) and failed.request_id == call.request_id
    refused(server, lambda: server.send_error(call.request_id, ValueError()))


def test_a_call_that_fails_before_it_runs_is_answered_by_the_protocol() -> None:
    client, server = connected_pair(Calculator())
    request_id = client.send_call(b"root", "nonexistent", (), {})
    assert deliver(client, server) == []  # answered at once, with the error
    refused(server, lambda: server.send_answer(request_id, 3))
    [failed] = deliver(server, client)
    assert isinstance(failed, Failed) and failed.request_id == request_id


def test_cancelled_by_caller_is_an_answer() -> None:
    client, server = connected_pair(Calculator())
    client.send_call(b"root", "add", (1, 2), {})
    call = incoming_call(server, client)
    server.send_cancelled(call.request_id, deadline_passed=True)
    [failed] = deliver(server, client)
    assert isinstance(failed, Failed) and isinstance(failed.error, errors.CancelledByCaller)
    assert "deadline" in str(failed.error)
    refused(server, lambda: server.send_cancelled(call.request_id, deadline_passed=False))


def test_a_request_id_reused_while_it_awaits_its_answer_is_the_peers_violation() -> None:
    client, server = connected_pair(Calculator())
    call = [b"message", 5, b"root", b"add", 1, [b"tuple", 1, 2], [b"dictionary"]]
    server.receive_data(banana.encode(call, dialect=b"pb"))
    [first] = deliver(client, server)
    assert isinstance(first, IncomingCall) and first.request_id == 5
    server.send_answer(5, 3)
    # Once answered, the id may come again (Twisted's never do, but nothing is lost).
    server.receive_data(banana.encode(call, dialect=b"pb"))
    [again] = deliver(client, server)
    assert isinstance(again, IncomingCall) and again.request_id == 5
    server.receive_data(banana.encode(call, dialect=b"pb"))
    with pytest.raises(errors.ProtocolError, match="reused request id 5"):
        server.next_event()


# -- the lifecycle of our own requests --------------------------------------------


def peer_answers(receiver: PBProtocol, request_id: int, value: Any = 1) -> list[Any]:
    """Feed *receiver* an answer to *request_id*, as a peer that breaks the rules may send it."""
    receiver.receive_data(banana.encode([b"answer", request_id, value], dialect=b"pb"))
    return deliver(PBProtocol(None, is_client=True), receiver)


def test_the_answer_to_an_abandoned_call_makes_no_event() -> None:
    client, server = connected_pair(Calculator())
    request_id = client.send_call(b"root", "add", (1, 2), {})
    call = incoming_call(server, client)
    client.abandon(request_id)
    assert client.abandoned_calls == 1
    server.send_answer(call.request_id, 3)
    assert deliver(server, client) == []
    assert client.abandoned_calls == 0
    assert client.conduct.violations == 0
    # Once dropped, the same answer again is a repeated one.
    assert peer_answers(client, request_id) == []
    assert client.conduct.count("answered twice") == 1


def test_only_awaited_calls_can_be_abandoned() -> None:
    client, server = connected_pair(Calculator())
    with pytest.raises(errors.LocalProtocolError):
        client.abandon(1)
    request_id = client.send_call(b"root", "add", (1, 2), {}, answer_required=False)
    with pytest.raises(errors.LocalProtocolError):
        client.abandon(request_id)
    request_id = client.send_call(b"root", "add", (1, 2), {})
    client.abandon(request_id)
    with pytest.raises(errors.LocalProtocolError):
        client.abandon(request_id)
    client.connection_lost()
    client.abandon(request_id)  # a no-op once closed: every call is over


def test_a_repeated_answer_is_the_peers_violation_and_no_event() -> None:
    client, server = connected_pair(Calculator())
    request_id = client.send_call(b"root", "add", (1, 2), {})
    call = incoming_call(server, client)
    server.send_answer(call.request_id, 3)
    assert deliver(server, client) == [Answer(request_id, 3)]
    assert peer_answers(client, request_id) == []
    assert client.conduct.count("answered twice") == 1
    # An error answer too.
    client.receive_data(banana.encode([b"error", request_id, b"again"], dialect=b"pb"))
    assert client.next_event() is NEED_DATA
    assert client.conduct.count("answered twice") == 2


def test_an_answer_to_a_call_that_wanted_none_is_the_peers_violation() -> None:
    client, server = connected_pair(Calculator())
    request_id = client.send_call(b"root", "add", (1, 2), {}, answer_required=False)
    assert peer_answers(client, request_id) == []
    assert client.conduct.count("answered twice") == 1


def test_an_answer_to_a_request_never_sent_breaks_the_protocol() -> None:
    client, server = connected_pair(Calculator())
    client.send_call(b"root", "add", (1, 2), {})
    for request_id in (0, 2, -1):
        client.receive_data(banana.encode([b"answer", request_id, 1], dialect=b"pb"))
        with pytest.raises(errors.ProtocolError, match="never sent"):
            client.next_event()


def test_abandoned_calls_are_bounded_and_the_oldest_given_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol, "MAX_ABANDONED", 3)
    client, server = connected_pair(Calculator())
    ids = [client.send_call(b"root", "add", (1, 2), {}) for _ in range(5)]
    calls = deliver(client, server)
    for request_id in ids:
        client.abandon(request_id)
    assert client.abandoned_calls == 3
    assert client.conduct.count("given up") == 1
    for call in calls:
        server.send_answer(call.request_id, 3)
    # Given up or not, no answer makes an event, and none is taken for a repeated one.
    assert deliver(server, client) == []
    assert client.abandoned_calls == 0
    assert client.conduct.violations == 0
    assert client.conduct.count("late answer") == 2
    # A repeated answer to a later call is still found out.
    request_id = client.send_call(b"root", "add", (1, 2), {})
    [call] = deliver(client, server)
    server.send_answer(call.request_id, 3)
    assert deliver(server, client) == [Answer(request_id, 3)]
    assert peer_answers(client, request_id) == []
    assert client.conduct.count("answered twice") == 1


@pytest.mark.parametrize("extensions", [True, False])
def test_a_ping_takes_the_best_route_and_its_answer_settles_it(extensions: bool) -> None:
    client, server = connected_pair(Calculator(), extensions=extensions)
    request_id = client.send_ping()
    sent = banana.decode(client.data_to_send(), dialect=b"pb")
    if extensions:
        assert sent == [b"ping", request_id]
    else:
        assert sent[:4] == [b"message", request_id, b"trio_pb.ping", b"ping"]
    server.receive_data(banana.encode(sent, dialect=b"pb"))
    assert server.next_event() is NEED_DATA  # the peer's protocol answers by itself
    [answer] = deliver(server, client)
    assert answer.request_id == request_id
    assert isinstance(answer, Answer if extensions else Failed)
    # An abandoned ping's answer makes no event.
    client.abandon(client.send_ping())
    deliver(client, server)
    assert deliver(server, client) == []
    assert client.abandoned_calls == 0 and client.conduct.violations == 0


def test_a_pong_settles_only_a_ping_and_an_answer_only_a_call() -> None:
    """Request ids of pings and of calls are told apart: the peer cannot settle one with the other."""
    client, server = connected_pair(Root())
    ping = client.send_ping()
    call = client.send_call(b"root", "nothing", (), {})
    deliver(client, server)
    server.data_to_send()  # the pong and the error answer, dropped: forged ones follow
    for forged in ([b"answer", ping, 1], [b"pong", call]):
        client.receive_data(banana.encode(forged, dialect=EXTENSION_DIALECT))
        assert client.next_event() is NEED_DATA
    assert client.conduct.violations == 2
    client.receive_data(banana.encode([b"pong", ping], dialect=EXTENSION_DIALECT))
    assert client.next_event() == Answer(ping, None)


def test_a_cancel_of_a_call_answered_already_makes_no_event() -> None:
    """A cancel that crossed the answer finds nothing to cancel; one for a running call is an event."""

    class Two(Root):
        def remote_a(self) -> None: ...
        def remote_b(self) -> None: ...

    client, server = connected_pair(Two())
    answered = client.send_call(b"root", "a", (), {})
    running = client.send_call(b"root", "b", (), {})
    first, second = deliver(client, server)
    server.send_answer(first.request_id, 1)
    client.send_cancel(answered)
    client.send_cancel(running)
    assert deliver(client, server) == [CancelRequested(running)]
    assert server.conduct.violations == 0
