"""Twisted's test_pbfailure.py as two-process scenarios: Twisted alone, and against trio_pb both ways.

Each scenario's Twisted side is in twisted_pbfailure_peer.py; here is its
trio_pb port, written as a porting user would (``try`` / ``except`` where
Twisted has errbacks, ``RemoteError.parents`` where it has ``check``), and
the transcripts all three pairings must give (peers.three_ways).  The
server's transcript is the failures it logs: the unexpected ones, never a
``pb.Error``.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

import pytest
import trio
from peers import run_twisted_client, three_ways, twisted_client_against, twisted_server

from trio_pb import (
    CopyableFailure,
    CopyRegistry,
    Error,
    InsecureJelly,
    NoSuchMethod,
    PBServerFactory,
    Referenceable,
    RemoteCopy,
    RemoteError,
    Root,
    global_security,
    open_tcp_broker,
)
from trio_pb.failures import CopiedFailure, to_exception
from trio_pb.jelly import Jellyable, copy_registry
from trio_pb.testing import assert_no_leaks, open_broker_pair

PEER = "twisted_pbfailure_peer.py"


# The Twisted peer's classes live in its __main__, so ours are named the same
# on the wire.


class AsynchronousException(Exception):
    """Not an Error, raised by an ``async def`` method (Twisted: a failed Deferred)."""


class SynchronousException(Exception):
    """Not an Error, raised by a plain method."""


class AsynchronousError(Error):
    """An Error, raised by an ``async def`` method."""


class SynchronousError(Error):
    """An Error, raised by a plain method."""


class JellyError(Jellyable, Error, RemoteCopy):
    """An Error that is Jellyable: it crosses as itself."""


class SecurityError(Error, RemoteCopy):
    """An Error whose class the security options allow: it crosses as itself."""


class PrivateError(Error, RemoteCopy):
    """Allowed by the server's security options only: the client neither registers nor allows it."""


for _cls in (
    PrivateError,
    AsynchronousException,
    SynchronousException,
    AsynchronousError,
    SynchronousError,
    JellyError,
    SecurityError,
):
    _cls.__module__ = "__main__"

REGISTRY = CopyRegistry(parent=copy_registry)
REGISTRY.register(JellyError, JellyError)
REGISTRY.register(SecurityError, SecurityError)
SECURITY = global_security.copy()
SECURITY.allow_instances_of(SecurityError)
SERVER_SECURITY = SECURITY.copy()
SERVER_SECURITY.allow_instances_of(PrivateError)


class FailingRoot(Root):
    """The methods of Twisted's test root, ported; *saw* is the server's transcript."""

    def __init__(self, saw: list[str] | None = None) -> None:
        self.saw = [] if saw is None else saw

    async def remote_asynchronousException(self) -> None:
        raise AsynchronousException("remote asynchronous exception")

    def remote_synchronousException(self) -> None:
        raise SynchronousException("remote synchronous exception")

    async def remote_asynchronousError(self) -> None:
        raise AsynchronousError("remote asynchronous error")

    def remote_synchronousError(self) -> None:
        raise SynchronousError("remote synchronous error")

    def remote_unknownError(self) -> None:
        class UnknownError(Error):
            pass

        UnknownError.__module__ = "__main__"
        raise UnknownError("I'm not known to client!")

    def remote_jelly(self) -> None:
        raise JellyError("I'm jellyable!")

    async def remote_deferredJelly(self) -> None:
        await trio.lowlevel.checkpoint()
        raise JellyError("I'm jellyable!")

    def remote_security(self) -> None:
        raise SecurityError("I'm secure!")

    async def remote_deferredSecurity(self) -> None:
        await trio.lowlevel.checkpoint()
        raise SecurityError("I'm secure!")

    def remote_private(self) -> None:
        raise PrivateError("I'm not allowed there!")

    def remote_attributeError(self) -> None:
        raise AttributeError("foo")

    def remote_failure(self, message: str | None) -> list[CopyableFailure]:
        return [CopyableFailure(ZeroDivisionError() if message is None else Exception(message))]

    def remote_bounce(self, copied: CopiedFailure) -> list[CopyableFailure]:
        self.saw.append(f"bounced: {checks(copied)}")
        return [CopyableFailure(to_exception(copied))]

    def remote_done(self) -> str:
        return "done"


def checks(copied: CopiedFailure) -> str:
    """What Twisted's ``copied.check(ZeroDivisionError)`` and ``check(ArithmeticError)`` say."""
    parents = getattr(to_exception(copied), "parents", ())
    zero = "builtins.ZeroDivisionError" in parents
    arithmetic = "builtins.ArithmeticError" in parents
    return f"ZeroDivisionError {zero} ArithmeticError {arithmetic}"


class LoggedFailures(logging.Handler):
    """Appends ``logged <class>`` to a transcript for each record that carries an exception."""

    def __init__(self, saw: list[str]) -> None:
        super().__init__()
        self.saw = saw

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.saw.append(f"logged {short_name(record.exc_info[1])}")


def short_name(exc: BaseException) -> str:
    if isinstance(exc, RemoteError):
        return exc.remote_type.decode().rsplit(".", 1)[-1]
    return type(exc).__name__


async def run(scenario: str, client: Any, unsafe: bool = False) -> Any:
    """``three_ways`` with trio_pb servers of :class:`FailingRoot` whose transcripts get what they log."""
    handlers: list[logging.Handler] = []

    def serve(saw: list[str]) -> PBServerFactory:
        root = FailingRoot(saw)
        handlers.append(LoggedFailures(saw))
        logging.getLogger("trio_pb").addHandler(handlers[-1])
        return PBServerFactory(root, unsafeTracebacks=unsafe, security=SERVER_SECURITY)

    try:
        return await three_ways(PEER, scenario, serve, client)
    finally:
        for handler in handlers:
            logging.getLogger("trio_pb").removeHandler(handler)


def serving(saw: list[str]) -> PBServerFactory:
    """A trio_pb server of :class:`FailingRoot`."""
    return PBServerFactory(FailingRoot(saw), security=SERVER_SECURITY)


def connect(port: int) -> Any:
    return open_tcp_broker("127.0.0.1", port, registry=REGISTRY, security=SECURITY)


def describe(method: str, exc: BaseException) -> str:
    """The Twisted peer's line for a failed call: class name, how it crossed, Error or not, traceback."""
    if isinstance(exc, RemoteError):
        name, how, message = exc.remote_type.decode(), "as a failure", exc.value
        error = "twisted.spread.pb.Error" in exc.parents
        text = exc.remote_traceback
        if text == "Traceback unavailable\n":
            trace = "traceback unavailable"
        elif "Traceback" in text and message in text:
            trace = "traceback with the message"
        else:
            trace = f"traceback {text!r}"
    else:
        name, how, message = f"{type(exc).__module__}.{type(exc).__qualname__}", "as itself", str(exc)
        error = isinstance(exc, Error)
        trace = "no traceback"
    kind = "a pb.Error" if error else "not a pb.Error"
    return f"{method}: {name} {how}, {kind}, message {message!r}, {trace}"


ERROR_METHODS = [
    "asynchronousException",
    "synchronousException",
    "asynchronousError",
    "synchronousError",
    "unknownError",
]


async def errors_client(port: int) -> list[str]:
    saw = []
    async with connect(port) as broker:
        root = await broker.root_object()
        for method in ERROR_METHODS:
            try:
                saw.append(f"{method} succeeded {await root.call_remote(method)}")
            except RemoteError as exc:
                saw.append(describe(method, exc))
        try:
            await root.call_remote("nosuch")
        except NoSuchMethod as exc:
            unavailable = exc.remote_traceback == "Traceback unavailable\n"  # type: ignore[attr-defined]
            saw.append(f"nosuch: trapped NoSuchMethod, traceback unavailable: {unavailable}")
        saw.append(await root.call_remote("done"))
    return saw


ERROR_LINES = [
    "asynchronousException: __main__.AsynchronousException as a failure, not a pb.Error,"
    " message 'remote asynchronous exception', {trace}",
    "synchronousException: __main__.SynchronousException as a failure, not a pb.Error,"
    " message 'remote synchronous exception', {trace}",
    "asynchronousError: __main__.AsynchronousError as a failure, a pb.Error,"
    " message 'remote asynchronous error', {trace}",
    "synchronousError: __main__.SynchronousError as a failure, a pb.Error,"
    " message 'remote synchronous error', {trace}",
    "unknownError: __main__.UnknownError as a failure, a pb.Error,"
    ' message "I\'m not known to client!", {trace}',
]
# The server logs the unexpected failures, NoSuchMethod among them, and no Error.
LOGGED = ["logged AsynchronousException", "logged SynchronousException", "logged NoSuchMethod"]


async def test_exceptions_errors_unknown_and_no_such_method() -> None:
    """PBFailureTests: test_(a)synchronousException/Error, test_unjellyable/unknown/noSuchMethodFailure."""
    seen = await run("errors", errors_client)
    assert seen.client == [
        *(line.format(trace="traceback unavailable") for line in ERROR_LINES),
        "nosuch: trapped NoSuchMethod, traceback unavailable: True",
        "done",
    ]
    assert seen.server == LOGGED


async def test_unsafe_tracebacks_cross() -> None:
    """PBFailureUnsafeTests: with unsafeTracebacks the traceback text crosses, the rest is the same."""
    seen = await run("unsafe", errors_client, unsafe=True)
    assert seen.client == [
        *(line.format(trace="traceback with the message") for line in ERROR_LINES),
        "nosuch: trapped NoSuchMethod, traceback unavailable: False",
        "done",
    ]
    assert seen.server == LOGGED


async def itself_client(port: int) -> list[str]:
    saw = []
    async with connect(port) as broker:
        root = await broker.root_object()
        for method, cls in [
            ("jelly", JellyError),
            ("deferredJelly", JellyError),
            ("security", SecurityError),
            ("deferredSecurity", SecurityError),
        ]:
            try:
                saw.append(f"{method} succeeded {await root.call_remote(method)}")
            except cls as exc:
                saw.append(describe(method, exc))
        saw.append(await root.call_remote("done"))
    return saw


async def test_jellyable_and_allowed_errors_cross_as_themselves() -> None:
    """PBFailureTests: test_jellyFailure, test_deferredJelly, test_security, test_deferredSecurity."""
    seen = await run("itself", itself_client)
    assert seen.client == [
        "jelly: __main__.JellyError as itself, a pb.Error, message '', no traceback",
        "deferredJelly: __main__.JellyError as itself, a pb.Error, message '', no traceback",
        "security: __main__.SecurityError as itself, a pb.Error, message '', no traceback",
        "deferredSecurity: __main__.SecurityError as itself, a pb.Error, message '', no traceback",
        "done",
    ]
    # Errors, all of them: the server logs nothing.
    assert seen.server == []


async def test_an_error_the_client_refuses_fails_the_call_not_the_connection() -> None:
    """PBFailureTests.test_securityFailure's other side: the caller does not allow the error's class.

    A Twisted caller drops the connection and never answers the call, whoever
    the server is; a trio_pb caller raises InsecureJelly from that call and
    keeps the connection (the porting guide says so).
    """
    control: list[str] = []
    async with twisted_server(PEER, "serve", "private", output=control) as port:
        twisted_caller = await run_twisted_client(PEER, "client", "private", str(port))
    assert twisted_caller == ["logged InsecureJelly", "connection lost; the call was answered: False"]
    assert control == []
    assert await twisted_client_against(serving([]), PEER, "client", "private") == twisted_caller

    async with twisted_server(PEER, "serve", "private") as port, connect(port) as broker:
        root = await broker.root_object()
        with pytest.raises(InsecureJelly, match="PrivateError"):
            await root.call_remote("private")
        assert await root.call_remote("done") == "done"


async def logging_client(port: int) -> list[str]:
    saw: list[str] = []
    log = logging.getLogger("pbfailure.client")
    handler = LoggedFailures(saw)
    log.addHandler(handler)
    try:
        async with connect(port) as broker:
            root = await broker.root_object()
            for method in ("synchronousException", "synchronousError"):
                try:
                    await root.call_remote(method)
                except RemoteError as exc:
                    log.error("the call failed", exc_info=exc)
                    saw.append("the copied failure was logged")
            saw.append(await root.call_remote("done"))
    finally:
        log.removeHandler(handler)
    return saw


async def test_copied_failures_can_be_logged() -> None:
    """PBFailureTests.test_copiedFailureLogging: the server logs the unexpected failure, the client a copy."""
    seen = await run("logging", logging_client)
    assert seen.client == [
        "logged SynchronousException",
        "the copied failure was logged",
        "logged SynchronousError",
        "the copied failure was logged",
        "done",
    ]
    # The unexpected one; the Error is not logged as unexpected.
    assert seen.server == ["logged SynchronousException"]


async def generator_client(port: int) -> list[str]:
    saw = []
    async with connect(port) as broker:
        root = await broker.root_object()
        try:
            await root.call_remote("attributeError")
        except RemoteError as exc:
            saw.append(f"raised RemoteError: {exc.remote_type.decode()} {exc.args} {exc.remote_traceback!r}")
        saw.append(await root.call_remote("done"))
    return saw


async def test_a_remote_failure_raises_at_the_await() -> None:
    """PBFailureTests.test_throwExceptionIntoGenerator: a RemoteError, raised where the call is awaited."""
    seen = await run("generator", generator_client)
    assert seen.client == [
        "raised RemoteError: builtins.AttributeError ('foo',) 'Traceback unavailable\\n'",
        "done",
    ]
    assert seen.server == ["logged AttributeError"]


async def copies_client(port: int) -> list[str]:
    saw = []
    async with connect(port) as broker:
        root = await broker.root_object()
        [once] = await root.call_remote("failure", None)
        saw.append(f"copied once: {checks(once)}")
        [again] = await root.call_remote("bounce", CopyableFailure(to_exception(once)))
        saw.append(f"copied thrice: {checks(again)}")
        [reason] = await root.call_remote("failure", "some reason")
        printed = "".join(traceback.format_exception_only(to_exception(reason)))
        saw.append(f"printed the value: {'builtins.Exception: some reason' in printed}")
        saw.append(await root.call_remote("done"))
    return saw


async def test_failures_copied_once_and_twice() -> None:
    """FailureJellyingTests: a failure as a value checks as its class, copied twice too; prints its value."""
    seen = await run("copies", copies_client)
    assert seen.client == [
        "copied once: ZeroDivisionError True ArithmeticError True",
        "copied thrice: ZeroDivisionError True ArithmeticError True",
        "printed the value: True",
        "done",
    ]
    assert seen.server == ["bounced: ZeroDivisionError True ArithmeticError True"]


# The two differences these scenarios found, pinned without Twisted.


def test_a_copied_failure_is_passed_on_as_what_it_was() -> None:
    """A RemoteError sent on, as Twisted sends on a CopiedFailure, keeps its class name, message, parents."""
    copied = RemoteError(
        b"builtins.ZeroDivisionError",
        "division by zero",
        "Traceback unavailable\n",
        ("builtins.ZeroDivisionError", "builtins.ArithmeticError", "builtins.Exception"),
    )
    state = CopyableFailure(copied).get_state_to_copy()
    assert state["type"] == b"builtins.ZeroDivisionError"
    assert state["value"] == "division by zero"
    assert state["parents"] == [
        "builtins.ZeroDivisionError",
        "builtins.ArithmeticError",
        "builtins.Exception",
    ]


async def test_a_call_of_a_missing_method_is_logged_as_unexpected(caplog: pytest.LogCaptureFixture) -> None:
    """As a Twisted server does, trio_pb logs a NoSuchMethod it answers with, and does not log an Error."""
    async with open_broker_pair(FailingRoot()) as (client, server):
        root = await client.root_object()
        with pytest.raises(NoSuchMethod):
            await root.call_remote("nosuch", Divider())
        with pytest.raises(RemoteError):
            await root.call_remote("synchronousError")
        # The record kept by caplog does not keep the call's argument alive.
        await assert_no_leaks(client, server)
    logged = [record.exc_info[1] for record in caplog.records if record.name == "trio_pb" and record.exc_info]
    assert [type(exc).__name__ for exc in logged] == ["NoSuchMethod"]


class Divider(Referenceable):
    def remote_divide(self) -> float:
        return 1 / 0


class Relay(Root):
    async def remote_relay(self, divider: Any) -> Any:
        # The divider's failure is not caught here: it goes on to the caller.
        return await divider.call_remote("divide")


async def test_a_failure_let_through_goes_on_as_what_it_was() -> None:
    """A method that lets a peer's failure through answers with that failure, as a Twisted one does."""
    async with open_broker_pair(Relay()) as (client, _server):
        root = await client.root_object()
        with pytest.raises(RemoteError) as info:
            await root.call_remote("relay", Divider())
    assert info.value.remote_type == b"builtins.ZeroDivisionError"
    assert info.value.value == "division by zero"
    assert "builtins.ArithmeticError" in info.value.parents
