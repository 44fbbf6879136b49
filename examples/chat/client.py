"""A chat client for the trio_pb chat server: a terminal UI, or scripted for demos and tests.

Interactive, on a terminal (type ``/help`` once connected)::

    python examples/chat/client.py alice wonderland

This opens a full-screen UI (``chat_ui.py``, on urwid: ``pip install urwid``, or the project's
``examples`` extra): messages scroll in a pane above, the line being typed stays at the bottom
with the usual editing keys and a history (up and down), and a status line shows who you are,
the server, the rooms you are in and the connection.  If the server goes away, the client says
so there, logs in again with a growing delay between attempts, and rejoins its rooms: it
stays connected with ``trio_pb.open_reconnecting_broker``, which logs in on each connection,
and sets each one up again as ``conn.connections()`` yields it.  ``-v`` (``--verbose``) logs
every PB message sent and received (``trace=trio_pb.log_trace``), in the pane on the UI and
on stderr otherwise.
With standard input not a terminal (a pipe), the client reads one command per line and prints
one line per event instead, and stops when the server goes away.

Scripted: each ``--do`` is one step, run in order::

    python examples/chat/client.py bob builder --do "join lobby" --do "wait-for alice joined" \\
        --do "say hello alice" --do "quit"

Steps: the commands of ``/help`` without the slash (``say TEXT`` talks), and, for scripts and
tests, ``wait-for TEXT`` (until a line containing TEXT was shown), ``sleep SECONDS`` and
``vanish`` (drop the connection abruptly).  Scripted runs and piped input need trio_pb alone.

Exit codes: 0 after ``quit`` (or the end of the script or of input), 1 when the client
cannot go on (no server, a refused login, a failed step, the server going away, except in
the UI, which reconnects), 130 after Ctrl-C.  Each of those ends with one line on stderr,
not a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

import trio_pb

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]
if TYPE_CHECKING:
    from chat_ui import ChatView  # imported at run time only by the UI, which needs urwid

WAIT_FOR_SECONDS = 20
#: What ``/help`` shows: the commands a user types.  Scripts have a few more (see above).
HELP = """\
/join ROOM      join a room and talk there; /join a room you are in to talk there again
/leave [ROOM]   leave the room you talk in, or the one named; you stay in the others
/who            who is in the room you talk in
/rooms          the rooms on the server
/help           this text
/quit           leave the chat (Ctrl-C too)
Anything else you type is said in the room you talk in."""
USER_VERBS = {"join", "leave", "who", "rooms", "help", "quit", "exit", "say"}


class StepError(Exception):
    """A step that cannot run as written (``sleep abc``, ``say`` before ``join``)."""


def text(value: object) -> str:
    """A name or message as text: a server may send a username as bytes (Twisted's do)."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def print_line(line: str) -> None:
    print(line, flush=True)


class Screen(trio_pb.Referenceable):
    """The mind the server calls back; it shows what happens in the rooms."""

    def __init__(self, output: Callable[[str], None] = print_line, *, keep: bool = True) -> None:
        self.output = output
        # Scripts wait for lines they have seen; the UI, which never does, keeps none.
        self.keep = keep
        self.lines: list[str] = []
        self._changed = trio.Event()

    def show(self, line: str) -> None:
        self.output(line)
        if self.keep:
            self.lines.append(line)
            self._changed.set()
            self._changed = trio.Event()

    def remote_message(self, room: str, speaker: str, message: str) -> None:
        self.show(f"[{text(room)}] <{text(speaker)}> {text(message)}")

    def remote_joined(self, room: str, name: str) -> None:
        self.show(f"[{text(room)}] * {text(name)} joined")

    def remote_left(self, room: str, name: str) -> None:
        self.show(f"[{text(room)}] * {text(name)} left")

    async def wait_for(self, wanted: str, start: int) -> int:
        """Wait until a line after index *start* contains *wanted*; return the index after it."""
        with trio.move_on_after(WAIT_FOR_SECONDS):
            while True:
                for index in range(start, len(self.lines)):
                    if wanted in self.lines[index]:
                        return index + 1
                await self._changed.wait()
        raise StepError(f"waited {WAIT_FOR_SECONDS} s for {wanted!r} in vain")


class Session:
    """What one user does on one connection: steps from a script or commands typed."""

    def __init__(self, user: trio_pb.RemoteReference, screen: Screen) -> None:
        self.user = user
        self.screen = screen
        # The rooms joined, in the order joined; what is said goes to room_name.
        self.rooms: dict[str, trio_pb.RemoteReference] = {}
        self.room_name = ""
        self.seen = 0

    async def run(self, step: str) -> bool:
        """Run one step; False means quit."""
        verb, _, rest = step.strip().partition(" ")
        verb = verb.lstrip("/")
        if verb == "join":
            await self.join(rest.strip())
        elif verb == "say":
            await self._in_room().call_remote("speak", rest)
        elif verb == "who":
            names = await self._in_room().call_remote("who")
            self.screen.show(f"[{self.room_name}] here: {', '.join(map(text, names))}")
        elif verb == "rooms":
            names = await self.user.call_remote("rooms")
            self.screen.show("rooms: " + ", ".join(map(text, names)))
        elif verb == "leave":
            await self.leave(rest.strip() or self.room_name)
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
            for line in HELP.splitlines():
                self.screen.show(line)
        else:
            self.screen.show(f"unknown command {verb!r}; try /help")
        return True

    async def join(self, name: str) -> None:
        """Join room *name* (or, if already in it, talk there again)."""
        if not name:
            raise StepError("join which room? /rooms lists them")
        if name not in self.rooms:
            self.rooms[name] = await self.user.call_remote("join", name)
        self.room_name = name

    async def leave(self, name: str) -> None:
        """Leave room *name*; if it was the one talked in, talk in the one joined last of the others."""
        if name not in self.rooms:
            raise StepError(f"you are not in {name!r}" if name else "join a room first")
        room = self.rooms[name]
        await room.call_remote("leave")
        del self.rooms[name]
        await room.release()
        if name == self.room_name:
            self.room_name = next(reversed(self.rooms), "")

    def _in_room(self) -> trio_pb.RemoteReference:
        if not self.room_name:
            raise StepError("join a room first")
        return self.rooms[self.room_name]


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
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log every PB message sent and received (in the UI: its pane)",
    )
    args = parser.parse_args()
    if not args.do and sys.stdin.isatty() and sys.stdout.isatty():
        return await interactive(args)
    if args.verbose:
        to_stderr = logging.StreamHandler(sys.stderr)
        to_stderr.setFormatter(logging.Formatter("chat: %(name)s: %(message)s"))
        verbose_logging(to_stderr)
    screen = Screen()
    try:
        async with logged_in(args, screen) as (broker, user):
            return await converse(broker, Session(user, screen), args.username, args.do)
    except OSError as exc:
        return fail(f"cannot connect to {args.host}:{args.port}: {reason(exc)}")
    except trio_pb.LoginFailed as exc:
        return fail(f"login refused: {exc}")
    except trio_pb.DisconnectedError:
        return fail("the server went away")


@asynccontextmanager
async def logged_in(
    args: argparse.Namespace, mind: Screen
) -> AsyncIterator[tuple[trio_pb.Broker, trio_pb.RemoteReference]]:
    """A connection to the server, logged in as the user: the broker and the user's avatar."""
    async with trio_pb.open_tcp_broker(args.host, args.port, trace=trace(args)) as broker:
        user = await broker.login(trio_pb.UsernamePassword(args.username, args.password), mind)
        yield broker, user


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


class TerminalChat:
    """The interactive client: the UI, and the session of whichever connection is up."""

    def __init__(self, view: ChatView, args: argparse.Namespace) -> None:
        self.view = view
        self.args = args
        self.screen = Screen(view.show, keep=False)
        self.session: Session | None = None
        # The rooms joined, kept across connections so that a new one rejoins them.
        self.rooms: list[str] = []
        self.room_name = ""
        self.state = "connecting"
        # Why the very first attempt failed: a client that never got in says so and stops.
        self.first_error: BaseException | None = None
        self.give_up = trio.CancelScope()

    def refresh(self) -> None:
        others = [name for name in self.rooms if name != self.room_name]
        if not self.room_name:
            rooms = "in no room"
        elif others:
            rooms = f"talking in {self.room_name}, also in {', '.join(others)}"
        else:
            rooms = f"talking in {self.room_name}"
        where = f"{self.args.host}:{self.args.port}"
        self.view.set_status(f" {self.args.username} on {where} | {rooms} | {self.state}")

    async def follow_waits(self, conn: trio_pb.ReconnectingBroker) -> None:
        """Say why the client waits, and how long, each time it waits to connect again."""
        async for wait in conn.waits():
            if wait.connections == 0:
                # The very first attempt failed: the client stops and says why.
                self.first_error = wait.error
                self.give_up.cancel()
                return
            self.session = None
            if wait.after_loss:
                self.state = f"the server went away; reconnecting in {wait.delay:.1f} s"
                self.view.note(f"* {self.state}")
            else:
                try_number = wait.failures + 1
                self.state = f"the server went away; reconnecting in {wait.delay:.1f} s (try {try_number})"
                why = describe(wait.error)
                self.view.note(f"* cannot log in again ({why}); reconnecting in {wait.delay:.1f} s")
            self.refresh()

    async def follow(self, conn: trio_pb.ReconnectingBroker, *, task_status: trio.TaskStatus[None]) -> None:
        """Set up each connection as it comes up (started once the first one is), until the end."""
        started = False
        async for broker in conn.connections():
            try:
                await self.rejoin(conn, broker)
            except trio_pb.DisconnectedError:
                continue  # lost while rejoining: the next connection rejoins
            if not started:
                started = True
                task_status.started()
            await broker.wait_closed()
            self.session = None

    async def rejoin(self, conn: trio_pb.ReconnectingBroker, broker: trio_pb.Broker) -> None:
        """Start a session on a new connection, back in the rooms the user was in."""
        session = Session(conn.perspective_of(broker), self.screen)
        for name in self.rooms:
            try:
                await session.join(name)
            except trio_pb.RemoteError as exc:
                self.view.error(f"cannot rejoin {name}: {exc}")
        if self.room_name in session.rooms:
            session.room_name = self.room_name
        self.rooms = list(session.rooms)
        self.room_name = session.room_name
        self.session = session
        number = conn.statistics().connections
        self.state = "connected" if number == 1 else f"connected (connection {number})"
        if number > 1:
            rejoined = f"; back in {', '.join(self.rooms)}" if self.rooms else ""
            self.view.note(f"* reconnected as {self.args.username}{rejoined}")
        else:
            self.view.note(f"logged in as {self.args.username}; /join lobby to talk, /help for more")
        self.refresh()

    async def take_commands(self) -> None:
        """Run what the user types, until ``/quit``."""
        async for line in self.view.typed():
            if not line.strip():
                continue
            step = line if line.startswith("/") else f"say {line}"
            verb = step.split()[0].lstrip("/")
            if verb not in USER_VERBS:
                self.view.error(f"unknown command {verb!r}; try /help")
            elif verb in ("quit", "exit"):
                return
            elif verb == "help":
                for help_line in HELP.splitlines():
                    self.view.note(help_line)
            elif self.session is None:
                self.view.error(f"not connected ({self.state}); try again once reconnected")
            else:
                await self.run(self.session, step, verb)

    async def run(self, session: Session, step: str, verb: str) -> None:
        before, rooms_before = session.room_name, set(session.rooms)
        try:
            await session.run(step)
        except (StepError, trio_pb.Error, trio_pb.RemoteError) as exc:
            self.view.error(f"error: {exc}")
        except trio_pb.DisconnectedError:
            self.view.error("not done: the server went away")
        self.rooms = list(session.rooms)
        self.room_name = session.room_name
        # The server tells the room, not the one who left: say it here.
        for left in sorted(rooms_before - set(session.rooms)):
            where = f"you talk in {session.room_name}" if session.room_name else "/join a room to talk"
            self.view.note(f"* left {left}; {where} now")
        if verb == "join" and session.room_name != before:
            self.view.note(f"* you talk in {session.room_name} now")
        self.refresh()


class ShowLogRecords(logging.Handler):
    """Log records in the pane: written to stderr they would tear up the screen."""

    #: What the library logs about reconnecting, which the pane and status line say already.
    SAID_ALREADY = ("connection to %s lost", "connecting to %s failed")

    def __init__(self, view: ChatView, level: int) -> None:
        super().__init__(level)
        self.view = view

    def emit(self, record: logging.LogRecord) -> None:
        if self.level >= logging.WARNING and str(record.msg).startswith(self.SAID_ALREADY):
            return
        line = f"log: {record.name}: {record.getMessage()}"
        if record.levelno >= logging.WARNING:
            self.view.error(line)
        else:
            self.view.note(line)


async def interactive(args: argparse.Namespace) -> int:
    """The terminal UI, until ``/quit``; only the first attempt's failure, or a refused login, ends it."""
    try:
        from chat_ui import ChatView
    except ImportError:
        return fail("the terminal UI needs urwid: pip install urwid (or use --do, or pipe the input)")
    view = ChatView()
    chat = TerminalChat(view, args)
    chat.refresh()
    if args.verbose:
        verbose_logging(ShowLogRecords(view, logging.DEBUG))
    else:
        logging.getLogger().addHandler(ShowLogRecords(view, logging.WARNING))
    backoff = trio_pb.Backoff(initial_delay=0.5, max_delay=10.0)
    try:
        with chat.give_up:
            async with (
                trio_pb.open_reconnecting_broker(
                    args.host,
                    args.port,
                    credentials=trio_pb.UsernamePassword(args.username, args.password),
                    mind=chat.screen,
                    backoff=backoff,
                    trace=trace(args),
                ) as conn,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(chat.follow_waits, conn)
                await nursery.start(chat.follow, conn)
                nursery.start_soon(view.run)
                await chat.take_commands()
                nursery.cancel_scope.cancel()
    except trio_pb.LoginFailed as exc:
        return fail(f"login refused: {exc}")
    if chat.first_error is not None:
        if isinstance(chat.first_error, OSError):
            return fail(f"cannot connect to {args.host}:{args.port}: {reason(chat.first_error)}")
        return fail(f"cannot connect to {args.host}:{args.port}: {describe(chat.first_error)}")
    return 0


def trace(args: argparse.Namespace) -> Callable[[trio_pb.TraceEvent], None] | None:
    """The broker's trace: with ``--verbose``, a log line per message (None: no trace, no cost)."""
    return trio_pb.log_trace if args.verbose else None


def verbose_logging(handler: logging.Handler) -> None:
    """``--verbose``: the library's log and its trace of every message, at DEBUG, to *handler*."""
    for name in ("trio_pb", "trio_pb.trace"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    logging.getLogger().addHandler(handler)


def describe(exc: BaseException | None) -> str:
    """Why an attempt failed, in a few words."""
    if isinstance(exc, OSError):
        return reason(exc)
    return str(exc) or type(exc).__name__


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
