"""Run real Twisted PB peers (tests/twisted_*.py scripts) as subprocesses for interop tests."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import trio

HERE = Path(__file__).parent


@asynccontextmanager
async def server_process(argv: list[str]) -> AsyncIterator[int]:
    """Start a server process and yield the port at the end of the first line it prints.

    Both ``PORT 1234`` (the Twisted peers) and ``listening on 127.0.0.1:1234``
    (the examples) work.  The process is killed on exit.
    """
    process = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        line = b""
        with trio.fail_after(30):
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(1)
                assert chunk, f"{argv[1]} exited before listening"
                line += chunk
        yield int(line.decode().replace(":", " ").split()[-1])
    finally:
        process.kill()
        await process.wait()


def twisted_server(script: str, *args: str) -> Any:
    """``server_process`` for one of the Twisted peer scripts beside this file."""
    return server_process([sys.executable, str(HERE / script), *args])


async def twisted_client_against(root: Any, script: str, *args: str) -> list[str]:
    """Serve *root* with trio_pb on a free loopback port, run ``script <args> PORT`` against it."""
    from trio_pb.connect import serve_tcp

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(serve_tcp, root, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        lines = await run_twisted_client(script, *args, str(port))
        nursery.cancel_scope.cancel()
    return lines


async def run_twisted_client(script: str, *args: str) -> list[str]:
    """Run ``script client-mode`` to completion and return its output lines."""
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, str(HERE / script), *args], capture_stdout=True, check=False
        )
    output = result.stdout.decode()
    assert "FAILED" not in output, output
    return output.splitlines()
