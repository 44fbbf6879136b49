"""Serving and connecting over TCP, TLS and unix sockets.

:func:`serve_tcp` and :func:`serve_unix` follow :func:`trio.serve_tcp`: they
run until cancelled, report their listeners through ``task_status``, and run
one broker per connection (:func:`~trio_pb.broker.open_broker` with
``server=True``) in the server's nursery.  A connection whose TLS or PB
handshake fails, or that breaks later, is logged on the ``trio_pb`` logger
and never stops the server; cancelling the server closes every connection,
and the peers' outstanding calls fail with
:class:`~trio_pb.errors.PBConnectionLost`.

:func:`open_tcp_broker` and :func:`open_unix_broker` connect and yield a
client broker.  A connection that cannot be made raises the
:class:`OSError` that says why (:class:`ConnectionRefusedError`,
:class:`ssl.SSLError` ...), never an ExceptionGroup.

With an ``ssl_context`` the stream is a :class:`trio.SSLStream`, and the TLS
handshake is done before the PB handshake starts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

from ._groups import plain_errors
from .broker import Broker, open_broker, peer_name, serve_broker
from .errors import DisconnectedError, ProtocolError
from .options import BrokerOptions

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

__all__ = ["open_tcp_broker", "open_unix_broker", "serve_tcp", "serve_unix"]

log = logging.getLogger("trio_pb")

#: Seconds a server gives a new connection to finish its TLS and PB handshakes.
HANDSHAKE_TIMEOUT = 30.0


# -- servers -------------------------------------------------------------------


async def serve_tcp(
    root: Any,
    port: int,
    *,
    host: str | bytes | None = None,
    ssl_context: ssl.SSLContext | None = None,
    handler_nursery: trio.Nursery | None = None,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
    **broker_options: Any,
) -> None:
    """Serve *root* on TCP *port* until cancelled, one broker per connection.

    *root* may be a :class:`~trio_pb.factories.PBServerFactory`: its root is
    served with its broker options.

    *host* and *port* are as for :func:`trio.open_tcp_listeners` (port 0
    picks a free port; read it from the listeners).  ``task_status`` is
    given the list of :class:`trio.SocketListener` s once they listen, so
    ``listeners = await nursery.start(serve_tcp, root, 0)`` works as with
    :func:`trio.serve_tcp`.  With *ssl_context* (a server-side context) each
    accepted stream is wrapped in a :class:`trio.SSLStream` and its TLS
    handshake done before the PB handshake.  A connection that has not
    finished its handshakes within ``handshake_timeout`` seconds (a broker
    option; :data:`HANDSHAKE_TIMEOUT` by default) is closed.  *broker_options*
    are :func:`~trio_pb.broker.open_broker`'s (see
    :class:`~trio_pb.options.BrokerOptions`); an unknown one raises
    :class:`TypeError` here, before anything listens.

    Connections run in this function's nursery, so cancelling it closes them
    all, unless *handler_nursery* is given (as in :func:`trio.serve_listeners`).
    """
    root, options = _server_options("serve_tcp", root, broker_options)
    listeners = await trio.open_tcp_listeners(port, host=host)
    handler = _connection_handler(root, ssl_context, options)
    with plain_errors():
        await trio.serve_listeners(
            handler, listeners, handler_nursery=handler_nursery, task_status=task_status
        )


async def serve_unix(
    root: Any,
    path: str | os.PathLike[str],
    *,
    backlog: int | None = None,
    handler_nursery: trio.Nursery | None = None,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
    **broker_options: Any,
) -> None:
    """Serve *root* on a unix socket at *path* until cancelled, like :func:`serve_tcp`.

    *path* must not exist yet (a stale socket file is not removed for you);
    the socket file is removed again when the server stops.
    """
    if not hasattr(socket, "AF_UNIX"):
        raise RuntimeError("unix sockets are not supported on this platform")
    root, options = _server_options("serve_unix", root, broker_options)
    path = os.fspath(path)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.bind(path)
        sock.listen(backlog if backlog is not None else min(socket.SOMAXCONN, 0xFFFF))
    except BaseException:
        sock.close()
        raise
    inode: int | None = None
    try:
        inode = os.stat(path).st_ino
        listeners = [trio.SocketListener(sock)]
        handler = _connection_handler(root, None, options)
        with plain_errors():
            await trio.serve_listeners(
                handler, listeners, handler_nursery=handler_nursery, task_status=task_status
            )
    finally:
        sock.close()
        # Remove the socket file, unless someone has replaced it since.
        with contextlib.suppress(OSError):
            if os.stat(path).st_ino == inode:
                os.unlink(path)


class ServedRoot:
    """A root with broker options of its own (the base of :class:`~trio_pb.factories.PBServerFactory`).

    ``serve_tcp`` and ``serve_unix`` serve its :attr:`root` with its
    :meth:`options`, under the options they are given themselves.
    """

    root: Any

    def options(self) -> dict[str, Any]:
        """The :func:`~trio_pb.broker.open_broker` options of the connections it serves."""
        return {}


def _server_options(caller: str, root: Any, broker_options: dict[str, Any]) -> tuple[Any, BrokerOptions]:
    """The root and the broker options of a server's connections (*root* may be a :class:`ServedRoot`)."""
    if isinstance(root, ServedRoot):
        root, broker_options = root.root, {**root.options(), **broker_options}
    if "options" not in broker_options:
        # Servers wait less than forever for a new connection's handshakes.
        broker_options.setdefault("handshake_timeout", HANDSHAKE_TIMEOUT)
    return root, BrokerOptions.build(caller, broker_options)


def _connection_handler(
    root: Any, ssl_context: ssl.SSLContext | None, options: BrokerOptions
) -> Callable[[trio.SocketStream], Awaitable[None]]:
    handshake_timeout = options.handshake_timeout

    async def handle(stream: trio.SocketStream) -> None:
        peer = peer_name(stream)
        pb_stream: trio.abc.Stream = stream
        try:
            if ssl_context is not None:
                tls_stream = trio.SSLStream(stream, ssl_context, server_side=True)
                pb_stream = tls_stream
                try:
                    with trio.fail_after(handshake_timeout):
                        await tls_stream.do_handshake()
                except trio.BrokenResourceError as exc:
                    log.warning("TLS handshake with %s failed: %s", peer, _reason(exc))
                    return
            log.debug("connection from %s", peer)
            # This task serves the connection itself: no task of its own for an idle one.
            await serve_broker(pb_stream, root=root, options=options, peer=peer)
            log.debug("connection from %s closed", peer)
        except trio.TooSlowError:
            log.info("%s did not finish the handshake within %s s; closed", peer, handshake_timeout)
        except DisconnectedError as exc:
            # The peer left during the handshake: a port scanner, a health check ...
            log.info("PB handshake with %s failed: %s", peer, exc)
        except ProtocolError as exc:
            log.warning("PB handshake with %s failed: %s", peer, exc)
        except (trio.BrokenResourceError, OSError) as exc:
            log.warning("connection from %s broke: %s", peer, _reason(exc))
        except Exception:
            log.exception("connection from %s failed", peer)
        finally:
            await trio.aclose_forcefully(pb_stream)

    return handle


def _reason(exc: BaseException) -> str:
    """What went wrong, from trio's wrapper exceptions (their cause says more)."""
    message, cause = str(exc), exc.__cause__
    if cause is None or str(cause) in message:
        return message or repr(exc)
    return f"{message}: {cause}" if message else str(cause)


# -- clients -------------------------------------------------------------------


@asynccontextmanager
async def open_tcp_broker(
    host: str | bytes,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    **broker_options: Any,
) -> AsyncIterator[Broker]:
    """Connect to a PB server over TCP (TLS with *ssl_context*) and yield the client broker.

    *server_hostname* is the name the server's certificate must carry; it
    defaults to *host*.  A failed connection raises its :class:`OSError`
    (for example :class:`ConnectionRefusedError`, or :class:`ssl.SSLError`
    when the certificate is refused); a failed PB handshake raises the
    :class:`~trio_pb.errors.ProtocolError`.  Leaving the block closes the
    connection as :func:`~trio_pb.broker.open_broker` does.  An unknown
    broker option raises :class:`TypeError` before connecting.
    """
    options = BrokerOptions.build("open_tcp_broker", broker_options)
    stream = await _open_tcp_stream(host, port)
    pb_stream: trio.abc.Stream = stream
    if ssl_context is not None:
        if server_hostname is None:
            server_hostname = host.decode("ascii") if isinstance(host, bytes) else host
        tls_stream = trio.SSLStream(stream, ssl_context, server_hostname=server_hostname)
        pb_stream = tls_stream
        try:
            await tls_stream.do_handshake()
        except BaseException as exc:
            await trio.aclose_forcefully(tls_stream)
            if isinstance(exc, trio.BrokenResourceError) and isinstance(exc.__cause__, OSError):
                raise exc.__cause__ from None
            raise
    async with open_broker(pb_stream, server=False, options=options) as broker:
        yield broker


@asynccontextmanager
async def open_unix_broker(path: str | os.PathLike[str], **broker_options: Any) -> AsyncIterator[Broker]:
    """Connect to a PB server on the unix socket at *path* and yield the client broker."""
    options = BrokerOptions.build("open_unix_broker", broker_options)
    stream = await trio.open_unix_socket(path)
    async with open_broker(stream, server=False, options=options) as broker:
        yield broker


async def _open_tcp_stream(host: str | bytes, port: int) -> trio.SocketStream:
    try:
        return await trio.open_tcp_stream(host, port)
    except OSError as exc:
        plain = _plain_connect_error(exc)
        if plain is exc:
            raise
        raise plain from None


def _plain_connect_error(exc: OSError) -> OSError:
    """The OSError that says why the connection failed, not trio's "all attempts failed".

    trio raises a plain :class:`OSError` caused by an ExceptionGroup of the
    errors of each address it tried.  When they all agree (one address, or
    every address refused), this is an error of that type, so that ``except
    ConnectionRefusedError`` works; otherwise it is *exc* itself.
    """
    group = exc.__cause__
    if exc.errno is not None or not isinstance(group, BaseExceptionGroup) or not group.exceptions:
        return exc
    errors = group.exceptions
    first = errors[0]
    if not isinstance(first, OSError) or not all(
        type(e) is type(first) and getattr(e, "errno", None) == first.errno for e in errors
    ):
        return exc
    if len(errors) == 1:
        return first
    plain = type(first)(first.errno, f"{exc}: {first.strerror}")
    plain.__cause__ = group
    return plain
