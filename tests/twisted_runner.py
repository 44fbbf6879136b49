"""What every Twisted peer script beside this file does: serve a PB root, or run a client scenario.

The scripts run as their own processes (see peers.py); this module is
imported by them from the same folder.
"""

from twisted.internet import reactor
from twisted.spread import pb


def serve(root_or_portal, **factory_options):
    """Serve on a free loopback port, print ``PORT <n>`` for peers.py, and run the reactor."""
    factory = pb.PBServerFactory(root_or_portal, **factory_options)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    print("PORT", port.getHost().port, flush=True)
    reactor.run()


def run_client(scenario, *args):
    """Run a client scenario on the reactor; print FAILED and the traceback if it fails."""

    def finish(result):
        reactor.stop()
        return result

    def failed(failure):
        print("FAILED", failure.getTraceback(), flush=True)

    reactor.callWhenRunning(lambda: scenario(*args).addErrback(failed).addBoth(finish))
    reactor.run()
