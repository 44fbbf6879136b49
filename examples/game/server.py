"""A small real-time game on trio_pb: players move on a grid and collect items.

The world is a Cacheable: each client holds a copy that the server keeps up to
date, and follows it with ``async for update in world.updates()``.  Players act
through ``perspective_*`` methods of their avatar.

    python examples/game/server.py --port 8788

``-v`` (``--verbose``) logs every PB message sent and received, on stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import sys
from functools import partial
from typing import Any

import trio
from world import World

import trio_pb

log = logging.getLogger("game")
#: Everyone may play: the password is the colour.
PLAYERS = {"red": "red", "blue": "blue", "green": "green", "yellow": "yellow"}


class Player(trio_pb.Avatar):
    """One player: moves in the world, sees it through a cached copy."""

    def __init__(self, game: Game, name: str) -> None:
        self.game = game
        self.name = name

    def perspective_world(self) -> World:
        return self.game.world

    def perspective_move(self, direction: str) -> int:
        if direction not in ("up", "down", "left", "right"):
            raise trio_pb.Error(f"cannot move {direction!r}")
        return self.game.world.move(self.name, direction)

    def logout(self) -> None:
        log.info("%s left", self.name)
        self.game.world.remove_player(self.name)


class Game:
    """The realm: one World, one Player avatar per login, items appearing over time."""

    def __init__(self, rng: random.Random) -> None:
        self.world = World()
        self.rng = rng

    def request_avatar(self, avatar_id: bytes, mind: Any) -> tuple[Player, Any]:
        name = avatar_id.decode()
        if name in self.world.players:
            # A LoginFailed goes back to the client as the reason its login failed.
            raise trio_pb.LoginFailed(f"{name} is already playing")
        self.world.add_player(name, *self.world.free_cell(self.rng))
        log.info("%s joined", name)
        player = Player(self, name)
        return player, player.logout

    async def spawn_items(self, every: float, most: int) -> None:
        while True:
            if len(self.world.items) < most:
                self.world.add_item(*self.world.free_cell(self.rng))
            await trio.sleep(every)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8788, help="0 picks a free port")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--item-every", type=float, default=0.2, help="seconds between new items")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every PB message sent and received")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="game: %(message)s")
    if args.verbose:
        # On stderr, as all the log: the library's own lines, and one per PB message.
        for name in ("trio_pb", "trio_pb.trace"):
            logging.getLogger(name).setLevel(logging.DEBUG)
    game = Game(random.Random(args.seed))
    # The broker's trace: a log line per message (None: no trace, and no cost).
    trace = trio_pb.log_trace if args.verbose else None
    portal = trio_pb.Portal(game, [trio_pb.InMemoryPasswordChecker(PLAYERS)])
    # Ctrl-C (and SIGTERM) stop the server in order: caught as signals, not as a
    # KeyboardInterrupt that would surface wrapped in the nursery's ExceptionGroup.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            try:
                listeners = await nursery.start(
                    partial(trio_pb.serve_tcp, portal, args.port, host=args.host, trace=trace)
                )
            except OSError as exc:
                reason = os.strerror(exc.errno) if exc.errno else exc
                print(f"game server: cannot listen on {args.host}:{args.port}: {reason}", file=sys.stderr)
                return 1
            nursery.start_soon(game.spawn_items, args.item_every, 6)
            host, port = listeners[0].socket.getsockname()[:2]
            print(f"listening on {host}:{port}", flush=True)
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()
    print("game server stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(trio.run(main))
