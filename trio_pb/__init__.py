"""trio_pb: Twisted's Perspective Broker on trio, wire-compatible with Twisted PB.

The codecs (:mod:`trio_pb.banana`, :mod:`trio_pb.jelly`) are sans-IO; the
public names are re-exported here.
"""

from __future__ import annotations

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
from .flavors import Copyable, RemoteCopy
from .jelly import (
    CopyRegistry,
    SecurityOptions,
    global_security,
    set_unjellyable_factory_for_class,
    set_unjellyable_for_class,
    setUnjellyableFactoryForClass,
    setUnjellyableForClass,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "BananaError",
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
