"""Hostile PB clients for the attack tests: ``python stress/attacker.py MODE --port PORT ...``.

Most modes speak banana over a plain socket (:class:`RawPB`), building the bytes with
:mod:`trio_pb.banana` and jelly s-expressions written by hand (docs/protocol.rst), so
that they can send what no well-behaved broker would.  ``churn`` and ``login`` use
trio_pb's own client: what they do wrong is how often, not what.  Each mode is
bounded in size and time, and prints one JSON object with what it saw: how many
answers and errors came back, and whether the server closed the connection.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import trio

import trio_pb
from trio_pb.banana import DIALECTS, NEED_DATA, Decoder, Encoder
from trio_pb.errors import UnauthorizedLogin

#: CPython hashes a positive int modulo this prime: k * P + c all hash to c.
HASH_MODULUS = 2**61 - 1
#: The most items one banana list may have (banana.SIZE_LIMIT).
LIST_LIMIT = 640 * 1024


class Disconnected(Exception):
    """The server closed (or reset) the connection."""


class RawPB:
    """A PB client connection made of a socket and the banana codec, nothing else.

    The constructor does the handshake: it reads the server's dialect offer,
    answers *dialect*, and exchanges ``version``.  After that, :meth:`send`
    writes raw bytes, :meth:`message` builds a call, and either
    :meth:`read_expression` or a :meth:`start_reader` thread takes in what
    the server sends.
    """

    def __init__(self, port: int, *, dialect: bytes = b"pb", rcvbuf: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            # Before connecting, so that the window the server sees is small from the start.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.decoder = Decoder()
        offer = self.read_expression()
        if not isinstance(offer, list) or dialect not in offer:
            raise RuntimeError(f"the server offered {offer!r}, not {dialect!r}")
        self.send(Encoder(b"none").encode(dialect))
        self.decoder.vocabulary = DIALECTS[dialect]
        # A hostile peer is not bound by our own limits on what it sends.
        self.encoder = Encoder(dialect, message_size_limit=2**40, message_items_limit=2**40)
        self.send(self.encode([b"version", 6]))
        version = self.read_expression()
        if version != [b"version", 6]:
            raise RuntimeError(f"the server sent {version!r}, not its version")
        #: What the reader thread counted: command -> messages.
        self.received: Counter[bytes] = Counter()
        #: Error answers whose failure names this text, by text (see count_errors_naming).
        self.errors_naming: Counter[str] = Counter()
        self._names: tuple[str, ...] = ()
        #: Whether the server closed the connection (seen by reading or by sending).
        self.disconnected = False
        self._reader: threading.Thread | None = None
        self._closing = False

    def encode(self, expression: Any) -> bytes:
        return self.encoder.encode(expression)

    def message(self, request_id: int, name: bytes, *args: Any, target: Any = b"root") -> bytes:
        """The bytes of a call to *target*.*name* with jellied *args*, answer wanted."""
        return self.encode([b"message", request_id, target, name, 1, [b"tuple", *args], [b"dictionary"]])

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError) as exc:
            self.disconnected = True
            raise Disconnected from exc

    def send_for(self, chunks: Iterable[bytes], seconds: float) -> int:
        """Send *chunks* until they run out or *seconds* pass; return the bytes sent.

        A server that stops reading leaves the socket full: each send then
        waits at most until the time is up.
        """
        deadline = time.monotonic() + seconds
        sent = 0
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return sent
                    self.sock.settimeout(left)
                    try:
                        n = self.sock.send(view)
                    except TimeoutError:
                        return sent
                    sent += n
                    view = view[n:]
        except (BrokenPipeError, ConnectionResetError):
            self.disconnected = True
        finally:
            self.sock.settimeout(10)
        return sent

    def read_expression(self, timeout: float = 10) -> Any:
        """The next expression from the server; raises :class:`Disconnected` at the end.

        Raises :class:`TimeoutError` if nothing complete arrives within *timeout* seconds.
        """
        return self._read(self.sock, timeout)

    def _read(self, sock: socket.socket, timeout: float) -> Any:
        sock.settimeout(timeout)
        while (expression := self.decoder.next_expression()) is NEED_DATA:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                self.disconnected = True
                raise Disconnected
            self.decoder.receive_data(data)
        return expression

    def count_errors_naming(self, *names: str) -> None:
        """Make the reader count error answers whose failure mentions one of *names*."""
        self._names = names

    def start_reader(self) -> None:
        """Read (and count) everything the server sends, in a thread, until the connection ends."""
        # A socket object of its own, so that its time-outs and the sender's do not mix.
        reader_sock = self.sock.dup()

        def read() -> None:
            with reader_sock:
                while not self._closing:
                    try:
                        expression = self._read(reader_sock, timeout=0.5)
                    except TimeoutError:
                        continue
                    except (Disconnected, OSError):
                        return
                    command = expression[0] if type(expression) is list and expression else b"?"
                    self.received[command] += 1
                    if command == b"error" and self._names:
                        text = repr(expression)
                        for name in self._names:
                            if name in text:
                                self.errors_naming[name] += 1

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()

    def wait_for(self, done: Callable[[], bool], seconds: float) -> bool:
        """Wait until *done()* (checked as the reader counts) or the server leaves; False on time-out."""
        deadline = time.monotonic() + seconds
        while not done():
            if self.disconnected or time.monotonic() > deadline:
                return done()
            time.sleep(0.02)
        return True

    def close(self) -> None:
        """Close our end; what the reader thread saw until then stands."""
        disconnected = self.disconnected
        self._closing = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        if self._reader is not None:
            self._reader.join(5)
        self.sock.close()
        # Our own shutdown ends the reader with an end of file: that is not the server's doing.
        self.disconnected = disconnected


# -- the modes: each returns what it saw -----------------------------------------------------------


def nonreader(args: argparse.Namespace) -> dict[str, Any]:
    """Send *calls* calls of ``big(size)`` in one write, never read the answers, hold for *hold* seconds."""
    pb = RawPB(args.port, rcvbuf=65536)
    data = b"".join(pb.message(i, b"big", args.size) for i in range(1, args.calls + 1))
    sent = pb.send_for([data], args.hold)
    time.sleep(max(0.0, args.hold))
    result = {"bytes_sent": sent, "calls": args.calls, "message_bytes": len(data)}
    pb.close()
    return result


def flood(args: argparse.Namespace) -> dict[str, Any]:
    """Send add(1, 2) calls without reading, as fast as the server takes them, for *seconds*."""
    pb = RawPB(args.port, rcvbuf=65536)
    # One request id for all: plain methods answer at once, so the id is never in use.
    chunk = pb.message(1, b"add", 1, 2) * 4096
    chunks = (chunk for _ in range(args.max_bytes // len(chunk)))
    sent = pb.send_for(chunks, args.seconds)
    time.sleep(args.hold)
    result = {"bytes_sent": sent, "calls_sent": sent // len(pb.message(1, b"add", 1, 2))}
    pb.close()
    return result


def _one_call(pb: RawPB, data: bytes, wait: float) -> dict[str, Any]:
    """Send one call (request id 1) and say how it ended: answered, error, disconnected or nothing."""
    start = time.monotonic()
    outcome = "timeout"
    detail = ""
    try:
        pb.send(data)
        sent = time.monotonic()
        while True:
            expression = pb.read_expression(timeout=max(0.01, start + wait - time.monotonic()))
            if type(expression) is list and expression[:2] in ([b"answer", 1], [b"error", 1]):
                outcome = expression[0].decode()
                detail = repr(expression)[:300]
                break
    except Disconnected:
        outcome = "disconnected"
        sent = time.monotonic()
    except TimeoutError:
        sent = time.monotonic()
    end = time.monotonic()
    return {
        "outcome": outcome,
        "detail": detail,
        "seconds": round(end - start, 3),
        "send_s": round(sent - start, 3),
    }


def hashset(args: argparse.Namespace) -> dict[str, Any]:
    """One call whose argument is a set of *count* different ints that all have the same hash."""
    pb = RawPB(args.port)
    members = [k * HASH_MODULUS + 7 for k in range(1, args.count + 1)]
    data = pb.message(1, b"size", [b"set", *members])
    result = {"message_bytes": len(data), **_one_call(pb, data, args.wait)}
    pb.close()
    return result


def emptylists(args: argparse.Namespace) -> dict[str, Any]:
    """One call whose argument is lists of empty lists, *megabytes* on the wire.

    Banana lists hold at most 640 Ki items, so the empty lists (``[b"list"]``
    is what jelly makes of ``[]``) come in lists of lists.
    """
    pb = RawPB(args.port)
    empty = [b"list"]
    per_list = 200_000
    lists = -(-args.megabytes * 1_000_000 // (per_list * len(pb.encode(empty))))
    inner = [b"list", *[empty] * per_list]
    data = pb.message(1, b"size", [b"list", *[inner] * lists])
    result = {"message_bytes": len(data), "empty_lists": per_list * lists, **_one_call(pb, data, args.wait)}
    pb.close()
    return result


def sleepers(args: argparse.Namespace) -> dict[str, Any]:
    """Start *calls* calls of an async method that sleeps, then count how they are answered."""
    pb = RawPB(args.port)
    pb.count_errors_naming("TooManyCalls")
    pb.start_reader()
    batch = 1000
    start = time.monotonic()
    for first in range(1, args.calls + 1, batch):
        ids = range(first, min(first + batch, args.calls + 1))
        pb.send_for([b"".join(pb.message(i, b"sleep", args.sleep) for i in ids)], args.wait)
        if pb.disconnected:
            break
    sent = time.monotonic() - start
    pb.wait_for(lambda: sum(pb.received.values()) >= args.calls - args.expect_running, args.wait)
    result = {
        "send_s": round(sent, 3),
        "received": {k.decode(): v for k, v in pb.received.items()},
        "too_many_calls": pb.errors_naming["TooManyCalls"],
        "disconnected": pb.disconnected,
    }
    pb.close()
    return result


def drip(args: argparse.Namespace) -> dict[str, Any]:
    """Start a 640 KiB string on several connections and send it one byte per write, round robin."""
    conns = [RawPB(args.port) for _ in range(args.connections)]
    size = LIST_LIMIT
    for pb in conns:
        whole = pb.message(1, b"size", b"x" * size)
        # Everything up to the string's first byte: the rest goes one byte at a time.
        pb.send(whole[: len(whole) - size - len(pb.encode([b"dictionary"]))])
    deadline = time.monotonic() + args.seconds
    dripped = 0
    byte = b"x"
    socks = [pb.sock for pb in conns]
    for sock in socks:
        sock.settimeout(5)
    closed = 0
    while socks and time.monotonic() < deadline and dripped < size * len(conns) - len(conns):
        for sock in list(socks):
            try:
                sock.send(byte)
            except OSError:
                # The server may well close a connection that drips: that bounds it too.
                socks.remove(sock)
                closed += 1
                continue
            dripped += 1
        if args.pause:
            time.sleep(args.pause)
    # Keep the partial messages in the server while the test reads its memory.
    time.sleep(args.hold)
    for pb in conns:
        pb.close()
    return {"dripped_bytes": dripped, "connections": len(conns), "closed_by_server": closed}


def cachetokens(args: argparse.Namespace) -> dict[str, Any]:
    """Calls whose arguments look like first copies of Cacheables that fail to unjelly."""
    pb = RawPB(args.port)
    pb.start_reader()
    luid = 1
    calls = 0
    start = time.monotonic()
    state = [b"dictionary"]
    for request_id in range(1, args.tokens // args.per_message + 1):
        tokens = [[b"x.Nope", luid + i, state] for i in range(args.per_message)]
        luid += args.per_message
        pb.send_for([pb.message(request_id, b"echo", [b"list", *tokens])], args.wait)
        calls += 1
        if pb.disconnected:
            break
    pb.wait_for(lambda: pb.received[b"error"] + pb.received[b"answer"] >= calls, args.wait)
    time.sleep(0.5)  # decaches queued behind the error answers
    result = {
        "tokens_sent": luid - 1,
        "calls": calls,
        "send_s": round(time.monotonic() - start, 3),
        "received": {k.decode(): v for k, v in pb.received.items()},
        "disconnected": pb.disconnected,
    }
    pb.close()
    return result


def stray(args: argparse.Namespace) -> dict[str, Any]:
    """Send *count* stray decrefs, or unknown commands, reading whatever comes back."""
    pb = RawPB(args.port)
    pb.start_reader()
    one = pb.encode([b"decref", 12345] if args.kind == "decref" else [b"nonsense", 12345])
    batch = one * 1000
    sent = pb.send_for((batch for _ in range(args.count // 1000)), args.seconds)
    if not pb.disconnected:
        pb.wait_for(lambda: False, args.linger)
    result = {
        "kind": args.kind,
        "sent": sent // len(one),
        "received": {k.decode(): v for k, v in pb.received.items()},
        "disconnected": pb.disconnected,
    }
    pb.close()
    return result


def churn(args: argparse.Namespace) -> dict[str, Any]:
    """Open and close *connections* connections, each making a few calls, a few at a time."""
    done = 0

    async def one() -> None:
        nonlocal done
        async with trio_pb.open_tcp_broker("127.0.0.1", args.port) as broker:
            root = await broker.root_object()
            for i in range(args.calls_each):
                assert await root.call_remote("add", i, 1) == i + 1
        done += 1

    async def worker(count: int) -> None:
        for _ in range(count):
            await one()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for k in range(args.concurrency):
                nursery.start_soon(
                    worker, args.connections // args.concurrency + (k < args.connections % args.concurrency)
                )

    start = time.monotonic()
    trio.run(main)
    return {"connections": done, "seconds": round(time.monotonic() - start, 3)}


def login(args: argparse.Namespace) -> dict[str, Any]:
    """Try wrong passwords on *connections* connections at once, each until it is closed or gives up."""
    failures: list[int] = []
    closed: list[bool] = []

    async def one() -> None:
        count = 0
        was_closed = False
        try:
            async with trio_pb.open_tcp_broker("127.0.0.1", args.port) as broker:
                with trio.move_on_after(args.seconds):
                    while count < args.max_failures:
                        try:
                            await broker.login(trio_pb.UsernamePassword(b"alice", b"wrong%d" % count))
                        except UnauthorizedLogin:
                            count += 1
                        except trio_pb.DeadReferenceError:
                            was_closed = True
                            break
                        except trio_pb.RemoteError:
                            count += 1
        except (trio_pb.DeadReferenceError, OSError):
            # Closed, or refused at once: either way this connection guesses no more.
            was_closed = True
        failures.append(count)
        closed.append(was_closed)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(args.connections):
                nursery.start_soon(one)

    start = time.monotonic()
    trio.run(main)
    seconds = time.monotonic() - start
    return {
        "failures": failures,
        "closed": closed,
        "seconds": round(seconds, 3),
        "failures_per_second": round(sum(failures) / seconds, 1),
    }


MODES: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "nonreader": nonreader,
    "flood": flood,
    "hashset": hashset,
    "emptylists": emptylists,
    "sleepers": sleepers,
    "drip": drip,
    "cachetokens": cachetokens,
    "stray": stray,
    "churn": churn,
    "login": login,
}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=sorted(MODES))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--size", type=int, default=600_000, help="nonreader: bytes per big answer")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument(
        "--hold", type=float, default=3.0, help="seconds to keep the connection open at the end"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to keep sending")
    parser.add_argument("--max-bytes", type=int, default=80_000_000)
    parser.add_argument("--count", type=int, default=80_000)
    parser.add_argument("--wait", type=float, default=10.0, help="how long to wait for answers")
    parser.add_argument("--megabytes", type=int, default=10)
    parser.add_argument("--sleep", type=float, default=60.0)
    parser.add_argument("--expect-running", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--pause", type=float, default=0.0)
    parser.add_argument("--tokens", type=int, default=1_000_000)
    parser.add_argument("--per-message", type=int, default=50_000)
    parser.add_argument("--kind", default="decref", choices=["decref", "unknown"])
    parser.add_argument("--linger", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--calls-each", type=int, default=3, help="churn: calls per connection")
    parser.add_argument("--max-failures", type=int, default=2000)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse(sys.argv[1:])
    print(json.dumps(MODES[arguments.mode](arguments)), flush=True)
