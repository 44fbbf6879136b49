"""A real Twisted PB peer for tests/test_error_shapes_twisted.py, run as a subprocess.

``python twisted_errors_peer.py server`` serves a root whose methods raise
errors that cross as themselves (a Copyable one, one of an allowed class) and
hand out references until the quota says goodbye; it prints ``PORT <n>``.
``python twisted_errors_peer.py client <port>`` calls the same methods of a
trio_pb server and prints one line per result.
"""

from __future__ import annotations

import sys

from twisted.internet import defer, reactor
from twisted.spread import pb
from twisted_runner import run_client, serve


class CopiedError(pb.Error, pb.Copyable, pb.RemoteCopy):
    """Crosses as itself, by copy (tag ``shapes.CopiedError``)."""

    def getTypeToCopy(self):
        return b"shapes.CopiedError"


pb.setUnjellyableForClass(b"shapes.CopiedError", CopiedError)


class SecErr(pb.Error):
    """Crosses as itself because the security options allow its class."""


pb.globalSecurity.allowInstancesOf(SecErr)


class Thing(pb.Referenceable):
    def remote_name(self):
        return "thing"


class Root(pb.Root):
    def remote_copied(self, code):
        error = CopiedError()
        error.code = code
        raise error

    def remote_allowed(self):
        error = SecErr()
        error.reason = "allowed"
        raise error

    def remote_many(self):
        return Thing()


@defer.inlineCallbacks
def scenario(root):
    try:
        yield root.callRemote("copied", 7)
    except CopiedError as exc:
        print("copied", type(exc).__name__, exc.code)
    except Exception as exc:
        print("copied FAILED", type(exc), exc)
    try:
        yield root.callRemote("allowed")
    except SecErr as exc:
        print("allowed", type(exc).__name__, exc.reason)
    except Exception as exc:
        print("allowed FAILED", type(exc), exc)
    held = []
    printed = False
    while True:
        try:
            held.append((yield root.callRemote("many")))
        except pb.RemoteError as exc:
            if not printed:  # the references stay held: the quota counts them
                print("references", len(held))
                printed = True
            print("refused", exc.remoteType.decode(), str(exc))
            if "Goodbye" in str(exc):
                break
        except Exception as exc:
            print("refused FAILED", type(exc), exc)
            break
    try:
        yield root.callRemote("many")
    except (pb.DeadReferenceError, pb.PBConnectionLost):
        print("then closed")
    except Exception as exc:
        print("then FAILED", type(exc), exc)


def client(port):
    factory = pb.PBClientFactory()
    reactor.connectTCP("127.0.0.1", port, factory)
    return factory.getRootObject().addCallback(scenario)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(Root())
    else:
        run_client(client, int(sys.argv[2]))
