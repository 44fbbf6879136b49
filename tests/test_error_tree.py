"""One error tree: a single root, and one ``isinstance`` check per family (docs/internals.rst, "Errors")."""

from __future__ import annotations

import datetime
import importlib
import inspect
import pkgutil
from typing import Any

import pytest
import trio

import trio_pb
from trio_pb import banana, errors, failures, paging, typed
from trio_pb.protocol import _Goodbye
from trio_pb.testing import open_broker_pair

LOCAL = errors.LocalProtocolError
VALUE = errors.SerializationError
PEER = errors.ProtocolError
GONE = errors.DisconnectedError
CROSSES = errors.Error
FAMILIES = (LOCAL, VALUE, PEER, GONE)

# Each class and the one family check that is true of it (None: no family);
# the table of docs/internals.rst, "Errors".
TABLE: list[tuple[type[BaseException], type[BaseException] | None]] = [
    (errors.PBError, None),
    (errors.RemoteError, None),
    (errors.NoSuchMethod, None),
    (errors.BananaError, None),
    (paging.PagingError, None),
    (paging.PageBufferOverflow, None),
    (errors.Error, CROSSES),
    (errors.CancelledByCaller, CROSSES),
    (errors.TooManyCalls, CROSSES),
    (typed.BadArguments, CROSSES),
    (errors.LoginFailed, CROSSES),
    (errors.UnauthorizedLogin, CROSSES),
    (errors.LoginThrottled, CROSSES),
    (errors.UnhandledCredentials, CROSSES),
    (errors.LocalProtocolError, LOCAL),
    (errors.StreamsUnsupported, LOCAL),
    (errors.SerializationError, VALUE),
    (errors.JellyError, VALUE),
    (errors.InsecureJelly, VALUE),
    (errors.BananaEncodeError, VALUE),
    (errors.ProtocolError, PEER),
    (errors.BananaDecodeError, PEER),
    (errors.DecodeBudgetExceeded, PEER),
    (errors.TooManyViolations, PEER),
    (_Goodbye, PEER),
    (errors.DisconnectedError, GONE),
    (errors.DeadReferenceError, GONE),
    (errors.PBConnectionLost, GONE),
    (errors.PeerUnresponsive, GONE),
]


def package_exceptions() -> set[type[BaseException]]:
    """Every exception class defined in a trio_pb module."""
    found: set[type[BaseException]] = set()
    for info in pkgutil.iter_modules(trio_pb.__path__, "trio_pb."):
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__.startswith("trio_pb"):
                found.add(obj)
    return found


def test_every_exception_of_the_package_is_under_one_root() -> None:
    classes = package_exceptions()
    assert errors.DeadReferenceError in classes and paging.PagingError in classes
    assert [cls for cls in classes if not issubclass(cls, trio_pb.PBError)] == []
    assert trio_pb.PBError is errors.PBError and "PBError" in trio_pb.__all__
    assert issubclass(errors.NoSuchMethod, AttributeError)


def test_the_table_lists_every_exception_of_the_package() -> None:
    assert {cls for cls, _ in TABLE} == package_exceptions()


@pytest.mark.parametrize(("cls", "family"), TABLE, ids=[cls.__name__ for cls, _ in TABLE])
def test_each_family_is_one_check(cls: type[BaseException], family: type[BaseException] | None) -> None:
    assert [check for check in FAMILIES if issubclass(cls, check)] == (
        [] if family in (None, CROSSES) else [family]
    )
    assert issubclass(cls, CROSSES) == (family is CROSSES)
    assert not issubclass(cls, errors.RemoteError) or cls is errors.RemoteError


@pytest.mark.parametrize(
    "name",
    [
        "BananaError",
        "JellyError",
        "InsecureJelly",
        "DeadReferenceError",
        "PBConnectionLost",
        "Error",
        "RemoteError",
        "ProtocolError",
        "UnauthorizedLogin",
        "NoSuchMethod",
    ],
)
def test_twisted_names_are_exported(name: str) -> None:
    assert getattr(trio_pb, name) is getattr(errors, name)
    assert name in trio_pb.__all__


def test_an_oversized_string_is_a_banana_error_and_a_value_that_cannot_be_sent() -> None:
    encoder = banana.Encoder(size_limit=10)
    for family in (errors.BananaError, errors.SerializationError):
        with pytest.raises(family):
            encoder.encode(b"x" * 11)
    with pytest.raises(errors.BananaError) as info:
        encoder.encode(b"x" * 11)
    assert not isinstance(info.value, errors.ProtocolError)


@pytest.mark.parametrize("garbage", [b"\x01\x99", b"\x00\x00\x00\x00\x04\x80", b"\x10\x87"])
def test_garbage_received_is_a_banana_error_and_a_protocol_error(garbage: bytes) -> None:
    for family in (errors.BananaError, errors.ProtocolError):
        decoder = banana.Decoder()
        decoder.receive_data(garbage)
        with pytest.raises(family):
            decoder.next_expression()
    decoder = banana.Decoder()
    decoder.receive_data(garbage)
    with pytest.raises(errors.BananaError) as info:
        decoder.next_expression()
    assert not isinstance(info.value, errors.SerializationError)


#: Jelly cannot send a datetime with a time zone (Twisted cannot).
AWARE = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


class Echo(trio_pb.Root):
    def remote_echo(self, value: Any) -> Any:
        return value

    def remote_unsendable(self) -> Any:
        return AWARE


async def test_a_value_that_cannot_be_sent_fails_one_call_and_the_connection_stays(
    each_transport: str,
) -> None:
    # Strings past SIZE_LIMIT go in chunks under trio-pb-2, up to max_value_size.
    async with open_broker_pair(Echo(), transport=each_transport, max_value_size=banana.SIZE_LIMIT) as (
        client,
        server,
    ):
        root = await client.root_object()
        for unsendable in (AWARE, "x" * (banana.SIZE_LIMIT + 1)):
            with pytest.raises(errors.SerializationError):
                await root.call_remote("echo", unsendable)
        # An answer the server cannot send fails that call only, too.
        with pytest.raises(errors.RemoteError) as info:
            await root.call_remote("unsendable")
        assert info.value.remote_type == b"trio_pb.errors.JellyError"
        assert await root.call_remote("echo", 1) == 1
        assert client.connected and server.connected


async def test_a_decode_error_closes_the_connection() -> None:
    async with open_broker_pair(Echo()) as (client, server):
        root = await client.root_object()
        # The client's stream stands in for a peer that sends bytes that are not banana.
        await client._stream.send_all(b"\x01\x99")
        with trio.fail_after(5):
            await server.wait_closed()
        assert isinstance(server.error, errors.BananaError)
        assert isinstance(server.error, errors.ProtocolError)
        with pytest.raises(errors.DisconnectedError):
            await root.call_remote("echo", 1)


BUILTIN_BASES = ["builtins.Exception", "builtins.BaseException", "builtins.object"]


@pytest.mark.parametrize(
    ("cls", "parents"),
    [
        (errors.Error, ["twisted.spread.pb.Error"]),
        (errors.TooManyCalls, ["trio_pb.errors.TooManyCalls", "twisted.spread.pb.Error"]),
        (errors.JellyError, ["trio_pb.errors.JellyError", "twisted.spread.pb.ProtocolError"]),
        (
            errors.InsecureJelly,
            [
                "twisted.spread.jelly.InsecureJelly",
                "trio_pb.errors.JellyError",
                "twisted.spread.pb.ProtocolError",
            ],
        ),
        (errors.BananaEncodeError, ["twisted.spread.banana.BananaError", "twisted.spread.pb.ProtocolError"]),
        (errors.BananaDecodeError, ["twisted.spread.banana.BananaError", "twisted.spread.pb.ProtocolError"]),
        (
            errors.DeadReferenceError,
            ["twisted.spread.pb.DeadReferenceError", "twisted.spread.pb.ProtocolError"],
        ),
        (
            errors.PBConnectionLost,
            [
                "twisted.spread.pb.PBConnectionLost",
                "twisted.spread.pb.DeadReferenceError",
                "twisted.spread.pb.ProtocolError",
            ],
        ),
        (errors.NoSuchMethod, ["twisted.spread.flavors.NoSuchMethod", "builtins.AttributeError"]),
        (paging.PagingError, ["trio_pb.paging.PagingError"]),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else "",
)
def test_the_new_bases_do_not_reach_the_wire(cls: type[BaseException], parents: list[str]) -> None:
    # The parents each class was always sent with: the root and the family bases are not named.
    assert failures.failure_state(cls("x"))["parents"] == [*parents, *BUILTIN_BASES]
    assert failures.failure_state(cls("x"))["type"] == parents[0].encode()
