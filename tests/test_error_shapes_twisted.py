"""What errors cross the wire as, against real Twisted PB, in both directions.

An error that is a Copyable, or of a class the security options allow,
reaches a Twisted caller as that class (``isinstance`` works there); the
reference quota's goodbye is an error answer before the connection closes,
whichever end says it.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from functools import partial

import pytest
import trio
from peers import run_twisted_client, twisted_server

from trio_pb import errors
from trio_pb.broker import open_broker
from trio_pb.connect import serve_tcp
from trio_pb.flavors import Copyable, Referenceable, RemoteCopy, Root
from trio_pb.jelly import CopyRegistry, global_security


class CopiedError(errors.Error, Copyable, RemoteCopy):
    """The Twisted peer's ``shapes.CopiedError``: an error sent by copy."""

    def __init__(self, code: int) -> None:
        super().__init__(f"code {code}")
        self.code = code

    def get_type_to_copy(self) -> bytes:
        return b"shapes.CopiedError"


class SecErr(errors.Error):
    """The Twisted peer's ``__main__.SecErr``, sent as itself because its class is allowed."""


# The same wire name as the Twisted peer's class, which lives in its __main__.
SecErr.__module__ = "__main__"

SECURITY = global_security.copy()
SECURITY.allow_instances_of(SecErr)


class Thing(Referenceable):
    def remote_name(self) -> str:
        return "thing"


class Raiser(Root):
    def remote_copied(self, code: int) -> None:
        raise CopiedError(code)

    def remote_allowed(self) -> None:
        error = SecErr()
        error.reason = "allowed"  # type: ignore[attr-defined]
        raise error

    def remote_many(self) -> Thing:
        return Thing()


QUOTA_LINES = [
    # The root is a named object: 1024 references fit beside it.
    "references 1024",
    *["refused twisted.spread.pb.Error Maximum PB reference count exceeded."] * 3,
    "refused twisted.spread.pb.Error Maximum PB reference count exceeded.  Goodbye.",
    "then closed",
]


async def test_a_twisted_client_gets_errors_as_themselves_and_the_goodbye() -> None:
    lines = await twisted_client_against_secured(Raiser())
    assert lines == ["copied CopiedError 7", "allowed SecErr allowed", *QUOTA_LINES]


async def twisted_client_against_secured(root: Root) -> list[str]:
    """Like ``peers.twisted_client_against``, with a server whose security allows :class:`SecErr`."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(serve_tcp, root, 0, host="127.0.0.1", security=SECURITY))
        port = listeners[0].socket.getsockname()[1]
        lines = await run_twisted_client("twisted_errors_peer.py", "client", str(port))
        nursery.cancel_scope.cancel()
    return lines


@pytest.fixture
async def twisted_port() -> AsyncIterator[int]:
    async with twisted_server("twisted_errors_peer.py", "server") as port:
        yield port


async def test_a_trio_pb_client_gets_twisteds_errors_as_themselves_and_its_goodbye(
    twisted_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Unjelly finds an allowed class by its name: here, SecErr must be __main__.SecErr.
    monkeypatch.setattr(sys.modules["__main__"], "SecErr", SecErr, raising=False)
    registry = CopyRegistry()
    registry.register(b"shapes.CopiedError", CopiedError)
    stream = await trio.open_tcp_stream("127.0.0.1", twisted_port)
    async with open_broker(stream, server=False, registry=registry, security=SECURITY) as broker:
        root = await broker.root_object()
        with pytest.raises(CopiedError) as copied:
            await root.call_remote("copied", 7)
        assert copied.value.code == 7
        with pytest.raises(SecErr) as allowed:
            await root.call_remote("allowed")
        assert allowed.value.reason == "allowed"  # type: ignore[attr-defined]
        held = [await root.call_remote("many") for _ in range(1024)]
        for _ in range(3):
            with pytest.raises(errors.Error) as info:
                await root.call_remote("many")
            assert str(info.value) == "Maximum PB reference count exceeded."
        with pytest.raises(errors.Error) as info:
            await root.call_remote("many")
        assert str(info.value) == "Maximum PB reference count exceeded.  Goodbye."
        with trio.fail_after(10):
            await broker.wait_closed()
        assert len(held) == 1024
