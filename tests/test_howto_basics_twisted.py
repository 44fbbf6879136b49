"""The basic listings of Twisted's PB how-to, three ways: Twisted alone, and against trio_pb both ways.

Each scenario's Twisted side is in twisted_howto_basics_peer.py; here is its
trio_pb port, written as a porting user would, and the transcript all three
pairings must give (peers.three_ways).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from peers import three_ways

from trio_pb import (
    Broker,
    DeadReferenceError,
    Error,
    InsecureJelly,
    Referenceable,
    RemoteError,
    Root,
    open_tcp_broker,
    register_error,
)

PEER = "twisted_howto_basics_peer.py"


# pb1: the root hands out a second object, the client calls it without waiting.


class Two(Referenceable):
    def __init__(self, saw: list[str]) -> None:
        self.saw = saw

    def remote_three(self, arg: int) -> None:
        self.saw.append(f"Two.three was given {arg}")


class One(Root):
    def __init__(self, saw: list[str]) -> None:
        self.saw = saw

    def remote_getTwo(self) -> Two:
        self.saw.append("returning a Two")
        return Two(self.saw)

    def remote_done(self) -> str:
        return "done"


async def pb1_client(port: int) -> list[str]:
    saw = []
    async with open_tcp_broker("127.0.0.1", port) as broker:
        one = await broker.root_object()
        saw.append("got first object: RemoteReference")
        two = await one.call_remote("getTwo")
        saw.append(f"got second object: {type(two).__name__}")
        two.call_remote_no_answer("three", 12)
        saw.append(await one.call_remote("done"))
    return saw


async def test_pb1_a_reference_from_the_root() -> None:
    seen = await three_ways(PEER, "pb1", One, pb1_client)
    assert seen.client == [
        "got first object: RemoteReference",
        "got second object: RemoteReference",
        "done",
    ]
    assert seen.server == ["returning a Two", "Two.three was given 12"]


# pb2: the root hands out its own Two, the client gives it back, the root knows it.


class Two2(Referenceable):
    def __init__(self, saw: list[str]) -> None:
        self.saw = saw

    def remote_print(self, arg: object) -> None:
        self.saw.append(f"two.print was given {arg}")


class One2(Root):
    def __init__(self, saw: list[str]) -> None:
        self.saw = saw
        self.two = Two2(saw)

    def remote_getTwo(self) -> Two2:
        self.saw.append("One.getTwo(): returning my two")
        return self.two

    def remote_checkTwo(self, newtwo: object) -> bool:
        same = newtwo is self.two
        self.saw.append(f"One.checkTwo(): our twos are {'the same' if same else 'different'}")
        return same


async def pb2_client(port: int) -> list[str]:
    saw = []
    async with open_tcp_broker("127.0.0.1", port) as broker:
        one = await broker.root_object()
        saw.append(f"got one object: {type(one).__name__}")
        saw.append("asking it to getTwo")
        two = await one.call_remote("getTwo")
        saw.append(f"got two object: {type(two).__name__}")
        saw.append("giving it back to one")
        saw.append(f"one says they are the same: {await one.call_remote('checkTwo', two)}")
    return saw


async def test_pb2_a_reference_given_back_is_the_object_itself() -> None:
    """pb2server / pb2client: a reference sent back to its owner arrives as the owner's own object."""
    seen = await three_ways(PEER, "pb2", One2, pb2_client)
    assert seen.client[-1] == "one says they are the same: True"
    assert "got two object: RemoteReference" in seen.client
    assert seen.server == ["One.getTwo(): returning my two", "One.checkTwo(): our twos are the same"]


# pb3: the client hands the root its own Two, the root calls it back.


class Two3(Referenceable):
    def __init__(self, saw: list[str]) -> None:
        self.saw = saw

    def remote_print(self, arg: object) -> None:
        self.saw.append(f"Two.print() called with {arg}")


class One3(Root):
    def __init__(self, saw: list[str]) -> None:
        self.saw = saw

    def remote_takeTwo(self, two: Any) -> None:
        self.saw.append(f"received a Two: {type(two).__name__}")
        self.saw.append("telling it to print(12)")
        # Twisted's listing does not wait for this call either.
        two.call_remote_no_answer("print", 12)


async def pb3_client(port: int) -> list[str]:
    saw: list[str] = []
    async with open_tcp_broker("127.0.0.1", port) as broker:
        one = await broker.root_object()
        saw.append(f"got One: {type(one).__name__}")
        saw.append("giving it our two")
        await one.call_remote("takeTwo", Two3(saw))
        saw.append("takeTwo answered")
    return saw


async def test_pb3_the_server_calls_back_an_object_of_the_client() -> None:
    """pb3server / pb3client: the server calls back the client's own Referenceable before answering."""
    seen = await three_ways(PEER, "pb3", One3, pb3_client)
    # The call back goes out before the answer, and is handled before it.
    assert seen.client[-2:] == ["Two.print() called with 12", "takeTwo answered"]
    assert seen.server == ["received a Two: RemoteReference", "telling it to print(12)"]


# pb4: objects fetched by name (remoteForName), each on a connection of its own.


class Named4(Referenceable):
    def __init__(self, saw: list[str], name: str) -> None:
        self.saw = saw
        self.name = name

    def remote_foo(self, arg: str) -> str:
        self.saw.append(f"{self.name}.foo({arg})")
        return f"{self.name} did foo({arg})"


class One4(Root):
    def __init__(self, saw: list[str]) -> None:
        self.saw = saw

    def root_object(self, broker: Broker) -> One4:
        broker.set_name_for_local("two", Named4(self.saw, "two"))
        broker.set_name_for_local("three", Named4(self.saw, "three"))
        return self

    def remote_foo(self, arg: str) -> str:
        self.saw.append(f"root.foo({arg})")
        return f"root did foo({arg})"


async def pb4_client(port: int) -> list[str]:
    saw = []
    async with open_tcp_broker("127.0.0.1", port) as broker:
        root = await broker.root_object()
        saw.append(f"got root object: {type(root).__name__}")
        saw.append("telling root object to do foo(A)")
        saw.append(await root.call_remote("foo", "A"))
    for name, arg in (("two", "B"), ("three", "C")):
        async with open_tcp_broker("127.0.0.1", port) as broker:
            obj = broker.remote_for_name(name)
            saw.append(f"got {name} object: {type(obj).__name__}")
            saw.append(f"telling {name} object to do foo({arg})")
            saw.append(await obj.call_remote("foo", arg))
    return saw


async def test_pb4_objects_fetched_by_name() -> None:
    """pb4client: the root and two objects the server named, each fetched on its own connection."""
    seen = await three_ways(PEER, "pb4", One4, pb4_client)
    assert [line for line in seen.client if "did" in line] == [
        "root did foo(A)",
        "two did foo(B)",
        "three did foo(C)",
    ]
    assert seen.server == ["root.foo(A)", "two.foo(B)", "three.foo(C)"]


# exc: a pb.Error subclass and a plain exception raised by remote methods.


class MyError(Error):
    """An expected error: neither Twisted nor trio_pb logs it."""

    # The listings run as scripts: the class's qualified name, which the
    # peer sees, is __main__'s.
    __module__ = "__main__"


class MyError2(Exception):
    """An unexpected error: logged by the server, and the caller gets it all the same."""

    __module__ = "__main__"


class _Logged(logging.Handler):
    """Writes each exception that trio_pb logs into a scenario's transcript."""

    def __init__(self) -> None:
        super().__init__()
        self.saw: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            self.saw.append(f"logged {type(exc).__name__}: {exc}")


@contextmanager
def trio_pb_logs() -> Iterator[_Logged]:
    handler = _Logged()
    logger = logging.getLogger("trio_pb")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


class ExcOne(Root):
    def __init__(self, saw: list[str]) -> None:
        self.saw = saw

    def remote_broken(self) -> None:
        self.saw.append("raising a MyError exception with data 'fall down go boom'")
        raise MyError("fall down go boom")

    def remote_broken2(self) -> None:
        self.saw.append("raising a MyError2 exception with data 'hadda owie'")
        raise MyError2("hadda owie")

    def remote_done(self) -> str:
        return "done"


async def call_broken(obj: Any, saw: list[str]) -> None:
    """Call ``broken`` and ``broken2`` on *obj*; say what each raised, as exc_client prints it."""
    for name in ("broken", "broken2"):
        try:
            await obj.call_remote(name)
        except Error:
            # Neither class is registered: neither arrives as trio_pb.Error.
            saw.append(f"{name} raised a local pb.Error?!")
        except RemoteError as exc:
            saw.append(f"{name} failed: got remote Exception")
            saw.append(f" .getErrorMessage() = {exc.value}")
            saw.append(f" .type = {exc.remote_type.decode()}")
            saw.append(f" .check(pb.Error) = {'twisted.spread.pb.Error' in exc.parents}")
            saw.append(f" .check(MyError2) = {'__main__.MyError2' in exc.parents}")
            saw.append(f" .parents = {', '.join(exc.parents)}")
        else:
            saw.append("erm, it wasn't *supposed* to work..")


async def exc_client(port: int) -> list[str]:
    saw: list[str] = []
    async with open_tcp_broker("127.0.0.1", port) as broker:
        one = await broker.root_object()
        await call_broken(one, saw)
        saw.append(await one.call_remote("done"))
    return saw


def exc_server(logged: _Logged) -> Any:
    def make(saw: list[str]) -> ExcOne:
        logged.saw = saw
        return ExcOne(saw)

    return make


async def test_exc_a_pb_error_and_a_plain_exception() -> None:
    """exc_server / exc_client: what a caller gets of a pb.Error and of a plain exception; what is logged."""
    with trio_pb_logs() as logged:
        seen = await three_ways(PEER, "exc", exc_server(logged), exc_client)
    assert seen.client == [*EXC_REPORT, "done"]
    # Only the error that is not a pb.Error is logged.
    assert seen.server == [
        "raising a MyError exception with data 'fall down go boom'",
        "raising a MyError2 exception with data 'hadda owie'",
        "logged MyError2: hadda owie",
    ]


EXC_REPORT = [
    "broken failed: got remote Exception",
    " .getErrorMessage() = fall down go boom",
    " .type = __main__.MyError",
    " .check(pb.Error) = True",
    " .check(MyError2) = False",
    " .parents = __main__.MyError, twisted.spread.pb.Error, builtins.Exception,"
    " builtins.BaseException, builtins.object",
    "broken2 failed: got remote Exception",
    " .getErrorMessage() = hadda owie",
    " .type = __main__.MyError2",
    " .check(pb.Error) = False",
    " .check(MyError2) = True",
    " .parents = __main__.MyError2, builtins.Exception, builtins.BaseException, builtins.object",
]


# trap: trapping errors by class, an unsafe argument, a stale reference.


class MyException(Error):
    __module__ = "__main__"


class MyOtherException(Error):
    __module__ = "__main__"


class ScaryObject:
    """Not safe to send: no flavour, and no security option allows it."""

    __module__ = "__main__"


class TrapOne(Root):
    def __init__(self, saw: list[str]) -> None:
        self.saw = saw

    def root_object(self, broker: Broker) -> TrapOne:
        self.broker = broker
        return self

    def remote_fooMethod(self, arg: object) -> str:
        self.saw.append(f"fooMethod got {arg!r}")
        if arg == "panic!":
            raise MyException
        return "response"

    async def remote_shutdown(self) -> None:
        # The listing stops the reactor; what the client sees of it is the
        # connection going away.
        self.saw.append("shutting down")
        await self.broker.aclose()


async def trap_client(port: int) -> list[str]:
    # What failure.trap(MyException, MyOtherException) does: errors of these
    # names arrive as the caller's own classes.
    register_error(MyException)
    register_error(MyOtherException)
    saw = []
    async with open_tcp_broker("127.0.0.1", port) as broker:
        remote = await broker.root_object()

        async def do_call(explanation: str, arg: object) -> None:
            saw.append(explanation)
            try:
                response = await remote.call_remote("fooMethod", arg)
            except InsecureJelly:
                saw.append(" InsecureJelly: you tried to send something unsafe to them")
            except DeadReferenceError:
                saw.append(" stale reference: the client disconnected or crashed")
            except (MyException, MyOtherException) as exc:
                saw.append(f" remote raised a {type(exc).__name__} (the caller's own class)")
            except Exception as exc:
                saw.append(f" something else happened: {exc}")
            else:
                saw.append(f" method successful, response: {response}")

        await do_call("callOne: call with safe object", "safe string")
        await do_call("callTwo: call with dangerous object", ScaryObject())
        await do_call("callThree: call that raises remote exception", "panic!")
        saw.append("telling them to shut down")
        remote.call_remote_no_answer("shutdown")
        await broker.wait_closed()
        await do_call("callFour: call on stale reference", "dummy")
    return saw


async def test_trap_errors_by_class_unsafe_arguments_and_stale_references() -> None:
    """trap_server / trap_client: a pb.Error caught by its class, an unsafe argument, a dead reference."""
    seen = await three_ways(PEER, "trap", TrapOne, trap_client)
    assert seen.client == [
        "callOne: call with safe object",
        " method successful, response: response",
        # Twisted sends an object it may not send as "unpersistable", it
        # does not refuse the call: the listing's InsecureJelly never comes.
        "callTwo: call with dangerous object",
        " method successful, response: response",
        "callThree: call that raises remote exception",
        " remote raised a MyException (the caller's own class)",
        "telling them to shut down",
        "callFour: call on stale reference",
        " stale reference: the client disconnected or crashed",
    ]
    assert seen.server == [
        "fooMethod got 'safe string'",
        "fooMethod got Unpersistable(\"Unpersistable data: b'instance of class __main__.ScaryObject"
        " deemed insecure'\")",
        "fooMethod got 'panic!'",
        "shutting down",
    ]


# exc_back: the same errors the other way, raised by an object of the client
# that the server calls.


class Breaker(Referenceable):
    def remote_broken(self) -> None:
        raise MyError("fall down go boom")

    def remote_broken2(self) -> None:
        raise MyError2("hadda owie")

    def remote_panic(self) -> None:
        raise MyException


class ExcBackOne(Root):
    def __init__(self, saw: list[str]) -> None:
        self.saw = saw
        register_error(MyException)

    async def remote_callMe(self, breaker: Any) -> None:
        await call_broken(breaker, self.saw)
        try:
            await breaker.call_remote("panic")
        except MyException as exc:
            self.saw.append(f"panic trapped: {type(exc).__name__} (the server's own class)")


async def exc_back_client(port: int) -> list[str]:
    saw: list[str] = []
    with trio_pb_logs() as logged:
        logged.saw = saw
        async with open_tcp_broker("127.0.0.1", port) as broker:
            one = await broker.root_object()
            await one.call_remote("callMe", Breaker())
            saw.append("callMe answered")
    return saw


async def test_exc_back_errors_raised_by_an_object_of_the_client() -> None:
    """exc and trap listings with the roles swapped: the server calls an object of the client."""
    seen = await three_ways(PEER, "exc_back", ExcBackOne, exc_back_client)
    assert seen.server == [*EXC_REPORT, "panic trapped: MyException (the server's own class)"]
    # The client logs its plain exception, before it answers the server's call.
    assert seen.client == ["logged MyError2: hadda owie", "callMe answered"]
