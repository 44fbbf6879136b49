"""Counterparts of small twisted.spread.pb names: challenge, CopyableFailure, IPBRoot, AsReferenceable ..."""

from __future__ import annotations

from typing import Any

import pytest

import trio_pb
from trio_pb import errors
from trio_pb.cred import Portal
from trio_pb.failures import (
    COPYABLE_FAILURE_TAG,
    CopiedFailure,
    CopyableFailure,
    failure2Copyable,
    failure_state,
    to_exception,
)
from trio_pb.flavors import AsReferenceable, Avatar, IPBRoot, Referenceable, Root, Serializable, Viewable
from trio_pb.jelly import Jellyable, jelly
from trio_pb.login import ChallengeResponse, challenge, make_challenge, respond
from trio_pb.testing import open_broker_pair

NAMES = [
    "AsReferenceable",
    "CopyableFailure",
    "IPBRoot",
    "Serializable",
    "challenge",
    "failure2Copyable",
    "respond",
]


def test_the_names_are_exported_from_the_package() -> None:
    for name in NAMES:
        assert name in trio_pb.__all__
        assert getattr(trio_pb, name) is not None


# -- challenge ----------------------------------------------------------------------------


def test_challenge_is_fresh_and_answered_by_respond() -> None:
    first, second = challenge(), challenge()
    assert first != second
    assert len(first) == len(make_challenge()) == 16
    credentials = ChallengeResponse(b"alice", first, respond(first, b"secret"))
    assert credentials.check_password(b"secret")
    assert not credentials.check_password(b"wrong")


# -- CopyableFailure -------------------------------------------------------------------------


def test_copyable_failure_jellies_as_the_failure_the_broker_sends() -> None:
    exc = ValueError("boom")
    copyable = CopyableFailure(exc)
    assert (copyable.value, copyable.type, copyable.unsafe_tracebacks) == (exc, ValueError, False)
    assert jelly(copyable) == [COPYABLE_FAILURE_TAG, jelly(failure_state(exc))]


def test_failure2copyable_wraps_an_exception() -> None:
    try:
        raise KeyError("k")
    except KeyError as exc:
        unsafe = failure2Copyable(exc, 1)
        safe = failure2Copyable(exc)
    assert isinstance(unsafe, CopyableFailure)
    assert unsafe.unsafe_tracebacks is True
    assert "raise KeyError" in unsafe.get_state_to_copy()["traceback"]
    assert safe.get_state_to_copy()["traceback"] == "Traceback unavailable\n"


class FailureSource(Root):
    def remote_failure(self) -> list[Any]:
        return [CopyableFailure(errors.UnauthorizedLogin("no")), failure2Copyable(ValueError("boom"))]


async def test_a_copyable_failure_arrives_as_a_copied_failure() -> None:
    async with open_broker_pair(FailureSource()) as (client, _server):
        root = await client.root_object()
        known, unknown = await root.call_remote("failure")
    assert isinstance(known, CopiedFailure)
    assert isinstance(unknown, CopiedFailure)
    assert known.state["type"] == b"twisted.cred.error.UnauthorizedLogin"
    # to_exception makes either raisable: a registered class as itself, any other as RemoteError.
    assert isinstance(to_exception(known), errors.UnauthorizedLogin)
    raised = to_exception(unknown)
    assert isinstance(raised, errors.RemoteError)
    assert (raised.remote_type, raised.value) == (b"builtins.ValueError", "boom")


# -- IPBRoot and Serializable ---------------------------------------------------------------------


def test_ipbroot_is_what_serves_a_root_per_connection() -> None:
    class OwnRoot:
        def root_object(self, broker: Any) -> Referenceable:
            return Referenceable()

    assert isinstance(Root(), IPBRoot)
    assert isinstance(Portal(None), IPBRoot)
    assert isinstance(OwnRoot(), IPBRoot)
    assert not isinstance(Referenceable(), IPBRoot)


def test_serializable_is_the_base_of_every_flavour() -> None:
    assert Serializable is Jellyable
    for flavour in (trio_pb.Copyable, trio_pb.Referenceable, trio_pb.Viewable, trio_pb.Cacheable):
        assert issubclass(flavour, Serializable)


# -- AsReferenceable ---------------------------------------------------------------------------------


class Calculator:
    """Not a Referenceable: AsReferenceable makes it one."""

    def remote_add(self, a: int, b: int) -> int:
        return a + b

    async def remote_slow_add(self, a: int, b: int) -> int:
        return a + b

    def do_add(self, a: int, b: int) -> str:
        return f"do {a + b}"

    not_callable = 3


class Seen(Viewable):
    def view_who(self, perspective: Any) -> object:
        return getattr(perspective, "name", perspective)


class User(Avatar):
    name = "alice"

    def perspective_whoami(self) -> str:
        return self.name

    def perspective_view(self) -> Seen:
        return Seen()


class Offers(Root):
    def __init__(self) -> None:
        self.calculator = Calculator()

    def remote_calculator(self, prefix: str = "remote") -> AsReferenceable:
        return AsReferenceable(self.calculator, prefix)

    def remote_user(self) -> AsReferenceable:
        return AsReferenceable(User(), "perspective")


async def test_as_referenceable_calls_prefixed_methods_of_another_object() -> None:
    async with open_broker_pair(Offers()) as (client, _server):
        root = await client.root_object()
        calculator = await root.call_remote("calculator")
        assert await calculator.call_remote("add", 1, 2) == 3
        assert await calculator.call_remote("slow_add", 3, 4) == 7
        with pytest.raises(errors.NoSuchMethod):
            await calculator.call_remote("do_add", 1, 2)
        with pytest.raises(errors.NoSuchMethod):
            await calculator.call_remote("missing")
        with pytest.raises(errors.NoSuchMethod):
            await calculator.call_remote("not_callable")

        other = await root.call_remote("calculator", "do")
        assert await other.call_remote("add", 1, 2) == "do 3"
        with pytest.raises(errors.RemoteError) as info:
            await other.call_remote("remote_add", 1, 2)
        assert info.value.remote_type == b"builtins.AttributeError"


async def test_as_referenceable_of_an_avatar_answers_with_its_perspective() -> None:
    async with open_broker_pair(Offers()) as (client, _server):
        root = await client.root_object()
        user = await root.call_remote("user")
        assert await user.call_remote("whoami") == "alice"
        # A Viewable in the answer sees the avatar as its perspective, as if the avatar itself answered.
        seen = await user.call_remote("view")
        assert await seen.call_remote("who") == "alice"


def test_as_referenceable_repr() -> None:
    calculator = Calculator()
    assert repr(AsReferenceable(calculator, "do")) == f"AsReferenceable({calculator!r}, 'do')"
