"""A trio_pb server for the attack tests: ``python stress/server.py [options]``.

It serves a :class:`Target` root on one port and a password :class:`~trio_pb.Portal`
on another, both on 127.0.0.1, prints ``{"port": ..., "login_port": ...}`` as one JSON
line once it listens, and logs WARNING and above from trio_pb to stderr, so that a test
can count what a peer made it log.  ``--broker-option NAME=VALUE`` passes a broker
option to :func:`trio_pb.serve_tcp` (for the limits of issue 9); ``--no-gc`` disables
the cyclic garbage collector, so that only what reference counting frees is freed.
``--raw`` serves plain trio sockets instead, each read by its handler until the peer
closes it (the floor idle connections are measured against); its ``login_port`` then
answers every connection with how many connections have sent their first bytes.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import resource
import sys
from typing import Any

import trio

import trio_pb
from trio_pb.broker import Broker

#: The one account of the login port; every other password is wrong.
USERNAME = b"alice"
PASSWORD = b"secret"


class Target(trio_pb.Root):
    """What the attacks call: cheap answers, big answers, slow answers, any argument."""

    def remote_add(self, a: int, b: int) -> int:
        return a + b

    def remote_big(self, n: int) -> bytes:
        return b"x" * n

    async def remote_sleep(self, seconds: float) -> float:
        await trio.sleep(seconds)
        return seconds

    def remote_echo(self, value: Any) -> Any:
        return value

    def remote_size(self, value: Any) -> int:
        return len(value)

    def remote_handshaken(self) -> int:
        """How many connected brokers have finished their handshake."""
        return sum(
            1 for obj in gc.get_objects() if type(obj) is Broker and obj.connected and _handshaken(obj)
        )

    def remote_live_brokers(self) -> int:
        """How many Broker objects exist, garbage in reference cycles included."""
        return sum(1 for obj in gc.get_objects() if type(obj) is Broker)


def _handshaken(broker: Broker) -> bool:
    return broker._protocol.dialect is not None


class User(trio_pb.Avatar):
    def perspective_add(self, a: int, b: int) -> int:
        return a + b


class Realm:
    def request_avatar(self, avatar_id: Any, mind: Any) -> tuple[User, None]:
        return User(), None


def _option(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, not {text!r}")
    for convert in (int, float):
        try:
            return name, convert(value)
        except ValueError:
            pass
    return name, value


async def main_raw() -> None:
    held = 0

    async def hold(stream: trio.SocketStream) -> None:
        nonlocal held
        async with stream:
            if await stream.receive_some(65536):
                held += 1
                while await stream.receive_some(65536):
                    pass
                held -= 1

    async def count(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.send_all(str(held).encode())

    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(
            lambda task_status: trio.serve_tcp(hold, 0, host="127.0.0.1", task_status=task_status)
        )
        [counter] = await nursery.start(
            lambda task_status: trio.serve_tcp(count, 0, host="127.0.0.1", task_status=task_status)
        )
        ports = {"port": listener.socket.getsockname()[1], "login_port": counter.socket.getsockname()[1]}
        print(json.dumps(ports), flush=True)


async def main(broker_options: dict[str, Any]) -> None:
    portal = trio_pb.Portal(Realm(), [trio_pb.InMemoryPasswordChecker({USERNAME: PASSWORD})])
    async with trio.open_nursery() as nursery:
        [target] = await nursery.start(
            lambda task_status: trio_pb.serve_tcp(
                Target(), 0, host="127.0.0.1", task_status=task_status, **broker_options
            )
        )
        [login] = await nursery.start(
            lambda task_status: trio_pb.serve_tcp(
                portal, 0, host="127.0.0.1", task_status=task_status, **broker_options
            )
        )
        ports = {"port": target.socket.getsockname()[1], "login_port": login.socket.getsockname()[1]}
        print(json.dumps(ports), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-gc", action="store_true", help="disable the cyclic garbage collector")
    parser.add_argument("--broker-option", type=_option, action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--raw", action="store_true", help="serve plain trio sockets, not PB")
    args = parser.parse_args()
    logging.basicConfig(
        stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if args.no_gc:
        gc.disable()
    # As many connections as the system allows (the idle-connection test holds 10,000).
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.raw:
        trio.run(main_raw)
    else:
        trio.run(main, dict(args.broker_option))
