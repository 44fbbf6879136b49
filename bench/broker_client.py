"""``python -m bench.broker_client IMPL PORT [--gc]``: a client of the broker benchmark, in its own process.

It connects to a :mod:`bench.broker_server` of the same IMPL on ``127.0.0.1:PORT``, prints
``READY`` and then obeys commands on standard input, one a line, answering each with one line:

* ``RUN <workload> <n>``: run *n* operations of a workload (see :data:`WORKLOADS`) and
  answer a JSON object: ``n``, ``elapsed`` (seconds, all *n* operations), ``latency``
  (the median seconds of one operation, for the workloads that run one at a time) and
  ``cpu`` (the CPU seconds this process used meanwhile), or ``error``;
* ``CPU``, ``PROFILE START``, ``PROFILE STOP <path>``: as for the servers.

The garbage collector is off while a RUN is timed (like ``timeit``), unless ``--gc``.

How each client drives its calls:

* trio_pb: ``await root.call_remote(...)`` in a loop; 64 in flight: 64 tasks, each making
  calls one after another until the run's count is used up.
* Twisted: plain Deferred callbacks, each answer's callback making the next call (Twisted's
  cheapest style, cheaper than ``inlineCallbacks`` or coroutines); 64 in flight: 64 such
  chains.  The reactor runs in this process, as the server's runs in its own.
* Pyro5: a ``Proxy`` making calls in a loop; 64 in flight: 64 threads, each with a proxy (and
  so a connection) of its own, as Pyro5 proxies belong to one thread at a time; the server's
  thread pool serves them.
* raw: a trio socket; one frame out, then read until the whole echo is back; 64 in flight:
  a sender task that keeps 64 frames unanswered, topping the window up with one
  ``send_all`` of as many frames as it has room for, and a receiver task.
"""

from __future__ import annotations

import gc
import itertools
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from . import nested_dicts
from .broker_server import (
    HEADER,
    IMPLEMENTATIONS,
    PYRO_OBJECT,
    Commands,
    configure_pyro5,
    no_delay_broker,
    split_frames,
)

#: Workload name -> what it is, for the report.
WORKLOADS: dict[str, str] = {
    "sequential": "add(1, 2), one call at a time",
    "in_flight": "add(1, 2), 64 calls in flight",
    "bytes": "echo(100 KB of bytes), one at a time",
    "nested": "echo(1,000 dicts of 6 fields), one at a time",
}
#: Calls kept in flight by the in_flight workload.
IN_FLIGHT = 64
#: The raw echo's stand-in for a small call: about the size of PB's add(1, 2) message (31 bytes).
RAW_SMALL = b"x" * 32
BYTES_SIZE = 100_000


def bytes_payload() -> bytes:
    return random.Random(3).randbytes(BYTES_SIZE)


def _result(n: int, elapsed: float, stamps: list[float] | None = None) -> dict[str, Any]:
    """The answer to RUN; *stamps*: the clock at the start and after each operation."""
    latency = None
    if stamps is not None:
        latency = statistics.median(later - earlier for earlier, later in itertools.pairwise(stamps))
    return {"n": n, "elapsed": elapsed, "latency": latency}


class _GCOff:
    """Collect, then keep the collector off for the timed run (unless told to keep it on)."""

    def __init__(self, keep: bool) -> None:
        self.keep = keep
        self.was_enabled = gc.isenabled()

    def __enter__(self) -> None:
        gc.collect()
        if not self.keep:
            gc.disable()

    def __exit__(self, *exc_info: object) -> None:
        if self.was_enabled:
            gc.enable()


def _one_call(workload: str, payloads: dict[str, Any]) -> tuple[str, tuple[Any, ...], Any]:
    """The method, arguments and expected answer of the call a one-at-a-time workload repeats."""
    if workload == "sequential":
        return "add", (1, 2), 3
    return "echo", (payloads[workload],), payloads[workload]


def _parse_run(line: str) -> tuple[str, int]:
    words = line.split()
    if len(words) != 3 or words[0] != "RUN" or words[1] not in WORKLOADS or not words[2].isdigit():
        raise ValueError(f"bad command {line!r}")
    return words[1], max(1, int(words[2]))


# --------------------------------------------------------------------------
# trio_pb and raw: trio


def _run_trio(impl: str, port: int, keep_gc: bool) -> None:
    import trio

    import trio_pb

    perf = time.perf_counter
    small = RAW_SMALL
    payloads = {"bytes": bytes_payload(), "nested": nested_dicts()}

    async def pb_workload(root: trio_pb.RemoteReference, workload: str, n: int) -> dict[str, Any]:
        call = root.call_remote
        if workload == "in_flight":
            remaining = n

            async def worker() -> None:
                nonlocal remaining
                while remaining > 0:
                    remaining -= 1
                    if await call("add", 1, 2) != 3:
                        raise AssertionError("add(1, 2) != 3")

            start = perf()
            async with trio.open_nursery() as nursery:
                for _ in range(IN_FLIGHT):
                    nursery.start_soon(worker)
            return _result(n, perf() - start)
        method, args, expected = _one_call(workload, payloads)
        stamps = [perf()]
        stamp = stamps.append
        for _ in range(n):
            result = await call(method, *args)
            stamp(perf())
        if result != expected:
            raise AssertionError(f"{method} answered {result!r:.100}")
        return _result(n, stamps[-1] - stamps[0], stamps)

    async def raw_workload(stream: trio.SocketStream, workload: str, n: int) -> dict[str, Any]:
        if workload == "nested":
            raise ValueError("the raw echo has no serialization: no nested workload")
        payload = small if workload != "bytes" else payloads["bytes"]
        frame = HEADER.pack(len(payload)) + payload
        send_all, receive_some = stream.send_all, stream.receive_some
        if workload == "in_flight":
            # Like the brokers, which queue every call made meanwhile and write
            # them in one go, the sender tops the window up with one send_all.
            counts = {"sent": 0, "answered": 0}
            space = trio.Event()

            async def sender() -> None:
                nonlocal space
                while counts["sent"] < n:
                    count = min(IN_FLIGHT - (counts["sent"] - counts["answered"]), n - counts["sent"])
                    if count == 0:
                        await space.wait()
                        space = trio.Event()
                        continue
                    counts["sent"] += count
                    await send_all(frame * count)

            async def receiver() -> None:
                buffer = bytearray()
                while counts["answered"] < n:
                    data = await receive_some(65536)
                    if not data:
                        raise ConnectionError("the raw server closed the connection")
                    buffer += data
                    counts["answered"] += len(split_frames(buffer)) // len(frame)
                    space.set()

            start = perf()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender)
                nursery.start_soon(receiver)
            return _result(n, perf() - start)
        size = len(frame)
        stamps = [perf()]
        stamp = stamps.append
        for _ in range(n):
            await send_all(frame)
            echoed = await receive_some(size)
            while len(echoed) < size:
                more = await receive_some(size - len(echoed))
                if not more:
                    raise ConnectionError("the raw server closed the connection")
                echoed += more
            stamp(perf())
        if echoed != frame:
            raise AssertionError("the echo differs")
        return _result(n, stamps[-1] - stamps[0], stamps)

    async def serve_commands(run: Callable[[str, int], Any]) -> None:
        from trio_pb import _accel

        commands = Commands()
        # The codec this process uses, so that the benchmark can check it is the one it asked for.
        print("READY", "compiled" if _accel.IN_USE else "pure", flush=True)
        while line := await trio.to_thread.run_sync(sys.stdin.readline):
            answer = commands.answer(line)
            if answer is None:
                try:
                    workload, n = _parse_run(line)
                    with _GCOff(keep_gc):
                        cpu = time.process_time()
                        result = await run(workload, n)
                        result["cpu"] = time.process_time() - cpu
                    answer = json.dumps(result)
                except Exception as exc:
                    answer = json.dumps({"error": f"{type(exc).__name__}: {exc}"})
            print(answer, flush=True)

    async def main() -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        if impl == "raw":
            async with stream:
                await serve_commands(lambda workload, n: raw_workload(stream, workload, n))
            return
        async with trio_pb.open_broker(stream, server=False) as broker:
            root = await broker.root_object()
            await serve_commands(lambda workload, n: pb_workload(root, workload, n))

    trio.run(main)


# --------------------------------------------------------------------------
# Twisted


def _run_twisted(port: int, keep_gc: bool) -> None:
    from twisted.internet import defer, reactor, stdio
    from twisted.protocols.basic import LineReceiver
    from twisted.spread import pb

    perf = time.perf_counter
    payloads = {"bytes": bytes_payload(), "nested": nested_dicts()}

    def run(root: Any, workload: str, n: int) -> defer.Deferred[dict[str, Any]]:
        done: defer.Deferred[dict[str, Any]] = defer.Deferred()
        call = root.callRemote

        def failed(failure: Any) -> None:
            if not done.called:
                done.errback(failure)

        if workload == "in_flight":
            state = {"started": 0, "answered": 0}

            def answered(result: Any) -> None:
                if result != 3:
                    raise AssertionError("add(1, 2) != 3")
                state["answered"] += 1
                if state["answered"] == n:
                    done.callback(_result(n, perf() - start))
                elif state["started"] < n:
                    state["started"] += 1
                    call("add", 1, 2).addCallback(answered).addErrback(failed)

            start = perf()
            for _ in range(min(IN_FLIGHT, n)):
                state["started"] += 1
                call("add", 1, 2).addCallback(answered).addErrback(failed)
            return done

        method, args, expected = _one_call(workload, payloads)
        stamps = [perf()]
        stamp = stamps.append

        def step(result: Any) -> None:
            stamp(perf())
            if len(stamps) <= n:
                call(method, *args).addCallback(step).addErrback(failed)
            elif result != expected:
                done.errback(AssertionError(f"{method} answered {result!r:.100}"))
            else:
                done.callback(_result(n, stamps[-1] - stamps[0], stamps))

        call(method, *args).addCallback(step).addErrback(failed)
        return done

    commands = Commands()

    class Control(LineReceiver):
        delimiter = b"\n"
        root: Any = None

        def lineReceived(self, line: bytes) -> None:
            text = line.decode()
            answer = commands.answer(text)
            if answer is not None:
                self.sendLine(answer.encode())
                return
            try:
                workload, n = _parse_run(text)
            except ValueError as exc:
                self.sendLine(json.dumps({"error": str(exc)}).encode())
                return
            gc_off = _GCOff(keep_gc)
            gc_off.__enter__()
            cpu = time.process_time()

            def finished(result: dict[str, Any]) -> None:
                result["cpu"] = time.process_time() - cpu
                gc_off.__exit__()
                self.sendLine(json.dumps(result).encode())

            def failed(failure: Any) -> None:
                gc_off.__exit__()
                message = failure.getErrorMessage() or repr(failure)
                self.sendLine(json.dumps({"error": message}).encode())

            run(self.root, workload, n).addCallbacks(finished, failed)

        def connectionLost(self, reason: Any = None) -> None:
            if reactor.running:
                reactor.stop()

    def connected(root: Any) -> None:
        control = Control()
        control.root = root
        stdio.StandardIO(control)
        control.sendLine(b"READY")

    def failed_to_connect(failure: Any) -> None:
        print(f"cannot connect: {failure.getErrorMessage()}", file=sys.stderr, flush=True)
        reactor.stop()

    factory = pb.PBClientFactory()
    factory.protocol = no_delay_broker(pb.Broker)
    reactor.connectTCP("127.0.0.1", port, factory)
    factory.getRootObject().addCallbacks(connected, failed_to_connect)
    reactor.run()


# --------------------------------------------------------------------------
# Pyro5


def _run_pyro5(port: int, keep_gc: bool) -> None:
    import threading

    import Pyro5.api

    configure_pyro5()
    perf = time.perf_counter
    uri = f"PYRO:{PYRO_OBJECT}@127.0.0.1:{port}"
    payloads = {"bytes": bytes_payload(), "nested": nested_dicts()}
    proxy = Pyro5.api.Proxy(uri)
    proxy._pyroBind()
    # The in-flight workload's proxies, one per thread, connected on first use and kept.
    proxies: list[Any] = []

    def in_flight(n: int) -> dict[str, Any]:
        while len(proxies) < IN_FLIGHT:
            extra = Pyro5.api.Proxy(uri)
            extra._pyroBind()
            proxies.append(extra)
        lock = threading.Lock()
        remaining = [n]
        errors: list[BaseException] = []

        def worker(own: Any) -> None:
            own._pyroClaimOwnership()
            try:
                while True:
                    with lock:
                        if remaining[0] <= 0:
                            return
                        remaining[0] -= 1
                    if own.add(1, 2) != 3:
                        raise AssertionError("add(1, 2) != 3")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(own,)) for own in proxies]
        start = perf()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = perf() - start
        if errors:
            raise errors[0]
        return _result(n, elapsed)

    def run(workload: str, n: int) -> dict[str, Any]:
        if workload == "in_flight":
            return in_flight(n)
        method, args, expected = _one_call(workload, payloads)
        call = getattr(proxy, method)
        stamps = [perf()]
        stamp = stamps.append
        for _ in range(n):
            result = call(*args)
            stamp(perf())
        if result != expected:
            raise AssertionError(f"{method} answered {result!r:.100}")
        return _result(n, stamps[-1] - stamps[0], stamps)

    commands = Commands()
    print("READY", flush=True)
    while line := sys.stdin.readline():
        answer = commands.answer(line)
        if answer is None:
            try:
                workload, n = _parse_run(line)
                with _GCOff(keep_gc):
                    cpu = time.process_time()
                    result = run(workload, n)
                    result["cpu"] = time.process_time() - cpu
                answer = json.dumps(result)
            except Exception as exc:
                answer = json.dumps({"error": f"{type(exc).__name__}: {exc}"})
        print(answer, flush=True)


def main(argv: list[str]) -> None:
    keep_gc = "--gc" in argv
    args = [arg for arg in argv if arg != "--gc"]
    if len(args) != 2 or args[0] not in IMPLEMENTATIONS or not args[1].isdigit():
        raise SystemExit(f"usage: python -m bench.broker_client {{{','.join(IMPLEMENTATIONS)}}} PORT [--gc]")
    if args[0] == "twisted":
        _run_twisted(int(args[1]), keep_gc)
    elif args[0] == "pyro5":
        _run_pyro5(int(args[1]), keep_gc)
    else:
        _run_trio(args[0], int(args[1]), keep_gc)


if __name__ == "__main__":
    main(sys.argv[1:])
