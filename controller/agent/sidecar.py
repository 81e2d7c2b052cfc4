"""The snapshot sidecar: relays on-demand requests to the agent container, uploads HOME archives.

Protocol (the request and record types: :mod:`oab.controller.core.snapshot`; keys in the
control-plane bucket: :mod:`oab.controller.base.names`; ``{ns}/{name}`` is the agent's key):
- ``snapshot-requests/{ns}/{name}``: at most one pending on-demand request, created by
  ``oabctl snapshot NAME`` (:func:`oab.controller.adapters.snapshots.request_snapshot`) with
  ``If-None-Match: *``. Deleted by the sidecar once answered (uploaded, failed or timed out).
- ``snapshots/{ns}/{name}/{YYYYmmddTHHMMSS.fffZ}-{id}.json``: one record per snapshot attempt,
  on demand or at shutdown, successful or not; ``oabctl`` finds the record of its request by id.
- The archive itself goes to the agent's ``bootstrapFrom`` object as a new version (gzip when the
  key ends in ``.tar.gz``/``.tgz``), so the next start restores it.

Shared volume (names in :mod:`oab.controller.base.taskcontract`): the sidecar drops
``inbox/snapshot-request`` (the request id, published by rename); the agent container answers with
``outbox/snapshot-{id}.tar`` and, on SIGTERM, writes ``outbox/home.tar`` then ``outbox/exited``.
Every outbox archive is re-packed through ``filter_archive`` (denylist, ``config.toml``, limits)
before upload.

Invariants: an archive reaches S3 only after the filter; one record per attempt; a request never
outlives ``request_timeout`` (it is failed and deleted, so the next ``oabctl snapshot`` works).

Time model: deadlines (request timeout, shutdown wait, poll cadence) use the injected clock's
monotonic reading; record timestamps use its wall reading. Polling S3 costs one GET per agent per
``request_poll_interval`` (60 s by default; see the cost section of ops/README.md).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field, field_validator

from oab.controller.agent.archive import (
    ArchiveLimits,
    ArchiveSummary,
    Denylist,
    filter_archive,
)
from oab.controller.api.service import AgentKey
from oab.controller.base import names
from oab.controller.base.clock import Clock, SystemClock
from oab.controller.base.errors import AgentError, classify_aws
from oab.controller.base.redact import scrub
from oab.controller.base.taskcontract import (
    EXITED_MARKER,
    FINAL_ARCHIVE,
    INBOX,
    INBOX_REQUEST,
    OUTBOX,
    SHARED_DIR,
)
from oab.controller.core.snapshot import (
    SnapshotError,
    SnapshotId,
    SnapshotRecord,
    SnapshotRecorder,
    SnapshotRequest,
    Trigger,
    new_snapshot_id,
    record_key,
)

log = logging.getLogger(__name__)

# Failure texts kept in a record (scrubbed first): enough for any archive or AWS error.
MAX_ERROR_CHARS: Final = 2000


def _missing(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code", "")) in ("NoSuchKey", "404", "NotFound")


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)``; ``ValueError`` otherwise."""
    if not url.startswith("s3://"):
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, key = url[len("s3://") :].partition("/")
    if not bucket or not key:
        raise ValueError(f"s3 URL needs a bucket and a key: {url!r}")
    return bucket, key


class SidecarConfig(BaseModel):
    """Settings of the snapshot sidecar, validated once (from the container environment)."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    agent: AgentKey = Field(description="'namespace/name' of the agent this task runs.")
    bucket: str = Field(min_length=3, description="Control-plane bucket (requests, records).")
    bootstrap_from: str | None = Field(
        default=None,
        description="s3:// URL snapshots are uploaded to (the agent's spec.bootstrapFrom). "
        "Without it every snapshot attempt is recorded as failed.",
    )
    shared_dir: Path = Field(default=Path(SHARED_DIR), description="The task volume's mount point.")
    request_poll_interval: float = Field(
        default=60.0,
        ge=0,
        description="Seconds between GETs of the request key; 0 disables on-demand snapshots. "
        "Shorter answers `oabctl snapshot` sooner but costs one S3 GET per agent per interval.",
    )
    request_timeout: float = Field(
        default=300.0,
        gt=0,
        description="Seconds the agent container gets to archive HOME for one request.",
    )
    final_timeout: float = Field(
        default=100.0,
        gt=0,
        lt=120,
        description="Seconds to wait at SIGTERM for the final archive: under the 120 s Fargate "
        "Spot notice and ECS's maximum stopTimeout, minus the upload.",
    )
    tick: float = Field(default=1.0, gt=0, description="Seconds between outbox scans.")
    denylist: Denylist = Field(default_factory=Denylist)
    limits: ArchiveLimits = Field(default_factory=ArchiveLimits)

    @field_validator("agent")
    @classmethod
    def _agent_key(cls, value: str) -> str:
        names.split_agent_key(value)
        return value

    @field_validator("bootstrap_from")
    @classmethod
    def _s3_url(cls, value: str | None) -> str | None:
        if value is not None:
            parse_s3_url(value)
        return value


class SnapshotSidecar:
    """Relays on-demand requests to the agent container and uploads every outbox archive.

    Drive it with ``run(stop)`` (the ``oab-agent sidecar`` loop) or step by step in tests with
    ``poll_requests``, ``process_outbox``, ``expire`` and ``finish``.
    """

    def __init__(
        self,
        s3: Any,
        config: SidecarConfig,
        *,
        clock: Clock | None = None,
        new_id: Callable[[], str] = new_snapshot_id,
        recorders: Sequence[SnapshotRecorder] = (),
    ) -> None:
        self._s3 = s3
        self._config = config
        self._clock = clock or SystemClock()
        self._new_id = new_id
        self._recorders: list[SnapshotRecorder] = [self._write_record, *recorders]
        self._pending: SnapshotRequest | None = None
        self._pending_deadline = 0.0
        self.inbox = config.shared_dir / INBOX
        self.outbox = config.shared_dir / OUTBOX

    @property
    def pending(self) -> SnapshotRequest | None:
        """The on-demand request relayed to the agent container and not answered yet."""
        return self._pending

    def add_recorder(self, recorder: SnapshotRecorder) -> None:
        """Also send every record to ``recorder`` (the audit-log hook)."""
        self._recorders.append(recorder)

    # -- on-demand requests -------------------------------------------------------------------

    def poll_requests(self) -> SnapshotRequest | None:
        """One GET of the request key; relay a new request to the inbox. Returns it if new."""
        if self._pending is not None:
            return None
        key = names.snapshot_request_key(self._config.agent)
        try:
            body = self._s3.get_object(Bucket=self._config.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if _missing(exc):
                return None
            log.warning("polling %s failed: %s", key, classify_aws(exc, operation="GetObject"))
            return None
        except BotoCoreError as exc:
            log.warning("polling %s failed: %s", key, exc)
            return None
        try:
            request = SnapshotRequest.from_json(body)
        except SnapshotError as exc:
            self._record_failure(SnapshotId(self._new_id()), "on-demand", str(exc))
            self._delete_request()
            return None
        if self._config.bootstrap_from is None:
            self._record_failure(request.id, "on-demand", "the agent has no bootstrapFrom")
            self._delete_request()
            return None
        self._pending = request
        self._pending_deadline = self._clock.monotonic() + self._config.request_timeout
        _publish(self.inbox / INBOX_REQUEST, request.id.encode())
        log.info("snapshot %s requested; asked the agent container", request.id)
        return request

    def expire(self) -> bool:
        """Fail the pending request if its deadline passed. Returns whether it did."""
        if self._pending is None or self._clock.monotonic() < self._pending_deadline:
            return False
        request = self._pending
        self._pending = None
        (self.inbox / INBOX_REQUEST).unlink(missing_ok=True)
        self._record_failure(
            request.id,
            "on-demand",
            f"the agent container did not answer within {self._config.request_timeout:.0f} s",
        )
        self._delete_request()
        return True

    # -- uploads ------------------------------------------------------------------------------

    def process_outbox(self) -> list[SnapshotRecord]:
        """Upload every finished archive in the outbox; return the records written.

        An upload that fails on AWS keeps its archive for the next call; an archive that fails
        the filter is recorded as failed and removed.
        """
        records: list[SnapshotRecord] = []
        if not self.outbox.is_dir():
            return records
        for path in sorted(self.outbox.glob("*.tar")):
            if path.name == FINAL_ARCHIVE:
                trigger: Trigger = "shutdown"
                snap_id = SnapshotId(f"shutdown-{self._new_id()}")
            elif path.name.startswith("snapshot-"):
                trigger = "on-demand"
                snap_id = SnapshotId(path.name[len("snapshot-") : -len(".tar")])
            else:
                continue
            record = self._upload(path, snap_id, trigger)
            if record is None:
                continue
            records.append(record)
            if self._pending is not None and self._pending.id == snap_id:
                self._pending = None
                self._delete_request()
        return records

    def _upload(self, path: Path, snap_id: SnapshotId, trigger: Trigger) -> SnapshotRecord | None:
        if self._config.bootstrap_from is None:
            path.unlink(missing_ok=True)
            return self._record_failure(snap_id, trigger, "the agent has no bootstrapFrom")
        bucket, key = parse_s3_url(self._config.bootstrap_from)
        gz = key.endswith((".tar.gz", ".tgz"))
        clean = path.with_name(f".upload-{path.stem}.tar" + (".gz" if gz else ""))
        try:
            summary = filter_archive(
                path, clean, denylist=self._config.denylist, limits=self._config.limits
            )
        except (AgentError, OSError) as exc:
            # A hostile or broken archive, or a full volume: this snapshot fails, the sidecar
            # goes on serving (the archive is dropped so that it cannot fill the volume again).
            path.unlink(missing_ok=True)
            clean.unlink(missing_ok=True)
            return self._record_failure(snap_id, trigger, str(exc))
        try:
            with clean.open("rb") as body:
                response = self._s3.put_object(
                    Bucket=bucket,
                    Key=key,
                    Body=body,
                    ContentType="application/gzip" if gz else "application/x-tar",
                )
        except (ClientError, BotoCoreError) as exc:
            clean.unlink(missing_ok=True)
            log.warning(
                "uploading snapshot %s failed (kept for retry): %s",
                snap_id,
                classify_aws(exc, operation="PutObject"),
            )
            return None
        clean.unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        return self._record(
            _uploaded(
                self._config.agent,
                snap_id,
                trigger,
                taken_at=self._clock.time(),
                location=self._config.bootstrap_from,
                version_id=response.get("VersionId"),
                summary=summary,
            )
        )

    # -- shutdown -----------------------------------------------------------------------------

    def finish(self) -> SnapshotRecord | None:
        """At SIGTERM: wait (bounded by ``final_timeout``) for the final archive and upload it.

        Returns early, with ``None``, when the agent container says it exited without one.
        """
        deadline = self._clock.monotonic() + self._config.final_timeout
        while True:
            for record in self.process_outbox():
                if record.trigger == "shutdown":
                    return record
            final = self.outbox / FINAL_ARCHIVE
            if (self.outbox / EXITED_MARKER).exists() and not final.exists():
                log.info("the agent container exited without a final archive")
                return None
            if self._clock.monotonic() >= deadline:
                if final.exists():
                    return self._record_failure(
                        SnapshotId(f"shutdown-{self._new_id()}"),
                        "shutdown",
                        f"final upload did not finish within {self._config.final_timeout:.0f} s",
                    )
                return self._record_failure(
                    SnapshotId(f"shutdown-{self._new_id()}"),
                    "shutdown",
                    f"no final archive within {self._config.final_timeout:.0f} s",
                )
            self._clock.sleep(self._config.tick)

    def run(self, stop: threading.Event) -> SnapshotRecord | None:
        """Serve until ``stop`` is set (SIGTERM), then ``finish``."""
        next_poll = self._clock.monotonic()
        while not stop.is_set():
            now = self._clock.monotonic()
            if self._config.request_poll_interval > 0 and now >= next_poll:
                self.poll_requests()
                next_poll = now + self._config.request_poll_interval
            self.process_outbox()
            self.expire()
            stop.wait(self._config.tick)
        return self.finish()

    # -- records ------------------------------------------------------------------------------

    def _record_failure(self, snap_id: SnapshotId, trigger: Trigger, error: str) -> SnapshotRecord:
        error = scrub(error)[:MAX_ERROR_CHARS]
        log.error("snapshot %s (%s) failed: %s", snap_id, trigger, error)
        return self._record(
            SnapshotRecord(
                agent=self._config.agent,
                id=snap_id,
                trigger=trigger,
                status="failed",
                taken_at=self._clock.time(),
                location=self._config.bootstrap_from,
                error=error,
            )
        )

    def _record(self, record: SnapshotRecord) -> SnapshotRecord:
        for recorder in self._recorders:
            try:
                recorder(record)
            except Exception:
                # A record that cannot be written must not stop later snapshots; it is logged.
                log.exception("recording snapshot %s failed", record.id)
        return record

    def _write_record(self, record: SnapshotRecord) -> None:
        try:
            self._s3.put_object(
                Bucket=self._config.bucket,
                Key=record_key(record),
                Body=record.to_json(),
                ContentType="application/json",
            )
        except (ClientError, BotoCoreError) as exc:
            raise classify_aws(exc, operation="PutObject") from exc

    def _delete_request(self) -> None:
        try:
            self._s3.delete_object(
                Bucket=self._config.bucket, Key=names.snapshot_request_key(self._config.agent)
            )
        except (ClientError, BotoCoreError) as exc:
            log.warning("deleting the snapshot request failed: %s", exc)


def _uploaded(
    agent: AgentKey,
    snap_id: SnapshotId,
    trigger: Trigger,
    *,
    taken_at: float,
    location: str,
    version_id: str | None,
    summary: ArchiveSummary,
) -> SnapshotRecord:
    return SnapshotRecord(
        agent=agent,
        id=snap_id,
        trigger=trigger,
        status="uploaded",
        taken_at=taken_at,
        location=location,
        version_id=version_id,
        members=summary.members,
        size_bytes=summary.total_bytes,
        excluded=len(summary.excluded),
    )


def _publish(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically; readable by any uid sharing the volume."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o666)
    tmp.replace(path)


__all__ = ["SidecarConfig", "SnapshotSidecar", "parse_s3_url"]
