"""The chat client's terminal UI: a scrolling message pane, a status line and an input line.

It is built on urwid, because urwid is maintained and has an event loop that runs inside trio
(``urwid.TrioEventLoop``): the screen is one more trio task beside the broker's, so a message
from the server is drawn in the pane while the user types, without threads.  prompt_toolkit has
no trio event loop, textual runs on asyncio, and curses would need a thread for its input or a
hand-made integration with trio.

Only the interactive client imports this module (``client.py`` on a terminal): scripted runs
and piped input need trio_pb alone.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import trio
import urwid

#: How many lines the pane keeps; older ones scroll away for good.
KEEP_LINES = 2000
PALETTE = [("status", "black", "light gray"), ("note", "dark cyan", ""), ("error", "light red", "")]


def _delete_to_end(edit: urwid.Edit) -> None:
    edit.set_edit_text(edit.edit_text[: edit.edit_pos])


def _delete_to_start(edit: urwid.Edit) -> None:
    edit.set_edit_text(edit.edit_text[edit.edit_pos :])
    edit.set_edit_pos(0)


#: The readline keys people reach for, beside the arrows, home, end and delete that urwid has.
READLINE_KEYS: dict[str, Callable[[urwid.Edit], None]] = {
    "ctrl a": lambda edit: edit.set_edit_pos(0),
    "ctrl e": lambda edit: edit.set_edit_pos(len(edit.edit_text)),
    "ctrl k": _delete_to_end,
    "ctrl u": _delete_to_start,
}


class InputLine(urwid.Edit):
    """A line editor with history: up and down recall earlier lines, enter hands the line on."""

    def __init__(self, on_enter: Callable[[str], None]) -> None:
        super().__init__(caption="> ")
        self.on_enter = on_enter
        self.history: list[str] = []
        # Where up and down are in the history; len(history) is the line being typed.
        self.position = 0
        self.draft = ""

    def keypress(self, size: tuple[int], key: str) -> str | None:
        if key == "enter":
            line = self.edit_text
            if line.strip() and (not self.history or self.history[-1] != line):
                self.history.append(line)
            self.position = len(self.history)
            self.set_edit_text("")
            self.on_enter(line)
            return None
        if key in ("up", "down"):
            if self.position == len(self.history):
                self.draft = self.edit_text
            step = -1 if key == "up" else 1
            self.position = min(max(self.position + step, 0), len(self.history))
            text = self.draft if self.position == len(self.history) else self.history[self.position]
            self.set_edit_text(text)
            self.set_edit_pos(len(text))
            return None
        if key in READLINE_KEYS:
            READLINE_KEYS[key](self)
            return None
        result: str | None = super().keypress(size, key)
        return result


class ChatView:
    """What the user sees: messages above, the status line, the input line at the bottom."""

    def __init__(self) -> None:
        self.lines: urwid.SimpleFocusListWalker[urwid.Text] = urwid.SimpleFocusListWalker([])
        self.pane = urwid.ListBox(self.lines)
        self.status = urwid.Text("", wrap="clip")
        self.input = InputLine(self._entered)
        footer = urwid.Pile([urwid.AttrMap(self.status, "status"), self.input])
        self.frame: urwid.Frame[Any, None, Any] = urwid.Frame(self.pane, footer=footer, focus_part="footer")
        # Unbounded: a line is queued per enter key, and the user types slower than it is read.
        self._typed_send: trio.MemorySendChannel[str]
        self._typed: trio.MemoryReceiveChannel[str]
        self._typed_send, self._typed = trio.open_memory_channel(math.inf)
        self.loop: urwid.MainLoop | None = None

    def show(self, line: str, style: str | None = None) -> None:
        """Add a line to the pane; the pane follows it unless the user scrolled up."""
        at_end = not self.lines or self.lines.focus == len(self.lines) - 1
        self.lines.append(urwid.Text(line if style is None else (style, line)))
        if len(self.lines) > KEEP_LINES:
            del self.lines[: len(self.lines) - KEEP_LINES]
        if at_end:
            self.lines.set_focus(len(self.lines) - 1)

    def note(self, line: str) -> None:
        """A line from the client itself (help, what it did), set apart from the rooms' lines."""
        self.show(line, "note")

    def error(self, line: str) -> None:
        self.show(line, "error")

    def set_status(self, text: str) -> None:
        self.status.set_text(text)

    def _entered(self, line: str) -> None:
        self._typed_send.send_nowait(line)

    async def typed(self) -> AsyncIterator[str]:
        """The lines the user enters, as they are entered."""
        async for line in self._typed:
            yield line

    def _unhandled(self, key: Any) -> bool:
        # The input line has the focus; the pane scrolls with page up and page down.
        if key in ("page up", "page down") and self.loop is not None:
            cols, rows = self.loop.screen.get_cols_rows()
            self.pane.keypress((cols, max(rows - 2, 1)), key)
            return True
        return False

    async def run(self) -> None:
        """Draw the UI and take keys until cancelled; the terminal is restored on the way out."""
        event_loop = urwid.TrioEventLoop()
        self.loop = urwid.MainLoop(
            self.frame, PALETTE, event_loop=event_loop, unhandled_input=self._unhandled, handle_mouse=False
        )
        with self.loop.start():
            await event_loop.run_async()
