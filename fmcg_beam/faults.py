"""What an exception really is: the errors it wraps, a full disk, a stop request inside Beam's wrapping.

Beam re-raises a worker's error, or a ``KeyboardInterrupt`` that lands inside a DoFn, wrapped in a
``RuntimeError``; google-api-core wraps connection errors in a ``RetryError`` (``cause``); urllib3 and
requests keep theirs in ``reason`` or in ``args``. ``causes`` walks all of these once, for every question
the run asks of a failure.
"""

from __future__ import annotations

import errno
from typing import Iterator, Optional


def causes(exc: Optional[BaseException]) -> Iterator[BaseException]:
    """``exc`` and everything it wraps: causes, contexts, ``cause``/``reason`` attributes, exceptions in ``args``."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop(0)
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [getattr(e, "cause", None), getattr(e, "reason", None), e.__cause__, e.__context__]
        todo += [a for a in getattr(e, "args", ()) if isinstance(a, BaseException)]


def is_disk_full(exc: BaseException) -> bool:
    """True when ``exc`` (or what it wraps, or a worker's error it relays as text) is a full disk or quota."""
    for e in causes(exc):
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(e) or "Disk quota exceeded" in str(e):
            return True
    return False


def interrupt_in(exc: BaseException) -> Optional[BaseException]:
    """The ``KeyboardInterrupt`` that ``exc`` is or wraps, if any: a stop request is still a stop request."""
    return next((e for e in causes(exc) if isinstance(e, KeyboardInterrupt)), None)


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, or its type's name when it has none: what a one-line error says."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
