"""Codecs section: banana, and banana+jelly, encode and decode, trio_pb against Twisted.

Both sides work the way a PB connection does, after the dialect handshake
has chosen ``pb`` (so both send the vocabulary tokens):

* trio_pb: a client :class:`trio_pb.banana.BananaConnection`; ``send`` to
  encode, ``receive_data`` + ``next_event`` to decode.
* Twisted: a client ``twisted.spread.banana.Banana`` on a sink transport;
  ``sendEncoded`` to encode, ``dataReceived`` with ``expressionReceived``
  captured to decode.

The encoded message reaches both decoders in the same chunks, by default the
64 KiB that both Twisted's reactor and trio's ``SocketStream`` read at a
time (``--chunk``).  Jelly uses the default security on both sides:
trio_pb's ``global_security`` and Twisted's ``globalSecurity``.

"banana" cases encode and decode the jellied s-expression of the payload, so
both layers of a case carry exactly the same bytes.  "banana+jelly" cases
carry the payload as a connection does, as the value of an ``answer``
command, and take the path a connection's protocol takes: on trio_pb, the
compiled one-pass encode of the command and the compiled decode straight
from the bytes (``_accel.encode_message``, ``Decoder.next_expression`` with
the plain-data check), else jelly then banana and banana then unjelly, which
is all Twisted has.  Those cases also time ``pickle.dumps`` and
``pickle.loads`` of the same value, the floor the issue measures the codec
against.

Both codec paths are measured: the one this process uses (the compiled codec
when it is built), and the other in a child process, ``python -m bench codecs``
again with ``TRIO_PB_NO_EXTENSIONS=1`` (a process picks its codec once, at
import).  Each path interleaves trio_pb with Twisted and pickle; the ratios
are what compare across paths.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

from twisted.spread import banana as tw_banana
from twisted.spread import jelly as tw_jelly

from trio_pb import _accel, banana, jelly

from . import (
    Measurement,
    Settings,
    Verdict,
    compare,
    format_rate,
    format_table,
    format_time,
    nested_dicts,
    python_description,
)

DESCRIPTION = "banana and banana+jelly encode/decode, trio_pb vs Twisted"

#: The speedups (trio_pb speed / Twisted speed) the codecs must reach; every
#: other case must at least not be slower.
TARGETS: dict[tuple[str, str, str], float] = {
    ("dicts", "banana+jelly", "decode"): 5.0,
    ("dicts", "banana+jelly", "encode"): 1.5,
}

#: The issue's codec targets, on the nested message: (label, bound, at least?).  Encode + decode
#: times are the sums of the two operations' medians.
CODEC_TARGETS = (
    ("codec encode+decode of the nested message, trio_pb / Twisted (speed)", 30.0, True),
    ("codec encode+decode of the nested message, trio_pb / pickle (time)", 5.0, False),
)

LAYERS = ("banana", "banana+jelly")
OPERATIONS = ("encode", "decode")


# --------------------------------------------------------------------------
# Payloads


def _ints() -> list[int]:
    return list(range(100_000))


def _bytes() -> list[bytes]:
    # 1 MB in two strings: one string may not exceed banana's 640 KiB limit.
    rng = random.Random(2)
    return [rng.randbytes(512 * 1024), rng.randbytes(512 * 1024)]


PAYLOADS: dict[str, tuple[str, Callable[[], Any]]] = {
    "dicts": ("1,000 dicts of 6 fields, one a short list", nested_dicts),
    "ints": ("100,000 ints (0..99,999)", _ints),
    "bytes": ("1 MiB: 2 x 512 KiB bytes", _bytes),
}


# --------------------------------------------------------------------------
# The two implementations, each behind the same four operations


#: The head of the command that carries a "banana+jelly" payload: an answer to request 1.
ANSWER: tuple[bytes, int] = (b"answer", 1)


class _Sink:
    """A transport that keeps the last thing written (Banana writes one message at a time)."""

    data = b""

    def write(self, data: bytes) -> None:
        self.data = data


class TrioSide:
    name = "trio_pb"

    def __init__(self) -> None:
        self.connection = banana.BananaConnection(is_client=True)
        server = banana.BananaConnection(is_client=False)
        self.connection.receive_data(server.data_to_send())
        event = self.connection.next_event()
        assert event == banana.DialectSelected(b"pb"), event

    def encoder(self, sexp: Any) -> Callable[[], bytes]:
        send = self.connection.send
        return lambda: send(sexp)

    def jelly_encoder(self, obj: Any) -> Callable[[], bytes]:
        send = self.connection.send
        jelly_ = jelly.jelly
        message = _accel.encode_message
        if message is not None:
            # What PBProtocol.send_answer does: the one-pass compiled encoder first.
            encoder = self.connection.encoder
            return lambda: message(encoder, ANSWER, (obj,)) or send([*ANSWER, jelly_(obj)])
        return lambda: send([*ANSWER, jelly_(obj)])

    def decoder(self, chunks: list[bytes], plain: Callable[[], bool] | None = None) -> Callable[[], Any]:
        connection = self.connection
        need_data = banana.NEED_DATA

        def decode() -> Any:
            received = []
            for chunk in chunks:
                connection.receive_data(chunk)
                while (event := connection.next_event(plain)) is not need_data:
                    received.append(event)
            (expression,) = received
            return expression

        return decode

    def answer_decoder(self, chunks: list[bytes]) -> Callable[[], Any]:
        # What PBProtocol does with incoming bytes: a plain answer comes built from the bytes
        # (a tuple whose last field is the value), anything else is unjellied afterwards.
        decode = self.decoder(chunks, plain=lambda: True)
        unjelly = self.unjelly

        def decode_answer() -> Any:
            answer = decode()
            return answer[2] if type(answer) is tuple else unjelly(answer[2])

        return decode_answer

    def jelly(self, obj: Any) -> Any:
        return jelly.jelly(obj)

    def unjelly(self, sexp: Any) -> Any:
        plain = _accel.unjelly_plain
        if plain is not None:
            # What PBProtocol.unjelly tries first: the compiled walk of plain data.
            value = plain(sexp, banana.DEPTH_LIMIT, None)
            if value is not NotImplemented:
                return value
        return jelly.unjelly(sexp)


class TwistedSide:
    name = "Twisted"

    def __init__(self) -> None:
        self.sink = _Sink()
        self.protocol = tw_banana.Banana(isClient=True)
        self.protocol.makeConnection(self.sink)
        self.received: list[Any] = []
        # The server's dialect offer; the client answers b"pb" and selects it.
        self.protocol.dataReceived(banana.encode([b"pb", b"none"], dialect=b"none"))
        assert self.protocol.currentDialect == b"pb"
        self.protocol.expressionReceived = self.received.append

    def encoder(self, sexp: Any) -> Callable[[], bytes]:
        send = self.protocol.sendEncoded
        sink = self.sink

        def encode() -> bytes:
            send(sexp)
            return sink.data

        return encode

    def jelly_encoder(self, obj: Any) -> Callable[[], bytes]:
        send = self.protocol.sendEncoded
        sink = self.sink
        jelly_ = tw_jelly.jelly
        security = tw_jelly.globalSecurity

        def encode() -> bytes:
            send([*ANSWER, jelly_(obj, taster=security)])
            return sink.data

        return encode

    def decoder(self, chunks: list[bytes]) -> Callable[[], Any]:
        data_received = self.protocol.dataReceived
        received = self.received

        def decode() -> Any:
            for chunk in chunks:
                data_received(chunk)
            (expression,) = received
            received.clear()
            return expression

        return decode

    def jelly(self, obj: Any) -> Any:
        return tw_jelly.jelly(obj, taster=tw_jelly.globalSecurity)

    def unjelly(self, sexp: Any) -> Any:
        return tw_jelly.unjelly(sexp, taster=tw_jelly.globalSecurity)

    def answer_decoder(self, chunks: list[bytes]) -> Callable[[], Any]:
        decode = self.decoder(chunks)
        unjelly = self.unjelly
        return lambda: unjelly(decode()[2])


class PickleSide:
    """Not a PB codec: the standard library's fastest serializer, as the floor."""

    name = "pickle"

    def encoder(self, obj: Any) -> Callable[[], bytes]:
        return lambda: pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)

    def decoder(self, data: bytes) -> Callable[[], Any]:
        return lambda: pickle.loads(data)


Side = TrioSide | TwistedSide


def _operation(
    side: Side, layer: str, op: str, obj: Any, sexp: Any, chunks: list[bytes]
) -> Callable[[], Any]:
    """The timed function for one case on one side."""
    if op == "encode":
        return side.encoder(sexp) if layer == "banana" else side.jelly_encoder(obj)
    return side.decoder(chunks) if layer == "banana" else side.answer_decoder(chunks)


# --------------------------------------------------------------------------
# The section


@dataclass(frozen=True)
class Row:
    payload: str
    layer: str
    op: str
    size: int
    trio: Measurement
    twisted: Measurement
    #: pickle.dumps or pickle.loads of the same value ("banana+jelly" cases only).
    pickle: Measurement | None = None


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--payload", action="append", choices=sorted(PAYLOADS), help="only this payload (repeatable)"
    )
    group.add_argument("--layer", action="append", choices=LAYERS, help="only this layer (repeatable)")
    group.add_argument("--op", action="append", choices=OPERATIONS, help="only this operation (repeatable)")
    group.add_argument(
        "--chunk",
        type=int,
        default=65536,
        metavar="BYTES",
        help="decoders receive the message in chunks of this size; 0: all at once (default: %(default)s)",
    )
    group.add_argument(
        "--codec",
        choices=("both", "compiled", "pure"),
        default="both",
        help="the trio_pb codec paths to measure (default: %(default)s)",
    )
    # Internal: a child process measuring the other path writes its verdicts here.
    group.add_argument("--verdicts-to", metavar="PATH", help=argparse.SUPPRESS)


def _chunks(data: bytes, size: int) -> list[bytes]:
    if size <= 0:
        return [data]
    return [data[i : i + size] for i in range(0, len(data), size)]


def run(options: argparse.Namespace, settings: Settings) -> list[Verdict]:
    here = "compiled" if _accel.IN_USE else "pure"
    paths = ["compiled", "pure"] if options.codec == "both" else [options.codec]
    verdicts: list[Verdict] = []
    for index, path in enumerate(paths):
        if index:
            print()
        if path == here:
            verdicts += _measure(options, settings)
        else:
            verdicts += _measure_elsewhere(path, options, settings)
    if options.verdicts_to:
        with open(options.verdicts_to, "w") as file:
            json.dump([vars(verdict) for verdict in verdicts], file)
    return verdicts


def _measure_elsewhere(path: str, options: argparse.Namespace, settings: Settings) -> list[Verdict]:
    """Measure *path* in a child process whose environment selects it; its tables print here."""
    if path == "compiled" and _accel.DISABLED:
        # The child would inherit the choice; unset it so that the child can use the extension.
        env = {name: value for name, value in os.environ.items() if name != "TRIO_PB_NO_EXTENSIONS"}
    else:
        env = {**os.environ, "TRIO_PB_NO_EXTENSIONS": "1"}
    args = [
        "--repeat", str(settings.repeat), "--min-time", str(settings.min_time),
        "--max-case-time", str(settings.max_case_time), *(["--gc"] if settings.gc else []),
        "--chunk", str(options.chunk), "--codec", path,
    ]  # fmt: skip
    for option, values in (("--payload", options.payload), ("--layer", options.layer), ("--op", options.op)):
        for value in values or []:
            args += [option, value]
    with tempfile.TemporaryDirectory() as directory:
        verdicts_path = os.path.join(directory, "verdicts.json")
        sys.stdout.flush()
        completed = subprocess.run(
            [sys.executable, "-m", "bench", "codecs", *args, "--verdicts-to", verdicts_path],
            env=env,
            check=False,
        )
        if completed.returncode != 0 or not os.path.exists(verdicts_path):
            print(f"bench.codecs: the {path} path could not be measured (exit code {completed.returncode})")
            return []
        with open(verdicts_path) as file:
            measured = [Verdict(**fields) for fields in json.load(file)]
    if path == "compiled" and not any(verdict.path == "compiled" for verdict in measured):
        print("bench.codecs: the compiled codec is not built (pip install -e ., or setup.py build_ext)")
    return measured


def _measure(options: argparse.Namespace, settings: Settings) -> list[Verdict]:
    payloads = options.payload or list(PAYLOADS)
    layers = options.layer or list(LAYERS)
    ops = options.op or list(OPERATIONS)
    trio_side, twisted_side, pickle_side = TrioSide(), TwistedSide(), PickleSide()

    fed = f"{options.chunk}-byte chunks" if options.chunk > 0 else "the whole message at once"
    print(
        f"codecs: trio_pb {version('trio_pb')} vs Twisted {version('twisted')}, {python_description()}; "
        f"pb dialect; decoders fed {fed}; GC {'on' if settings.gc else 'off'} while timing"
    )
    rows: list[Row] = []
    for payload in payloads:
        build = PAYLOADS[payload][1]
        obj = build()
        sexp = trio_side.jelly(obj)
        _check(sexp == twisted_side.jelly(obj), f"{payload}: jelly differs between trio_pb and Twisted")
        # The banana layer carries the bare s-expression; banana+jelly, an answer command.
        wires = {"banana": trio_side.encoder(sexp)(), "banana+jelly": trio_side.encoder([*ANSWER, sexp])()}
        _check(wires["banana"] == twisted_side.encoder(sexp)(), f"{payload}: banana bytes differ")
        _check(
            wires["banana+jelly"] == twisted_side.encoder([*ANSWER, sexp])(),
            f"{payload}: answer bytes differ",
        )
        pickled = pickle_side.encoder(obj)()
        for layer in layers:
            wire = wires[layer]
            chunks = _chunks(wire, options.chunk)
            for op in ops:
                functions = [
                    _operation(side, layer, op, obj, sexp, chunks) for side in (trio_side, twisted_side)
                ]
                expected = wire if op == "encode" else (sexp if layer == "banana" else obj)
                for side, function in zip((trio_side, twisted_side), functions, strict=True):
                    _check(function() == expected, f"{payload} {layer} {op}: wrong result from {side.name}")
                if layer == "banana+jelly":
                    floor = pickle_side.encoder(obj) if op == "encode" else pickle_side.decoder(pickled)
                    _check(pickle.loads(floor()) == obj if op == "encode" else floor() == obj, "pickle")
                    functions.append(floor)
                trio, twisted, *floor_time = compare(functions, settings)
                rows.append(Row(payload, layer, op, len(wire), trio, twisted, *floor_time))
                _progress(
                    f"{payload} {layer} {op}: {format_time(trio.median)} vs {format_time(twisted.median)}"
                )
    _progress("")
    print(_table(rows))
    print()
    print(
        "time: median per operation over interleaved repeats; MB/s: encoded size (10**6 bytes) / time;\n"
        "speedup: Twisted time / trio_pb time (>1: trio_pb faster), the median over the pairs of\n"
        "back-to-back repeats, and the range of those pairs; target: the speedup the codecs must\n"
        "reach (1x: never slower); pickle: pickle.dumps or pickle.loads of the same value, and\n"
        "x pickle: trio_pb time / pickle time.\n"
        "payloads: " + "; ".join(f"{name}: {PAYLOADS[name][0]}" for name in payloads) + "."
    )
    return _verdicts(rows, "compiled" if _accel.IN_USE else "pure")


def _verdicts(rows: list[Row], path: str) -> list[Verdict]:
    """The issue's codec targets, from the nested message's banana+jelly encode and decode."""
    both = {row.op: row for row in rows if row.payload == "dicts" and row.layer == "banana+jelly"}
    if set(both) != set(OPERATIONS):
        return []
    trio = sum(row.trio.median for row in both.values())
    twisted = sum(row.twisted.median for row in both.values())
    floor = sum(row.pickle.median for row in both.values() if row.pickle is not None)
    (label_twisted, bound_twisted, _), (label_pickle, bound_pickle, _) = CODEC_TARGETS
    return [
        Verdict(label_twisted, path, twisted / trio, bound_twisted, True),
        Verdict(label_pickle, path, trio / floor, bound_pickle, False),
    ]


def _progress(message: str) -> None:
    """A status line on a terminal's stderr, overwritten by the next (the table is on stdout)."""
    if sys.stderr.isatty():
        print(f"\r\033[K{message}", end="", file=sys.stderr, flush=True)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise SystemExit(f"bench.codecs: {message}")


def _table(rows: list[Row]) -> str:
    headers = [
        "payload",
        "layer",
        "op",
        "wire",
        "trio_pb",
        "Twisted",
        "trio_pb MB/s",
        "Twisted MB/s",
        "speedup",
        "(range)",
        "target",
        "pickle",
        "x pickle",
    ]
    right = [False, False, False, True, True, True, True, True, True, False, False, True, True]
    cells = []
    for row in rows:
        # Repeats ran in pairs, back to back: a pair's ratio cancels the load the
        # machine was under at the time, and the median drops the odd pair.
        ratios = [tw / tr for tr, tw in zip(row.trio.times, row.twisted.times, strict=True)]
        speedup = statistics.median(ratios)
        target = TARGETS.get((row.payload, row.layer, row.op), 1.0)
        verdict = "ok" if speedup >= target else "MISSED"
        cells.append(
            [
                row.payload,
                row.layer,
                row.op,
                f"{row.size / 1e3:,.0f} kB",
                format_time(row.trio.median),
                format_time(row.twisted.median),
                format_rate(row.size, row.trio.median),
                format_rate(row.size, row.twisted.median),
                f"{speedup:.2f}x",
                f"({min(ratios):.2f}-{max(ratios):.2f})",
                f">={target:g}x {verdict}",
                format_time(row.pickle.median) if row.pickle else "",
                f"{row.trio.median / row.pickle.median:.1f}x" if row.pickle else "",
            ]
        )
    return format_table(headers, cells, right)
