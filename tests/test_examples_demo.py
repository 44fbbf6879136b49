"""The chat demo prints one conversation, each utterance once, the same on every run (issue 13 item 4)."""

from __future__ import annotations

import sys
from pathlib import Path

import trio

DEMO = Path(__file__).parent.parent / "examples" / "chat" / "demo.py"

CONVERSATION = """\
  [lobby] * alice joined
  [lobby] * bob joined
  [lobby] <alice> hello bob, welcome to trio_pb chat
  [lobby] <bob> thanks alice!
  [lobby] * carol joined
  [lobby] <alice> hi carol! bob and I were just talking about structured concurrency
  [lobby] <carol> nurseries all the way down
  [lobby] here: alice, bob, carol
  [lobby] <alice> bye all
  [lobby] * carol left
  [lobby] <bob> see you
  [lobby] * bob left
"""


async def run_demo() -> list[str]:
    with trio.fail_after(90):
        result = await trio.run_process(
            [sys.executable, str(DEMO)], capture_stdout=True, capture_stderr=True, check=False
        )
    assert (result.returncode, result.stderr) == (0, b""), result.stderr.decode()
    return result.stdout.decode().splitlines()


async def test_the_demo_prints_the_conversation_once_and_the_same_twice() -> None:
    first = await run_demo()
    assert first[0].startswith("chat server listening on port ")
    assert first[1:] == ["The lobby, as alice sees it:", "", *CONVERSATION.splitlines(), "",
                         "demo finished: everyone logged in, talked and left."]  # fmt: skip
    second = await run_demo()
    assert second[1:] == first[1:]
