"""A peer's repeated misbehaviour: logged a bounded number of times, and ended after a documented count."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from trio_pb import banana, protocol
from trio_pb.banana import NEED_DATA
from trio_pb.cache import RemoteCache
from trio_pb.conduct import LOG_LIMIT, MAX_VIOLATIONS, PeerConduct
from trio_pb.errors import JellyError, ProtocolError, TooManyViolations
from trio_pb.jelly import CopyRegistry
from trio_pb.protocol import MAX_UNANSWERED_DECACHES, Failed, PBProtocol


def trio_pb_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "trio_pb"]


class RawPeer:
    """A server protocol and a hand-driven client that speaks the pb dialect."""

    def __init__(self, **options: Any) -> None:
        self.server = PBProtocol(None, is_client=False, **options)
        self.encoder = banana.Encoder(b"pb")
        self.decoder = banana.Decoder()
        self.server.set_name_for_local(b"root", object())
        self.replies()  # the dialect offer
        self.send_raw(banana.encode(b"pb", dialect=b"none"))
        self.decoder.vocabulary = banana.PB_VOCABULARY
        self.send([b"version", 6])
        assert self.replies() == [[b"version", 6]]

    def send_raw(self, data: bytes) -> list[Any]:
        self.server.receive_data(data)
        events = []
        while (event := self.server.next_event()) is not NEED_DATA:
            events.append(event)
        return events

    def send(self, *messages: Any) -> list[Any]:
        return self.send_raw(b"".join(self.encoder.encode(m) for m in messages))

    def replies(self) -> list[Any]:
        self.decoder.receive_data(self.server.data_to_send())
        return list(self.decoder)


def test_conduct_logs_each_kind_a_bounded_number_of_times(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trio_pb")
    conduct = PeerConduct("10.0.0.1:5000", log_limit=3)
    for i in range(50):
        conduct.warning("noise", "message %d", i)
    conduct.warning("other", "something else")
    lines = [r.getMessage() for r in trio_pb_records(caplog)]
    assert lines == [
        "10.0.0.1:5000: message 0",
        "10.0.0.1:5000: message 1",
        "10.0.0.1:5000: message 2",
        "10.0.0.1:5000: further noise messages from this peer are counted, not logged",
        "10.0.0.1:5000: something else",
    ]
    assert conduct.count("noise") == 50
    caplog.clear()
    conduct.summary()
    assert [r.getMessage() for r in trio_pb_records(caplog)] == [
        "10.0.0.1:5000: not logged on this connection: 47 noise"
    ]


def test_conduct_ends_the_connection_after_the_limit() -> None:
    conduct = PeerConduct(max_violations=5, log_limit=0)
    for _ in range(5):
        conduct.violation("stray release", "x")
    with pytest.raises(TooManyViolations, match="6 times"):
        conduct.violation("stray release", "x")
    assert issubclass(TooManyViolations, ProtocolError)
    assert (LOG_LIMIT, MAX_VIOLATIONS) == (10, 100)


def test_stray_decrefs_are_logged_boundedly_then_end_the_connection(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="trio_pb")
    peer = RawPeer()
    # A hundred stray decrefs are tolerated (Twisted would have closed at the first) ...
    peer.send(*[[b"decref", 12345 + i] for i in range(MAX_VIOLATIONS)])
    assert peer.server.conduct.violations == MAX_VIOLATIONS
    # ... the next one is one too many.
    with pytest.raises(TooManyViolations):
        peer.send([b"decref", 1])
    assert len(trio_pb_records(caplog)) == LOG_LIMIT + 1


def test_stray_decaches_and_uncaches_count_too() -> None:
    peer = RawPeer(conduct=PeerConduct(max_violations=2))
    peer.send([b"decache", 5], [b"uncache", 6])
    with pytest.raises(TooManyViolations):
        peer.send([b"decref", 7])


def test_unknown_commands_are_answered_a_bounded_number_of_times(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="trio_pb")
    peer = RawPeer(conduct=PeerConduct(max_violations=20))
    peer.send(*[[b"frobnicate", i] for i in range(20)])
    assert peer.replies() == [[b"didNotUnderstand", b"frobnicate"]] * 20
    with pytest.raises(TooManyViolations):
        peer.send([b"frobnicate", 21])
    assert len(trio_pb_records(caplog)) == LOG_LIMIT + 1


def test_failing_calls_without_answers_are_logged_boundedly(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="trio_pb")
    peer = RawPeer()
    call = [b"message", 1, b"nowhere", b"x", 0, [b"tuple"], [b"dictionary"]]
    for request_id in range(1, 1001):
        call[1] = request_id
        peer.send(call)
    # Not a violation (such calls fail honestly too), but not a line each either.
    assert peer.server.conduct.violations == 0
    assert len(trio_pb_records(caplog)) == LOG_LIMIT + 1


def _refused_cache_call(request_id: int, luid: int) -> list[Any]:
    # Arguments carrying the first copy of a cached object of a type we do not accept.
    return [
        b"message",
        request_id,
        b"root",
        b"x",
        1,
        [b"tuple", [b"some.UnknownCache", luid, [b"dictionary"]]],
        [b"dictionary"],
    ]


def test_refused_cache_copies_are_given_back_and_the_uncaches_expected() -> None:
    assert MAX_UNANSWERED_DECACHES == 4096
    peer = RawPeer()
    peer.send(_refused_cache_call(1, 77))
    replies = peer.replies()
    assert [b"decache", 77] in replies
    assert peer.server._unwanted_uncaches == {77}
    peer.send([b"uncache", 77])
    assert not peer.server._unwanted_uncaches
    assert peer.server.conduct.violations == 0


def test_an_honest_peer_answering_each_decache_can_go_on_for_ever() -> None:
    peer = RawPeer(max_references=8)
    for luid in range(1, 101):
        peer.send(_refused_cache_call(luid, luid))
        assert [b"decache", luid] in peer.replies()
        peer.send([b"uncache", luid])
    assert not peer.server._unwanted_uncaches


def test_refused_copies_waiting_for_an_uncache_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol, "MAX_UNANSWERED_DECACHES", 8)
    peer = RawPeer()
    for luid in range(1, 21):
        peer.send(_refused_cache_call(luid, luid))
    # Past the bound, nothing more is remembered, and nothing more is sent back.
    assert peer.server._unwanted_uncaches == set(range(1, 9))
    decaches = [r for r in peer.replies() if r[0] == b"decache"]
    assert decaches == [[b"decache", luid] for luid in range(1, 9)]
    # An uncache makes room again.
    peer.send([b"uncache", 1])
    peer.send(_refused_cache_call(21, 21))
    assert [b"decache", 21] in peer.replies()
    assert peer.server.conduct.violations == 0


class Mirror(RemoteCache):
    pass


def test_received_cached_objects_are_bounded() -> None:
    registry = CopyRegistry()
    registry.register(b"test.Mirrored", Mirror)
    client = PBProtocol(None, is_client=True, registry=registry, max_references=3)
    server = PBProtocol(None, is_client=False)
    client.receive_data(server.data_to_send())
    assert client.next_event() is not NEED_DATA
    request_id = client.send_call(b"root", "get", (), {})
    copies = [[b"test.Mirrored", luid, [b"dictionary"]] for luid in range(1, 6)]
    encoder = banana.Encoder(b"trio-pb-1")
    client.receive_data(encoder.encode([b"answer", request_id, [b"list", *copies]]))
    events = [e for e in iter(client.next_event, NEED_DATA)]
    (failed,) = [e for e in events if isinstance(e, Failed)]
    assert isinstance(failed.error, JellyError)
    assert "more than 3 cached objects" in str(failed.error)
    assert not client.locally_cached


async def test_a_broker_closes_the_connection_of_a_peer_that_keeps_misbehaving() -> None:
    import trio
    import trio.testing

    from trio_pb.broker import open_broker

    client_stream, server_stream = trio.testing.memory_stream_pair()
    ended: list[BaseException | None] = []

    async def serve() -> None:
        try:
            async with open_broker(server_stream, server=True, max_violations=5) as server:
                await server.wait_closed()
                ended.append(server.error)
        except TooManyViolations as exc:  # if it happens before open_broker yields
            ended.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        await client_stream.receive_some()
        encoder = banana.Encoder(b"pb")
        await client_stream.send_all(
            b"\x02\x82pb" + b"".join(encoder.encode([b"decref", i]) for i in range(6))
        )
        with trio.fail_after(5):
            while await client_stream.receive_some():
                pass  # until the server closes
    (error,) = ended
    assert isinstance(error, TooManyViolations)
