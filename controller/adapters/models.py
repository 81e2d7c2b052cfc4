"""The controller's own DynamoDB items declared once, as PynamoDB models: status, run log, changes.

Design
------
Each table's item shape is declared here and nowhere else (STYLE.md, trait 13): attribute names,
DynamoDB types, keys, the run log's ``run-index`` GSI and the ``expires_at`` TTL. The encodings in
:mod:`oab.controller.adapters.state` and :mod:`oab.controller.adapters.changes` are built on these
models: a domain object becomes a model instance and ``serialize()`` gives the low-level item; a
stored item is decoded by :func:`decode`.

PynamoDB is used for the *shape* (models, attributes, serialization) and never for I/O. Every
request goes through the low-level client the composition root built (:mod:`oab.controller.
adapters.aws`), because PynamoDB's own connection would bypass the things that client carries: the
profile, the action log that proves IAM grants (``tests/test_iam_calls.py``), the one retry layer,
and plain ``ClientError``s (PynamoDB wraps them). Transactions in particular: PynamoDB's
``TransactWrite`` reorders items (condition checks first, upstream pynamodb issue 1284), which
breaks mapping a cancellation reason back to its item by position, so transaction items are
serialized with the models and sent, in the caller's order, by the work queue's low-level client.

:func:`bind_models` (wrapped by :func:`oab.controller.adapters.aws.make_table_models`) is the one
factory that binds the models to the deployment's table names, region and endpoint: it returns
subclasses whose ``Meta`` is set once and never mutated (STYLE.md, trait 12).

Invariants
----------
- Byte-compatible with the rows written before the models existed: the same attribute names and
  types, numbers as decimal integers, JSON-in-a-string attributes (``conditions``, ``task_arns``,
  ``secret_versions``, ``watched_secrets``, ``calls``, ``trace_context``) dumped as before.
- :func:`decode` is total: a stored item is untrusted; any attribute of the wrong type, a missing
  required attribute, a number that is not a bounded integer, or JSON that is too large, too deep
  or invalid raises :class:`~oab.controller.core.stored.UnreadableItem` naming the table, the item
  and the attribute; never ``KeyError``, ``TypeError``, ``RecursionError`` or PynamoDB's own
  errors. Free text over its budget is cut on read, as :class:`~oab.controller.core.stored.
  Attributes` does. Absent optional attributes read as their defaults.
- The TTL attribute is DynamoDB's, not the controller's: an unreadable ``expires_at`` reads as
  ``None`` rather than making its row unreadable.

Time model: none; the TTL written is computed by the caller from its own stamp.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from pynamodb.attributes import Attribute, TTLAttribute, UnicodeAttribute
from pynamodb.constants import NUMBER, STRING
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from oab.controller.base.names import RUN_INDEX, TTL_ATTRIBUTE, TableNames
from oab.controller.core.stored import (
    AUDIT_CALLS_BYTES,
    AUDIT_ERROR_BYTES,
    ERROR_BYTES,
    SHORT_TEXT_BYTES,
    STATUS_JSON_BYTES,
    STATUS_JSON_DEPTH,
    TRACE_CONTEXT_BYTES,
    UnreadableItem,
    clip,
    json_depth,
)

__all__ = [
    "ChangeRow",
    "FieldProblem",
    "Integer",
    "JSONText",
    "RunIndex",
    "RunLogRow",
    "StatusRow",
    "TableModels",
    "Text",
    "bind_models",
    "decode",
]

_M = TypeVar("_M", bound=Model)

_TYPE_NAMES = {STRING: "string", NUMBER: "number"}


class FieldProblem(ValueError):
    """Raised by an attribute's ``deserialize``: what is wrong with the stored value (the caller,
    :func:`decode`, knows the table, the item and the attribute)."""


# ------------------------------------------------------------------------------ the attributes


class Text(UnicodeAttribute):
    """A string attribute cut to ``budget`` UTF-8 bytes on read (never refused for its size)."""

    def __init__(self, *, budget: int = SHORT_TEXT_BYTES, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.budget = budget

    def deserialize(self, value: Any) -> str:
        """The stored string, clipped to the budget."""
        if not isinstance(value, str):
            raise FieldProblem("expected a string")
        return clip(value, self.budget)


class Integer(Attribute[int]):
    """A number attribute holding an integer in ``[low, high]``, stored as its decimal text."""

    attr_type = NUMBER

    def __init__(self, *, low: int = 0, high: int = 2**53, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.low = low
        self.high = high

    def serialize(self, value: int) -> str:
        """Decimal text, as ``str(int)`` wrote it before the models."""
        return str(int(value))

    def deserialize(self, value: Any) -> int:
        """The stored integer; refuses fractions, exponents, huge texts and out-of-range values."""
        if not isinstance(value, str) or len(value) > 40:
            raise FieldProblem("expected a number")
        try:
            number = int(value)
        except ValueError:
            raise FieldProblem(f"not an integer: {clip(value, 40)!r}") from None
        if not self.low <= number <= self.high:
            raise FieldProblem(f"out of range {self.low}..{self.high}")
        return number


class JSONText(Attribute[Any]):
    """A string attribute holding JSON, checked for size and depth before it is parsed.

    An empty or absent string reads as the default. ``sort_keys`` is the writer's choice (change
    records sort their trace headers); the separators are ``json.dumps``' defaults, as before.
    """

    attr_type = STRING

    def __init__(
        self,
        *,
        budget: int = STATUS_JSON_BYTES,
        depth: int = STATUS_JSON_DEPTH,
        sort_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.budget = budget
        self.depth = depth
        self.sort_keys = sort_keys

    def serialize(self, value: Any) -> str:
        """The value as JSON text."""
        return json.dumps(value, sort_keys=self.sort_keys)

    def deserialize(self, value: Any) -> Any:
        """The parsed value of a bounded JSON text (``None`` for an empty string)."""
        if not isinstance(value, str):
            raise FieldProblem("expected a string")
        if value == "":
            return None
        if len(value) > self.budget:
            raise FieldProblem(f"JSON over {self.budget} bytes")
        if json_depth(value) > self.depth:
            raise FieldProblem(f"JSON nested deeper than {self.depth}")
        try:
            return json.loads(value)
        except ValueError:
            raise FieldProblem("not valid JSON") from None


class CallListText(JSONText):
    """An audit row's call list: JSON entries joined by ``,`` (the stored form before the models;
    the byte budget is applied by the caller, which knows what to leave out)."""

    def serialize(self, value: Any) -> str:
        """``[entry,entry,...]`` with each entry dumped with the default separators."""
        return "[" + ",".join(json.dumps(entry) for entry in value) + "]"


class Expiry(TTLAttribute):
    """The TTL (``expires_at``, epoch seconds). DynamoDB's to act on: a stored value the controller
    cannot read is ``None``, never a reason to refuse the row."""

    def deserialize(self, value: Any) -> datetime | None:
        """The expiry time, or ``None`` when the stored value is not a sane epoch second."""
        if not isinstance(value, str) or len(value) > 20 or not value.isdigit():
            return None
        try:
            return datetime.fromtimestamp(int(value), tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None


# ---------------------------------------------------------------------------------- the models


class StatusRow(Model):
    """An agent's status item in the ``state`` table (``pk = agent#{ns}/{name}``,
    ``sk = status``)."""

    class Meta:
        table_name = "state"

    pk = Text(hash_key=True)
    sk = Text(range_key=True)
    key = Text(default="")
    phase = Text(null=True)
    observed_generation = Integer(default=0)
    conditions = JSONText(default=list)
    task_arns = JSONText(default=list)
    service_arn = Text(default="")
    task_definition_arn = Text(default="")
    task_definition_hash = Text(default="")
    last_reconciled = Text(default="")
    last_error = Text(default="", budget=ERROR_BYTES)
    attempts = Integer(default=0)
    last_run_id = Text(default="")
    trace_id = Text(default="")
    secret_versions = JSONText(default=dict)
    watched_secrets = JSONText(default=dict)
    restart_marker = Text(default="")
    finalizer_step = Text(default="")
    manifest_etag = Text(default="")
    failed_hash = Text(default="")
    audit_seq = Integer(default=0)
    last_snapshot = Text(default="")
    #: Webhook ingress: the exact ids of the resources made for this agent, and its URLs.
    ingress = JSONText(default=dict)
    webhook_urls = JSONText(default=list)


class RunIndex(GlobalSecondaryIndex["RunLogRow"]):  # type: ignore[no-untyped-call]
    """The run log by run id (``run-index``, all attributes projected)."""

    class Meta:
        index_name = RUN_INDEX
        projection = AllProjection()

    run_id = Text(hash_key=True)


class RunLogRow(Model):
    """A row of the append-only audit run log (``pk = {ns}/{name}``, ``seq = 1, 2, 3, ...``)."""

    class Meta:
        table_name = "runlog"

    pk = Text(hash_key=True)
    seq = Integer(range_key=True)
    run_id = Text(default="")
    run_index = RunIndex()
    event = Text(default="")
    generation = Integer(default=0)
    token = Text(default="")
    replica = Text(default="")
    epoch = Integer(default=0)
    trace_id = Text(default="")
    span_id = Text(default="")
    from_phase = Text(default="")
    to_phase = Text(default="")
    calls = CallListText(default=list, budget=AUDIT_CALLS_BYTES)
    outcome = Text(default="")
    error = Text(default="", budget=AUDIT_ERROR_BYTES)
    duration_ms = Integer(default=0)
    at = Text()
    expires_at = Expiry(null=True, attr_name=TTL_ATTRIBUTE)


class ChangeRow(Model):
    """A change record in the ``state`` table (``pk = changes#{shard}``,
    ``sk = {epoch_ms:013d}#{key}#{generation}``)."""

    class Meta:
        table_name = "state"

    pk = Text(hash_key=True)
    sk = Text(range_key=True)
    key = Text(budget=512)
    generation = Integer()
    kind = Text(budget=16)
    version_id = Text(budget=1024)
    at = Text(default="", budget=64)
    epoch_ms = Integer(high=10**13)
    trace_context = JSONText(default=dict, budget=TRACE_CONTEXT_BYTES, depth=1, sort_keys=True)
    expires_at = Expiry(null=True, attr_name=TTL_ATTRIBUTE)


# ------------------------------------------------------------------------------------- decoding


@dataclass(frozen=True)
class _Field:
    python_name: str
    stored_name: str
    tag: str
    deserialize: Callable[[Any], Any]
    required: bool
    default: Any


@functools.cache
def _fields(model: type[Model]) -> tuple[_Field, ...]:
    """The model's attributes as plain records, read once per model: decoding walks these rather
    than PynamoDB's descriptors, which cost twice the hand-written decoder on a resync
    (``bench/state_codec.py``)."""
    return tuple(
        _Field(
            python_name=name,
            stored_name=attr.attr_name,
            tag=attr.attr_type,
            deserialize=attr.deserialize,
            required=not attr.null and attr.default is None,
            default=attr.default,
        )
        for name, attr in model.get_attributes().items()
    )


def decode(
    model: type[Model], item: Mapping[str, Any], *, table: str, name: str, reason: str
) -> dict[str, Any]:
    """The attribute values (by Python name, defaults filled in) of a stored low-level item,
    decoded totally by ``model``'s attributes (see the module doc).

    ``table``, ``name`` (the item's key, as text) and ``reason`` (e.g. ``CorruptStatus``) go into
    the :class:`UnreadableItem` raised for the first attribute that does not decode. A plain dict
    rather than a model instance: the instance's descriptors would double a resync's decoding cost.
    """
    values: dict[str, Any] = {}
    for field in _fields(model):
        raw = item.get(field.stored_name)
        value: Any = None
        if raw is not None:
            if not isinstance(raw, Mapping) or len(raw) != 1 or field.tag not in raw:
                problem = f"expected a {_TYPE_NAMES.get(field.tag, field.tag)}"
                raise _unreadable(table, name, reason, field.stored_name, problem)
            try:
                value = field.deserialize(raw[field.tag])
            except FieldProblem as exc:
                raise _unreadable(table, name, reason, field.stored_name, str(exc)) from None
        elif field.required:
            raise _unreadable(table, name, reason, field.stored_name, "missing")
        if value is None:
            default = field.default
            value = default() if callable(default) else default
        values[field.python_name] = value
    return values


def _unreadable(table: str, name: str, reason: str, field: str, problem: str) -> UnreadableItem:
    return UnreadableItem(table=table, item=name, field=field, problem=problem, reason=reason)


# ------------------------------------------------------------------------------------- binding


@dataclass(frozen=True, kw_only=True)
class TableModels:
    """The models bound to one deployment's tables, with the low-level client that does their I/O
    (see the module doc: PynamoDB's own connection is never used)."""

    client: Any
    names: TableNames
    status: type[StatusRow]
    runlog: type[RunLogRow]
    change: type[ChangeRow]


def _bind(model: type[_M], table: str, *, region: str | None, host: str | None) -> type[_M]:
    meta = type("Meta", (), {"table_name": table, "region": region, "host": host})
    namespace: dict[str, Any] = {"Meta": meta, "__module__": __name__}
    if issubclass(model, RunLogRow):
        # An index instance knows its model: each binding gets its own (never shared, mutated).
        namespace["run_index"] = RunIndex()
    return type(f"{model.__name__}[{table}]", (model,), namespace)


def bind_models(client: Any, names: TableNames) -> TableModels:
    """The models bound to ``names`` and to ``client``'s region and endpoint (the one factory;
    :func:`oab.controller.adapters.aws.make_table_models` builds the client for it)."""
    meta = getattr(client, "meta", None)
    region = getattr(meta, "region_name", None)
    host = getattr(meta, "endpoint_url", None)
    return TableModels(
        client=client,
        names=names,
        status=_bind(StatusRow, names.state, region=region, host=host),
        runlog=_bind(RunLogRow, names.runlog, region=region, host=host),
        change=_bind(ChangeRow, names.state, region=region, host=host),
    )
