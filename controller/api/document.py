"""The document entry point: one parsed manifest document to an ``OABService`` or ``OABFleet``.

Design
    ``apiVersion`` picks the API: ``oab.dev/v1`` is validated here, ``oab.dev/v2`` (upstream
    OpenAB's manifests) by :mod:`oab.controller.api.v2`, which converts a service to the same
    internal ``OABService`` (a fleet to a ``V2Fleet`` holding converted children) using the
    caller's :class:`~oab.controller.api.v2.ConversionContext` (the manifest's directory, the
    secret resolver). ``kind`` picks the model; credential-shaped literals are reported first and
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
from oab.controller.api.v2 import API_VERSION_V2, ConversionContext, V2Fleet, parse_v2
from oab.controller.base.names import API_VERSION

__all__ = ["API_VERSIONS", "parse_document"]

#: Every apiVersion a manifest may declare.
API_VERSIONS = (API_VERSION, API_VERSION_V2)


def parse_document(
    data: object, *, context: ConversionContext | None = None
) -> OABService | OABFleet | V2Fleet:
    """Validate one manifest document (already parsed from YAML) into an API object.

    Fleets are validated through their expansion too, so a returned fleet always expands.
    ``context`` serves ``oab.dev/v2`` documents (default: no local files, no secret lookups).
    Raises ``InvalidDocument`` (and ``ConfigFileInvalid`` for a v2 ``configFrom`` file).
    """
    if not isinstance(data, Mapping):
        raise InvalidDocument(
            [FieldIssue((), f"a manifest must be a mapping, got {type_name(data)}")]
        )
    api_version = data.get("apiVersion", data.get("api_version"))
    if api_version not in API_VERSIONS:
        raise InvalidDocument(
            [
                FieldIssue(
                    ("apiVersion",),
                    "missing" if api_version is None else f"unknown apiVersion {api_version!r}",
                    f"write apiVersion: {API_VERSION} or apiVersion: {API_VERSION_V2}",
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
    if api_version == API_VERSION_V2:
        if literals:
            raise InvalidDocument(literals)
        return parse_v2(data, context or ConversionContext())
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
