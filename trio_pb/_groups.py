"""Lone exceptions out of nurseries as themselves, not wrapped in an ExceptionGroup.

trio wraps whatever a nursery's tasks raise in an ExceptionGroup; a caller
of :func:`~trio_pb.broker.open_broker` or :func:`~trio_pb.connect.serve_tcp`
expects the one error that happened (``DeadReferenceError``, ``OSError``)
as itself, as Twisted users do.
"""

from __future__ import annotations

import sys
from typing import Any

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

__all__ = ["plain_errors"]


class plain_errors:  # noqa: N801 (named as the function it is used as: with plain_errors(): ...)
    """Let a lone exception out of a nursery as itself rather than in an ExceptionGroup."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, group: BaseException | None, tb: Any) -> None:
        if not isinstance(group, BaseExceptionGroup):
            return
        single = _unwrap_single(group)
        if single is None:
            return
        # Without a cycle (as trio does for its groups): the exception keeps
        # its own context, not the group that contains it, and this frame,
        # which its traceback holds, no longer refers to either of them.
        context = single.__context__
        del exc_type, group, tb
        try:
            raise single
        finally:
            single.__context__ = context
            del single, context


def _unwrap_single(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception inside nested groups, or None if there are several."""
    leaves: list[BaseException] = []
    nested: list[BaseException] = [group]
    while nested:
        exc = nested.pop()
        if isinstance(exc, BaseExceptionGroup):
            nested += exc.exceptions
        else:
            leaves.append(exc)
    return leaves[0] if len(leaves) == 1 else None
