"""Real Twisted PB peers for two-process rewrites of Twisted's broker tests (a subprocess).

Each scenario is our own rewrite of what a class of Twisted's
``twisted/spread/test/test_pb.py`` exercises over one connection (new-style
copies and caches, BrokerTests, PagingTests, DisconnectionTests, security
options), run over TCP.
``serve <scenario>`` serves the scenario's root and prints a line for each
event the server sees; ``client <scenario> <port>`` plays the client and
prints what it sees.  tests/test_pb_broker_twisted.py runs each scenario
Twisted-to-Twisted and against trio_pb both ways (see peers.three_ways).
"""

from __future__ import annotations

import gc
import sys
import weakref

from twisted.internet import defer
from twisted.spread import jelly, pb
from twisted_runner import run_client, serve


def say(*words):
    print(*words, flush=True)


def error_words(exc):
    """A remote error as ``<class name>: <message>``, whatever module the class lives in."""
    return f"{exc.remoteType.decode().rsplit('.', 1)[-1]}: {exc.args[0]}"


# newstyle: a class that is both Copyable and RemoteCopy goes there and back
# (NewStyleTests: test_newStyle, test_alloc, test_newStyleWithKeywords).


class Tagged:
    tag = ""

    def getTypeToCopy(self):
        return self.tag.encode()


class NewStyleCopy(Tagged, pb.Copyable, pb.RemoteCopy):
    tag = "pbbroker.NewStyleCopy"

    def __init__(self, s):
        self.s = s


class Counted(Tagged, pb.Copyable, pb.RemoteCopy):
    tag = "pbbroker.Counted"
    allocated = 0
    initialized = 0
    value = 1

    def __new__(cls):
        Counted.allocated += 1
        inst = object.__new__(cls)
        inst.value = 2
        return inst

    def __init__(self):
        Counted.initialized += 1


pb.setUnjellyableForClass(NewStyleCopy.tag, NewStyleCopy)
pb.setUnjellyableForClass(Counted.tag, Counted)


class Echoer(pb.Root):
    def remote_echo(self, thing):
        return thing

    def remote_echoWithKeywords(self, thing, **kw):
        return (thing, kw)

    def remote_counts(self):
        return [Counted.allocated, Counted.initialized]


@defer.inlineCallbacks
def newstyle_client(factory):
    root = yield factory.getRootObject()
    orig = NewStyleCopy("value")
    res = yield root.callRemote("echo", orig)
    say("echo:", type(res).__name__, res.s, "a new object" if res is not orig else "the same object")
    res = yield root.callRemote("echoWithKeywords", NewStyleCopy("value1"), keyword1="one", keyword2="two")
    say("with keywords:", type(res).__name__, type(res[0]).__name__, res[0].s, sorted(res[1].items()))
    orig = Counted()
    say("before:", Counted.allocated, "allocated,", Counted.initialized, "initialized")
    res = yield root.callRemote("echo", orig)
    say("after:", type(res).__name__, "value", res.value, "new" if res is not orig else "same")
    say("client side:", Counted.allocated, "allocated,", Counted.initialized, "initialized")
    say("server side:", *(yield root.callRemote("counts")))


# cached: a class that is both Cacheable and RemoteCache, got twice over one
# connection, after the client sent one of its own (NewStyleCachedTests).


class NewStyleCacheCopy(Tagged, pb.Cacheable, pb.RemoteCache):
    tag = "pbbroker.NewStyleCacheCopy"

    def getStateToCacheAndObserveFor(self, perspective, observer):
        return self.__dict__


pb.setUnjellyableForClass(NewStyleCacheCopy.tag, NewStyleCacheCopy)


class CachedReturner(pb.Root):
    def __init__(self):
        self.cache = NewStyleCacheCopy()
        self.cache.s = "value"

    def remote_giveMeCache(self, theirs):
        say("given", type(theirs).__name__, theirs.s)
        return self.cache


@defer.inlineCallbacks
def cached_client(factory):
    root = yield factory.getRootObject()
    orig = NewStyleCacheCopy()
    orig.s = "mine"
    first = yield root.callRemote("giveMeCache", orig)
    say("first:", type(first).__name__, first.s, "a new object" if first is not orig else "the same object")
    again = yield root.callRemote("giveMeCache", orig)
    say("again:", type(again).__name__, again.s, "the same copy" if again is first else "another copy")


# cache: cached objects keep their identity, follow their master's changes,
# come back as the master, and are let go of when dropped (BrokerTests.test_cache).


class SimpleCache(Tagged, pb.Cacheable):
    tag = "pbbroker.SimpleCache"

    def getStateToCacheAndObserveFor(self, perspective, observer):
        return {"x": 1}

    def stoppedObserving(self, perspective, observer):
        say("SimpleCache stopped observing")


class SimpleLocalCache(pb.RemoteCache):
    def checkSelf(self):
        return self


class Complicated(Tagged, pb.Cacheable):
    tag = "pbbroker.Complicated"

    def __init__(self):
        self.x, self.y, self.foo = 1, 2, 3
        self.observer = None

    def setFoo4(self):
        self.foo = 4
        self.observer.callRemote("foo", 4)

    def getStateToCacheAndObserveFor(self, perspective, observer):
        self.observer = observer
        return {"x": self.x, "y": self.y, "foo": self.foo}

    def stoppedObserving(self, perspective, observer):
        say("Complicated stopped observing")
        if observer == self.observer:
            self.observer = None


class Baroque(pb.RemoteCache):
    def observe_foo(self, new_foo):
        self.foo = new_foo


pb.setUnjellyableForClass(SimpleCache.tag, SimpleLocalCache)
pb.setUnjellyableForClass(Complicated.tag, Baroque)


class CacheRoot(pb.Root):
    def __init__(self):
        self.x = SimpleCache()
        self.c = Complicated()

    def remote_getCache(self):
        return [self.x, self.x]

    def remote_putCache(self, cache):
        return cache is self.x

    def remote_getComplicated(self):
        return self.c

    def remote_setFoo4(self):
        self.c.setFoo4()

    def remote_observed(self):
        return self.c.observer is not None


@defer.inlineCallbacks
def cache_client(factory):
    root = yield factory.getRootObject()
    pair = yield root.callRemote("getCache")
    cp = pair[0]
    say("pair:", type(cp).__name__, cp.x, "one object" if pair[1] is cp else "two objects")
    say("checkSelf:", cp.checkSelf() is cp)
    complex1 = yield root.callRemote("getComplicated")
    complex2 = yield root.callRemote("getComplicated")
    say("complicated:", type(complex1).__name__, complex1.x, complex1.y, complex1.foo, complex2 is complex1)
    yield root.callRemote("setFoo4")
    say("foo after setFoo4:", complex1.foo)
    say("putCache is the master:", (yield root.callRemote("putCache", cp)))
    del pair, cp
    gc.collect()
    say("observed:", (yield root.callRemote("observed")))
    del complex1, complex2
    gc.collect()
    say("observed once dropped:", (yield root.callRemote("observed")))


# reference: objects passed as arguments come back as themselves
# (BrokerTests.test_reference).


class Catcher(pb.Referenceable):
    def remote_catch(self, arg):
        self.caught = arg


class Thrower(pb.Referenceable):
    def remote_throw(self, a, b):
        say("throwing", type(b).__name__, "to", type(a).__name__)
        return a.callRemote("catch", b)


class NamesRoot(pb.Root):
    """A root that names extra objects on every connection, as the Twisted tests do."""

    names = {}

    def rootObject(self, broker):
        self.broker = broker
        for name, make in self.names.items():
            broker.setNameForLocal(name, make())
        return self


class ReferenceRoot(NamesRoot):
    names = {"y": Thrower}


@defer.inlineCallbacks
def reference_client(factory):
    root = yield factory.getRootObject()
    y = root.broker.remoteForName("y")
    x, z = Catcher(), Catcher()
    yield y.callRemote("throw", x, z)
    say("x caught z:", getattr(x, "caught", None) is z)
    say("z caught nothing:", not hasattr(z, "caught"))


# result: either side names an object and the other calls it by name
# (BrokerTests.test_result).


class Thunk(pb.Referenceable):
    def __init__(self, who):
        self.who = who

    def remote_thunk(self, arg):
        say(self.who, "thunk given", arg)
        return arg + 1


class ResultRoot(NamesRoot):
    names = {"foo": lambda: Thunk("server")}

    def remote_callClient(self, arg):
        return self.broker.remoteForName("foo").callRemote("thunk", arg)


@defer.inlineCallbacks
def result_client(factory):
    root = yield factory.getRootObject()
    root.broker.setNameForLocal("foo", Thunk("client"))
    say("server's foo:", (yield root.broker.remoteForName("foo").callRemote("thunk", 7)))
    say("client's foo:", (yield root.callRemote("callClient", 9)))


# copy: a Copyable's state, and a copy made by a factory from its state
# (BrokerTests.test_copy, test_factoryCopy).


class SimpleCopy(Tagged, pb.Copyable):
    tag = "pbbroker.SimpleCopy"

    def __init__(self):
        self.x = 1
        self.y = {"Hello": "World"}
        self.z = ["test"]


class SimpleLocalCopy(pb.RemoteCopy):
    pass


class FactoryCopy(Tagged, pb.Copyable):
    tag = "pbbroker.FactoryCopy"

    def __init__(self, ident):
        self.id = ident


class FromFactory:
    pass


def make_from_state(state):
    say("factory given", sorted(state.items()))
    made = FromFactory()
    made.id = state["id"]
    return made


pb.setUnjellyableForClass(SimpleCopy.tag, SimpleLocalCopy)
jelly.setUnjellyableFactoryForClass(FactoryCopy.tag, make_from_state)


class CopyRoot(pb.Root):
    def remote_getCopy(self):
        return SimpleCopy()

    def remote_getFactory(self, value):
        return FactoryCopy(value)


@defer.inlineCallbacks
def copy_client(factory):
    root = yield factory.getRootObject()
    got = yield root.callRemote("getCopy")
    say("copy:", type(got).__name__, got.x, got.y["Hello"], got.z[0])
    got = yield root.callRemote("getFactory", 99)
    say("factory copy:", type(got).__name__, got.id)


# observe: a reference the server got twice compares equal, so the observer
# can unobserve itself (BrokerTests.test_observe).


class Observable(pb.Root):
    def __init__(self):
        self.observers = []

    def remote_observe(self, obs):
        self.observers.append(obs)

    def remote_unobserve(self, obs):
        self.observers.remove(obs)
        say("removed an observer,", len(self.observers), "left")

    def remote_notify(self, obj):
        say("notifying", len(self.observers), "observers of", obj)
        for observer in self.observers:
            observer.callRemote("notify", self, obj)


class Observer(pb.Referenceable):
    notified = 0
    obj = None

    def remote_notify(self, other, obj):
        self.obj = obj
        self.notified += 1
        other.callRemote("unobserve", self)


@defer.inlineCallbacks
def observe_client(factory):
    root = yield factory.getRootObject()
    b = Observer()
    yield root.callRemote("observe", b)
    yield root.callRemote("notify", 1)
    yield root.callRemote("notify", 10)
    say("notified", b.notified, "time(s), last with", b.obj)


# defer: the server answers later, once a second call fires what it waits for
# (BrokerTests.test_defer).


class DeferRoot(pb.Root):
    def remote_doItLater(self):
        say("doItLater waits")
        self.d = defer.Deferred()
        return self.d.addCallback(self.run_me)

    def run_me(self, arg):
        say("run with", arg)
        return arg + 1

    def remote_fire(self, arg):
        say("fire", arg)
        self.d.callback(arg)
        return "fired"


@defer.inlineCallbacks
def defer_client(factory):
    root = yield factory.getRootObject()
    later = root.callRemote("doItLater")
    fired = yield root.callRemote("fire", 5)
    say("fire answered:", fired)
    say("doItLater answered:", (yield later))


# refcount: a reference the client drops is forgotten by the server
# (BrokerTests.test_refcount).


class RefcountRoot(pb.Root):
    def __init__(self):
        self.given = []

    def remote_getSimple(self):
        simple = Thunk("server")
        self.given.append(weakref.ref(simple))
        return simple

    def remote_alive(self):
        gc.collect()
        return sum(1 for ref in self.given if ref() is not None)


@defer.inlineCallbacks
def refcount_client(factory):
    root = yield factory.getRootObject()
    simple = yield root.callRemote("getSimple")
    say("thunk:", (yield simple.callRemote("thunk", 1)))
    say("alive while held:", (yield root.callRemote("alive")))
    del simple
    gc.collect()
    say("alive once dropped:", (yield root.callRemote("alive")))


# badserial: a Copyable that cannot give its state fails the call on the
# sender's side and the connection goes on (DisconnectionTests.test_badSerialization).


class FreakOut(Exception):
    pass


class BadCopyable(pb.Copyable):
    def getStateToCopyFor(self, perspective):
        raise FreakOut("no state for you")


class BadCopySet(pb.Root):
    def remote_setBadCopy(self, bc):
        say("setBadCopy ran")

    def remote_ping(self):
        return "pong"


@defer.inlineCallbacks
def badserial_client(factory):
    root = yield factory.getRootObject()
    try:
        yield root.callRemote("setBadCopy", BadCopyable())
    except FreakOut as exc:
        say("the call failed with", type(exc).__name__, exc)
    say("then:", (yield root.callRemote("ping")))


# disconnect: callbacks given to notifyOnDisconnect run when the connection
# ends, those taken back with dontNotifyOnDisconnect do not
# (DisconnectionTests.test_disconnection).


class DisconnectRoot(NamesRoot):
    names = {"o": lambda: Thunk("server")}


@defer.inlineCallbacks
def disconnect_client(factory):
    root = yield factory.getRootObject()
    broker = root.broker
    r = broker.remoteForName("o")
    say("thunk:", (yield r.callRemote("thunk", 1)))

    def never(*args):
        say("FAILED: a callback taken back ran")

    broker.notifyOnDisconnect(never)
    broker.dontNotifyOnDisconnect(never)
    r.notifyOnDisconnect(never)
    r.dontNotifyOnDisconnect(never)
    lost = defer.Deferred()
    broker.notifyOnDisconnect(lambda: say("the broker's callback ran"))
    r.notifyOnDisconnect(lambda ref: lost.callback(ref))
    factory.disconnect()
    ref = yield lost
    say("the reference's callback ran, given", "that reference" if ref is r else "something else")


# security: the security options given to a factory are its brokers' own; the
# server's let in one plain class and refuse another, the client's let in both,
# where the global options refuse them (PBWithSecurityOptionsTests).  The
# classes are found by module name, so both sides import them from this module.


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y


class Other:
    pass


class Strict(pb.Root):
    def remote_take(self, thing):
        say("took", type(thing).__name__, thing.x, thing.y)
        return "taken"

    def remote_give(self):
        return Point(3, 4)

    def remote_ping(self):
        return "pong"


def allowing(*classes):
    options = jelly.SecurityOptions()
    options.allowInstancesOf(*classes)
    return options


@defer.inlineCallbacks
def security_client(factory):
    root = yield factory.getRootObject()
    say("take:", (yield root.callRemote("take", Point(1, 2))))
    got = yield root.callRemote("give")
    say("give:", type(got).__name__, got.x, got.y)
    try:
        yield root.callRemote("take", Other())
        say("FAILED: the server took it")
    except pb.RemoteError as exc:
        say("refused:", error_words(exc))
    say("then:", (yield root.callRemote("ping")))


# paging: string and file pagers, with and without a callback given arguments
# (PagingTests).

BIG = b"helloworld" * 50


def finished(*args, **kw):
    say("pager finished:", args, sorted(kw.items()))


class Pagerizer(pb.Root):
    def remote_getPages(self, collector, with_callback):
        from twisted.spread import util

        if with_callback:
            util.StringPager(collector, BIG, 100, finished, "hello", value=10)
        else:
            util.StringPager(collector, BIG, 100)

    def remote_getFile(self, collector, empty):
        import io

        from twisted.spread import util

        util.FilePager(collector, io.BytesIO(b"" if empty else BIG), finished, "frodo", value=9)

    def remote_done(self):
        return "done"


@defer.inlineCallbacks
def paging_client(factory):
    from twisted.spread import util

    root = yield factory.getRootObject()
    for with_callback in (True, False):
        pages = yield util.getAllPages(root, "getPages", with_callback)
        say("string pages:", len(pages), b"".join(pages) == BIG)
    for empty in (False, True):
        pages = yield util.getAllPages(root, "getFile", empty)
        say("file pages:", len(pages), b"".join(pages) == (b"" if empty else BIG))
    say((yield root.callRemote("done")))


# Scenarios that share a run: each pairing starts processes, which takes
# longer than the calls.


class CopiesRoot(Echoer, CopyRoot):
    pass


class NamedRoot(ReferenceRoot, ResultRoot):
    names = {**ReferenceRoot.names, **ResultRoot.names}


class CountsRoot(CacheRoot, RefcountRoot):
    def __init__(self):
        CacheRoot.__init__(self)
        RefcountRoot.__init__(self)


class DisconnectionRoot(DisconnectRoot, BadCopySet):
    pass


class CallsRoot(Observable, DeferRoot):
    pass


def one_after_another(*clients):
    @defer.inlineCallbacks
    def client(factory):
        for part in clients:
            yield part(factory)

    return client


SCENARIOS = {
    "copies": (CopiesRoot, one_after_another(newstyle_client, copy_client)),
    "cached": (CachedReturner, cached_client),
    "counts": (CountsRoot, one_after_another(cache_client, refcount_client)),
    "names": (NamedRoot, one_after_another(reference_client, result_client)),
    "calls": (CallsRoot, one_after_another(observe_client, defer_client)),
    "disconnection": (DisconnectionRoot, one_after_another(badserial_client, disconnect_client)),
    "security": (Strict, security_client),
    "paging": (Pagerizer, paging_client),
}


def main(mode, scenario, *args):
    root, client = SCENARIOS[scenario]
    if mode == "serve":
        if scenario == "security":
            serve(root(), security=allowing(Point))
        else:
            serve(root())
    else:
        from twisted.internet import reactor

        if scenario == "security":
            factory = pb.PBClientFactory(security=allowing(Point, Other))
        else:
            factory = pb.PBClientFactory()
        reactor.connectTCP("127.0.0.1", int(args[0]), factory)
        run_client(client, factory)


if __name__ == "__main__":
    # Run as this module, not as __main__, so that the classes the security
    # scenario sends plainly have a module name the test process can import too.
    import twisted_pb_broker_peer

    twisted_pb_broker_peer.main(*sys.argv[1:])
