"""trio_pb: Twisted's Perspective Broker on trio, wire-compatible with Twisted PB.

The codecs (:mod:`trio_pb.banana`, :mod:`trio_pb.jelly`) are sans-IO; the
public names are re-exported here.
"""

from __future__ import annotations

from .broker import Broker, BrokerOptions, BrokerStatistics, open_broker
from .cache import Cacheable, CacheUpdate, CacheUpdates, RemoteCache, RemoteCacheObserver
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
from .errors import (
    BananaError,
    DeadReferenceError,
    DecodeBudgetExceeded,
    Error,
    InsecureJelly,
    JellyError,
    LoginFailed,
    LoginThrottled,
    NoSuchMethod,
    PBConnectionLost,
    PeerUnresponsive,
    ProtocolError,
    RemoteError,
    TooManyCalls,
    TooManyViolations,
    UnauthorizedLogin,
    UnhandledCredentials,
)
from .factories import PBClientFactory, PBServerFactory
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
from .login import challenge, respond
from .paging import PageCollector, PagingError, get_all_pages, send_pages
from .references import RemoteMethod, RemoteReference

__version__ = "0.1.0.dev0"

__all__ = [
    "AllowAnonymousAccess",
    "Anonymous",
    "AsReferenceable",
    "Avatar",
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
    "Error",
    "FilePasswordChecker",
    "IPBRoot",
    "InMemoryPasswordChecker",
    "InsecureJelly",
    "JellyError",
    "LoginFailed",
    "LoginLimiter",
    "LoginThrottled",
    "NoSuchMethod",
    "PBClientFactory",
    "PBConnectionLost",
    "PBServerFactory",
    "PageCollector",
    "PagingError",
    "PeerUnresponsive",
    "Portal",
    "ProtocolError",
    "Realm",
    "Referenceable",
    "RemoteCache",
    "RemoteCacheObserver",
    "RemoteCopy",
    "RemoteError",
    "TooManyCalls",
    "TooManyViolations",
    "RemoteMethod",
    "RemoteReference",
    "Root",
    "SecurityOptions",
    "Serializable",
    "UnauthorizedLogin",
    "UnhandledCredentials",
    "UsernamePassword",
    "ViewPoint",
    "Viewable",
    "challenge",
    "failure2Copyable",
    "get_all_pages",
    "global_security",
    "open_broker",
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
