"""``trio-pb decode``: show the banana expressions in captured bytes, with PB messages labelled.

The bytes are decoded by :class:`trio_pb.banana.Decoder` with its usual limits
(docs/internals.rst, "Limits"), so what decodes here is what a trio_pb peer
would accept.  One direction of a connection is expected (what one side
sent), starting anywhere: the dialect handshake is recognised if it is there.
"""

from __future__ import annotations

import argparse
import pprint
import re
import sys
from typing import Any, TextIO

from .banana import DIALECTS, NEED_DATA, PB_VOCABULARY, Decoder
from .errors import BananaDecodeError

__all__ = ["add_arguments", "decode_bytes", "run"]

#: The fields of each PB command, after the command's name (docs/protocol.rst, "PB messages").
FIELDS: dict[bytes, tuple[str, ...]] = {
    b"version": ("version",),
    b"message": ("request_id", "target", "method", "answer_required", "args", "kwargs"),
    b"cachemessage": ("request_id", "luid", "method", "answer_required", "args", "kwargs"),
    b"answer": ("request_id", "value"),
    b"error": ("request_id", "failure"),
    b"decref": ("luid",),
    b"decache": ("luid",),
    b"uncache": ("luid",),
    b"didNotUnderstand": ("command",),
    # trio_pb's extension dialect.
    b"cancel": ("request_id",),
    b"deadline": ("request_id", "seconds"),
    b"ping": ("request_id",),
    b"pong": ("request_id",),
}

#: Width of the pretty-printed expressions.
WIDTH = 100
#: How far past the start of an expression that fails the failing byte is searched for.
_LOCATE_LIMIT = 1024 * 1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options and arguments of ``decode``."""
    parser.add_argument(
        "file", metavar="FILE", nargs="?", default="-", help="the bytes to decode ('-' or nothing: stdin)"
    )
    parser.add_argument(
        "--hex", action="store_true", help="the input is hex text (whitespace ignored), not binary"
    )


class DecodeFailed(Exception):
    """Bytes that are not banana: *offset* is where in the input it became clear."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"offset {offset}: {reason}")
        self.offset = offset


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run ``decode`` and return its exit status."""
    try:
        if args.file == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(args.file, "rb") as file:
                data = file.read()
    except OSError as exc:
        sys.stderr.write(f"error: cannot read {args.file}: {exc.strerror or exc}\n")
        return 2
    if args.hex:
        try:
            data = _from_hex(data)
        except ValueError as exc:
            sys.stderr.write(f"error: {exc}\n")
            return 2
    try:
        decode_bytes(data, sys.stdout)
    except DecodeFailed as exc:
        sys.stdout.flush()
        sys.stderr.write(f"error: {exc}\n")
        return 1
    return 0


def _from_hex(text: bytes) -> bytes:
    digits = re.sub(rb"\s+", b"", text)
    bad = re.search(rb"[^0-9a-fA-F]", digits)
    if bad is not None:
        raise ValueError(f"not hex: {bad.group().decode('latin-1')!r} at hex digit {bad.start()}")
    if len(digits) % 2:
        raise ValueError(f"an odd number of hex digits ({len(digits)})")
    return bytes.fromhex(digits.decode("ascii"))


def decode_bytes(data: bytes, out: TextIO) -> int:
    """Write each expression in *data* to *out*; return how many there were.

    Raises :class:`DecodeFailed` at the first malformed expression, or for
    an expression that *data* ends in the middle of, once everything before
    has been written.
    """
    decoder = Decoder(vocabulary=PB_VOCABULARY)
    decoder.receive_data(data)
    count = 0
    while True:
        offset = len(data) - decoder.buffered
        try:
            expression = decoder.next_expression()
        except BananaDecodeError as exc:
            raise DecodeFailed(_failing_byte(data, offset), str(exc)) from None
        if expression is NEED_DATA:
            if offset < len(data):
                raise DecodeFailed(
                    offset, f"the input ends inside an expression ({len(data) - offset} bytes of it)"
                )
            return count
        out.write(describe(expression, offset, first=count == 0) + "\n")
        count += 1


def _failing_byte(data: bytes, start: int) -> int:
    """The offset of the byte that makes the expression starting at *start* fail to decode."""
    decoder = Decoder(vocabulary=PB_VOCABULARY)
    for offset in range(start, min(len(data), start + _LOCATE_LIMIT)):
        decoder.receive_data(data[offset : offset + 1])
        try:
            decoder.next_expression()
        except BananaDecodeError:
            return offset
    return start


def describe(expression: Any, offset: int, *, first: bool = False) -> str:
    """One expression as lines: its offset, what it is, and its fields labelled if it is a PB message."""
    head = f"@{offset:<6}"
    if first and _is_offer(expression):
        return f"{head} dialect offer  {_pretty(expression, len(head) + 16)}"
    if first and isinstance(expression, bytes) and expression in DIALECTS:
        return f"{head} dialect chosen  {expression!r}"
    if isinstance(expression, list) and expression and isinstance(expression[0], bytes):
        fields = FIELDS.get(expression[0])
        if fields is not None and len(expression) == len(fields) + 1:
            return _message(head, expression[0].decode(), fields, expression[1:])
    note = ""
    if isinstance(expression, list) and expression and expression[0] in FIELDS:
        count = len(expression) - 1
        plural = "" if count == 1 else "s"
        note = (
            f"  (malformed {expression[0].decode()}: {count} field{plural}, not {len(FIELDS[expression[0]])})"
        )
    return f"{head} {_pretty(expression, len(head) + 1)}{note}"


def _is_offer(expression: Any) -> bool:
    return (
        isinstance(expression, list)
        and bool(expression)
        and all(isinstance(item, bytes) for item in expression)
        and any(item in DIALECTS for item in expression)
    )


def _message(head: str, name: str, fields: tuple[str, ...], values: list[Any]) -> str:
    inline = [
        f"{field}={value!r}"
        for field, value in zip(fields, values, strict=True)
        if not isinstance(value, list)
    ]
    lines = [" ".join([head, name, *inline])]
    indent = " " * (len(head) + 3)
    for field, value in zip(fields, values, strict=True):
        if isinstance(value, list):
            label = f"{indent}{field}: "
            lines.append(label + _pretty(value, len(label)))
    return "\n".join(lines)


def _pretty(expression: Any, indent: int) -> str:
    """*expression* pretty-printed, its continuation lines indented to *indent*."""
    text = pprint.pformat(expression, width=max(40, WIDTH - indent), compact=True)
    return text.replace("\n", "\n" + " " * indent)
