"""Banana: the byte framing of Perspective Broker, as a sans-IO codec.

Banana turns nested lists of ``bytes``, ``int`` and ``float`` into bytes and
back, exactly as Twisted's ``twisted.spread.banana`` does on the wire
(docs/protocol.rst, "Banana: framing").  This module does no I/O and imports no
trio: :func:`encode` and :func:`decode` work on whole expressions,
:class:`Decoder` parses a stream incrementally, and :class:`BananaConnection`
adds the dialect handshake that opens every PB connection.

The decoder is linear in its input: it never re-copies data it has already
seen, and it gathers the chunks of a long string in a list until the whole
string is there, so a peer that drips one byte at a time costs little.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from ._accel import decode_parse as _compiled_parse
from ._accel import decode_plain as _compiled_plain
from ._events import NEED_DATA
from .errors import BananaDecodeError, BananaEncodeError

__all__ = [
    "DIALECTS",
    "MESSAGE_ITEMS_LIMIT",
    "MESSAGE_SIZE_LIMIT",
    "NEED_DATA",
    "PB_VOCABULARY",
    "PREFIX_LIMIT",
    "SIZE_LIMIT",
    "BananaConnection",
    "DialectSelected",
    "Decoder",
    "Encoder",
    "decode",
    "encode",
]

# Type bytes (section 1.1).
LIST: Final = 0x80
INT: Final = 0x81
STRING: Final = 0x82
NEG: Final = 0x83
FLOAT: Final = 0x84
LONGINT: Final = 0x85
LONGNEG: Final = 0x86
VOCAB: Final = 0x87

#: Largest string length or list count accepted or sent (inclusive).
SIZE_LIMIT: Final = 640 * 1024
#: Most prefix bytes an element may have.
PREFIX_LIMIT: Final = 64
#: Most bytes one top-level expression (one PB message) may take on the wire.
#: Twisted has no such limit; this one is far above what PB applications send
#: in one message (bulk data belongs in pages), and keeps one message from
#: holding an unbounded share of memory.
MESSAGE_SIZE_LIMIT: Final = 64 * 1024 * 1024
#: Most elements (atoms and lists, at any depth) one top-level expression may hold.
#: Each costs a Python object of 30 to 60 bytes once decoded, so this bounds
#: what a message of tiny elements (empty lists, say) can cost.
MESSAGE_ITEMS_LIMIT: Final = 1024 * 1024
#: Deepest list nesting the decoder accepts.  Twisted has no such limit, but
#: its recursive unjelly fails far below it; a limit here turns a hostile
#: "list inside list inside ..." into a clean error instead of a RecursionError.
DEPTH_LIMIT: Final = 256

_INT_BOUNDARY: Final = 2**31

#: The ``pb`` dialect's vocabulary; index 0 is unused on the wire.
PB_VOCABULARY: Final[tuple[bytes, ...]] = (
    b"",
    b"None",
    b"class",
    b"dereference",
    b"reference",
    b"dictionary",
    b"function",
    b"instance",
    b"list",
    b"module",
    b"persistent",
    b"tuple",
    b"unpersistable",
    b"copy",
    b"cache",
    b"cached",
    b"remote",
    b"local",
    b"lcache",
    b"version",
    b"login",
    b"password",
    b"challenge",
    b"logged_in",
    b"not_logged_in",
    b"cachemessage",
    b"message",
    b"answer",
    b"error",
    b"decref",
    b"decache",
    b"uncache",
)

#: The dialects trio_pb knows, mapped to their vocabulary (``None``: no VOCAB).
DIALECTS: Final[dict[bytes, tuple[bytes, ...] | None]] = {
    b"trio-pb-2": PB_VOCABULARY,
    b"trio-pb-1": PB_VOCABULARY,
    b"pb": PB_VOCABULARY,
    b"none": None,
}


def int_to_b128(value: int) -> bytes:
    """The banana prefix for a non-negative *value*: base 128, low digits first."""
    if value == 0:
        return b"\x00"
    digits = bytearray()
    while value:
        digits.append(value & 0x7F)
        value >>= 7
    return bytes(digits)


def b128_to_int(prefix: bytes) -> int:
    """The number a banana prefix stands for; the empty prefix is 0."""
    value = 0
    for digit in reversed(prefix):
        value = (value << 7) | digit
    return value


# Most elements on the wire are small ints, short strings and short lists:
# their headers are built once here rather than for every element.
_CACHED = 1024
_INT_TOKENS = [int_to_b128(i) + b"\x81" for i in range(_CACHED)]
_NEG_TOKENS = [int_to_b128(i) + b"\x83" for i in range(_CACHED)]
_STRING_HEADERS = [int_to_b128(i) + b"\x82" for i in range(_CACHED)]
_LIST_HEADERS = [int_to_b128(i) + b"\x80" for i in range(_CACHED)]
_FLOAT = b"\x84"
_pack_double = struct.Struct("!d").pack
_pack_float_token = struct.Struct("!Bd").pack
_unpack_double = struct.Struct("!d").unpack_from


def _check_dialect(dialect: bytes) -> tuple[bytes, ...] | None:
    try:
        return DIALECTS[dialect]
    except (KeyError, TypeError):
        raise ValueError(f"unknown banana dialect {dialect!r}") from None


_VOCAB_TOKENS: dict[tuple[bytes, ...], dict[bytes, bytes]] = {}
_NO_VOCAB_TOKENS: Final[dict[bytes, bytes]] = {}


def _vocab_tokens(vocabulary: tuple[bytes, ...] | None) -> dict[bytes, bytes]:
    """The VOCAB token of each word of *vocabulary*, made once per vocabulary and shared (never changed)."""
    if not vocabulary:
        return _NO_VOCAB_TOKENS
    tokens = _VOCAB_TOKENS.get(vocabulary)
    if tokens is None:
        tokens = _VOCAB_TOKENS[vocabulary] = {
            word: int_to_b128(i) + b"\x87" for i, word in enumerate(vocabulary) if i
        }
    return tokens


class Encoder:
    """Encodes expressions for one dialect.

    An ``Encoder`` is cheap to keep and reuse; it holds only its dialect's
    tables.  ``size_limit`` bounds every string and list it will send, and
    ``message_size_limit`` and ``message_items_limit`` each whole expression
    (the peer would refuse anything larger and drop the connection).
    """

    # One per connection: no instance dict.
    __slots__ = (
        "_short",
        "_vocab_tokens",
        "_vocabulary",
        "depth_limit",
        "dialect",
        "message_items_limit",
        "message_size_limit",
        "size_limit",
    )

    def __init__(
        self,
        dialect: bytes = b"pb",
        *,
        size_limit: int = SIZE_LIMIT,
        depth_limit: int = DEPTH_LIMIT,
        message_size_limit: int = MESSAGE_SIZE_LIMIT,
        message_items_limit: int = MESSAGE_ITEMS_LIMIT,
    ) -> None:
        vocabulary = _check_dialect(dialect)
        self.dialect = dialect
        self._vocabulary = vocabulary
        self.size_limit = size_limit
        self.depth_limit = depth_limit
        self.message_size_limit = message_size_limit
        self.message_items_limit = message_items_limit
        # Lengths below this use the cached headers; never above the limit.
        self._short = min(_CACHED, size_limit + 1)
        # Shared by every encoder of the dialect (read only): one per connection would cost ~2 KB each.
        self._vocab_tokens: dict[bytes, bytes] = _vocab_tokens(vocabulary)

    @property
    def vocabulary(self) -> tuple[bytes, ...] | None:
        """The dialect's VOCAB table, or ``None`` if it has none."""
        return self._vocabulary

    def encode(self, obj: object) -> bytes:
        """The bytes for *obj*; on failure, raises :class:`~trio_pb.errors.BananaEncodeError`."""
        out: list[bytes] = []
        if isinstance(obj, (list, tuple)):
            items = self._encode_list(obj, out.append)
            if items > self.message_items_limit:
                raise BananaEncodeError(
                    f"cannot send a message of {items} elements: the limit is {self.message_items_limit}"
                )
        else:
            self._encode_atom(obj, out.append)
        data = b"".join(out)
        if len(data) > self.message_size_limit:
            raise BananaEncodeError(
                f"cannot send a message of {len(data)} bytes: the limit is {self.message_size_limit}"
            )
        return data

    def _list_header(self, count: int, append: Any) -> None:
        if count < self._short:
            append(_LIST_HEADERS[count])
        elif count > self.size_limit:
            raise BananaEncodeError(f"cannot send a list of {count} items: the limit is {self.size_limit}")
        else:
            append(int_to_b128(count) + b"\x80")

    def _encode_list(self, root: Sequence[Any], append: Any) -> int:
        """Append the elements of *root*; return how many elements it made, itself included."""
        # The hot path, written as a loop over a stack of iterators rather than
        # a recursion: one type() test per element, the common cases first,
        # cached headers for small values, no Python call per nested list.
        # The depth limit is checked here so that nothing the peer would
        # refuse is sent; the elements are counted a list at a time.
        short = self._short
        vocab = self._vocab_tokens
        depth_limit = self.depth_limit
        list_header = self._list_header
        encode_atom = self._encode_atom
        elements = 1 + len(root)
        list_header(elements - 1, append)
        stack: list[Any] = []
        items = iter(root)
        while True:
            for item in items:
                item_kind = type(item)
                if item_kind is int and 0 <= item < 0x200000:
                    # Up to three prefix digits, built without a loop.
                    if item < _CACHED:
                        append(_INT_TOKENS[item])
                    elif item < 0x4000:
                        append(bytes((item & 0x7F, item >> 7, INT)))
                    else:
                        append(bytes((item & 0x7F, (item >> 7) & 0x7F, item >> 14, INT)))
                elif item_kind is bytes and len(item) < short:
                    token = vocab.get(item)
                    if token is None:
                        append(_STRING_HEADERS[len(item)])
                        append(item)
                    else:
                        append(token)
                elif item_kind is list or item_kind is tuple or isinstance(item, (list, tuple)):
                    count = len(item)
                    if count < short:
                        append(_LIST_HEADERS[count])
                    else:
                        list_header(count, append)
                    if count:
                        elements += count
                        if len(stack) + 1 >= depth_limit:
                            raise BananaEncodeError(f"cannot send lists nested more than {depth_limit} deep")
                        stack.append(items)
                        items = iter(item)
                        break
                elif item_kind is float:
                    append(_pack_float_token(FLOAT, item))
                else:
                    encode_atom(item, append)
            else:
                if not stack:
                    return elements
                items = stack.pop()

    def _encode_atom(self, obj: Any, append: Any) -> None:
        kind = type(obj)
        if kind is bytes:
            self._encode_bytes(obj, append)
        elif kind is int or kind is bool:
            self._encode_int(obj, append)
        elif kind is float:
            append(_FLOAT + _pack_double(obj))
        elif isinstance(obj, int):
            self._encode_int(int(obj), append)
        elif isinstance(obj, float):
            append(_FLOAT + _pack_double(obj))
        elif isinstance(obj, bytes):
            self._encode_bytes(bytes(obj), append)
        else:
            cls = type(obj)
            raise BananaEncodeError(
                f"Banana cannot send {cls.__module__}.{cls.__qualname__} objects: {obj!r:.200}"
            )

    def _encode_bytes(self, data: bytes, append: Any) -> None:
        token = self._vocab_tokens.get(data)
        if token is not None:
            append(token)
            return
        length = len(data)
        if length < self._short:
            append(_STRING_HEADERS[length])
        elif length > self.size_limit:
            raise BananaEncodeError(f"cannot send a string of {length} bytes: the limit is {self.size_limit}")
        else:
            append(int_to_b128(length) + b"\x82")
        append(data)

    @staticmethod
    def _encode_int(value: int, append: Any) -> None:
        if value >= 0:
            if value < _CACHED:
                append(_INT_TOKENS[value])
                return
            token = b"\x81" if value < _INT_BOUNDARY else b"\x85"
        else:
            if value > -_CACHED:
                append(_NEG_TOKENS[-value])
                return
            token = b"\x83" if value >= -_INT_BOUNDARY else b"\x86"
        prefix = int_to_b128(abs(value))
        if len(prefix) > PREFIX_LIMIT:
            raise BananaEncodeError("int is too large to send")
        append(prefix + token)


class DialectSelected:
    """Event: the handshake is over and *dialect* is in force from here on."""

    __slots__ = ("dialect",)

    def __init__(self, dialect: bytes) -> None:
        self.dialect = dialect

    def __repr__(self) -> str:
        return f"DialectSelected({self.dialect!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DialectSelected) and other.dialect == self.dialect

    def __hash__(self) -> int:
        return hash(self.dialect)


_ELEMENT_MATCHERS: dict[int, Callable[[bytes, int], re.Match[bytes] | None]] = {}


def _element_matcher(limit: int) -> Callable[[bytes, int], re.Match[bytes] | None]:
    """What matches a type byte after at most *limit* prefix bytes; shared by the decoders using *limit*."""
    # (A bound method per decoder would cost 80 bytes per idle connection.)
    match = _ELEMENT_MATCHERS.get(limit)
    if match is None:
        match = _ELEMENT_MATCHERS[limit] = re.compile(rb"[\x00-\x7f]{0,%d}[\x80-\xff]" % limit).match
    return match


class Decoder:
    """Incremental banana decoder: feed bytes, take whole expressions out.

    :meth:`receive_data` stores bytes; :meth:`next_expression` parses just
    enough of them to return the next top-level expression, or
    :data:`NEED_DATA`.  Parsing is lazy on purpose: the dialect (and so the
    meaning of VOCAB elements) may change between two expressions of one
    chunk, and :attr:`vocabulary` can be set between calls.

    Every malformed input raises :class:`~trio_pb.errors.BananaDecodeError`.  After an error the
    decoder is in an undefined state; the connection must be closed.
    """

    # One per connection: no instance dict.
    __slots__ = (
        "_base",
        "_buffer",
        "_element",
        "_message_items",
        "_message_start",
        "_needed",
        "_pending",
        "_plain_scan",
        "_pos",
        "_prefix_limit",
        "_stack",
        "depth_limit",
        "last_message_items",
        "message_items_limit",
        "message_size_limit",
        "size_limit",
        "vocabulary",
    )

    def __init__(
        self,
        *,
        vocabulary: tuple[bytes, ...] | None = None,
        size_limit: int = SIZE_LIMIT,
        prefix_limit: int = PREFIX_LIMIT,
        depth_limit: int = DEPTH_LIMIT,
        message_size_limit: int = MESSAGE_SIZE_LIMIT,
        message_items_limit: int = MESSAGE_ITEMS_LIMIT,
    ) -> None:
        #: The current VOCAB table, or ``None`` before a dialect that has one.
        self.vocabulary = vocabulary
        self.size_limit = size_limit
        self.prefix_limit = prefix_limit
        self.depth_limit = depth_limit
        self.message_size_limit = message_size_limit
        self.message_items_limit = message_items_limit
        #: How many elements the last expression returned held, itself included.
        self.last_message_items = 0
        self._buffer = b""
        self._pos = 0
        # Where _buffer starts in the stream, and where the expression being
        # parsed started: the size of a message spans buffers.
        self._base = 0
        self._message_start = 0
        # The elements of the expression being parsed, counted a list at a time.
        self._message_items = 0
        # Bytes received but not yet joined to _buffer (one growing buffer,
        # not a list of reads: a peer sending a byte at a time must not cost
        # an object per byte), and how many bytes must be available before
        # parsing can make progress again.
        self._pending = bytearray()
        self._needed = 1
        # Lists being filled, innermost last: [items still expected, items].
        self._stack: list[tuple[int, list[Any]]] = []
        # The compiled decoder's scan of a plain command not all received yet (see
        # decode_plain in _speedups.c): it leaves the command unconsumed until it is whole.
        self._plain_scan: list[int] | None = None

    @property
    def prefix_limit(self) -> int:
        """Most prefix bytes an element may have; may be changed between reads."""
        return self._prefix_limit

    @prefix_limit.setter
    def prefix_limit(self, limit: int) -> None:
        # Every element but a float has a prefix byte, and the parser's
        # one-byte fast path assumes at least that much is allowed.
        if limit < 1:
            raise ValueError(f"the prefix limit must be at least 1, not {limit}")
        self._prefix_limit = limit
        self._element = _element_matcher(limit)

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes from the stream."""
        if not self._pending and self._pos == len(self._buffer):
            # Everything before was consumed (an element cut short would have
            # left its start unconsumed): the new bytes are the buffer, uncopied.
            self._base += self._pos
            self._buffer = bytes(data)
            self._pos = 0
        else:
            self._pending += data

    @property
    def consumed(self) -> int:
        """How many bytes of the stream have been consumed (after an expression: up to its end)."""
        return self._base + self._pos

    @property
    def buffered(self) -> int:
        """How many received bytes have not been consumed yet."""
        return len(self._buffer) - self._pos + len(self._pending)

    @property
    def in_expression(self) -> bool:
        """Whether part of an expression has been received and not yet completed."""
        return bool(self._stack) or self.buffered > 0

    def __iter__(self) -> Decoder:
        return self

    def __next__(self) -> Any:
        expression = self.next_expression()
        if expression is NEED_DATA:
            raise StopIteration
        return expression

    def next_expression(
        self, plain: Callable[[], bool] | None = None, hash_budget: float | None = None
    ) -> Any:
        """The next complete top-level expression, or :data:`NEED_DATA`.

        When *plain* (the protocol's check that its plain-data tags mean what they mean by
        default) says so, a whole ``message`` or ``answer`` command of plain data may come decoded
        straight from the bytes, as the tuple ``_accel.decode_plain`` describes, its fields
        unjellied within *hash_budget*.
        """
        available = len(self._buffer) - self._pos
        if self._pending:
            if available + len(self._pending) < self._needed:
                return NEED_DATA
            # What is left of the buffer is less than what parsing needed,
            # so every byte is copied here a bounded number of times.
            self._base += self._pos
            self._buffer = self._buffer[self._pos :] + self._pending
            self._pos = 0
            self._pending = bytearray()
        elif available < self._needed:
            if not available and self._buffer:
                # All of it consumed: not kept while the connection idles
                # (it may be a whole read, 64 KiB).
                self._base += self._pos
                self._buffer = b""
                self._pos = 0
            return NEED_DATA
        if _compiled_parse is None:
            return self._parse()
        if plain is not None and _compiled_plain is not None and not self._stack and plain():
            # Jelly's default depth limit is banana's, as PBProtocol.unjelly uses it.
            decoded = _compiled_plain(self, DEPTH_LIMIT, hash_budget)
            if decoded is not NotImplemented:
                return decoded
        # The compiled parser, when it is in use, does exactly what _parse does.
        return _compiled_parse(self)

    def _message_too_large(self, size: int) -> BananaDecodeError:
        return BananaDecodeError(
            f"Security precaution: a message of more than {self.message_size_limit} bytes ({size} at least)"
        )

    def _parse(self) -> Any:
        buf = self._buffer
        pos = self._pos
        end = len(buf)
        size_limit = self.size_limit
        two_digits = self.prefix_limit >= 2
        three_digits = self.prefix_limit >= 3
        items_limit = self.message_items_limit
        message_items = self._message_items
        # The lists being filled: the innermost in locals (its items, and how
        # many are still expected), the ones around it on the stack.
        stack = self._stack
        if stack:
            remaining, items = stack.pop()
        else:
            remaining, items = 0, None
        while pos < end:
            first = buf[pos]
            if first >= 0x80:
                # No prefix at all (floats, and a legal if unusual zero).
                number = 0
                type_at = pos
            elif pos + 1 < end and buf[pos + 1] >= 0x80:
                number = first
                type_at = pos + 1
            elif two_digits and pos + 2 < end and buf[pos + 2] >= 0x80:
                number = first | (buf[pos + 1] << 7)
                type_at = pos + 2
            elif three_digits and pos + 3 < end and buf[pos + 3] >= 0x80:
                number = first | (buf[pos + 1] << 7) | (buf[pos + 2] << 14)
                type_at = pos + 3
            else:
                match = self._element(buf, pos)
                if match is None:
                    if end - pos > self.prefix_limit:
                        raise BananaDecodeError(
                            f"Security precaution: more than {self.prefix_limit} bytes of prefix"
                        )
                    self._needed = end - pos + 1
                    break
                type_at = match.end() - 1
                number = b128_to_int(buf[pos:type_at])
            kind = buf[type_at]
            body = type_at + 1
            # Literal type bytes (STRING, LIST, INT ...): globals cost a lookup each.
            if kind == 0x82:  # STRING
                if number > size_limit:
                    raise BananaDecodeError("Security precaution: String too long.")
                if body + number > end:
                    if items is not None:
                        size = self._base + body + number - self._message_start
                        if size > self.message_size_limit:
                            raise self._message_too_large(size)
                    self._needed = body + number - pos
                    break
                item: Any = buf[body : body + number]
                pos = body + number
            elif kind == 0x80:  # LIST
                if number > size_limit:
                    raise BananaDecodeError("Security precaution: List too long.")
                if items is None:
                    # A new top-level expression: one PB message.
                    self._message_start = self._base + pos
                    message_items = 1 + number
                else:
                    message_items += number
                if message_items > items_limit:
                    raise BananaDecodeError(
                        f"Security precaution: a message of more than {items_limit} elements"
                    )
                pos = body
                if number:
                    if items is not None:
                        if len(stack) + 1 >= self.depth_limit:
                            raise BananaDecodeError(f"lists are nested more than {self.depth_limit} deep")
                        stack.append((remaining, items))
                    remaining, items = number, []
                    continue
                item = []
            elif kind == 0x81 or kind == 0x85:  # INT, LONGINT
                item = number
                pos = body
            elif kind == 0x87:  # VOCAB
                vocabulary = self.vocabulary
                if vocabulary is None:
                    raise BananaDecodeError(f"VOCAB element {number} outside the pb dialect")
                if not 0 < number < len(vocabulary):
                    raise BananaDecodeError(f"VOCAB element {number} is not in the vocabulary")
                item = vocabulary[number]
                pos = body
            elif kind == 0x83 or kind == 0x86:  # NEG, LONGNEG
                item = -number
                pos = body
            elif kind == 0x84:  # FLOAT
                if body + 8 > end:
                    self._needed = body + 8 - pos
                    break
                item = _unpack_double(buf, body)[0]
                pos = body + 8
            else:
                raise BananaDecodeError(f"invalid type byte 0x{kind:02x}")
            # Hand the item to the innermost open list; a list that is now
            # full is itself an item of the list around it.
            if items is None:
                self._pos = pos
                self._needed = 1
                self.last_message_items = 1
                return item
            items.append(item)
            remaining -= 1
            while not remaining:
                if not stack:
                    self._pos = pos
                    self._needed = 1
                    size = self._base + pos - self._message_start
                    if size > self.message_size_limit:
                        raise self._message_too_large(size)
                    self.last_message_items = message_items
                    return items
                item = items
                remaining, items = stack.pop()
                items.append(item)
                remaining -= 1
        else:
            self._needed = 1
        if items is not None:
            stack.append((remaining, items))
            size = self._base + pos - self._message_start
            if size > self.message_size_limit:
                raise self._message_too_large(size)
        self._message_items = message_items
        self._pos = pos
        return NEED_DATA


def encode(obj: object, *, dialect: bytes = b"pb") -> bytes:
    """The banana bytes of one expression, in *dialect* (``b"pb"`` or ``b"none"``)."""
    return Encoder(dialect).encode(obj)


def decode(data: bytes, *, dialect: bytes = b"pb", **limits: int) -> Any:
    """Decode exactly one whole expression from *data*.

    Raises :class:`~trio_pb.errors.BananaDecodeError` if *data* is malformed, ends early or has
    bytes after the expression.  *limits* are passed to :class:`Decoder`.
    """
    decoder = Decoder(vocabulary=_check_dialect(dialect), **limits)
    decoder.receive_data(data)
    expression = decoder.next_expression()
    if expression is NEED_DATA:
        raise BananaDecodeError("incomplete banana expression")
    if decoder.buffered:
        raise BananaDecodeError(f"{decoder.buffered} bytes after the banana expression")
    return expression


class BananaConnection:
    """One end of a banana connection: the dialect handshake, then expressions.

    Sans-IO, in the style of h11: feed received bytes to :meth:`receive_data`,
    take events from :meth:`next_event`, and send whatever
    :meth:`data_to_send` returns.  The server (the side that accepted the
    connection) offers its dialects, most preferred first; the client picks
    the first one it knows, in the server's order (docs/protocol.rst, "Banana: framing").  The
    handshake's own expressions never reach the caller: :meth:`next_event`
    returns one :class:`DialectSelected` when it is over, then the peer's
    expressions.
    """

    # One per connection: no instance dict.
    __slots__ = (
        "_decoder",
        "_encoder",
        "_outgoing",
        "depth_limit",
        "dialect",
        "dialects",
        "is_client",
        "message_items_limit",
        "message_size_limit",
        "peer_handshake",
        "size_limit",
    )

    def __init__(
        self,
        *,
        is_client: bool,
        dialects: Iterable[bytes] = (b"pb", b"none"),
        size_limit: int = SIZE_LIMIT,
        prefix_limit: int = PREFIX_LIMIT,
        depth_limit: int = DEPTH_LIMIT,
        message_size_limit: int = MESSAGE_SIZE_LIMIT,
        message_items_limit: int = MESSAGE_ITEMS_LIMIT,
    ) -> None:
        self.is_client = is_client
        self.dialects = tuple(dialects)
        for dialect in self.dialects:
            _check_dialect(dialect)
        if not self.dialects:
            raise ValueError("a banana connection needs at least one dialect")
        #: The dialect in force, or ``None`` while the handshake runs.
        self.dialect: bytes | None = None
        #: What the peer said in the handshake: the server's offer (a list), or the client's choice.
        self.peer_handshake: object = None
        self.size_limit = size_limit
        self.depth_limit = depth_limit
        self.message_size_limit = message_size_limit
        self.message_items_limit = message_items_limit
        self._decoder = Decoder(
            size_limit=size_limit,
            prefix_limit=prefix_limit,
            depth_limit=depth_limit,
            message_size_limit=message_size_limit,
            message_items_limit=message_items_limit,
        )
        self._encoder = self._make_encoder(b"none")
        self._outgoing: list[bytes] = []
        if not is_client:
            self._outgoing.append(self._encoder.encode(list(self.dialects)))

    @property
    def encoder(self) -> Encoder:
        """The encoder for the current dialect."""
        return self._encoder

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes received from the peer."""
        self._decoder.receive_data(data)

    @property
    def in_expression(self) -> bool:
        """Whether bytes of an unfinished expression are waiting for the rest."""
        return self._decoder.in_expression

    @property
    def buffered(self) -> int:
        """How many received bytes have not been consumed yet."""
        return self._decoder.buffered

    def next_event(self, plain: Callable[[], bool] | None = None, hash_budget: float | None = None) -> Any:
        """The next expression, a :class:`DialectSelected`, or :data:`NEED_DATA`.

        *plain* and *hash_budget* are :meth:`Decoder.next_expression`'s, used once the dialect
        is agreed.
        """
        if self.dialect is not None:
            return self._decoder.next_expression(plain, hash_budget)
        expression = self._decoder.next_expression()
        if self.dialect is not None or expression is NEED_DATA:
            return expression
        self.peer_handshake = expression
        if self.is_client:
            if not isinstance(expression, list):
                raise BananaDecodeError(f"the server's dialect offer is not a list: {expression!r:.100}")
            chosen = next((d for d in expression if d in self.dialects), None)
            if chosen is None:
                raise BananaDecodeError(f"no dialect in common with the server's offer {expression!r:.200}")
            self._outgoing.append(self._encoder.encode(chosen))
        else:
            chosen = expression
            if type(chosen) is not bytes or chosen not in self.dialects:
                raise BananaDecodeError(
                    f"the client selected a dialect the server did not offer: {chosen!r:.100}"
                )
        self._select(chosen)
        return DialectSelected(chosen)

    def _select(self, dialect: bytes) -> None:
        self.dialect = dialect
        self._decoder.vocabulary = DIALECTS[dialect]
        self._encoder = self._make_encoder(dialect)

    def _make_encoder(self, dialect: bytes) -> Encoder:
        return Encoder(
            dialect,
            size_limit=self.size_limit,
            depth_limit=self.depth_limit,
            message_size_limit=self.message_size_limit,
            message_items_limit=self.message_items_limit,
        )

    @property
    def last_message_items(self) -> int:
        """How many banana elements the last expression received held, itself included."""
        return self._decoder.last_message_items

    @property
    def bytes_consumed(self) -> int:
        """How many of the peer's bytes the expressions returned so far took, handshake included."""
        return self._decoder.consumed

    def send(self, expression: object) -> bytes:
        """Encode *expression* in the current dialect; all or nothing."""
        return self._encoder.encode(expression)

    def data_to_send(self) -> bytes:
        """Handshake bytes waiting to go out (the offer, or the client's choice)."""
        data = b"".join(self._outgoing)
        self._outgoing.clear()
        return data
