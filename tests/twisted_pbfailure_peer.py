"""Real Twisted PB peers for the scenarios of Twisted's test_pbfailure.py (a subprocess).

``serve <scenario>`` serves the scenario's root and prints a line for each
failure the server logs; ``client <scenario> <port>`` plays the client and
prints what it sees (and what it logs).  tests/test_pbfailure_twisted.py runs
each scenario Twisted-to-Twisted and against trio_pb both ways (see
peers.three_ways).  The scenarios are our own two-process rewrites of what
Twisted's PB failure tests check.
"""

from __future__ import annotations

import io
import sys

from twisted.internet import defer
from twisted.python import log, reflect
from twisted.spread import flavors, pb
from twisted_runner import run_client, serve


def say(*words):
    print(*words, flush=True)


def short_name(failure):
    """The last part of a failure's class name, whether it is a class or a copied name."""
    kind = failure.type
    if isinstance(kind, bytes):
        kind = kind.decode()
    if not isinstance(kind, str):
        kind = reflect.qual(kind)
    return kind.rsplit(".", 1)[-1]


def log_failures(event):
    """Print one line per failure logged (an Error must not be among them)."""
    failure = event.get("failure")
    if event.get("isError") and failure is not None:
        say("logged", short_name(failure))


log.addObserver(log_failures)


class AsynchronousException(Exception):
    """Not a pb.Error, from a Deferred that failed."""


class SynchronousException(Exception):
    """Not a pb.Error, raised by the method."""


class AsynchronousError(pb.Error):
    """A pb.Error, from a Deferred that failed."""


class SynchronousError(pb.Error):
    """A pb.Error, raised by the method."""


class JellyError(flavors.Jellyable, pb.Error, pb.RemoteCopy):
    """A pb.Error that is Jellyable: it crosses as itself."""


class SecurityError(pb.Error, pb.RemoteCopy):
    """A pb.Error whose class the security options allow: it crosses as itself."""


class PrivateError(pb.Error, pb.RemoteCopy):
    """Allowed by the server's security options only: the client neither registers nor allows it."""


pb.setUnjellyableForClass(JellyError, JellyError)
pb.setUnjellyableForClass(SecurityError, SecurityError)
pb.globalSecurity.allowInstancesOf(SecurityError)


class FailingRoot(pb.Root):
    def remote_asynchronousException(self):
        return defer.fail(AsynchronousException("remote asynchronous exception"))

    def remote_synchronousException(self):
        raise SynchronousException("remote synchronous exception")

    def remote_asynchronousError(self):
        return defer.fail(AsynchronousError("remote asynchronous error"))

    def remote_synchronousError(self):
        raise SynchronousError("remote synchronous error")

    def remote_unknownError(self):
        class UnknownError(pb.Error):
            pass

        raise UnknownError("I'm not known to client!")

    def remote_jelly(self):
        raise JellyError("I'm jellyable!")

    def remote_deferredJelly(self):
        d = defer.Deferred()
        d.addCallback(self.raise_jelly)
        d.callback(None)
        return d

    def remote_security(self):
        raise SecurityError("I'm secure!")

    def remote_deferredSecurity(self):
        d = defer.Deferred()
        d.addCallback(self.raise_security)
        d.callback(None)
        return d

    def raise_jelly(self, ignored):
        raise JellyError("I'm jellyable!")

    def raise_security(self, ignored):
        raise SecurityError("I'm secure!")

    def remote_private(self):
        raise PrivateError("I'm not allowed there!")

    def remote_attributeError(self):
        raise AttributeError("foo")

    def remote_failure(self, message):
        # A failure as a value, in a list: a Deferred whose result is a
        # Failure would take it for an error.
        return [pb.CopyableFailure(ZeroDivisionError() if message is None else Exception(message))]

    def remote_bounce(self, copied):
        say(
            "bounced: ZeroDivisionError",
            bool(copied.check(ZeroDivisionError)),
            "ArithmeticError",
            bool(copied.check(ArithmeticError)),
        )
        return [pb.CopyableFailure(copied)]

    def remote_done(self):
        return "done"


def describe(method, failure):
    """One neutral line: the class name, how it crossed, its message, pb.Error or not, the traceback."""
    kind = failure.type
    if isinstance(failure, pb.CopiedFailure):
        how = "as a failure"
        name = kind.decode()
        text = failure.traceback
        if text == "Traceback unavailable\n":
            trace = "traceback unavailable"
        elif "Traceback" in text and failure.value in text:
            trace = "traceback with the message"
        else:
            trace = "traceback " + repr(text)
    else:
        how = "as itself" if isinstance(failure.value, kind) else "as something else"
        name = reflect.qual(kind)
        trace = "no traceback"
    error = "a pb.Error" if failure.check(pb.Error) else "not a pb.Error"
    say(f"{method}: {name} {how}, {error}, message {failure.getErrorMessage()!r}, {trace}")


ERROR_METHODS = [
    "asynchronousException",
    "synchronousException",
    "asynchronousError",
    "synchronousError",
    "unknownError",
]


@defer.inlineCallbacks
def errors_client(factory):
    # Each call's Deferred gets its errback, as Twisted's test does.
    root = yield factory.getRootObject()
    for method in ERROR_METHODS:
        yield root.callRemote(method).addCallbacks(
            lambda result, method=method: say(method, "succeeded", result),
            lambda failure, method=method: describe(method, failure),
        )

    def no_such(failure):
        failure.trap(pb.NoSuchMethod)
        unavailable = failure.traceback == "Traceback unavailable\n"
        say("nosuch: trapped NoSuchMethod, traceback unavailable:", unavailable)

    yield root.callRemote("nosuch").addCallbacks(lambda result: say("nosuch succeeded", result), no_such)
    say((yield root.callRemote("done")))


@defer.inlineCallbacks
def itself_client(factory):
    root = yield factory.getRootObject()
    for method, cls in [
        ("jelly", JellyError),
        ("deferredJelly", JellyError),
        ("security", SecurityError),
        ("deferredSecurity", SecurityError),
    ]:

        def trapped(failure, method=method, cls=cls):
            failure.trap(cls)
            describe(method, failure)

        yield root.callRemote(method).addCallbacks(
            lambda result, method=method: say(method, "succeeded", result), trapped
        )
    say((yield root.callRemote("done")))


@defer.inlineCallbacks
def private_client(factory):
    # The error cannot be unjellied here: Twisted drops the connection, and the
    # call is never answered.
    root = yield factory.getRootObject()
    lost = defer.Deferred()
    root.notifyOnDisconnect(lambda ref: lost.callback(None))
    answered = []
    root.callRemote("private").addBoth(answered.append)
    yield lost
    say("connection lost; the call was answered:", bool(answered))


@defer.inlineCallbacks
def logging_client(factory):
    # A copied failure can be logged like a local one; both sides log it.
    root = yield factory.getRootObject()

    def logged(failure):
        log.err(failure)
        say("the copied failure was logged")

    yield root.callRemote("synchronousException").addErrback(logged)
    yield root.callRemote("synchronousError").addErrback(logged)
    say((yield root.callRemote("done")))


@defer.inlineCallbacks
def generator_client(factory):
    # inlineCallbacks throws the copied failure into the generator as a RemoteError.
    root = yield factory.getRootObject()
    try:
        yield root.callRemote("attributeError")
    except pb.RemoteError as exc:
        say("raised RemoteError:", exc.remoteType.decode(), exc.args, repr(exc.remoteTraceback))
    say((yield root.callRemote("done")))


@defer.inlineCallbacks
def copies_client(factory):
    # A failure sent as a value, checked once copied, then copied again through the server.
    root = yield factory.getRootObject()
    [once] = yield root.callRemote("failure", None)
    say(
        "copied once: ZeroDivisionError",
        bool(once.check(ZeroDivisionError)),
        "ArithmeticError",
        bool(once.check(ArithmeticError)),
    )
    [again] = yield root.callRemote("bounce", pb.CopyableFailure(once))
    say(
        "copied thrice: ZeroDivisionError",
        bool(again.check(ZeroDivisionError)),
        "ArithmeticError",
        bool(again.check(ArithmeticError)),
    )
    [reason] = yield root.callRemote("failure", "some reason")
    out = io.StringIO()
    reason.printTraceback(out)
    say("printed the value:", "builtins.Exception: some reason" in out.getvalue())
    say((yield root.callRemote("done")))


SCENARIOS = {
    "errors": ({}, errors_client),
    "unsafe": ({"unsafeTracebacks": True}, errors_client),
    "itself": ({}, itself_client),
    "private": ({}, private_client),
    "logging": ({}, logging_client),
    "generator": ({}, generator_client),
    "copies": ({}, copies_client),
}


def main(mode, scenario, *args):
    options, client = SCENARIOS[scenario]
    if mode == "serve":
        pb.globalSecurity.allowInstancesOf(PrivateError)
        serve(FailingRoot(), **options)
    else:
        from twisted.internet import reactor

        factory = pb.PBClientFactory()
        reactor.connectTCP("127.0.0.1", int(args[0]), factory)
        run_client(client, factory)


if __name__ == "__main__":
    main(*sys.argv[1:])
