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
from twisted.spread import jelly, pb
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
def pb1_client(connect):
    one = yield connect().getRootObject()
    say("got first object:", type(one).__name__)
    two = yield one.callRemote("getTwo")
    say("got second object:", type(two).__name__)
    two.callRemote("three", 12)
    say((yield one.callRemote("done")))


def kind(obj):
    """A neutral word for what arrived: the class name, which is RemoteReference on both sides."""
    return type(obj).__name__


def print_logged_failures():
    """Print each failure that gets logged: a Twisted server logs an error that is not a pb.Error."""
    from twisted.logger import globalLogBeginner

    def observer(event):
        # log.err's legacy events carry "failure", the new API's "log_failure".
        failure = event.get("log_failure") or event.get("failure")
        if failure is not None:
            say("logged", failure.type.__name__ + ":", failure.getErrorMessage())

    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


# pb2: the root hands out its own Two, the client gives it back, the root knows it.


class Two2(pb.Referenceable):
    def remote_print(self, arg):
        say("two.print was given", arg)


class One2(pb.Root):
    def __init__(self):
        self.two = Two2()

    def remote_getTwo(self):
        say("One.getTwo(): returning my two")
        return self.two

    def remote_checkTwo(self, newtwo):
        same = newtwo is self.two
        say("One.checkTwo(): our twos are", "the same" if same else "different")
        return same


@defer.inlineCallbacks
def pb2_client(connect):
    one = yield connect().getRootObject()
    say("got one object:", kind(one))
    say("asking it to getTwo")
    two = yield one.callRemote("getTwo")
    say("got two object:", kind(two))
    say("giving it back to one")
    say("one says they are the same:", (yield one.callRemote("checkTwo", two)))


# pb3: the client hands the root its own Two, the root calls it back.


class Two3(pb.Referenceable):
    def remote_print(self, arg):
        say("Two.print() called with", arg)


class One3(pb.Root):
    def remote_takeTwo(self, two):
        say("received a Two:", kind(two))
        say("telling it to print(12)")
        # Not waited for, as in the listing: the call goes out before the
        # answer.  (Its own answer may be lost when the client leaves.)
        two.callRemote("print", 12).addErrback(lambda failure: None)


@defer.inlineCallbacks
def pb3_client(connect):
    one = yield connect().getRootObject()
    say("got One:", kind(one))
    say("giving it our two")
    yield one.callRemote("takeTwo", Two3())
    say("takeTwo answered")


# pb4: objects fetched by name (remoteForName), each on a connection of its own.


class Named4(pb.Referenceable):
    def __init__(self, name):
        self.name = name

    def remote_foo(self, arg):
        say(f"{self.name}.foo({arg})")
        return f"{self.name} did foo({arg})"


class One4(pb.Root):
    def rootObject(self, broker):
        broker.setNameForLocal("two", Named4("two"))
        broker.setNameForLocal("three", Named4("three"))
        return self

    def remote_foo(self, arg):
        say(f"root.foo({arg})")
        return f"root did foo({arg})"


@defer.inlineCallbacks
def pb4_client(connect):
    root = yield connect().getRootObject()
    say("got root object:", kind(root))
    say("telling root object to do foo(A)")
    say((yield root.callRemote("foo", "A")))
    for name, arg in (("two", "B"), ("three", "C")):
        # The listing opens a broker of its own and asks it for the name;
        # the root reference is only the way to that broker here.
        broker = (yield connect().getRootObject()).broker
        obj = broker.remoteForName(name)
        say(f"got {name} object:", kind(obj))
        say(f"telling {name} object to do foo({arg})")
        say((yield obj.callRemote("foo", arg)))


# exc: a pb.Error subclass and a plain exception raised by remote methods.


class MyError(pb.Error):
    """An expected error: Twisted does not log it."""


class MyError2(Exception):
    """An unexpected error: Twisted logs it, and the peer gets it all the same."""


class ExcOne(pb.Root):
    def remote_broken(self):
        say("raising a MyError exception with data 'fall down go boom'")
        raise MyError("fall down go boom")

    def remote_broken2(self):
        say("raising a MyError2 exception with data 'hadda owie'")
        raise MyError2("hadda owie")

    def remote_done(self):
        return "done"


def exc_report(name, failure):
    """What the listing's errback prints of a remote error, in neutral words."""
    say(name, "failed: got remote Exception")
    say(" .getErrorMessage() =", failure.getErrorMessage())
    say(" .type =", failure.type.decode())
    say(" .check(pb.Error) =", failure.check(pb.Error) is not None)
    say(" .check(MyError2) =", failure.check(MyError2) is not None)
    say(" .parents =", ", ".join(failure.parents))


@defer.inlineCallbacks
def exc_client(connect):
    one = yield connect().getRootObject()
    for name in ("broken", "broken2"):
        # Errbacks, as in the listing: they get the CopiedFailure itself (a
        # generator would be thrown a pb.RemoteError instead).
        yield one.callRemote(name).addCallbacks(
            lambda result: say("erm, it wasn't *supposed* to work.."),
            lambda failure, name=name: exc_report(name, failure),
        )
    say((yield one.callRemote("done")))


# exc_back: the same errors the other way, raised by an object of the client
# that the server calls.


class Breaker(pb.Referenceable):
    def remote_broken(self):
        raise MyError("fall down go boom")

    def remote_broken2(self):
        raise MyError2("hadda owie")

    def remote_panic(self):
        raise MyException


class ExcBackOne(pb.Root):
    @defer.inlineCallbacks
    def remote_callMe(self, breaker):
        for name in ("broken", "broken2"):
            yield breaker.callRemote(name).addCallbacks(
                lambda result: say("erm, it wasn't *supposed* to work.."),
                lambda failure, name=name: exc_report(name, failure),
            )

        def trapped(failure):
            say("panic trapped:", failure.trap(MyException).__name__, "(the server's own class)")

        yield breaker.callRemote("panic").addErrback(trapped)


@defer.inlineCallbacks
def exc_back_client(connect):
    one = yield connect().getRootObject()
    yield one.callRemote("callMe", Breaker())
    say("callMe answered")


# trap: trapping errors by class, an unsafe argument, a stale reference.


class MyException(pb.Error):
    pass


class MyOtherException(pb.Error):
    pass


class ScaryObject:
    """Not safe to send: no flavour, and no security option allows it."""


class TrapOne(pb.Root):
    def rootObject(self, broker):
        self.broker = broker
        return self

    def remote_fooMethod(self, arg):
        say("fooMethod got", repr(arg))
        if arg == "panic!":
            raise MyException
        return "response"

    def remote_shutdown(self):
        # The listing stops the reactor; dropping the connection is what the
        # client sees of that.
        say("shutting down")
        self.broker.transport.loseConnection()


def trap_outcome(deferred):
    """The listing's callback and errbacks, as one errback dispatching on the failure.

    In Twisted 26.10 a ``trap()`` that does not match a CopiedFailure raises
    a TypeError (its value is a str) instead of passing the failure on, so
    the listing's chain of one ``trap`` per errback would lose the failure;
    ``check`` picks the case and ``trap`` is kept for the one it matches.
    """

    def worked(response):
        say(" method successful, response:", response)

    def failed(failure):
        if failure.check(jelly.InsecureJelly):
            say(" InsecureJelly: you tried to send something unsafe to them")
        elif failure.check(pb.DeadReferenceError):
            say(" stale reference: the client disconnected or crashed")
        else:
            which = failure.trap(MyException, MyOtherException)
            say(" remote raised a", which.__name__, "(the caller's own class)")

    def catch_everythingElse(failure):
        say(" something else happened:", failure.getErrorMessage())

    return deferred.addCallbacks(worked, failed).addErrback(catch_everythingElse)


@defer.inlineCallbacks
def trap_client(connect):
    remote = yield connect().getRootObject()

    def doCall(explanation, arg):
        say(explanation)
        try:
            deferred = remote.callRemote("fooMethod", arg)
        except pb.DeadReferenceError:
            say(" stale reference: the client disconnected or crashed")
            return defer.succeed(None)
        return trap_outcome(deferred)

    yield doCall("callOne: call with safe object", "safe string")
    yield doCall("callTwo: call with dangerous object", ScaryObject())
    yield doCall("callThree: call that raises remote exception", "panic!")
    say("telling them to shut down")
    gone = defer.Deferred()
    remote.notifyOnDisconnect(lambda ref: gone.callback(None))
    # Its answer may or may not make it before the connection goes.
    remote.callRemote("shutdown").addErrback(lambda failure: None)
    yield gone
    yield doCall("callFour: call on stale reference", "dummy")


SCENARIOS = {
    "pb1": (One, pb1_client),
    "pb2": (One2, pb2_client),
    "pb3": (One3, pb3_client),
    "pb4": (One4, pb4_client),
    "exc": (ExcOne, exc_client),
    "trap": (TrapOne, trap_client),
    "exc_back": (ExcBackOne, exc_back_client),
}
# The scenarios whose peers print what Twisted logs (the failures it logs).
LOGGED = {"exc", "exc_back", "trap"}


def main(mode, scenario, *args):
    root, client = SCENARIOS[scenario]
    if scenario in LOGGED:
        print_logged_failures()
    if mode == "serve":
        serve(root())
    else:
        from twisted.internet import reactor

        def connect():
            factory = pb.PBClientFactory()
            reactor.connectTCP("127.0.0.1", int(args[0]), factory)
            return factory

        run_client(client, connect)


if __name__ == "__main__":
    main(*sys.argv[1:])
