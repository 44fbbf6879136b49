"""A real Twisted PB peer for the named-object interoperability tests (run as a subprocess).

``server`` serves a root that names two objects on each connection, ``"ys"``
by a str and ``b"yb"`` by bytes, and says which of its objects come back to
it.  ``client <port>`` does the same against a trio_pb server that names
``"ys"`` and ``b"yb"``: it passes the root and the named references back,
asks for an unknown name, names an object of its own (``"cs"``, a str) for
the server to call, and prints what it saw.
"""

from __future__ import annotations

import gc
import sys

from twisted.internet import defer, reactor, task
from twisted.spread import pb
from twisted_runner import run_client, serve


class Named(pb.Referenceable):
    def __init__(self, label):
        self.label = label

    def remote_label(self):
        return self.label


class Root(pb.Root):
    def rootObject(self, broker):
        root = ServerRoot(broker)
        broker.setNameForLocal("ys", root.ys)
        broker.setNameForLocal(b"yb", root.yb)
        return root


class ServerRoot(pb.Root):
    def __init__(self, broker):
        self.broker = broker
        self.ys = Named("ys")
        self.yb = Named("yb")

    def remote_which(self, obj):
        for label, known in (("root", self), ("ys", self.ys), ("yb", self.yb)):
            if obj is known:
                return label
        return repr(obj)

    def remote_call_back(self, name):
        return self.broker.remoteForName(name).callRemote("label")

    def remote_names(self):
        # Only names: a counted reference would show up as an int luid.
        return sorted(repr(key) for key in self.broker.localObjects)


@defer.inlineCallbacks
def scenario(port):
    factory = pb.PBClientFactory()
    reactor.connectTCP("127.0.0.1", port, factory)
    root = yield factory.getRootObject()
    broker = root.broker
    out = lambda *words: print(*words, flush=True)  # noqa: E731
    out("root", (yield root.callRemote("which", root)))
    for name in ("ys", b"ys", "yb", b"yb"):
        named = broker.remoteForName(name)
        label = yield named.callRemote("label")
        out("named", repr(name), label, (yield root.callRemote("which", named)))
    out("unknown", (yield root.callRemote("which", broker.remoteForName("nobody"))))
    broker.setNameForLocal("cs", Named("client's"))
    out("call_back", (yield root.callRemote("call_back", "cs")), (yield root.callRemote("call_back", b"cs")))
    del named
    gc.collect()
    yield task.deferLater(reactor, 0.2, lambda: None)
    out("names", (yield root.callRemote("names")))
    out("done")


def main():
    if sys.argv[1] == "server":
        serve(Root())
    else:
        run_client(scenario, int(sys.argv[2]))


if __name__ == "__main__":
    main()
