"""What the controller stores: byte budgets for every free text, and total decoding of items.

Design
------
DynamoDB refuses any item over 400 KB, and a refused commit used to end the worker thread that
made it. The controller's items carry text it does not control: AWS error messages, exception
text, agents' snapshot records (an agent's task role may write them). So every stored free text
has a byte budget here, in one place, and is cut to it with a visible marker
(:func:`clip`) when it is written; text that comes from AWS errors or agents is also scrubbed of
credential shapes first (:func:`safe_text`, :func:`oab.controller.base.redact.scrub`). With the
budgets below, a status item stays under ~12 KB and an audit row under ~110 KB, whatever a run
meets.

Reading is the mirror image: every stored item is *untrusted* when read back (a bug, a manual
edit or a hostile writer may have left anything in it). :class:`Attributes` reads a low-level
DynamoDB item field by field and turns every problem (a required attribute missing, a wrong
type, a number out of range, JSON that is invalid, too large or nested too deep) into one named
error, :class:`UnreadableItem`, that names the table, the item and the field: never ``KeyError``,
``TypeError`` or ``RecursionError``. Free text over its budget is cut on read rather than
refused, so items written before the budgets existed still read.

Invariants
----------
- Every budget is in UTF-8 bytes; :func:`clip` returns valid UTF-8 (lone surrogates, which
  DynamoDB refuses, become ``?``) of at most the budget, never splitting a character.
- JSON read from an item is size-checked and depth-checked *before* ``json.loads``.
- The work queue's own text budget (``last_error`` on a queue row) is the queue's
  (``QueueConfig.max_error_length``, :data:`QUEUE_ERROR_BYTES` by default): ``oab.queue`` cannot
  import this module, so it is restated here to keep the list whole.

Time model: none.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from oab.controller.base.errors import OabError
from oab.controller.base.redact import scrub
from oab.queue.config import QueueConfig
from oab.queue.row import CLIP_MARKER, clip_text

__all__ = [
    "AUDIT_CALLS_BYTES",
    "AUDIT_ERROR_BYTES",
    "CALL_FIELD_BYTES",
    "CALL_NAME_BYTES",
    "CLIP_MARKER",
    "CONDITION_MESSAGE_BYTES",
    "CONDITION_REASON_BYTES",
    "ERROR_BYTES",
    "QUEUE_ERROR_BYTES",
    "SHORT_TEXT_BYTES",
    "SNAPSHOT_ERROR_BYTES",
    "SNAPSHOT_RECORD_BYTES",
    "SNAPSHOT_RECORD_DEPTH",
    "STATUS_JSON_BYTES",
    "STATUS_JSON_DEPTH",
    "TASK_ARNS_MAX",
    "TRACE_CONTEXT_BYTES",
    "Attributes",
    "UnreadableItem",
    "clip",
    "json_depth",
    "safe_text",
]

# ------------------------------------------------------------------------------ the budgets

#: ``last_error`` of a status, the error of a run's outcome (before it is stored anywhere).
ERROR_BYTES: Final = 2048
#: The error text of an audit row.
AUDIT_ERROR_BYTES: Final = ERROR_BYTES
#: A condition's ``message``.
CONDITION_MESSAGE_BYTES: Final = 1024
#: A condition's ``reason`` and ``type``.
CONDITION_REASON_BYTES: Final = 128
#: ``target`` and ``result`` of one audited AWS call (ARNs, S3 URIs, versions, failure text).
CALL_FIELD_BYTES: Final = 1024
#: ``action`` and ``requestId`` of one audited AWS call.
CALL_NAME_BYTES: Final = 256
#: The whole call list of one audit row, as stored JSON; calls past it are replaced by one
#: ``oab:OmittedCalls`` entry that says how many were left out.
AUDIT_CALLS_BYTES: Final = 96 * 1024
#: Any other short stored string (ids, ARNs, markers, hashes, timestamps).
SHORT_TEXT_BYTES: Final = 2048
#: Task ARNs kept in a status (an agent runs one task; more only while a deployment overlaps).
TASK_ARNS_MAX: Final = 32
#: A JSON-in-a-string attribute of a status (conditions, task ARNs, secret versions), on read.
STATUS_JSON_BYTES: Final = 64 * 1024
#: Nesting those JSON attributes may have, on read (a list of objects of strings: 2).
STATUS_JSON_DEPTH: Final = 3
#: The W3C trace context a change record carries, on read.
TRACE_CONTEXT_BYTES: Final = 2048
#: An agent-written snapshot record, as stored in S3 (a real one is ~400 bytes).
SNAPSHOT_RECORD_BYTES: Final = 16 * 1024
#: Nesting a snapshot record may have (a flat object: 1).
SNAPSHOT_RECORD_DEPTH: Final = 2
#: The sidecar's error text in a snapshot record, once scrubbed.
SNAPSHOT_ERROR_BYTES: Final = 512
#: ``last_error`` of a work-unit row (the queue's own budget; see the module docstring).
QUEUE_ERROR_BYTES: Final = QueueConfig().max_error_length


def clip(text: str, budget: int) -> str:
    """``text`` cut to ``budget`` UTF-8 bytes with a marker (see :data:`CLIP_MARKER`)."""
    return clip_text(text, budget)


def safe_text(text: str, budget: int) -> str:
    """Free text from AWS errors, exceptions or agents, scrubbed of credentials and clipped.

    The text is first cut to a few budgets' worth so that scrubbing costs bounded time; what a
    secret cut at that first edge leaves behind lies past the final budget and is cut too.
    """
    return clip(scrub(clip(text, 4 * budget)), budget)


# --------------------------------------------------------------------------------- reading


class UnreadableItem(OabError):
    """A stored item that does not decode: ``table``, ``item`` (its key, as text), ``field``
    (the attribute) and ``problem`` say where and what. Terminal: reading it again gives the
    same answer; the item must be repaired or removed (``reason`` names the kind, e.g.
    ``CorruptStatus``)."""

    retryable = False

    def __init__(self, *, table: str, item: str, field: str, problem: str, reason: str) -> None:
        self.table = table
        self.item = clip(item, 256)
        self.field = field
        self.problem = clip(problem, 256)
        super().__init__(f"{self.table} item {self.item}: {field}: {self.problem}", reason=reason)


def json_depth(text: str) -> int:
    """Deepest ``[``/``{`` nesting of a JSON text, ignoring brackets inside strings (so that a
    hostile text is judged before ``json.loads`` recurses into it)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


_TYPE_NAMES = {"S": "string", "N": "number", "BOOL": "boolean", "M": "map", "L": "list"}


class Attributes:
    """Total reads of one low-level DynamoDB item (see the module docstring).

    ``table``, ``item`` and ``reason`` go into every :class:`UnreadableItem` raised. Optional
    attributes read as their default when absent; present ones must have the right type.
    """

    def __init__(self, raw: Mapping[str, Any], *, table: str, item: str, reason: str) -> None:
        self._raw = raw
        self._table = table
        self._item = item
        self._reason = reason

    def error(self, field: str, problem: str) -> UnreadableItem:
        """The error naming ``field`` of this item."""
        return UnreadableItem(
            table=self._table, item=self._item, field=field, problem=problem, reason=self._reason
        )

    def _typed(self, name: str, tag: str) -> Any:
        value = self._raw.get(name)
        if value is None:
            return None
        if not isinstance(value, Mapping) or len(value) != 1 or tag not in value:
            raise self.error(name, f"expected a {_TYPE_NAMES[tag]}")
        return value[tag]

    def has(self, name: str) -> bool:
        """Whether the attribute is present."""
        return name in self._raw

    def s(self, name: str, *, budget: int = SHORT_TEXT_BYTES, required: bool = False) -> str:
        """A string attribute, cut to ``budget`` bytes ("" when absent and not required)."""
        value = self._typed(name, "S")
        if value is None:
            if required:
                raise self.error(name, "missing")
            return ""
        if not isinstance(value, str):
            raise self.error(name, "expected a string")
        return clip(value, budget)

    def n(self, name: str, *, low: int = 0, high: int = 2**53, required: bool = False) -> int:
        """An integer attribute within ``[low, high]`` (0 when absent and not required)."""
        value = self._typed(name, "N")
        if value is None:
            if required:
                raise self.error(name, "missing")
            return 0
        if not isinstance(value, str) or len(value) > 40:
            raise self.error(name, "expected a number")
        try:
            number = int(value)
        except ValueError:
            raise self.error(name, f"not an integer: {clip(value, 40)!r}") from None
        if not low <= number <= high:
            raise self.error(name, f"out of range {low}..{high}")
        return number

    def json(
        self,
        name: str,
        *,
        default: Any,
        budget: int = STATUS_JSON_BYTES,
        depth: int = STATUS_JSON_DEPTH,
    ) -> Any:
        """A string attribute holding JSON, checked for size and depth before parsing."""
        text = self._typed(name, "S")
        if text is None or text == "":
            return default
        if not isinstance(text, str):
            raise self.error(name, "expected a string")
        if len(text) > budget:
            raise self.error(name, f"JSON over {budget} bytes")
        if json_depth(text) > depth:
            raise self.error(name, f"JSON nested deeper than {depth}")
        try:
            return json.loads(text)
        except ValueError:
            raise self.error(name, "not valid JSON") from None

    def strings(self, name: str, *, budget: int = SHORT_TEXT_BYTES) -> list[str]:
        """A JSON list of strings, each cut to ``budget``."""
        value = self.json(name, default=[])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(name, "expected a JSON list of strings")
        return [clip(v, budget) for v in value]

    def string_map(self, name: str, *, budget: int = SHORT_TEXT_BYTES) -> dict[str, str]:
        """A JSON object of strings to strings, each cut to ``budget``."""
        value = self.json(name, default={})
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise self.error(name, "expected a JSON object of strings")
        return {clip(k, budget): clip(v, budget) for k, v in value.items()}

    def objects(self, name: str, *, budget: int = STATUS_JSON_BYTES) -> list[dict[str, Any]]:
        """A JSON list of objects (of at most ``budget`` bytes)."""
        value = self.json(name, default=[], budget=budget)
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.error(name, "expected a JSON list of objects")
        return value
