"""What the package's metadata must say, read from pyproject.toml, noxfile.py and the files beside them.

``nox -s build`` checks the built distributions themselves; these tests check the sources it
builds from, so that a mismatch (a Python tested but not declared, a second copy of the
version, a license file not shipped) fails the ordinary test run.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import sys
from pathlib import Path
from typing import Any

import trio_pb

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest itself depends on tomli before 3.11, so it is there wherever the tests run
    import tomli as tomllib

ROOT = Path(__file__).parent.parent
PYPROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT: dict[str, Any] = PYPROJECT["project"]
CHANGELOG = ROOT / "CHANGELOG.md"


def module_constant(path: Path, name: str) -> Any:
    """The literal assigned to *name* at the top of the module at *path*, without importing it.

    The noxfile imports nox, which the test environments do not have.
    """
    values = [
        ast.literal_eval(node.value)
        for node in ast.parse(path.read_text(encoding="utf-8")).body
        if isinstance(node, (ast.Assign, ast.AnnAssign))
        and node.value is not None
        and name in [target.id for target in _targets(node) if isinstance(target, ast.Name)]
    ]
    assert len(values) == 1, f"{path.name} assigns {name} {len(values)} times"
    return values[0]


def _targets(node: ast.Assign | ast.AnnAssign) -> list[ast.expr]:
    return node.targets if isinstance(node, ast.Assign) else [node.target]


NOX_PYTHONS: list[str] = module_constant(ROOT / "noxfile.py", "PYTHONS")


def test_the_classifiers_name_every_python_the_tests_run_on_and_no_other() -> None:
    declared = {
        classifier.rsplit(" :: ", 1)[1]
        for classifier in PROJECT["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", classifier)
    }
    assert declared == set(NOX_PYTHONS)


def test_requires_python_starts_at_the_oldest_python_tested() -> None:
    oldest = min(NOX_PYTHONS, key=lambda version: tuple(map(int, version.split("."))))
    assert PROJECT["requires-python"] == f">={oldest}"


def test_the_version_is_written_once_in_the_package() -> None:
    assert "version" not in PROJECT
    assert "version" in PROJECT["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "trio_pb.__version__"}
    # setuptools reads the literal without importing the package: it must stay a plain string.
    written = module_constant(ROOT / "trio_pb" / "__init__.py", "__version__")
    assert written == trio_pb.__version__
    # PEP 440, public version (what PyPI accepts).
    assert re.fullmatch(r"\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?", written), written


def test_an_install_of_this_checkout_reports_the_same_version() -> None:
    # Only a distribution installed from this checkout (editable, as nox installs it, or a
    # wheel of it) says anything about it; another checkout's may be installed on this machine.
    try:
        distribution = importlib.metadata.distribution("trio_pb")
    except importlib.metadata.PackageNotFoundError:
        return
    direct_url = json.loads(distribution.read_text("direct_url.json") or "{}")
    from_here = (
        direct_url.get("url") == ROOT.resolve().as_uri()
        or Path(trio_pb.__file__).resolve()
        == Path(str(distribution.locate_file("trio_pb/__init__.py"))).resolve()
    )
    if from_here:
        assert distribution.version == trio_pb.__version__


def test_the_license_is_an_spdx_expression_and_its_file_is_shipped() -> None:
    assert PROJECT["license"] == "MIT"
    assert PROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License")
    assert "Copyright (c) 2026 The trio_pb developers" in text
    # The license expression replaces the License classifiers: setuptools refuses both.
    assert not [c for c in PROJECT["classifiers"] if c.startswith("License ::")]
    # setuptools takes an SPDX expression and license-files from 77 on.
    (setuptools,) = [r for r in PYPROJECT["build-system"]["requires"] if r.startswith("setuptools")]
    match = re.fullmatch(r"setuptools>=(\d+)(\.\d+)*", setuptools.replace(" ", ""))
    assert match and int(match[1]) >= 77, setuptools


def test_the_changelog_has_the_current_version_and_is_linked() -> None:
    release = re.match(r"\d+(\.\d+)*", trio_pb.__version__)
    assert release
    headings = re.findall(r"^## (\S+)", CHANGELOG.read_text(encoding="utf-8"), re.MULTILINE)
    assert headings[0] == release[0]  # the newest first
    assert PROJECT["urls"]["Changelog"].endswith("/CHANGELOG.md")
    assert "CHANGELOG.md" in (ROOT / "README.md").read_text(encoding="utf-8")
    # setuptools puts the license files and the README in the sdist by itself, not the changelog.
    assert "include CHANGELOG.md" in (ROOT / "MANIFEST.in").read_text(encoding="utf-8").splitlines()


def test_nox_build_checks_the_license_and_the_changelog_are_in_the_distributions() -> None:
    assert "licenses/LICENSE" in module_constant(ROOT / "noxfile.py", "WHEEL_DIST_INFO_FILES")
    assert {"LICENSE", "CHANGELOG.md"} <= set(module_constant(ROOT / "noxfile.py", "SDIST_FILES"))


def test_the_project_says_who_and_where() -> None:
    assert PROJECT["authors"]
    assert {"Homepage", "Documentation", "Source", "Issues", "Changelog"} <= set(PROJECT["urls"])
    assert all(url.startswith("https://") for url in PROJECT["urls"].values())


def test_the_docs_extra_installs_the_theme_the_docs_use() -> None:
    theme = module_constant(ROOT / "docs" / "conf.py", "html_theme")
    assert theme == "furo"  # made for wide code blocks; alabaster's fixed column overflowed
    assert any(
        re.match(rf"{theme}\b", requirement) for requirement in PROJECT["optional-dependencies"]["docs"]
    )
