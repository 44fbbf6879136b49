"""Run real Twisted PB peers (tests/twisted_*.py scripts) as subprocesses for interop tests."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio

HERE = Path(__file__).parent


@asynccontextmanager
async def server_process(argv: list[str], output: list[str] | None = None) -> AsyncIterator[int]:
    """Start a server process and yield the port at the end of the first line it prints.

    Both ``PORT 1234`` (the Twisted peers) and ``listening on 127.0.0.1:1234``
    (the examples) work.  The process is killed on exit.  If *output* is
    given, every later line the server prints is appended to it when the
    block exits.
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
        try:
            yield int(line.decode().replace(":", " ").split()[-1])
        finally:
            process.kill()
            if output is not None:
                # What the server printed waits in the pipe (a scenario's
                # transcript is far smaller than a pipe's buffer).
                output.extend(await _read_to_end(process.stdout))
    finally:
        process.kill()
        await process.wait()


async def _read_to_end(stream: trio.abc.ReceiveStream) -> list[str]:
    data = bytearray()
    while chunk := await stream.receive_some():
        data += chunk
    return data.decode().splitlines()


def twisted_server(script: str, *args: str, output: list[str] | None = None) -> Any:
    """``server_process`` for one of the Twisted peer scripts beside this file."""
    return server_process([sys.executable, str(HERE / script), *args], output)


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


@attrs.frozen
class Transcripts:
    """What the client and the server of one scenario saw, one line per event."""

    client: list[str]
    server: list[str]


async def three_ways(
    script: str,
    scenario: str,
    trio_root: Callable[[list[str]], Any],
    trio_client: Callable[[int], Awaitable[list[str]]],
) -> Transcripts:
    """Run one scenario Twisted-to-Twisted, Twisted-to-trio_pb and trio_pb-to-Twisted.

    *script* is a Twisted peer beside this file that understands
    ``serve <scenario>`` (print ``PORT <n>``, then serve, printing a line per
    event the server sees, flushed) and ``client <scenario> <port>`` (print
    the client's events).  *trio_root* is given a list to append the server's
    lines to and makes a fresh trio_pb root (or portal, or server factory)
    for the scenario; *trio_client* plays the client against a port and
    returns its lines.  The client ends only once the server has seen
    everything (say, by awaiting one last call: a connection's calls are
    handled in order), so that the server's transcript is complete.

    Both transcripts must be the same in all three pairings; the control's
    are returned so that the test can check they say what the scenario is
    about.
    """
    control_server: list[str] = []
    async with twisted_server(script, "serve", scenario, output=control_server) as port:
        control_client = await run_twisted_client(script, "client", scenario, str(port))
    control = Transcripts(control_client, control_server)

    trio_pb_server: list[str] = []
    root = trio_root(trio_pb_server)
    twisted_client = Transcripts(
        await twisted_client_against(root, script, "client", scenario), trio_pb_server
    )

    twisted_server_lines: list[str] = []
    async with twisted_server(script, "serve", scenario, output=twisted_server_lines) as port:
        with trio.fail_after(60):
            trio_pb_client = Transcripts(await trio_client(port), twisted_server_lines)

    assert twisted_client == control, "a Twisted client and a trio_pb server differ from Twisted"
    assert trio_pb_client == control, "a trio_pb client and a Twisted server differ from Twisted"
    return control
