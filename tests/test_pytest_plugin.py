"""The pytest fixtures of trio_pb.pytest_plugin, as a user's test suite meets them (run by pytester)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import trio
from doccheck import blocks

import trio_pb

pytest_plugins = ["pytester"]

CONFTEST = 'pytest_plugins = ["trio_pb.pytest_plugin"]\n'

CALCULATOR = """
import pytest
import trio_pb


class Thing(trio_pb.Referenceable):
    pass


class Calculator(trio_pb.Root):
    def remote_add(self, a, b):
        return a + b

    def remote_thing(self):
        return Thing()


@pytest.fixture
def pb_root():
    return Calculator()
"""


def suite(pytester: pytest.Pytester, tests: str) -> pytest.RunResult:
    """Run a user's test module (the calculator above, then *tests*) in a pytest of its own."""
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_user=CALCULATOR + textwrap.dedent(tests))
    return pytester.runpytest("-p", "no:cacheprovider", "-q")


def test_a_users_tests_with_a_pair_and_a_factory_pass(pytester: pytest.Pytester) -> None:
    result = suite(
        pytester,
        """
        async def test_add(pb_pair):
            client, server = pb_pair
            calculator = await client.root_object()
            assert await calculator.call_remote("add", 2, 2) == 4


        async def test_released_references_are_no_leak(pb_pair):
            client, server = pb_pair
            calculator = await client.root_object()
            thing = await calculator.call_remote("thing")
            await thing.release()


        async def test_two_pairs_from_the_factory(open_pb_pair):
            async with open_pb_pair(Calculator()) as (a, _), open_pb_pair(Calculator()) as (b, _):
                for client in (a, b):
                    assert await (await client.root_object()).call_remote("add", 1, 2) == 3


        @pytest.fixture
        def pb_options():
            return {"transport": "socket", "max_message_size": 1000}


        async def test_options_reach_the_brokers(pb_pair):
            client, server = pb_pair
            calculator = await client.root_object()
            assert await calculator.call_remote("add", 1, 1) == 2
            with pytest.raises(trio_pb.SerializationError, match="the limit is 1000"):
                await calculator.call_remote("add", b"x" * 1000, b"")
        """,
    )
    result.assert_outcomes(passed=4)


def test_a_test_that_leaks_a_reference_fails_saying_what_is_left(pytester: pytest.Pytester) -> None:
    result = suite(
        pytester,
        """
        kept = []


        async def test_leaks(pb_pair):
            client, server = pb_pair
            calculator = await client.root_object()
            kept.append(await calculator.call_remote("thing"))


        async def test_leaks_from_the_factory(open_pb_pair):
            async with open_pb_pair(Calculator()) as (client, server):
                kept.append(await (await client.root_object()).call_remote("thing"))


        @pytest.mark.pb_leaks_allowed
        async def test_allowed_to_leak(pb_pair):
            client, server = pb_pair
            kept.append(await (await client.root_object()).call_remote("thing"))
        """,
    )
    result.assert_outcomes(passed=1, failed=2)
    message = (
        "trio_pb: the client broker of the pair leaked: 1 references to the peer's objects are not "
        "released (release what the test holds, or mark it pb_leaks_allowed)"
    )
    result.stdout.fnmatch_lines(
        [
            f"FAILED test_user.py::test_leaks - {message[:40]}*",
            "FAILED test_user.py::test_leaks_from_the_factory*",
        ]
    )
    assert result.stdout.str().count(f"Failed: {message}") == 2, result.stdout.str()


def test_a_call_left_running_is_a_leak_on_the_server(pytester: pytest.Pytester) -> None:
    result = suite(
        pytester,
        """
        import trio


        class Slow(trio_pb.Root):
            async def remote_wait(self):
                await trio.sleep_forever()


        async def test_forgets_a_call(open_pb_pair):
            async with open_pb_pair(Slow()) as (client, server):
                root = await client.root_object()
                root.call_remote_no_answer("wait")
                await trio.testing.wait_all_tasks_blocked()
        """,
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*trio_pb: the server broker of the pair leaked: 1 of the peer's calls still running*"]
    )


def test_the_tutorials_example_suite_passes(pytester: pytest.Pytester) -> None:
    """The conftest.py and test module of docs/tutorial.rst, "Testing your PB code", as a pytest suite."""
    files = {}
    for spec, code, _ in blocks(Path(__file__).parent.parent / "docs" / "tutorial.rst"):
        named = re.search(r"run with pytest by tests/test_pytest_plugin.py \((\S+)\)", spec[0])
        if named is not None:
            files[named.group(1)] = code
    assert sorted(files) == ["conftest.py", "test_calculator.py"]
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    for name, code in files.items():
        pytester.path.joinpath(name).write_text(code)
    result = pytester.runpytest("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=3)
    # A reference kept past the test fails it, as the page says.
    leaky = textwrap.dedent(
        """
        kept = []


        async def test_memory_kept(pb_pair):
            client, server = pb_pair
            calculator = await client.root_object()
            kept.append(await calculator.call_remote("memory"))
        """
    )
    pytester.path.joinpath("test_calculator.py").write_text(files["test_calculator.py"] + leaky)
    result = pytester.runpytest("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*Failed: trio_pb: the client broker of the pair leaked: 1 references to the peer's objects "
            "are not released (release what the test holds, or mark it pb_leaks_allowed)"
        ]
    )


# The project's own tests have the fixtures too (tests/conftest.py enables the plugin).


class Root(trio_pb.Root):
    def remote_double(self, x: int) -> int:
        return 2 * x


@pytest.fixture
def pb_root() -> Root:
    return Root()


async def test_the_projects_tests_get_the_fixtures(pb_pair: tuple[trio_pb.Broker, trio_pb.Broker]) -> None:
    client, server = pb_pair
    root = await client.root_object()
    with trio.fail_after(10):
        assert await root.call_remote("double", 21) == 42
