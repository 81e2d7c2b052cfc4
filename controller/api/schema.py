"""JSON Schema of the ``oab.dev/v1`` and ``oab.dev/v2`` manifests, for editors and CI.

The v2 schema is generated the same way from :mod:`oab.controller.api.v2` (upstream OpenAB's
shape) and ships as ``controller/api/schema/oab.dev-v2.schema.json``.

Design
    Generated from the pydantic models (``OABService`` and ``OABFleet``, ``oneOf`` by ``kind``),
    so it cannot drift from what ``oabctl apply`` accepts for structure, names, enums and ranges.
    Rules that span fields (a Fargate cpu/memory pair, placeholders backed by secrets, fleet
    expansion) are enforced only by the models; the schema is the editor's first line, not the
    last. Rejected record-style keys (``agent.model``, ``steering``, ...) are left out of the
    schema, so editors flag them; accepted record-style keys are marked ``deprecated``.

    A copy ships as ``controller/api/schema/oab.dev-v1.schema.json`` (tests keep it in sync) so that
    a manifest can point at it: ``# yaml-language-server: $schema=<path or URL of that file>``.

There is no time in this module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, TypeAdapter

from oab.controller.api.fleet import OABFleet
from oab.controller.api.service import API_VERSION, OABService
from oab.controller.api.v2 import API_VERSION_V2, V2Fleet, V2Service

__all__ = [
    "SCHEMA_FILE",
    "SCHEMA_FILE_V2",
    "SCHEMA_ID",
    "SCHEMA_ID_V2",
    "schema_dict",
    "schema_json",
]

SCHEMA_ID = "https://oab.dev/schemas/v1/manifest.schema.json"
#: The generated schema shipped with the package.
SCHEMA_FILE = Path(__file__).with_name("schema") / "oab.dev-v1.schema.json"
SCHEMA_ID_V2 = "https://oab.dev/schemas/v2/manifest.schema.json"
#: The ``oab.dev/v2`` schema shipped with the package.
SCHEMA_FILE_V2 = Path(__file__).with_name("schema") / "oab.dev-v2.schema.json"

_Document = Annotated[OABService | OABFleet, Field(discriminator="kind")]
_V2Document = Annotated[V2Service | V2Fleet, Field(discriminator="kind")]


def schema_dict(api_version: str = API_VERSION) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one manifest document of ``api_version``."""
    if api_version == API_VERSION_V2:
        return _schema(
            TypeAdapter(_V2Document),
            kinds=("V2Service", "V2Fleet"),
            schema_id=SCHEMA_ID_V2,
            title=f"{API_VERSION_V2} manifest (OABService or OABFleet, upstream OpenAB's shape)",
        )
    return _schema(
        TypeAdapter(_Document),
        kinds=("OABService", "OABFleet"),
        schema_id=SCHEMA_ID,
        title=f"{API_VERSION} manifest (OABService or OABFleet)",
    )


def _schema(
    adapter: TypeAdapter[Any], *, kinds: tuple[str, ...], schema_id: str, title: str
) -> dict[str, Any]:
    schema = adapter.json_schema(by_alias=True, mode="validation")
    defs = schema.get("$defs", {})
    for name in kinds:
        # The models default apiVersion/kind for Python callers; a manifest must spell them out.
        definition = defs[name]
        required = definition.setdefault("required", [])
        for key in ("apiVersion", "kind"):
            if key not in required:
                required.insert(0, key)
        definition["properties"]["apiVersion"].pop("default", None)
        definition["properties"]["kind"].pop("default", None)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": schema_id,
        "title": title,
        **schema,
    }


def schema_json(api_version: str = API_VERSION) -> str:
    """``schema_dict()`` as stable, indented JSON text (what ``oabctl schema`` prints)."""
    text = json.dumps(schema_dict(api_version), indent=2, sort_keys=True, ensure_ascii=False)
    return text + "\n"


if __name__ == "__main__":  # pragma: no cover - regeneration helper
    SCHEMA_FILE.parent.mkdir(parents=True, exist_ok=True)
    SCHEMA_FILE.write_text(schema_json(), encoding="utf-8")
    SCHEMA_FILE_V2.write_text(schema_json(API_VERSION_V2), encoding="utf-8")
