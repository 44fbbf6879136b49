"""A real Twisted PB login peer for the username-type tests, run as a subprocess.

``python twisted_usernames_peer.py server str|bytes`` serves a Twisted portal
whose in-memory checker knows ``alice`` (password ``secret``) under a str key
or a bytes key, and prints ``PORT <n>``.  ``python twisted_usernames_peer.py
client <port>`` logs in to a trio_pb portal with the username ``"alice"``,
then ``b"alice"``, and prints one line per attempt: the username's repr and
the avatar's answer to ``whoami``, or the error it trapped.
"""

from __future__ import annotations

import sys

from twisted.cred import checkers, credentials, error, portal
from twisted.internet import defer, reactor
from twisted.spread import pb
from twisted_runner import run_client
from twisted_runner import serve as serve_root


class Avatar(pb.Avatar):
    def __init__(self, avatar_id):
        self.avatar_id = avatar_id

    def perspective_whoami(self):
        return self.avatar_id


class Realm:
    def requestAvatar(self, avatar_id, mind, *interfaces):
        return pb.IPerspective, Avatar(avatar_id), lambda: None


def serve(key_type):
    users = checkers.InMemoryUsernamePasswordDatabaseDontUse()
    # As Twisted's chat listing does it: addUser("alice", ...) keys the user by str.
    users.addUser("alice" if key_type == "str" else b"alice", b"secret")
    serve_root(portal.Portal(Realm(), [users]))


@defer.inlineCallbacks
def scenario(port):
    factory = pb.PBClientFactory()
    reactor.connectTCP("127.0.0.1", port, factory)
    for username in ["alice", b"alice"]:
        try:
            avatar = yield factory.login(credentials.UsernamePassword(username, b"secret"))
        except error.UnauthorizedLogin:
            print(repr(username), "refused", flush=True)
        else:
            print(repr(username), "whoami", repr((yield avatar.callRemote("whoami"))), flush=True)
    print("done", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(sys.argv[2])
    elif sys.argv[1] == "client":
        run_client(scenario, int(sys.argv[2]))
