"""The compiled codec is optional: built where it can be, ignored on request, required by CI."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

from trio_pb import _accel

_PROBE = "from trio_pb import _accel; print(_accel.IN_USE, _accel.encode_message is None)"


def _probe(**env: str) -> str:
    environment = {**os.environ, **env}
    result = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, env=environment, check=True
    )
    return result.stdout.strip()


def test_extension_in_use_where_required() -> None:
    # nox's compiled runs set TRIO_PB_REQUIRE_EXTENSIONS=1: if the extension did not build there,
    # this fails, instead of the suite quietly testing the pure path twice.
    required = os.environ.get("TRIO_PB_REQUIRE_EXTENSIONS", "") not in ("", "0")
    if required:
        assert not _accel.DISABLED, "TRIO_PB_REQUIRE_EXTENSIONS and TRIO_PB_NO_EXTENSIONS are both set"
        assert _accel.IN_USE, "the compiled codec trio_pb._speedups did not build or did not load"
    assert _accel.IN_USE is (_accel.encode_message is not None) is (_accel.encode_plain is not None)


def test_no_extensions_forces_the_pure_path() -> None:
    assert _probe(TRIO_PB_NO_EXTENSIONS="1") == "False True"


def test_empty_or_zero_does_not_disable() -> None:
    # The variable is read once, at import, by trio_pb._accel: "" and "0" mean "not set".
    built = importlib.util.find_spec("trio_pb._speedups") is not None
    expected = "True False" if built else "False True"
    assert _probe(TRIO_PB_NO_EXTENSIONS="") == expected
    assert _probe(TRIO_PB_NO_EXTENSIONS="0") == expected
