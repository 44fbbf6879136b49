"""A Twisted PB peer for the factory and Viewable-avatar interop tests, run as a subprocess.

``python twisted_factories_peer.py server`` serves a Twisted portal whose
realm gives alice an Avatar and bob a Viewable, and prints ``PORT <n>``;
``python twisted_factories_peer.py client <port>`` logs in to a trio_pb
server as alice and bob and prints one line per result.
"""

from __future__ import annotations

import sys

from twisted.internet import defer, reactor
from twisted.spread import pb
from twisted_runner import run_client
from twisted_runner import serve as serve_root


class User(pb.Avatar):
    def __init__(self, name):
        self.name = name

    def perspective_whoami(self):
        return self.name

    def perspective_boom(self):
        raise ValueError("kaboom")


class Board(pb.Viewable):
    def __init__(self, name):
        self.name = name

    def view_post(self, perspective, text):
        return [self.name, text, repr(perspective)]


LOGOUTS = []


class Realm:
    def requestAvatar(self, avatar_id, mind, *interfaces):
        avatar = Board(avatar_id) if avatar_id == b"bob" else User(avatar_id)
        return pb.IPerspective, avatar, lambda: LOGOUTS.append(avatar_id)


def serve():
    from twisted.cred import checkers, portal

    users = checkers.InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret", bob=b"pw")
    serve_root(portal.Portal(Realm(), [users]), unsafeTracebacks=True)


@defer.inlineCallbacks
def scenario(port):
    from twisted.cred import credentials

    out = lambda *words: print(*words, flush=True)  # noqa: E731
    factory = pb.PBClientFactory()
    reactor.connectTCP("127.0.0.1", port, factory)
    alice = yield factory.login(credentials.UsernamePassword(b"alice", b"secret"))
    out("whoami", (yield alice.callRemote("whoami")))
    try:
        yield alice.callRemote("boom")
    except Exception as exc:
        out("traceback", "perspective_boom" in str(getattr(exc, "remoteTraceback", "")))
    bob = yield factory.login(credentials.UsernamePassword(b"bob", b"pw"))
    out("post", (yield bob.callRemote("post", "hi")))
    factory.disconnect()
    out("done")


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve()
    elif sys.argv[1] == "client":
        run_client(scenario, int(sys.argv[2]))
