"""Every Python example in the user docs runs and prints what the text says (see tests/doccheck.py)."""

from __future__ import annotations

import re
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
    # "10 checks" must pass, so match the count as a whole number.
    assert " 0 failures" in output and not re.search(r"\b0 checks", output), output
