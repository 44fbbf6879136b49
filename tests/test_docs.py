"""Every Python example in the user docs runs and prints what the text says (see tests/doccheck.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio

DOCS = Path(__file__).parent.parent / "docs"


@pytest.mark.parametrize("page", ["tutorial.rst", "porting.rst", "internals.rst"])
async def test_doc_examples_run(page: str) -> None:
    with trio.fail_after(180):
        result = await trio.run_process(
            [sys.executable, str(Path(__file__).with_name("doccheck.py")), str(DOCS / page)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    output = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, output
    assert " 0 failures" in output and "0 checks" not in output, output
