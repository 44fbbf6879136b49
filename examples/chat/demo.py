"""The chat demo: a server and three scripted clients on loopback, as real processes.

Starts ``server.py`` on a free port, runs alice, bob and carol through a short
conversation with ``client.py --do ...``, prints the conversation once, as alice
(who is there from first to last) sees it, and exits 0 if everyone finished.

Every step waits for the one before it, and each client starts once the room is
ready for it, so the transcript is the same on every run.

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
        "wait-for nurseries", "who", "say bye all", "wait-for carol left", "wait-for see you",
        "wait-for bob left", "leave",
    ]),
    "bob": ("builder", [
        "join lobby", "wait-for hello bob", "say thanks alice!",
        "wait-for bye all", "wait-for carol left", "say see you", "quit",
    ]),
    "carol": ("singer", [
        "join lobby", "wait-for structured concurrency",
        "say nurseries all the way down", "wait-for bye all", "quit",
    ]),
}  # fmt: skip
#: Who shows the conversation, and when each of the others joins: once alice has seen this line.
VIEWER = "alice"
START_AFTER = {"alice": None, "bob": "* alice joined", "carol": "<bob> thanks alice!"}


class Transcript:
    """The viewer's lines as they come, and events for the lines the others start after."""

    def __init__(self) -> None:
        self.cues = {name: trio.Event() for name, cue in START_AFTER.items() if cue is not None}

    def seen(self, line: str) -> None:
        for name, event in self.cues.items():
            cue = START_AFTER[name]
            if cue is not None and cue in line:
                event.set()

    async def wait_turn(self, name: str) -> None:
        if name in self.cues:
            await self.cues[name].wait()


async def run_client(name: str, port: int, transcript: Transcript, failures: list[str]) -> None:
    password, steps = CONVERSATION[name]
    command = [sys.executable, "-u", str(HERE / "client.py"), name, password, "--port", str(port)]
    for step in steps:
        command += ["--do", step]
    await transcript.wait_turn(name)
    process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    buffer = b""
    errors = b""
    try:
        while chunk := await process.stdout.receive_some():
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if name == VIEWER:
                    print(f"  {line.decode()}", flush=True)
                    transcript.seen(line.decode())
        while chunk := await process.stderr.receive_some():
            errors += chunk
        await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    if process.returncode != 0:
        why = errors.decode().strip() or f"exit code {process.returncode}"
        failures.append(f"{name}: {why}")
        # Nobody waits for a cue that will never come.
        for event in transcript.cues.values():
            event.set()


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
        print(f"chat server listening on port {port}; alice, bob and carol log in.", flush=True)
        print(f"The lobby, as {VIEWER} sees it:\n", flush=True)
        failures: list[str] = []
        transcript = Transcript()
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for name in CONVERSATION:
                    nursery.start_soon(run_client, name, port, transcript, failures)
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
