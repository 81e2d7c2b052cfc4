"""One scrubber for every log record of ``oab-controller``, ``oabctl`` and ``oab-agent``.

Design
------
Secrets reach this system only by reference, but error texts, AWS responses, agent-written
records and exception messages can still carry one. Every handler these processes install gets
:class:`ScrubbingFilter`, which rewrites each record *before* any formatter sees it, with the
same rules spans use (:mod:`oab.controller.base.redact`, the one list of credential shapes):

- the message is formatted once (``msg % args``) and scrubbed; ``args`` are dropped, so no
  formatter or ``handleError`` can print them raw;
- every ``extra`` field is scrubbed by key name (``token``, ``app_token``, ``secret`` ...: the
  whole value is redacted) and by value (strings, bytes, nested mappings and lists);
- the exception and its traceback (chained causes included) and ``stack_info`` are rendered to
  text once and scrubbed; formatters print that text (``exc_text``) instead of re-rendering.

Texts are bounded before scrubbing (:data:`MAX_MESSAGE_CHARS`, :data:`MAX_TRACEBACK_CHARS`):
scrubbing costs linear time, and a megabyte of log line helps nobody. The cut is made a margin
past the bound, scrubbed, then trimmed to the bound, so a secret straddling the cut is never
half kept.

:func:`install` attaches the filter to a handler; :func:`install_root` gives a process its one
stderr handler (``oabctl``, ``oab-agent``) and also filters every handler already on the root
logger and ``logging.lastResort``. Both are idempotent.

Invariants: a scrubbed record carries ``_oab_scrubbed`` and is never scrubbed twice; scrubbing
never raises (a broken ``__str__`` or bad format arguments still yield a line).

Time model: none.
"""

from __future__ import annotations

import logging
from typing import Final, TextIO

from oab.controller.base.redact import is_secret_key, scrub, scrub_data

__all__ = [
    "MAX_MESSAGE_CHARS",
    "MAX_TRACEBACK_CHARS",
    "ScrubbingFilter",
    "install",
    "install_root",
    "scrub_record",
]

#: Longest message (and string ``extra`` field) kept, in characters.
MAX_MESSAGE_CHARS: Final = 64 * 1024
#: Longest exception or stack text kept, in characters.
MAX_TRACEBACK_CHARS: Final = 256 * 1024
# Scrubbed past the bound, then trimmed: longer than any credential shape (PEM keys ~3.3 KB).
_MARGIN: Final = 8 * 1024
_MARK: Final = "_oab_scrubbed"
# Attributes every LogRecord has; anything else on a record came in through ``extra``.
_STANDARD: Final = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
_TRACEBACKS: Final = logging.Formatter()


def _bounded(text: str, limit: int) -> str:
    if len(text) <= limit:
        return scrub(text)
    cleaned = scrub(text[: limit + _MARGIN])[:limit]
    return f"{cleaned}... [{len(text) - limit} more characters dropped]"


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # bad arguments must not turn into a traceback that prints them
        return f"{record.msg!s} [log arguments could not be formatted]"


def scrub_record(record: logging.LogRecord) -> logging.LogRecord:
    """Scrub ``record`` in place (message, ``extra`` fields, exception, stack); returns it."""
    if getattr(record, _MARK, False):
        return record
    record.msg = _bounded(_message(record), MAX_MESSAGE_CHARS)
    record.args = None
    for key, value in list(record.__dict__.items()):
        if key in _STANDARD or key.startswith("_"):
            continue
        if isinstance(value, str) and not is_secret_key(key):
            record.__dict__[key] = _bounded(value, MAX_MESSAGE_CHARS)
        else:
            record.__dict__[key] = scrub_data(value, key=key)
    if record.exc_info and not record.exc_text:
        try:
            record.exc_text = _TRACEBACKS.formatException(record.exc_info)
        except Exception:
            record.exc_text = f"{record.exc_info[0]!s} [traceback could not be formatted]"
    if record.exc_text:
        record.exc_text = _bounded(record.exc_text, MAX_TRACEBACK_CHARS)
    if record.stack_info:
        record.stack_info = _bounded(record.stack_info, MAX_TRACEBACK_CHARS)
    setattr(record, _MARK, True)
    return record


class ScrubbingFilter(logging.Filter):
    """A handler filter that scrubs each record before it is formatted (see module doc)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Scrub ``record`` in place; never drops it."""
        scrub_record(record)
        return True


def install(handler: logging.Handler) -> logging.Handler:
    """Make ``handler`` scrub every record it emits (idempotent); returns it."""
    if not any(isinstance(f, ScrubbingFilter) for f in handler.filters):
        handler.addFilter(ScrubbingFilter())
    return handler


class _OabHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The stderr handler :func:`install_root` owns (replaced, not stacked, on a second call)."""


def install_root(
    *, stream: TextIO, level: int | str = logging.WARNING, fmt: str = "%(message)s"
) -> logging.Handler:
    """Give the root logger one scrubbing handler on ``stream`` and scrub every other handler.

    ``level`` applies to the new handler and, when more verbose than the root's, to the root.
    Used by ``oabctl`` (warnings, as bare messages, as before) and ``oab-agent``.
    """
    root = logging.getLogger()
    handler = _OabHandler(stream)
    handler.setFormatter(logging.Formatter(fmt))
    handler.setLevel(level)
    install(handler)
    root.handlers = [h for h in root.handlers if not isinstance(h, _OabHandler)]
    for other in root.handlers:
        install(other)
    if logging.lastResort is not None:
        install(logging.lastResort)
    root.addHandler(handler)
    wanted = logging.getLevelName(level) if isinstance(level, str) else level
    if isinstance(wanted, int) and (root.level == logging.NOTSET or wanted < root.level):
        root.setLevel(wanted)
    return handler
