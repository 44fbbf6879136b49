"""Named objects (the root, setNameForLocal / remoteForName) against real Twisted PB, both directions."""

from __future__ import annotations

import gc
from typing import Any

import pytest
import trio
from peers import twisted_client_against, twisted_server

from trio_pb import errors
from trio_pb.broker import Broker, open_broker
from trio_pb.flavors import Referenceable, Root


class Named(Referenceable):
    def __init__(self, label: str) -> None:
        self.label = label

    def remote_label(self) -> str:
        return self.label


async def test_trio_pb_passes_named_references_back_to_twisted() -> None:
    async with twisted_server("twisted_names_peer.py", "server") as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with open_broker(stream, server=False) as broker:
            root = await broker.root_object()
            # Sent back as [b"local", b"root"]: Twisted finds its root by the name.
            assert await root.call_remote("which", root) == "root"
            # Twisted named one object by a str, one by bytes: both are UTF-8 bytes on the wire.
            for name, label in (("ys", "ys"), (b"ys", "ys"), ("yb", "yb"), (b"yb", "yb")):
                named = broker.remote_for_name(name)
                assert await named.call_remote("label") == label
                assert await root.call_remote("which", named) == label
            # Twisted's answer to a name it does not know: None.
            assert await root.call_remote("which", broker.remote_for_name("nobody")) == "None"
            # Twisted asks for our object by a str or a bytes name; we named it by a str.
            broker.set_name_for_local("cs", Named("client's"))
            assert await root.call_remote("call_back", "cs") == "client's"
            assert await root.call_remote("call_back", b"cs") == "client's"
            with pytest.raises(errors.Error, match="Invalid Object ID"):
                await root.call_remote("call_back", "other")
            # Named references are never given back: Twisted would forget the
            # object on a decref of its name.
            await named.release()
            del named
            gc.collect()
            await trio.sleep(0.2)
            assert await root.call_remote("names") == ["b'root'", "b'yb'", "b'ys'"]
            assert await broker.remote_for_name("ys").call_remote("label") == "ys"


class NamingRoot(Root):
    """A root that names two objects on each connection and says which come back."""

    def root_object(self, broker: Broker) -> NamingRoot:
        root = NamingRoot()
        root.broker = broker
        root.ys, root.yb = Named("ys"), Named("yb")
        broker.set_name_for_local("ys", root.ys)
        broker.set_name_for_local(b"yb", root.yb)
        return root

    def remote_which(self, obj: Any) -> str:
        for label, known in (("root", self), ("ys", self.ys), ("yb", self.yb)):
            if obj is known:
                return label
        return repr(obj)

    async def remote_call_back(self, name: str | bytes) -> Any:
        return await self.broker.remote_for_name(name).call_remote("label")

    def remote_names(self) -> list[str]:
        return sorted(repr(key) for key in self.broker._protocol.local_objects)


async def test_twisted_passes_named_references_back_to_trio_pb() -> None:
    lines = await twisted_client_against(NamingRoot(), "twisted_names_peer.py", "client")
    assert lines == [
        "root root",
        "named 'ys' ys ys",
        "named b'ys' ys ys",
        "named 'yb' yb yb",
        "named b'yb' yb yb",
        "unknown None",
        "call_back client's client's",
        "names [\"b'root'\", \"b'yb'\", \"b'ys'\"]",
        "done",
    ]
