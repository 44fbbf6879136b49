"""The layering of trio_pb holds: a core with no trio, no import cycles, no reaching into privates.

- banana, jelly and protocol (and all they import from trio_pb) import no
  trio: with trio made unimportable, two PBProtocols hold a whole
  conversation by bytes moved by hand;
- the modules of trio_pb import one another without a cycle (imports inside
  functions count);
- no module of trio_pb uses another module's private names, nor private
  attributes that another module defines.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import trio_pb

PACKAGE = Path(trio_pb.__file__).parent
TESTS = Path(__file__).parent

# -- (a) the core runs without trio ----------------------------------------------

CONVERSATION = textwrap.dedent(
    """
    import sys

    sys.modules["trio"] = None  # any import of trio now raises ImportError

    import trio_pb.banana, trio_pb.jelly, trio_pb.protocol  # noqa: E401
    from core_pair import connected_pair, deliver
    from trio_pb import Cacheable, Copyable, Referenceable, RemoteCopy, Root
    from trio_pb.errors import LocalProtocolError, RemoteError
    from trio_pb.jelly import CopyRegistry
    from trio_pb.protocol import Answer, Failed, IncomingCall, PeerReference

    class Point(Copyable):
        def __init__(self, x, y):
            self.x, self.y = x, y

    class RemotePoint(RemoteCopy):
        pass

    class Counter(Cacheable):
        def __init__(self):
            self.value = 0
            self.stopped = 0

        def get_state_to_cache_and_observe_for(self, perspective, observer):
            return {"value": self.value}

        def stopped_observing(self, perspective, observer):
            self.stopped += 1

        def set(self, value):
            self.value = value
            self.broadcast("set", value)

    class Mirror(RemoteCopy):
        # What trio_pb.cache.RemoteCache does to be rebuilt as a cached copy.
        def unjelly_for(self, unjellier, sexp):
            return unjellier.invoker.unjelly_cache(type(self), unjellier, sexp)

        def set_copyable_state(self, state):
            self.__dict__.update(state)  # in place: every proxy shares this dict with the master copy

        def resolve_remote_method(self, name):
            return getattr(self, "observe_" + name)

        def observe_set(self, value):
            self.value = value

    class Thing(Referenceable):
        def remote_name(self):
            return "thing"

    class Server(Root):
        def __init__(self):
            self.thing = Thing()
            self.counter = Counter()

        def remote_echo(self, value):
            return value

        def remote_thing(self):
            return self.thing

        def remote_is_thing(self, obj):
            return obj is self.thing

        def remote_point(self):
            return Point(1, 2)

        def remote_counter(self):
            return self.counter

        def remote_fail(self):
            raise ValueError("no such luck")

    registry = CopyRegistry()
    registry.register(Point, RemotePoint)
    registry.register(Counter, Mirror)
    root = Server()
    client, server = connected_pair(root, registry=registry)

    def serve():
        # The server runs every call that reached it, as a broker would.
        for call in deliver(client, server):
            assert isinstance(call, IncomingCall), call
            try:
                result = call.method(*call.args, **call.kwargs)
            except Exception as exc:
                server.send_error(call.request_id, exc)
            else:
                if call.answer_required:
                    server.send_answer(call.request_id, result, call.perspective)

    def call(target, name, *args):
        request_id = client.send_call(target, name, args, {})
        serve()
        [event] = deliver(server, client)
        assert event.request_id == request_id, event
        return event

    # A call and its answer.
    answer = call(b"root", "echo", [b"hello", 42])
    assert isinstance(answer, Answer) and answer.value == [b"hello", 42], answer

    # A reference: called, and passed back (the server gets its own object).
    ref = call(b"root", "thing").value
    assert isinstance(ref, PeerReference), ref
    assert call(ref.luid, "name").value == "thing"
    assert call(b"root", "is_thing", ref).value is True

    # A copy.
    point = call(b"root", "point").value
    assert isinstance(point, RemotePoint) and (point.x, point.y) == (1, 2), point

    # A cached object, then an update broadcast by its owner.
    mirror = call(b"root", "counter").value
    assert isinstance(mirror, Mirror) and mirror.value == 0, mirror
    root.counter.set(5)
    [update] = deliver(server, client)
    assert isinstance(update, IncomingCall) and update.cache_luid is not None, update
    update.method(*update.args, **update.kwargs)
    assert mirror.value == 5

    # An error.
    failed = call(b"root", "fail")
    assert isinstance(failed, Failed) and isinstance(failed.error, RemoteError), failed
    assert "no such luck" in str(failed.error)

    # Releases: the server forgets the reference, and the cached copy is uncached.
    client.send_decref(ref.luid)
    client.send_decache(update.cache_luid)
    assert deliver(client, server) == []
    assert ref.luid not in server.local_objects
    assert root.counter.stopped == 1
    assert deliver(server, client) == []  # the uncache
    assert not client.locally_cached

    # Disconnect: everything the peer held is forgotten; no call can be sent.
    call(b"root", "thing")
    client.connection_lost()
    server.connection_lost()
    assert list(server.local_objects) == []
    try:
        client.send_call(b"root", "echo", (), {})
    except LocalProtocolError:
        pass
    else:
        raise AssertionError("a call was sent on a lost connection")

    layers = sorted(name for name in sys.modules if name.startswith("trio_pb"))
    print(" ".join(layers))
    """
)


def test_the_core_holds_a_whole_conversation_without_trio(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE.parent), str(TESTS)])}
    # Run elsewhere: ``-c`` puts the working directory first on the path.
    result = subprocess.run(
        [sys.executable, "-c", CONVERSATION],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded = set(result.stdout.split())
    # Nothing of the trio layer was imported along the way.
    assert loaded.isdisjoint(
        {"trio_pb.broker", "trio_pb.cache", "trio_pb.references", "trio_pb.connect", "trio_pb.cred"}
    ), loaded
    assert "trio_pb.protocol" in loaded


# -- shared: trio_pb's modules, parsed -----------------------------------------------


def _modules() -> dict[str, ast.Module]:
    return {path.stem: ast.parse(path.read_text(), str(path)) for path in sorted(PACKAGE.glob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node that can run: ``if TYPE_CHECKING:`` blocks are left out (they never run)."""
    nodes: list[ast.AST] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        nodes.append(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                stack.extend(child.orelse)
            else:
                stack.append(child)
    return nodes


def _imported_modules(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """The trio_pb modules *name* imports, at the top or in any function."""
    edges = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 or (node.level == 0 and (node.module or "").startswith("trio_pb")):
                base = (node.module or "").removeprefix("trio_pb").lstrip(".").split(".")[0]
                if base:
                    edges.add(base)
                else:  # from . import x
                    edges.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("trio_pb."):
                    edges.add(alias.name.split(".")[1])
    edges.discard(name)
    return edges & known


# -- (b) no import cycles ---------------------------------------------------------------


def test_trio_pb_modules_import_each_other_without_a_cycle() -> None:
    modules = _modules()
    # The package's __init__ imports (lazily) every public module, and none imports it.
    graph = {name: _imported_modules(name, tree, set(modules)) for name, tree in modules.items()}
    graph.pop("__init__")
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for imported in sorted(graph.get(module, ())):
            if state.get(imported) == 1:
                cycles.append(" -> ".join([*path[path.index(imported) :], imported]))
            elif imported not in state:
                visit(imported)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert cycles == []


def test_the_sans_io_core_imports_no_trio_layer_module() -> None:
    modules = _modules()
    graph = {name: _imported_modules(name, tree, set(modules)) for name, tree in modules.items()}
    reached, todo = set(), ["banana", "jelly", "protocol"]
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo.extend(graph[module])
    importing_trio = {
        module
        for module in reached
        for node in _runtime_nodes(modules[module])
        if (isinstance(node, ast.Import) and any(a.name.split(".")[0] == "trio" for a in node.names))
        or (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").split(".")[0] == "trio"
        )
    }
    assert importing_trio == set(), reached


# -- (c) no module reaches into another's privates ------------------------------------------

# Private attributes a module may use though another module defines them, and why.
ALLOWED: dict[tuple[str, str], str] = {
    # The protocol's "quota exceeded, goodbye" error, which the broker closes
    # the connection on after sending what is queued: part of the request
    # lifecycle that another part of this refactoring moves into the protocol.
    ("broker", "_Goodbye"): "until the protocol owns the goodbye",
    # trio's own cancel scopes, read for the deadline of every call: checked against
    # trio.current_effective_deadline() at first use and in tests/test_deadline.py.
    **{
        ("_deadline", private): "trio's cancel-scope fields (see trio_pb/_deadline.py)"
        for private in ("_cancel_status", "_scope", "_deadline", "_shield", "_parent")
    },
}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _own_private_names(tree: ast.Module) -> set[str]:
    """The private names a module defines: functions, classes, attributes it assigns, slots."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets
        ):
            names.update(
                elt.value
                for elt in ast.walk(node.value)
                if isinstance(elt, ast.Constant) and isinstance(elt.value, str)
            )
    return {name for name in names if _private(name)}


def test_no_module_uses_another_modules_privates() -> None:
    # Without types, "whose attribute is it" is judged by name: a private
    # attribute is another module's if this module never defines it (as a
    # function, class, slot or assigned attribute).  So ``broker._call`` in
    # references.py is caught, ``pending._waiter`` in broker.py is not.
    found = []
    used_allowances = set()
    for name, tree in _modules().items():
        own = _own_private_names(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (
                node.level == 1 or (node.module or "").startswith("trio_pb")
            ):
                # (Private modules, such as _caches, are the package's own: their public names are shared.)
                used = [alias.name for alias in node.names if _private(alias.name)]
            elif isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in own:
                used = [node.attr]
            else:
                continue
            used_allowances.update((name, private) for private in used if (name, private) in ALLOWED)
            found += [
                f"{name}.py:{node.lineno}: {private}" for private in used if (name, private) not in ALLOWED
            ]
    assert found == []
    assert used_allowances == set(ALLOWED), "an allowance no longer needed: remove it"
