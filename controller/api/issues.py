"""Validation problems as field issues: where (a field path), what, and how to fix it.

Design
    pydantic's errors are turned into :class:`FieldIssue` s whose path is the manifest's own
    (camelCase keys, list indexes), and whose message never holds an input value: validators hide
    input (``hide_input_in_errors``) and keys are cut. :func:`secret_literal_issues` finds
    credential-shaped literals anywhere in a document (the one list of shapes:
    :func:`oab.controller.base.redact.secret_kind`). :class:`InvalidDocument` carries every issue
    of one document (:func:`oab.controller.api.document.parse_document`).

Time model: none.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from pydantic.alias_generators import to_camel

from oab.controller.base.errors import InvalidInput
from oab.controller.base.redact import secret_kind

__all__ = [
    "FieldIssue",
    "InvalidDocument",
    "issues_from_validation_error",
    "parse_field_path",
    "secret_literal_issues",
    "type_name",
]


@dataclass(frozen=True)
class FieldIssue:
    """One validation problem: where (field path), what, and how to fix it."""

    path: tuple[str | int, ...]
    message: str
    hint: str | None = None

    @property
    def dotted(self) -> str:
        """``spec.config.discord.allowed_channels[0]``."""
        out = ""
        for part in self.path:
            if isinstance(part, int):
                out += f"[{part}]"
            else:
                out += f".{part}" if out else str(part)
        return out or "(document)"

    def __str__(self) -> str:
        text = f"{self.dotted}: {self.message}"
        return f"{text}; {self.hint}" if self.hint else text


@dataclass
class InvalidDocument(InvalidInput):
    """A document failed validation; ``issues`` lists every problem found. Not retryable."""

    reason = "InvalidDocument"
    issues: list[FieldIssue] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(str(issue) for issue in self.issues)


_LITERAL_HINT = (
    "secrets never go in a manifest: store the value in SSM Parameter Store or Secrets Manager "
    "under /oab/NAMESPACE/NAME/ (oab/NAMESPACE/NAME/ for Secrets Manager), declare it in "
    "spec.secrets and refer to it as ${NAME}"
)


def secret_literal_issues(data: Mapping[Any, Any]) -> list[FieldIssue]:
    """An issue for every string (value or key) of a document that looks like a credential.

    Shapes come from :func:`oab.controller.base.redact.secret_kind` (the one list of them); an issue
    names the field path and the shape, never the value. A key that looks like a credential is
    reported at its parent's path, since the key itself would be part of the path. ``status``
    (written by the controller) is skipped. Iterative, so depth is never a recursion problem.
    """
    issues: list[FieldIssue] = []
    stack: list[tuple[tuple[str | int, ...], Any]] = [
        ((key if isinstance(key, str | int) else str(key),), value)
        for key, value in reversed(list(data.items()))
        if key != "status"
    ]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            kind = secret_kind(value)
            if kind is not None:
                issues.append(FieldIssue(path, f"holds what looks like {kind}", _LITERAL_HINT))
        elif isinstance(value, Mapping):
            for key, item in reversed(list(value.items())):
                if isinstance(key, str) and (kind := secret_kind(key)) is not None:
                    issues.append(FieldIssue(path, f"a key looks like {kind}", _LITERAL_HINT))
                    continue
                stack.append(((*path, key if isinstance(key, str | int) else str(key)), item))
        elif isinstance(value, list):
            stack.extend(((*path, i), item) for i, item in reversed(list(enumerate(value))))
    return issues


def type_name(value: object) -> str:
    """A value's YAML type in words (``a list``, ``text``), for messages."""
    if value is None:
        return "an empty value"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__


_HINTS: dict[str, str] = {
    "missing": "add this field",
    "extra_forbidden": "remove it or check its spelling",
    "int_type": "write a whole number",
    "bool_type": "write true or false",
    "string_type": "write a string (quote it)",
    "list_type": "write a list",
    "dict_type": "write a mapping",
    "model_type": "write a mapping",
    "model_attributes_type": "write a mapping",
    "datetime_from_date_parsing": "write an ISO 8601 timestamp, e.g. 2026-01-31T12:00:00Z",
    "datetime_parsing": "write an ISO 8601 timestamp, e.g. 2026-01-31T12:00:00Z",
    "datetime_type": "write an ISO 8601 timestamp, e.g. 2026-01-31T12:00:00Z",
}


def issues_from_validation_error(exc: ValidationError, data: object) -> list[FieldIssue]:
    """Turn pydantic's errors into ``FieldIssue``s whose paths match the document's keys.

    pydantic's locations use aliases and include union tags (``secrets.0.ssm.path``); they are
    re-walked against ``data`` so that the path names keys as the user wrote them.
    """
    issues: list[FieldIssue] = []
    seen: set[tuple[tuple[str | int, ...], str]] = set()
    for err in exc.errors(include_input=False, include_url=False):
        ctx = err.get("ctx") or {}
        loc = _clean_loc(tuple(err["loc"]), data)
        extra = ctx.get("path")
        if extra:
            loc = loc + _parse_path(str(extra))
        message = str(ctx.get("text") or err["msg"])
        hint = ctx.get("hint") or _HINTS.get(err["type"])
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        elif err["type"] == "missing":
            message = "required field is missing"
        elif err["type"] == "union_tag_invalid":
            message = "source must be ssm or secretsmanager"
            hint = "write source: ssm (with path) or source: secretsmanager (with arn)"
        elif err["type"] == "union_tag_not_found":
            message = "secret needs a source"
            hint = "write source: ssm (with path) or source: secretsmanager (with arn)"
        key = (loc, message)
        if key in seen:
            continue
        seen.add(key)
        issues.append(FieldIssue(loc, message, str(hint) if hint else None))
    return issues


def parse_field_path(text: str) -> tuple[str | int, ...]:
    """``spec.secrets[0].path`` -> ``("spec", "secrets", 0, "path")`` (the inverse of dotted)."""
    return _parse_path(text)


def _parse_path(text: str) -> tuple[str | int, ...]:
    parts: list[str | int] = []
    for token in re.findall(r"[^.\[\]]+|\[\d+\]", text):
        parts.append(int(token[1:-1]) if token.startswith("[") else token)
    return tuple(parts)


def _clean_loc(loc: tuple[str | int, ...], data: object) -> tuple[str | int, ...]:
    out: list[str | int] = []
    current: object = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(current, Mapping):
            key = _find_key(current, part)
            if key is not None:
                out.append(key)
                current = current[key]
                continue
            if last:
                out.append(part)
                break
            # Not a key of the input: a union tag or a validator label; skip it.
            continue
        if isinstance(current, list) and isinstance(part, int):
            out.append(part)
            current = current[part] if 0 <= part < len(current) else None
            continue
        if last or current is None:
            out.append(part)
            current = None
            continue
    return tuple(out)


def _find_key(mapping: Mapping[Any, Any], part: str | int) -> Any:
    if part in mapping:
        return part
    if isinstance(part, str):
        for candidate in (_to_snake(part), to_camel(part)):
            if candidate in mapping:
                return candidate
    return None


def _to_snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
