"""pytest fixtures for testing code that uses trio_pb: a connected broker pair, checked for leaks.

Enable them in your ``conftest.py`` with ``pytest_plugins = ["trio_pb.pytest_plugin"]`` (they
are not registered for every pytest run of every project that installs trio_pb).  The fixtures
are async, so they need `pytest-trio <https://pytest-trio.readthedocs.io>`_ (``trio_mode = true``,
or ``@pytest.mark.trio`` on the tests).

* :func:`pb_pair`: ``(client, server)``, two brokers connected over in-memory streams, serving
  :func:`pb_root` (override that fixture to choose the server's root object).
* :func:`open_pb_pair`: a factory, ``async with open_pb_pair(root) as (client, server)``, for a
  test that needs other roots or several pairs.

When a pair's block ends, or the test that used :func:`pb_pair` returns, both brokers must hold
no references, cached copies or calls (:func:`trio_pb.testing.assert_no_leaks`); if they do,
the test fails with a message that says what was left, and on which side.  Mark a test
``@pytest.mark.pb_leaks_allowed`` to leave that check out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

import pytest

from .testing import assert_no_leaks, open_broker_pair

if TYPE_CHECKING:
    from .broker import Broker

__all__ = ["open_pb_pair", "pb_client_root", "pb_options", "pb_pair", "pb_root"]

#: The type of the :func:`open_pb_pair` fixture.
OpenPair = Callable[..., AbstractAsyncContextManager[tuple["Broker", "Broker"]]]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "pb_leaks_allowed: the trio_pb broker pairs of this test are not checked for leaks"
    )


@pytest.fixture
def pb_root() -> Any:
    """The server's root object for :func:`pb_pair`: None unless a test module or conftest overrides it."""
    return None


@pytest.fixture
def pb_client_root() -> Any:
    """The client's root object for :func:`pb_pair` (what the server's ``root_object()`` gets): None."""
    return None


@pytest.fixture
def pb_options() -> dict[str, Any]:
    """Keyword arguments for :func:`pb_pair`'s brokers (broker options, or ``transport="socket"``): none."""
    return {}


@pytest.fixture
def open_pb_pair(request: pytest.FixtureRequest) -> OpenPair:
    """A factory of connected broker pairs: ``async with open_pb_pair(root, **options) as (client, server)``.

    Takes what :func:`trio_pb.testing.open_broker_pair` takes.  When the block
    ends without an exception, both brokers are checked for leaks (unless the
    test is marked ``pb_leaks_allowed``); an exception from the block is left
    alone, so that a test's own failure is what it reports.
    """
    check = request.node.get_closest_marker("pb_leaks_allowed") is None

    @asynccontextmanager
    async def open_pair(root: Any = None, **options: Any) -> AsyncIterator[tuple[Broker, Broker]]:
        leaks = None
        async with open_broker_pair(root, **options) as (client, server):
            yield client, server
            if check:
                leaks = await find_leaks(client, server)
        # Failed here, outside the pair's nursery, the test reports the message alone.
        if leaks is not None:
            pytest.fail(leaks, pytrace=False)

    return open_pair


@pytest.fixture
async def pb_pair(
    open_pb_pair: OpenPair, pb_root: Any, pb_client_root: Any, pb_options: dict[str, Any]
) -> AsyncIterator[tuple[Broker, Broker]]:
    """A client broker and a server broker connected over in-memory streams: ``(client, server)``.

    The server serves :func:`pb_root`; :func:`pb_client_root` and
    :func:`pb_options` are the other settings.  After the test, both are
    checked for leaks as :func:`open_pb_pair` says.
    """
    async with open_pb_pair(pb_root, client_root=pb_client_root, **pb_options) as pair:
        yield pair


async def find_leaks(client: Broker, server: Broker) -> str | None:
    """What either broker holds (references, copies or calls), naming the side; None if nothing."""
    for side, broker in (("client", client), ("server", server)):
        try:
            await assert_no_leaks(broker)
        except AssertionError as exc:
            return (
                f"trio_pb: the {side} broker of the pair leaked: {exc} "
                "(release what the test holds, or mark it pb_leaks_allowed)"
            )
    return None
