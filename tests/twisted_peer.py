"""A real Twisted PB peer for the interoperability tests, run as a subprocess.

``python twisted_peer.py server`` serves a Twisted ``pb.Root`` on a free
loopback port and prints ``PORT <n>``; ``python twisted_peer.py client <port>``
connects to a trio_pb server, runs a scenario and prints one line per result.
"""

from __future__ import annotations

import datetime
import decimal
import sys

from twisted.internet import defer, reactor, task
from twisted.spread import flavors, pb

ALL_TYPES = [
    None, True, False, 0, -1, 2147483648, -2147483649, 2**100, 1.5, "h\xe9llo", b"bytes", (1, 2),
    {"a": 1, b"b": 2}, {1, 2}, frozenset([3]), datetime.datetime(2020, 1, 2, 3, 4, 5, 6),
    datetime.date(2020, 1, 2), datetime.time(1, 2, 3, 4), datetime.timedelta(1, 2, 3),
    decimal.Decimal("-1.25"), [b"None", b"remote", "list"],
]


class Thing(pb.Referenceable):
    def remote_name(self):
        return "twisted thing"


class QuotaError(pb.Error):
    pass


class Point(pb.Copyable):
    def __init__(self, x, y):
        self.x, self.y = x, y


class Root(pb.Root):
    def __init__(self):
        self.thing = Thing()
        self.seen = []
        self.brokers = []

    def rootObject(self, broker):
        self.brokers.append(broker)
        return self

    def remote_add(self, a, b=0):
        return a + b

    def remote_echo(self, value):
        return value

    def remote_all_types(self):
        return ALL_TYPES

    def remote_echo_kwargs(self, *args, **kwargs):
        return [list(args), kwargs]

    def remote_get_thing(self):
        return self.thing

    def remote_is_thing(self, obj):
        return obj is self.thing

    def remote_boom(self):
        raise ValueError("bad value")

    def remote_quota(self):
        raise QuotaError("over quota")

    def remote_point(self):
        return Point(1, 2)

    def remote_record(self, value):
        self.seen.append(value)

    def remote_seen(self):
        return self.seen

    def remote_call_back(self, ref, value):
        return ref.callRemote("twice", value)

    def remote_later(self, value):
        return task.deferLater(reactor, 0.05, lambda: value)

    def remote_never(self):
        return defer.Deferred()

    def remote_tables(self):
        # Objects our peer holds references to, besides the root.
        return sum(len([k for k in b.localObjects if k != b"root"]) for b in self.brokers)


def serve():
    factory = pb.PBServerFactory(Root())
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    print("PORT", port.getHost().port, flush=True)
    reactor.run()


class Doubler(pb.Referenceable):
    def remote_twice(self, value):
        return value * 2


@defer.inlineCallbacks
def scenario(port):
    factory = pb.PBClientFactory()
    reactor.connectTCP("127.0.0.1", port, factory)
    root = yield factory.getRootObject()
    out = lambda *words: print(*words, flush=True)  # noqa: E731
    out("add", (yield root.callRemote("add", 1, 2)))
    out("kwargs", (yield root.callRemote("add", 1, b=41)))
    echoed = yield root.callRemote("echo", ALL_TYPES)
    out("echo", echoed == ALL_TYPES)
    thing = yield root.callRemote("get_thing")
    out("thing", (yield thing.callRemote("name")))
    out("local", (yield root.callRemote("is_thing", thing)))
    del thing
    try:
        yield root.callRemote("boom")
    except pb.RemoteError as e:
        out("boom", e.remoteType.decode(), e.args[0])
    d = root.callRemote("boom")
    d.addErrback(lambda f: f.trap(ValueError) and "trapped ValueError")
    out("trap", (yield d))
    d = root.callRemote("missing")
    d.addErrback(lambda f: f.trap(flavors.NoSuchMethod) and "trapped NoSuchMethod")
    out("nosuch", (yield d))
    d = root.callRemote("quota")
    d.addErrback(lambda f: f.trap(pb.Error) and "trapped pb.Error")
    out("quota", (yield d))
    root.callRemote("record", "no answer", pbanswer=False)
    out("seen", (yield root.callRemote("seen")))
    out("call_back", (yield root.callRemote("call_back", Doubler(), 21)))
    import gc

    gc.collect()
    yield task.deferLater(reactor, 0.1, lambda: None)
    out("tables", (yield root.callRemote("tables")))
    out("done")


def client(port):
    def finish(result):
        reactor.stop()
        return result

    def failed(failure):
        print("FAILED", failure.getTraceback(), flush=True)

    reactor.callWhenRunning(lambda: scenario(port).addErrback(failed).addBoth(finish))
    reactor.run()


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve()
    else:
        client(int(sys.argv[2]))
