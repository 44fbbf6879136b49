"""Benchmarks: trio_pb measured side by side with Twisted PB, in one run.

Run them with ``nox -s bench`` or ``python -m bench [SECTION ...] [options]``
from the repository root; ``python -m bench --help`` lists the sections.
Each section is a module of this package with ``add_arguments(group)`` and
``run(options)`` (see :mod:`bench.__main__`).

This package is developer tooling: the library never imports it, and it is
not part of the distribution.  What lives here is shared by the sections:
timeit-style measurement that interleaves the contenders, so that a noisy,
shared machine slows them alike, plain-text tables, and the payloads both
sections measure.
"""

from __future__ import annotations

import gc
import itertools
import math
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Measurement",
    "Settings",
    "Verdict",
    "calibrate",
    "compare",
    "format_rate",
    "format_table",
    "format_time",
    "format_verdicts",
    "python_description",
]


@dataclass(frozen=True)
class Settings:
    """How hard to measure: shared by every section."""

    #: Timed repeats per contender; the median is reported.
    repeat: int
    #: Each repeat runs the operation enough times to last about this long (seconds).
    min_time: float
    #: Cap on the repeats of one contender in one case (seconds): slow cases repeat less.
    max_case_time: float
    #: Leave the garbage collector on while timing (timeit turns it off).
    gc: bool


@dataclass(frozen=True)
class Measurement:
    """The per-operation times of one contender's repeats, in seconds."""

    times: tuple[float, ...]
    number: int

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def _timed(func: Callable[[], object], number: int, keep_gc: bool) -> float:
    """Seconds per call of ``func()`` over *number* calls, GC off unless *keep_gc*."""
    loops = itertools.repeat(None, number)
    gc_was_enabled = gc.isenabled()
    gc.collect()
    if not keep_gc:
        gc.disable()
    try:
        start = time.perf_counter()
        for _ in loops:
            func()
        elapsed = time.perf_counter() - start
    finally:
        if gc_was_enabled:
            gc.enable()
    return elapsed / number


def calibrate(func: Callable[[], object], min_time: float, keep_gc: bool = False) -> tuple[int, float]:
    """How many calls make a repeat last about *min_time*, and the seconds one call took.

    Like ``timeit.Timer.autorange``, but it starts from the measured time of one
    call, so that a slow operation is not run needlessly often.  Call *func*
    once before, to warm it up.
    """
    one = _timed(func, 1, keep_gc)
    if one >= min_time:
        return 1, one
    number = max(1, math.ceil(min_time / max(one, 1e-9)))
    per_call = _timed(func, number, keep_gc)
    return max(1, math.ceil(min_time / max(per_call, 1e-9))), per_call


def compare(contenders: Sequence[Callable[[], object]], settings: Settings) -> list[Measurement]:
    """Time each contender, interleaving their repeats (A B A B ...).

    Interleaving means a burst of load from another process on this shared
    machine hits every contender, not just the one that happened to be
    running; medians then drop the bursts.  Each contender should have been
    called once already (to check its result), which warms it up.
    """
    numbers: list[int] = []
    times: list[list[float]] = []
    repeats = settings.repeat
    for func in contenders:
        number, per_call = calibrate(func, settings.min_time, settings.gc)
        numbers.append(number)
        # A calibration of one call is as good as a repeat: keep it.
        times.append([per_call] if number == 1 else [])
        # A contender whose calls are slow gets fewer repeats (but some).
        affordable = int(settings.max_case_time / max(per_call * number, 1e-9))
        repeats = min(repeats, max(min(3, settings.repeat), affordable))
    for _ in range(repeats):
        for index, func in enumerate(contenders):
            if len(times[index]) < repeats:
                times[index].append(_timed(func, numbers[index], settings.gc))
    return [Measurement(tuple(t), n) for t, n in zip(times, numbers, strict=True)]


@dataclass(frozen=True)
class Verdict:
    """One target of the issue on one codec path: the measured ratio against its bound."""

    target: str
    #: "compiled" or "pure".
    path: str
    ratio: float
    bound: float
    #: The ratio must be at least the bound (a speed); otherwise at most (a time).
    at_least: bool

    @property
    def met(self) -> bool:
        return self.ratio >= self.bound if self.at_least else self.ratio <= self.bound


#: Targets that no section measures: (target, bound, where it is measured instead).
UNMEASURED = (("idle connection, trio_pb - raw trio", "<= 3 KB more", "nox -s stress (10,000 held)"),)


def format_verdicts(verdicts: Sequence[Verdict]) -> str:
    """The targets in one table, a row each: the ratio on each codec path and met or missed."""
    paths = list(dict.fromkeys(verdict.path for verdict in verdicts)) or ["compiled", "pure"]
    by_target: dict[tuple[str, str], dict[str, Verdict]] = {}
    for verdict in verdicts:
        bound = f"{'>=' if verdict.at_least else '<='} {verdict.bound:g}x"
        by_target.setdefault((verdict.target, bound), {})[verdict.path] = verdict
    rows = []
    for (target, bound), on_path in by_target.items():
        row = [target, bound]
        for path in paths:
            verdict = on_path.get(path)
            row.append(f"{verdict.ratio:.2f}x" if verdict else "-")
            row.append(("met" if verdict.met else "MISSED") if verdict else "")
        rows.append(row)
    for target, bound, _ in UNMEASURED:
        rows.append([target, bound, *(["-", "(*)"] * len(paths))])
    headers = ["target (issue 12)", "bound"]
    for path in paths:
        headers += [path, ""]
    table = format_table(headers, rows, [False, False, *([True, False] * len(paths))])
    notes = [f"(*) not measured by the benchmark: {where}" for _, _, where in UNMEASURED]
    return "\n".join([table, *notes])


def format_time(seconds: float) -> str:
    """A duration with three significant digits and a readable unit."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def format_rate(size: int, seconds: float) -> str:
    """Throughput in MB/s (10**6 bytes)."""
    rate = size / seconds / 1e6
    return f"{rate:,.0f}" if rate >= 100 else f"{rate:.1f}"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> str:
    """A plain-text table; *right* says which columns are right-aligned (numbers)."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(width) if align else cell.ljust(width)
            for cell, width, align in zip(cells, widths, right, strict=True)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def nested_dicts() -> list[dict[str, Any]]:
    """1,000 dicts of 6 small fields: str keys; int, short str, float, bytes, bool and a short list."""
    rng = random.Random(1)
    return [
        {
            "id": i,
            "name": f"user-{i:04d}",
            "score": round(rng.uniform(0, 1000), 3),
            "token": rng.randbytes(8),
            "active": i % 3 != 0,
            "tags": [i % 7, f"t{i % 5}", i % 2 == 0],
        }
        for i in range(1000)
    ]


def python_description(codec: bool = True) -> str:
    """The interpreter and machine, and (if *codec*) the trio_pb codec this process uses."""
    from trio_pb import _accel

    described = f"{platform.python_implementation()} {sys.version.split()[0]} on {platform.machine()}"
    if not codec:
        return described
    return f"{described}, {'compiled codec' if _accel.IN_USE else 'pure-Python codec'}"
