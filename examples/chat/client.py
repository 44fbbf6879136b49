"""A chat client for the trio_pb chat server: interactive, or scripted for demos and tests.

Interactive (type ``/help`` once connected)::

    python examples/chat/client.py alice wonderland

Scripted: each ``--do`` is one step, run in order::

    python examples/chat/client.py bob builder --do "join lobby" --do "wait-for alice joined" \\
        --do "say hello alice" --do "quit"

Steps: ``join ROOM``, ``say TEXT`` (in the room joined last), ``who``, ``rooms``,
``leave``, ``wait-for TEXT`` (until a line containing TEXT was shown), ``sleep SECONDS``,
``quit``, and ``vanish`` (drop the connection abruptly, for tests).

Exit codes: 0 after ``quit`` (or the end of the script or of input), 1 when the client
cannot go on (no server, a refused login, a failed step, the server going away), 130
after Ctrl-C.  Each of those ends with one line on stderr, not a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import trio

import trio_pb

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

WAIT_FOR_SECONDS = 20


class StepError(Exception):
    """A step that cannot run as written (``sleep abc``, ``say`` before ``join``)."""


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
        with trio.move_on_after(WAIT_FOR_SECONDS):
            while True:
                for index in range(start, len(self.lines)):
                    if text in self.lines[index]:
                        return index + 1
                await self._changed.wait()
        raise StepError(f"waited {WAIT_FOR_SECONDS} s for {text!r} in vain")


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
            try:
                seconds = float(rest)
            except ValueError:
                raise StepError(f"sleep needs a number of seconds, not {rest!r}") from None
            await trio.sleep(seconds)
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
            raise StepError("join a room first")
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


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("username")
    parser.add_argument("password")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument("--do", action="append", metavar="STEP", help="run this step (scripted mode)")
    args = parser.parse_args()
    screen = Screen()
    try:
        async with trio_pb.open_tcp_broker(args.host, args.port) as broker:
            user = await broker.login(trio_pb.UsernamePassword(args.username, args.password), screen)
            return await converse(broker, Session(user, screen), args.username, args.do)
    except OSError as exc:
        return fail(f"cannot connect to {args.host}:{args.port}: {reason(exc)}")
    except trio_pb.LoginFailed as exc:
        return fail(f"login refused: {exc}")
    except trio_pb.DisconnectedError:
        return fail("the server went away")


async def converse(broker: trio_pb.Broker, session: Session, name: str, script: list[str] | None) -> int:
    """Run the script, or the commands typed, until the end or the server goes away."""
    # A task watches the connection, so that the client notices the server
    # going away while it waits for the user to type, not at the next line.
    gone = False

    async def watch(scope: trio.CancelScope) -> None:
        nonlocal gone
        await broker.wait_closed()
        gone = True
        scope.cancel()

    code = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch, nursery.cancel_scope)
        try:
            if script:
                await run_script(session, script)
            else:
                await run_typed(session, name)
        except (StepError, trio_pb.Error, trio_pb.RemoteError) as exc:
            code = fail(str(exc))
        except trio_pb.DisconnectedError:
            gone = True
        nursery.cancel_scope.cancel()
    if gone:
        return fail("the server went away")
    return code


async def run_script(session: Session, script: list[str]) -> None:
    for step in script:
        if not await session.run(step):
            return


async def run_typed(session: Session, name: str) -> None:
    screen = session.screen
    screen.show(f"logged in as {name}; /join lobby, then type to talk, /help for more")
    async for line in lines_from_stdin():
        if not line.strip():
            continue
        step = line if line.startswith("/") else f"say {line}"
        try:
            if not await session.run(step):
                return
        except (StepError, trio_pb.Error, trio_pb.RemoteError) as exc:
            screen.show(f"error: {exc}")


def reason(exc: OSError) -> str:
    """What an OSError says without the address it repeats ("Connection refused")."""
    return os.strerror(exc.errno) if exc.errno else str(exc)


def fail(message: str) -> int:
    """Say why the client stops, on one line, and give the exit code for it."""
    print(f"chat: {message}", file=sys.stderr, flush=True)
    return 1


def run() -> int:
    try:
        return trio.run(main)
    except KeyboardInterrupt:
        return 130
    except BaseExceptionGroup as group:
        # Ctrl-C while a nursery is open arrives wrapped in its ExceptionGroup.
        _, rest = group.split(KeyboardInterrupt)
        if rest is not None:
            raise
        return 130


if __name__ == "__main__":
    sys.exit(run())
