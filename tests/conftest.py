"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from trio_pb.testing import open_broker_pair

# The fixtures users get (pb_pair, open_pb_pair ...), for the project's own tests too.
pytest_plugins = ["trio_pb.pytest_plugin"]


@pytest.fixture(params=["memory", "socket"])
def each_transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run a test once over memory streams and once over real sockets.

    The brokers take different paths on a socket (direct writes, callers
    reading their own answers), so modules that use
    :func:`~trio_pb.testing.open_broker_pair` apply this fixture to cover both:
    it changes the helper's default transport for the test.
    """
    defaults = open_broker_pair.__wrapped__.__kwdefaults__  # type: ignore[attr-defined]
    monkeypatch.setitem(defaults, "transport", request.param)
    yield request.param
