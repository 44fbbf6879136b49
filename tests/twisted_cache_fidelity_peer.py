"""A real Twisted PB peer for the cache fidelity tests (run as a subprocess).

``server`` serves a root with a Cacheable that says goodbye from its
``stoppedObserving`` and a ``Shared`` class that is its own RemoteCache.
``client <port>`` holds a trio_pb server's goodbye-saying Cacheable,
releases it, and prints what its RemoteCache heard; then swaps Shared
objects with the server both ways, and prints what each side saw.
"""

from __future__ import annotations

import gc
import sys

from twisted.internet import defer, reactor, task
from twisted.spread import pb
from twisted_runner import run_client, serve

HEARD = []


class Farewell(pb.Cacheable):
    def __init__(self):
        self.value = 1
        self.stopped = 0

    def getStateToCacheAndObserveFor(self, perspective, observer):
        return {"value": self.value}

    def stoppedObserving(self, perspective, observer):
        self.stopped += 1
        observer.callRemote("bye", self.value)


class RemoteFarewell(pb.RemoteCache):
    def observe_bye(self, value):
        HEARD.append(value)


pb.setUnjellyableForClass("fidelity.Farewell", RemoteFarewell)


class Shared(pb.Cacheable, pb.RemoteCache):
    def __init__(self, value=0):
        self.value = value
        self.watchers = []

    def getStateToCacheAndObserveFor(self, perspective, observer):
        self.watchers.append(observer)
        return {"value": self.value}

    def stoppedObserving(self, perspective, observer):
        self.watchers.remove(observer)

    def set(self, value):
        self.value = value
        for watcher in self.watchers:
            watcher.callRemote("set", value)

    def observe_set(self, value):
        self.value = value


pb.setUnjellyableForClass("fidelity.Shared", Shared)


def shared_tag(self):
    return b"fidelity.Shared"


Shared.getTypeToCopy = shared_tag


class Root(pb.Root):
    def __init__(self):
        self.farewell = Farewell()
        self.mine = Shared(5)
        self.theirs = None

    def remote_farewell(self, value):
        self.farewell.value = value
        return self.farewell

    def remote_stopped(self):
        return self.farewell.stopped

    def remote_mine(self):
        return self.mine

    def remote_set_mine(self, value):
        self.mine.set(value)

    def remote_take(self, theirs):
        self.theirs = theirs
        return [type(theirs).__name__, theirs.value]

    def remote_theirs_value(self):
        return self.theirs.value


@defer.inlineCallbacks
def scenario(port):
    factory = pb.PBClientFactory()
    reactor.connectTCP("127.0.0.1", port, factory)
    root = yield factory.getRootObject()
    out = lambda *words: print(*words, flush=True)  # noqa: E731
    farewell = yield root.callRemote("farewell")
    out("farewell", farewell.value)
    del farewell
    gc.collect()
    yield task.deferLater(reactor, 0.3, lambda: None)
    out("heard", HEARD)
    # The trio_pb server's Shared, mirrored here.
    copy = yield root.callRemote("mine")
    out("mine", type(copy).__name__, copy.value)
    yield root.callRemote("set_mine", 6)
    out("mine now", copy.value)
    # Ours, mirrored there.
    mine = Shared(10)
    out("taken", (yield root.callRemote("take", mine)))
    mine.set(11)
    out("theirs", (yield root.callRemote("theirs_value")))
    out("done")


def main():
    if sys.argv[1] == "server":
        serve(Root())
    else:
        run_client(scenario, int(sys.argv[2]))


if __name__ == "__main__":
    main()
