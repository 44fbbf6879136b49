"""Fixtures for the attack tests: a fresh server process per test, and a report of what was measured.

These tests are not part of ``nox -s tests`` (whose ``testpaths`` is ``tests``):
run them with ``nox -s stress`` or ``pytest stress``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import REPORTS, ServerProcess


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start ``stress/server.py`` (options as for :class:`ServerProcess`); stopped after the test."""
    servers: list[ServerProcess] = []

    def start(**options: Any) -> ServerProcess:
        server = ServerProcess(tmp_path / f"server{len(servers)}.log", **options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    """A server process with the default broker options."""
    return start_server()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if REPORTS:
        terminalreporter.section("what each attack did to the server")
        for line in REPORTS:
            terminalreporter.write_line(line)
