"""The chat UI on trio_pb's reconnecting broker, run in tmux against real servers (issue 15, item 1).

The UI connects with ``open_reconnecting_broker``: it gets in once or says why it cannot, stays
logged in across the server's restarts (rejoining its rooms each time), and stops with one line
when a restarted server refuses its login, which trying again would not change.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import test_examples_endings as endings
import test_examples_tui as tui
from peers import server_process

EXAMPLES = Path(__file__).parent.parent / "examples"


def chat_server(port: int = 0, users: Path | None = None) -> AsyncIterator[int]:
    argv = [sys.executable, "-u", str(EXAMPLES / "chat" / "server.py"), "--port", str(port), "--quiet"]
    if users is not None:
        argv += ["--users", str(users)]
    return server_process(argv)  # type: ignore[return-value]


def last_printed(printed: str) -> list[str]:
    """The lines a program that exited left in the pane's history, without blank ones or tmux's own."""
    return [line for line in printed.splitlines() if line.strip() and not line.startswith("Pane is dead")]


async def test_the_ui_that_cannot_get_in_says_why_in_one_line(tmp_path: Path) -> None:
    port = endings.free_port()
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()  # each terminal writes its exit status in its directory
    async with tui.terminal(tmp_path / "first", tui.alice(port)) as term:
        assert await term.exit_status() == 1
        assert last_printed(await term.printed()) == [
            f"chat: cannot connect to 127.0.0.1:{port}: Connection refused"
        ]
    async with chat_server() as port:
        argv = tui.chat_client("alice", "nope", port)
        async with tui.terminal(tmp_path / "second", argv) as term:
            assert await term.exit_status() == 1
            assert last_printed(await term.printed()) == ["chat: login refused: bad username or password"]


async def test_the_ui_stays_logged_in_across_several_restarts(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        server = AsyncExitStack()
        port = await server.enter_async_context(chat_server())
        term = await stack.enter_async_context(tui.terminal(tmp_path, tui.alice(port)))
        await term.wait_for("logged in as alice")
        await term.enter("/join lobby")
        await term.wait_for("| talking in lobby | connected")
        for number in (2, 3, 4):
            await server.aclose()  # the server is killed
            await term.wait_for("| talking in lobby | the server went away; reconnecting in")
            server = AsyncExitStack()
            await server.enter_async_context(chat_server(port))
            await term.wait_for(f"| talking in lobby | connected (connection {number})")
            # Back in the room on the new server, where others see alice.
            assert tui.here(await tui.scripted("bob", "builder", port, "join lobby", "who")) == (
                "[lobby] here: alice, bob"
            )
        screen = "\n".join(await term.screen())
        assert screen.count("* reconnected as alice; back in lobby") == 3
        assert "Traceback" not in screen
        await term.enter("/quit")
        assert await term.exit_status() == 0
        await server.aclose()


async def test_the_ui_stops_in_one_line_when_the_restarted_server_refuses_its_login(tmp_path: Path) -> None:
    users = tmp_path / "users.txt"
    users.write_text("alice:wonderland\n")
    async with AsyncExitStack() as stack:
        server = AsyncExitStack()
        port = await server.enter_async_context(chat_server(users=users))
        term = await stack.enter_async_context(tui.terminal(tmp_path, tui.alice(port)))
        await term.wait_for("logged in as alice", "| in no room | connected")
        await server.aclose()
        await term.wait_for("the server went away; reconnecting in")
        users.write_text("alice:looking-glass\n")  # her password changed meanwhile
        async with chat_server(port, users):
            assert await term.exit_status() == 1
            printed = await term.printed()
    # The terminal is given back, with the reason as the last line.
    assert last_printed(printed)[-1] == "chat: login refused: bad username or password"
    assert "Traceback" not in printed
