"""``python -m bench [SECTION ...] [options]``: run benchmark sections; all of them by default.

A section is a module of this package listed in :data:`SECTIONS`, with

* ``DESCRIPTION``: one line for ``--help``;
* ``add_arguments(group)``: its own options, added to an argument group;
* ``run(options, settings)``: measure and print, given the parsed options
  and the shared :class:`bench.Settings`; return the :class:`bench.Verdict` of
  each target of the issue it measured (or nothing), which the run prints
  together at the end.

To add a section (say, end-to-end broker calls over loopback), write
``bench/<name>.py`` with those three names and add it to :data:`SECTIONS`.
"""

from __future__ import annotations

import argparse
import importlib
import time
from types import ModuleType

from . import Settings, Verdict, format_verdicts

#: Section name -> module, in the order ``python -m bench`` runs them.
SECTIONS: dict[str, str] = {
    "codecs": "bench.codecs",
    "broker": "bench.broker",
    "big": "bench.big",
    "streams": "bench.streams",
}

# (repeat, min_time, max_case_time) for a full run and for --quick.
_FULL = (15, 0.05, 2.5)
_QUICK = (2, 0.005, 0.1)


def _load_sections() -> dict[str, ModuleType]:
    return {name: importlib.import_module(module) for name, module in SECTIONS.items()}


def main(argv: list[str] | None = None) -> None:
    sections = _load_sections()
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="trio_pb benchmarks on both codec paths, measured side by side with Twisted PB "
        "(and Pyro5, pickle, raw trio) in the same run.",
        epilog="sections: " + "; ".join(f"{name}: {module.DESCRIPTION}" for name, module in sections.items()),
    )
    parser.add_argument(
        "sections",
        nargs="*",
        metavar="SECTION",
        help=f"sections to run: {', '.join(sections)} (default: all)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run of a few seconds; numbers are rough"
    )
    parser.add_argument("--repeat", type=int, help=f"timed repeats per case (default: {_FULL[0]})")
    parser.add_argument(
        "--min-time", type=float, metavar="SECONDS", help=f"length of one repeat (default: {_FULL[1]})"
    )
    parser.add_argument(
        "--max-case-time",
        type=float,
        metavar="SECONDS",
        help=f"slow cases repeat less to stay under this per contender (default: {_FULL[2]})",
    )
    parser.add_argument("--gc", action="store_true", help="keep the garbage collector on while timing")
    for name, module in sections.items():
        module.add_arguments(parser.add_argument_group(f"{name} section"))
    options = parser.parse_args(argv)

    unknown = [name for name in options.sections if name not in sections]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(sections)}")
    repeat, min_time, max_case_time = _QUICK if options.quick else _FULL
    settings = Settings(
        repeat=max(1, options.repeat if options.repeat is not None else repeat),
        min_time=options.min_time if options.min_time is not None else min_time,
        max_case_time=options.max_case_time if options.max_case_time is not None else max_case_time,
        gc=options.gc,
    )

    start = time.perf_counter()
    verdicts: list[Verdict] = []
    for name in options.sections or list(sections):
        verdicts += sections[name].run(options, settings) or []
        print()
    if getattr(options, "verdicts_to", None):
        # A child process measuring one codec path for its parent, which prints the summary.
        return
    print("targets: the medians of the ratios above, on each codec path (a verdict, never a failure)")
    print(format_verdicts(verdicts))
    print()
    print(f"bench: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
