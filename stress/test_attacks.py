"""Attacks on a real ``serve_tcp`` server process; each bound of issue 9 measured from outside.

Each test starts ``server.py`` in a process of its own, lets an honest client
call ``add(1, 2)`` the whole time, runs one ``attacker.py`` process against
it, and checks what docs/internals.rst ("Limits") promises: the server's
memory (VmHWM, from ``/proc``) stays within a stated bound, the honest
client's calls keep being answered promptly, the server's log stays short,
and an attacker who keeps breaking the rules is disconnected.

The bounds are generous against what a correct server needs (so that a busy
two-core machine does not fail them), and several times below what a server
without the limits reaches.
"""

from __future__ import annotations

from collections.abc import Callable

from harness import MB, Measurement, ServerProcess, run_attack

import trio_pb
from trio_pb.conduct import MAX_VIOLATIONS

#: Honest calls while the server is under attack: the slowest one, and the 99th percentile.
WORST_LATENCY = 2.0
P99_LATENCY = 0.5


def assert_served(m: Measurement, *, worst: float = WORST_LATENCY, p99: float = P99_LATENCY) -> None:
    """The server survived, and answered every honest call, in time."""
    assert m.server_alive, f"the server died: {m.summary()}"
    assert m.honest.error is None, f"an honest call failed: {m.summary()}"
    assert m.honest.worst < worst, f"an honest call took more than {worst} s: {m.summary()}"
    assert m.honest.p99 < p99, f"honest calls: p99 over {p99} s: {m.summary()}"


def assert_finished(m: Measurement) -> None:
    assert not m.attacker.get("timed_out"), f"the attacker did not finish in time: {m.summary()}"


# -- 1. output backpressure ------------------------------------------------------------------------


async def test_big_answers_to_a_peer_that_does_not_read_stay_near_the_send_limit(
    server: ServerProcess,
) -> None:
    """200 calls of 600 KB answers in one write: at most the 16 MiB send buffer and one answer queue up."""
    m = await run_attack(server, "nonreader", "--calls", "200", "--size", "600000", "--hold", "3", timeout=60)
    assert_finished(m)
    assert m.growth < 64 * MB, f"the server took +{m.growth / MB:.0f} MB: {m.summary()}"
    assert_served(m)


async def test_tiny_answers_to_a_peer_that_does_not_read_cost_their_size(server: ServerProcess) -> None:
    """~570,000 calls answered with 8 bytes each, never read: the backlog is a buffer, not objects."""
    m = await run_attack(
        server, "flood", "--max-bytes", "18000000", "--seconds", "30", "--hold", "1", timeout=60
    )
    assert_finished(m)
    answers = m.attacker["calls_sent"] * 8
    assert m.attacker["bytes_sent"] >= 17_000_000, f"the attacker could not send its calls: {m.summary()}"
    assert m.growth < 3 * answers, (
        f"{answers / MB:.1f} MB of answers took +{m.growth / MB:.0f} MB of server memory: {m.summary()}"
    )
    assert_served(m)


# -- 2. one message --------------------------------------------------------------------------------


async def test_a_set_of_colliding_hashes_is_cut_short_by_the_decode_budget(server: ServerProcess) -> None:
    """80,000 ints with one hash in one set: the call fails within the budget, nobody else waits."""
    m = await run_attack(server, "hashset", "--count", "80000", "--wait", "10", timeout=60)
    assert_finished(m)
    assert m.attacker["outcome"] in ("error", "disconnected"), f"the call was not refused: {m.summary()}"
    assert m.attacker["seconds"] < 2, f"the server worked on the message for too long: {m.summary()}"
    assert_served(m, worst=1.0)


async def test_a_message_of_millions_of_empty_lists_is_refused(server: ServerProcess) -> None:
    """10 MB of empty lists (2.6 million, over the item limit): refused before it costs 36 times its size."""
    m = await run_attack(server, "emptylists", "--megabytes", "10", "--wait", "20", timeout=60)
    assert_finished(m)
    assert m.attacker["outcome"] in ("error", "disconnected"), f"the call was not refused: {m.summary()}"
    assert m.growth < 150 * MB, f"the server took +{m.growth / MB:.0f} MB: {m.summary()}"
    assert_served(m)


async def test_calls_beyond_the_running_limit_are_refused(server: ServerProcess) -> None:
    """100,000 calls to an async method that sleeps: 1000 run, the others fail with TooManyCalls."""
    calls = 100_000
    m = await run_attack(
        server, "sleepers", "--calls", str(calls), "--sleep", "60", "--wait", "30", timeout=90
    )
    assert_finished(m)
    assert m.growth < 80 * MB, f"the server took +{m.growth / MB:.0f} MB: {m.summary()}"
    assert m.attacker["too_many_calls"] >= calls * 0.95, f"calls were not refused: {m.summary()}"
    assert not m.attacker["disconnected"], f"a refused call is not a reason to disconnect: {m.summary()}"
    assert_served(m)


# -- 4. closed connections -------------------------------------------------------------------------


async def test_closed_connections_are_freed_without_the_garbage_collector(
    start_server: Callable[..., ServerProcess],
) -> None:
    """1,500 connections opened and closed, with the server's gc disabled: its memory stays flat."""
    server = start_server(no_gc=True)
    m = await run_attack(server, "churn", "--connections", "1500", "--concurrency", "4", timeout=90)
    assert_finished(m)
    assert m.attacker["connections"] == 1500
    async with trio_pb.open_tcp_broker("127.0.0.1", server.port) as broker:
        root = await broker.root_object()
        live = await root.call_remote("live_brokers")
    growth = m.rss_after - m.rss_before
    assert live <= 3, f"{live} brokers are still in memory: {m.summary()}"
    assert growth < 6 * MB, f"the server kept +{growth / MB:.1f} MB: {m.summary()}"
    assert_served(m)


# -- 5. a message that arrives slowly --------------------------------------------------------------


async def test_a_string_dripped_one_byte_per_write_costs_its_size(server: ServerProcess) -> None:
    """8 connections drip 640 KiB strings one byte per write: the partial strings cost about their size."""
    m = await run_attack(
        server,
        "drip",
        "--connections",
        "8",
        "--pause",
        "0.00002",
        "--seconds",
        "10",
        "--hold",
        "1",
        timeout=60,
    )
    assert_finished(m)
    dripped = m.attacker["dripped_bytes"]
    assert dripped > 100_000, f"too little was dripped to measure: {m.summary()}"
    assert m.growth < 3 * dripped + 1 * MB, (
        f"{dripped / MB:.2f} MB of partial strings took +{m.growth / MB:.1f} MB: {m.summary()}"
    )
    assert_served(m)


# -- 6. cache tokens that fail to unjelly ----------------------------------------------------------


async def test_refused_cache_tokens_leave_bounded_tables_and_answers(server: ServerProcess) -> None:
    """1,000,000 first copies of a Cacheable that fail to unjelly: no table, no decache per token."""
    tokens = 1_000_000
    m = await run_attack(
        server, "cachetokens", "--tokens", str(tokens), "--per-message", "20000", "--wait", "30", timeout=90
    )
    assert_finished(m)
    decaches = m.attacker["received"].get("decache", 0)
    assert m.growth < 40 * MB, f"the server took +{m.growth / MB:.0f} MB: {m.summary()}"
    assert decaches <= tokens // 10, f"the server sent {decaches} decache messages: {m.summary()}"
    assert_served(m)


# -- 7. log amplification --------------------------------------------------------------------------


async def test_stray_decrefs_are_logged_boundedly_and_end_the_connection(server: ServerProcess) -> None:
    """300,000 decrefs of an object nobody holds: a few log lines, then the attacker is disconnected."""
    m = await run_attack(
        server, "stray", "--kind", "decref", "--count", "300000", "--seconds", "20", timeout=60
    )
    assert_finished(m)
    assert len(m.log) <= 50, f"{len(m.log)} log lines for one connection: {m.summary()}"
    assert m.attacker["disconnected"], f"the attacker was not disconnected: {m.summary()}"
    assert_served(m)


async def test_unknown_commands_are_logged_boundedly_and_end_the_connection(server: ServerProcess) -> None:
    """300,000 unknown commands: a few log lines, at most the violation limit of answers, then goodbye."""
    m = await run_attack(
        server, "stray", "--kind", "unknown", "--count", "300000", "--seconds", "20", timeout=60
    )
    assert_finished(m)
    answers = m.attacker["received"].get("didNotUnderstand", 0)
    assert len(m.log) <= 50, f"{len(m.log)} log lines for one connection: {m.summary()}"
    assert m.attacker["disconnected"], f"the attacker was not disconnected: {m.summary()}"
    assert answers <= MAX_VIOLATIONS + 1, f"{answers} didNotUnderstand answers: {m.summary()}"
    assert_served(m)


# -- 9. login --------------------------------------------------------------------------------------


#: Wrong passwords until the connection is closed, for at most 30 s or 2,000 failures.
LOGIN_FLOOD = ("login", "--max-failures", "2000", "--seconds", "30")


def _login_warnings(m: Measurement) -> list[str]:
    return [line for line in m.log if line.startswith("WARNING") and "alice" in line and "127.0.0.1" in line]


async def test_wrong_passwords_on_one_connection_are_slowed_logged_and_cut_off(server: ServerProcess) -> None:
    """Wrong passwords as fast as the server answers: logged boundedly, the connection closed after a few."""
    m = await run_attack(server, *LOGIN_FLOOD, "--connections", "1", port=server.login_port, timeout=60)
    assert_finished(m)
    [failures] = m.attacker["failures"]
    assert m.attacker["closed"] == [True], f"the connection was not closed: {m.summary()}"
    assert failures <= 100, f"{failures} wrong passwords before the connection was closed: {m.summary()}"
    assert m.attacker["failures_per_second"] < 200, f"failures were not slowed down: {m.summary()}"
    assert _login_warnings(m), f"no WARNING naming the user and the peer: {m.summary()}"
    assert len(m.log) <= 30, f"{len(m.log)} log lines for one connection: {m.summary()}"
    assert_served(m)


async def test_wrong_passwords_on_eight_connections_are_each_slowed_and_cut_off(
    server: ServerProcess,
) -> None:
    """Eight connections guessing at once: each is slowed and closed after a few, the log stays short."""
    m = await run_attack(server, *LOGIN_FLOOD, "--connections", "8", port=server.login_port, timeout=60)
    assert_finished(m)
    failures = m.attacker["failures"]
    assert all(m.attacker["closed"]), f"connections were not closed: {m.summary()}"
    assert max(failures) <= 100, f"up to {max(failures)} wrong passwords on one connection: {m.summary()}"
    assert m.attacker["failures_per_second"] < 400, f"failures were not slowed down: {m.summary()}"
    assert _login_warnings(m), f"no WARNING naming the user and the peer: {m.summary()}"
    assert len(m.log) <= 8 * 30, f"{len(m.log)} log lines for eight connections: {m.summary()}"
    assert_served(m)


# -- the harness -----------------------------------------------------------------------------------


async def test_without_an_attack_the_server_is_well_inside_every_bound(server: ServerProcess) -> None:
    """A control: a few well-behaved connections move none of the measures the attacks are judged by."""
    m = await run_attack(server, "churn", "--connections", "4", "--concurrency", "1", timeout=30)
    assert_finished(m)
    assert m.growth < 4 * MB, m.summary()
    assert not m.log, m.summary()
    assert_served(m, worst=0.5, p99=0.2)
