"""``python -m bench.broker_server IMPL``: the server of the broker benchmark, in a process of its own.

IMPL is one of

* ``trio_pb``: a :class:`trio_pb.Root` served by ``trio.serve_tcp`` and :func:`trio_pb.open_broker`;
* ``twisted``: a ``twisted.spread.pb.Root`` served by ``PBServerFactory`` on the reactor;
* ``pyro5``: a Pyro5 daemon (threaded server, the marshal serializer) serving an object of
  the same two methods, on a thread of its own;
* ``raw``: a length-prefixed echo on trio sockets, the baseline (no PB at all): every frame, a
  4-byte big-endian length and that many bytes, is sent back once it has fully arrived.

Both PB roots have ``remote_add(a, b)`` and ``remote_echo(value)``, the Pyro5 object ``add`` and
``echo``.  The server listens on a free loopback port, prints ``PORT <n>`` and serves until its
standard input closes.  It also obeys commands on standard input, one a line, answering each with
one line:

* ``CPU``: the CPU seconds this process has used so far (``time.process_time()``);
* ``PROFILE START``: start cProfile in the thread that serves connections;
* ``PROFILE STOP <path>``: stop it and dump the stats to *path*.

Trio's sockets set ``TCP_NODELAY``; the Twisted and Pyro5 servers set it too, so that every
contender runs on the same kind of socket.  :mod:`bench.broker_client` is the other end.
"""

from __future__ import annotations

import cProfile
import functools
import struct
import sys
import time
from typing import Any

IMPLEMENTATIONS = ("trio_pb", "twisted", "pyro5", "raw")

#: The Pyro5 object's id: the clients' URI is ``PYRO:<id>@127.0.0.1:<port>``.
PYRO_OBJECT = "bench"

#: The raw echo's frame header: the payload's length.
HEADER = struct.Struct("!I")


class Commands:
    """The commands every server and client of the benchmark obeys (see the module docstring)."""

    def __init__(self) -> None:
        self.profile: cProfile.Profile | None = None

    def answer(self, line: str) -> str | None:
        """The answer to *line*, if it is one of these commands; None otherwise."""
        words = line.strip().split(maxsplit=2)
        if words == ["CPU"]:
            return repr(time.process_time())
        if words[:2] == ["PROFILE", "START"]:
            # Wall-clock timing (a CPU clock costs a system call per event here):
            # the time blocked waiting for the peer lands in epoll's poll().
            self.profile = cProfile.Profile()
            self.profile.enable()
            return "OK"
        if words[:2] == ["PROFILE", "STOP"] and len(words) == 3 and self.profile is not None:
            self.profile.disable()
            self.profile.dump_stats(words[2])
            self.profile = None
            return "OK"
        return None


def split_frames(buffer: bytearray) -> bytes:
    """Remove the complete frames at the start of *buffer* and return them, headers included."""
    end = 0
    size = len(buffer)
    while size - end >= HEADER.size:
        (length,) = HEADER.unpack_from(buffer, end)
        if size - end - HEADER.size < length:
            break
        end += HEADER.size + length
    frames = bytes(buffer[:end])
    del buffer[:end]
    return frames


# --------------------------------------------------------------------------
# trio_pb and raw: trio


def _serve_trio(impl: str) -> None:
    import trio

    import trio_pb

    class Root(trio_pb.Root):
        def remote_add(self, a: Any, b: Any) -> Any:
            return a + b

        def remote_echo(self, value: Any) -> Any:
            return value

    root = Root()

    async def handle_pb(stream: trio.SocketStream) -> None:
        async with trio_pb.open_broker(stream, server=True, root=root) as broker:
            await broker.wait_closed()

    async def handle_raw(stream: trio.SocketStream) -> None:
        buffer = bytearray()
        async with stream:
            while data := await stream.receive_some(65536):
                buffer += data
                frames = split_frames(buffer)
                if frames:
                    await stream.send_all(frames)

    async def main() -> None:
        commands = Commands()
        async with trio.open_nursery() as nursery:
            handler = handle_pb if impl == "trio_pb" else handle_raw
            listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
            print("PORT", listeners[0].socket.getsockname()[1], flush=True)
            while line := await trio.to_thread.run_sync(sys.stdin.readline):
                print(commands.answer(line) or f"ERROR unknown command {line!r}", flush=True)
            nursery.cancel_scope.cancel()

    trio.run(main)


# --------------------------------------------------------------------------
# Twisted


def _serve_twisted() -> None:
    from twisted.internet import reactor, stdio
    from twisted.protocols.basic import LineReceiver
    from twisted.spread import pb

    class Root(pb.Root):
        def remote_add(self, a: Any, b: Any) -> Any:
            return a + b

        def remote_echo(self, value: Any) -> Any:
            return value

    factory = pb.PBServerFactory(Root())
    factory.protocol = no_delay_broker(pb.Broker)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    print("PORT", port.getHost().port, flush=True)
    commands = Commands()

    class Control(LineReceiver):
        delimiter = b"\n"

        def lineReceived(self, line: bytes) -> None:
            text = line.decode()
            answer = commands.answer(text) or f"ERROR unknown command {text!r}"
            self.sendLine(answer.encode())

        def connectionLost(self, reason: Any = None) -> None:
            if reactor.running:
                reactor.stop()

    stdio.StandardIO(Control())
    reactor.run()


# --------------------------------------------------------------------------
# Pyro5


def configure_pyro5() -> None:
    """Pyro5 as both of its ends run here: marshal (its fastest serializer), TCP_NODELAY."""
    from Pyro5 import config

    config.SERIALIZER = "marshal"
    config.SOCK_NODELAY = True


def _serve_pyro5() -> None:
    import threading

    import Pyro5.api

    configure_pyro5()

    @Pyro5.api.expose
    class Root:
        def add(self, a: Any, b: Any) -> Any:
            return a + b

        def echo(self, value: Any) -> Any:
            return value

    daemon = Pyro5.api.Daemon(host="127.0.0.1", port=0)
    daemon.register(Root(), objectId=PYRO_OBJECT)
    threading.Thread(target=daemon.requestLoop, daemon=True).start()
    print("PORT", daemon.sock.getsockname()[1], flush=True)
    commands = Commands()
    # The profiler would only see this thread, not the daemon's: Pyro5 is not profiled.
    while line := sys.stdin.readline():
        print(commands.answer(line) or f"ERROR unknown command {line!r}", flush=True)
    daemon.shutdown()


def no_delay_broker(broker_class: type) -> type:
    """A subclass of Twisted's ``pb.Broker`` that turns Nagle's algorithm off, as trio does."""

    class NoDelayBroker(broker_class):
        def connectionMade(self) -> None:
            self.transport.setTcpNoDelay(True)
            super().connectionMade()

    return NoDelayBroker


def main(argv: list[str]) -> None:
    if len(argv) != 1 or argv[0] not in IMPLEMENTATIONS:
        raise SystemExit(f"usage: python -m bench.broker_server {{{','.join(IMPLEMENTATIONS)}}}")
    if argv[0] == "twisted":
        _serve_twisted()
    elif argv[0] == "pyro5":
        _serve_pyro5()
    else:
        _serve_trio(argv[0])


if __name__ == "__main__":
    main(sys.argv[1:])
