"""How the examples end on ordinary events: one clear line and an exit code, never a traceback.

Each example runs as a real process; the tests read what it prints on stdout
and stderr and the code it exits with (issue 13, items 1 and 2).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

EXAMPLES = Path(__file__).parent.parent / "examples"


class Running:
    """An example process with pipes, and what it has printed so far."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.out = b""

    async def read_until(self, text: str) -> None:
        """Read stdout until *text* shows up (or fail, with what came so far)."""
        assert self.process.stdout is not None
        with trio.fail_after(30):
            while text.encode() not in self.out:
                chunk = await self.process.stdout.receive_some()
                assert chunk, f"exited before printing {text!r}: {self.out!r}"
                self.out += chunk

    async def finish(self) -> tuple[int, str, str]:
        """Close stdin, wait for the exit; (exit code, stdout, stderr)."""
        assert self.process.stdout is not None and self.process.stderr is not None
        if self.process.stdin is not None:
            await self.process.stdin.aclose()
        err = b""
        with trio.fail_after(30):
            while chunk := await self.process.stdout.receive_some():
                self.out += chunk
            while chunk := await self.process.stderr.receive_some():
                err += chunk
            code = await self.process.wait()
        return code, self.out.decode(), err.decode()


@asynccontextmanager
async def running(example: str, script: str, *args: str) -> AsyncIterator[Running]:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-u", str(EXAMPLES / example / script), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield Running(process)
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


@asynccontextmanager
async def server(example: str, *args: str) -> AsyncIterator[tuple[Running, int]]:
    """A running example server on a free port, and the port."""
    async with running(example, "server.py", "--port", "0", "--quiet", *args) as proc:
        await proc.read_until("\n")
        yield proc, int(proc.out.decode().splitlines()[0].rsplit(":", 1)[1])


async def run(example: str, script: str, *args: str) -> tuple[int, str, str]:
    async with running(example, script, *args) as proc:
        return await proc.finish()


def one_line(stderr: str) -> str:
    """The single line a process printed on stderr (and no traceback)."""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def free_port() -> int:
    """A loopback port nobody listens on (just closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_ctrl_c_stops_each_server_cleanly() -> None:
    for example in ("chat", "game"):
        async with server(example) as (proc, _):
            proc.process.send_signal(signal.SIGINT)
            code, out, err = await proc.finish()
        assert (code, err) == (0, ""), (example, err)
        assert out.splitlines()[-1] == f"{example} server stopped"


async def test_a_port_in_use_is_one_line() -> None:
    for example in ("chat", "game"):
        async with server(example) as (_, port):
            code, _, err = await run(example, "server.py", "--port", str(port))
        assert code == 1
        assert one_line(err) == f"{example} server: cannot listen on 127.0.0.1:{port}: Address already in use"


async def test_no_server_is_one_line() -> None:
    port = free_port()
    code, _, err = await run("chat", "client.py", "alice", "wonderland", "--port", str(port), "--do", "rooms")
    assert code == 1
    assert one_line(err) == f"chat: cannot connect to 127.0.0.1:{port}: Connection refused"
    code, _, err = await run("game", "client.py", "red", "--port", str(port), "--bot")
    assert code == 1
    assert one_line(err) == f"game: cannot connect to 127.0.0.1:{port}: Connection refused"


async def test_a_wrong_password_is_one_line() -> None:
    async with server("chat") as (_, port):
        code, _, err = await run("chat", "client.py", "alice", "nope", "--port", str(port), "--do", "rooms")
    assert code == 1
    assert one_line(err) == "chat: login refused: bad username or password"


async def test_a_second_login_as_the_same_colour_is_refused_in_one_line() -> None:
    async with server("game") as (srv, port):
        async with running("game", "client.py", "red", "--port", str(port), "--plain") as first:
            assert first.process.stdin is not None
            await first.process.stdin.send_all(b"d\na\n")  # one of them moves
            await first.read_until("red sees red at")  # so red is playing
            code, _, err = await run("game", "client.py", "red", "--port", str(port), "--bot")
            assert code == 1
            assert one_line(err) == "game: login refused: red is already playing"
            # The first red plays on; it stops when its input ends.
            first_code, _, first_err = await first.finish()
            assert (first_code, first_err) == (0, "")
        srv.process.send_signal(signal.SIGINT)
        code, _, err = await srv.finish()
    assert (code, err) == (0, "")  # the refusal is no error on the server either


async def test_a_bad_step_is_one_line_and_a_typed_one_only_an_error_shown() -> None:
    async with server("chat") as (_, port):
        login = ("alice", "wonderland", "--port", str(port))
        code, _, err = await run("chat", "client.py", *login, "--do", "sleep abc")
        assert code == 1
        assert one_line(err) == "chat: sleep needs a number of seconds, not 'abc'"
        code, _, err = await run("chat", "client.py", *login, "--do", "say hello")
        assert code == 1
        assert one_line(err) == "chat: join a room first"
        # Typed at the terminal, the same mistakes are shown and the client goes on.
        async with running("chat", "client.py", *login) as client:
            assert client.process.stdin is not None
            await client.process.stdin.send_all(b"/sleep abc\nhello\n/rooms\n/quit\n")
            code, out, err = await client.finish()
    assert (code, err) == (0, "")
    assert out.splitlines()[1:] == [
        "error: sleep needs a number of seconds, not 'abc'",
        "error: join a room first",
        "rooms: lobby, trio, twisted",
    ]


async def test_a_chat_client_says_the_server_went_away_and_exits() -> None:
    async with server("chat") as (srv, port):  # noqa: SIM117 (the client needs the port)
        async with running("chat", "client.py", "alice", "wonderland", "--port", str(port)) as client:
            assert client.process.stdin is not None
            await client.process.stdin.send_all(b"/join lobby\n")
            await client.read_until("[lobby] * alice joined")
            srv.process.kill()
            # Noticed while waiting for the user to type: stdin stays open.
            with trio.fail_after(30):
                code = await client.process.wait()
            assert client.process.stderr is not None
            err = await client.process.stderr.receive_some()
    assert code == 1
    assert one_line(err.decode()) == "chat: the server went away"


async def test_a_game_client_says_the_server_went_away_and_exits() -> None:
    for mode in ("--plain", "--bot"):
        async with server("game") as (srv, port):
            args = ("red", "--port", str(port), "--plain", mode, "--until", "1000", "--pace", "0.2")
            async with running("game", "client.py", *args) as client:
                if mode == "--plain":
                    assert client.process.stdin is not None
                    await client.process.stdin.send_all(b"d\na\n")  # one of them moves
                await client.read_until("red sees red at")
                srv.process.kill()
                with trio.fail_after(30):
                    code = await client.process.wait()
                assert client.process.stderr is not None
                err = await client.process.stderr.receive_some()
        assert code == 1, mode
        assert one_line(err.decode()) == "game: the server went away"
