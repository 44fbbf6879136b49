"""A real Twisted PB server for the command line's tests (tests/test_cli.py), as a subprocess.

``serve root`` serves a root with a few methods; ``serve portal`` a portal
with the user alice (password "secret") and anonymous access, whose avatars
have the same methods plus ``whoami``.
"""

from __future__ import annotations

import sys

from twisted.cred import checkers, portal
from twisted.spread import pb
from twisted_runner import serve


class Thing(pb.Referenceable):
    def remote_name(self):
        return "thing"


class Point(pb.Copyable):
    def __init__(self, x, y):
        self.x = x
        self.y = y


class Board(pb.Cacheable):
    def getStateToCacheAndObserveFor(self, perspective, observer):
        return {"cells": [1, 2]}


class Methods:
    def add(self, a, b):
        return a + b

    def echo(self, *args, **kwargs):
        return [list(args), kwargs]

    def fail(self, message):
        raise ValueError(message)

    def thing(self):
        return Thing()

    def point(self):
        return Point(1, 2)

    def board(self):
        return Board()


class Root(pb.Root):
    def __getattr__(self, name):
        if name.startswith("remote_"):
            return getattr(Methods(), name[len("remote_") :])
        raise AttributeError(name)


class User(pb.Avatar):
    def __init__(self, name):
        self.name = name

    def perspective_whoami(self):
        return self.name

    def perspective_add(self, a, b):
        return a + b


class Realm:
    def requestAvatar(self, avatar_id, mind, *interfaces):
        name = "anonymous" if avatar_id is checkers.ANONYMOUS else avatar_id.decode()
        return pb.IPerspective, User(name), lambda: None


def main(mode):
    if mode == "root":
        serve(Root())
    else:
        checker = checkers.InMemoryUsernamePasswordDatabaseDontUse()
        checker.addUser(b"alice", b"secret")
        serve(portal.Portal(Realm(), [checker, checkers.AllowAnonymousAccess()]))


if __name__ == "__main__":
    assert sys.argv[1] == "serve", sys.argv
    main(sys.argv[2])
