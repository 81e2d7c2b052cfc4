"""The document entry point: one parsed manifest document to an ``OABService`` or ``OABFleet``.

Design
    ``apiVersion`` and ``kind`` pick the model; credential-shaped literals are reported first and
    once (:func:`~oab.controller.api.issues.secret_literal_issues`); a fleet is validated through
    its expansion too, so a returned fleet always expands.

Time model: none.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import ValidationError

from oab.controller.api.fleet import OABFleet, expand_fleet
from oab.controller.api.issues import (
    FieldIssue,
    InvalidDocument,
    issues_from_validation_error,
    secret_literal_issues,
    type_name,
)
from oab.controller.api.service import OABService
from oab.controller.base.names import API_VERSION

__all__ = ["parse_document"]


def parse_document(data: object) -> OABService | OABFleet:
    """Validate one manifest document (already parsed from YAML) into an API object.

    Fleets are validated through their expansion too, so a returned fleet always expands.
    Raises ``InvalidDocument``.
    """
    if not isinstance(data, Mapping):
        raise InvalidDocument(
            [FieldIssue((), f"a manifest must be a mapping, got {type_name(data)}")]
        )
    api_version = data.get("apiVersion", data.get("api_version"))
    if api_version != API_VERSION:
        raise InvalidDocument(
            [
                FieldIssue(
                    ("apiVersion",),
                    "missing" if api_version is None else f"unknown apiVersion {api_version!r}",
                    f"write apiVersion: {API_VERSION}",
                )
            ]
        )
    kind = data.get("kind")
    model: type[OABService] | type[OABFleet]
    if kind == "OABService":
        model = OABService
    elif kind == "OABFleet":
        model = OABFleet
    else:
        raise InvalidDocument(
            [
                FieldIssue(
                    ("kind",),
                    "missing" if kind is None else f"unknown kind {kind!r}",
                    "write kind: OABService or kind: OABFleet",
                )
            ]
        )
    literals = secret_literal_issues(data)
    try:
        obj = model.model_validate(dict(data))
    except ValidationError as exc:
        # A field holding a secret-shaped literal is reported once, as that (a token field would
        # also say "not a placeholder").
        flagged = {issue.path for issue in literals}
        issues = [i for i in issues_from_validation_error(exc, data) if i.path not in flagged]
        raise InvalidDocument(literals + issues) from exc
    if literals:
        raise InvalidDocument(literals)
    if isinstance(obj, OABFleet):
        expand_fleet(obj)
    return obj
