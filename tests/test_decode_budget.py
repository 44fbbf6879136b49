"""The decode budget: a message built to be slow to unjelly (colliding hashes) is stopped early."""

from __future__ import annotations

from typing import Any

import pytest
import trio

import trio_pb
from trio_pb import jelly
from trio_pb.errors import DecodeBudgetExceeded, JellyError, PBConnectionLost
from trio_pb.protocol import DECODE_BUDGET
from trio_pb.testing import open_broker_pair

# CPython hashes an int modulo this prime, so these all have the hash 7.
_MODULUS = 2**61 - 1
COLLIDING = [k * _MODULUS + 7 for k in range(1, 20_001)]


def test_defaults() -> None:
    assert DECODE_BUDGET == 0.1


@pytest.mark.parametrize(
    "sexp",
    [
        pytest.param([b"set", *COLLIDING], id="set"),
        pytest.param([b"frozenset", *COLLIDING], id="frozenset"),
        pytest.param([b"dictionary", *[[key, 1] for key in COLLIDING]], id="dict keys"),
        pytest.param([b"list", *[[b"set", *COLLIDING[:200]] for _ in range(400)]], id="many small sets"),
        pytest.param([b"list", [b"tuple", 1, 2], [b"tuple", [b"set", *COLLIDING]]], id="nested"),
    ],
)
def test_colliding_hashes_exhaust_the_budget(sexp: list[Any]) -> None:
    # Unbounded, each of these takes seconds (quadratic); the budget stops it.
    with pytest.raises(DecodeBudgetExceeded):
        jelly.unjelly(sexp, budget=0.05)


@pytest.mark.parametrize("tag", [b"reference", b"dereference"])
def test_reference_ids_are_too_narrow_to_collide(tag: bytes) -> None:
    node = [tag, 2**60 - 1, 1] if tag == b"reference" else [tag, 2**60 - 1]
    wide = [tag, 2**60, 1] if tag == b"reference" else [tag, 2**60]
    if tag == b"reference":
        assert jelly.unjelly([b"list", node]) == [1]
    with pytest.raises(JellyError, match="more than 60 bits"):
        jelly.unjelly([b"list", wide])


def test_only_hashing_is_charged() -> None:
    # A large honest message of few sets: what it costs besides hashing is not counted.
    sexp = jelly.jelly([[i, f"s{i}", [float(i)]] for i in range(100_000)])
    assert len(jelly.unjelly(sexp, budget=1e-9)) == 100_000
    with pytest.raises(DecodeBudgetExceeded):
        jelly.unjelly(jelly.jelly(set(range(1000))), budget=1e-9)


def test_honest_values_fit_the_budget() -> None:
    # Large but ordinary: distinct keys, many nodes, well within 0.1 s + 1 us per element.
    value = {
        "ints": set(range(50_000)),
        "names": {f"user{i}": [i, float(i), b"x" * 10] for i in range(5_000)},
        "frozen": frozenset(range(5_000)),
    }
    sexp = jelly.jelly(value)
    assert jelly.unjelly(sexp, budget=DECODE_BUDGET) == value


def test_no_budget_means_no_clock() -> None:
    sexp = [b"set", *COLLIDING[:2000]]
    assert len(jelly.unjelly(sexp)) == 2000
    assert jelly.Unjellier(jelly.global_security, jelly.copy_registry).hash_budget is None


class RawJelly(jelly.Jellyable):
    """Sends a prepared s-expression as it is (what a hostile peer could send)."""

    def __init__(self, sexp: list[Any]) -> None:
        self.sexp = sexp

    def jelly_for(self, jellier: jelly.Jellier) -> Any:
        return self.sexp


class Echo(trio_pb.Root):
    def remote_echo(self, value: Any) -> Any:
        return value


async def test_a_peer_sending_a_slow_message_loses_its_connection(each_transport: str) -> None:
    async with open_broker_pair(Echo(), transport=each_transport) as (client, server):
        root = await client.root_object()
        assert await root.call_remote("echo", RawJelly([b"set", *COLLIDING[:100]])) == set(COLLIDING[:100])
        with pytest.raises(PBConnectionLost):
            await root.call_remote("echo", RawJelly([b"set", *COLLIDING]))
        await server.wait_closed()
        assert isinstance(server.error, DecodeBudgetExceeded)


async def test_the_budget_is_a_broker_option() -> None:
    async with open_broker_pair(Echo(), decode_budget=None) as (client, server):
        root = await client.root_object()
        with trio.fail_after(60):
            result = await root.call_remote("echo", RawJelly([b"set", *COLLIDING[:3000]]))
        assert len(result) == 3000
        assert server.connected
