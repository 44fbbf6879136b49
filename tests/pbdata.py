"""Test data shared by several test modules: captures from pb-protocol.md and strategies."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

#: Appendix B: the all-types echo as an s-expression (captured from Twisted).
APPENDIX_B_SEXP: list[Any] = [
    b"list",
    [b"None"],
    [b"boolean", b"true"],
    [b"boolean", b"false"],
    0,
    -1,
    2147483648,
    -2147483649,
    1267650600228229401496703205376,
    1.5,
    [b"unicode", b"h\xc3\xa9llo"],
    b"bytes",
    [b"tuple", 1, 2],
    [b"dictionary", [[b"unicode", b"a"], 1], [b"b", 2]],
    [b"set", 1, 2],
    [b"frozenset", 3],
    [b"datetime", b"2020 1 2 3 4 5 6"],
    [b"date", b"2020 1 2"],
    [b"time", b"1 2 3 4"],
    [b"timedelta", b"1 2 3"],
    [b"decimal", -125, -2],
]


def decimals() -> st.SearchStrategy[Decimal]:
    """Finite Decimals of up to 30 digits, either sign."""
    return st.builds(
        lambda sign, digits, exponent: Decimal((sign, tuple(digits), exponent)),
        st.integers(0, 1),
        st.lists(st.integers(0, 9), min_size=1, max_size=30),
        st.integers(-30, 30),
    )
