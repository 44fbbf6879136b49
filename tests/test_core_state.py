"""The protocol core's events, state and request lifecycle, driven by hand with no trio (h11 style)."""

from __future__ import annotations

from typing import Any

import pytest
from core_pair import connected_pair, deliver

from trio_pb import protocol
from trio_pb.flavors import Root
from trio_pb.protocol import NEED_DATA, PAUSED, Answer, Event, Failed, IncomingCall, PBProtocol, Ready


class Calculator(Root):
    def remote_add(self, a: int, b: int) -> int:
        return a + b


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
    with pytest.raises(AttributeError):
        setattr(event, field, 2)
    with pytest.raises(AttributeError):
        event.new_attribute = 1


def test_events_equal_only_events_of_their_own_class() -> None:
    assert Answer(1, None) == Answer(1, None)
    assert Answer(1, None) != Failed(1, None)
    assert Answer(1, None) != (1, None)
    assert hash(Answer(1, 2)) == hash(Answer(1, 2))
    assert repr(Answer(1, 3)) == "Answer(request_id=1, value=3)"


def test_the_sentinels_are_singletons_of_their_own_types() -> None:
    assert repr(NEED_DATA) == "NEED_DATA" and repr(PAUSED) == "PAUSED"
    assert type(NEED_DATA) is protocol.NeedData and type(PAUSED) is protocol.Paused
    assert not isinstance(NEED_DATA, Event) and not isinstance(PAUSED, Event)
    client, server = connected_pair()
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
    assert client.dialect == server.dialect == protocol.EXTENSION_DIALECT
    assert client.extended and server.extended
    client.connection_lost()
    assert client.state is protocol.State.CLOSED and client.closed


def test_the_dialect_is_kept_apart_from_the_state() -> None:
    client, server = connected_pair(extensions=False)
    assert client.state is server.state is protocol.State.OPEN
    assert client.dialect == server.dialect == b"pb"
    assert not client.extended and not server.extended


def test_the_protocol_keeps_few_instance_attributes() -> None:
    # CPython's shared-key instance dicts stop being cheap at 30 attributes.
    client, server = connected_pair()
    assert len(vars(client)) <= 29 and len(vars(server)) <= 29
