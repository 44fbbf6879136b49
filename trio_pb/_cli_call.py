"""``trio-pb call``: connect to a PB server, optionally log in, call one method and print the answer."""

from __future__ import annotations

import argparse
import ast
import getpass
import os
import pprint
import ssl
import sys
import warnings
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import TYPE_CHECKING, Any

import trio

from ._cli_show import AnyCopies
from .errors import DisconnectedError, LoginFailed, PBError
from .failures import failure_state
from .jelly import copy_registry

if TYPE_CHECKING:
    from .broker import Broker

__all__ = ["add_arguments", "run"]

#: The environment variable the password is read from unless ``--password-env`` names another.
PASSWORD_ENV = "TRIO_PB_PASSWORD"
#: Seconds the whole command (connecting, logging in, the call) may take by default.
DEFAULT_TIMEOUT = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options and arguments of ``call``."""
    parser.add_argument(
        "address", metavar="HOST:PORT", help="the server: HOST:PORT, [IPv6]:PORT or unix:PATH"
    )
    parser.add_argument("method", metavar="METHOD", help="the remote method's name, without remote_")
    parser.add_argument(
        "arguments", metavar="ARGS", nargs="*", help="positional arguments, as Python literals"
    )
    parser.add_argument(
        "--kw",
        metavar="NAME=LITERAL",
        action="append",
        default=[],
        help="a keyword argument (repeat for more)",
    )
    login = parser.add_mutually_exclusive_group()
    login.add_argument("--user", metavar="NAME", help="log in as NAME and call METHOD on the avatar")
    login.add_argument("--anonymous", action="store_true", help="log in anonymously and call on the avatar")
    parser.add_argument(
        "--password-env",
        metavar="VAR",
        help=f"read the password from environment variable VAR (default {PASSWORD_ENV}; "
        "if that is unset, the password is asked for on the terminal)",
    )
    parser.add_argument("--tls", action="store_true", help="connect with TLS (system trust unless --ca)")
    parser.add_argument("--ca", metavar="FILE", help="trust the certificate authorities in FILE (PEM)")
    parser.add_argument(
        "--server-hostname",
        metavar="NAME",
        help="the name the server's certificate must carry (default HOST)",
    )
    parser.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"give up after this long, in all (default {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="with a remote error, print the remote traceback too"
    )


#: How a command line that cannot be run as given is reported (argparse's own error type).
UsageError = argparse.ArgumentTypeError


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run ``call`` and return its exit status."""
    try:
        positional = [_literal(text, f"argument {text!r}") for text in args.arguments]
        keywords = dict(_keyword(text) for text in args.kw)
        if not args.timeout > 0:
            raise UsageError("--timeout must be a positive number of seconds")
        password = _password(args) if args.user is not None else None
        context = _tls_context(args)
        address = _address(args.address)
        if isinstance(address, str) and context is not None:
            raise UsageError("--tls does not apply to a unix socket")
    except UsageError as exc:
        parser.exit(2, f"{parser.prog} call: error: {exc}\n")
    try:
        answered, answer = trio.run(_call, args, address, context, password, positional, keywords)
    except PBError as exc:
        sys.stderr.write(f"error: {_error_line(exc)}\n")
        if args.verbose:
            traceback = getattr(exc, "remote_traceback", "") or "(the server sent no traceback)\n"
            sys.stderr.write(traceback if traceback.endswith("\n") else traceback + "\n")
        return 1
    if not answered:
        sys.stderr.write(f"error: {answer}\n")
        return 2
    sys.stdout.write(pprint.pformat(answer, width=100, compact=True, sort_dicts=False) + "\n")
    return 0


def _literal(text: str, what: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        hint = f" (for a string, quote it: \"'{text}'\")" if text.isidentifier() else ""
        raise UsageError(f"{what} is not a Python literal{hint}") from None


def _keyword(text: str) -> tuple[str, Any]:
    name, equals, value = text.partition("=")
    if not equals or not name.isidentifier():
        raise UsageError(f"--kw {text!r}: give NAME=LITERAL")
    return name, _literal(value, f"--kw {name}")


def _password(args: argparse.Namespace) -> str:
    variable = args.password_env or PASSWORD_ENV
    password = os.environ.get(variable)
    if password is not None:
        return password
    if args.password_env is not None:
        raise UsageError(f"--password-env: the environment variable {variable} is not set")
    try:
        with warnings.catch_warnings():
            # Without a terminal getpass would warn, then read the password from stdin, echoed.
            warnings.simplefilter("error", getpass.GetPassWarning)
            return getpass.getpass(f"password for {args.user}: ")
    except getpass.GetPassWarning:
        raise UsageError(f"no password: set {PASSWORD_ENV}, or run on a terminal to be asked") from None
    except EOFError:
        raise UsageError(f"no password: set {PASSWORD_ENV} or type one at the prompt") from None


def _tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not args.tls:
        if args.ca is not None or args.server_hostname is not None:
            raise UsageError("--ca and --server-hostname need --tls")
        return None
    try:
        return ssl.create_default_context(cafile=args.ca)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"--ca {args.ca}: {exc.strerror or exc}") from None


def _address(text: str) -> tuple[str, int] | str:
    """``(host, port)`` for TCP, or the path of a unix socket."""
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if not path:
            raise UsageError("unix: needs a path, as in unix:/run/app.sock")
        return path
    host, colon, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"{text!r} is not HOST:PORT (or unix:PATH)")
    return host, int(port)


async def _call(
    args: argparse.Namespace,
    address: tuple[str, int] | str,
    context: ssl.SSLContext | None,
    password: str | None,
    positional: list[Any],
    keywords: dict[str, Any],
) -> tuple[bool, Any]:
    """``(True, answer)``, or ``(False, why there is none)``; an error the method raised propagates."""
    from .cred import Anonymous, UsernamePassword

    where = address if isinstance(address, str) else f"{address[0]}:{address[1]}"
    with trio.move_on_after(args.timeout):
        async with AsyncExitStack() as stack:
            try:
                broker = await stack.enter_async_context(_connected(address, context, args.server_hostname))
            except (OSError, PBError) as exc:
                return False, _connect_error(exc, where)
            try:
                if args.user is not None:
                    assert password is not None
                    # As bytes: Twisted's checkers key users by bytes (trio_pb's take either).
                    username = args.user.encode("utf-8")
                    target = await broker.login(UsernamePassword(username, password))
                elif args.anonymous:
                    target = await broker.login(Anonymous())
                else:
                    target = await broker.root_object()
            except LoginFailed as exc:
                return False, f"login refused: {_error_line(exc)}"
            except DisconnectedError as exc:
                return False, f"{where} closed the connection during the login: {exc}"
            except PBError as exc:
                return False, f"cannot log in: {_error_line(exc)}"
            try:
                return True, await target.call_remote(args.method, *positional, **keywords)
            except DisconnectedError as exc:
                return False, f"{where} closed the connection before answering: {exc}"
    return False, f"no answer from {where} within {args.timeout:g} seconds (--timeout)"


def _connected(
    address: tuple[str, int] | str, context: ssl.SSLContext | None, server_hostname: str | None
) -> AbstractAsyncContextManager[Broker]:
    """The client broker for *address*; it shows copies of any class (:class:`~trio_pb._cli_show.Copy`)."""
    from .connect import open_tcp_broker, open_unix_broker

    registry = AnyCopies(parent=copy_registry)
    if isinstance(address, str):
        return open_unix_broker(address, registry=registry)
    host, port = address
    return open_tcp_broker(
        host, port, ssl_context=context, server_hostname=server_hostname, registry=registry
    )


def _connect_error(exc: OSError | PBError, where: str) -> str:
    """The line that says why connecting to *where* failed."""
    if isinstance(exc, ssl.SSLError):
        return f"TLS with {where} failed: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return f"cannot connect to {where}: connection refused"
    if isinstance(exc, OSError):
        return f"cannot connect to {where}: {exc.strerror or exc}"
    if isinstance(exc, DisconnectedError):
        return f"{where} closed the connection during the PB handshake: {exc}"
    return f"{where} does not speak PB: {exc}"


def _error_line(exc: BaseException) -> str:
    """``<class>: <message>`` for an error, the class named as on the wire (as Twisted names it)."""
    state = failure_state(exc)
    name = state["type"].decode("utf-8", "replace")
    return f"{name}: {state['value']}" if state["value"] else name
