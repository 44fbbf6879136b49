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

from . import jelly
from ._cli_show import AnyCopies, Copy, Tokens
from .banana import DIALECTS, NEED_DATA, PB_VOCABULARY, Decoder
from .errors import BananaDecodeError, JellyError
from .failures import COPYABLE_FAILURE_TAG

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

#: The fields that hold jellied values, shown unjellied with ``--unjelly``.
JELLIED = frozenset({"args", "kwargs", "value", "failure"})
FAILURE_TAG = COPYABLE_FAILURE_TAG.decode()

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
    parser.add_argument(
        "--unjelly",
        action="store_true",
        help="show the jellied fields of PB messages (args, kwargs, value, failure) as Python values",
    )


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
    failure = decode_bytes(data, sys.stdout, unjelly=args.unjelly)
    if failure is not None:
        offset, reason = failure
        sys.stdout.flush()
        sys.stderr.write(f"error: offset {offset}: {reason}\n")
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


def decode_bytes(data: bytes, out: TextIO, *, unjelly: bool = False) -> tuple[int, str] | None:
    """Write each expression in *data* to *out*; return None, or ``(offset, reason)`` if some did not decode.

    Decoding stops at the first malformed expression, or at an expression
    that *data* ends in the middle of, once everything before has been
    written; *offset* is where in *data* it became clear.
    """
    decoder = Decoder(vocabulary=PB_VOCABULARY)
    decoder.receive_data(data)
    first = True
    while True:
        offset = len(data) - decoder.buffered
        try:
            expression = decoder.next_expression()
        except BananaDecodeError as exc:
            return _failing_byte(data, offset), str(exc)
        if expression is NEED_DATA:
            if offset < len(data):
                return offset, f"the input ends inside an expression ({len(data) - offset} bytes of it)"
            return None
        out.write(describe(expression, offset, first=first, unjelly=unjelly) + "\n")
        first = False


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


def describe(expression: Any, offset: int, *, first: bool = False, unjelly: bool = False) -> str:
    """One expression as lines: its offset, what it is, and its fields labelled if it is a PB message.

    With *unjelly*, the jellied fields of PB messages are shown as the values they stand for.
    """
    head = f"@{offset:<6}"
    if first and _is_offer(expression):
        return f"{head} dialect offer  {_pretty(expression, len(head) + 16)}"
    if first and isinstance(expression, bytes) and expression in DIALECTS:
        return f"{head} dialect chosen  {expression!r}"
    if isinstance(expression, list) and expression and isinstance(expression[0], bytes):
        fields = FIELDS.get(expression[0])
        if fields is not None and len(expression) == len(fields) + 1:
            return _message(head, expression[0].decode(), fields, expression[1:], unjelly)
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


def _message(head: str, name: str, fields: tuple[str, ...], values: list[Any], unjelly: bool) -> str:
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
            if unjelly and field in JELLIED:
                lines.append(label + _unjellied(value, len(label)))
            else:
                lines.append(label + _pretty(value, len(label)))
    return "\n".join(lines)


def _unjellied(sexp: list[Any], indent: int) -> str:
    """What a jellied field stands for, as the command line shows values; or why it cannot be shown."""
    try:
        value = jelly.unjelly(sexp, registry=AnyCopies(parent=jelly.copy_registry), invoker=Tokens())
    except JellyError as exc:
        return f"(cannot unjelly: {exc}) {_pretty(sexp, indent)}"
    if isinstance(value, Copy) and value.tag == FAILURE_TAG and isinstance(value.state, dict):
        # An error answer: its class and message, as ``trio-pb call`` prints them.
        kind, message = value.state.get("type", b"?"), value.state.get("value", "")
        kind = kind.decode("utf-8", "replace") if isinstance(kind, bytes) else str(kind)
        return f"{kind}: {message}"
    return _pretty(value, indent)


def _pretty(expression: Any, indent: int) -> str:
    """*expression* pretty-printed, its continuation lines indented to *indent*."""
    text = pprint.pformat(expression, width=max(40, WIDTH - indent), compact=True, sort_dicts=False)
    return text.replace("\n", "\n" + " " * indent)
