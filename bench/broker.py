"""Broker section: end-to-end remote calls over loopback TCP, trio_pb against Twisted PB and Pyro5.

Five contenders, each a client process talking to a server process of its own
(:mod:`bench.broker_client`, :mod:`bench.broker_server`), so that no side shares an
interpreter, a GIL or an event loop with the other:

* trio_pb: trio_pb client -> trio_pb server, both on the compiled codec;
* trio_pb pure: the same with ``TRIO_PB_NO_EXTENSIONS=1`` in both processes (the pure-Python
  codec, what runs where the extension could not be built);
* Twisted: Twisted PB client -> Twisted PB server (``PBClientFactory``, ``PBServerFactory``,
  the default reactor in each process);
* Pyro5: a Pyro5 proxy -> a Pyro5 daemon, with the marshal serializer (its fastest), a
  benchmark-only peer: left out, with a note, when Pyro5 is not installed;
* raw trio: a length-prefixed echo on trio sockets, the floor for one round trip through trio
  in both processes (no PB).

Workloads: sequential ``add(1, 2)`` calls; the same with 64 calls in flight; the echo of
100 KB of bytes (not Pyro5's); the echo of a list of 1,000 dicts of 6 small fields, one a
short list (raw trio has no serialization, so it sits that one out).  This process only
sends commands and collects the times the clients measure themselves; the peer processes
stay up for the whole run.

Each repeat runs a calibrated number of operations lasting about ``--min-time`` (0.15 s by
default here: a repeat must span many round trips); the contenders take turns, repeat by
repeat, in a rotating order, so that load from elsewhere on a shared machine hits them alike.
Ratios are taken within each round of repeats, and their median and range are reported.
Besides wall-clock rates, each repeat records the CPU time of both processes: ratios of CPU
time per call are printed next to the wall-clock ones, as they suffer less from other load.

The targets (:data:`TARGETS`) get a verdict each, on each codec; the benchmark never fails on
one.  ``--profile`` then runs sequential calls of both PB implementations under cProfile, in
the client and the server at once, and prints where each side's time goes per call.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import pstats
import select
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from . import Settings, Verdict, format_table, python_description
from .broker_client import BYTES_SIZE, IN_FLIGHT, WORKLOADS

DESCRIPTION = (
    "end-to-end calls over loopback TCP between processes: trio_pb (both codecs) vs Twisted PB, "
    "Pyro5 and raw trio"
)

#: Contender -> the implementation its client and server run, and what to add to their
#: environment.  "" unsets the variable for trio_pb: the compiled run must not inherit a
#: TRIO_PB_NO_EXTENSIONS from the shell.
CONTENDERS: dict[str, tuple[str, dict[str, str]]] = {
    "trio_pb": ("trio_pb", {"TRIO_PB_NO_EXTENSIONS": ""}),
    "trio_pb pure": ("trio_pb", {"TRIO_PB_NO_EXTENSIONS": "1"}),
    "Twisted": ("twisted", {}),
    "Pyro5": ("pyro5", {}),
    "raw trio": ("raw", {}),
}
#: The trio_pb contender of each codec path, and the codec its client must report.
PATHS: dict[str, str] = {"compiled": "trio_pb", "pure": "trio_pb pure"}
#: (implementation, workload) pairs that are not run: raw trio has no serialization; the brief
#: for Pyro5 is the workloads of the comparison in the issue (small calls and structured data).
SKIPPED = {("raw", "nested"), ("pyro5", "bytes")}

#: Repeat length (seconds) for a full run and for --quick, unless --min-time is given.
_REPEAT_TIME = (0.15, 0.02)
#: Operations in the first, warm-up run of each workload.
_WARM_UP = {"sequential": 200, "in_flight": 10 * IN_FLIGHT, "bytes": 20, "nested": 3}
#: How long to wait for a peer's answer before giving up on it (seconds).
_TIMEOUT = 120.0
_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Target:
    """A verdict to print: trio_pb's *metric* over contender *b*'s, against *bound*, on each codec.

    *a* names trio_pb's compiled contender; the pure codec's stands in for it on the other path.
    For a rate the ratio must be at least *bound*; for a latency, at most.  No bound: the
    ratio is printed without a verdict.
    """

    label: str
    workload: str
    metric: str  # "rate" (operations/s, higher is better) or "latency" (lower is better)
    a: str
    b: str
    bound: float | None


#: The targets of issue 12 ("Targets") that calls over a connection measure.
TARGETS = (
    Target("sequential calls/s, trio_pb / Twisted", "sequential", "rate", "trio_pb", "Twisted", 1.5),
    Target("sequential calls/s, trio_pb / raw trio", "sequential", "rate", "trio_pb", "raw trio", 0.8),
    Target("sequential latency, trio_pb / raw trio", "sequential", "latency", "trio_pb", "raw trio", None),
    Target("64 in flight calls/s, trio_pb / Twisted", "in_flight", "rate", "trio_pb", "Twisted", 3.5),
    Target("64 in flight calls/s, trio_pb / Pyro5", "in_flight", "rate", "trio_pb", "Pyro5", None),
    Target("100 KB echo MB/s, trio_pb / Twisted", "bytes", "rate", "trio_pb", "Twisted", None),
    Target("nested echo calls/s, trio_pb / Twisted", "nested", "rate", "trio_pb", "Twisted", 20.0),
    Target("nested echo calls/s, trio_pb / Pyro5", "nested", "rate", "trio_pb", "Pyro5", 0.5),
)


# --------------------------------------------------------------------------
# The peer processes


class Peer:
    """A server or client subprocess that answers each line on its stdin with one line."""

    def __init__(self, label: str, module: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.label = label
        environment = dict(os.environ)
        for name, value in (env or {}).items():
            if value:
                environment[name] = value
            else:
                environment.pop(name, None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=_ROOT,
            env=environment,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            # Not in the terminal's process group: on Ctrl-C this process closes
            # their stdin, and they exit on their own (as they do if it dies).
            start_new_session=True,
        )
        self._buffer = b""

    def readline(self, timeout: float = _TIMEOUT) -> str:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise SystemExit(f"bench.broker: {self.label} did not answer within {timeout:.0f} s")
            data = os.read(fd, 65536)
            if not data:
                raise SystemExit(f"bench.broker: {self.label} exited (code {self.process.wait()})")
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode().strip()

    def request(self, line: str) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        return self.readline()

    def close(self) -> None:
        """Close stdin (the peer exits on EOF); terminate it if it lingers."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            self.process.wait(5)
        if self.process.stdout is not None:
            self.process.stdout.close()


class Pair:
    """One contender: its server and its client, connected."""

    def __init__(self, name: str, keep_gc: bool) -> None:
        self.name = name
        self.impl, self.env = CONTENDERS[name]
        self.keep_gc = keep_gc
        self.server = Peer(f"the {name} server", "bench.broker_server", self.impl, env=self.env)
        self.client: Peer | None = None

    def connect(self) -> None:
        words = self.server.readline().split()
        if len(words) != 2 or words[0] != "PORT":
            raise SystemExit(f"bench.broker: {self.server.label} said {' '.join(words)!r}, not PORT <n>")
        args = [self.impl, words[1], *(["--gc"] if self.keep_gc else [])]
        self.client = Peer(f"the {self.name} client", "bench.broker_client", *args, env=self.env)

    def wait_ready(self) -> None:
        assert self.client is not None
        line = self.client.readline()
        if line.split()[:1] != ["READY"]:
            raise SystemExit(f"bench.broker: {self.client.label} said {line!r}, not READY")
        if self.impl == "trio_pb":
            codec = "pure" if self.env.get("TRIO_PB_NO_EXTENSIONS") else "compiled"
            if line != f"READY {codec}":
                raise SystemExit(
                    f"bench.broker: {self.client.label} runs the {line.split()[-1]} codec, not the {codec} "
                    "one (is the extension built? pip install -e . or python setup.py build_ext --inplace)"
                )

    def run(self, workload: str, n: int) -> Run:
        assert self.client is not None
        server_cpu = float(self.server.request("CPU"))
        answer = json.loads(self.client.request(f"RUN {workload} {n}"))
        server_cpu = float(self.server.request("CPU")) - server_cpu
        if "error" in answer:
            raise SystemExit(f"bench.broker: {self.name} {workload}: {answer['error']}")
        return Run(answer["n"], answer["elapsed"], answer["latency"], answer["cpu"], server_cpu)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        self.server.close()


def start_pairs(names: list[str], keep_gc: bool) -> list[Pair]:
    """Start every server, then every client, all in parallel; return once all are connected."""
    pairs = [Pair(name, keep_gc) for name in names]
    try:
        for pair in pairs:
            pair.connect()
        for pair in pairs:
            pair.wait_ready()
    except BaseException:
        for pair in pairs:
            pair.close()
        raise
    return pairs


# --------------------------------------------------------------------------
# Measuring


@dataclass(frozen=True)
class Run:
    """What one repeat measured: seconds, for all *n* operations unless said otherwise."""

    n: int
    elapsed: float
    #: The median time of one operation (workloads that run one at a time).
    latency: float | None
    #: CPU time used by the client process, and by the server process.
    client_cpu: float
    server_cpu: float

    @property
    def cpu(self) -> float:
        """CPU seconds per operation, client and server together."""
        return (self.client_cpu + self.server_cpu) / self.n

    @property
    def rate(self) -> float:
        """Operations per second."""
        return self.n / self.elapsed


@dataclass
class Case:
    """One workload: each contender's repeats, in rounds (one run per contender per round)."""

    workload: str
    contenders: list[str]
    rounds: list[dict[str, Run]]

    def rates(self, name: str) -> list[float]:
        return [round_[name].rate for round_ in self.rounds]

    def latencies(self, name: str) -> list[float]:
        return [round_[name].latency or math.nan for round_ in self.rounds]

    def cpus(self, name: str) -> list[float]:
        return [round_[name].cpu for round_ in self.rounds]

    def ratios(self, target: Target) -> list[float]:
        """The target's ratio in each round, as the target states it (speed, or latency)."""
        if target.metric == "rate":
            return [r[target.a].rate / r[target.b].rate for r in self.rounds]
        return [(r[target.a].latency or math.nan) / (r[target.b].latency or math.nan) for r in self.rounds]

    def cpu_ratios(self, target: Target) -> list[float]:
        """The same ratio by CPU time per operation (client and server), round by round."""
        if target.metric == "rate":
            return [r[target.b].cpu / r[target.a].cpu for r in self.rounds]
        return [r[target.a].cpu / r[target.b].cpu for r in self.rounds]


def _calibrate(pair: Pair, workload: str, repeat_time: float) -> tuple[int, float]:
    """Warm up; then how many operations make a repeat last about *repeat_time*, and how long one takes."""
    n = _WARM_UP[workload]
    if workload == "in_flight":
        n = max(n, IN_FLIGHT)
    run = pair.run(workload, n)
    # A second try, about a fifth of a repeat long, corrects the cold first one.
    n = max(1, math.ceil(repeat_time / 5 / (run.elapsed / run.n)))
    run = pair.run(workload, n)
    one = run.elapsed / run.n
    return max(1, math.ceil(repeat_time / one)), one


def measure(pairs: list[Pair], workload: str, repeat_time: float, settings: Settings) -> Case:
    pairs = [pair for pair in pairs if (pair.impl, workload) not in SKIPPED]
    calibrated = {pair.name: _calibrate(pair, workload, repeat_time) for pair in pairs}
    numbers = {name: number for name, (number, _) in calibrated.items()}
    # A contender whose single operation outlasts a repeat gets fewer repeats (but some).
    longest = max(number * one for number, one in calibrated.values())
    affordable = int(settings.max_case_time / max(longest, 1e-9))
    repeats = min(settings.repeat, max(min(3, settings.repeat), affordable))
    rounds: list[dict[str, Run]] = []
    for index in range(repeats):
        shift = index % len(pairs)
        round_ = {}
        for pair in pairs[shift:] + pairs[:shift]:
            round_[pair.name] = pair.run(workload, numbers[pair.name])
        rounds.append(round_)
        _progress(f"{workload}: round {index + 1}/{repeats}")
    return Case(workload, [pair.name for pair in pairs], rounds)


# --------------------------------------------------------------------------
# The section


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--workload",
        action="append",
        choices=list(WORKLOADS),
        help="only this workload (repeatable); --min-time sets the length of one repeat "
        f"(default here: {_REPEAT_TIME[0]} s, {_REPEAT_TIME[1]} s with --quick)",
    )
    group.add_argument(
        "--profile",
        action="store_true",
        help="then profile sequential calls of trio_pb and Twisted with cProfile, client and server",
    )
    group.add_argument(
        "--profile-dir",
        metavar="DIR",
        help="keep the profiles (IMPL-client.pstats, IMPL-server.pstats) in DIR (default: a new temp dir)",
    )


def contenders() -> tuple[list[str], str | None]:
    """The contenders this machine can run, and a note on any left out."""
    if importlib.util.find_spec("Pyro5") is None:
        note = "Pyro5 is not installed (pip install Pyro5, or the bench extra): its row is left out."
        return [name for name, (impl, _) in CONTENDERS.items() if impl != "pyro5"], note
    return list(CONTENDERS), None


def run(options: argparse.Namespace, settings: Settings) -> list[Verdict]:
    workloads = options.workload or list(WORKLOADS)
    if options.min_time is not None:
        repeat_time = options.min_time
    else:
        repeat_time = _REPEAT_TIME[1] if options.quick else _REPEAT_TIME[0]
    print(
        f"broker: trio_pb {version('trio_pb')} vs Twisted {version('twisted')} (trio {version('trio')}), "
        f"{python_description(codec=False)}, {os.cpu_count()} CPUs, load {_load()};\n"
        f"loopback TCP, TCP_NODELAY on every socket; client GC {'on' if settings.gc else 'off'} while "
        f"timing; repeats of ~{repeat_time:g} s"
    )
    names, note = contenders()
    if note:
        print(note)
    started = time.perf_counter()
    pairs = start_pairs(names, settings.gc)
    _progress(f"{2 * len(pairs)} processes up in {time.perf_counter() - started:.1f} s")
    try:
        cases = [measure(pairs, workload, repeat_time, settings) for workload in workloads]
        _progress("")
        print(_measurements_table(cases, names))
        print()
        print(_ratios_table(cases))
        print()
        print(
            "calls/s, MB/s: median over repeats (range); MB/s: the 100 KB (10**5 bytes) payload of a call,\n"
            "which travels both ways; us/call: the median per-call time of a repeat, median over repeats;\n"
            "CPU us/call: CPU time of the client and the server processes together, per call.\n"
            "ratio: within each round of back-to-back repeats, median (range), for trio_pb on each codec;\n"
            "targets: trio_pb calls/s at least the bound times the other's.  By CPU time: the same ratio\n"
            "from the CPU time per call, which other load on the machine disturbs less (load average now\n"
            f"{_load()}).  Twisted's client chains Deferred callbacks (its cheapest style); Pyro5 keeps 64\n"
            "calls in flight from 64 threads, a proxy each."
        )
        if options.profile:
            print()
            _profile(pairs, options, repeat_time)
    finally:
        for pair in pairs:
            pair.close()
    return _verdicts(cases)


def _load() -> str:
    """The 1-minute load average: how busy the machine is with other work too."""
    return f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "?"


def _progress(message: str) -> None:
    """A status line on a terminal's stderr, overwritten by the next (the tables are on stdout)."""
    if sys.stderr.isatty():
        print(f"\r\033[K{message}", end="", file=sys.stderr, flush=True)


def _spread(values: list[float], fmt: str) -> tuple[str, str]:
    """The median and the (min-max) range of *values*, formatted."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "-", ""
    return format(statistics.median(values), fmt), f"({min(values):{fmt}}-{max(values):{fmt}})"


def _measurements_table(cases: list[Case], names: list[str]) -> str:
    headers = ["workload", "unit"]
    for name in names:
        headers += [name, "(range)"]
    rows = []
    for case in cases:
        if case.workload == "bytes":
            unit, scale, fmt = "MB/s", BYTES_SIZE / 1e6, ",.0f"
        else:
            unit, scale, fmt = "calls/s", 1.0, ",.0f"
        row = [WORKLOADS[case.workload], unit]
        for name in names:
            row += (
                _spread([r * scale for r in case.rates(name)], fmt) if name in case.contenders else ["-", ""]
            )
        rows.append(row)
        if case.workload == "sequential":
            row = ["", "us/call"]
            for name in names:
                row += (
                    _spread([t * 1e6 for t in case.latencies(name)], ".1f")
                    if name in case.contenders
                    else ["-", ""]
                )
            rows.append(row)
        row = ["", "CPU us/call"]
        for name in names:
            cpus = [t * 1e6 for t in case.cpus(name)] if name in case.contenders else []
            row += _spread(cpus, ".1f" if case.workload == "sequential" else ",.0f") if cpus else ["-", ""]
        rows.append(row)
    right = [False, False] + [True, False] * len(names)
    return format_table(headers, rows, right)


def _target_rounds(case: Case, target: Target, path: str) -> Target | None:
    """*target* on one codec path, or None if this run lacks one of its contenders."""
    a = PATHS[path]
    if a not in case.contenders or target.b not in case.contenders:
        return None
    return Target(target.label, target.workload, target.metric, a, target.b, target.bound)


def _ratios_table(cases: list[Case]) -> str:
    by_workload = {case.workload: case for case in cases}
    rows = []
    for target in TARGETS:
        case = by_workload.get(target.workload)
        if case is None:
            continue
        for path in PATHS:
            on_path = _target_rounds(case, target, path)
            if on_path is None:
                continue
            ratios = case.ratios(on_path)
            median, spread = _spread(ratios, ".2f")
            cpu_median, cpu_spread = _spread(case.cpu_ratios(on_path), ".2f")
            if target.bound is None:
                goal = "(no target)"
            elif target.metric == "rate":
                goal = (
                    f">= {target.bound:g}x {'ok' if statistics.median(ratios) >= target.bound else 'MISSED'}"
                )
            else:
                goal = (
                    f"<= {target.bound:g}x {'ok' if statistics.median(ratios) <= target.bound else 'MISSED'}"
                )
            rows.append([target.label, path, f"{median}x", spread, goal, f"{cpu_median}x", cpu_spread])
    headers = ["ratio", "codec", "median", "(range)", "target", "by CPU time", "(range)"]
    return format_table(headers, rows, [False, False, True, False, False, True, False])


def _verdicts(cases: list[Case]) -> list[Verdict]:
    """The targets with a bound, on each codec path, for the summary at the end of the run."""
    by_workload = {case.workload: case for case in cases}
    verdicts = []
    for target in TARGETS:
        case = by_workload.get(target.workload)
        if case is None or target.bound is None:
            continue
        for path in PATHS:
            on_path = _target_rounds(case, target, path)
            if on_path is not None:
                ratio = statistics.median(case.ratios(on_path))
                verdicts.append(Verdict(target.label, path, ratio, target.bound, target.metric == "rate"))
    return verdicts


# --------------------------------------------------------------------------
# Profiling


#: Where a function's own CPU time goes in the profile summary: the first category whose
#: path fragment is in the function's file.  Functions of no category (builtins, the
#: standard library, attrs-generated methods) count towards their callers'.
_CATEGORIES: tuple[tuple[str, str], ...] = (
    ("trio_pb/jelly.py", "jelly"),
    ("twisted/spread/jelly.py", "jelly"),
    ("trio_pb/banana.py", "banana"),
    ("twisted/spread/banana.py", "banana"),
    ("trio_pb/broker.py", "broker: tasks, events, wake-ups"),
    ("trio_pb/", "PB protocol: dispatch, calls, answers"),
    ("twisted/spread/", "PB protocol: dispatch, calls, answers"),
    ("twisted/internet/defer.py", "Deferreds"),
    ("twisted/", "reactor, transport"),
    ("trio/_socket.py", "trio socket and epoll layer"),
    ("trio/_highlevel_socket.py", "trio socket and epoll layer"),
    ("trio/_core/_io_epoll.py", "trio socket and epoll layer"),
    ("trio/", "trio scheduling: run loop, tasks, Events"),
    ("outcome/", "trio scheduling: run loop, tasks, Events"),
    ("bench/", "benchmark loop, gc.collect"),
)
_SYSCALLS = "syscalls: send/write, recv/read, epoll_ctl"
#: Time blocked in epoll_wait, waiting for the peer: left out of the totals.
_BLOCKED = "blocked in epoll_wait (not counted)"
#: Built-in methods that are system calls, and gc.collect (the benchmark's, before timing).
_BUILTIN_CATEGORIES = {
    "<method 'send' of '_socket.socket' objects>": _SYSCALLS,
    "<method 'recv' of '_socket.socket' objects>": _SYSCALLS,
    "<built-in method posix.write>": _SYSCALLS,
    "<built-in method posix.read>": _SYSCALLS,
    "<method 'poll' of 'select.epoll' objects>": _BLOCKED,
    "<method 'modify' of 'select.epoll' objects>": _SYSCALLS,
    "<method 'register' of 'select.epoll' objects>": _SYSCALLS,
    "<method 'unregister' of 'select.epoll' objects>": _SYSCALLS,
    "<built-in method gc.collect>": "benchmark loop, gc.collect",
}
#: The contenders --profile looks at.
_PROFILED = ("trio_pb", "Twisted")


def _profile(pairs: list[Pair], options: argparse.Namespace, repeat_time: float) -> None:
    """Profile sequential calls of each PB implementation, in its client and its server at once."""
    directory = Path(options.profile_dir or tempfile.mkdtemp(prefix="bench-broker-"))
    directory.mkdir(parents=True, exist_ok=True)
    columns: dict[str, dict[str, float]] = {}
    totals: dict[str, tuple[float, float]] = {}
    tops: list[str] = []
    for pair in pairs:
        if pair.name not in _PROFILED:
            continue
        assert pair.client is not None
        # Unprofiled CPU per call first, for scale: the profiler makes every call dearer.
        number, _ = _calibrate(pair, "sequential", repeat_time)
        plain = pair.run("sequential", number)
        n = max(500, 4 * number)
        paths = {side: directory / f"{pair.impl}-{side}.pstats" for side in ("client", "server")}
        for peer in (pair.client, pair.server):
            _expect_ok(peer, "PROFILE START")
        pair.run("sequential", n)
        _expect_ok(pair.client, f"PROFILE STOP {paths['client']}")
        _expect_ok(pair.server, f"PROFILE STOP {paths['server']}")
        for side, path in paths.items():
            stats = pstats.Stats(str(path))
            label = f"{pair.name} {side}"
            columns[label] = {name: seconds / n for name, seconds in _by_category(stats).items()}
            unprofiled = (plain.client_cpu if side == "client" else plain.server_cpu) / plain.n
            busy = sum(seconds for name, seconds in columns[label].items() if name != _BLOCKED)
            totals[label] = (busy, unprofiled)
            if pair.name == "trio_pb":
                tops.append(_top_functions(label, stats, n))
    print(
        "profile: sequential add(1, 2) under cProfile, client and server at once: us per call, by what\n"
        "the time was spent in (a builtin's time goes to its caller's category).  The profiler makes\n"
        "every Python call dearer, so the profiled total exceeds the real CPU time (last line), code\n"
        "with many small calls the most; compare the shares, not the sums.  On loopback a send can\n"
        "include time the peer runs on this core (the kernel wakes it there).\n"
        f"Stats in {directory}"
    )
    print(_category_table(columns, totals))
    for top in tops:
        print()
        print(top)


def _expect_ok(peer: Peer, command: str) -> None:
    answer = peer.request(command)
    if answer != "OK":
        raise SystemExit(f"bench.broker: {peer.label} answered {answer!r} to {command!r}")


def _category(function: tuple[str, int, str]) -> str | None:
    filename, _, name = function
    if filename == "~":
        return _BUILTIN_CATEGORIES.get(name)
    for fragment, category in _CATEGORIES:
        if fragment in filename:
            return category
    return None


def _by_category(stats: pstats.Stats) -> dict[str, float]:
    """Own CPU seconds per category; uncategorized functions' time goes to their callers."""
    entries = stats.stats
    totals: dict[str, float] = {}

    def charge(function: tuple[str, int, str], seconds: float, depth: int) -> None:
        category = _category(function)
        if category is None and depth < 20:
            callers = entries[function][4] if function in entries else {}
            shares = {caller: timing[2] for caller, timing in callers.items()}
            whole = sum(shares.values())
            if whole > 0:
                for caller, share in shares.items():
                    charge(caller, seconds * share / whole, depth + 1)
                return
        category = category or "other"
        totals[category] = totals.get(category, 0.0) + seconds

    for function, (_, _, own, _, _) in entries.items():
        charge(function, own, 0)
    return totals


def _category_table(columns: dict[str, dict[str, float]], totals: dict[str, tuple[float, float]]) -> str:
    labels = list(columns)
    categories = sorted(
        {category for column in columns.values() for category in column},
        key=lambda category: -max(column.get(category, 0.0) for column in columns.values()),
    )
    rows = [
        [category, *(f"{columns[label].get(category, 0.0) * 1e6:.1f}" for label in labels)]
        for category in categories
    ]
    rows.append(["total but blocked, profiled", *(f"{totals[label][0] * 1e6:.1f}" for label in labels)])
    rows.append(["CPU time, not profiled", *(f"{totals[label][1] * 1e6:.1f}" for label in labels)])
    return format_table(["CPU us per call", *labels], rows, [False, *(True for _ in labels)])


def _top_functions(label: str, stats: pstats.Stats, calls: int, top: int = 15) -> str:
    """The functions with the most own CPU time, per remote call."""
    entries = stats.stats
    ranked = sorted(entries.items(), key=lambda item: item[1][2], reverse=True)[:top]
    rows = []
    for (filename, line, function), (_, ncalls, own, cumulative, _) in ranked:
        where = f"{_short(filename)}:{line}({function})" if filename != "~" else function
        rows.append(
            [where, f"{ncalls / calls:.1f}", f"{own / calls * 1e6:.2f}", f"{cumulative / calls * 1e6:.2f}"]
        )
    headers = [f"{label}: top functions", "calls/call", "own us", "cum us"]
    return format_table(headers, rows, [False, True, True, True])


def _short(filename: str) -> str:
    for marker in ("site-packages/", f"{_ROOT}/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename
