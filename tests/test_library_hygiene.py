"""What the library owes the application around it: quiet logging, log lines that name the peer,
docstrings that cite files the repository has (issue 13, item 9)."""

from __future__ import annotations

import logging
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import trio

import trio_pb
from trio_pb import banana

PACKAGE = Path(trio_pb.__file__).parent


def test_the_library_logger_is_quiet_until_the_application_configures_logging() -> None:
    # Without a handler of its own, logging's last resort prints warnings on stderr.
    code = "import logging, trio_pb; logging.getLogger('trio_pb').warning('not for stderr')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    assert result.stderr == b""
    assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger("trio_pb").handlers)


def test_docstrings_cite_the_protocol_page_not_a_file_outside_the_repository() -> None:
    citing = [
        path.name for path in PACKAGE.glob("*.py") if "pb-protocol.md" in path.read_text(encoding="utf-8")
    ]
    assert citing == []


@pytest.mark.parametrize("ending", ["protocol error", "closed mid-message"])
async def test_server_log_lines_about_a_connection_name_the_peer(
    caplog: pytest.LogCaptureFixture, ending: str
) -> None:
    caplog.set_level(logging.INFO, logger="trio_pb")
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio_pb.serve_tcp, trio_pb.Root(), 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        host, client_port = stream.socket.getsockname()[:2]
        async with stream:
            await stream.receive_some()  # the server's dialects
            encoder = banana.Encoder(b"pb")
            if ending == "protocol error":
                await stream.send_all(b"\x02\x82pb" + encoder.encode([b"version", 6]) + encoder.encode(5))
            else:
                await stream.send_all(b"\x02\x82pb" + encoder.encode([b"version", 6])[:2])
                await stream.send_eof()
            with trio.fail_after(10):
                while await stream.receive_some():
                    pass  # until the server closes
        nursery.cancel_scope.cancel()
    lines = [r.getMessage() for r in caplog.records if r.name == "trio_pb" and r.levelno >= logging.WARNING]
    assert lines, caplog.records
    assert all(f"{host}:{client_port}" in line for line in lines), lines
