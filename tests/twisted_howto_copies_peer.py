"""Real Twisted PB peers for the copy and cache listings of Twisted's PB how-to (a subprocess).

``serve <scenario>`` serves the scenario's root and prints a line for each
event the server sees; ``client <scenario> <port>`` plays the client and
prints what it sees.  In these listings the client is the sender: it owns
the Copyable or Cacheable and passes it to the server, which receives a
copy.  tests/test_howto_copies_twisted.py runs each scenario
Twisted-to-Twisted and against trio_pb both ways (see peers.three_ways).
The scenarios are our own rewrites of what each listing does; the classes
are in howto_copies_classes.py, so that their copy tags are stable.
"""

from __future__ import annotations

import sys

from howto_copies_classes import CopyPond, MasterDuckPond, SenderPond, StrayPond, say
from twisted.internet import defer
from twisted.spread import pb
from twisted_runner import run_client, serve


def tag_of(copyable):
    tag = copyable.getTypeToCopy()
    return tag.decode() if isinstance(tag, bytes) else tag


def error_line(failure):
    """The class's own name and the message, as trio_pb's transcript says them too."""
    kind = failure.type.decode() if isinstance(failure.type, bytes) else str(failure.type)
    return f"{kind.rsplit('.', 1)[-1]}: {failure.getErrorMessage()}"


# copy (copy_sender.py, copy_receiver.tac): the receiver rebuilds the pond as its own class.


class CopyReceiver(pb.Root):
    def remote_takePond(self, pond):
        say("got pond:", type(pond).__name__)
        pond.countFrogs()
        return "safe and sound"


@defer.inlineCallbacks
def copy_client(factory):
    pond = CopyPond()
    pond.setStuff("green", 7)
    pond.countFrogs()
    say("copy tag:", tag_of(pond))
    receiver = yield factory.getRootObject()
    say("pond arrived", (yield receiver.callRemote("takePond", pond)))
    stray = StrayPond()
    stray.setStuff("grey", 1)
    say("copy tag:", tag_of(stray))
    yield receiver.callRemote("takePond", stray).addCallbacks(
        lambda answer: say("pond arrived", answer),
        lambda failure: say("error during takePond:", error_line(failure)),
    )


# copy2 (copy2_classes.py, copy2_sender.py, copy2_receiver.py): getStateToCopy / setCopyableState.


class Copy2Receiver(pb.Root):
    def remote_takePond(self, pond):
        say("got pond:", type(pond).__name__)
        say("state:", sorted(vars(pond).items()))
        say("count", pond.count())
        return "safe and sound"


@defer.inlineCallbacks
def copy2_client(factory):
    pond = SenderPond(3, 4)
    say("count", pond.count())
    receiver = yield factory.getRootObject()
    say("pond arrived", (yield receiver.callRemote("takePond", pond)))


# cache (cache_classes.py, cache_sender.py, cache_receiver.py): a copy kept up to date, then dropped.


class CacheReceiver(pb.Root):
    def remote_takePond(self, pond):
        self.pond = pond
        say("got pond:", type(pond).__name__)
        self.remote_checkDucks()

    def remote_checkDucks(self):
        say(f"[{self.pond.count()}] ducks:", self.pond.getDucks())

    def remote_ignorePond(self):
        say("dropping pond")
        # The last reference goes: the copy's finalizer sends the decache now.
        self.pond = None

    def remote_done(self):
        return "done"


@defer.inlineCallbacks
def cache_client(factory):
    pond = MasterDuckPond(["one duck", "two duck"])
    pond.count()
    receiver = yield factory.getRootObject()
    yield receiver.callRemote("takePond", pond)
    say("observers:", len(pond.observers))
    pond.addDuck("ugly duckling")
    pond.count()
    # The listing waits a second here; a connection's messages are handled
    # in order, so the update has been applied before checkDucks runs.
    yield receiver.callRemote("checkDucks")
    pond.removeDuck("one duck")
    pond.count()
    yield receiver.callRemote("checkDucks")
    yield receiver.callRemote("ignorePond")
    say("ignorePond answered; observers:", len(pond.observers))


@defer.inlineCallbacks
def cache_gc_client(factory):
    pond = MasterDuckPond(["one duck"])
    receiver = yield factory.getRootObject()
    yield receiver.callRemote("takePond", pond)
    yield receiver.callRemote("ignorePond")
    say("ignorePond answered; observers:", len(pond.observers))
    # If the decache has not come yet, give the holder a few more calls to send it.
    for _ in range(100):
        if not pond.observers:
            break
        yield receiver.callRemote("done")
    say("in the end, observers:", len(pond.observers))


SCENARIOS = {
    "copy": (CopyReceiver, copy_client),
    "copy2": (Copy2Receiver, copy2_client),
    "cache": (CacheReceiver, cache_client),
    "cache-gc": (CacheReceiver, cache_gc_client),
}


def main(mode, scenario, *args):
    root, client = SCENARIOS[scenario]
    if mode == "serve":
        serve(root())
    else:
        from twisted.internet import reactor

        factory = pb.PBClientFactory()
        reactor.connectTCP("127.0.0.1", int(args[0]), factory)
        run_client(client, factory)


if __name__ == "__main__":
    main(*sys.argv[1:])
