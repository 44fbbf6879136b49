"""Run real Twisted PB peers (tests/twisted_*.py scripts) as subprocesses for interop tests."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

HERE = Path(__file__).parent


@asynccontextmanager
async def twisted_server(script: str, *args: str) -> AsyncIterator[int]:
    """Start ``script server-mode`` and yield the port it prints as ``PORT <n>``; kill it after."""
    process = await trio.lowlevel.open_process(
        [sys.executable, str(HERE / script), *args], stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        line = b""
        with trio.fail_after(30):
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(1)
                assert chunk, f"{script} exited before listening"
                line += chunk
        word, port = line.split()
        assert word == b"PORT", line
        yield int(port)
    finally:
        process.kill()
        await process.wait()


async def run_twisted_client(script: str, *args: str) -> list[str]:
    """Run ``script client-mode`` to completion and return its output lines."""
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, str(HERE / script), *args], capture_stdout=True, check=False
        )
    output = result.stdout.decode()
    assert "FAILED" not in output, output
    return output.splitlines()
