"""trio_pb._deadline reads the effective deadline trio's own function gives, in any nesting of scopes."""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_pb import _deadline

#: An enclosing scope: (deadline in seconds from now or None, shield, cancelled, a nursery's).
Layer = tuple[float | None, bool, bool, bool]

#: Up to eight enclosing scopes, outermost first.
scopes = st.lists(
    st.tuples(
        st.one_of(st.none(), st.floats(min_value=-1.0, max_value=1000.0)),
        st.booleans(),
        st.booleans(),
        st.booleans(),
    ),
    max_size=8,
)


async def _both_answers(layers: list[Layer]) -> list[tuple[float, float]]:
    """trio's answer and ours at each depth of *layers* (outermost first), and after a change in place."""
    answers = [(trio.current_effective_deadline(), _deadline._read_deadline())]
    async with contextlib.AsyncExitStack() as stack:
        scope = None
        for seconds, shield, cancelled, nursery in layers:
            if nursery:
                scope = (await stack.enter_async_context(trio.open_nursery())).cancel_scope
            else:
                scope = stack.enter_context(trio.CancelScope())
            if seconds is not None:
                scope.deadline = trio.current_time() + seconds
            scope.shield = shield
            if cancelled:
                scope.cancel()
            answers.append((trio.current_effective_deadline(), _deadline._read_deadline()))
        if scope is not None:
            # Changed in place after entering: read live, never cached.
            scope.deadline = trio.current_time() + 5.0
            answers.append((trio.current_effective_deadline(), _deadline._read_deadline()))
    return answers


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layers=scopes)
def test_the_fast_read_is_trios_answer_in_any_nesting(layers: list[Layer]) -> None:
    for trios, ours in trio.run(_both_answers, layers):
        assert ours == trios


async def test_relative_deadlines_and_move_on_after_read_alike() -> None:
    with trio.move_on_after(30):
        with trio.CancelScope(relative_deadline=10):
            assert _deadline._read_deadline() == trio.current_effective_deadline() != math.inf
        with trio.fail_after(5):
            assert _deadline._read_deadline() == trio.current_effective_deadline()
    assert _deadline._read_deadline() == trio.current_effective_deadline() == math.inf


async def test_the_first_read_settles_on_the_fast_loop_if_it_agrees() -> None:
    reader = _deadline.DeadlineReader()
    with trio.move_on_after(7):
        assert reader.read() == trio.current_effective_deadline()
    assert reader.read is _deadline._read_deadline


@pytest.mark.parametrize("broken", ["missing field", "wrong answer"])
async def test_a_trio_whose_scopes_differ_gets_trios_own_function(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, broken: str
) -> None:
    def missing() -> float:
        raise AttributeError("'CancelStatus' object has no attribute '_scope'")

    def wrong() -> float:
        return 12.0

    monkeypatch.setattr(_deadline, "_read_deadline", missing if broken == "missing field" else wrong)
    caplog.set_level(logging.DEBUG, logger="trio_pb")
    reader = _deadline.DeadlineReader()
    with trio.move_on_after(3):
        # The first answer is trio's, whatever the fast loop said.
        assert reader.read() == trio.current_effective_deadline()
    assert reader.read is trio.current_effective_deadline
    assert "read through trio's API" in caplog.text


def test_the_brokers_reader_is_the_fast_loop_once_used() -> None:
    async def main() -> None:
        # However many reads came before in this process, the one in use agrees with trio.
        with trio.move_on_after(5):
            assert _deadline.deadlines.read() == trio.current_effective_deadline()

    trio.run(main)
    assert _deadline.deadlines.read is _deadline._read_deadline


async def test_a_call_carries_the_callers_deadline_through_the_fast_read() -> None:
    # End to end: the peer's method sees the caller's deadline (its own clock's, minus transit).
    import trio_pb
    from trio_pb.testing import open_broker_pair

    seen: list[Any] = []

    class Root(trio_pb.Root):
        async def remote_when(self) -> None:
            seen.append(trio.current_effective_deadline() - trio.current_time())

    async with open_broker_pair(Root()) as (client, _server):
        root = await client.root_object()
        with trio.move_on_after(20):
            await root.call_remote("when")
        await root.call_remote("when")
    assert 0 < seen[0] <= 20
    assert seen[1] == math.inf
