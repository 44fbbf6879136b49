"""A chat client for the trio_pb chat server: interactive, or scripted for demos and tests.

Interactive (type ``/help`` once connected)::

    python examples/chat/client.py alice wonderland

Scripted: each ``--do`` is one step, run in order::

    python examples/chat/client.py bob builder --do "join lobby" --do "wait-for alice joined" \\
        --do "say hello alice" --do "quit"

Steps: ``join ROOM``, ``say TEXT`` (in the room joined last), ``who``, ``rooms``,
``leave``, ``wait-for TEXT`` (until a line containing TEXT was shown), ``sleep SECONDS``,
``quit``, and ``vanish`` (drop the connection abruptly, for tests).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Any

import trio

import trio_pb

WAIT_FOR_SECONDS = 20


class Screen(trio_pb.Referenceable):
    """The mind the server calls back; it shows what happens in the rooms."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._changed = trio.Event()

    def show(self, line: str) -> None:
        print(line, flush=True)
        self.lines.append(line)
        self._changed.set()
        self._changed = trio.Event()

    def remote_message(self, room: str, speaker: str, text: str) -> None:
        self.show(f"[{room}] <{speaker}> {text}")

    def remote_joined(self, room: str, name: str) -> None:
        self.show(f"[{room}] * {name} joined")

    def remote_left(self, room: str, name: str) -> None:
        self.show(f"[{room}] * {name} left")

    async def wait_for(self, text: str, start: int) -> int:
        """Wait until a line after index *start* contains *text*; return the index after it."""
        with trio.fail_after(WAIT_FOR_SECONDS):
            while True:
                for index in range(start, len(self.lines)):
                    if text in self.lines[index]:
                        return index + 1
                await self._changed.wait()


class Session:
    """What one user does: steps from a script or commands typed at the terminal."""

    def __init__(self, user: trio_pb.RemoteReference, screen: Screen) -> None:
        self.user = user
        self.screen = screen
        self.room: trio_pb.RemoteReference | None = None
        self.room_name = ""
        self.seen = 0

    async def run(self, step: str) -> bool:
        """Run one step; False means quit."""
        verb, _, rest = step.strip().partition(" ")
        verb = verb.lstrip("/")
        if verb == "join":
            self.room = await self.user.call_remote("join", rest)
            self.room_name = rest
        elif verb == "say":
            await self._in_room().call_remote("speak", rest)
        elif verb == "who":
            names = await self._in_room().call_remote("who")
            self.screen.show(f"[{self.room_name}] here: {', '.join(names)}")
        elif verb == "rooms":
            self.screen.show("rooms: " + ", ".join(await self.user.call_remote("rooms")))
        elif verb == "leave":
            await self._in_room().call_remote("leave")
            await self._in_room().release()
            self.room = None
        elif verb == "wait-for":
            self.seen = await self.screen.wait_for(rest, self.seen)
        elif verb == "sleep":
            await trio.sleep(float(rest))
        elif verb == "vanish":
            os._exit(3)
        elif verb in ("quit", "exit"):
            return False
        elif verb == "help":
            self.screen.show(__doc__.split("Steps: ", 1)[1].strip())
        else:
            self.screen.show(f"unknown command {verb!r}; try /help")
        return True

    def _in_room(self) -> trio_pb.RemoteReference:
        if self.room is None:
            raise RuntimeError("join a room first")
        return self.room


async def lines_from_stdin() -> Any:
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    buffer = b""
    async with stdin:
        while True:
            chunk = await stdin.receive_some()
            if not chunk:
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                yield line.decode(errors="replace")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("username")
    parser.add_argument("password")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument("--do", action="append", metavar="STEP", help="run this step (scripted mode)")
    args = parser.parse_args()
    screen = Screen()
    async with trio_pb.open_tcp_broker(args.host, args.port) as broker:
        user = await broker.login(trio_pb.UsernamePassword(args.username, args.password), screen)
        session = Session(user, screen)
        if args.do:
            for step in args.do:
                if not await session.run(step):
                    break
            return
        screen.show(f"logged in as {args.username}; /join lobby, then type to talk, /help for more")
        async for line in lines_from_stdin():
            if not line.strip():
                continue
            step = line if line.startswith("/") else f"say {line}"
            try:
                if not await session.run(step):
                    break
            except (trio_pb.Error, trio_pb.RemoteError, RuntimeError) as exc:
                screen.show(f"error: {exc}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(main)
