"""The examples as real processes on loopback: the chat and the game, and the demo command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import trio
from peers import server_process

EXAMPLES = Path(__file__).parent.parent / "examples"


def example_server(example: str, *args: str) -> Any:
    """Start ``examples/<example>/server.py --port 0`` and yield its port."""
    server = EXAMPLES / example / "server.py"
    return server_process([sys.executable, "-u", str(server), "--port", "0", "--quiet", *args])


async def run_client(example: str, *args: str) -> tuple[int, list[str]]:
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, "-u", str(EXAMPLES / example / "client.py"), *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    return result.returncode, result.stdout.decode().splitlines()


def chat(name: str, password: str, port: int, *steps: str) -> list[str]:
    args = [name, password, "--port", str(port)]
    for step in steps:
        args += ["--do", step]
    return args


async def test_chat_clients_see_each_other_and_a_dropped_client_leaves() -> None:
    async with example_server("chat") as port:
        results: dict[str, tuple[int, list[str]]] = {}

        async def client(name: str, password: str, *steps: str) -> None:
            results[name] = await run_client("chat", *chat(name, password, port, *steps))

        # Bob and Carol join after Alice (who waits to see them join): the
        # sleeps leave room for a slow start of her process on a busy machine.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                client, "alice", "wonderland",
                "join lobby", "wait-for bob joined", "wait-for carol joined", "say hi both",
                "wait-for carol left", "who", "say carol is gone", "wait-for bye", "quit",
            )  # fmt: skip
            nursery.start_soon(
                client, "bob", "builder",
                "sleep 0.6", "join lobby", "wait-for hi both", "wait-for carol is gone", "say bye", "quit",
            )  # fmt: skip
            nursery.start_soon(
                client, "carol", "singer", "sleep 1.2", "join lobby", "wait-for hi both", "vanish"
            )
    alice_code, alice = results["alice"]
    bob_code, bob = results["bob"]
    carol_code, carol = results["carol"]
    assert (alice_code, bob_code) == (0, 0)
    assert carol_code == 3  # dropped without logging out
    assert "[lobby] <alice> hi both" in bob and "[lobby] <alice> hi both" in carol
    # The server noticed carol's connection drop and told the room.
    assert "[lobby] * carol left" in alice and "[lobby] * carol left" in bob
    assert "[lobby] here: alice, bob" in alice
    assert "[lobby] <bob> bye" in alice


async def test_chat_wrong_password_is_refused() -> None:
    async with example_server("chat") as port:
        code, _ = await run_client("chat", *chat("alice", "nope", port, "rooms"))
    assert code != 0


async def test_game_bots_follow_each_other_through_the_cached_world() -> None:
    async with example_server("game", "--seed", "3", "--item-every", "0.05") as port:
        results: dict[str, tuple[int, list[str]]] = {}

        async def bot(name: str) -> None:
            results[name] = await run_client(
                "game", name, "--port", str(port), "--bot", "--plain", "--until", "15"
            )

        # A player who drops out: it joins, sees the game going, then its process is killed.
        dropper = await trio.lowlevel.open_process(
            [
                sys.executable,
                "-u",
                str(EXAMPLES / "game" / "client.py"),
                "green",
                "--port",
                str(port),
                "--plain",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(bot, "red")
            nursery.start_soon(bot, "blue")
            assert dropper.stdout is not None
            seen = b""
            with trio.fail_after(30):
                # Once green has seen both bots move, both follow the world's updates.
                while b"sees red at" not in seen or b"sees blue at" not in seen:
                    chunk = await dropper.stdout.receive_some()
                    assert chunk, f"green stopped early: {seen!r}"
                    seen += chunk
            dropper.kill()
            await dropper.wait()
    for name, other in (("red", "blue"), ("blue", "red")):
        code, lines = results[name]
        assert code == 0, lines
        assert any(line.startswith(f"{name} sees {other} at ") for line in lines), lines
        assert f"{name} sees green left" in lines, lines
        assert f"{name} finished" in lines
    # The game ended because someone reached 15, and both bots saw it happen.
    for name in ("red", "blue"):
        assert any(line.endswith(" with 15") for line in results[name][1]), results[name][1][-5:]
