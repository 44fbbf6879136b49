"""The game's shared world: a Cacheable on the server, a RemoteCache on each client.

Both classes live in this one module so that server and client agree on the
copy tag (``game.World``) and on the meaning of each update.
"""

from __future__ import annotations

from typing import Any

import trio_pb

TAG = b"game.World"
DIRECTIONS = {"up": (0, -1), "down": (0, 1), "left": (-1, 0), "right": (1, 0)}


class World(trio_pb.Cacheable):
    """The authoritative board: players moving on a grid and collecting items."""

    def __init__(self, width: int = 12, height: int = 8) -> None:
        self.width = width
        self.height = height
        self.players: dict[str, list[int]] = {}  # name -> [x, y, score]
        self.items: list[list[int]] = []  # [x, y]

    def get_type_to_copy(self) -> bytes:
        return TAG

    def get_state_to_cache_and_observe_for(
        self, perspective: Any, observer: trio_pb.RemoteCacheObserver
    ) -> Any:
        return {"width": self.width, "height": self.height, "players": self.players, "items": self.items}

    def free_cell(self, rng: Any) -> tuple[int, int]:
        taken = {(p[0], p[1]) for p in self.players.values()} | {(i[0], i[1]) for i in self.items}
        while True:
            cell = (rng.randrange(self.width), rng.randrange(self.height))
            if cell not in taken:
                return cell

    def add_player(self, name: str, x: int, y: int) -> None:
        self.players[name] = [x, y, 0]
        self.broadcast("joined", name, x, y)

    def remove_player(self, name: str) -> None:
        if self.players.pop(name, None) is not None:
            self.broadcast("left", name)

    def add_item(self, x: int, y: int) -> None:
        self.items.append([x, y])
        self.broadcast("item", x, y)

    def move(self, name: str, direction: str) -> int:
        """Move *name* one step; returns its score.  Walls stop you, items are taken."""
        dx, dy = DIRECTIONS[direction]
        player = self.players[name]
        x = min(max(player[0] + dx, 0), self.width - 1)
        y = min(max(player[1] + dy, 0), self.height - 1)
        player[0], player[1] = x, y
        if [x, y] in self.items:
            self.items.remove([x, y])
            player[2] += 1
        self.broadcast("moved", name, x, y, player[2])
        return player[2]


class RemoteWorld(trio_pb.RemoteCache):
    """A client's copy of the world, kept current by the server's ``observe_*`` calls."""

    width: int
    height: int
    players: dict[str, list[int]]
    items: list[list[int]]

    def observe_joined(self, name: str, x: int, y: int) -> None:
        self.players[name] = [x, y, 0]

    def observe_left(self, name: str) -> None:
        self.players.pop(name, None)

    def observe_item(self, x: int, y: int) -> None:
        self.items.append([x, y])

    def observe_moved(self, name: str, x: int, y: int, score: int) -> None:
        self.players[name] = [x, y, score]
        if [x, y] in self.items:
            self.items.remove([x, y])

    def render(self) -> str:
        """The board as text: players by initial, items as ``*``."""
        grid = [["." for _ in range(self.width)] for _ in range(self.height)]
        for x, y in self.items:
            grid[y][x] = "*"
        for name, (x, y, _) in sorted(self.players.items()):
            grid[y][x] = name[0].upper()
        scores = "  ".join(f"{name}: {score}" for name, (_, _, score) in sorted(self.players.items()))
        return "\n".join("".join(row) for row in grid) + "\n" + scores
