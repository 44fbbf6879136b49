"""The basic listings of Twisted's PB how-to, three ways: Twisted alone, and against trio_pb both ways.

Each scenario's Twisted side is in twisted_howto_basics_peer.py; here is its
trio_pb port, written as a porting user would, and the transcript all three
pairings must give (peers.three_ways).
"""

from __future__ import annotations

from peers import three_ways

from trio_pb import Referenceable, Root, open_tcp_broker

PEER = "twisted_howto_basics_peer.py"


# pb1: the root hands out a second object, the client calls it without waiting.


class Two(Referenceable):
    def __init__(self, saw: list[str]) -> None:
        self.saw = saw

    def remote_three(self, arg: int) -> None:
        self.saw.append(f"Two.three was given {arg}")


class One(Root):
    def __init__(self, saw: list[str]) -> None:
        self.saw = saw

    def remote_getTwo(self) -> Two:
        self.saw.append("returning a Two")
        return Two(self.saw)

    def remote_done(self) -> str:
        return "done"


async def pb1_client(port: int) -> list[str]:
    saw = []
    async with open_tcp_broker("127.0.0.1", port) as broker:
        one = await broker.root_object()
        saw.append("got first object: RemoteReference")
        two = await one.call_remote("getTwo")
        saw.append(f"got second object: {type(two).__name__}")
        two.call_remote_no_answer("three", 12)
        saw.append(await one.call_remote("done"))
    return saw


async def test_pb1_a_reference_from_the_root() -> None:
    seen = await three_ways(PEER, "pb1", One, pb1_client)
    assert seen.client == [
        "got first object: RemoteReference",
        "got second object: RemoteReference",
        "done",
    ]
    assert seen.server == ["returning a Two", "Two.three was given 12"]
