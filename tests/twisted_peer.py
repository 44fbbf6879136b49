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
from twisted_runner import run_client, serve

ALL_TYPES = [
    None,
    True,
    False,
    0,
    -1,
    2147483648,
    -2147483649,
    2**100,
    1.5,
    "h\xe9llo",
    b"bytes",
    (1, 2),
    {"a": 1, b"b": 2},
    {1, 2},
    frozenset([3]),
    datetime.datetime(2020, 1, 2, 3, 4, 5, 6),
    datetime.date(2020, 1, 2),
    datetime.time(1, 2, 3, 4),
    datetime.timedelta(1, 2, 3),
    decimal.Decimal("-1.25"),
    [b"None", b"remote", "list"],
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


class TrioPoint(pb.RemoteCopy):
    """What a trio_pb server's Copyable (tag interop.Point) becomes here."""


pb.setUnjellyableForClass("interop.Point", TrioPoint)


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
    point = yield root.callRemote("point")
    out("copy", type(point).__name__, point.x, point.y)
    import gc

    gc.collect()
    yield task.deferLater(reactor, 0.1, lambda: None)
    out("tables", (yield root.callRemote("tables")))
    out("done")


# -- paging (twisted.spread.util) ------------------------------------------------
# ``paging-server`` serves PagingRoot and prints ``PORT <n>``; ``paging-client
# <port>`` runs paging_scenario against a trio_pb server.


def paging_data(size):
    """The bytes both sides page: not periodic in any chunk size the tests use."""
    return bytes((i * 7 + i // 251) % 256 for i in range(size))


class PagingRoot(pb.Root):
    def __init__(self):
        self.collected = None
        self.brokers = []

    def rootObject(self, broker):
        self.brokers.append(broker)
        return self

    def remote_getPages(self, collector, size, chunk):
        from twisted.spread import util

        util.StringPager(collector, paging_data(size), chunk)

    def remote_getFile(self, collector, size, chunk=None):
        import io

        from twisted.spread import util

        util.FilePager(collector, io.BytesIO(paging_data(size)))

    def remote_makeCollector(self):
        from twisted.spread import util

        self.collected = defer.Deferred()
        return util.CallbackPageCollector(self.collected.callback)

    def remote_collected(self):
        return self.collected.addCallback(lambda pages: [len(pages), b"".join(pages)])


def paging_serve():
    port = reactor.listenTCP(0, pb.PBServerFactory(PagingRoot()), interface="127.0.0.1")
    print("PORT", port.getHost().port, flush=True)
    reactor.run()


@defer.inlineCallbacks
def paging_scenario(port):
    from twisted.spread import util

    factory = pb.PBClientFactory()
    reactor.connectTCP("127.0.0.1", port, factory)
    root = yield factory.getRootObject()
    out = lambda *words: print(*words, flush=True)  # noqa: E731
    pages = yield util.getAllPages(root, "getPages", 30, 12)
    out("string", [len(p) for p in pages], b"".join(pages) == paging_data(30))
    pages = yield util.getAllPages(root, "getPages", 0, 12)
    out("empty_string", pages)
    pages = yield util.getAllPages(root, "getPages", 200000, 8192)
    out("big", len(pages), b"".join(pages) == paging_data(200000))
    pages = yield util.getAllPages(root, "getFile", 20000, 8192)
    out("file", [len(p) for p in pages], b"".join(pages) == paging_data(20000))
    pages = yield util.getAllPages(root, "getFile", 0, 8192)
    out("empty_file", pages)
    collector = yield root.callRemote("makeCollector")
    done = defer.Deferred()
    util.StringPager(collector, paging_data(20000), 4096, done.callback, "sent")
    out("pager", (yield done))
    del collector
    count, data = yield root.callRemote("collected")
    out("collected", count, data == paging_data(20000))
    out("done")


# -- login (twisted.cred) ------------------------------------------------------------
# ``login-server`` serves a Portal with anonymous access (``login-server closed``:
# without) and prints ``PORT <n>``; ``login-client <port> <port without anonymous>``
# runs login_scenario against trio_pb servers set up the same way.

LOGOUTS = []


class LoginWatcher(pb.Viewable):
    def view_who(self, perspective):
        return perspective.avatar_id


class LoginAvatar(pb.Avatar):
    def __init__(self, avatar_id, mind):
        self.avatar_id = avatar_id
        self.mind = mind

    def perspective_whoami(self):
        return self.avatar_id

    def perspective_add(self, a, b):
        return a + b

    def perspective_call_mind(self, text):
        return self.mind.callRemote("greet", text)

    def perspective_watcher(self):
        return LoginWatcher()

    def perspective_logouts(self):
        return list(LOGOUTS)


class LoginRealm:
    def requestAvatar(self, avatar_id, mind, *interfaces):
        assert pb.IPerspective in interfaces
        avatar = LoginAvatar(avatar_id, mind)
        answer = (pb.IPerspective, avatar, lambda: LOGOUTS.append(avatar_id))
        if mind is None:
            return answer
        # Call the client's mind before the login answer goes out.
        return mind.callRemote("greet", "welcome from twisted").addCallback(lambda _: answer)


def login_serve(anonymous):
    from twisted.cred import checkers, portal

    users = checkers.InMemoryUsernamePasswordDatabaseDontUse()
    users.addUser(b"alice", b"secret")
    login_portal = portal.Portal(LoginRealm(), [users])
    if anonymous:
        login_portal.registerChecker(checkers.AllowAnonymousAccess())
    port = reactor.listenTCP(0, pb.PBServerFactory(login_portal), interface="127.0.0.1")
    print("PORT", port.getHost().port, flush=True)
    reactor.run()


class LoginMind(pb.Referenceable):
    def __init__(self):
        self.greetings = []

    def remote_greet(self, text):
        self.greetings.append(text)
        return "thanks"


def login_trap(d, error_class):
    return d.addCallbacks(lambda _: "logged in!", lambda f: f.trap(error_class) and f"trapped {f.type}")


@defer.inlineCallbacks
def login_scenario(port, closed_port):
    import gc

    from twisted.cred import credentials, error

    factory = pb.PBClientFactory()
    reactor.connectTCP("127.0.0.1", port, factory)
    out = lambda *words: print(*words, flush=True)  # noqa: E731
    mind = LoginMind()
    avatar = yield factory.login(credentials.UsernamePassword(b"alice", b"secret"), client=mind)
    out("greetings", mind.greetings)
    out("whoami", (yield avatar.callRemote("whoami")))
    out("add", (yield avatar.callRemote("add", 1, 2)))
    out("call_mind", (yield avatar.callRemote("call_mind", "later")), mind.greetings)
    watcher = yield avatar.callRemote("watcher")
    out("who", (yield watcher.callRemote("who")))
    for username, password in [(b"alice", b"wrong"), (b"mallory", b"secret")]:
        d = factory.login(credentials.UsernamePassword(username, password))
        out("bad", username.decode(), (yield login_trap(d, error.UnauthorizedLogin)))
    anonymous = yield factory.login(credentials.Anonymous())
    out("anonymous", (yield anonymous.callRemote("whoami")))
    del avatar, watcher
    gc.collect()
    yield task.deferLater(reactor, 0.2, lambda: None)
    out("logouts", (yield anonymous.callRemote("logouts")))
    closed = pb.PBClientFactory()
    reactor.connectTCP("127.0.0.1", closed_port, closed)
    d = closed.login(credentials.Anonymous())
    out("closed", (yield login_trap(d, error.UnhandledCredentials)))
    out("done")


if __name__ == "__main__":
    if sys.argv[1] == "login-server":
        login_serve(anonymous=sys.argv[2:] != ["closed"])
    elif sys.argv[1] == "login-client":
        run_client(login_scenario, int(sys.argv[2]), int(sys.argv[3]))
    elif sys.argv[1] == "paging-server":
        paging_serve()
    elif sys.argv[1] == "paging-client":
        run_client(paging_scenario, int(sys.argv[2]))
    elif sys.argv[1] == "server":
        serve(Root())
    else:
        run_client(scenario, int(sys.argv[2]))
