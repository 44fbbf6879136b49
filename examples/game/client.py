"""A game client: a terminal view of the board, played by you or by a bot.

    python examples/game/client.py red --port 8788            # you: the arrow keys (or w/a/s/d)
    python examples/game/client.py blue --port 8788 --bot     # a bot that chases the nearest item

The client holds a RemoteCache of the world and redraws it after every update
it receives (``async for update in world.updates()``).  On a terminal it shows
the board with a legend, how to play, what became of the last key and a status
line (``game_ui.py``, on urwid: ``pip install urwid``, or the project's
``examples`` extra).  With ``--until N`` a bot stops once someone has N points;
``--plain`` prints one line per update instead, and reads one move per line
(``up``, ``down``, ``left``, ``right`` or ``w``/``a``/``s``/``d``; for logs,
pipes and tests: it needs trio_pb alone).  ``-v`` (``--verbose``) logs every PB message sent
and received (``trace=trio_pb.log_trace``): on stderr, or, under the terminal UI, which owns
the screen, into ``game-COLOUR.log`` (``--log-file`` names another file).

Exit codes: 0 when the game or the player is done, 1 when the client cannot go on (no
server, a refused login such as a colour already playing, the server going away), 130
after Ctrl-C.  Each of those ends with one line on stderr, not a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from functools import partial
from typing import TYPE_CHECKING

import trio
from world import TAG, RemoteWorld

import trio_pb

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]
if TYPE_CHECKING:
    from game_ui import GameView  # imported at run time only by the UI, which needs urwid

trio_pb.set_unjellyable_for_class(TAG, RemoteWorld)
KEYS = {"w": "up", "s": "down", "a": "left", "d": "right"}
DIRECTIONS = ("up", "down", "left", "right")


def next_step(world: RemoteWorld, me: str) -> str | None:
    """The direction towards the nearest item, or None if there is none."""
    x, y, _ = world.players[me]
    if not world.items:
        return None
    tx, ty = min(world.items, key=lambda item: abs(item[0] - x) + abs(item[1] - y))
    if tx != x:
        return "right" if tx > x else "left"
    if ty != y:
        return "down" if ty > y else "up"
    return None


async def play_bot(
    player: trio_pb.RemoteReference, world: RemoteWorld, me: str, until: int, pace: float
) -> None:
    while max(score for _, _, score in world.players.values()) < until:
        direction = next_step(world, me)
        if direction is not None:
            await player.call_remote("move", direction)
        await trio.sleep(pace)


async def play_keyboard(player: trio_pb.RemoteReference) -> None:
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    async with stdin:
        buffer = b""
        while chunk := await stdin.receive_some():
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                word = line.decode(errors="replace").strip().lower()
                if word in ("q", "quit"):
                    return
                direction = KEYS.get(word, word)
                if direction in DIRECTIONS:
                    await player.call_remote("move", direction)
                elif word:
                    print(f"{word!r} is not a move: up, down, left, right (or w a s d), q quits", flush=True)


async def show(world: RemoteWorld, me: str, plain: bool) -> None:
    try:
        async for update in world.updates():
            if plain:
                name, *rest = update.args
                if update.method == "moved":
                    print(f"{me} sees {name} at {rest[0]},{rest[1]} with {rest[2]}", flush=True)
                elif update.method in ("joined", "left"):
                    print(f"{me} sees {name} {update.method}", flush=True)
            else:
                print("\x1b[H\x1b[2J" + world.render(), flush=True)
    except trio_pb.DisconnectedError:
        return  # the watcher in play() says so


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=["red", "blue", "green", "yellow"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8788)
    parser.add_argument("--bot", action="store_true", help="let a bot play")
    parser.add_argument("--until", type=int, default=5, help="a bot stops when someone has this score")
    parser.add_argument("--pace", type=float, default=0.05, help="seconds between a bot's moves")
    parser.add_argument("--plain", action="store_true", help="a line per update instead of the board")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every PB message sent and received")
    parser.add_argument("--log-file", help="where --verbose logs under the terminal UI (game-COLOUR.log)")
    args = parser.parse_args()
    terminal = not args.plain and sys.stdout.isatty() and (args.bot or sys.stdin.isatty())
    if args.verbose:
        verbose_logging((args.log_file or f"game-{args.name}.log") if terminal else None)
    if terminal:
        try:
            import game_ui
        except ImportError:
            return fail("the terminal UI needs urwid: pip install urwid (or use --plain)")
        args.view = partial(game_ui.GameView, args.name, f"{args.host}:{args.port}", args.bot)
    else:
        args.view = None
    try:
        async with trio_pb.open_tcp_broker(
            args.host, args.port, trace=trio_pb.log_trace if args.verbose else None
        ) as broker:
            player = await broker.login(trio_pb.UsernamePassword(args.name, args.name))
            world = await player.call_remote("world")
            if not await play(broker, player, world, args):
                return fail("the server went away")
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else exc
        return fail(f"cannot connect to {args.host}:{args.port}: {reason}")
    except trio_pb.LoginFailed as exc:
        return fail(f"login refused: {exc}")
    except trio_pb.DisconnectedError:
        return fail("the server went away")
    print(world.render(), flush=True)
    print(f"{args.name} finished", flush=True)
    return 0


async def play(
    broker: trio_pb.Broker, player: trio_pb.RemoteReference, world: RemoteWorld, args: argparse.Namespace
) -> bool:
    """Show the world and play until done; False if the server went away first."""
    gone = False

    async def watch(scope: trio.CancelScope) -> None:
        # Noticed here even while the player only watches (or types nothing).
        nonlocal gone
        await broker.wait_closed()
        gone = True
        scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch, nursery.cancel_scope)
        view = None if args.view is None else args.view(world.width)
        if view is not None:
            nursery.start_soon(follow, world, view)
            nursery.start_soon(view.run)
        else:
            nursery.start_soon(show, world, args.name, args.plain)
        try:
            if args.bot and view is not None:
                # The bot plays, and q quits before it is done.
                nursery.start_soon(wait_for_quit, view, nursery.cancel_scope)
                await play_bot(player, world, args.name, args.until, args.pace)
            elif args.bot:
                await play_bot(player, world, args.name, args.until, args.pace)
            elif view is not None:
                await play_keys(player, view)
            else:
                await play_keyboard(player)
        except trio_pb.DisconnectedError:
            gone = True
        nursery.cancel_scope.cancel()
    return not gone


async def follow(world: RemoteWorld, view: GameView) -> None:
    """Redraw the board after every update of the world's copy."""
    view.draw(world)
    view.say("your move" if not view.bot else "the bot plays")
    with contextlib.suppress(trio_pb.DisconnectedError):  # the watcher in play() says so
        async for _ in world.updates():
            view.draw(world)


#: The keys that move, in the terminal UI.
MOVE_KEYS = {**KEYS, "up": "up", "down": "down", "left": "left", "right": "right"}


async def play_keys(player: trio_pb.RemoteReference, view: GameView) -> None:
    """Move on the arrow keys and w/a/s/d until q; any other key is answered on the message line."""
    async for key in view.keys():
        if key in ("q", "Q", "esc"):
            return
        direction = MOVE_KEYS.get(key.lower() if len(key) == 1 else key)
        if direction is None:
            view.say(f"{key!r} is not a move: use the arrow keys or w a s d (q quits)")
            continue
        score = await player.call_remote("move", direction)
        view.say(f"moved {direction}; {score} point{'s' if score != 1 else ''}")


async def wait_for_quit(view: GameView, scope: trio.CancelScope) -> None:
    async for key in view.keys():
        if key in ("q", "Q", "esc"):
            scope.cancel()
            return
        view.say(f"{key!r}: the bot plays; q quits")


def verbose_logging(log_file: str | None) -> None:
    """``--verbose``: the library's log and its trace of every message, into *log_file* or on stderr."""
    # Under the terminal UI, lines on stderr would be drawn over the board.
    handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("game: %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    for name in ("trio_pb", "trio_pb.trace"):
        logging.getLogger(name).setLevel(logging.DEBUG)


def fail(message: str) -> int:
    """Say why the client stops, on one line, and give the exit code for it."""
    print(f"game: {message}", file=sys.stderr, flush=True)
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
