"""A Twisted PB client that floods a trio_pb server with calls, for tests/test_flow_control.py.

``python twisted_flood_peer.py client <calls> <size> <port>`` connects, sends
*calls* calls of ``echo(i, payload)`` (a payload of *size* bytes) and of
``twice(i)`` at once, without waiting for any answer, then waits for them
all and prints ``ANSWERED <n> <wrong>``: how many answers came and how many
were not what was sent.
"""

from __future__ import annotations

import sys

from twisted.internet import defer, reactor
from twisted.spread import pb
from twisted_runner import run_client


@defer.inlineCallbacks
def flood(calls, size, port):
    factory = pb.PBClientFactory()
    reactor.connectTCP("127.0.0.1", port, factory)
    root = yield factory.getRootObject()
    payload = b"p" * size
    pending = []
    for i in range(calls):
        if i % 2:
            pending.append(root.callRemote("twice", i).addCallback(lambda answer, i=i: answer == 2 * i))
        else:
            pending.append(
                root.callRemote("echo", i, payload).addCallback(lambda answer, i=i: answer == [i, payload])
            )
    results = yield defer.gatherResults(pending)
    print("ANSWERED", len(results), results.count(False), flush=True)
    root.broker.transport.loseConnection()


if __name__ == "__main__":
    mode, calls, size, port = sys.argv[1:]
    assert mode == "client"
    run_client(flood, int(calls), int(size), int(port))
