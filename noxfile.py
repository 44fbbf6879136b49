"""Developer tasks: ``nox -s demo``, ``tests``, ``lint``, ``typecheck``, ``docs``, ``bench``, ``stress``,
``build``.
"""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def demo(session: nox.Session) -> None:
    """The chat demo: a server and scripted clients talking on loopback.

    The demo itself needs trio_pb alone; the ``examples`` extra (urwid) is installed so that the
    clients can then be run by hand with their terminal UI in the same environment.
    """
    session.install("-e", ".[examples]")
    session.run("python", "examples/chat/demo.py")


#: The Pythons the package supports; ``nox -s tests`` runs on each one found, and skips the others.
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
nox.options.error_on_missing_interpreters = False


#: (Python, codec) pairs: the compiled codec on every Python, and the pure-Python fallback
#: (TRIO_PB_NO_EXTENSIONS=1) on the newest.  The code outside the codec is the same on both
#: paths, and every Python runs it in its compiled run; a pure run on each Python would double
#: the session's time (about 5 minutes a run) for the codec's pure modules alone.
TEST_RUNS = [(python, "compiled") for python in PYTHONS] + [(PYTHONS[-1], "pure")]


@nox.session
@nox.parametrize(("python", "codec"), TEST_RUNS, ids=[f"{python}-{codec}" for python, codec in TEST_RUNS])
def tests(session: nox.Session, codec: str) -> None:
    """The whole test suite, including the tests against real Twisted, on one codec.

    ``pip install -e .`` builds the C extension (it is optional: without a compiler the install
    still succeeds).  The compiled runs set TRIO_PB_REQUIRE_EXTENSIONS=1, so that a test fails
    if the extension did not build, rather than the fallback being tested twice.
    """
    # The examples extra: the tests drive the example clients' terminal UIs in tmux.
    session.install("-e", ".[test,examples]")
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
    """Benchmarks: trio_pb on both codecs against Twisted PB, Pyro5, pickle and a raw trio socket.

    One run, a verdict on each of the issue's targets at the end; nothing is asserted on timing.
    """
    session.install("-e", ".[test,bench]")
    session.run("python", "-m", "bench", *session.posargs)


@nox.session
def stress(session: nox.Session) -> None:
    """Attacks on a real server process, its memory measured from outside (stress/, a few minutes)."""
    session.install("-e", ".[test]")
    session.run("pytest", "stress", *(session.posargs or ["-q"]))


#: What a wheel must hold besides the pure modules (the extension's name is added per Python;
#: the license is under ``<name>-<version>.dist-info/``), and what an sdist must hold to build
#: that wheel again and to say what it is.
WHEEL_FILES = ["trio_pb/py.typed", "trio_pb/_speedups.pyi"]
WHEEL_DIST_INFO_FILES = ["licenses/LICENSE"]
SDIST_FILES = ["trio_pb/_speedups.c", "setup.py", "pyproject.toml", "LICENSE", "CHANGELOG.md", "README.md"]


@nox.session
def build(session: nox.Session) -> None:
    """The sdist and a wheel (``python -m build``), checked for the compiled codec, its stubs and the license.

    The wheel is built for the session's Python, so it must hold the extension compiled for it:
    the extension is optional at install time, and a wheel silently built without it would ship
    the slow path.  The check is a few lines here rather than a script: it is only this session's.
    """
    session.install("build")
    outdir = Path(session.create_tmp()) / "dist"
    session.run("python", "-m", "build", "--outdir", str(outdir), *session.posargs)
    suffix = session.run(
        "python", "-c", "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))", silent=True
    )
    assert isinstance(suffix, str)
    (wheel,) = outdir.glob("*.whl")
    (sdist,) = outdir.glob("*.tar.gz")
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = set(archive.namelist())
    # The wheel's name starts with "<name>-<version>-", as its .dist-info directory does.
    dist_info = "-".join(wheel.name.split("-")[:2]) + ".dist-info"
    with tarfile.open(sdist) as archive:
        # Members are under "<name>-<version>/".
        in_sdist = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    missing = [
        f"{wheel.name}: {name}"
        for name in [
            *WHEEL_FILES,
            f"trio_pb/_speedups{suffix.strip()}",
            *(f"{dist_info}/{name}" for name in WHEEL_DIST_INFO_FILES),
        ]
        if name not in in_wheel
    ]
    missing += [f"{sdist.name}: {name}" for name in SDIST_FILES if name not in in_sdist]
    if missing:
        session.error("missing from the distributions: " + ", ".join(missing))
    session.log(f"{wheel.name} and {sdist.name} hold the compiled codec, its stubs, py.typed and LICENSE")
