"""The chat demo: a server and three scripted clients on loopback, as real processes.

Starts ``server.py`` on a free port, runs alice, bob and carol through a short
conversation with ``client.py --do ...``, prints what each of them sees as it
happens, and exits 0 if everyone finished.

    python examples/chat/demo.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import trio

HERE = Path(__file__).parent
CONVERSATION = {
    "alice": ("wonderland", [
        "join lobby", "wait-for bob joined", "say hello bob, welcome to trio_pb chat",
        "wait-for carol joined", "say hi carol! bob and I were just talking about structured concurrency",
        "wait-for nurseries", "who", "say bye all", "wait-for carol left", "wait-for see you", "leave",
    ]),
    "bob": ("builder", [
        "join lobby", "wait-for hello bob", "say thanks alice!",
        "wait-for carol joined", "wait-for bye all", "wait-for carol left", "say see you", "quit",
    ]),
    "carol": ("singer", [
        "join lobby", "wait-for structured concurrency",
        "say nurseries all the way down", "wait-for bye all", "quit",
    ]),
}  # fmt: skip
START_ORDER = ("alice", "bob", "carol")


async def run_client(
    name: str, port: int, started: trio.Event, ready: trio.Event, failures: list[str]
) -> None:
    password, steps = CONVERSATION[name]
    command = [sys.executable, "-u", str(HERE / "client.py"), name, password, "--port", str(port)]
    for step in steps:
        command += ["--do", step]
    await started.wait()
    process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE)
    assert process.stdout is not None
    buffer = b""
    joined = False
    try:
        while chunk := await process.stdout.receive_some():
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                print(f"{name:>6} | {line.decode()}", flush=True)
                if not joined and f"* {name} joined" in line.decode():
                    joined = True
                    ready.set()
        await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    if process.returncode != 0:
        failures.append(f"{name} exited with {process.returncode}")
    ready.set()


async def main() -> int:
    server = await trio.lowlevel.open_process(
        [sys.executable, "-u", str(HERE / "server.py"), "--port", "0", "--quiet"], stdout=subprocess.PIPE
    )
    try:
        assert server.stdout is not None
        line = b""
        with trio.fail_after(30):
            while not line.endswith(b"\n"):
                chunk = await server.stdout.receive_some(1)
                if not chunk:
                    print("the chat server did not start", file=sys.stderr)
                    return 1
                line += chunk
        port = int(line.decode().rsplit(":", 1)[1])
        print(f"chat server listening on port {port}; alice, bob and carol log in\n", flush=True)
        failures: list[str] = []
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                # Each client starts once the one before it is in the room.
                go = trio.Event()
                go.set()
                for name in START_ORDER:
                    in_room = trio.Event()
                    nursery.start_soon(run_client, name, port, go, in_room, failures)
                    go = in_room
        print()
        if failures:
            print("demo failed: " + "; ".join(failures), file=sys.stderr)
            return 1
        print("demo finished: everyone logged in, talked and left.")
        return 0
    finally:
        server.terminate()
        await server.wait()


if __name__ == "__main__":
    sys.exit(trio.run(main))
