"""Real Twisted PB peers for the cred behaviours tested in Twisted's test_pb.py (a subprocess).

``serve <scenario>`` serves a portal set up for the scenario and prints a
line for each event the server sees; ``client <scenario> <port>`` plays the
client and prints what it sees.  tests/test_pb_cred_twisted.py runs each
scenario Twisted-to-Twisted and against trio_pb both ways (see
peers.three_ways).  The scenarios are our own rewrites of what
NewCredTests, NewCredLeakTests and NSPTests check.
"""

from __future__ import annotations

import gc
import socket
import sys
import weakref

from twisted.cred import checkers, credentials, portal
from twisted.internet import defer, reactor, task
from twisted.python.failure import Failure
from twisted.spread import pb
from twisted_runner import run_client, serve
from zope.interface import implementer


def say(*words):
    print(*words, flush=True)


MIND = "BRAINS!"


# -- the server: one realm, the checkers chosen by the scenario -----------------


class View(pb.Viewable):
    def view_check(self, perspective):
        say("the view was called with the perspective of", perspective.avatar_id)
        return isinstance(perspective, Perspective)


class Perspective(pb.Avatar):
    def __init__(self, avatar_id, realm):
        self.avatar_id = avatar_id
        self.realm = realm

    def perspective_getAvatarId(self):
        return self.avatar_id

    def perspective_add(self, a, b):
        return a + b

    def perspective_getViewPoint(self):
        return View()

    def perspective_logouts(self):
        return list(self.realm.logouts)

    def perspective_mindStatus(self):
        # The leak check: only once the first session has logged out can its
        # mind be gone; then collect and see whether anything still holds it.
        if not self.realm.logouts:
            return "not logged out yet"
        gc.collect()
        return "mind collected" if self.realm.minds[0]() is None else "mind still alive"


class Echoer(pb.Avatar):
    def perspective_echo(self, value):
        return value


@implementer(pb.IPerspective)
class CatchAll:
    """An avatar that is no pb.Avatar: it takes every message itself and echoes it."""

    def perspectiveMessageReceived(self, broker, message, args, kwargs):
        args = broker.unserialize(args, self)
        kwargs = broker.unserialize(kwargs, self)
        return broker.serialize((message, args, kwargs))


def describe(mind):
    return "a reference" if isinstance(mind, pb.RemoteReference) else repr(mind)


class Realm:
    def __init__(self, quiet=False, catch_all=False, leaky=False):
        self.quiet = quiet
        self.catch_all = catch_all
        self.leaky = leaky
        self.logouts = []
        self.minds = []

    def requestAvatar(self, avatar_id, mind, *interfaces):
        assert pb.IPerspective in interfaces
        if avatar_id == checkers.ANONYMOUS:
            say("anonymous login, mind", describe(mind))
            return pb.IPerspective, Echoer(), lambda: None
        if not self.quiet:
            say("login", avatar_id, "mind", describe(mind))
        if self.catch_all:
            return pb.IPerspective, CatchAll(), lambda: None
        avatar = Perspective(avatar_id, self)
        if self.leaky and isinstance(mind, pb.RemoteReference):
            self.minds.append(weakref.ref(mind))

            # A logout that holds the mind and the avatar: once it has run,
            # nothing may keep it (and so the mind) alive.
            def logout():
                self.logouts.append(avatar_id)
                return mind, avatar

            return pb.IPerspective, avatar, logout
        return pb.IPerspective, avatar, lambda: self.logouts.append(avatar_id)


SERVERS = {
    "roots": lambda: (Realm(), [passwords(user=b"pass")]),
    "logout": lambda: (Realm(), [passwords(user=b"pass")]),
    "decref": lambda: (Realm(), [passwords(foo=b"bar")]),
    "concurrent": lambda: (Realm(quiet=True), [passwords(foo=b"bar", baz=b"quux")]),
    "bad": lambda: (Realm(), [passwords(user=b"pass")]),
    "anonymous": lambda: (Realm(), [checkers.AllowAnonymousAccess()]),
    "multiple": lambda: (Realm(), [checkers.AllowAnonymousAccess(), passwords(user=b"pass")]),
    "view": lambda: (Realm(), [passwords(user=b"pass")]),
    "catch-all": lambda: (Realm(catch_all=True), [passwords(user=b"pass")]),
    "leak": lambda: (Realm(leaky=True), [passwords(user=b"pass")]),
    "immediate-close": lambda: (Realm(), [passwords(user=b"pass")]),
}


def passwords(**users):
    return checkers.InMemoryUsernamePasswordDatabaseDontUse(**users)


def report_logged_errors():
    """Print a line for every warning or error Twisted logs, so that the transcript shows them."""
    from twisted.logger import LogLevel, globalLogPublisher

    def observe(event):
        if event.get("isError") or event.get("log_level") in (
            LogLevel.warn,
            LogLevel.error,
            LogLevel.critical,
        ):
            say("logged a warning or an error")

    globalLogPublisher.addObserver(observe)


# -- the clients -----------------------------------------------------------------


def connect(port, factory=None):
    factory = factory or pb.PBClientFactory()
    reactor.connectTCP("127.0.0.1", port, factory)
    return factory


def login(factory, username, password, mind=MIND):
    return factory.login(credentials.UsernamePassword(username, password), mind)


def error_name(failure):
    # An error from the server arrives as a RemoteError naming its type.
    value = failure.value
    name = value.remoteType.decode() if isinstance(value, pb.RemoteError) else failure.type.__name__
    return name.rsplit(".", 1)[-1]


@defer.inlineCallbacks
def wait_for(call, done):
    """Repeat *call* until its answer satisfies *done*; return that answer."""
    while True:
        answer = yield call()
        if done(answer):
            return answer
        yield task.deferLater(reactor, 0.01, lambda: None)


class ReconnectOnce(pb.PBClientFactory):
    """Reconnects once when its first connection is lost, keeping its pending requests."""

    reconnected = False

    def clientConnectionLost(self, connector, reason):
        again = not self.reconnected
        self.reconnected = True
        pb.PBClientFactory.clientConnectionLost(self, connector, reason, again)
        if again:
            connector.connect()


@defer.inlineCallbacks
def roots_client(port):
    # getRootObject, deadReferenceError and clientConnectionLost.
    factory = connect(port, ReconnectOnce())
    for attempt in ("first", "second"):
        root = yield factory.getRootObject()
        say(attempt, "root:", type(root).__name__)
        lost = defer.Deferred()
        root.notifyOnDisconnect(lost.callback)
        factory.disconnect()
        yield lost
        say(attempt, "connection: disconnect notified")
        try:
            yield defer.maybeDeferred(root.callRemote, "login", b"user")
        except pb.DeadReferenceError:
            say(attempt, "root after the disconnect: DeadReferenceError")


@defer.inlineCallbacks
def logout_client(port):
    first = connect(port)
    avatar = yield login(first, b"user", b"pass")
    say("logged in:", type(avatar).__name__)
    first.disconnect()
    second = connect(port)
    avatar = yield login(second, b"user", b"pass")
    logouts = yield wait_for(lambda: avatar.callRemote("logouts"), bool)
    say("logged out once the connection closed:", logouts)
    second.disconnect()


@defer.inlineCallbacks
def decref_client(port):
    factory = connect(port)
    avatar = yield login(factory, b"foo", b"bar")
    say("logged in:", type(avatar).__name__)
    # Dropping the last reference sends the decref.
    del avatar
    gc.collect()
    again = yield login(factory, b"foo", b"bar")
    say("logouts after the release:", (yield again.callRemote("logouts")))


@defer.inlineCallbacks
def concurrent_client(port):
    factory = connect(port)
    first, second = yield defer.gatherResults(
        [login(factory, b"foo", b"bar"), login(factory, b"baz", b"quux")]
    )
    ids = yield defer.gatherResults([first.callRemote("getAvatarId"), second.callRemote("getAvatarId")])
    say("avatar ids:", ids)


@defer.inlineCallbacks
def bad_client(port):
    factory = connect(port)
    attempts = [login(factory, b"nosuchuser", b"pass"), login(factory, b"user", b"wrongpass")]
    attempts.append(factory.login(credentials.Anonymous(), MIND))
    for what, attempt in zip(("unknown user", "wrong password", "anonymous"), attempts, strict=True):
        try:
            yield attempt
        except Exception:
            say(what, "failed:", error_name(Failure()))


@defer.inlineCallbacks
def anonymous_client(port):
    factory = connect(port)
    echoer = yield factory.login(credentials.Anonymous(), MIND)
    say("echo:", (yield echoer.callRemote("echo", 123)))
    try:
        yield login(factory, b"user", b"pass")
    except Exception:
        say("password login failed:", error_name(Failure()))


@defer.inlineCallbacks
def multiple_client(port):
    factory = connect(port)
    echoer = yield factory.login(credentials.Anonymous(), MIND)
    say("anonymous echo:", (yield echoer.callRemote("echo", 123)))
    user = yield login(factory, b"user", b"pass")
    say("user add:", (yield user.callRemote("add", 100, 23)))


@defer.inlineCallbacks
def view_client(port):
    factory = connect(port)
    user = yield login(factory, b"user", b"pass")
    view = yield user.callRemote("getViewPoint")
    say("view:", type(view).__name__)
    say("check:", (yield view.callRemote("check")))


@defer.inlineCallbacks
def catch_all_client(port):
    factory = connect(port)
    avatar = yield login(factory, b"user", b"pass")
    say("answer:", (yield avatar.callRemote("ANYTHING", "here", bar="baz")))


@defer.inlineCallbacks
def leak_client(port):
    first = connect(port)
    yield login(first, b"user", b"pass", pb.Referenceable())
    first.disconnect()
    second = connect(port)
    avatar = yield login(second, b"user", b"pass", None)
    status = yield wait_for(lambda: avatar.callRemote("mindStatus"), lambda s: s != "not logged out yet")
    say("after the first connection closed:", status)


@defer.inlineCallbacks
def immediate_close_client(port):
    # A connection that closes before sending a byte, then a real one.
    bare = socket.create_connection(("127.0.0.1", port))
    bare.close()
    factory = connect(port)
    avatar = yield login(factory, b"user", b"pass")
    say("avatar id:", (yield avatar.callRemote("getAvatarId")))


CLIENTS = {
    "roots": roots_client,
    "logout": logout_client,
    "decref": decref_client,
    "concurrent": concurrent_client,
    "bad": bad_client,
    "anonymous": anonymous_client,
    "multiple": multiple_client,
    "view": view_client,
    "catch-all": catch_all_client,
    "leak": leak_client,
    "immediate-close": immediate_close_client,
}


def main(mode, scenario, *args):
    if mode == "serve":
        if scenario == "immediate-close":
            report_logged_errors()
        realm, checker_list = SERVERS[scenario]()
        serve(portal.Portal(realm, checker_list))
    else:
        run_client(CLIENTS[scenario], int(args[0]))


if __name__ == "__main__":
    main(*sys.argv[1:])
