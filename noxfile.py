"""Developer tasks: ``nox -s demo``, ``tests``, ``lint``, ``typecheck``, ``docs``, ``bench``, ``stress``."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def demo(session: nox.Session) -> None:
    """The chat demo: a server and scripted clients talking on loopback."""
    session.install("-e", ".")
    session.run("python", "examples/chat/demo.py")


#: The Pythons the package supports; ``nox -s tests`` runs on each one found, and skips the others.
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
nox.options.error_on_missing_interpreters = False


#: (Python, codec) pairs: the compiled codec on every Python, the pure-Python fallback
#: (TRIO_PB_NO_EXTENSIONS=1) on the oldest and the newest, which keeps the session's time down
#: while both ends of the supported range run the code that ships everywhere.
TEST_RUNS = [(python, "compiled") for python in PYTHONS] + [(PYTHONS[0], "pure"), (PYTHONS[-1], "pure")]


@nox.session
@nox.parametrize(("python", "codec"), TEST_RUNS, ids=[f"{python}-{codec}" for python, codec in TEST_RUNS])
def tests(session: nox.Session, codec: str) -> None:
    """The whole test suite, including the tests against real Twisted, on one codec.

    ``pip install -e .`` builds the C extension (it is optional: without a compiler the install
    still succeeds).  The compiled runs set TRIO_PB_REQUIRE_EXTENSIONS=1, so that a test fails
    if the extension did not build, rather than the fallback being tested twice.
    """
    session.install("-e", ".[test]")
    if codec == "compiled":
        env = {"TRIO_PB_REQUIRE_EXTENSIONS": "1", "TRIO_PB_NO_EXTENSIONS": ""}
    else:
        env = {"TRIO_PB_NO_EXTENSIONS": "1", "TRIO_PB_REQUIRE_EXTENSIONS": ""}
    session.run("pytest", *(session.posargs or ["-q"]), env=env)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff on everything."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install("-e", ".[typecheck]")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the Sphinx site; any warning is an error."""
    session.install("-e", ".[docs]")
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks: trio_pb against Twisted PB (and a raw trio socket) in one run."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "bench", *session.posargs)


@nox.session
def stress(session: nox.Session) -> None:
    """Attacks on a real server process, its memory measured from outside (stress/, a few minutes)."""
    session.install("-e", ".[test]")
    session.run("pytest", "stress", *(session.posargs or ["-q"]))
