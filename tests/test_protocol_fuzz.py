"""The sans-IO protocol core fed hostile messages: only ProtocolError may come out.

No trio here: PBProtocol is driven directly, bytes in and events out.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_pb import banana
from trio_pb.errors import ProtocolError
from trio_pb.flavors import Referenceable, Root
from trio_pb.protocol import IncomingCall, PBProtocol, Ready


class Echo(Root):
    def remote_echo(self, value: object) -> object:
        return value

    def remote_thing(self) -> Referenceable:
        return Referenceable()


WORDS = [w for w in banana.PB_VOCABULARY if w] + [b"cancel", b"didNotUnderstand", b"root", b"echo", b"thing"]
atoms = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.sampled_from(WORDS),
    st.binary(max_size=8),
)
sexps = st.recursive(atoms, lambda inner: st.lists(inner, max_size=6), max_leaves=30)
messages = st.lists(st.sampled_from(WORDS), min_size=1, max_size=1).flatmap(
    lambda head: st.lists(sexps, max_size=7).map(lambda rest: head + rest)
)


def server() -> PBProtocol:
    protocol = PBProtocol(None, is_client=False)  # a BareDriver: driven by hand
    protocol.set_name_for_local(b"root", Echo())
    protocol.receive_data(b"\x02\x82pb")  # a client that chose pb
    assert isinstance(protocol.next_event(), Ready)
    protocol.data_to_send()
    return protocol


def drain(protocol: PBProtocol) -> list[Any]:
    events = []
    while (event := protocol.next_event()) is not banana.NEED_DATA:
        events.append(event)
        if isinstance(event, IncomingCall) and event.answer_required:
            protocol.send_answer(event.request_id, event.method(*event.args, **event.kwargs))
    return events


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages, min_size=1, max_size=5))
def test_hostile_messages_raise_only_protocol_errors(batch: list[list[Any]]) -> None:
    protocol = server()
    try:
        for message in batch:
            protocol.receive_data(banana.encode(message))
            drain(protocol)
            protocol.data_to_send()
    except ProtocolError:
        pass


def test_a_well_formed_call_after_garbage_arguments_still_works() -> None:
    protocol = server()
    bad_args = [b"message", 1, b"root", b"echo", 1, [b"no-such-tag", 1], [b"dictionary"]]
    good = [b"message", 2, b"root", b"echo", 1, [b"tuple", 7], [b"dictionary"]]
    protocol.receive_data(banana.encode(bad_args) + banana.encode(good))
    drain(protocol)
    decoder = banana.Decoder(vocabulary=banana.PB_VOCABULARY)
    decoder.receive_data(protocol.data_to_send())
    replies = list(decoder)
    assert [r[:2] for r in replies] == [[b"error", 1], [b"answer", 2]]
    assert replies[1][2] == 7
