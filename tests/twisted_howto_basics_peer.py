"""Real Twisted PB peers for the scenarios of Twisted's PB how-to, basic listings (a subprocess).

``serve <scenario>`` serves the scenario's root and prints a line for each
event the server sees; ``client <scenario> <port>`` plays the client and
prints what it sees.  tests/test_howto_basics_twisted.py runs each scenario
Twisted-to-Twisted and against trio_pb both ways (see peers.three_ways).
The scenarios are our own rewrites of what each listing does.
"""

from __future__ import annotations

import sys

from twisted.internet import defer
from twisted.spread import pb
from twisted_runner import run_client, serve


def say(*words):
    print(*words, flush=True)


# pb1: the root hands out a second object, the client calls it without waiting.


class Two(pb.Referenceable):
    def remote_three(self, arg):
        say("Two.three was given", arg)


class One(pb.Root):
    def remote_getTwo(self):
        say("returning a Two")
        return Two()

    def remote_done(self):
        return "done"


@defer.inlineCallbacks
def pb1_client(factory):
    one = yield factory.getRootObject()
    say("got first object:", type(one).__name__)
    two = yield one.callRemote("getTwo")
    say("got second object:", type(two).__name__)
    two.callRemote("three", 12)
    say((yield one.callRemote("done")))


SCENARIOS = {"pb1": (One, pb1_client)}


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
