"""Big strings in chunks, for the ``trio-pb-2`` dialect (sans-IO, no trio).

Banana refuses strings over 640 KiB, so under ``trio-pb-2`` a message whose
jelly holds bigger ones is sent in pieces (docs/protocol.rst, "Big values"):
each big string atom is replaced by a placeholder ``[b"trio_pb.blob", id]``,
its bytes go out in ``chunk`` commands that the writer interleaves with other
traffic, and the message itself, wrapped in ``withblobs``, follows its last
chunk.  The receiver keeps each blob's chunks until the message claims it.
What the peer must not see out of order waits behind the message instead
(:meth:`BigValues.hold`), and a call cancelled before its message went out is
taken back (:meth:`BigValues.take_back`, ``dropblobs``).

:class:`BigValues` is the state of one connection, both ways; the protocol
holds one and calls it, and the driver pumps the chunks out.
"""

from __future__ import annotations

from collections import deque
from types import MappingProxyType
from typing import Any, Final

from .banana import int_to_b128
from .errors import BananaEncodeError, ProtocolError

__all__ = ["BLOB_TAG", "CHUNK_SIZE", "MAX_OPEN_BLOBS", "MAX_VALUE_SIZE", "BigValues"]

#: The placeholder tag that stands for a blob inside a ``withblobs`` message.
BLOB_TAG: Final = b"trio_pb.blob"
#: The bytes of one ``chunk`` command; strings up to this size travel inline.
CHUNK_SIZE: Final = 64 * 1024
#: The default of the ``max_value_size`` option: the big-string bytes one message may carry.
MAX_VALUE_SIZE: Final = 256 * 1024 * 1024
#: How many announced blobs the peer may have open (not yet claimed by a message) at once.
MAX_OPEN_BLOBS: Final = 1024


class _Outgoing:
    """One message whose blobs are going out: what is left of them, then the message's bytes."""

    __slots__ = ("after", "announced", "blobs", "in_order", "message", "request_id", "view")

    def __init__(
        self, blobs: list[tuple[int, Any]], message: bytes, request_id: int | None, in_order: bool
    ) -> None:
        self.blobs = deque(blobs)
        self.message = message
        # The call's request id (None for an answer): cancelled, the call is taken back (take_back).
        self.request_id = request_id
        # Whether the calls queued after it wait for it (a call that wants no answer).
        self.in_order = in_order
        # What was queued meanwhile and must not overtake it (see BigValues.hold).
        self.after: list[bytes] | None = None
        # The ids of its blobs announced so far (what the peer holds of it).
        self.announced: list[int] = []
        # The blob being sent: its id and what is left of it (None: not announced yet).
        self.view: memoryview | None = None

    def then(self, data: bytes) -> None:
        """Send *data* right after this message."""
        if self.after is None:
            self.after = [data]
        else:
            self.after.append(data)


class _Incoming:
    """A blob announced by the peer: its size, and the chunks received so far (joined when complete)."""

    __slots__ = ("chunks", "received", "size", "value")

    def __init__(self, size: int) -> None:
        self.size = size
        self.received = 0
        self.chunks: list[bytes] = []
        self.value: bytes | None = None


# The blobs of a connection that has none (read only, shared).
_NO_BLOBS: MappingProxyType[int, _Incoming] = MappingProxyType({})


class BigValues:
    """The blobs of one ``trio-pb-2`` connection: those we send and those the peer sends.

    *limit* bounds the big-string bytes of one message either way (the
    ``max_value_size`` option); the peer's own limit, once it announced it,
    bounds what we send too.
    """

    __slots__ = ("active", "held", "incoming", "limit", "next_id", "outgoing", "peer_limit")

    def __init__(self, limit: int) -> None:
        #: Whether the connection speaks trio-pb-2 (set at the handshake).
        self.active = False
        self.limit = limit
        #: The peer's ``limits`` announcement, once received.
        self.peer_limit: int | None = None
        self.next_id = 1
        # Made at the first blob either way (empty, a deque and a dict would cost
        # every connection 800 bytes).
        self.outgoing: deque[_Outgoing] | tuple[()] = ()
        self.incoming: dict[int, _Incoming] | MappingProxyType[int, _Incoming] = _NO_BLOBS
        #: Bytes the peer announced in blobs not yet claimed (bounded by :attr:`limit`).
        self.held = 0

    @property
    def send_limit(self) -> int:
        """The most big-string bytes one of our messages may carry: ours and the peer's limit."""
        if self.peer_limit is None:
            return self.limit
        return min(self.limit, self.peer_limit)

    # -- sending ---------------------------------------------------------------

    def extract(self, message: list[Any]) -> list[tuple[int, Any]]:
        """Replace the big string atoms of *message* (a jellied command) by placeholders; return the blobs.

        Raises :class:`~trio_pb.errors.BananaEncodeError` past the limit,
        having changed nothing that anyone else holds (the caller built
        *message* for this send).
        """
        blobs: list[tuple[int, Any]] = []
        seen: dict[int, list[Any]] = {}
        total = 0
        limit = self.send_limit
        stack = [message]
        next_id = self.next_id
        while stack:
            node = stack.pop()
            for index, item in enumerate(node):
                kind = type(item)
                if kind is list:
                    stack.append(item)
                elif kind is bytes and len(item) > CHUNK_SIZE:
                    placeholder = seen.get(id(item))
                    if placeholder is None:
                        total += len(item)
                        if total > limit:
                            raise BananaEncodeError(
                                f"cannot send a message with more than {limit} bytes of big strings "
                                f"(the limit of this connection, max_value_size or the peer's)"
                            )
                        placeholder = seen[id(item)] = [BLOB_TAG, next_id]
                        blobs.append((next_id, item))
                        next_id += 1
                    node[index] = placeholder
        self.next_id = next_id
        return blobs

    def push(
        self,
        blobs: list[tuple[int, Any]],
        message: bytes,
        request_id: int | None = None,
        *,
        in_order: bool = False,
    ) -> None:
        """Queue a message whose blobs go out first, a chunk at a time (see :meth:`next_piece`).

        *in_order*: the calls queued after it wait for it (:meth:`hold`).
        """
        outgoing = self.outgoing
        if not isinstance(outgoing, deque):
            outgoing = self.outgoing = deque()
        outgoing.append(_Outgoing(blobs, message, request_id, in_order))

    def hold(self, data: bytes, *, call: bool) -> bool:
        """Queue *data* behind the big message in transit it must not overtake, if any: whether it did.

        Other traffic overtakes a big message while its blobs travel, except
        where the peer would see the two out of order: a *call* waits for
        the last big call that wants no answer (its caller did not wait for
        it, and the peer runs calls in the order they come), and a release
        waits for the last big message (which may name what it releases).
        """
        for waiting in reversed(self.outgoing):
            if waiting.in_order or not call:
                waiting.then(data)
                return True
        return False

    def take_back(self, request_id: int) -> tuple[list[int], list[bytes]] | None:
        """Take back the call *request_id* if its message has not gone out yet; None if it has.

        Gives the ids of its blobs already announced (the peer holds them:
        ``dropblobs`` them) and what was held behind it (releases, which
        must now wait behind the big messages still in transit).  Only for a
        call that wants an answer: no call waits behind one of those.
        """
        outgoing = self.outgoing
        for index, waiting in enumerate(outgoing):
            if waiting.request_id == request_id:
                assert isinstance(outgoing, deque) and not waiting.in_order
                del outgoing[index]
                return waiting.announced, waiting.after or []
        return None

    def next_piece(self, encode: Any) -> bytes | None:
        """The next bytes to queue: a chunk (announced first), or a message once its blobs are out.

        *encode* is the banana encoder's ``encode``.  None: nothing is waiting.
        """
        while self.outgoing:
            current = self.outgoing[0]
            if current.view is not None:
                view = current.view
                piece = view[:CHUNK_SIZE]
                rest = view[CHUNK_SIZE:]
                blob_id = current.blobs[0][0]
                if rest:
                    current.view = rest
                else:
                    current.view = None
                    current.blobs.popleft()
                # Encoded by hand: the encoder would copy the piece and hash it
                # (a vocabulary lookup), for every chunk.  [b"chunk", id] with a
                # list header of 3 instead of 2, then the string's header and bytes.
                head: bytes = encode([b"chunk", blob_id])
                return b"".join((b"\x03" + head[1:], int_to_b128(len(piece)), b"\x82", piece))
            if current.blobs:
                blob_id, value = current.blobs[0]
                current.view = memoryview(value)
                current.announced.append(blob_id)
                announcement: bytes = encode([b"blob", blob_id, len(value)])
                return announcement
            assert isinstance(self.outgoing, deque)
            self.outgoing.popleft()
            if current.after is not None:
                return b"".join((current.message, *current.after))
            return current.message
        return None

    # -- receiving ---------------------------------------------------------------

    def announced(self, blob_id: Any, size: Any) -> None:
        """The peer's ``blob``: *size* bytes of blob *blob_id* follow in chunks."""
        if type(blob_id) is not int or type(size) is not int or size <= 0:
            raise ProtocolError(f"malformed blob announcement: {blob_id!r:.20}, {size!r:.20}")
        if blob_id in self.incoming:
            raise ProtocolError(f"the peer reused blob id {blob_id}")
        if self.held + size > self.limit:
            raise ProtocolError(
                f"the peer announced a blob of {size} bytes, past this connection's limit of "
                f"{self.limit} (max_value_size)"
            )
        if len(self.incoming) >= MAX_OPEN_BLOBS:
            raise ProtocolError(f"the peer has more than {MAX_OPEN_BLOBS} blobs open")
        incoming = self.incoming
        if not isinstance(incoming, dict):
            incoming = self.incoming = {}
        incoming[blob_id] = _Incoming(size)
        self.held += size

    def chunk(self, blob_id: Any, data: Any) -> None:
        """The peer's ``chunk``: the next bytes of blob *blob_id*."""
        blob = self.incoming.get(blob_id) if type(blob_id) is int else None
        if blob is None or blob.value is not None:
            raise ProtocolError(f"a chunk for a blob not announced, or complete: {blob_id!r:.20}")
        if type(data) is not bytes or not data or blob.received + len(data) > blob.size:
            raise ProtocolError(f"a chunk of blob {blob_id} that is empty, not bytes, or past its size")
        blob.chunks.append(data)
        blob.received += len(data)
        if blob.received == blob.size:
            chunks = blob.chunks
            blob.chunks = []
            blob.value = b"".join(chunks)
            del chunks

    def drop(self, blob_ids: Any) -> None:
        """The peer's ``dropblobs``: forget blobs it announced for a call it took back."""
        if type(blob_ids) is not list or not blob_ids:
            raise ProtocolError("malformed dropblobs")
        for blob_id in blob_ids:
            blob = self.incoming.get(blob_id) if type(blob_id) is int else None
            if blob is None:
                raise ProtocolError(f"dropblobs names a blob not open: {blob_id!r:.20}")
            assert isinstance(self.incoming, dict)  # it holds the blob just found
            del self.incoming[blob_id]
            self.held -= blob.size

    def claim(self, blob_ids: Any, command: Any) -> list[Any]:
        """The peer's ``withblobs``: *command* with its placeholders replaced, its blobs forgotten."""
        if type(blob_ids) is not list or type(command) is not list:
            raise ProtocolError("malformed withblobs")
        values: dict[int, bytes] = {}
        for blob_id in blob_ids:
            blob = self.incoming.get(blob_id) if type(blob_id) is int else None
            if blob is None or blob.value is None:
                raise ProtocolError(f"withblobs names a blob not complete: {blob_id!r:.20}")
            values[blob_id] = blob.value
        incoming = self.incoming
        for blob_id in values:
            assert isinstance(incoming, dict)  # it holds the blobs just found
            blob = incoming.pop(blob_id)
            self.held -= blob.size
        stack = [command]
        while stack:
            node = stack.pop()
            for index, item in enumerate(node):
                if type(item) is list:
                    if len(item) == 2 and item[0] == BLOB_TAG:
                        value = values.get(item[1]) if type(item[1]) is int else None
                        if value is None:
                            raise ProtocolError(f"a placeholder for a blob not claimed: {item[1]!r:.20}")
                        node[index] = value
                    else:
                        stack.append(item)
        return command

    def lost(self) -> None:
        """The connection is gone: forget every blob either way."""
        self.outgoing = ()
        self.incoming = _NO_BLOBS
        self.held = 0
