"""Objects reached by name (the root, set_name_for_local / remote_for_name), trio_pb at both ends."""

from __future__ import annotations

from typing import Any

import pytest

from trio_pb import errors
from trio_pb.broker import Broker
from trio_pb.flavors import Referenceable, Root
from trio_pb.testing import open_broker_pair

pytestmark = pytest.mark.usefixtures("each_transport")


class Named(Referenceable):
    def __init__(self, label: str) -> None:
        self.label = label

    def remote_label(self) -> str:
        return self.label


class Server(Root):
    """A root that tells which of its own objects came back to it."""

    def __init__(self) -> None:
        self.named = Named("named")

    def root_object(self, broker: Broker) -> Server:
        self.broker = broker
        return self

    def remote_which(self, obj: Any) -> str:
        if obj is self:
            return "root"
        if obj is self.named:
            return "named"
        return repr(obj)

    def remote_which_all(self, objs: list[Any]) -> list[str]:
        return [self.remote_which(objs[0]), self.remote_which(objs[1]["r"])]

    async def remote_call_back(self, name: Any) -> str:
        # Reach an object the client named, by a str or a bytes name.
        result: str = await self.broker.remote_for_name(name).call_remote("label")
        return result


async def test_root_passed_back_to_its_owner_is_the_root_itself() -> None:
    async with open_broker_pair(Server()) as (client, server):
        root = await client.root_object()
        assert await root.call_remote("which", root) == "root"
        # Inside a container too, and more than once.
        assert await root.call_remote("which_all", [root, {"r": root}]) == ["root", "root"]
        # Named references are not counted: nothing was registered on the way.
        assert set(server._protocol.local_objects) == {b"root"}


@pytest.mark.parametrize("name", [b"ys", "ys"])
async def test_named_reference_passed_back_to_its_owner(name: bytes | str) -> None:
    server_root = Server()
    async with open_broker_pair(server_root) as (client, server):
        server.set_name_for_local(name, server_root.named)
        await client.root_object()
        named = client.remote_for_name(name)
        assert named.luid == b"ys"
        assert await named.call_remote("label") == "named"
        root = await client.root_object()
        assert await root.call_remote("which", named) == "named"
        # A str name asks for the same object as its UTF-8 bytes.
        assert await client.remote_for_name(b"ys").call_remote("label") == "named"


async def test_str_names_are_utf8_both_ways() -> None:
    async with open_broker_pair(Server()) as (client, server):
        client.set_name_for_local("näme", Named("client's"))
        assert b"n\xc3\xa4me" in client._protocol.local_objects
        root = await client.root_object()
        assert await root.call_remote("call_back", "näme") == "client's"
        assert await root.call_remote("call_back", "näme".encode()) == "client's"
        with pytest.raises(errors.Error, match="Invalid Object ID"):
            await root.call_remote("call_back", "other")


async def test_a_name_the_owner_does_not_know_comes_back_as_none() -> None:
    async with open_broker_pair(Server()) as (client, server):
        root = await client.root_object()
        # As in Twisted, a ``local`` token for an unknown name unjellies to None.
        assert await root.call_remote("which", client.remote_for_name(b"nobody")) == "None"
        assert client.connected and server.connected


async def test_named_references_are_never_given_back() -> None:
    server_root = Server()
    async with open_broker_pair(server_root) as (client, server):
        server.set_name_for_local(b"ys", server_root.named)
        named = client.remote_for_name(b"ys")
        assert await named.call_remote("label") == "named"
        # Releasing a named reference sends no decref: the name stays callable.
        await named.release()
        del named
        root = await client.root_object()
        await root.release()
        assert await client.remote_for_name(b"ys").call_remote("label") == "named"
        assert await root.call_remote("which", root) == "root"
        assert set(server._protocol.local_objects) == {b"root", b"ys"}
