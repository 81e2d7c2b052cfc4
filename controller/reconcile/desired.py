"""Desired state as reconcile sees it: the S3 store behind the ``Manifests`` protocol.

The store (:mod:`oab.controller.adapters.store`) keeps documents; reconcile wants a validated
:class:`~oab.controller.api.service.OABService`, its ETag and whether it is a tombstone.

Outcomes of a read, and what the worker does with each:

- absent: ``None`` (the agent is gone);
- unreadable (over the stored-object cap, YAML beyond the manifest caps, a malformed envelope:
  someone wrote the bucket behind ``oabctl``'s back) or no longer valid (an upgrade tightened a
  rule): :class:`~oab.controller.base.errors.TerminalError` with reason ``InvalidManifest``, which
  parks the unit. Retrying cannot fix it; a new ``oabctl apply`` can (the store replaces an
  unreadable object). The read never costs more than the caps of
  :mod:`oab.controller.api.intake`: an oversized object is refused from its size, unread;
- any other failure (S3 unreachable, throttled, denied): retryable.

An ``oab.dev/v2`` agent whose ``configFrom`` is an ``s3://`` URL gets the object's current text
here, at every read (:mod:`oab.controller.adapters.configsource`): new bytes render a new task
definition (its ``CONFIG_SHA256``), hence a rollout. The version of the bytes read comes with
the manifest (``Manifest.config_version``) so that the reconciler records it for the resync's
watch.
"""

from __future__ import annotations

from typing import Any

from oab.controller.adapters.configsource import ConfigObjects, with_config_object
from oab.controller.adapters.store import (
    ConflictError,
    DesiredStateStore,
    InvalidStoredObject,
)
from oab.controller.api.document import parse_document
from oab.controller.api.issues import InvalidDocument
from oab.controller.api.service import AgentKey, OABService
from oab.controller.base.errors import RetryableError, TerminalError
from oab.controller.base.names import manifest_key
from oab.controller.reconcile.reconciler import Manifest


class StoreManifests:
    """Reads agents' manifests from the desired-state store; removes them after deletion."""

    def __init__(self, store: DesiredStateStore, *, configs: ConfigObjects | None = None) -> None:
        self._store = store
        self._configs = configs

    def read(self, key: AgentKey) -> Manifest | None:
        """The stored manifest of ``key``, validated; ``None`` when absent."""
        try:
            obj = self._store.get(manifest_key(key))
        except InvalidStoredObject as exc:
            raise TerminalError(str(exc), reason="InvalidManifest") from exc
        except Exception as exc:
            raise RetryableError(f"cannot read manifest of {key}: {exc}") from exc
        if obj is None:
            return None
        doc: dict[str, Any] = {k: v for k, v in obj.document.items() if k != "status"}
        try:
            parsed = parse_document(doc)
        except InvalidDocument as exc:
            raise TerminalError(
                f"stored manifest {obj.key} is no longer valid: {exc}; apply a corrected "
                "manifest with `oabctl apply`",
                reason="InvalidManifest",
            ) from exc
        if not isinstance(parsed, OABService):
            raise TerminalError(
                f"{obj.key} holds a {parsed.kind}, not an OABService", reason="InvalidManifest"
            )
        version = ""
        if self._configs is not None and not obj.deleted:
            parsed, read = with_config_object(parsed, self._configs)
            version = read.version if read is not None else ""
        return Manifest(service=parsed, etag=obj.etag, deleted=obj.deleted, config_version=version)

    def remove(self, manifest: Manifest) -> None:
        """Remove the tombstone read as ``manifest`` (only if unchanged since)."""
        obj = self._store.get(manifest_key(manifest.service.key))
        if obj is None:
            return  # already removed (an earlier attempt)
        if obj.etag != manifest.etag:
            raise RetryableError(
                f"{obj.key} changed during deletion (applied again?)", reason="ManifestChanged"
            )
        try:
            self._store.finalize(obj)
        except ConflictError as exc:
            raise RetryableError(
                f"{obj.key} changed during deletion (applied again?): {exc}",
                reason="ManifestChanged",
            ) from exc
