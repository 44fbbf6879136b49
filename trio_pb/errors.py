"""Every exception trio_pb raises, in one tree.

The names follow Twisted PB so that ported code reads the same; where Twisted
spreads its errors over several modules (``pb``, ``jelly``, ``banana``,
``cred.error``), trio_pb keeps them here.  Everything is under
:class:`PBError`, and what a failure means for the connection is told by one
``isinstance`` check:

* :class:`LocalProtocolError`: this side used the API wrongly; nothing was sent.
* :class:`SerializationError`: a value cannot be sent or received; one call fails.
* :class:`ProtocolError`: the peer broke the protocol; the connection closes.
* :class:`DisconnectedError`: the connection is gone (or going).

docs/internals.rst ("Errors") has the picture and the reasons.
"""

from __future__ import annotations

__all__ = [
    "BananaDecodeError",
    "BananaEncodeError",
    "BananaError",
    "CancelledByCaller",
    "DeadReferenceError",
    "DecodeBudgetExceeded",
    "DisconnectedError",
    "Error",
    "InsecureJelly",
    "JellyError",
    "LocalProtocolError",
    "LoginFailed",
    "LoginThrottled",
    "NoSuchMethod",
    "PBConnectionLost",
    "PBError",
    "PeerUnresponsive",
    "ProtocolError",
    "RemoteError",
    "SerializationError",
    "StreamsUnsupported",
    "TooManyCalls",
    "TooManyViolations",
    "UnauthorizedLogin",
    "UnhandledCredentials",
]


class PBError(Exception):
    """The root of every exception trio_pb raises on purpose: ``except PBError`` catches them all."""


class Error(PBError):
    """An error a remote method raises on purpose, for its caller to handle.

    Subclasses of ``Error`` are the "expected" failures of an API (Twisted's
    ``pb.Error``): the broker sends them to the caller without logging them.
    """


class LocalProtocolError(PBError):
    """This side used the API wrongly (as h11's ``LocalProtocolError``): nothing was sent, nothing broke."""


class StreamsUnsupported(LocalProtocolError):
    """A remote stream was asked of a peer that does not speak ``trio-pb-2`` (Twisted, an older trio_pb).

    Nothing was sent; the connection is still usable for calls.
    """


class SerializationError(PBError):
    """A value cannot be sent, or what arrived cannot be turned back into one: that one call fails.

    Raised before anything is sent (so the connection is unharmed), or for one
    message the peer sent whose framing was fine (the call or answer it carried
    fails, the connection goes on).
    """


class ProtocolError(PBError):
    """The peer broke the rules of the PB protocol; the connection is closed.

    Twisted's ``pb.ProtocolError``: a statement received that is not valid.
    """


class DisconnectedError(PBError):
    """The connection is closed or was lost: nothing more goes through it."""


class BananaError(PBError):
    """Banana cannot carry a value, or bytes are not valid banana (Twisted's ``banana.BananaError``).

    trio_pb raises one of its two subclasses, which tell the cases apart:
    :class:`BananaEncodeError` (a :class:`SerializationError`) and
    :class:`BananaDecodeError` (a :class:`ProtocolError`).  A peer's error
    answer of Twisted's class arrives as this base.
    """


class BananaEncodeError(BananaError, SerializationError):
    """A value banana cannot send (too large, nested too deep, an unknown type); nothing was sent."""


class BananaDecodeError(BananaError, ProtocolError):
    """Bytes received that are not valid banana or break its limits; the connection is closed."""


class JellyError(SerializationError):
    """An s-expression that is not valid jelly, or a value jelly cannot carry."""


class InsecureJelly(JellyError):
    """Unjellying would create something the security options do not allow."""


class DecodeBudgetExceeded(ProtocolError):
    """A message took more work to decode than its size allows: an attack, so the connection is closed.

    Not a :class:`JellyError`: a message that fails to unjelly costs one call,
    but a peer that makes us spend time on purpose loses its connection.
    """


class TooManyViolations(ProtocolError):
    """The peer broke the protocol more often than its connection allows; the connection is closed."""


class DeadReferenceError(DisconnectedError):
    """A call went to a broker whose connection is closed or was lost."""


class PBConnectionLost(DeadReferenceError):
    """The connection was lost while a call was waiting for its answer."""


class PeerUnresponsive(DisconnectedError):
    """Keepalive saw no sign of life from the peer, not even an answer to a ping, and closed the connection.

    Found in :attr:`Broker.error <trio_pb.broker.Broker.error>`; the calls that
    were waiting fail with :class:`PBConnectionLost`.
    """


class NoSuchMethod(PBError, AttributeError):
    """The remote object has no method of the name that was called."""


class RemoteError(PBError):
    """An exception raised by the peer that has no registered local class.

    ``remote_type`` is the qualified name of the remote exception's class
    (bytes, as on the wire), ``remote_traceback`` the traceback text the peer
    chose to send, and ``parents`` the qualified names of its classes.
    """

    def __init__(
        self,
        remote_type: bytes,
        value: str,
        remote_traceback: str = "",
        parents: tuple[str, ...] = (),
    ) -> None:
        super().__init__(value)
        self.remote_type = remote_type
        self.value = value
        self.remote_traceback = remote_traceback
        self.parents = parents

    # Twisted's spellings, for ported code.
    @property
    def remoteType(self) -> bytes:
        return self.remote_type

    @property
    def remoteTraceback(self) -> str:
        return self.remote_traceback

    def __str__(self) -> str:
        return f"{self.remote_type.decode('utf-8', 'replace')}: {self.value}"


class CancelledByCaller(Error):
    """A call's ``async def`` method was cancelled because its caller stopped waiting or its deadline passed.

    A trio_pb server answers with it so that both sides are done with the
    request id.  A caller that gave up drops it, and one whose deadline
    passed (or whose scope was cancelled) as it arrived sees
    :class:`trio.Cancelled` instead.  So it is raised in a caller only when
    the peer saw the deadline pass first (its clock ran ahead, or the
    caller moved its deadline later after calling), or when a method raised
    it itself.
    """


class TooManyCalls(Error):
    """The peer refused a call because too many of this connection's calls are running already.

    Nothing of the call ran; it may be sent again once earlier calls are answered.
    """


class LoginFailed(Error):
    """A login was refused."""


class UnauthorizedLogin(LoginFailed):
    """The credentials were wrong: unknown user or bad password."""


class LoginThrottled(UnauthorizedLogin):
    """Too many failed logins for this username or from this address: refused without checking.

    Raised by :meth:`Portal.login <trio_pb.cred.Portal.login>` when its
    :class:`~trio_pb.cred.LoginLimiter` has no budget left; *retry_after* is
    how many seconds until it has.  Over PB the client receives a plain
    :class:`UnauthorizedLogin` with this message, exactly as Twisted sends one.
    """

    def __init__(self, message: str = "too many failed logins", retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UnhandledCredentials(LoginFailed):
    """No checker of the portal can verify this kind of credentials."""
