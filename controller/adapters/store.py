"""The desired-state store: manifests in the versioned control-plane bucket.

The algorithm below (generations, compare-and-swap rounds, tombstones, fleets) runs on the small
storage interface of :mod:`oab.controller.adapters.objectstore` (S3, or its in-memory twin).

Layout
------
- ``manifests/{ns}/{name}.yaml``: one ``OABService`` each (written by ``oabctl``, standalone or
  as the child of a fleet);
- ``fleets/{ns}/{name}.yaml``: one ``OABFleet`` each. Fleets live under their own prefix so that
  the controller lists only agents under ``manifests/`` and never has to tell the two apart;
  a fleet's children carry the label ``oab.dev/fleet: {fleet name}``.

A stored object is ``{apiVersion, kind, metadata, spec}``; ``metadata`` holds ``name``,
``namespace``, ``uid``, ``generation``, ``creationTimestamp``, ``labels``, ``annotations`` and,
on a tombstone, ``deletionTimestamp`` and ``finalizers``. Status is never stored here (it lives
in the ``state`` table). The S3 user metadata repeats ``generation``, ``kind`` and ``deleted``
so that :meth:`DesiredStateStore.history` can read them with HEAD requests.

Invariants
----------
- ``metadata.generation`` starts at 1 and goes up by one exactly when the spec changes
  (canonical-JSON digest of the spec); labels, annotations or an identical re-apply write no new
  generation (labels and annotations still write a new S3 version; an identical re-apply
  writes nothing). Reviving a tombstone by applying it again also counts as a change.
- Every write is conditional: ``If-None-Match: *`` to create, ``If-Match: <etag read>`` to
  replace or tombstone. A failed condition means someone else won: re-read and recompute, up to
  :attr:`StoreConfig.max_attempts` times with full-jitter backoff; then :class:`ConflictError`
  names what won. Hence N concurrent applies of different specs to one name leave
  ``generation == 1 + accepted changes`` and every accepted spec is exactly one S3 version.
- ``delete`` never removes an object: it writes a tombstone (``deletionTimestamp`` +
  finalizer ``oab.dev/ecs-cleanup``). Only the controller removes it, after cleanup, with
  :meth:`DesiredStateStore.finalize`, conditional on the tombstone's ETag, so a revive that
  raced the cleanup is never lost.
- A name owned by a fleet can only be changed through that fleet (:class:`OwnershipError`).
- After each accepted write a change record goes to
  :class:`~oab.controller.adapters.changes.ChangeLog`; a failure there is logged and swallowed: the
  S3 write is the truth and the controller's periodic resync finds it.

Untrusted bodies
----------------
Anyone who can write the bucket can plant an object, so a stored body is read like any manifest:
its size is checked from ``ContentLength`` before the body is read (a larger object is never
downloaded), then it is parsed by :func:`oab.controller.api.intake.load_stored` (the manifest caps:
nodes and characters with aliases expanded, depth, JSON types) and its envelope is validated
(:class:`_Envelope`: kind, identity matching its key, metadata types). An object that fails is
:class:`InvalidStoredObject` (not retryable; the reconciler parks the agent with reason
``InvalidManifest``). ``apply`` replaces such an object, so "apply a corrected manifest" is
always a way out; its generation continues from the highest its newest versions' S3 metadata
claim (the work queue ignores a generation older than one it has seen). ``list`` skips such an
object and says so; ``delete`` refuses it (apply first). Writes are capped too
(:class:`DocumentTooLarge`), so the store never writes what it could not read back.

All-or-nothing
--------------
Validation is all-or-nothing (the CLI validates every document of every file before calling
this module, and :meth:`DesiredStateStore.preflight` checks ownership of every target before the
first write). S3 has no multi-object transaction, so an infrastructure failure in the middle
of an apply can leave the earlier objects written; applying again converges (writes are
idempotent) and each object is always one complete document.

Fleet applies write, in this order: the children, tombstones for agents the stored fleet had
and the new one lacks, then the fleet object conditional on the ETag read at the start; if the
fleet write loses, the whole sequence is redone from a fresh read, so the last fleet to commit
also wrote its children last.

Time model: wall-clock readings (injected) only stamp ``creationTimestamp`` /
``deletionTimestamp``; nothing compares them. The compare-and-swap rounds are a tenacity
``Retrying`` (full jitter between rounds, none after the last) whose sleep and random source are
the injected ``sleep`` and ``rng``.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NewType, NoReturn, TypeGuard

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random_exponential,
)

from oab.controller.adapters.changes import ChangeKind, ChangeLog
from oab.controller.adapters.objectstore import (
    Blob,
    ObjectStore,
    PreconditionFailed,
    StoreError,
)
from oab.controller.api.fleet import OABFleet
from oab.controller.api.intake import (
    INT_RANGE,
    LIMITS,
    ManifestError,
    ManifestLimits,
    dump_document,
    format_size,
    load_stored,
)
from oab.controller.api.service import OABService, ecs_name_rivals
from oab.controller.api.v2 import V2Fleet
from oab.controller.base import names
from oab.controller.base.names import API_VERSION, CLEANUP_FINALIZER, FLEET_LABEL

__all__ = [
    "ApplyResult",
    "ConflictError",
    "DeleteResult",
    "Desired",
    "DesiredStateStore",
    "DocumentTooLarge",
    "InvalidStoredObject",
    "NameCollisionError",
    "NotFoundError",
    "ObjectKey",
    "OwnershipError",
    "Revision",
    "StoreConfig",
    "StoredObject",
    "desired_from",
    "object_key",
    "spec_digest",
]

log = logging.getLogger(__name__)

ObjectKey = NewType("ObjectKey", str)
Kind = Literal["OABService", "OABFleet"]
Outcome = Literal["created", "configured", "unchanged"]


# ---------------------------------------------------------------------------------------- errors


class ConflictError(StoreError):
    """Concurrent writers kept winning for ``attempts`` tries; carries what won last."""

    retryable = True

    def __init__(self, key: str, *, attempts: int, current_generation: int | None) -> None:
        won = "nothing" if current_generation is None else f"generation {current_generation}"
        super().__init__(
            f"{key}: gave up after {attempts} conflicting concurrent writes "
            f"(the store now holds {won}); apply again"
        )
        self.key = key
        self.attempts = attempts
        self.current_generation = current_generation


class OwnershipError(StoreError):
    """The object belongs to a fleet (or to no fleet) other than the writer claims."""

    def __init__(self, key: str, *, owner: str | None, writer: str | None) -> None:
        has = f"owned by fleet {owner!r}" if owner else "not owned by a fleet"
        if writer:
            fix = f"rename the agent in fleet {writer!r} or delete the existing object first"
        else:
            fix = f"edit or delete fleet {owner!r} instead"
        super().__init__(f"{key}: {has}; {fix}")
        self.key = key
        self.owner = owner
        self.writer = writer


class NameCollisionError(StoreError):
    """Another stored agent already has this agent's ECS name (``oab-{ns}-{name}`` is ambiguous)."""

    reason = "NameCollision"

    def __init__(
        self, key: str, *, agent: str, rival: str, ecs_name: str, rival_deleting: bool
    ) -> None:
        fix = "choose another metadata.name or metadata.namespace"
        if rival_deleting:
            fix = f"wait until its deletion finishes or {fix}"
        super().__init__(
            f"agent {agent}: its ECS service and task definition family {ecs_name!r} already "
            f"belong to agent {rival}{' (being deleted)' if rival_deleting else ''}; {fix}"
        )
        self.key = key
        self.rival = rival
        self.ecs_name = ecs_name


class NotFoundError(StoreError):
    """No live object under that key."""

    def __init__(self, key: str) -> None:
        super().__init__(f"{key}: not found")
        self.key = key


class InvalidStoredObject(StoreError):
    """A stored object cannot be read: over the size cap, not YAML within the manifest caps, or
    not a well-formed document for its key. Not retryable: someone must replace it.

    Carries what a replacement needs: the ETag and version read, and the generation its S3 user
    metadata claims (0 when absent or not a number).
    """

    reason = "InvalidManifest"

    def __init__(
        self, key: str, *, detail: str, etag: str, version_id: str, generation: int
    ) -> None:
        super().__init__(
            f"{key}: the stored object cannot be read: {detail}; apply a corrected manifest "
            "with `oabctl apply` to replace it"
        )
        self.key = key
        self.detail = detail
        self.etag = etag
        self.version_id = version_id
        self.generation = generation


class DocumentTooLarge(StoreError):
    """A document would be stored over the stored-object cap: refused before writing."""

    reason = "DocumentTooLarge"

    def __init__(self, key: str, *, size: int, limit: int) -> None:
        super().__init__(
            f"{key}: the document would be stored as {size:,} bytes, over the "
            f"{format_size(limit)} limit per stored object; make it smaller"
        )
        self.key = key
        self.size = size
        self.limit = limit


# ------------------------------------------------------------------------------ documents


def object_key(kind: str, namespace: str, name: str) -> ObjectKey:
    """The bucket key of a manifest (``manifests/...`` or ``fleets/...``, :mod:`names`)."""
    return ObjectKey(names.object_key(kind, namespace, name))


def spec_digest(spec: Mapping[str, Any]) -> str:
    """sha256 of the spec's canonical JSON (sorted keys, no whitespace)."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, kw_only=True)
class Desired:
    """A validated document reduced to plain data: what an apply asks the store to hold.

    ``spec`` must be JSON-compatible and normalized by the caller (the same input must always
    give the same dict), since generation bumps follow its digest.
    """

    kind: Kind
    namespace: str
    name: str
    spec: Mapping[str, Any]
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    #: ``oab.dev/v2`` for a v2 fleet, stored as written (the controller reads only agents).
    api_version: str = API_VERSION

    @property
    def key(self) -> ObjectKey:
        """Where this document is stored."""
        return object_key(self.kind, self.namespace, self.name)

    @property
    def owner(self) -> str | None:
        """The fleet this document claims to belong to (its ``oab.dev/fleet`` label)."""
        return self.labels.get(FLEET_LABEL)


@dataclass(frozen=True)
class StoredObject:
    """A document as stored, with the ETag and S3 version it was read at.

    ``unreadable`` marks the stand-in for an :class:`InvalidStoredObject` that ``apply`` is
    replacing: its document holds only the generation its S3 metadata claimed.
    """

    key: ObjectKey
    document: Mapping[str, Any]
    etag: str
    version_id: str
    unreadable: bool = False

    @property
    def metadata(self) -> Mapping[str, Any]:
        """The document's ``metadata``."""
        meta: Mapping[str, Any] = self.document.get("metadata", {})
        return meta

    @property
    def kind(self) -> str:
        """``OABService`` or ``OABFleet``."""
        return str(self.document.get("kind", ""))

    @property
    def name(self) -> str:
        """``metadata.name``."""
        return str(self.metadata.get("name", ""))

    @property
    def namespace(self) -> str:
        """``metadata.namespace``."""
        return str(self.metadata.get("namespace", ""))

    @property
    def generation(self) -> int:
        """``metadata.generation`` (>= 1)."""
        return int(self.metadata.get("generation", 0))

    @property
    def spec(self) -> Mapping[str, Any]:
        """The stored spec."""
        spec: Mapping[str, Any] = self.document.get("spec", {})
        return spec

    @property
    def labels(self) -> Mapping[str, str]:
        """``metadata.labels``."""
        labels: Mapping[str, str] = self.metadata.get("labels") or {}
        return labels

    @property
    def annotations(self) -> Mapping[str, str]:
        """``metadata.annotations``."""
        notes: Mapping[str, str] = self.metadata.get("annotations") or {}
        return notes

    @property
    def deleted(self) -> bool:
        """True for a tombstone (``metadata.deletionTimestamp`` set)."""
        return bool(self.metadata.get("deletionTimestamp"))

    @property
    def owner(self) -> str | None:
        """The owning fleet's name, if any."""
        return self.labels.get(FLEET_LABEL)


@dataclass(frozen=True)
class ApplyResult:
    """What an apply did to one object."""

    key: ObjectKey
    kind: str
    name: str
    outcome: Outcome
    generation: int
    version_id: str | None


@dataclass(frozen=True)
class DeleteResult:
    """What a delete did: ``deleted`` (tombstone written) or ``unchanged`` (already one)."""

    key: ObjectKey
    kind: str
    name: str
    outcome: Literal["deleted", "unchanged"]
    generation: int


@dataclass(frozen=True)
class Revision:
    """One S3 version of a manifest, newest first in :meth:`DesiredStateStore.history`."""

    version_id: str
    generation: int
    last_modified: datetime
    is_latest: bool
    deleted: bool


@dataclass(frozen=True, kw_only=True)
class StoreConfig:
    """Tuning of the store's optimistic concurrency.

    - ``max_attempts`` (12): read-compute-write rounds before :class:`ConflictError`. Each round
      at least one writer wins, so N concurrent writers of one key all finish within N rounds.
    - ``backoff_base`` (0.02 s) / ``backoff_cap`` (0.5 s): full-jitter backoff between rounds;
      small because rounds are cheap and conflicts are rare outside tests.
    - ``limits`` (:data:`oab.controller.api.intake.LIMITS`): caps on stored bodies, read and
      written; tests pass smaller ones.
    """

    max_attempts: int = 12
    backoff_base: float = 0.02
    backoff_cap: float = 0.5
    #: The intake caps for every body read or written (``stored_bytes`` and the YAML caps).
    limits: ManifestLimits = LIMITS

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if not 0 <= self.backoff_base <= self.backoff_cap:
            raise ValueError("need 0 <= backoff_base <= backoff_cap")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Metadata(BaseModel):
    """``metadata`` of a stored document: the fields this module and its readers rely on."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: StrictStr
    namespace: StrictStr
    uid: StrictStr | None = None
    generation: StrictInt = Field(ge=0, le=INT_RANGE[-1])
    creation_timestamp: StrictStr | None = Field(None, alias="creationTimestamp")
    deletion_timestamp: StrictStr | None = Field(None, alias="deletionTimestamp")
    finalizers: list[StrictStr] | None = None
    labels: dict[StrictStr, StrictStr] | None = None
    annotations: dict[StrictStr, StrictStr] | None = None


class _Envelope(BaseModel):
    """A stored document's envelope; ``spec`` is the API's to validate (the reconciler does)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    api_version: StrictStr = Field(alias="apiVersion")
    kind: Literal["OABService", "OABFleet"]
    metadata: _Metadata
    spec: dict[StrictStr, Any]


def _parse(key: str, blob: Blob, *, limits: ManifestLimits) -> StoredObject:
    """The document in ``blob``, checked as untrusted; :class:`InvalidStoredObject` if not."""

    def invalid(detail: str) -> InvalidStoredObject:
        return InvalidStoredObject(
            key,
            detail=detail,
            etag=blob.etag,
            version_id=blob.version_id,
            generation=_claimed_generation(blob.metadata),
        )

    if blob.oversize is not None:
        raise invalid(
            f"it is {blob.oversize:,} bytes, over the {format_size(limits.stored_bytes)} limit"
        )
    try:
        doc = load_stored(blob.body, source=key, limits=limits)
    except ManifestError as exc:
        first = exc.issues[0]
        where = f"line {first.line}: " if first.line is not None else ""
        path = f"{first.path}: " if first.path else ""
        raise invalid(f"{where}{path}{first.message}") from exc
    try:
        envelope = _Envelope.model_validate(doc)
    except ValidationError as exc:
        error = exc.errors()[0]
        path = ".".join(str(p) for p in error["loc"])
        raise invalid(f"{path}: {error['msg']}") from exc
    meta = envelope.metadata
    if object_key(envelope.kind, meta.namespace, meta.name) != key:
        raise invalid(f"it holds {envelope.kind} {meta.namespace}/{meta.name}, not this key's")
    return StoredObject(ObjectKey(key), doc, blob.etag, blob.version_id)


def _claimed_generation(metadata: Mapping[str, str]) -> int:
    """The ``generation`` S3 user metadata claims, or 0 when it is not a plausible number."""
    text = metadata.get("generation", "")
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else 0


# ------------------------------------------------------------------------------- the store


class DesiredStateStore:
    """Desired state in S3: generation rules, conditional writes, tombstones, fleets."""

    def __init__(
        self,
        objects: ObjectStore,
        *,
        changes: ChangeLog | None = None,
        config: StoreConfig | None = None,
        wall_clock: Callable[[], float] = time.time,
        new_uid: Callable[[], str] = lambda: str(uuid.uuid4()),
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._objects = objects
        self._changes = changes
        self._config = config or StoreConfig()
        self._clock = wall_clock
        self._new_uid = new_uid
        self._sleep = sleep
        self._rng = rng or random.Random()

    # -- reads

    def get(self, key: str) -> StoredObject | None:
        """The current document under ``key`` (tombstones included), or None.

        Raises :class:`InvalidStoredObject` when the object cannot be read (see the module doc).
        """
        blob = self._objects.read(key)
        return _parse(key, blob, limits=self._config.limits) if blob else None

    def list(
        self,
        namespace: str | None = None,
        *,
        kind: Kind = "OABService",
        unreadable: builtins.list[InvalidStoredObject] | None = None,
    ) -> builtins.list[StoredObject]:
        """Every stored object of ``kind`` in ``namespace`` (None = all namespaces), sorted.

        An object that cannot be read never hides the others: it is appended to ``unreadable``
        when given, and logged as a warning otherwise.
        """
        prefix = names.kind_prefix(kind) + (f"{namespace}/" if namespace else "")
        out = []
        for key in self._objects.list_keys(prefix):
            if not key.endswith(".yaml"):
                continue
            try:
                obj = self.get(key)
            except InvalidStoredObject as exc:
                if unreadable is None:
                    log.warning("skipped: %s", exc)
                else:
                    unreadable.append(exc)
                continue
            if obj is not None:
                out.append(obj)
        return sorted(out, key=lambda o: (o.namespace, o.name))

    def history(self, key: str) -> builtins.list[Revision]:
        """S3 versions of ``key`` with their generation, newest first."""
        revisions = []
        for v in self._objects.versions(key):
            if v.is_delete_marker:
                revisions.append(Revision(v.version_id, 0, v.last_modified, v.is_latest, True))
                continue
            # Only the metadata is wanted (a version over the cap is not downloaded at all).
            _blob, meta = self._objects.read_version(key, v.version_id)
            revisions.append(
                Revision(
                    v.version_id,
                    _claimed_generation(meta),
                    v.last_modified,
                    v.is_latest,
                    meta.get("deleted") == "true",
                )
            )
        return revisions

    def get_generation(self, key: str, generation: int) -> StoredObject:
        """The newest stored version that holds ``generation`` (for rollback)."""
        for rev in self.history(key):
            if rev.generation == generation and not rev.deleted:
                blob, _meta = self._objects.read_version(key, rev.version_id)
                return _parse(key, blob, limits=self._config.limits)
        raise NotFoundError(f"{key}@generation={generation}")

    # -- writes

    def preflight(self, items: Iterable[Desired]) -> None:
        """Check ownership and ECS names of every target before any write (all-or-nothing)."""
        for desired in items:
            current = self._current(desired.key)
            if _claimed(current) and current.owner != desired.owner:
                raise OwnershipError(desired.key, owner=current.owner, writer=desired.owner)
            if current is None:
                self._check_ecs_name(desired)

    def _check_ecs_name(self, desired: Desired) -> None:
        """Refuse to create an agent whose ECS name a stored agent (or tombstone) already has.

        Only creations are checked: a stored agent passed this check when it was created. Two
        concurrent creations of rival names can both pass; the reconciler then refuses to touch
        a service tagged with another agent (``NameCollision``), so neither is harmed.
        """
        if desired.kind != "OABService":
            return
        for namespace, name in ecs_name_rivals(desired.namespace, desired.name):
            rival = self.get(object_key("OABService", namespace, name))
            if rival is not None:
                raise NameCollisionError(
                    desired.key,
                    agent=f"{desired.namespace}/{desired.name}",
                    rival=f"{namespace}/{name}",
                    ecs_name=names.ecs_name(desired.namespace, desired.name),
                    rival_deleting=rival.deleted,
                )

    def apply(self, desired: Desired, *, dry_run: bool = False) -> ApplyResult:
        """Create or update one document; retries lost conditional writes (see module doc)."""
        key = desired.key
        for attempt in self._rounds(key):
            with attempt:
                current = self._current(key)
                if _claimed(current) and current.owner != desired.owner:
                    raise OwnershipError(key, owner=current.owner, writer=desired.owner)
                if current is None:
                    self._check_ecs_name(desired)
                document, outcome = self._next_document(desired, current)
                if outcome == "unchanged" or dry_run:
                    gen = int(document["metadata"]["generation"])
                    return ApplyResult(key, desired.kind, desired.name, outcome, gen, None)
                blob = self._cas_write(key, document, current)
                generation = int(document["metadata"]["generation"])
                self._record(key, generation, "apply", blob.version_id)
                return ApplyResult(
                    key, desired.kind, desired.name, outcome, generation, blob.version_id
                )
        raise AssertionError("unreachable: the last lost round raises ConflictError")

    def delete(
        self,
        kind: Kind,
        namespace: str,
        name: str,
        *,
        owner: str | None = None,
        dry_run: bool = False,
    ) -> DeleteResult:
        """Tombstone one document. ``owner`` is the fleet deleting its child (None = a user).

        Raises :class:`NotFoundError` if there is no object, :class:`OwnershipError` when a
        user deletes a fleet's child directly.
        """
        key = object_key(kind, namespace, name)
        for attempt in self._rounds(key):
            with attempt:
                current = self.get(key)
                if current is None:
                    raise NotFoundError(key)
                if current.owner != owner:
                    raise OwnershipError(key, owner=current.owner, writer=owner)
                if current.deleted:
                    return DeleteResult(key, kind, name, "unchanged", current.generation)
                if dry_run:
                    return DeleteResult(key, kind, name, "deleted", current.generation)
                document = _deep_copy(current.document)
                document["metadata"]["deletionTimestamp"] = _iso(self._clock())
                document["metadata"]["finalizers"] = [CLEANUP_FINALIZER]
                blob = self._cas_write(key, document, current)
                self._record(key, current.generation, "delete", blob.version_id)
                return DeleteResult(key, kind, name, "deleted", current.generation)
        raise AssertionError("unreachable: the last lost round raises ConflictError")

    def finalize(self, obj: StoredObject) -> None:
        """Remove a tombstoned object after cleanup (controller only), if it is unchanged.

        Raises :class:`ConflictError` when the object changed since ``obj`` was read (for
        example it was revived): the caller re-reads and reconciles instead.
        """
        if not obj.deleted:
            raise StoreError(f"{obj.key}: refusing to remove an object that is not a tombstone")
        try:
            self._objects.remove(obj.key, if_match=obj.etag)
        except PreconditionFailed:
            latest = self.get(obj.key)
            raise ConflictError(
                obj.key, attempts=1, current_generation=latest.generation if latest else None
            ) from None

    # -- fleets

    def apply_fleet(
        self, fleet: Desired, children: Sequence[Desired], *, dry_run: bool = False
    ) -> builtins.list[ApplyResult]:
        """Apply a fleet and its expanded children; tombstone children it no longer lists.

        Returns the fleet's result first, then one per child; removed children are reported as
        ``configured`` results of their tombstones (generation unchanged).
        """
        if fleet.kind != "OABFleet":
            raise ValueError("apply_fleet needs an OABFleet document")
        labelled = [_owned(child, fleet.name) for child in children]
        self.preflight(labelled)
        wanted = {c.name for c in labelled}
        for attempt in self._rounds(fleet.key):
            with attempt:
                before = self._current(fleet.key)
                results = [self.apply(child, dry_run=dry_run) for child in labelled]
                previous = set(_agent_names(before)) if before and not before.deleted else set()
                for gone in sorted(previous - wanted):
                    result = self._tombstone_child(fleet, gone, dry_run=dry_run)
                    if result is not None:
                        results.append(result)
                document, outcome = self._next_document(fleet, before)
                if outcome == "unchanged" or dry_run:
                    gen = int(document["metadata"]["generation"])
                    return [
                        ApplyResult(fleet.key, "OABFleet", fleet.name, outcome, gen, None),
                        *results,
                    ]
                blob = self._cas_write(fleet.key, document, before)
                gen = int(document["metadata"]["generation"])
                self._record(fleet.key, gen, "apply", blob.version_id)
                head = ApplyResult(fleet.key, "OABFleet", fleet.name, outcome, gen, blob.version_id)
                return [head, *results]
        raise AssertionError("unreachable: the last lost round raises ConflictError")

    def delete_fleet(
        self, namespace: str, name: str, *, dry_run: bool = False
    ) -> builtins.list[DeleteResult]:
        """Tombstone every child of the fleet, then the fleet itself."""
        key = object_key("OABFleet", namespace, name)
        fleet = self.get(key)
        if fleet is None:
            raise NotFoundError(key)
        results = []
        for child in sorted(_agent_names(fleet)):
            try:
                results.append(
                    self.delete("OABService", namespace, child, owner=name, dry_run=dry_run)
                )
            except NotFoundError:
                continue  # an earlier, interrupted apply never wrote it
            except InvalidStoredObject as exc:
                log.warning("fleet %s/%s: child left in place: %s", namespace, name, exc)
        head = self.delete("OABFleet", namespace, name, dry_run=dry_run)
        return [head, *results]

    # -- internals

    def _current(self, key: str) -> StoredObject | None:
        """What a write replaces: the stored object, or a stand-in for an unreadable one."""
        try:
            return self.get(key)
        except InvalidStoredObject as exc:
            log.warning("replacing an unreadable object: %s", exc)
            generation = max(exc.generation, self._last_generation(key))
            return StoredObject(
                ObjectKey(key),
                {"metadata": {"generation": generation}},
                exc.etag,
                exc.version_id,
                unreadable=True,
            )

    def _last_generation(self, key: str) -> int:
        """The highest generation the newest versions of ``key`` claim (metadata only).

        A replacement must not go back in generations: the work queue ignores an older
        generation than it has seen (it is superseded), so the repair would never be applied.
        """
        newest = self._objects.versions(key)[:_REPAIR_HISTORY]
        claims = [
            _claimed_generation(self._objects.read_version(key, v.version_id)[1])
            for v in newest
            if not v.is_delete_marker
        ]
        return max(claims, default=0)

    def _tombstone_child(self, fleet: Desired, child: str, *, dry_run: bool) -> ApplyResult | None:
        try:
            result = self.delete(
                "OABService", fleet.namespace, child, owner=fleet.name, dry_run=dry_run
            )
        except (NotFoundError, OwnershipError):
            return None  # never written, or no longer ours: nothing to remove
        except InvalidStoredObject as exc:
            log.warning("fleet %s: removed agent left in place: %s", fleet.key, exc)
            return None
        if result.outcome == "unchanged":
            return None
        return ApplyResult(result.key, "OABService", child, "configured", result.generation, None)

    def _next_document(
        self, desired: Desired, current: StoredObject | None
    ) -> tuple[dict[str, Any], Outcome]:
        spec = _deep_copy(dict(desired.spec))
        labels = dict(sorted(desired.labels.items()))
        annotations = dict(sorted(desired.annotations.items()))
        if current is None:
            meta: dict[str, Any] = {
                "name": desired.name,
                "namespace": desired.namespace,
                "uid": self._new_uid(),
                "generation": 1,
                "creationTimestamp": _iso(self._clock()),
            }
            outcome: Outcome = "created"
        else:
            old = current.metadata
            same_spec = spec_digest(current.spec) == spec_digest(spec)
            generation = current.generation + (0 if same_spec and not current.deleted else 1)
            meta = {
                "name": desired.name,
                "namespace": desired.namespace,
                "uid": old.get("uid") or self._new_uid(),
                "generation": generation,
                "creationTimestamp": old.get("creationTimestamp") or _iso(self._clock()),
            }
            unchanged = (
                same_spec
                and not current.deleted
                and dict(current.labels) == labels
                and dict(current.annotations) == annotations
            )
            outcome = "unchanged" if unchanged else "configured"
        if labels:
            meta["labels"] = labels
        if annotations:
            meta["annotations"] = annotations
        if outcome == "unchanged" and current is not None:
            return _deep_copy(dict(current.document)), outcome
        document = {
            "apiVersion": desired.api_version,
            "kind": desired.kind,
            "metadata": meta,
            "spec": spec,
        }
        return document, outcome

    def _write(self, key: str, document: Mapping[str, Any], current: StoredObject | None) -> Blob:
        meta = document["metadata"]
        user_meta = {
            "generation": str(meta["generation"]),
            "kind": str(document["kind"]),
            "deleted": "true" if meta.get("deletionTimestamp") else "false",
        }
        body = dump_document(document)
        limit = self._config.limits.stored_bytes
        if len(body) > limit:
            raise DocumentTooLarge(key, size=len(body), limit=limit)
        return self._objects.put(
            key, body, if_match=current.etag if current else None, metadata=user_meta
        )

    def _record(self, key: str, generation: int, kind: ChangeKind, version_id: str) -> None:
        if self._changes is None:
            return
        try:
            self._changes.record(key, generation=generation, kind=kind, version_id=version_id)
        except Exception as exc:
            # The S3 write already happened and is the truth; the resync finds it (module doc).
            log.warning("change record for %s gen %s not written: %s", key, generation, exc)

    def _gave_up(self, key: str) -> ConflictError:
        # Report what won, as read now: the copy read before the lost write is already stale.
        latest = self.get(key)
        return ConflictError(
            key,
            attempts=self._config.max_attempts,
            current_generation=latest.generation if latest else None,
        )

    def _rounds(self, key: str) -> Retrying:
        """The compare-and-swap rounds of one write: a round lost to a concurrent writer
        (:class:`_LostRound`) is retried after a full-jitter wait, at most
        ``max_attempts`` rounds in all; then :class:`ConflictError` naming what won. Any other
        error ends the rounds at once, as it is."""

        def gave_up(_: RetryCallState) -> NoReturn:
            raise self._gave_up(key)

        return Retrying(
            stop=stop_after_attempt(self._config.max_attempts),
            wait=_FullJitter(
                base=self._config.backoff_base, cap=self._config.backoff_cap, rng=self._rng
            ),
            retry=retry_if_exception_type(_LostRound),
            sleep=self._sleep,
            retry_error_callback=gave_up,
        )

    def _cas_write(
        self, key: str, document: Mapping[str, Any], current: StoredObject | None
    ) -> Blob:
        """:meth:`_write`, a lost condition turned into a lost round (retried by the caller)."""
        try:
            return self._write(key, document, current)
        except PreconditionFailed as exc:
            raise _LostRound(key) from exc


class _LostRound(Exception):
    """A compare-and-swap round lost to a concurrent writer (never leaves the store)."""


class _FullJitter(wait_random_exponential):
    """tenacity's full jitter (``uniform(0, min(cap, base * 2 ** (round - 1)))``) drawing from an
    injected random source, so that tests and replays are deterministic."""

    def __init__(self, *, base: float, cap: float, rng: random.Random) -> None:
        super().__init__(multiplier=base, max=cap)
        self._rng = rng

    def __call__(self, retry_state: RetryCallState) -> float:
        """A wait drawn uniformly below the round's exponential ceiling."""
        return self._rng.uniform(0, wait_exponential.__call__(self, retry_state))


def desired_from(obj: OABService | OABFleet | V2Fleet) -> Desired:
    """The store's view of a validated API object (identity, labels, annotations, spec).

    The spec is the model's JSON dump (aliases, defaults filled, ``None`` left out), so the same
    manifest always yields the same spec and the same digest. ``metadata.generation`` and every
    other server-side field a user may have copied into the manifest are ignored.
    """
    manifest = obj.to_manifest()
    meta = manifest["metadata"]
    return Desired(
        kind=obj.kind,
        namespace=obj.metadata.namespace,
        name=obj.metadata.name,
        spec=manifest["spec"],
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
        api_version=str(manifest.get("apiVersion", API_VERSION)),
    )


#: Versions read to find the generation an unreadable object's replacement continues from.
_REPAIR_HISTORY = 20


def _claimed(current: StoredObject | None) -> TypeGuard[StoredObject]:
    """Whether ``current`` is a live object whose owner a writer must match (an unreadable
    object has no owner anyone can know; replacing it is how it gets repaired)."""
    return current is not None and not current.deleted and not current.unreadable


def _deep_copy(value: Any) -> Any:
    result: Any = json.loads(json.dumps(value))
    return result


def _owned(child: Desired, fleet: str) -> Desired:
    labels = {**child.labels, FLEET_LABEL: fleet}
    return Desired(
        kind=child.kind,
        namespace=child.namespace,
        name=child.name,
        spec=child.spec,
        labels=labels,
        annotations=child.annotations,
    )


def _agent_names(fleet: StoredObject | None) -> builtins.list[str]:
    if fleet is None:
        return []
    agents = fleet.spec.get("agents") or []
    return [str(a["name"]) for a in agents if isinstance(a, Mapping) and "name" in a]
