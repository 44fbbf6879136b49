"""How one connection keeps account of its peer's misbehaviour, without I/O.

A hostile peer can repeat a harmless mistake (a stray ``decref``, an unknown
command, a wrong password) as fast as the network carries it.  Logging each
one would let it fill the disk and spend our time; ignoring them would hide an
attack.  :class:`PeerConduct` logs the first few of each kind, then one line
saying the rest are not logged, counts everything, and tells the protocol
when a peer has broken the rules so often that the connection should end.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from .errors import TooManyViolations

__all__ = ["LOG_LIMIT", "MAX_VIOLATIONS", "PeerConduct"]

#: How many messages of one kind are logged per connection before the rest are only counted.
LOG_LIMIT: Final = 10
#: How many protocol violations a connection survives; the next one closes it.
MAX_VIOLATIONS: Final = 100

log = logging.getLogger("trio_pb")


class PeerConduct:
    """The misbehaviour of one peer: bounded logging, and a count that ends the connection.

    *peer* names the peer in log lines (an address, say).  Each kind of
    message is logged at most *log_limit* times, then once more to say that
    further ones are counted but not logged; :meth:`summary` logs what was
    counted.  Every :meth:`violation` counts towards *max_violations*; the
    one after it raises :class:`TooManyViolations`.
    """

    # One per connection: no instance dict.
    __slots__ = ("_counts", "log_limit", "max_violations", "peer", "violations")

    def __init__(
        self, peer: str = "the peer", *, log_limit: int = LOG_LIMIT, max_violations: int = MAX_VIOLATIONS
    ) -> None:
        if log_limit < 0 or max_violations < 0:
            raise ValueError("log_limit and max_violations must not be negative")
        self.peer = peer
        self.log_limit = log_limit
        self.max_violations = max_violations
        #: How many violations the peer committed on this connection.
        self.violations = 0
        # kind -> how many messages of that kind were reported (made at the first).
        self._counts: dict[str, int] | None = None

    def warning(
        self,
        kind: str,
        message: str,
        *args: Any,
        level: int = logging.WARNING,
        exc_info: BaseException | None = None,
    ) -> None:
        """Log *message* (``%`` formatted with *args*) unless *kind* was logged too often already."""
        counts = self._counts
        if counts is None:
            counts = self._counts = {}
        count = counts[kind] = counts.get(kind, 0) + 1
        if count <= self.log_limit:
            log.log(level, "%s: " + message, self.peer, *args, exc_info=exc_info)
        elif count == self.log_limit + 1:
            log.log(level, "%s: further %s messages from this peer are counted, not logged", self.peer, kind)

    def violation(self, kind: str, message: str, *args: Any) -> None:
        """Log (bounded) and count a violation; raise :class:`TooManyViolations` past the limit."""
        self.warning(kind, message, *args)
        self.violations += 1
        if self.violations > self.max_violations:
            raise TooManyViolations(
                f"the peer broke the protocol {self.violations} times (last: {kind}); "
                f"the limit is {self.max_violations}"
            )

    def count(self, kind: str) -> int:
        """How many messages of *kind* were reported, logged or not."""
        return self._counts.get(kind, 0) if self._counts is not None else 0

    def summary(self) -> None:
        """Log how many messages of each kind went unlogged (for the end of the connection)."""
        counts = self._counts or {}
        unlogged = {kind: n - self.log_limit for kind, n in counts.items() if n > self.log_limit}
        if unlogged:
            details = ", ".join(f"{n} {kind}" for kind, n in sorted(unlogged.items()))
            log.warning("%s: not logged on this connection: %s", self.peer, details)
