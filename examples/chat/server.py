"""A chat server on trio_pb: users log in, join rooms, talk; the server calls them back.

Each logged-in user is an avatar (``perspective_*`` methods).  Joining a room
hands the client a reference to a ``Room``, a Viewable: its ``view_*``
methods learn which user is calling without trusting anything the client
says.  The server delivers messages by calling the client's *mind*, the
object the client passed when it logged in.

    python examples/chat/server.py --port 8787 --users examples/chat/users.txt

``-v`` (``--verbose``) logs every PB message sent and received, on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import trio

import trio_pb

log = logging.getLogger("chat")
ROOMS = ("lobby", "trio", "twisted")


class ChatError(trio_pb.Error):
    """A user's mistake (no such room, not in the room): sent back, not logged as a bug."""


class Room(trio_pb.Viewable):
    """A chat room; every ``view_*`` method gets the calling user first."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.members: dict[str, ChatUser] = {}

    def enter(self, user: ChatUser) -> None:
        self.members[user.name] = user
        self.tell_all("joined", self.name, user.name)

    def view_speak(self, user: ChatUser, text: str) -> None:
        if user.name not in self.members:
            raise ChatError(f"{user.name} is not in {self.name}")
        self.tell_all("message", self.name, user.name, str(text))

    def view_who(self, user: ChatUser) -> list[str]:
        return sorted(self.members)

    def view_leave(self, user: ChatUser) -> None:
        self.remove(user)

    def remove(self, user: ChatUser) -> None:
        if self.members.pop(user.name, None) is not None:
            self.tell_all("left", self.name, user.name)

    def tell_all(self, what: str, *args: Any) -> None:
        for member in list(self.members.values()):
            member.tell(what, *args)


class ChatUser(trio_pb.Avatar):
    """One logged-in user: what their client may do, and how to reach it."""

    def __init__(self, server: ChatServer, name: str, mind: Any) -> None:
        self.server = server
        self.name = name
        self.mind = mind

    def perspective_rooms(self) -> list[str]:
        return sorted(self.server.rooms)

    def perspective_join(self, room_name: str) -> Room:
        room = self.server.rooms.get(room_name)
        if room is None:
            raise ChatError(f"no room called {room_name!r}")
        room.enter(self)
        return room

    def tell(self, what: str, *args: Any) -> None:
        # Fire and forget: one slow client must not hold up a whole room.
        with contextlib.suppress(trio_pb.DeadReferenceError):
            self.mind.call_remote_no_answer(what, *args)

    def logout(self) -> None:
        log.info("%s logged out", self.name)
        for room in self.server.rooms.values():
            room.remove(self)
        self.mind.release_nowait()


class ChatServer:
    """The realm: makes a ChatUser for each login."""

    def __init__(self) -> None:
        self.rooms = {name: Room(name) for name in ROOMS}

    def request_avatar(self, avatar_id: bytes, mind: Any) -> tuple[ChatUser, Any]:
        user = ChatUser(self, avatar_id.decode(), mind)
        log.info("%s logged in", user.name)
        return user, user.logout


def trace(args: argparse.Namespace) -> Callable[[trio_pb.TraceEvent], None] | None:
    """The broker's trace: with ``--verbose``, a log line per message (None: no trace, no cost)."""
    return trio_pb.log_trace if args.verbose else None


def make_portal(users: Path) -> trio_pb.Portal:
    return trio_pb.Portal(ChatServer(), [trio_pb.FilePasswordChecker(users)])


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787, help="0 picks a free port")
    parser.add_argument("--users", type=Path, default=Path(__file__).with_name("users.txt"))
    parser.add_argument("--quiet", action="store_true", help="log only warnings and errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every PB message sent and received")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="server: %(message)s")
    if args.verbose:
        # On stderr, as all the log: the library's own lines, and one per PB message.
        for name in ("trio_pb", "trio_pb.trace"):
            logging.getLogger(name).setLevel(logging.DEBUG)
    if not args.users.is_file():
        print(f"chat server: no users file at {args.users}", file=sys.stderr)
        return 1
    # Ctrl-C (and SIGTERM) stop the server in order: caught as signals, not as a
    # KeyboardInterrupt that would surface wrapped in the nursery's ExceptionGroup.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            # keepalive: a client whose machine vanished is logged out within 90 s,
            # instead of whenever TCP gives up on it.
            serve = partial(
                trio_pb.serve_tcp,
                make_portal(args.users),
                args.port,
                host=args.host,
                keepalive=30,
                trace=trace(args),
            )
            try:
                listeners = await nursery.start(serve)
            except OSError as exc:
                reason = os.strerror(exc.errno) if exc.errno else exc
                print(f"chat server: cannot listen on {args.host}:{args.port}: {reason}", file=sys.stderr)
                return 1
            host, port = listeners[0].socket.getsockname()[:2]
            print(f"listening on {host}:{port}", flush=True)
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()
    print("chat server stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(trio.run(main))
