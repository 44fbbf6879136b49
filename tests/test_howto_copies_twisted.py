"""The copy and cache listings of Twisted's PB how-to: Twisted alone, and against trio_pb both ways.

Each scenario's Twisted side is in twisted_howto_copies_peer.py (its classes
in howto_copies_classes.py); here is its trio_pb port, written as a porting
user would, and the transcript all three pairings must give
(peers.three_ways).  As in the listings, the client sends and the server
receives.  The Twisted classes' copy tags are their ``module.Name``; the
port names those same tags explicitly, on both the sending and the
receiving side.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from peers import run_twisted_client, three_ways, twisted_client_against, twisted_server
from twisted.spread import jelly as twisted_jelly

from trio_pb import (
    Cacheable,
    Copyable,
    RemoteCache,
    RemoteCacheObserver,
    RemoteCopy,
    Root,
    open_tcp_broker,
    set_unjellyable_for_class,
)
from trio_pb.errors import InsecureJelly, RemoteError
from trio_pb.jelly import unjelly

PEER = "twisted_howto_copies_peer.py"
# The module the Twisted side keeps its classes in: the first part of every tag.
TAGS = "howto_copies_classes"


def error_line(exc: Exception) -> str:
    """The error's class name and message, as the Twisted side prints them."""
    kind = exc.remote_type.decode() if isinstance(exc, RemoteError) else type(exc).__name__
    return f"{kind.rsplit('.', 1)[-1]}: {exc}"


# copy (copy_sender.py, copy_receiver.tac): the receiver rebuilds the pond as its own class.


class LilyPond:
    color: str
    numFrogs: int

    def set_stuff(self, color: str, num_frogs: int) -> None:
        self.color = color
        self.numFrogs = num_frogs

    def count_frogs(self) -> str:
        return f"{self.numFrogs} frogs in the {self.color} pond"


class CopyPond(LilyPond, Copyable):
    def get_type_to_copy(self) -> bytes:
        return f"{TAGS}.CopyPond".encode()


class ReceiverPond(RemoteCopy, LilyPond):
    pass


set_unjellyable_for_class(f"{TAGS}.CopyPond", ReceiverPond)


class StrayPond(LilyPond, Copyable):
    """Registered nowhere: the receiver refuses it."""

    def get_type_to_copy(self) -> bytes:
        return f"{TAGS}.StrayPond".encode()


class CopyReceiver(Root):
    def __init__(self, saw: list[str]) -> None:
        self.saw = saw

    def remote_takePond(self, pond: ReceiverPond) -> str:
        self.saw.append(f"got pond: {type(pond).__name__}")
        self.saw.append(pond.count_frogs())
        return "safe and sound"


async def copy_client(port: int) -> list[str]:
    saw = []
    pond = CopyPond()
    pond.set_stuff("green", 7)
    saw.append(pond.count_frogs())
    saw.append(f"copy tag: {pond.get_type_to_copy().decode()}")
    async with open_tcp_broker("127.0.0.1", port) as broker:
        receiver = await broker.root_object()
        saw.append(f"pond arrived {await receiver.call_remote('takePond', pond)}")
        stray = StrayPond()
        stray.set_stuff("grey", 1)
        saw.append(f"copy tag: {stray.get_type_to_copy().decode()}")
        try:
            saw.append(f"pond arrived {await receiver.call_remote('takePond', stray)}")
        except Exception as exc:
            saw.append(f"error during takePond: {error_line(exc)}")
    return saw


async def test_copy_a_copyable_rebuilt_as_the_receivers_class() -> None:
    """copy_sender.py, copy_receiver.tac: a registered Copyable arrives, an unregistered one is refused."""
    seen = await three_ways(PEER, "copy", CopyReceiver, copy_client)
    assert seen.client == [
        "7 frogs in the green pond",
        "copy tag: howto_copies_classes.CopyPond",
        "pond arrived safe and sound",
        "copy tag: howto_copies_classes.StrayPond",
        "error during takePond: InsecureJelly: Module howto_copies_classes not allowed"
        " (in type howto_copies_classes.StrayPond).",
    ]
    assert seen.server == ["got pond: ReceiverPond", "7 frogs in the green pond"]


def test_a_refused_copy_is_explained_in_twisteds_words() -> None:
    """copy_receiver.tac without its registration: the InsecureJelly message matches Twisted's."""
    sexp = [f"{TAGS}.StrayPond".encode(), [b"dictionary", [b"numFrogs", 1]]]
    with pytest.raises(InsecureJelly) as ours:
        unjelly(sexp)
    with pytest.raises(twisted_jelly.InsecureJelly) as theirs:
        twisted_jelly.unjelly(copy.deepcopy(sexp), taster=twisted_jelly.globalSecurity)
    assert str(ours.value) == str(theirs.value)
    assert (
        str(ours.value) == "Module howto_copies_classes not allowed (in type howto_copies_classes.StrayPond)."
    )


# copy2 (copy2_classes.py, copy2_sender.py, copy2_receiver.py): getStateToCopy / setCopyableState.


class FrogPond:
    def __init__(self, num_frogs: int, num_toads: int) -> None:
        self.numFrogs = num_frogs
        self.numToads = num_toads

    def count(self) -> int:
        return self.numFrogs + self.numToads


class SenderPond(FrogPond, Copyable):
    def get_type_to_copy(self) -> bytes:
        return f"{TAGS}.SenderPond".encode()

    def get_state_to_copy(self) -> dict[str, Any]:
        state = dict(vars(self))
        state["frogsAndToads"] = state.pop("numFrogs") + state.pop("numToads")
        return state


class ReceivedPond(RemoteCopy):
    frogsAndToads: int

    def set_copyable_state(self, state: dict[str, Any]) -> None:
        self.__dict__ = state

    def count(self) -> int:
        return self.frogsAndToads


set_unjellyable_for_class(f"{TAGS}.SenderPond", ReceivedPond)


class Copy2Receiver(Root):
    def __init__(self, saw: list[str]) -> None:
        self.saw = saw

    def remote_takePond(self, pond: ReceivedPond) -> str:
        self.saw.append(f"got pond: {type(pond).__name__}")
        self.saw.append(f"state: {sorted(vars(pond).items())}")
        self.saw.append(f"count {pond.count()}")
        return "safe and sound"


async def copy2_client(port: int) -> list[str]:
    saw = []
    pond = SenderPond(3, 4)
    saw.append(f"count {pond.count()}")
    async with open_tcp_broker("127.0.0.1", port) as broker:
        receiver = await broker.root_object()
        saw.append(f"pond arrived {await receiver.call_remote('takePond', pond)}")
    return saw


async def test_copy2_the_sender_chooses_the_state_sent() -> None:
    """copy2_classes.py, copy2_sender.py, copy2_receiver.py: getStateToCopy's state, setCopyableState."""
    seen = await three_ways(PEER, "copy2", Copy2Receiver, copy2_client)
    assert seen.client == ["count 7", "pond arrived safe and sound"]
    assert seen.server == [
        "got pond: ReceivedPond",
        "state: [('frogsAndToads', 7)]",
        "count 7",
    ]


# cache (cache_classes.py, cache_sender.py, cache_receiver.py): a copy kept up to date, then dropped.


class MasterDuckPond(Cacheable):
    def __init__(self, ducks: list[str], saw: list[str]) -> None:
        # Our own list of observers, as in Twisted (broadcast() would do without it).
        self.observers: list[RemoteCacheObserver] = []
        self.ducks = ducks
        self.saw = saw

    def get_type_to_copy(self) -> bytes:
        return f"{TAGS}.MasterDuckPond".encode()

    def count(self) -> None:
        self.saw.append(f"I have [{len(self.ducks)}] ducks")

    def add_duck(self, duck: str) -> None:
        self.ducks.append(duck)
        for observer in self.observers:
            observer.call_remote_no_answer("addDuck", duck)

    def remove_duck(self, duck: str) -> None:
        self.ducks.remove(duck)
        for observer in self.observers:
            observer.call_remote_no_answer("removeDuck", duck)

    def get_state_to_cache_and_observe_for(self, perspective: Any, observer: RemoteCacheObserver) -> Any:
        self.observers.append(observer)
        return self.ducks

    def stopped_observing(self, perspective: Any, observer: RemoteCacheObserver) -> None:
        self.observers.remove(observer)
        self.saw.append(f"stopped observing; observers left: {len(self.observers)}")


class SlaveDuckPond(RemoteCache):
    cacheducks: list[str]
    saw: list[str]  # the server's transcript, set by the class that registers it

    def count(self) -> int:
        return len(self.cacheducks)

    def get_ducks(self) -> list[str]:
        return self.cacheducks

    def set_copyable_state(self, state: list[str]) -> None:
        self.saw.append(f"cache - setting ducks {state}")
        self.cacheducks = state

    def observe_addDuck(self, new_duck: str) -> None:
        self.saw.append(f"cache - addDuck {new_duck}")
        self.cacheducks.append(new_duck)

    def observe_removeDuck(self, dead_duck: str) -> None:
        self.saw.append(f"cache - removeDuck {dead_duck}")
        self.cacheducks.remove(dead_duck)


class CacheReceiver(Root):
    def __init__(self, saw: list[str]) -> None:
        self.saw = saw
        self.pond: SlaveDuckPond | None = None
        # The copy is made before any method of ours runs: give its class the transcript.
        SlaveDuckPond.saw = saw

    def remote_takePond(self, pond: SlaveDuckPond) -> None:
        self.pond = pond
        self.saw.append(f"got pond: {type(pond).__name__}")
        self.remote_checkDucks()

    def remote_checkDucks(self) -> None:
        assert self.pond is not None
        self.saw.append(f"[{self.pond.count()}] ducks: {self.pond.get_ducks()}")

    def remote_ignorePond(self) -> None:
        self.saw.append("dropping pond")
        assert self.pond is not None
        # Released now, not whenever the collector runs: the owner hears of it before our answer.
        self.pond.release_nowait()
        self.pond = None


set_unjellyable_for_class(f"{TAGS}.MasterDuckPond", SlaveDuckPond)


async def cache_client(port: int) -> list[str]:
    saw: list[str] = []
    pond = MasterDuckPond(["one duck", "two duck"], saw)
    pond.count()
    async with open_tcp_broker("127.0.0.1", port) as broker:
        receiver = await broker.root_object()
        await receiver.call_remote("takePond", pond)
        saw.append(f"observers: {len(pond.observers)}")
        pond.add_duck("ugly duckling")
        pond.count()
        await receiver.call_remote("checkDucks")
        pond.remove_duck("one duck")
        pond.count()
        await receiver.call_remote("checkDucks")
        await receiver.call_remote("ignorePond")
        saw.append(f"ignorePond answered; observers: {len(pond.observers)}")
    return saw


async def test_cache_updates_followed_until_the_copy_is_dropped() -> None:
    """cache_classes.py, cache_sender.py, cache_receiver.py: state, updates in order, stoppedObserving."""
    seen = await three_ways(PEER, "cache", CacheReceiver, cache_client)
    assert seen.client == [
        "I have [2] ducks",
        "observers: 1",
        "I have [3] ducks",
        "I have [2] ducks",
        # The holder dropped its copy while handling ignorePond: the owner's
        # stoppedObserving ran before the answer arrived.
        "stopped observing; observers left: 0",
        "ignorePond answered; observers: 0",
    ]
    assert seen.server == [
        "cache - setting ducks ['one duck', 'two duck']",
        "got pond: SlaveDuckPond",
        "[2] ducks: ['one duck', 'two duck']",
        "cache - addDuck ugly duckling",
        "[3] ducks: ['one duck', 'two duck', 'ugly duckling']",
        "cache - removeDuck one duck",
        "[2] ducks: ['two duck', 'ugly duckling']",
        "dropping pond",
    ]


class GcCacheReceiver(CacheReceiver):
    """cache_receiver.py as written: the copy is dropped by losing the last reference to it."""

    def remote_ignorePond(self) -> None:
        self.saw.append("dropping pond")
        self.pond = None

    def remote_done(self) -> str:
        return "done"


async def test_cache_a_copy_left_to_the_collector_is_released_before_the_answer() -> None:
    """cache_receiver.py's ignorePond: a copy the method drops is released before its answer, on both."""
    control_server: list[str] = []
    async with twisted_server(PEER, "serve", "cache-gc", output=control_server) as port:
        control = await run_twisted_client(PEER, "client", "cache-gc", str(port))
    # Twisted sends the decache from the finalizer, inside ignorePond: the
    # owner has stopped observing when the answer arrives.
    assert control == [
        "stopped observing; observers left: 0",
        "ignorePond answered; observers: 0",
        "in the end, observers: 0",
    ]
    server: list[str] = []
    against_trio_pb = await twisted_client_against(GcCacheReceiver(server), PEER, "client", "cache-gc")
    # trio_pb's finalizer does no I/O: it queues the decache, and the broker
    # sends what is queued before the method's answer.
    assert against_trio_pb == control
    assert server == control_server
    assert server == [
        "cache - setting ducks ['one duck']",
        "got pond: SlaveDuckPond",
        "[1] ducks: ['one duck']",
        "dropping pond",
    ]
