"""A game client: a terminal view of the board, played by you or by a bot.

    python examples/game/client.py red --port 8788            # you: type up/down/left/right (or w/a/s/d)
    python examples/game/client.py blue --port 8788 --bot     # a bot that chases the nearest item

The client holds a RemoteCache of the world and redraws it after every update
it receives (``async for update in world.updates()``).  With ``--until N``
a bot stops once someone has N points; ``--plain`` prints one line per update
instead of redrawing the board (for logs and tests).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

import trio
from world import TAG, RemoteWorld

import trio_pb

trio_pb.set_unjellyable_for_class(TAG, RemoteWorld)
KEYS = {"w": "up", "s": "down", "a": "left", "d": "right"}


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
                if direction in ("up", "down", "left", "right"):
                    await player.call_remote("move", direction)


async def show(world: RemoteWorld, me: str, plain: bool) -> None:
    async for update in world.updates():
        if plain:
            name, *rest = update.args
            if update.method == "moved":
                print(f"{me} sees {name} at {rest[0]},{rest[1]} with {rest[2]}", flush=True)
            elif update.method in ("joined", "left"):
                print(f"{me} sees {name} {update.method}", flush=True)
        else:
            print("\x1b[H\x1b[2J" + world.render(), flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=["red", "blue", "green", "yellow"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8788)
    parser.add_argument("--bot", action="store_true", help="let a bot play")
    parser.add_argument("--until", type=int, default=5, help="a bot stops when someone has this score")
    parser.add_argument("--pace", type=float, default=0.05, help="seconds between a bot's moves")
    parser.add_argument("--plain", action="store_true", help="a line per update instead of the board")
    args = parser.parse_args()
    async with trio_pb.open_tcp_broker(args.host, args.port) as broker:
        player = await broker.login(trio_pb.UsernamePassword(args.name, args.name))
        world = await player.call_remote("world")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(show, world, args.name, args.plain)
            if args.bot:
                await play_bot(player, world, args.name, args.until, args.pace)
            else:
                await play_keyboard(player)
            nursery.cancel_scope.cancel()
        print(world.render(), flush=True)
        print(f"{args.name} finished", flush=True)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(main)
