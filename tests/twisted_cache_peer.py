"""A real Twisted PB peer for the Cacheable interoperability tests (run as a subprocess).

``server`` serves a root whose Cacheable is a ``TCache``; ``client <port>``
gets a trio_pb server's Cacheable (copy tag ``interop.Counter``), follows an
update, sends it back, releases it, and prints what it saw.
"""

from __future__ import annotations

import gc
import sys

from twisted.internet import defer, reactor, task
from twisted.spread import pb
from twisted_runner import run_client, serve


class TCache(pb.Cacheable):
    def __init__(self):
        self.value = 1
        self.observers = []
        self.stopped = 0

    def getStateToCacheAndObserveFor(self, perspective, observer):
        self.observers.append(observer)
        return {"value": self.value}

    def stoppedObserving(self, perspective, observer):
        self.observers.remove(observer)
        self.stopped += 1


class Root(pb.Root):
    def __init__(self):
        self.cache = TCache()

    def remote_cache(self):
        return self.cache

    def remote_cache_twice(self):
        return [self.cache, self.cache]

    @defer.inlineCallbacks
    def remote_set(self, value):
        self.cache.value = value
        answers = yield defer.gatherResults([o.callRemote("set", value) for o in self.cache.observers])
        return answers

    def remote_is_cache(self, obj):
        return obj is self.cache

    def remote_status(self):
        return [len(self.cache.observers), self.cache.stopped]


class RemoteCounter(pb.RemoteCache):
    def observe_set(self, value):
        self.value = value
        return "applied"


pb.setUnjellyableForClass("interop.Counter", RemoteCounter)


@defer.inlineCallbacks
def scenario(port):
    factory = pb.PBClientFactory()
    reactor.connectTCP("127.0.0.1", port, factory)
    root = yield factory.getRootObject()
    out = lambda *words: print(*words, flush=True)  # noqa: E731
    counter = yield root.callRemote("counter")
    out("value", counter.value)
    yield root.callRemote("bump", 5)
    out("updated", counter.value)
    out("lcache", (yield root.callRemote("is_counter", counter)))
    second = yield root.callRemote("counter")
    out("shared", second.value, second is not counter)
    del counter, second
    gc.collect()
    yield task.deferLater(reactor, 0.2, lambda: None)
    out("status", (yield root.callRemote("status")))
    out("done")


def main():
    if sys.argv[1] == "server":
        serve(Root())
    else:
        run_client(scenario, int(sys.argv[2]))


if __name__ == "__main__":
    main()
