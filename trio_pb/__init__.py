"""trio_pb: Twisted's Perspective Broker on trio, wire-compatible with Twisted PB.

The codecs (:mod:`trio_pb.banana`, :mod:`trio_pb.jelly`) and the protocol
(:mod:`trio_pb.protocol`) are sans-IO and import no trio; the public names
are re-exported here.  Those of the trio layer (the broker, references,
caches, login, connecting) are imported when first used, so that
``import trio_pb.protocol`` works where trio is not installed.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from ._caches import Cacheable, CacheUpdate, RemoteCacheObserver
from .errors import (
    BananaDecodeError,
    BananaEncodeError,
    BananaError,
    DeadReferenceError,
    DecodeBudgetExceeded,
    DisconnectedError,
    Error,
    InsecureJelly,
    JellyError,
    LocalProtocolError,
    LoginFailed,
    LoginThrottled,
    NoSuchMethod,
    PBConnectionLost,
    PBError,
    PeerUnresponsive,
    ProtocolError,
    RemoteError,
    SerializationError,
    StreamsUnsupported,
    TooManyCalls,
    TooManyViolations,
    UnauthorizedLogin,
    UnhandledCredentials,
)
from .failures import CopyableFailure, failure2Copyable, register_error
from .flavors import (
    AsReferenceable,
    Avatar,
    Copyable,
    IPBRoot,
    Referenceable,
    RemoteCopy,
    Root,
    Serializable,
    Viewable,
    ViewPoint,
)
from .jelly import (
    CopyRegistry,
    SecurityOptions,
    global_security,
    set_unjellyable_factory_for_class,
    set_unjellyable_for_class,
    setUnjellyableFactoryForClass,
    setUnjellyableForClass,
)
from .options import BrokerOptions, BrokerStatistics
from .trace import TraceEvent, log_trace
from .typed import BadArguments, TypedReference, check_implements, implements

# A library does not configure logging: without this, an application that has
# not configured it either would see trio_pb's warnings on stderr (logging's
# last-resort handler).  The application's own handlers still get every record.
logging.getLogger("trio_pb").addHandler(logging.NullHandler())

if TYPE_CHECKING:
    from .broker import Broker, open_broker
    from .cache import CacheUpdates, RemoteCache
    from .connect import open_tcp_broker, open_unix_broker, serve_tcp, serve_unix
    from .cred import (
        AllowAnonymousAccess,
        Anonymous,
        FilePasswordChecker,
        InMemoryPasswordChecker,
        LoginLimiter,
        Portal,
        Realm,
        UsernamePassword,
    )
    from .factories import PBClientFactory, PBServerFactory
    from .login import challenge, respond
    from .paging import PageCollector, PagingError, get_all_pages, send_pages
    from .reconnect import (
        Backoff,
        ReconnectingBroker,
        open_reconnecting,
        open_reconnecting_broker,
        open_reconnecting_unix_broker,
    )
    from .references import RemoteMethod, RemoteReference

# The trio layer's names, by the module that defines them: imported on first
# use (PEP 562), so that the sans-IO core can be imported without trio.
_LAZY: dict[str, str] = {
    "AllowAnonymousAccess": "cred",
    "Anonymous": "cred",
    "Backoff": "reconnect",
    "Broker": "broker",
    "CacheUpdates": "cache",
    "FilePasswordChecker": "cred",
    "InMemoryPasswordChecker": "cred",
    "LoginLimiter": "cred",
    "PBClientFactory": "factories",
    "PBServerFactory": "factories",
    "PageCollector": "paging",
    "PagingError": "paging",
    "Portal": "cred",
    "Realm": "cred",
    "ReconnectingBroker": "reconnect",
    "RemoteCache": "cache",
    "RemoteMethod": "references",
    "RemoteReference": "references",
    "UsernamePassword": "cred",
    "challenge": "login",
    "get_all_pages": "paging",
    "open_broker": "broker",
    "open_reconnecting": "reconnect",
    "open_reconnecting_broker": "reconnect",
    "open_reconnecting_unix_broker": "reconnect",
    "open_tcp_broker": "connect",
    "open_unix_broker": "connect",
    "respond": "login",
    "send_pages": "paging",
    "serve_tcp": "connect",
    "serve_unix": "connect",
}

#: The package's version, written here only: pyproject.toml reads it from this line (statically,
#: without importing trio_pb), so it is the same in an editable install, a wheel and a checkout.
__version__ = "0.1.0.dev0"

__all__ = [
    "AllowAnonymousAccess",
    "Anonymous",
    "AsReferenceable",
    "Avatar",
    "Backoff",
    "BadArguments",
    "BananaDecodeError",
    "BananaEncodeError",
    "BananaError",
    "Broker",
    "BrokerOptions",
    "BrokerStatistics",
    "CacheUpdate",
    "CacheUpdates",
    "Cacheable",
    "CopyRegistry",
    "Copyable",
    "CopyableFailure",
    "DeadReferenceError",
    "DecodeBudgetExceeded",
    "DisconnectedError",
    "Error",
    "FilePasswordChecker",
    "IPBRoot",
    "InMemoryPasswordChecker",
    "InsecureJelly",
    "JellyError",
    "LocalProtocolError",
    "LoginFailed",
    "LoginLimiter",
    "LoginThrottled",
    "NoSuchMethod",
    "PBClientFactory",
    "PBConnectionLost",
    "PBError",
    "PBServerFactory",
    "PageCollector",
    "PagingError",
    "PeerUnresponsive",
    "Portal",
    "ProtocolError",
    "Realm",
    "ReconnectingBroker",
    "Referenceable",
    "RemoteCache",
    "RemoteCacheObserver",
    "RemoteCopy",
    "RemoteError",
    "StreamsUnsupported",
    "TooManyCalls",
    "TooManyViolations",
    "RemoteMethod",
    "RemoteReference",
    "Root",
    "SecurityOptions",
    "SerializationError",
    "Serializable",
    "TraceEvent",
    "TypedReference",
    "UnauthorizedLogin",
    "UnhandledCredentials",
    "UsernamePassword",
    "ViewPoint",
    "Viewable",
    "challenge",
    "check_implements",
    "failure2Copyable",
    "get_all_pages",
    "global_security",
    "implements",
    "log_trace",
    "open_broker",
    "open_reconnecting",
    "open_reconnecting_broker",
    "open_reconnecting_unix_broker",
    "open_tcp_broker",
    "open_unix_broker",
    "register_error",
    "respond",
    "send_pages",
    "serve_tcp",
    "serve_unix",
    "setUnjellyableFactoryForClass",
    "setUnjellyableForClass",
    "set_unjellyable_factory_for_class",
    "set_unjellyable_for_class",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # once imported, found without this hook
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
