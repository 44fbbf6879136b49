"""Twisted's ``PBServerFactory`` and ``PBClientFactory``, trio-style, so that ported code keeps its shape.

A :class:`PBServerFactory` bundles a root (or a :class:`~trio_pb.cred.Portal`)
with broker options; :func:`~trio_pb.connect.serve_tcp` and
:func:`~trio_pb.connect.serve_unix` accept it in place of the root::

    await trio_pb.serve_tcp(trio_pb.PBServerFactory(portal, unsafeTracebacks=True), 8800)

A :class:`PBClientFactory` owns no callbacks: an ``async with`` block owns the
connection, and inside it ``getRootObject()`` and ``login()`` are awaited::

    async with trio_pb.PBClientFactory().connect_tcp("localhost", 8800) as factory:
        root = await factory.getRootObject()

:meth:`PBClientFactory.for_broker` wraps a broker opened some other way.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from .broker import Broker
from .connect import ServedRoot, open_tcp_broker, open_unix_broker
from .jelly import SecurityOptions
from .options import BrokerOptions
from .references import RemoteReference

__all__ = ["PBClientFactory", "PBServerFactory"]


class PBServerFactory(ServedRoot):
    """A root served with broker options: give it to ``serve_tcp`` / ``serve_unix`` in place of the root.

    *root* is what a server broker's root may be (a Referenceable, a
    :class:`~trio_pb.flavors.Root`, a :class:`~trio_pb.cred.Portal` ...).
    *unsafeTracebacks* and *security* are Twisted's arguments; any other
    keyword is a :func:`~trio_pb.broker.open_broker` option
    (:class:`~trio_pb.options.BrokerOptions`; an unknown one raises
    :class:`TypeError` here).  Options given to ``serve_tcp`` itself win
    over the factory's.
    """

    def __init__(
        self,
        root: Any,
        unsafeTracebacks: bool = False,  # noqa: N803 - Twisted's spelling
        security: SecurityOptions | None = None,
        **broker_options: Any,
    ) -> None:
        BrokerOptions.build("PBServerFactory", _options(unsafeTracebacks, security, broker_options))
        self.root = root
        self.unsafeTracebacks = unsafeTracebacks
        self.security = security
        self.broker_options = broker_options

    def options(self) -> dict[str, Any]:
        """The :func:`~trio_pb.broker.open_broker` options of this factory's connections."""
        return _options(self.unsafeTracebacks, self.security, self.broker_options)

    def __repr__(self) -> str:
        return f"PBServerFactory({self.root!r})"


class PBClientFactory:
    """One client connection, with Twisted's ``getRootObject`` / ``login`` / ``disconnect``, awaited.

    Connect it with ``async with factory.connect_tcp(host, port) as factory:``
    (or :meth:`connect_unix`), or wrap a broker you opened with
    :meth:`for_broker`; leaving the block closes the connection.  Before it
    is connected (or once it has been), its methods raise
    :class:`RuntimeError`.  *unsafeTracebacks* and *security* are Twisted's
    arguments; other keywords are :func:`~trio_pb.broker.open_broker`
    options (:class:`~trio_pb.options.BrokerOptions`; an unknown one raises
    :class:`TypeError` here).
    """

    def __init__(
        self,
        unsafeTracebacks: bool = False,  # noqa: N803 - Twisted's spelling
        security: SecurityOptions | None = None,
        **broker_options: Any,
    ) -> None:
        BrokerOptions.build("PBClientFactory", _options(unsafeTracebacks, security, broker_options))
        self.unsafeTracebacks = unsafeTracebacks
        self.security = security
        self.broker_options = broker_options
        #: The connection's broker while connected, else None.
        self.broker: Broker | None = None

    @classmethod
    def for_broker(cls, broker: Broker) -> PBClientFactory:
        """A factory using *broker*, a client broker connected some other way (it stays yours to close)."""
        factory = cls()
        factory.broker = broker
        return factory

    @asynccontextmanager
    async def connect_tcp(
        self,
        host: str | bytes,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> AsyncIterator[PBClientFactory]:
        """Connect as :func:`~trio_pb.connect.open_tcp_broker` does (TLS with *ssl_context*); yield self."""
        self._check_unconnected()
        async with (
            open_tcp_broker(
                host,
                port,
                ssl_context=ssl_context,
                server_hostname=server_hostname,
                **_options(self.unsafeTracebacks, self.security, self.broker_options),
            ) as broker,
            self._connected(broker),
        ):
            yield self

    @asynccontextmanager
    async def connect_unix(self, path: str | os.PathLike[str]) -> AsyncIterator[PBClientFactory]:
        """Connect to the unix socket at *path*; yield self."""
        self._check_unconnected()
        async with (
            open_unix_broker(
                path, **_options(self.unsafeTracebacks, self.security, self.broker_options)
            ) as broker,
            self._connected(broker),
        ):
            yield self

    def _check_unconnected(self) -> None:
        if self.broker is not None:
            raise RuntimeError("this PBClientFactory is already connected")

    @asynccontextmanager
    async def _connected(self, broker: Broker) -> AsyncIterator[None]:
        self.broker = broker
        try:
            yield
        finally:
            self.broker = None

    def _broker(self) -> Broker:
        if self.broker is None:
            raise RuntimeError("this PBClientFactory is not connected: use it inside connect_tcp()")
        return self.broker

    async def get_root_object(self) -> RemoteReference:
        """The server's root object (Twisted's ``getRootObject``)."""
        return await self._broker().root_object()

    getRootObject = get_root_object

    async def login(self, credentials: Any, client: Any = None) -> RemoteReference:
        """Log in with *credentials*, *client* being the mind; see :func:`trio_pb.login.login`."""
        return await self._broker().login(credentials, client)

    async def disconnect(self) -> None:
        """Close the connection now; outstanding calls fail with :class:`~trio_pb.errors.PBConnectionLost`."""
        await self._broker().aclose()


def _options(
    unsafe_tracebacks: bool, security: SecurityOptions | None, others: dict[str, Any]
) -> dict[str, Any]:
    """Twisted's factory arguments as :func:`~trio_pb.broker.open_broker` options, with *others*."""
    options = {"unsafe_tracebacks": unsafe_tracebacks, **others}
    if security is not None:
        options.setdefault("security", security)
    return options
