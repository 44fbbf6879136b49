"""``python -m trio_pb``: the command line (see :mod:`trio_pb._cli`)."""

from __future__ import annotations

from ._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
