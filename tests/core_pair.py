"""Two sans-IO PBProtocols talking with no I/O and no trio: bytes are moved by hand.

For tests that drive the core directly, in the h11 style.  Nothing here (or
in what it imports) may import trio.
"""

from __future__ import annotations

from typing import Any

from trio_pb.banana import NEED_DATA
from trio_pb.protocol import PAUSED, PBProtocol


def deliver(sender: PBProtocol, receiver: PBProtocol) -> list[Any]:
    """Move the bytes *sender* has queued to *receiver*; return the events they make there."""
    receiver.receive_data(sender.data_to_send())
    events = []
    while (event := receiver.next_event()) is not NEED_DATA and event is not PAUSED:
        events.append(event)
    return events


def connected_pair(server_root: Any = None, **options: Any) -> tuple[PBProtocol, PBProtocol]:
    """A client and a server protocol after the handshake; *options* go to both."""
    server = PBProtocol(None, is_client=False, **options)
    if server_root is not None:
        server.set_name_for_local(b"root", server_root)
    client = PBProtocol(None, is_client=True, **options)
    deliver(server, client)
    deliver(client, server)
    return client, server
