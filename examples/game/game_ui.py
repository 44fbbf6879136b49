"""The game client's terminal UI: the board with a legend, how to play, a message line, a status line.

Built on urwid, for the reason the chat client is (see ``examples/chat/chat_ui.py``): its event
loop runs inside trio, so the board is redrawn as the world's updates arrive while keys are
read, all in one trio run.  A move is one key, so nothing typed is ever drawn over.

Only the client on a terminal imports this module: ``--plain`` and piped runs need trio_pb alone.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import trio
import urwid

COLOURS = {"red": "light red", "blue": "light blue", "green": "light green", "yellow": "yellow"}
#: The player's own letter is shown on its colour (a background takes only the darker colours).
BACKGROUNDS = {"red": "dark red", "blue": "dark blue", "green": "dark green", "yellow": "brown"}
PALETTE = [
    ("status", "black", "light gray"),
    ("item", "yellow", ""),
    ("empty", "dark gray", ""),
    ("message", "light cyan", ""),
    *((name, colour, "") for name, colour in COLOURS.items()),
    *((f"{name}-me", "white,bold", colour) for name, colour in BACKGROUNDS.items()),
]
HOW_TO_PLAY = (
    "Move with the arrow keys or w a s d; walk onto a * to take it (one point).\nWalls stop you.  q quits."
)


class GameView:
    """The board of one player (*me*), drawn anew from the world's copy after each update."""

    def __init__(self, me: str, where: str, bot: bool, width: int) -> None:
        self.me = me
        self.where = where
        self.bot = bot
        self.board = urwid.Text("")
        self.legend = urwid.Text("")
        self.message = urwid.Text(("message", "waiting for the world..."))
        self.status = urwid.Text("", wrap="clip")
        how = "A bot plays for you; q quits." if bot else HOW_TO_PLAY
        body = urwid.Pile(
            [
                urwid.Text(f"The game, as {me} sees it"),
                urwid.Divider(),
                urwid.Padding(urwid.LineBox(self.board), width=width + 2),
                self.legend,
                urwid.Divider(),
                urwid.Text(how),
                urwid.Divider(),
                self.message,
            ]
        )
        self.frame: urwid.Frame[Any, None, Any] = urwid.Frame(
            urwid.Filler(urwid.Padding(body, left=1, right=1), valign="top"),
            footer=urwid.AttrMap(self.status, "status"),
        )
        # Unbounded: a key is queued per keypress, fewer than the client reads.
        self._keys_send: trio.MemorySendChannel[str]
        self._keys: trio.MemoryReceiveChannel[str]
        self._keys_send, self._keys = trio.open_memory_channel(math.inf)
        self.set_status("connected")

    def draw(self, world: Any) -> None:
        """Draw *world* (a RemoteWorld): the grid, then who is who and the scores."""
        grid: list[list[Any]] = [[("empty", ".")] * world.width for _ in range(world.height)]
        for x, y in world.items:
            grid[y][x] = ("item", "*")
        for name, (x, y, _) in sorted(world.players.items()):
            grid[y][x] = (f"{name}-me" if name == self.me else name, name[0].upper())
        markup: list[Any] = []
        for row in grid:
            markup += [*row, "\n"]
        self.board.set_text(markup[:-1])
        legend: list[Any] = []
        for name, (_, _, score) in sorted(world.players.items()):
            you = " (you)" if name == self.me else ""
            legend += [(name, name[0].upper()), f" {name}{you}: {score}   "]
        legend += [("item", "*"), " item   ", ("empty", "."), " empty"]
        self.legend.set_text(legend)

    def say(self, line: str) -> None:
        """The message line: what became of the last key."""
        self.message.set_text(("message", line))

    def set_status(self, state: str) -> None:
        self.status.set_text(f" {self.me} on {self.where} | {state}")

    def _key(self, key: Any) -> bool:
        if isinstance(key, str):
            self._keys_send.send_nowait(key)
        return True

    async def keys(self) -> AsyncIterator[str]:
        """The keys pressed, as urwid names them ("up", "w", "ctrl x")."""
        async for key in self._keys:
            yield key

    async def run(self) -> None:
        """Draw the UI and take keys until cancelled; the terminal is restored on the way out."""
        event_loop = urwid.TrioEventLoop()
        loop = urwid.MainLoop(
            self.frame, PALETTE, event_loop=event_loop, unhandled_input=self._key, handle_mouse=False
        )
        with loop.start():
            await event_loop.run_async()
