"""Typed remote interfaces under mypy: a typed reference's calls are checked like local ones.

mypy runs, as a program, on small client files written for the test, with this
checkout's trio_pb on its path (MYPYPATH), and its report is compared line by line.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import trio_pb

INTERFACE = """\
from typing import Protocol

import trio_pb


class Calculator(Protocol):
    async def add(self, a: int, b: int) -> int: ...

    async def describe(self, value: float, *, unit: str = "m") -> str: ...


async def connect(ref: trio_pb.RemoteReference) -> Calculator:
    return ref.typed(Calculator)
"""

GOOD = """\
from interface import Calculator, connect

import trio_pb


async def main(ref: trio_pb.RemoteReference) -> None:
    calc = await connect(ref)
    total: int = await calc.add(1, 2)
    text: str = await calc.describe(2.5, unit="km")
    print(total + 1, text.upper())
    direct = ref.typed(Calculator)
    reveal_type(direct)
    reveal_type(await direct.add(1, 2))
"""

BAD = """\
from interface import connect

import trio_pb


async def main(ref: trio_pb.RemoteReference) -> None:
    calc = await connect(ref)
    await calc.add("a")
    await calc.add(1, "2")
    wrong: str = await calc.add(1, 2)
    await calc.describe(1.0, units="km")
    await calc.ad(1, 2)
    calc.add(1, 2).upper()
"""


def run_mypy(tmp_path: Path, **files: str) -> list[str]:
    for name, text in {"interface": INTERFACE, **files}.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(text))
    checkout = Path(trio_pb.__file__).resolve().parent.parent
    environment = {**os.environ, "MYPYPATH": str(checkout)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--follow-imports=silent",  # trio_pb's own modules are checked elsewhere
            "--show-error-codes",
            "--no-error-summary",
            "--hide-error-context",
            *(f"{name}.py" for name in files),
        ],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    assert not result.stderr, result.stderr
    # "good.py:12: note: Revealed type is ..." with the paths as given.
    return [re.sub(r"\s+", " ", line) for line in result.stdout.splitlines()]


def test_typed_calls_pass_and_wrong_ones_are_reported(tmp_path: Path) -> None:
    lines = run_mypy(tmp_path, good=GOOD, bad=BAD)
    # The good client has no error; the revealed types are the interface's.
    good = [line for line in lines if line.startswith("good.py")]
    assert [line.split(": ")[:2] for line in good] == [["good.py:12", "note"], ["good.py:13", "note"]]
    assert re.search(r'Revealed type is "interface\.Calculator"', good[0]), good
    assert re.search(r'Revealed type is "(builtins\.)?int"', good[1]), good
    # Each wrong use in the bad one is an error on its line (the wording is mypy's; the
    # fragments asserted have been stable across its versions).
    errors = [line for line in lines if line.startswith("bad.py") and ": error: " in line]
    expected = [
        (8, "call-arg", 'Missing positional argument "b" in call to "add" of "Calculator"'),
        (8, "arg-type", 'Argument 1 to "add" of "Calculator" has incompatible type "str"; expected "int"'),
        (9, "arg-type", 'Argument 2 to "add" of "Calculator" has incompatible type "str"; expected "int"'),
        (10, "assignment", '(expression has type "int", variable has type "str")'),
        (11, "call-arg", 'Unexpected keyword argument "units" for "describe" of "Calculator"'),
        (12, "attr-defined", '"Calculator" has no attribute "ad"'),
        (13, "attr-defined", 'has no attribute "upper"'),
    ]
    assert len(errors) == len(expected), "\n".join(lines)
    for line, (number, code, fragment) in zip(errors, expected, strict=True):
        assert line.startswith(f"bad.py:{number}: error: "), line
        assert line.endswith(f"[{code}]"), line
        assert fragment in line, line
