"""Typed remote interfaces at run time: typed references, implements(), check_implements(), validation."""

from __future__ import annotations

from typing import Any, Optional, Protocol, Union

import pytest
import trio

import trio_pb
from trio_pb.cred import AllowAnonymousAccess, Anonymous, Portal
from trio_pb.testing import open_broker_pair

# Every test runs over memory streams and over real sockets (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("each_transport")


class Calculator(Protocol):
    async def add(self, a: int, b: int) -> int: ...

    async def scale(self, values: list[float], factor: float = 2.0) -> list[float]: ...


class Named(Protocol):
    async def name(self) -> str: ...


class Both(Calculator, Named, Protocol):
    async def label(self, text: Optional[str], *, upper: bool = False) -> str: ...  # noqa: UP045


@trio_pb.implements(Calculator)
class Calc(trio_pb.Root):
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def remote_add(self, a: int, b: int) -> int:
        self.calls.append(("add", a, b))
        return a + b

    async def remote_scale(self, values: list[float], factor: float = 2.0) -> list[float]:
        await trio.lowlevel.checkpoint()
        return [value * factor for value in values]

    def remote_undeclared(self) -> str:
        return "served, but not in the interface"


async def test_a_typed_reference_makes_the_remote_calls() -> None:
    calc = Calc()
    async with open_broker_pair(calc) as (client, _server):
        remote = (await client.root_object()).typed(Calculator)
        assert await remote.add(1, 2) == 3
        assert await remote.add(a=5, b=6) == 11
        assert await remote.scale([1.0, 2.5]) == [2.0, 5.0]
        assert await remote.scale([1.0], factor=3.0) == [3.0]
        assert calc.calls == [("add", 1, 2), ("add", 5, 6)]
        assert isinstance(remote, trio_pb.TypedReference)
        assert "Calculator" in repr(remote)
        assert dir(remote) == ["add", "scale"]


async def test_a_name_the_interface_lacks_fails_locally() -> None:
    calc = Calc()
    async with open_broker_pair(calc) as (client, server):
        remote = (await client.root_object()).typed(Calculator)
        with pytest.raises(AttributeError, match=r"Calculator has no remote method 'ad'"):
            remote.ad(1, 2)  # type: ignore[attr-defined]
        # Served by the object, but not declared: refused before anything is sent.
        with pytest.raises(AttributeError, match="undeclared"):
            remote.undeclared()  # type: ignore[attr-defined]
        assert calc.calls == []
        assert server.statistics().calls_running == 0
        assert await remote.add(1, 1) == 2  # the connection is as it was


async def test_interfaces_inherit_methods() -> None:
    @trio_pb.implements(Both)
    class Full(trio_pb.Root):
        def remote_add(self, a: int, b: int) -> int:
            return a + b

        def remote_scale(self, values: list[float], factor: float = 2.0) -> list[float]:
            return values

        def remote_name(self) -> str:
            return "full"

        def remote_label(self, text: Optional[str], *, upper: bool = False) -> str:  # noqa: UP045
            return (text or "").upper() if upper else (text or "")

    async with open_broker_pair(Full()) as (client, _server):
        remote = (await client.root_object()).typed(Both)
        assert await remote.name() == "full"
        assert await remote.label("x", upper=True) == "X"
        assert await remote.add(2, 3) == 5


async def test_the_remote_error_of_a_typed_call_is_raised() -> None:
    class Failing(Protocol):
        async def fail(self) -> None: ...

    class Server(trio_pb.Root):
        def remote_fail(self) -> None:
            raise trio_pb.Error("no")

    async with open_broker_pair(Server()) as (client, _server):
        remote = (await client.root_object()).typed(Failing)
        with pytest.raises(trio_pb.Error, match="no"):
            await remote.fail()


async def test_avatars_and_viewables_serve_interfaces_with_their_prefixes() -> None:
    class Board(Protocol):
        async def post(self, text: str) -> int: ...

    class Lobby(Protocol):
        async def board(self) -> Any: ...

        async def whoami(self) -> str: ...

    @trio_pb.implements(Board, validate=True)
    class Wall(trio_pb.Viewable):
        def view_post(self, perspective: Any, text: str) -> int:
            return len(text) if perspective is not None else -1

    @trio_pb.implements(Lobby)
    class Guest(trio_pb.Avatar):
        def perspective_board(self) -> Wall:
            return Wall()

        def perspective_whoami(self) -> str:
            return "guest"

    class Realm:
        def request_avatar(self, avatar_id: object, mind: object) -> tuple[Guest, None]:
            return Guest(), None

    async with open_broker_pair(Portal(Realm(), [AllowAnonymousAccess()])) as (client, _server):
        lobby = (await client.login(Anonymous())).typed(Lobby)
        assert await lobby.whoami() == "guest"
        board = (await lobby.board()).typed(Board)
        assert await board.post("hello") == 5
        # Validated after the perspective, which the view_ method takes first.
        with pytest.raises(trio_pb.BadArguments, match=r"Board\.post: argument 'text' must be str, not int"):
            await board.post(5)  # type: ignore[arg-type]


def test_check_implements_names_every_mismatch() -> None:
    class Wrong(trio_pb.Root):
        def remote_add(self, a: int, c: int) -> int:
            return a + c

        def remote_scale(self, values: list[str], factor: float) -> str:
            return ""

    with pytest.raises(TypeError) as caught:
        trio_pb.check_implements(Wrong, Calculator)
    message = str(caught.value)
    assert message.splitlines() == [
        "Wrong does not implement its interface:",
        "  Wrong.remote_add (for Calculator.add) takes (a, c), the interface (a, b)",
        "  Wrong.remote_scale (for Calculator.scale): "
        "parameter 'factor' needs a default, as in the interface",
        "  Wrong.remote_scale (for Calculator.scale): "
        "parameter 'values' is list[str], the interface says list[float]",
        "  Wrong.remote_scale (for Calculator.scale) returns str, the interface says list[float]",
    ]


def test_missing_methods_and_extra_parameters_are_reported() -> None:
    class Partial(trio_pb.Root):
        def remote_add(self, a: int, b: int, c: int) -> int:
            return a + b + c

    with pytest.raises(TypeError) as caught:
        trio_pb.check_implements(Partial, Calculator)
    problems = str(caught.value)
    assert "has a parameter 'c' the interface does not pass" in problems
    assert "Partial has no remote_scale (for Calculator.scale)" in problems

    class Avatarish(trio_pb.Avatar):
        def remote_add(self, a: int, b: int) -> int:  # the wrong prefix for an Avatar
            return a + b

    with pytest.raises(TypeError) as caught:
        trio_pb.check_implements(Avatarish, Calculator)
    problems = str(caught.value)
    assert "Avatarish has no perspective_add (for Calculator.add)" in problems


def test_implements_checks_when_the_class_is_made() -> None:
    with pytest.raises(TypeError, match=r"has no remote_scale"):

        @trio_pb.implements(Calculator)
        class Half(trio_pb.Root):
            def remote_add(self, a: int, b: int) -> int:
                return a + b

    with pytest.raises(TypeError, match="declares no interface"):
        trio_pb.check_implements(trio_pb.Root)
    with pytest.raises(TypeError, match="an interface is a class"):
        trio_pb.implements("Calculator")  # type: ignore[arg-type]


def test_loose_signatures_pass() -> None:
    # Unannotated methods, *args/**kwargs, async or not: only what can be compared is.
    @trio_pb.implements(Calculator)
    class Loose(trio_pb.Root):
        async def remote_add(self, a, b):  # type: ignore[no-untyped-def]
            return a + b

        def remote_scale(self, *args: Any, **kwargs: Any) -> Any:
            return args

    trio_pb.check_implements(Loose)


class Typed(Protocol):
    async def store(self, key: str, value: Union[int, bytes, None]) -> int: ...  # noqa: UP007

    async def many(self, pairs: dict[str, tuple[int, ...]], tags: set[str] | None = None) -> int: ...


@trio_pb.implements(Typed, validate=True)
class Store(trio_pb.Root):
    def __init__(self) -> None:
        self.ran: list[str] = []

    def remote_store(self, key: str, value: int | bytes | None) -> int:
        self.ran.append(key)
        return 1

    async def remote_many(self, pairs: dict[str, tuple[int, ...]], tags: set[str] | None = None) -> int:
        self.ran.append("many")
        return len(pairs)


async def test_validation_refuses_wrong_arguments_before_the_method_runs() -> None:
    store = Store()
    async with open_broker_pair(store) as (client, server):
        root = await client.root_object()
        remote = root.typed(Typed)
        assert await remote.store("a", 1) == 1
        assert await remote.store("b", b"x") == 1
        assert await remote.store("c", None) == 1
        assert await remote.many({"x": (1, 2), "y": ()}, tags={"t"}) == 2
        refused = [
            (("store", 1, 1), {}, "Typed.store: argument 'key' must be str, not int"),
            (("store", "k", "text"), {}, "argument 'value' must be int | bytes | None, not str"),
            (("store", "k"), {}, "missing a required argument: 'value'"),
            (("store", "k", 1, 2), {}, "too many positional arguments"),
            (("many", {"x": [1]}), {}, "argument 'pairs' must be dict[str, tuple[int, ...]], not dict"),
            (("many", {"x": (1, "2")}), {}, "argument 'pairs'"),
            (("many", {}), {"tags": {1}}, "argument 'tags' must be set[str] | None, not set"),
            (("many", {}), {"colour": 1}, "got an unexpected keyword argument 'colour'"),
        ]
        for args, kwargs, message in refused:
            with pytest.raises(trio_pb.BadArguments) as caught:
                await root.call_remote(*args, **kwargs)
            assert message in str(caught.value)
            assert isinstance(caught.value, TypeError)
        assert store.ran == ["a", "b", "c", "many"]
        assert client.connected and server.connected
        assert await remote.store("d", 2) == 1


def test_validation_keeps_the_methods_plain_or_async() -> None:
    store = Store()
    assert store.remote_store("k", 1) == 1
    coroutine = store.remote_many({})

    async def finish() -> int:
        return await coroutine

    assert trio.run(finish) == 0
    assert Store.remote_store.__name__ == "remote_store"
    with pytest.raises(trio_pb.BadArguments):
        store.remote_store(1, 1)  # type: ignore[arg-type]


def test_parameters_are_compared_by_how_a_caller_passes_them() -> None:
    class Options(Protocol):
        async def run(self, job: str, /, *, verbose: bool = False, level: int = 0) -> None: ...

    class Fine(trio_pb.Root):
        # A keyword-only parameter may be positional-or-keyword here, a positional-only one too.
        def remote_run(self, job: str, verbose: bool = False, *, level: int = 0, extra: int = 1) -> None:
            pass

    trio_pb.check_implements(Fine, Options)

    class Bad(trio_pb.Root):
        def remote_run(self, job: str, /, verbose: bool, *, colour: str) -> None:
            pass

    with pytest.raises(TypeError) as caught:
        trio_pb.check_implements(Bad, Options)
    assert str(caught.value).splitlines()[1:] == [
        "  Bad.remote_run (for Options.run): parameter 'verbose' needs a default, as in the interface",
        "  Bad.remote_run (for Options.run) takes no parameter 'level'",
        "  Bad.remote_run (for Options.run) has a parameter 'colour' the interface does not pass",
    ]

    class Positional(trio_pb.Root):
        def remote_run(self, job: str, /, verbose: bool = False, level: int = 0) -> None:
            pass

    trio_pb.check_implements(Positional, Options)

    class KeywordOnlyJob(trio_pb.Root):
        def remote_run(self, *, job: str, verbose: bool = False, level: int = 0) -> None:
            pass

    with pytest.raises(TypeError, match=r"takes \(\), the interface \(job\)"):
        trio_pb.check_implements(KeywordOnlyJob, Options)
