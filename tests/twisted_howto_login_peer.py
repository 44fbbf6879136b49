"""Real Twisted PB peers for the login listings of Twisted's PB how-to (a subprocess).

``serve <scenario>`` serves the scenario's portal and prints a line for each
event the server sees; ``client <scenario> <port>`` plays the client and
prints what it sees.  tests/test_howto_login_twisted.py runs each scenario
Twisted-to-Twisted and against trio_pb both ways (see peers.three_ways).
The scenarios are our own rewrites of what the listings pb5*, pb6*,
pb7client, pbAnon* and chat* do.

Two adaptations make the outcomes observable and deterministic.  A client
awaits its calls' answers (the listings fire and forget), and each realm
keeps a record of the logouts that ran: an avatar's ``logouts(count)`` waits
until that many have run, then prints and returns their names, sorted, so a
later connection can see on the server side that a closed connection's
avatar was logged out.  Usernames are str, as in the listings; passwords
are bytes (Twisted's challenge response hashes bytes).
"""

from __future__ import annotations

import sys

from twisted.cred import checkers, credentials, portal
from twisted.internet import defer, reactor
from twisted.spread import pb
from twisted_runner import run_client, serve


def say(*words):
    print(*words, flush=True)


def error_name(exc):
    """The short class name of a remote error, as both implementations spell it."""
    return exc.remoteType.decode().rsplit(".", 1)[-1]


#: How long, in seconds, ``logouts(count)`` waits at most.
LOGOUT_WAIT = 10


class Logouts:
    """The names whose logout has run, and the calls waiting for a number of them."""

    def __init__(self):
        self.names = []
        self.waiting = []

    def record(self, name):
        self.names.append(name)
        for count, waiter in list(self.waiting):
            if len(self.names) >= count:
                self.waiting.remove((count, waiter))
                waiter.callback(None)

    def give_up(self, count, waiter):
        self.waiting.remove((count, waiter))
        waiter.callback(None)

    def wait_for(self, count):
        waiter = defer.succeed(None)
        if len(self.names) < count:
            waiter = defer.Deferred()
            self.waiting.append((count, waiter))
            # Should a logout never run, answer with what ran (the test then fails) rather than hang.
            timeout = reactor.callLater(LOGOUT_WAIT, self.give_up, count, waiter)

            def stop_timeout(result):
                if timeout.active():
                    timeout.cancel()
                return result

            waiter.addBoth(stop_timeout)

        def report(_):
            names = sorted(self.names)
            say("logged out:", ", ".join(names))
            return names

        return waiter.addCallback(report)


# pb5, pb6, pb7, pbAnon: a perspective whose foo(arg) the server prints.


class MyPerspective(pb.Avatar):
    def __init__(self, name, logouts):
        self.name = name
        self.logouts = logouts

    def perspective_foo(self, arg):
        say(f"I am {self.name}. perspective_foo({arg}) called")

    def perspective_logouts(self, count):
        return self.logouts.wait_for(count)


class MyRealm:
    def __init__(self):
        self.logouts = Logouts()

    def requestAvatar(self, avatar_id, mind, *interfaces):
        assert pb.IPerspective in interfaces
        # As pbAnonServer names its anonymous users.
        name = "Anonymous" if avatar_id is checkers.ANONYMOUS else avatar_id
        return pb.IPerspective, MyPerspective(name, self.logouts), lambda: self.logouts.record(name)


def my_portal(users, anonymous=False):
    # The listings pass the users as keywords, which Twisted now keys by bytes, so
    # their str usernames would be refused; addUser keeps the str keys they meant.
    checker = checkers.InMemoryUsernamePasswordDatabaseDontUse()
    for username, password in users.items():
        checker.addUser(username, password)
    listing_portal = portal.Portal(MyRealm(), [checker])
    if anonymous:
        listing_portal.registerChecker(checkers.AllowAnonymousAccess())
    return listing_portal


def connect(port):
    factory = pb.PBClientFactory()
    reactor.connectTCP("127.0.0.1", port, factory)
    return factory


@defer.inlineCallbacks
def refused(factory, username, password):
    """Log in with credentials the server must refuse; the error's name."""
    try:
        yield factory.login(credentials.UsernamePassword(username, password))
    except pb.RemoteError as exc:
        return error_name(exc)
    return "logged in!"


@defer.inlineCallbacks
def foo(perspective, arg, label="perspective"):
    say(f"got {label} ref:", type(perspective).__name__)
    say(f"asking it to foo({arg})")
    say("foo answered", (yield perspective.callRemote("foo", arg)))


@defer.inlineCallbacks
def logouts_seen(port, count, creds):
    """On a new connection, wait until *count* logouts ran on the server; print their names."""
    factory = connect(port)
    watcher = yield factory.login(creds)
    say("logouts:", (yield watcher.callRemote("logouts", count)))


def pb5_server():
    return my_portal({"user1": b"pass1"})


@defer.inlineCallbacks
def pb5_client(port):
    factory = connect(port)
    yield foo((yield factory.login(credentials.UsernamePassword("user1", b"pass1"))), 12)
    say("wrong password:", (yield refused(factory, "user1", b"wrong")))
    say("unknown user:", (yield refused(factory, "user9", b"pass1")))
    factory.disconnect()
    yield logouts_seen(port, 1, credentials.UsernamePassword("user1", b"pass1"))


def pb6_server():
    return my_portal({"user1": b"pass1", "user2": b"pass2"})


@defer.inlineCallbacks
def pb6_client(port):
    # pb6client1 and pb6client2, connected at the same time.
    first, second = connect(port), connect(port)
    one = yield first.login(credentials.UsernamePassword("user1", b"pass1"))
    two = yield second.login(credentials.UsernamePassword("user2", b"pass2"))
    yield foo(one, 13, "perspective1")
    yield foo(two, 14, "perspective2")
    say("another user's password:", (yield refused(second, "user2", b"pass1")))
    say("unknown user:", (yield refused(first, "user3", b"pass3")))
    first.disconnect()
    second.disconnect()
    yield logouts_seen(port, 2, credentials.UsernamePassword("user1", b"pass1"))


def pb7_server():
    return my_portal({"user1": b"pass1", "user2": b"pass2", "user3": b"pass3"})


@defer.inlineCallbacks
def pb7_client(port):
    # pb7client's five perspectives (its getPerspective is long gone): logins by
    # several users, two of them twice on one connection.
    logins = [("user1", b"pass1", 10), ("user1", b"pass1", 11), ("user2", b"pass2", 12)]
    logins += [("user2", b"pass2", 13), ("user3", b"pass3", 14)]
    factories = {}
    for username, password, number in logins:
        if username not in factories:
            factories[username] = connect(port)
        factory = factories[username]
        yield foo((yield factory.login(credentials.UsernamePassword(username, password))), number)
    say("wrong password:", (yield refused(factories["user3"], "user3", b"pass1")))
    say("unknown user:", (yield refused(factories["user1"], "user4", b"pass4")))
    for factory in factories.values():
        factory.disconnect()
    yield logouts_seen(port, 5, credentials.UsernamePassword("user1", b"pass1"))


def anon_server():
    return my_portal({"user1": b"pass1", "user2": b"pass2"}, anonymous=True)


@defer.inlineCallbacks
def anon_client(port):
    factory = connect(port)
    yield foo((yield factory.login(credentials.Anonymous())), 13, "perspective1")
    yield foo((yield factory.login(credentials.UsernamePassword("user1", b"pass1"))), 13, "perspective1")
    say("wrong password:", (yield refused(factory, "user1", b"pass2")))
    say("unknown user:", (yield refused(factory, "Anonymous", b"")))
    factory.disconnect()
    yield logouts_seen(port, 2, credentials.Anonymous())


# chat: groups of users, each user's client a Referenceable the server calls back.


class ChatServer:
    def __init__(self):
        self.groups = {}

    def join_group(self, groupname, user, allow_mattress):
        if groupname not in self.groups:
            self.groups[groupname] = Group(groupname, allow_mattress)
        self.groups[groupname].add_user(user)
        say(f"{user.name} joined {groupname}")
        return self.groups[groupname]


class ChatRealm:
    def __init__(self):
        self.server = ChatServer()
        self.logouts = Logouts()

    def requestAvatar(self, avatar_id, mind, *interfaces):
        assert pb.IPerspective in interfaces
        user = User(avatar_id, self)
        user.attached(mind)

        def detached():
            user.detached(mind)
            self.logouts.record(user.name)

        return pb.IPerspective, user, detached


class User(pb.Avatar):
    def __init__(self, name, realm):
        self.name = name
        self.realm = realm
        self.remote = None

    def attached(self, mind):
        self.remote = mind

    def detached(self, mind):
        self.remote = None

    def perspective_joinGroup(self, groupname, allowMattress=True):  # noqa: N803
        return self.realm.server.join_group(groupname, self, allowMattress)

    def perspective_logouts(self, count):
        return self.realm.logouts.wait_for(count)

    def send(self, message):
        # The listing's users never leave their groups; one who logged out is skipped.
        if self.remote is not None:
            self.remote.callRemote("print", message)


class Group(pb.Viewable):
    def __init__(self, groupname, allow_mattress):
        self.name = groupname
        self.allow_mattress = allow_mattress
        self.users = []

    def add_user(self, user):
        self.users.append(user)

    def view_send(self, from_user, message):
        if not self.allow_mattress and "mattress" in message:
            say(f"{self.name} refused a message from {from_user.name}")
            raise ValueError("Don't say that word")
        say(f"{self.name} <{from_user.name}> says: {message}")
        for user in self.users:
            user.send(f"<{from_user.name}> says: {message}")


def chat_server():
    checker = checkers.InMemoryUsernamePasswordDatabaseDontUse()
    checker.addUser("alice", b"1234")
    checker.addUser("bob", b"secret")
    checker.addUser("carol", b"fido")
    return portal.Portal(ChatRealm(), [checker])


class Client(pb.Referenceable):
    def __init__(self):
        self.heard = []

    def remote_print(self, message):
        self.heard.append(message)


@defer.inlineCallbacks
def chat_client(port):
    minds, groups, factories = {}, {}, {}

    @defer.inlineCallbacks
    def join(name, password, groupname, **options):
        if name not in factories:
            factories[name], minds[name] = connect(port), Client()
            creds = credentials.UsernamePassword(name, password)
            groups[name] = yield factories[name].login(creds, client=minds[name])
        group = yield groups[name].callRemote("joinGroup", groupname, **options)
        say(f"{name} joined {groupname}:", type(group).__name__)
        return group

    @defer.inlineCallbacks
    def send(name, group, message):
        # An answer on this connection comes after every print the server sent on it before.
        try:
            yield group.callRemote("send", message)
        except pb.RemoteError as exc:
            say(f"{name} was refused:", error_name(exc), exc.args[0])
        say(f"{name} heard:", minds[name].heard)

    alice_four = yield join("alice", b"1234", "#NeedAFourth")
    bob_four = yield join("bob", b"secret", "#NeedAFourth")
    yield send("alice", alice_four, "You can call me Al.")
    yield send("bob", bob_four, "Hi Al.")
    carol_quiet = yield join("carol", b"fido", "#NoMattress", allowMattress=False)
    yield send("carol", carol_quiet, "Get off my mattress")
    alice_quiet = yield join("alice", b"1234", "#NoMattress")
    yield send("alice", alice_quiet, "hello carol")
    say("wrong password:", (yield refused(factories["carol"], "carol", b"1234")))
    say("unknown user:", (yield refused(factories["carol"], "dave", b"fido")))
    # Those logins were answered on carol's connection, after alice's message to her.
    say("carol heard:", minds["carol"].heard)
    factories["bob"].disconnect()
    say("logouts:", (yield groups["alice"].callRemote("logouts", 1)))
    yield send("alice", alice_four, "Bob?")


SCENARIOS = {
    "pb5": (pb5_server, pb5_client),
    "pb6": (pb6_server, pb6_client),
    "pb7": (pb7_server, pb7_client),
    "anon": (anon_server, anon_client),
    "chat": (chat_server, chat_client),
}


def main(mode, scenario, *args):
    server, client = SCENARIOS[scenario]
    if mode == "serve":
        serve(server())
    else:
        run_client(client, int(args[0]))


if __name__ == "__main__":
    main(*sys.argv[1:])
