"""The ``python -m trio_pb`` command line, run as a real process against trio_pb and Twisted servers."""

from __future__ import annotations

import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trustme

import trio_pb
from trio_pb import banana, jelly

# The worktree's trio_pb, whatever the current directory of the command.
SOURCE = str(Path(trio_pb.__file__).parent.parent)


@attrs.frozen
class Result:
    status: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()


async def cli(*args: str, stdin: bytes = b"", env: dict[str, str] | None = None) -> Result:
    """Run ``python -m trio_pb ARGS`` to completion."""
    environment = {k: v for k, v in os.environ.items() if k != "TRIO_PB_PASSWORD"}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [SOURCE, environment.get("PYTHONPATH")]))
    environment.update(env or {})
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, "-m", "trio_pb", *args],
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=environment,
            cwd=SOURCE,
            # No controlling terminal, even when the tests run on one: a password prompt fails.
            start_new_session=True,
        )
    return Result(result.returncode, result.stdout.decode(), result.stderr.decode())


# -- a trio_pb server like tests/twisted_cli_peer.py's ------------------------------------------------


class Thing(trio_pb.Referenceable):
    def remote_name(self) -> str:
        return "thing"


class Point(trio_pb.Copyable):
    def __init__(self, x: int, y: int) -> None:
        self.x = x
        self.y = y


class Board(trio_pb.Cacheable):
    def get_state_to_cache_and_observe_for(self, perspective: Any, observer: Any) -> Any:
        return {"cells": [1, 2]}


class Root(trio_pb.Root):
    def remote_add(self, a: Any, b: Any) -> Any:
        return a + b

    def remote_echo(self, *args: Any, **kwargs: Any) -> Any:
        return [list(args), kwargs]

    def remote_fail(self, message: str) -> None:
        raise ValueError(message)

    def remote_thing(self) -> Thing:
        return Thing()

    def remote_point(self) -> Point:
        return Point(1, 2)

    def remote_board(self) -> Board:
        return Board()

    async def remote_hang(self) -> None:
        await trio.sleep_forever()


class User(trio_pb.Avatar):
    def __init__(self, name: str) -> None:
        self.name = name

    def perspective_whoami(self) -> str:
        return self.name

    def perspective_add(self, a: Any, b: Any) -> Any:
        return a + b


class Realm:
    def request_avatar(self, avatar_id: Any, mind: Any) -> tuple[User, None]:
        return User("anonymous" if avatar_id == trio_pb.cred.ANONYMOUS else avatar_id.decode()), None


def portal() -> trio_pb.Portal:
    return trio_pb.Portal(
        Realm(), [trio_pb.InMemoryPasswordChecker(alice="secret"), trio_pb.AllowAnonymousAccess()]
    )


class TwistedServers:
    """The Twisted servers of tests/twisted_cli_peer.py, each started the first time a test needs it."""

    def __init__(self) -> None:
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.addresses: dict[str, str] = {}

    def address(self, mode: str) -> str:
        if mode not in self.addresses:
            script = Path(__file__).with_name("twisted_cli_peer.py")
            process = subprocess.Popen([sys.executable, str(script), "serve", mode], stdout=subprocess.PIPE)
            self.processes[mode] = process
            assert process.stdout is not None
            line = process.stdout.readline().decode()
            assert line.startswith("PORT "), line
            self.addresses[mode] = f"127.0.0.1:{int(line.split()[1])}"
        return self.addresses[mode]

    def stop(self) -> None:
        for process in self.processes.values():
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def twisted_servers() -> Iterator[TwistedServers]:
    """Twisted servers shared by the module's tests (they keep no state between connections)."""
    servers = TwistedServers()
    yield servers
    servers.stop()


@pytest.fixture(params=["trio_pb", "twisted"])
async def server(request: pytest.FixtureRequest, twisted_servers: TwistedServers) -> AsyncIterator[str]:
    """HOST:PORT of a server whose root has add, echo, fail, thing, point and board."""
    if request.param == "twisted":
        yield twisted_servers.address("root")
        return
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio_pb.serve_tcp, Root(), 0, host="127.0.0.1"))
        yield f"127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        nursery.cancel_scope.cancel()


@pytest.fixture(params=["trio_pb", "twisted"])
async def portal_server(
    request: pytest.FixtureRequest, twisted_servers: TwistedServers
) -> AsyncIterator[str]:
    """HOST:PORT of a server with a portal: alice's password is "secret", anonymous logins are allowed."""
    if request.param == "twisted":
        yield twisted_servers.address("portal")
        return
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio_pb.serve_tcp, portal(), 0, host="127.0.0.1"))
        yield f"127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        nursery.cancel_scope.cancel()


def refused_address() -> str:
    """A loopback port nothing listens on."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


# -- call -----------------------------------------------------------------------------------------


async def test_call_with_literals_prints_the_answer(server: str) -> None:
    assert await cli("call", server, "add", "1", "2") == Result(0, "3\n", "")
    assert await cli("call", server, "add", "'tri'", "'o'") == Result(0, "'trio'\n", "")
    result = await cli("call", server, "echo", "b'x'", "[1, (2.5, None)]", "{'k': True}")
    assert result == Result(0, "[[b'x', [1, (2.5, None)], {'k': True}], {}]\n", "")


async def test_call_with_keyword_arguments(server: str) -> None:
    result = await cli("call", server, "echo", "1", "--kw", "scale=2.5", "--kw", "name='n'")
    assert result == Result(0, "[[1], {'scale': 2.5, 'name': 'n'}]\n", "")  # in the order given


async def test_references_and_copies_of_unknown_classes_are_shown_readably(server: str) -> None:
    result = await cli("call", server, "thing")
    assert (result.status, result.out, result.err) == (0, "<RemoteReference 1>\n", "")
    result = await cli("call", server, "point")
    assert result.status == 0, result
    assert result.out.startswith("<copy of ") and result.out.endswith(".Point {'x': 1, 'y': 2}>\n"), result
    result = await cli("call", server, "board")
    assert result.status == 0, result
    assert re.fullmatch(r"<copy of \S+\.Board \(cached, luid \d+\) \{'cells': \[1, 2\]\}>\n", result.out), (
        result
    )


async def test_a_remote_error_is_one_line_and_exit_1(server: str) -> None:
    result = await cli("call", server, "fail", "'boom'")
    assert result == Result(1, "", "error: builtins.ValueError: boom\n")
    result = await cli("call", server, "nosuch")
    assert result.status == 1
    assert result.err_lines == [result.err_lines[0]] and result.err.startswith(
        "error: twisted.spread.flavors.NoSuchMethod: "
    ), result


async def test_verbose_adds_the_remote_traceback_or_says_there_is_none(server: str) -> None:
    result = await cli("call", server, "fail", "'boom'", "-v")
    assert result.status == 1
    assert result.err_lines[0] == "error: builtins.ValueError: boom"
    assert len(result.err_lines) > 1 and "Traceback" not in result.err_lines[0], result


async def test_verbose_prints_the_traceback_a_server_sends() -> None:
    async with trio.open_nursery() as nursery:
        serve = partial(trio_pb.serve_tcp, Root(), 0, host="127.0.0.1", unsafe_tracebacks=True)
        listeners = await nursery.start(serve)
        address = f"127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        result = await cli("call", address, "fail", "'boom'", "-v")
        nursery.cancel_scope.cancel()
    assert result.status == 1
    lines = result.err_lines
    assert lines[0] == "error: builtins.ValueError: boom"
    assert lines[1] == "Traceback (most recent call last):" and lines[-1] == "ValueError: boom", lines
    assert any("in remote_fail" in line for line in lines), lines


async def test_a_bare_word_is_refused_with_the_quoting_that_works(server: str) -> None:
    result = await cli("call", server, "add", "abc", "1")
    assert result.status == 2 and result.out == ""
    assert result.err_lines == [
        "trio-pb call: error: argument 'abc' is not a Python literal (for a string, quote it: \"'abc'\")"
    ]


async def test_login_with_the_password_from_the_environment(portal_server: str) -> None:
    result = await cli("call", portal_server, "whoami", "--user", "alice", env={"TRIO_PB_PASSWORD": "secret"})
    assert result == Result(0, "'alice'\n", "")
    result = await cli(
        "call",
        portal_server,
        "add",
        "2",
        "3",
        "--user",
        "alice",
        "--password-env",
        "MY_SECRET",
        env={"MY_SECRET": "secret"},
    )
    assert result == Result(0, "5\n", "")


async def test_anonymous_login(portal_server: str) -> None:
    assert await cli("call", portal_server, "whoami", "--anonymous") == Result(0, "'anonymous'\n", "")


async def test_a_wrong_password_is_one_line_and_exit_2(portal_server: str) -> None:
    result = await cli("call", portal_server, "whoami", "--user", "alice", env={"TRIO_PB_PASSWORD": "nope"})
    assert result.status == 2 and result.out == ""
    assert len(result.err_lines) == 1, result
    assert result.err.startswith("error: login refused: twisted.cred.error.UnauthorizedLogin"), result


async def test_a_named_password_variable_that_is_not_set_is_a_usage_error(portal_server: str) -> None:
    result = await cli("call", portal_server, "whoami", "--user", "alice", "--password-env", "UNSET_VAR")
    assert result == Result(
        2, "", "trio-pb call: error: --password-env: the environment variable UNSET_VAR is not set\n"
    )


async def test_without_a_password_or_a_terminal_to_ask_on_it_is_a_usage_error(portal_server: str) -> None:
    result = await cli("call", portal_server, "whoami", "--user", "alice", stdin=b"secret\n")
    assert result == Result(
        2, "", "trio-pb call: error: no password: set TRIO_PB_PASSWORD, or run on a terminal to be asked\n"
    )


async def test_connection_refused_is_one_line_and_exit_2() -> None:
    address = refused_address()
    result = await cli("call", address, "add", "1", "2")
    assert result == Result(2, "", f"error: cannot connect to {address}: connection refused\n")


async def test_a_missing_unix_socket_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "nothing.sock"
    result = await cli("call", f"unix:{path}", "add", "1", "2")
    assert result.status == 2 and len(result.err_lines) == 1, result
    assert result.err.startswith(f"error: cannot connect to {path}: "), result


async def test_the_timeout_is_one_line_and_exit_2() -> None:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio_pb.serve_tcp, Root(), 0, host="127.0.0.1"))
        address = f"127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        result = await cli("call", address, "hang", "--timeout", "0.5")
        nursery.cancel_scope.cancel()
    assert result == Result(2, "", f"error: no answer from {address} within 0.5 seconds (--timeout)\n")


async def test_a_server_that_does_not_speak_pb_is_one_line_and_exit_2() -> None:
    async def not_pb(stream: trio.SocketStream) -> None:
        await stream.send_all(b"SSH-2.0-OpenSSH_9.6\r\n")
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, not_pb, 0, host="127.0.0.1"))
        address = f"127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        result = await cli("call", address, "add", "1", "2")
        nursery.cancel_scope.cancel()
    assert result.status == 2 and len(result.err_lines) == 1, result
    assert result.err.startswith("error: "), result


async def test_over_tls_and_a_unix_socket() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("pb.test").configure_cert(server_context)
    with tempfile.TemporaryDirectory() as directory:
        ca_file = Path(directory) / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        socket_path = Path(directory) / "pb.sock"
        async with trio.open_nursery() as nursery:
            serve = partial(trio_pb.serve_tcp, Root(), 0, host="127.0.0.1", ssl_context=server_context)
            listeners = await nursery.start(serve)
            address = f"127.0.0.1:{listeners[0].socket.getsockname()[1]}"
            await nursery.start(trio_pb.serve_unix, Root(), socket_path)
            tls = ("--tls", "--ca", str(ca_file), "--server-hostname", "pb.test")
            over_tls = await cli("call", address, "add", "1", "2", *tls)
            # The system's trust does not include the test CA.
            untrusted = await cli("call", address, "add", "1", "2", "--tls", "--server-hostname", "pb.test")
            over_unix = await cli("call", f"unix:{socket_path}", "add", "1", "2")
            nursery.cancel_scope.cancel()
    assert over_tls == Result(0, "3\n", "")
    assert untrusted.status == 2 and len(untrusted.err_lines) == 1, untrusted
    assert untrusted.err.startswith(f"error: TLS with {address} failed: CERTIFICATE_VERIFY_FAILED"), untrusted
    assert over_unix == Result(0, "3\n", "")


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux for a terminal")
async def test_the_password_prompt_on_a_terminal(tmp_path: Path) -> None:
    """With no password in the environment, it is asked for on the terminal, without echo."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio_pb.serve_tcp, portal(), 0, host="127.0.0.1"))
        address = f"127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        screen = await _in_tmux(
            tmp_path,
            [sys.executable, "-m", "trio_pb", "call", address, "whoami", "--user", "alice"],
            prompt="password for alice: ",
            typed="secret",
        )
        nursery.cancel_scope.cancel()
    # tmux drops trailing blanks; the typed password is not echoed.
    assert screen == ["password for alice:", "'alice'", "exit 0"]


async def _in_tmux(tmp_path: Path, argv: list[str], prompt: str, typed: str) -> list[str]:
    """Run *argv* in a private tmux server, type *typed* once *prompt* shows, return the screen's lines."""
    import shlex

    socket_path = str(tmp_path / "tmux.sock")
    tmux = ["tmux", "-S", socket_path, "-f", "/dev/null"]
    command = f"PYTHONPATH={shlex.quote(SOURCE)} {shlex.join(argv)}; echo exit $?; sleep 60"
    environment = {k: v for k, v in os.environ.items() if k not in ("TRIO_PB_PASSWORD", "TMUX")}
    await trio.run_process(
        [*tmux, "new-session", "-d", "-x", "100", "-y", "10", command], env=environment, check=True
    )
    try:

        async def screen() -> list[str]:
            result = await trio.run_process([*tmux, "capture-pane", "-p"], capture_stdout=True, check=True)
            return [line for line in result.stdout.decode().splitlines() if line.strip()]

        with trio.fail_after(30):
            while prompt.strip() not in "\n".join(await screen()):
                await trio.sleep(0.05)
            await trio.run_process([*tmux, "send-keys", typed, "Enter"], check=True)
            while not any(line.startswith("exit ") for line in await screen()):
                await trio.sleep(0.05)
        return await screen()
    finally:
        await trio.run_process([*tmux, "kill-server"], check=False)


# -- decode ---------------------------------------------------------------------------------------


def captured_server_bytes() -> bytes:
    """What a trio_pb server sends on a connection: its dialect offer, then PB messages."""
    offer = banana.Encoder(b"none").encode([b"trio-pb-1", b"pb", b"none"])
    pb = banana.Encoder(b"pb")
    return offer + b"".join(
        pb.encode(message)
        for message in [
            [b"version", 6],
            [b"message", 1, b"root", b"echo", 1, jelly.jelly((1, "two")), jelly.jelly({})],
            [b"answer", 7, jelly.jelly([1.5, b"x"])],
            [b"decref", 3],
        ]
    )


DECODED = """\
@0      dialect offer  [b'trio-pb-1', b'pb', b'none']
@23     version version=6
@29     message request_id=1 target=b'root' method=b'echo' answer_required=1
          args: [b'tuple', 1, [b'unicode', b'two']]
          kwargs: [b'dictionary']
@75     answer request_id=7
          value: [b'list', 1.5, b'x']
@97     decref luid=3
"""


async def test_decode_a_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "capture.bin"
    path.write_bytes(captured_server_bytes())
    assert await cli("decode", str(path)) == Result(0, DECODED, "")


async def test_decode_binary_from_stdin() -> None:
    assert await cli("decode", stdin=captured_server_bytes()) == Result(0, DECODED, "")
    assert await cli("decode", "-", stdin=captured_server_bytes()) == Result(0, DECODED, "")


async def test_decode_hex_from_stdin_ignores_whitespace() -> None:
    # docs/protocol.rst's example: root.callRemote("echo", 1) as Twisted sends it.
    text = "07 80 1a 87 01 81 04 82 72 6f 6f 74 04 82 65 63 68 6f 01 81 02 80 0b 87\n\t01 81 01 80 05 87\n"
    result = await cli("decode", "--hex", stdin=text.encode())
    assert result == Result(
        0,
        "@0      message request_id=1 target=b'root' method=b'echo' answer_required=1\n"
        "          args: [b'tuple', 1]\n"
        "          kwargs: [b'dictionary']\n",
        "",
    )


async def test_a_client_capture_shows_the_chosen_dialect() -> None:
    data = banana.encode(b"pb", dialect=b"none") + banana.encode([b"version", 6])
    assert await cli("decode", stdin=data) == Result(
        0, "@0      dialect chosen  b'pb'\n@4      version version=6\n", ""
    )


async def test_decode_can_show_the_values_jellied_fields_stand_for() -> None:
    point = [b"geometry.Point", [b"dictionary", [[b"unicode", b"x"], 1]]]
    failure = jelly.jelly(trio_pb.failure2Copyable(ValueError("no such room")))
    messages = [
        [b"message", 4, 2, b"move", 1, jelly.jelly((1, "two", {b"k"})), jelly.jelly({"fast": True})],
        [b"answer", 4, [b"list", [b"remote", 3], point, [b"cached", 5]]],
        [b"error", 5, failure],
        [b"answer", 6, [b"no.such.Thing"]],
    ]
    encoded = [banana.encode(message) for message in messages]
    offsets = [sum(map(len, encoded[:i])) for i in range(len(encoded))]
    result = await cli("decode", "--unjelly", stdin=b"".join(encoded))
    assert result == Result(
        0,
        f"@{offsets[0]:<6} message request_id=4 target=2 method=b'move' answer_required=1\n"
        "          args: (1, 'two', {b'k'})\n"
        "          kwargs: {'fast': True}\n"
        f"@{offsets[1]:<6} answer request_id=4\n"
        "          value: [<remote 3>, <copy of geometry.Point {'x': 1}>, <cached 5>]\n"
        f"@{offsets[2]:<6} error request_id=5\n"
        "          failure: builtins.ValueError: no such room\n"
        f"@{offsets[3]:<6} answer request_id=6\n"
        "          value: (cannot unjelly: a copy of no.such.Thing is [tag, state] or [tag, luid, state], "
        "not [b'no.such.Thing']) [b'no.such.Thing']\n",
        "",
    )


async def test_garbage_is_reported_with_the_offset_of_the_bad_byte() -> None:
    data = banana.encode([b"version", 6]) + b"\x02\x80\x01\x81\xfc\x00"
    result = await cli("decode", stdin=data)
    assert result == Result(1, "@0      version version=6\n", "error: offset 10: invalid type byte 0xfc\n")


async def test_an_element_over_the_decoders_limits_is_reported_with_its_offset() -> None:
    too_long = banana.int_to_b128(banana.SIZE_LIMIT + 1) + b"\x82"
    result = await cli("decode", stdin=b"\x00\x81" + too_long)
    assert result.status == 1 and result.out == "@0      0\n"
    assert result.err == f"error: offset {1 + len(too_long)}: Security precaution: String too long.\n"


async def test_partial_trailing_input_is_reported_after_what_decoded() -> None:
    whole = banana.encode([b"version", 6])
    cut = banana.encode([b"answer", 2, b"abcdef"])[:-3]
    result = await cli("decode", stdin=whole + cut)
    assert result == Result(
        1,
        "@0      version version=6\n",
        f"error: offset {len(whole)}: the input ends inside an expression ({len(cut)} bytes of it)\n",
    )


async def test_text_that_is_not_hex_is_a_clear_error() -> None:
    result = await cli("decode", "--hex", stdin=b"02 80 zz")
    assert result == Result(2, "", "error: not hex: 'z' at hex digit 4\n")
    result = await cli("decode", "--hex", stdin=b"028")
    assert result == Result(2, "", "error: an odd number of hex digits (3)\n")


async def test_a_message_with_the_wrong_number_of_fields_is_shown_unlabelled() -> None:
    result = await cli("decode", stdin=banana.encode([b"answer", 1]))
    assert result == Result(0, "@0      [b'answer', 1]  (malformed answer: 1 field, not 2)\n", "")


async def test_a_file_that_cannot_be_read(tmp_path: Path) -> None:
    missing = tmp_path / "missing.bin"
    result = await cli("decode", str(missing))
    assert result == Result(2, "", f"error: cannot read {missing}: No such file or directory\n")


# -- help -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["call", "decode"])
async def test_each_command_has_help_with_examples(command: str) -> None:
    result = await cli(command, "--help")
    assert result.status == 0 and result.err == ""
    assert result.out.startswith(f"usage: trio-pb {command} ")
    assert f"examples:\n  trio-pb {command} " in result.out


async def test_the_top_level_help_names_the_commands() -> None:
    result = await cli("--help")
    assert result.status == 0
    assert "call" in result.out and "decode" in result.out
    missing = await cli()
    assert missing.status == 2 and "required: COMMAND" in missing.err, missing


# -- the documentation's sessions ---------------------------------------------------------------------


def documented_decode_sessions() -> list[tuple[str, list[str], str]]:
    """Each ``$ echo '<hex>' | trio-pb decode ...`` in docs/cli.rst: its hex, arguments and output."""
    page = (Path(__file__).parent.parent / "docs" / "cli.rst").read_text()
    sessions = []
    for match in re.finditer(
        r"^    \$ echo '([0-9a-f\s]+)' \| trio-pb (decode[^\n]*)\n((?:    (?!\$)[^\n]*\n)*)", page, re.M
    ):
        output = "".join(line[4:] + "\n" for line in match.group(3).splitlines())
        sessions.append((match.group(1), match.group(2).split(), output))
    return sessions


def test_the_documentation_shows_decode_sessions() -> None:
    assert len(documented_decode_sessions()) == 4


@pytest.mark.parametrize("session", documented_decode_sessions())
async def test_the_documented_decode_sessions_print_what_the_page_shows(
    session: tuple[str, list[str], str],
) -> None:
    text, args, shown = session
    result = await cli(*args, stdin=text.encode())
    assert result.out + result.err == shown
