"""The examples' terminal UIs, run in tmux against real server processes (issue 13, items 2 and 3).

Each test starts a client in a detached tmux session of its own (a private server socket,
100 columns by 30 rows), types into it with ``send-keys`` and reads the screen with
``capture-pane``, polling until what it waits for shows up.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from itertools import count
from pathlib import Path

import pytest
import trio
from peers import server_process

EXAMPLES = Path(__file__).parent.parent / "examples"
TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed")
#: How long a screen may take to show what a test waits for, on a busy machine.
DEADLINE = 20
_sessions = count()


class Terminal:
    """A program running in tmux: keys go in, the screen comes out."""

    def __init__(self, socket: str, config: Path, status: Path) -> None:
        self.socket = socket
        self.config = config
        self.status = status

    async def tmux(self, *args: str) -> str:
        assert TMUX is not None
        result = await trio.run_process(
            [TMUX, "-L", self.socket, "-f", str(self.config), *args], capture_stdout=True, capture_stderr=True
        )
        return result.stdout.decode()

    async def screen(self) -> list[str]:
        """The screen's lines, without trailing blanks."""
        return [line.rstrip() for line in (await self.tmux("capture-pane", "-p")).splitlines()]

    async def printed(self) -> str:
        """All the pane shows and has scrolled away: what a program that exited printed last.

        (When the program exits, tmux moves its screen into the scrollback.)
        """
        return await self.tmux("capture-pane", "-p", "-S", "-")

    async def wait_for(self, *texts: str) -> list[str]:
        """Poll the screen until it shows every one of *texts*; return it."""
        lines: list[str] = []
        with trio.move_on_after(DEADLINE):
            while True:
                lines = await self.screen()
                shown = "\n".join(lines)
                if all(text in shown for text in texts):
                    return lines
                await trio.sleep(0.05)
        missing = [text for text in texts if text not in "\n".join(lines)]
        raise AssertionError(f"not on the screen after {DEADLINE} s: {missing}\n" + "\n".join(lines))

    async def wait_for_input_line(self, line: str) -> list[str]:
        """Poll the screen until its last line (the input line) is *line*; return it.

        Not wait_for: the text may be on the screen already, elsewhere, before the key that
        changes the input line has been handled.
        """
        lines: list[str] = []
        with trio.move_on_after(DEADLINE):
            while True:
                lines = await self.screen()
                if lines and lines[-1] == line:
                    return lines
                await trio.sleep(0.05)
        raise AssertionError(f"the input line is not {line!r} after {DEADLINE} s:\n" + "\n".join(lines))

    async def type(self, text: str) -> None:
        """Type *text* as it is, each character a key."""
        await self.tmux("send-keys", "-l", text)

    async def keys(self, *names: str) -> None:
        """Press keys by tmux's names: Enter, Left, BSpace, Up..."""
        await self.tmux("send-keys", *names)

    async def enter(self, line: str) -> None:
        await self.type(line)
        await self.keys("Enter")

    async def exit_status(self) -> int:
        """Wait for the program to exit, and give its exit status."""
        with trio.move_on_after(DEADLINE):
            while not (written := self.status.read_text() if self.status.exists() else "").endswith("\n"):
                await trio.sleep(0.05)
            return int(written)
        raise AssertionError(f"still running after {DEADLINE} s:\n{await self.printed()}")


@asynccontextmanager
async def terminal(tmp_path: Path, argv: list[str]) -> AsyncIterator[Terminal]:
    """Run *argv* in a new tmux server of its own; the server (and the program) ends with the block."""
    config = tmp_path / "tmux.conf"
    # The pane stays after the program exits, so that its last screen and status can be read;
    # tmux's own status bar is off, so the program has the 30 rows.
    config.write_text("set -g remain-on-exit on\nset -g status off\n")
    # The process id keeps test runs side by side on one machine off each other's tmux.
    term = Terminal(f"trio_pb-tui-{os.getpid()}-{next(_sessions)}", config, tmp_path / "exit-status")
    # The shell writes the exit status to a file: tmux's pane_dead_status is at times never set.
    # Its trap keeps it alive through a Ctrl-C meant for the program (which does not inherit it).
    command = f"trap : INT; {shlex.join(argv)}; echo $? > {shlex.quote(str(term.status))}"
    await term.tmux("new-session", "-d", "-x", "100", "-y", "30", command)
    try:
        yield term
    finally:
        await term.tmux("kill-server")
        # tmux leaves the socket file behind.
        socket_dir = Path(os.environ.get("TMUX_TMPDIR", "/tmp")) / f"tmux-{os.getuid()}"
        (socket_dir / term.socket).unlink(missing_ok=True)


def example_server(example: str, port: int = 0) -> AsyncIterator[int]:
    server = EXAMPLES / example / "server.py"
    return server_process([sys.executable, "-u", str(server), "--port", str(port), "--quiet"])  # type: ignore[return-value]


def chat_client(name: str, password: str, port: int) -> list[str]:
    return [sys.executable, str(EXAMPLES / "chat" / "client.py"), name, password, "--port", str(port)]


def alice(port: int) -> list[str]:
    return chat_client("alice", "wonderland", port)


def here(lines: list[str]) -> str:
    """The one ``here:`` line a scripted ``who`` printed."""
    (line,) = [line for line in lines if "here:" in line]
    return line


async def scripted(name: str, password: str, port: int, *steps: str) -> list[str]:
    """Run a scripted chat client to its end; the lines it printed."""
    argv = chat_client(name, password, port)
    for step in steps:
        argv += ["--do", step]
    with trio.fail_after(DEADLINE):
        result = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode().splitlines()


async def test_chat_keeps_the_typed_line_while_messages_arrive_and_its_keys_edit(tmp_path: Path) -> None:
    async with (
        example_server("chat") as port,
        terminal(tmp_path, alice(port)) as term,
    ):
        await term.wait_for("logged in as alice")
        await term.enter("/join lobby")
        await term.wait_for("[lobby] * alice joined")
        await term.type("hello wrld")
        await term.wait_for_input_line("> hello wrld")
        await scripted("bob", "builder", port, "join lobby", "say hi alice, are you typing?", "quit")
        screen = await term.wait_for("[lobby] <bob> hi alice, are you typing?", "[lobby] * bob left")
        # The message went to the pane; the half-typed line is intact at the bottom.
        assert screen[-1] == "> hello wrld"
        assert not any("wrld" in line for line in screen[:-1]), screen
        await term.keys("Left", "Left", "Left")
        await term.type("o")
        await term.wait_for("> hello world")
        await term.keys("Home")
        await term.type("oh, ")
        await term.keys("End", "BSpace")
        await term.type("d!")
        await term.wait_for("> oh, hello world!")
        await term.keys("Enter")
        await term.wait_for("[lobby] <alice> oh, hello world!")
        await term.wait_for_input_line(">")
        # Up brings the line back from the history, down the empty line being typed.
        await term.keys("Up")
        await term.wait_for_input_line("> oh, hello world!")
        await term.keys("Down")
        screen = await term.wait_for_input_line(">")
        assert "[lobby] <alice> oh, hello world!" in screen
        assert "^[" not in "\n".join(screen)


async def test_chat_help_is_plain_text_of_the_users_commands(tmp_path: Path) -> None:
    async with (
        example_server("chat") as port,
        terminal(tmp_path, alice(port)) as term,
    ):
        await term.wait_for("logged in as alice")
        await term.enter("/help")
        screen = "\n".join(await term.wait_for("/join ROOM", "/leave [ROOM]", "/quit"))
        for command in ("/who", "/rooms", "/help"):
            assert command in screen
        for not_for_users in ("wait-for", "sleep", "vanish", "``", "Exit codes"):
            assert not_for_users not in screen
        # Nor can they be typed.
        await term.enter("/wait-for bob")
        await term.wait_for("unknown command 'wait-for'; try /help")
        await term.enter("/quit")
        assert await term.exit_status() == 0


async def test_chat_leave_leaves_the_room_talked_in_and_keeps_the_others(tmp_path: Path) -> None:
    async with (
        example_server("chat") as port,
        terminal(tmp_path, alice(port)) as term,
    ):
        await term.wait_for("logged in as alice", "| in no room |")
        await term.enter("/join lobby")
        await term.enter("/join trio")
        await term.wait_for("[trio] * alice joined", "| talking in trio, also in lobby |")
        await term.enter("/leave")
        await term.wait_for("left trio; you talk in lobby now", "| talking in lobby |")
        await term.enter("still here")
        await term.wait_for("[lobby] <alice> still here")
        # On the server too: alice is in the lobby, and no longer in trio.
        assert here(await scripted("bob", "builder", port, "join lobby", "who")) == "[lobby] here: alice, bob"
        assert here(await scripted("carol", "singer", port, "join trio", "who")) == "[trio] here: carol"
        # Ctrl-C ends the UI cleanly, with the terminal given back.
        await term.keys("C-c")
        assert await term.exit_status() == 130
        assert "Traceback" not in await term.printed()


async def test_chat_says_the_server_went_away_and_logs_in_again_when_it_is_back(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        first_server = AsyncExitStack()
        stack.push_async_exit(first_server)
        port = await first_server.enter_async_context(example_server("chat"))
        term = await stack.enter_async_context(terminal(tmp_path, alice(port)))
        await term.wait_for("logged in as alice")
        await term.enter("/join lobby")
        await term.enter("/join trio")
        await term.wait_for("| talking in trio, also in lobby | connected")
        await first_server.aclose()  # the server is killed
        await term.wait_for("* the server went away; reconnecting in", "| the server went away; reconnecting")
        # While it is away, what is typed is answered, not lost in a traceback.
        await term.enter("anyone?")
        await term.wait_for("not connected (")
        async with example_server("chat", port):
            await term.wait_for("* reconnected as alice; back in lobby, trio", "also in lobby | connected")
            # Logged in again and back in both rooms, on the new server.
            await term.enter("/who")
            await term.wait_for("[trio] here: alice")
            lines = await scripted("bob", "builder", port, "join lobby", "who", "say welcome back")
            assert "[lobby] here: alice, bob" in lines
            await term.wait_for("[lobby] <bob> welcome back")
            await term.enter("/quit")
            assert await term.exit_status() == 0


def without_urwid(tmp_path: Path) -> dict[str, str]:
    """An environment in which ``import urwid`` fails, as where only trio_pb is installed."""
    hidden = tmp_path / "no_urwid"
    hidden.mkdir()
    (hidden / "urwid.py").write_text("raise ImportError('urwid is hidden by this test')\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(hidden), os.environ.get("PYTHONPATH", "")])}


async def test_scripted_and_plain_runs_need_no_urwid_and_the_ui_says_it_does(tmp_path: Path) -> None:
    env = without_urwid(tmp_path)
    async with example_server("chat") as port:
        argv = [*chat_client("alice", "wonderland", port), "--do", "rooms", "--do", "help"]
        with trio.fail_after(DEADLINE):
            result = await trio.run_process(
                argv, capture_stdout=True, capture_stderr=True, env=env, check=False
            )
        assert (result.returncode, result.stderr) == (0, b"")
        assert result.stdout.decode().splitlines()[0] == "rooms: lobby, trio, twisted"
        ui = ["env", f"PYTHONPATH={env['PYTHONPATH']}", *chat_client("alice", "wonderland", port)]
        async with terminal(tmp_path, ui) as term:
            assert await term.exit_status() == 1
            assert "chat: the terminal UI needs urwid: pip install urwid" in await term.printed()
    async with example_server("game") as port:
        argv = [sys.executable, str(EXAMPLES / "game" / "client.py"), "red", "--port", str(port)]
        with trio.fail_after(DEADLINE):
            result = await trio.run_process(
                [*argv, "--plain", "--bot", "--until", "1"],
                capture_stdout=True,
                capture_stderr=True,
                env=env,
                check=False,
            )
        assert (result.returncode, result.stderr) == (0, b"")
        assert result.stdout.decode().splitlines()[-1] == "red finished"


async def test_game_shows_the_board_a_legend_how_to_play_and_answers_a_key_that_is_no_move(
    tmp_path: Path,
) -> None:
    async with example_server("game") as port:
        argv = [sys.executable, str(EXAMPLES / "game" / "client.py"), "red", "--port", str(port)]
        async with terminal(tmp_path, argv) as term:
            # From the start: the board in its frame, the legend, the instructions and a status line.
            screen = await term.wait_for(
                "The game, as red sees it", "R red (you): 0", "* item", ". empty",
                "Move with the arrow keys or w a s d", "q quits", f"red on 127.0.0.1:{port} | connected",
            )  # fmt: skip
            board = [line.strip() for line in screen if line.strip().startswith("│")]
            assert len(board) == 8 and all(len(row) == 14 for row in board), screen
            assert sum(row.count("R") for row in board) == 1
            await term.type("x")
            await term.wait_for("'x' is not a move: use the arrow keys or w a s d (q quits)")
            await term.keys("Right")
            await term.wait_for("moved right;")
            await term.type("a")
            await term.wait_for("moved left;")
            screen = await term.screen()
            assert "^[" not in "\n".join(screen)
            await term.type("q")
            assert await term.exit_status() == 0
            assert "red finished" in await term.printed()


def test_names_a_server_sends_as_bytes_are_shown_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    # A Twisted server may send usernames as bytes; the client shows them as text.
    spec = importlib.util.spec_from_file_location("chat_client", EXAMPLES / "chat" / "client.py")
    assert spec is not None and spec.loader is not None
    client = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(client)
    screen = client.Screen()
    screen.remote_joined("lobby", b"bob")
    screen.remote_message(b"lobby", b"bob", "hi")
    screen.remote_left("lobby", b"bob")
    shown = capsys.readouterr().out.splitlines()
    assert shown == ["[lobby] * bob joined", "[lobby] <bob> hi", "[lobby] * bob left"]
