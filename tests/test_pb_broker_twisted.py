"""Two-process rewrites of Twisted's broker tests (test_pb.py), run three ways by peers.three_ways.

Each scenario's Twisted side is in twisted_pb_broker_peer.py; here is its
trio_pb port, written as a porting user would, and the transcript all three
pairings must give (peers.three_ways).
"""

from __future__ import annotations

import gc
import io
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio.testing
from peers import three_ways
from twisted_pb_broker_peer import Other, Point

from trio_pb import (
    Broker,
    Cacheable,
    Copyable,
    InsecureJelly,
    PBServerFactory,
    Referenceable,
    RemoteCache,
    RemoteCacheObserver,
    RemoteCopy,
    RemoteError,
    RemoteReference,
    Root,
    SecurityOptions,
    get_all_pages,
    open_tcp_broker,
    set_unjellyable_factory_for_class,
    set_unjellyable_for_class,
)
from trio_pb.paging import FilePager, StringPager
from trio_pb.testing import open_broker_pair

PEER = "twisted_pb_broker_peer.py"

Say = Callable[..., None]


def sayer(lines: list[str]) -> Say:
    """``say(*words)`` appends the words as one line, as the peer's ``say`` prints them."""
    return lambda *words: lines.append(" ".join(str(word) for word in words))


def error_words(exc: RemoteError) -> str:
    """A remote error as ``<class name>: <message>``, like the peer's ``error_words``."""
    return f"{exc.remote_type.decode().rsplit('.', 1)[-1]}: {exc.value}"


# newstyle: a class that is both Copyable and RemoteCopy goes there and back.


class NewStyleCopy(Copyable, RemoteCopy):
    def __init__(self, s: str) -> None:
        self.s = s

    def get_type_to_copy(self) -> bytes:
        return b"pbbroker.NewStyleCopy"


class Counted(Copyable, RemoteCopy):
    allocated = 0
    initialized = 0
    value = 1

    def __new__(cls) -> Counted:
        Counted.allocated += 1
        inst = object.__new__(cls)
        inst.value = 2
        return inst

    def __init__(self) -> None:
        Counted.initialized += 1

    def get_type_to_copy(self) -> bytes:
        return b"pbbroker.Counted"


set_unjellyable_for_class(b"pbbroker.NewStyleCopy", NewStyleCopy)
set_unjellyable_for_class(b"pbbroker.Counted", Counted)


def reset_counts() -> None:
    Counted.allocated = Counted.initialized = 0


class Echoer(Root):
    def __init__(self, saw: list[str]) -> None:
        reset_counts()

    def remote_echo(self, thing: Any) -> Any:
        return thing

    def remote_echoWithKeywords(self, thing: Any, **kw: Any) -> Any:
        return (thing, kw)

    def remote_counts(self) -> list[int]:
        return [Counted.allocated, Counted.initialized]


async def newstyle_client(port: int) -> list[str]:
    lines: list[str] = []
    say = sayer(lines)
    reset_counts()
    async with open_tcp_broker("127.0.0.1", port) as broker:
        root = await broker.root_object()
        orig: Any = NewStyleCopy("value")
        res = await root.call_remote("echo", orig)
        say("echo:", type(res).__name__, res.s, "a new object" if res is not orig else "the same object")
        res = await root.call_remote(
            "echoWithKeywords", NewStyleCopy("value1"), keyword1="one", keyword2="two"
        )
        say("with keywords:", type(res).__name__, type(res[0]).__name__, res[0].s, sorted(res[1].items()))
        orig = Counted()
        say("before:", Counted.allocated, "allocated,", Counted.initialized, "initialized")
        res = await root.call_remote("echo", orig)
        say("after:", type(res).__name__, "value", res.value, "new" if res is not orig else "same")
        say("client side:", Counted.allocated, "allocated,", Counted.initialized, "initialized")
        say("server side:", *(await root.call_remote("counts")))
    return lines


# cached: a class that is both Cacheable and RemoteCache, got twice over one
# connection, after the client sent one of its own.


class NewStyleCacheCopy(Cacheable, RemoteCache):
    s: str

    def get_type_to_copy(self) -> bytes:
        return b"pbbroker.NewStyleCacheCopy"

    def get_state_to_cache_and_observe_for(self, perspective: Any, observer: RemoteCacheObserver) -> Any:
        return {"s": self.s}


set_unjellyable_for_class(b"pbbroker.NewStyleCacheCopy", NewStyleCacheCopy)


class CachedReturner(Root):
    def __init__(self, saw: list[str]) -> None:
        self.say = sayer(saw)
        self.cache = NewStyleCacheCopy()
        self.cache.s = "value"

    def remote_giveMeCache(self, theirs: NewStyleCacheCopy) -> NewStyleCacheCopy:
        self.say("given", type(theirs).__name__, theirs.s)
        return self.cache


async def cached_client(port: int) -> list[str]:
    lines: list[str] = []
    say = sayer(lines)
    async with open_tcp_broker("127.0.0.1", port) as broker:
        root = await broker.root_object()
        orig = NewStyleCacheCopy()
        orig.s = "mine"
        first = await root.call_remote("giveMeCache", orig)
        say(
            "first:",
            type(first).__name__,
            first.s,
            "a new object" if first is not orig else "the same object",
        )
        again = await root.call_remote("giveMeCache", orig)
        say("again:", type(again).__name__, again.s, "the same copy" if again is first else "another copy")
    return lines


async def test_cached_a_two_flavour_cacheable_got_twice() -> None:
    """NewStyleCachedTests.test_newStyleCache."""
    seen = await three_ways(PEER, "cached", CachedReturner, cached_client)
    assert seen.client == [
        "first: NewStyleCacheCopy value a new object",
        "again: NewStyleCacheCopy value another copy",
    ]
    assert seen.server == ["given NewStyleCacheCopy mine"] * 2


# cache: cached objects keep their identity, follow their master's changes,
# come back as the master, and are let go of when dropped.


class SimpleCache(Cacheable):
    def __init__(self, say: Say) -> None:
        self.say = say

    def get_type_to_copy(self) -> bytes:
        return b"pbbroker.SimpleCache"

    def get_state_to_cache_and_observe_for(self, perspective: Any, observer: RemoteCacheObserver) -> Any:
        return {"x": 1}

    def stopped_observing(self, perspective: Any, observer: RemoteCacheObserver) -> None:
        self.say("SimpleCache stopped observing")


class SimpleLocalCache(RemoteCache):
    def checkSelf(self) -> SimpleLocalCache:
        return self


class Complicated(Cacheable):
    def __init__(self, say: Say) -> None:
        self.say = say
        self.x, self.y, self.foo = 1, 2, 3
        self.observer: RemoteCacheObserver | None = None

    def get_type_to_copy(self) -> bytes:
        return b"pbbroker.Complicated"

    def set_foo4(self) -> None:
        self.foo = 4
        assert self.observer is not None
        self.observer.call_remote_no_answer("foo", 4)

    def get_state_to_cache_and_observe_for(self, perspective: Any, observer: RemoteCacheObserver) -> Any:
        self.observer = observer
        return {"x": self.x, "y": self.y, "foo": self.foo}

    def stopped_observing(self, perspective: Any, observer: RemoteCacheObserver) -> None:
        self.say("Complicated stopped observing")
        if observer == self.observer:
            self.observer = None


class Baroque(RemoteCache):
    def observe_foo(self, new_foo: int) -> None:
        self.foo = new_foo


set_unjellyable_for_class(b"pbbroker.SimpleCache", SimpleLocalCache)
set_unjellyable_for_class(b"pbbroker.Complicated", Baroque)


class CacheRoot(Root):
    def __init__(self, saw: list[str]) -> None:
        self.x = SimpleCache(sayer(saw))
        self.c = Complicated(sayer(saw))

    def remote_getCache(self) -> list[SimpleCache]:
        return [self.x, self.x]

    def remote_putCache(self, cache: Any) -> bool:
        return cache is self.x

    def remote_getComplicated(self) -> Complicated:
        return self.c

    def remote_setFoo4(self) -> None:
        self.c.set_foo4()

    def remote_observed(self) -> bool:
        return self.c.observer is not None


async def cache_client(port: int) -> list[str]:
    lines: list[str] = []
    say = sayer(lines)
    async with open_tcp_broker("127.0.0.1", port) as broker:
        root = await broker.root_object()
        pair = await root.call_remote("getCache")
        cp = pair[0]
        say("pair:", type(cp).__name__, cp.x, "one object" if pair[1] is cp else "two objects")
        say("checkSelf:", cp.checkSelf() is cp)
        complex1 = await root.call_remote("getComplicated")
        complex2 = await root.call_remote("getComplicated")
        say(
            "complicated:",
            type(complex1).__name__,
            complex1.x,
            complex1.y,
            complex1.foo,
            complex2 is complex1,
        )
        await root.call_remote("setFoo4")
        say("foo after setFoo4:", complex1.foo)
        say("putCache is the master:", await root.call_remote("putCache", cp))
        del pair, cp
        gc.collect()
        say("observed:", await root.call_remote("observed"))
        del complex1, complex2
        gc.collect()
        say("observed once dropped:", await root.call_remote("observed"))
    return lines


# reference: objects passed as arguments come back as themselves.


class Catcher(Referenceable):
    def remote_catch(self, arg: Any) -> None:
        self.caught = arg


class Thrower(Referenceable):
    def __init__(self, say: Say) -> None:
        self.say = say

    async def remote_throw(self, a: RemoteReference, b: RemoteReference) -> Any:
        self.say("throwing", type(b).__name__, "to", type(a).__name__)
        return await a.call_remote("catch", b)


class NamesRoot(Root):
    """A root that names extra objects on every connection, as the Twisted tests do."""

    def __init__(self, saw: list[str]) -> None:
        self.say = sayer(saw)

    def names(self) -> dict[str, Any]:
        return {}

    def root_object(self, broker: Any) -> Referenceable:
        self.broker = broker
        for name, obj in self.names().items():
            broker.set_name_for_local(name, obj)
        return self


class ReferenceRoot(NamesRoot):
    def names(self) -> dict[str, Any]:
        return {"y": Thrower(self.say)}


async def reference_client(port: int) -> list[str]:
    lines: list[str] = []
    say = sayer(lines)
    async with open_tcp_broker("127.0.0.1", port) as broker:
        y = broker.remote_for_name("y")
        x, z = Catcher(), Catcher()
        await y.call_remote("throw", x, z)
        say("x caught z:", getattr(x, "caught", None) is z)
        say("z caught nothing:", not hasattr(z, "caught"))
    return lines


# result: either side names an object and the other calls it by name.


class Thunk(Referenceable):
    def __init__(self, who: str, say: Say) -> None:
        self.who, self.say = who, say

    def remote_thunk(self, arg: int) -> int:
        self.say(self.who, "thunk given", arg)
        return arg + 1


class ResultRoot(NamesRoot):
    def names(self) -> dict[str, Any]:
        return {"foo": Thunk("server", self.say)}

    async def remote_callClient(self, arg: int) -> Any:
        return await self.broker.remote_for_name("foo").call_remote("thunk", arg)


async def result_client(port: int) -> list[str]:
    lines: list[str] = []
    say = sayer(lines)
    async with open_tcp_broker("127.0.0.1", port) as broker:
        broker.set_name_for_local("foo", Thunk("client", say))
        say("server's foo:", await broker.remote_for_name("foo").call_remote("thunk", 7))
        say("client's foo:", await (await broker.root_object()).call_remote("callClient", 9))
    return lines


# copy: a Copyable's state, and a copy made by a factory from its state.


class SimpleCopy(Copyable):
    def __init__(self) -> None:
        self.x = 1
        self.y = {"Hello": "World"}
        self.z = ["test"]

    def get_type_to_copy(self) -> bytes:
        return b"pbbroker.SimpleCopy"


class SimpleLocalCopy(RemoteCopy):
    pass


class FactoryCopy(Copyable):
    def __init__(self, ident: int) -> None:
        self.id = ident

    def get_type_to_copy(self) -> bytes:
        return b"pbbroker.FactoryCopy"


class FromFactory:
    def __init__(self, ident: int) -> None:
        self.id = ident


# What the client's factory saw; a process-wide registry calls a process-wide function.
FACTORY_SAW: list[str] = []


def make_from_state(state: dict[str, Any]) -> FromFactory:
    FACTORY_SAW.append(f"factory given {sorted(state.items())}")
    return FromFactory(state["id"])


set_unjellyable_for_class(b"pbbroker.SimpleCopy", SimpleLocalCopy)
set_unjellyable_factory_for_class(b"pbbroker.FactoryCopy", make_from_state)


class CopyRoot(Root):
    def __init__(self, saw: list[str]) -> None:
        pass

    def remote_getCopy(self) -> SimpleCopy:
        return SimpleCopy()

    def remote_getFactory(self, value: int) -> FactoryCopy:
        return FactoryCopy(value)


async def copy_client(port: int) -> list[str]:
    lines: list[str] = FACTORY_SAW
    lines.clear()
    say = sayer(lines)
    async with open_tcp_broker("127.0.0.1", port) as broker:
        root = await broker.root_object()
        got = await root.call_remote("getCopy")
        say("copy:", type(got).__name__, got.x, got.y["Hello"], got.z[0])
        got = await root.call_remote("getFactory", 99)
        say("factory copy:", type(got).__name__, got.id)
    return list(lines)


# observe: a reference the server got twice compares equal, so the observer
# can unobserve itself.


class Observable(Root):
    def __init__(self, saw: list[str]) -> None:
        self.say = sayer(saw)
        self.observers: list[RemoteReference] = []

    def remote_observe(self, obs: RemoteReference) -> None:
        self.observers.append(obs)

    def remote_unobserve(self, obs: RemoteReference) -> None:
        self.observers.remove(obs)
        self.say("removed an observer,", len(self.observers), "left")

    def remote_notify(self, obj: Any) -> None:
        self.say("notifying", len(self.observers), "observers of", obj)
        for observer in self.observers:
            observer.call_remote_no_answer("notify", self, obj)


class Observer(Referenceable):
    notified = 0
    obj = None

    def remote_notify(self, other: RemoteReference, obj: Any) -> None:
        self.obj = obj
        self.notified += 1
        other.call_remote_no_answer("unobserve", self)


async def observe_client(port: int) -> list[str]:
    async with open_tcp_broker("127.0.0.1", port) as broker:
        root = await broker.root_object()
        b = Observer()
        await root.call_remote("observe", b)
        await root.call_remote("notify", 1)
        await root.call_remote("notify", 10)
    return [f"notified {b.notified} time(s), last with {b.obj}"]


# defer: the server answers later, once a second call fires what it waits for.


class DeferRoot(Root):
    def __init__(self, saw: list[str]) -> None:
        self.say = sayer(saw)
        self.fired = trio.Event()
        self.arg = 0

    def remote_doItLater(self) -> Awaitable[int]:
        # Twisted's method returns a Deferred: a plain method returning an
        # awaitable runs in order, as it does, where an ``async def`` method
        # would start as a task, after the calls that follow it.
        self.say("doItLater waits")
        return self.run_me()

    async def run_me(self) -> int:
        await self.fired.wait()
        self.say("run with", self.arg)
        return self.arg + 1

    def remote_fire(self, arg: int) -> str:
        self.say("fire", arg)
        self.arg = arg
        self.fired.set()
        return "fired"


async def defer_client(port: int) -> list[str]:
    lines: list[str] = []
    say = sayer(lines)
    answers: list[Any] = []
    async with open_tcp_broker("127.0.0.1", port) as broker:
        root = await broker.root_object()
        async with trio.open_nursery() as nursery:

            async def later() -> None:
                answers.append(await root.call_remote("doItLater"))

            nursery.start_soon(later)
            # Let the first call go out before the second (start_soon does not run it yet).
            await trio.testing.wait_all_tasks_blocked()
            say("fire answered:", await root.call_remote("fire", 5))
        say("doItLater answered:", answers[0])
    return lines


# refcount: a reference the client drops is forgotten by the server.


class RefcountRoot(Root):
    def __init__(self, saw: list[str]) -> None:
        self.say = sayer(saw)
        self.given: list[weakref.ref[Thunk]] = []

    def remote_getSimple(self) -> Thunk:
        simple = Thunk("server", self.say)
        self.given.append(weakref.ref(simple))
        return simple

    def remote_alive(self) -> int:
        gc.collect()
        return sum(1 for ref in self.given if ref() is not None)


async def refcount_client(port: int) -> list[str]:
    lines: list[str] = []
    say = sayer(lines)
    async with open_tcp_broker("127.0.0.1", port) as broker:
        root = await broker.root_object()
        simple = await root.call_remote("getSimple")
        say("thunk:", await simple.call_remote("thunk", 1))
        say("alive while held:", await root.call_remote("alive"))
        del simple
        gc.collect()
        say("alive once dropped:", await root.call_remote("alive"))
    return lines


# badserial: a Copyable that cannot give its state fails the call on the
# sender's side and the connection goes on.


class FreakOut(Exception):
    pass


class BadCopyable(Copyable):
    def get_state_to_copy_for(self, perspective: Any) -> Any:
        raise FreakOut("no state for you")


class BadCopySet(Root):
    def __init__(self, saw: list[str]) -> None:
        self.say = sayer(saw)

    def remote_setBadCopy(self, bc: Any) -> None:
        self.say("setBadCopy ran")

    def remote_ping(self) -> str:
        return "pong"


async def badserial_client(port: int) -> list[str]:
    lines: list[str] = []
    say = sayer(lines)
    async with open_tcp_broker("127.0.0.1", port) as broker:
        root = await broker.root_object()
        try:
            await root.call_remote("setBadCopy", BadCopyable())
        except FreakOut as exc:
            say("the call failed with", type(exc).__name__, exc)
        say("then:", await root.call_remote("ping"))
    return lines


# disconnect: callbacks given to notify_on_disconnect run when the connection
# ends, those taken back with dont_notify_on_disconnect do not.


class DisconnectRoot(NamesRoot):
    def names(self) -> dict[str, Any]:
        return {"o": Thunk("server", self.say)}


async def disconnect_client(port: int) -> list[str]:
    lines: list[str] = []
    say = sayer(lines)
    given: list[Any] = []
    broker: Broker
    async with open_tcp_broker("127.0.0.1", port) as broker:
        r = broker.remote_for_name("o")
        say("thunk:", await r.call_remote("thunk", 1))

        def never(*args: Any) -> None:
            say("FAILED: a callback taken back ran")

        broker.notify_on_disconnect(never)
        broker.dont_notify_on_disconnect(never)
        r.notify_on_disconnect(never)
        r.dont_notify_on_disconnect(never)
        broker.notify_on_disconnect(lambda: say("the broker's callback ran"))
        r.notify_on_disconnect(given.append)
    say("the reference's callback ran, given", "that reference" if given == [r] else "something else")
    return lines


# security: the security options given to a factory are its brokers' own.


class Strict(Root):
    def __init__(self, say: Say) -> None:
        self.say = say

    def remote_take(self, thing: Any) -> str:
        self.say("took", type(thing).__name__, thing.x, thing.y)
        return "taken"

    def remote_give(self) -> Point:
        return Point(3, 4)

    def remote_ping(self) -> str:
        return "pong"


def allowing(*classes: type) -> SecurityOptions:
    options = SecurityOptions()
    options.allow_instances_of(*classes)
    return options


def strict_server(saw: list[str]) -> PBServerFactory:
    return PBServerFactory(Strict(sayer(saw)), security=allowing(Point))


async def security_client(port: int) -> list[str]:
    lines: list[str] = []
    say = sayer(lines)
    async with open_tcp_broker("127.0.0.1", port, security=allowing(Point, Other)) as broker:
        root = await broker.root_object()
        say("take:", await root.call_remote("take", Point(1, 2)))
        got = await root.call_remote("give")
        say("give:", type(got).__name__, got.x, got.y)
        try:
            await root.call_remote("take", Other())
            say("FAILED: the server took it")
        except InsecureJelly as exc:
            # trio_pb raises its own errors, Twisted's too, as themselves.
            say("refused:", f"{type(exc).__name__}: {exc}")
        say("then:", await root.call_remote("ping"))
    return lines


async def test_security_options_of_the_factories() -> None:
    """PBWithSecurityOptionsTests: each factory's security options are its brokers'."""
    seen = await three_ways(PEER, "security", strict_server, security_client)
    assert seen.client == [
        "take: taken",
        "give: Point 3 4",
        "refused: InsecureJelly: Class twisted_pb_broker_peer.Other not allowed.",
        "then: pong",
    ]
    assert seen.server == ["took Point 1 2"]


# paging: string and file pagers, with and without a callback given arguments.

BIG = b"helloworld" * 50


class Pagerizer(Root):
    def __init__(self, saw: list[str]) -> None:
        self.say = sayer(saw)

    def finished(self, *args: Any, **kw: Any) -> None:
        self.say("pager finished:", args, sorted(kw.items()))

    async def remote_getPages(self, collector: RemoteReference, with_callback: bool) -> None:
        if with_callback:
            await StringPager(collector, BIG, 100, self.finished, "hello", value=10).run()
        else:
            await StringPager(collector, BIG, 100).run()

    async def remote_getFile(self, collector: RemoteReference, empty: bool) -> None:
        await FilePager(collector, io.BytesIO(b"" if empty else BIG), self.finished, "frodo", value=9).run()

    def remote_done(self) -> str:
        return "done"


async def paging_client(port: int) -> list[str]:
    lines: list[str] = []
    say = sayer(lines)
    async with open_tcp_broker("127.0.0.1", port) as broker:
        root = await broker.root_object()
        for with_callback in (True, False):
            pages = await get_all_pages(root, "getPages", with_callback)
            say("string pages:", len(pages), b"".join(pages) == BIG)
        for empty in (False, True):
            pages = await get_all_pages(root, "getFile", empty)
            say("file pages:", len(pages), b"".join(pages) == (b"" if empty else BIG))
        say(await root.call_remote("done"))
    return lines


async def test_paging_strings_and_files_with_callbacks() -> None:
    """PagingTests: paging with and without a callback, file paging, an empty file."""
    seen = await three_ways(PEER, "paging", Pagerizer, paging_client)
    assert seen.client == [
        "string pages: 5 True",
        "string pages: 5 True",
        # The file is smaller than a file pager's chunk: one page.
        "file pages: 1 True",
        "file pages: 0 True",
        "done",
    ]
    assert seen.server == [
        "pager finished: ('hello',) [('value', 10)]",
        "pager finished: ('frodo',) [('value', 9)]",
        "pager finished: ('frodo',) [('value', 9)]",
    ]


# Scenarios that share a run (each pairing starts processes, which takes
# longer than the calls): the Twisted client plays the parts over one
# connection, the trio_pb one over one connection each.


def one_after_another(
    *clients: Callable[[int], Awaitable[list[str]]],
) -> Callable[[int], Awaitable[list[str]]]:
    async def client(port: int) -> list[str]:
        lines: list[str] = []
        for part in clients:
            lines += await part(port)
        return lines

    return client


class CopiesRoot(Echoer, CopyRoot):
    pass


async def test_copies_new_style_plain_and_by_factory() -> None:
    """NewStyleTests: test_newStyle, test_alloc, ...WithKeywords; BrokerTests.test_copy, test_factoryCopy."""
    seen = await three_ways(PEER, "copies", CopiesRoot, one_after_another(newstyle_client, copy_client))
    assert seen.client == [
        "echo: NewStyleCopy value a new object",
        "with keywords: tuple NewStyleCopy value1 [('keyword1', 'one'), ('keyword2', 'two')]",
        "before: 1 allocated, 1 initialized",
        # Each copy is made with the class's __new__, never its __init__.
        "after: Counted value 2 new",
        "client side: 2 allocated, 1 initialized",
        "server side: 1 0",
        "copy: SimpleLocalCopy 1 World test",
        "factory given [('id', 99)]",
        "factory copy: FromFactory 99",
    ]
    assert seen.server == []


class CountsRoot(CacheRoot, RefcountRoot):
    def __init__(self, saw: list[str]) -> None:
        CacheRoot.__init__(self, saw)
        RefcountRoot.__init__(self, saw)


async def test_counts_cache_identity_updates_and_release() -> None:
    """BrokerTests.test_cache and test_refcount."""
    seen = await three_ways(PEER, "counts", CountsRoot, one_after_another(cache_client, refcount_client))
    assert seen.client == [
        "pair: SimpleLocalCache 1 one object",
        "checkSelf: True",
        # Each answer that holds a cached object gives a new object sharing the first's state.
        "complicated: Baroque 1 2 3 False",
        "foo after setFoo4: 4",
        "putCache is the master: True",
        "observed: True",
        "observed once dropped: False",
        "thunk: 2",
        "alive while held: 1",
        "alive once dropped: 0",
    ]
    assert seen.server == [
        "SimpleCache stopped observing",
        "Complicated stopped observing",
        "server thunk given 1",
    ]


class NamedRoot(ReferenceRoot, ResultRoot):
    def names(self) -> dict[str, Any]:
        return {**ReferenceRoot.names(self), **ResultRoot.names(self)}


async def test_names_references_come_back_and_results_either_way() -> None:
    """BrokerTests.test_reference and test_result."""
    seen = await three_ways(PEER, "names", NamedRoot, one_after_another(reference_client, result_client))
    assert seen.client == [
        "x caught z: True",
        "z caught nothing: True",
        "server's foo: 8",
        "client thunk given 9",
        "client's foo: 10",
    ]
    assert seen.server == ["throwing RemoteReference to RemoteReference", "server thunk given 7"]


class DisconnectionRoot(DisconnectRoot, BadCopySet):
    pass


async def test_disconnection_bad_serialization_and_callbacks() -> None:
    """DisconnectionTests.test_badSerialization and test_disconnection."""
    seen = await three_ways(
        PEER, "disconnection", DisconnectionRoot, one_after_another(badserial_client, disconnect_client)
    )
    assert seen.client == [
        "the call failed with FreakOut no state for you",
        "then: pong",
        "thunk: 2",
        "the broker's callback ran",
        "the reference's callback ran, given that reference",
    ]
    assert seen.server == ["server thunk given 1"]


class CallsRoot(Observable, DeferRoot):
    def __init__(self, saw: list[str]) -> None:
        Observable.__init__(self, saw)
        DeferRoot.__init__(self, saw)


async def test_calls_observe_unobserve_and_a_deferred_answer() -> None:
    """BrokerTests.test_observe and test_defer."""
    seen = await three_ways(PEER, "calls", CallsRoot, one_after_another(observe_client, defer_client))
    assert seen.client == ["notified 1 time(s), last with 1", "fire answered: fired", "doItLater answered: 6"]
    assert seen.server == [
        "notifying 1 observers of 1",
        "removed an observer, 0 left",
        "notifying 0 observers of 10",
        "doItLater waits",
        "fire 5",
        "run with 5",
    ]


# The fix the refcount scenario needed, between two trio_pb brokers: what the
# garbage collector releases goes out before the next call, as in Twisted.


class Shared(Cacheable):
    def get_type_to_copy(self) -> bytes:
        return b"pbbroker.Shared"

    def get_state_to_cache_and_observe_for(self, perspective: Any, observer: RemoteCacheObserver) -> Any:
        return {}


class SharedCopy(RemoteCache):
    pass


set_unjellyable_for_class(b"pbbroker.Shared", SharedCopy)


class GCRoot(RefcountRoot):
    def __init__(self) -> None:
        super().__init__([])
        self.shared = Shared()

    def remote_getShared(self) -> Shared:
        return self.shared

    def remote_observers(self) -> int:
        return len(self.shared.observers)


async def test_a_collected_reference_is_released_before_the_next_call() -> None:
    """The release a collected RemoteReference queues reaches the peer before a later call."""
    async with open_broker_pair(GCRoot()) as (client, _):
        root = await client.root_object()
        simple = await root.call_remote("getSimple")
        assert await root.call_remote("alive") == 1
        del simple
        gc.collect()
        assert await root.call_remote("alive") == 0


async def test_a_collected_cache_copy_is_released_before_the_next_call() -> None:
    """The release a collected RemoteCache copy queues reaches the peer before a later call."""
    async with open_broker_pair(GCRoot()) as (client, _):
        root = await client.root_object()
        shared = await root.call_remote("getShared")
        assert await root.call_remote("observers") == 1
        del shared
        gc.collect()
        assert await root.call_remote("observers") == 0
