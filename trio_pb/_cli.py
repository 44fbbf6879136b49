"""The ``trio-pb`` command line (``python -m trio_pb``): its parser and the dispatch to subcommands.

``call`` (in :mod:`trio_pb._cli_call`) calls a method on any PB server;
``decode`` (in :mod:`trio_pb._cli_decode`) shows what banana bytes hold.
Every failure the user can cause or meet ends in one line on stderr and an
exit code, never a traceback: 0 done, 1 the remote method or the bytes were
at fault, 2 the command could not do its job (usage, connection, login,
timeout).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ._cli_call import add_arguments as add_call_arguments
from ._cli_call import run as run_call
from ._cli_decode import add_arguments as add_decode_arguments
from ._cli_decode import run as run_decode

__all__ = ["main"]

PROG = "trio-pb"

CALL_EXAMPLES = """\
examples:
  trio-pb call localhost:8789 add 1 2
  trio-pb call localhost:8789 echo "'a str'" "b'bytes'" "[1, (2, 3)]" --kw scale=2.5
  TRIO_PB_PASSWORD=secret trio-pb call localhost:8789 whoami --user alice
  trio-pb call localhost:8789 whoami --anonymous
  trio-pb call unix:/run/app.sock status
  trio-pb call pb.example.org:8789 status --tls --ca ca.pem

ARGS and --kw values are Python literals (ast.literal_eval): 1, 2.5, None, True,
'text', b'bytes', [1, 2], {'a': 1}.  A bare word such as abc is not a literal and
is refused: quote strings for the shell ("'abc'").

exit status: 0 the answer was printed; 1 the remote method raised (one line
"error: <class>: <message>" on stderr); 2 no answer: bad arguments, the
connection failed, the login was refused, or the timeout passed.
"""

DECODE_EXAMPLES = """\
examples:
  trio-pb decode capture.bin
  trio-pb decode - < capture.bin
  xxd -p capture.bin | trio-pb decode --hex
  trio-pb decode --unjelly capture.bin
  echo '02 80 13 87 06 81' | trio-pb decode --hex

Each expression is printed after its byte offset.  Known PB messages (version,
message, answer, error, decref, decache, uncache, cachemessage ...) are shown by
name with their fields labelled; the dialect handshake at the start of a
connection is recognised.  With --unjelly, the jellied fields (args, kwargs,
value, failure) are shown as the Python values they carry: references as
<remote N>, copies as <copy of module.Class {state}>.  Bytes that are not banana
are reported with the offset of the byte that broke them; an expression cut
short at the end of the input is reported, after everything before it.

exit status: 0 everything decoded; 1 bytes that do not decode, or a partial
expression at the end; 2 the input could not be read (or is not hex, with --hex).
"""


def build_parser() -> argparse.ArgumentParser:
    """The parser of the whole command line, with one subparser per subcommand."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Tools for Perspective Broker: call a method on any PB server (Twisted or trio_pb), "
        "or decode captured banana bytes.",
        epilog="Run 'trio-pb call --help' or 'trio-pb decode --help' for each command.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    call = commands.add_parser(
        "call",
        help="call a method on a PB server's root object or, after a login, on the avatar",
        description="Connect to a PB server, optionally log in, call METHOD with ARGS and print the answer.",
        epilog=CALL_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_call_arguments(call)
    call.set_defaults(run=run_call)
    decode = commands.add_parser(
        "decode",
        help="pretty-print banana bytes (a capture of one direction of a PB connection)",
        description="Print the banana expressions in FILE (or stdin), labelling PB messages.",
        epilog=DECODE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_decode_arguments(decode)
    decode.set_defaults(run=run_decode)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line *argv* (default: ``sys.argv[1:]``) and return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.run(parser, args)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    return status
