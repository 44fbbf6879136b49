"""The examples' ``--verbose``: every PB message traced, on stderr, or where a terminal UI keeps it.

The servers and the clients run as real processes (issue 15, item 3): with ``-v`` each logs
one line per message sent and received (``trace=trio_pb.log_trace``) on stderr; the chat UI
shows them in its message pane and the game UI writes them to a file, never over the screen.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import test_examples_endings as endings
import test_examples_tui as tui

EXAMPLES = Path(__file__).parent.parent / "examples"


def traced(lines: list[str], what: str, *fields: str) -> list[str]:
    """The lines that trace a message *what* ("received message") and show each of *fields*."""
    return [line for line in lines if what in line and all(field in line for field in fields)]


async def test_a_verbose_chat_server_and_client_trace_every_message_on_stderr() -> None:
    async with endings.server("chat", "--verbose") as (srv, port):
        login = ("alice", "wonderland", "--port", str(port))
        steps = ("--do", "join lobby", "--do", "say hello", "--do", "quit")
        code, out, err = await endings.run("chat", "client.py", *login, "--verbose", *steps)
        srv.process.send_signal(signal.SIGINT)
        server_code, _, server_err = await srv.finish()
    assert (code, server_code) == (0, 0), (err, server_err)
    assert "[lobby] <alice> hello" in out.splitlines()
    assert "Traceback" not in err + server_err
    server = server_err.splitlines()
    # The calls the client made, as the server received them, and the answers it sent.
    assert traced(server, " received message ", "b'login'"), server_err
    assert traced(server, " received message ", "b'join'", "b'lobby'"), server_err
    assert traced(server, " received message ", "b'speak'", "b'hello'"), server_err
    assert traced(server, " sent answer "), server_err
    # The server's calls to the client's mind: it tells the room what happened.
    assert traced(server, " sent message ", "b'joined'", "b'alice'"), server_err
    assert all(line.endswith(" bytes)") for line in traced(server, " received message ")), server_err
    client = err.splitlines()
    assert traced(client, "chat: trio_pb.trace: ", " sent message ", "b'join'", "b'lobby'"), err
    assert traced(client, "chat: trio_pb.trace: ", " received answer "), err
    assert traced(client, "chat: trio_pb.trace: ", " received message ", "b'message'", "b'hello'"), err


async def test_a_verbose_game_server_and_plain_client_trace_every_message_on_stderr() -> None:
    async with endings.server("game", "--verbose") as (srv, port):
        args = ("red", "--port", str(port), "--plain", "--bot", "--until", "1", "--verbose")
        code, out, err = await endings.run("game", "client.py", *args)
        srv.process.send_signal(signal.SIGINT)
        server_code, _, server_err = await srv.finish()
    assert (code, server_code) == (0, 0), (err, server_err)
    assert out.splitlines()[-1] == "red finished"
    assert traced(server_err.splitlines(), " received message ", "b'move'"), server_err
    client = err.splitlines()
    assert traced(client, "game: trio_pb.trace: ", " sent message ", "b'move'"), err
    # The world's updates, which the server sends the client's cached copy.
    assert traced(client, "game: trio_pb.trace: ", " received cachemessage "), err


async def test_the_verbose_chat_ui_shows_the_trace_in_its_pane(tmp_path: Path) -> None:
    async with tui.example_server("chat") as port:
        argv = [*tui.alice(port), "--verbose"]
        async with tui.terminal(tmp_path, argv) as term:
            await term.wait_for("logged in as alice")
            await term.enter("/join lobby")
            # The status line is redrawn after the join's answer: wait for it too.
            await term.wait_for(
                "[lobby] * alice joined", "log: trio_pb.trace: ", " sent message ", "| talking in lobby |"
            )
            screen = await term.wait_for_input_line(">")
            shown = "\n".join(screen)
            assert "b'join'" in shown
            # In the pane: the status line and the input line stay at the bottom.
            assert screen[-2].startswith(f" alice on 127.0.0.1:{port} | talking in lobby | connected")
            await term.enter("/quit")
            assert await term.exit_status() == 0


async def test_the_verbose_game_ui_writes_the_trace_to_a_file_not_the_screen(tmp_path: Path) -> None:
    log_file = tmp_path / "red.log"
    async with tui.example_server("game") as port:
        argv = [sys.executable, str(EXAMPLES / "game" / "client.py"), "red", "--port", str(port)]
        async with tui.terminal(tmp_path, [*argv, "--verbose", "--log-file", str(log_file)]) as term:
            await term.wait_for("R red (you): 0", f"red on 127.0.0.1:{port} | connected")
            await term.keys("Right")
            screen = await term.wait_for("moved right;")
            await term.type("q")
            assert await term.exit_status() == 0
    assert "trio_pb" not in "\n".join(screen)
    logged = log_file.read_text().splitlines()
    assert traced(logged, "game: trio_pb.trace: ", " sent message ", "b'move'", "b'right'"), logged
    assert traced(logged, "game: trio_pb.trace: ", " received cachemessage "), logged
