"""The one place that decides whether the compiled codec (``trio_pb._speedups``) is used.

The extension is optional: it is built where a C compiler exists, and the pure-Python modules
remain the reference and the fallback.  ``TRIO_PB_NO_EXTENSIONS`` set to anything but ``""`` or
``"0"`` in the environment when trio_pb is imported makes it ignore the extension even when it
is built (the convention of aiohttp, yarl and msgpack).  Everything else asks the names here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    # Only for the types: banana itself imports this module.
    from .banana import Decoder, Encoder

__all__ = [
    "DISABLED",
    "IN_USE",
    "decode_parse",
    "decode_plain",
    "encode_message",
    "encode_plain",
    "unjelly_plain",
]

#: Whether the environment asked for the pure-Python path.
DISABLED: Final = os.environ.get("TRIO_PB_NO_EXTENSIONS", "") not in ("", "0")

#: ``encode_plain(encoder, value)``: ``encoder.encode(jelly(value))`` for plain data, ``None``
#: for anything else; ``None`` itself when the extension is not in use.
encode_plain: Callable[[Encoder, Any], bytes | None] | None = None
#: ``encode_message(encoder, head, values)``: ``encoder.encode([*head, *map(jelly, values)])``
#: when every value is plain data, else ``None``; ``None`` itself when the extension is not in use.
encode_message: Callable[[Encoder, tuple[Any, ...], tuple[Any, ...]], bytes | None] | None = None
#: ``decode_parse(decoder)``: what ``decoder._parse()`` returns, computed in C; ``None`` when the
#: extension is not in use.
decode_parse: Callable[[Decoder], Any] | None = None
#: ``unjelly_plain(sexp, depth_limit, hash_budget)``: what ``Unjellier(..., depth_limit=...,
#: hash_budget=...).unjelly_top(sexp)`` gives under the default security and registry, when sexp
#: is plain data, else ``NotImplemented``; ``None`` when the extension is not in use.
unjelly_plain: Callable[[Any, int, float | None], Any] | None = None
#: ``decode_plain(decoder, depth_limit, hash_budget)``: the decoder's next whole ``message`` or
#: ``answer`` command of plain data, decoded straight from its bytes, as a tuple
#: ``(b"message", request_id, target, name, answer_required, args, kwargs)`` or
#: ``(b"answer", request_id, value)`` with the fields unjellied, or ``NotImplemented`` (nothing
#: consumed); ``None`` when the extension is not in use.
decode_plain: Callable[[Decoder, int, float | None], Any] | None = None

if not DISABLED:
    try:
        from ._speedups import decode_parse as _decode
        from ._speedups import decode_plain as _decode_plain
        from ._speedups import encode_message as _message
        from ._speedups import encode_plain as _plain
        from ._speedups import unjelly_plain as _unjelly
    except ImportError:
        pass
    else:
        # All or none: an extension built from older sources may lack a name.
        decode_parse, encode_message, encode_plain, unjelly_plain = _decode, _message, _plain, _unjelly
        decode_plain = _decode_plain

#: Whether the compiled codec is in use in this process.
IN_USE: Final = encode_message is not None
