"""trio_pb: Twisted's Perspective Broker on trio, wire-compatible with Twisted PB.

The codecs (:mod:`trio_pb.banana`, :mod:`trio_pb.jelly`) are sans-IO; the
public names are re-exported here.
"""

from __future__ import annotations

from .broker import Broker, open_broker
from .cache import Cacheable, CacheUpdate, CacheUpdates, RemoteCache, RemoteCacheObserver
from .errors import (
    BananaError,
    DeadReferenceError,
    Error,
    InsecureJelly,
    JellyError,
    LoginFailed,
    NoSuchMethod,
    PBConnectionLost,
    ProtocolError,
    RemoteError,
    UnauthorizedLogin,
    UnhandledCredentials,
)
from .failures import register_error
from .flavors import Avatar, Copyable, Referenceable, RemoteCopy, Root, Viewable, ViewPoint
from .jelly import (
    CopyRegistry,
    SecurityOptions,
    global_security,
    set_unjellyable_factory_for_class,
    set_unjellyable_for_class,
    setUnjellyableFactoryForClass,
    setUnjellyableForClass,
)
from .references import RemoteMethod, RemoteReference

__version__ = "0.1.0.dev0"

__all__ = [
    "Avatar",
    "BananaError",
    "Broker",
    "CacheUpdate",
    "CacheUpdates",
    "Cacheable",
    "RemoteCache",
    "RemoteCacheObserver",
    "Referenceable",
    "RemoteMethod",
    "RemoteReference",
    "Root",
    "ViewPoint",
    "Viewable",
    "open_broker",
    "register_error",
    "CopyRegistry",
    "Copyable",
    "DeadReferenceError",
    "Error",
    "InsecureJelly",
    "JellyError",
    "LoginFailed",
    "NoSuchMethod",
    "PBConnectionLost",
    "ProtocolError",
    "RemoteCopy",
    "RemoteError",
    "SecurityOptions",
    "UnauthorizedLogin",
    "UnhandledCredentials",
    "global_security",
    "setUnjellyableFactoryForClass",
    "setUnjellyableForClass",
    "set_unjellyable_factory_for_class",
    "set_unjellyable_for_class",
]
