"""``oab-agent``: the controller image's side of the agent start-up contract.

Design: init container + minimal in-image step (see ops/README.md for the trade-offs). The names
both sides read (containers, volume, environment, the entry script) are the task contract,
:mod:`oab.controller.base.taskcontract`. Each agent task has three containers sharing one task
volume mounted at ``SHARED_DIR`` (``/oab``):

1. ``INIT_CONTAINER`` (controller image, ``essential: false``) runs ``init_command()``: downloads
   ``CONFIG_ARTIFACT_PATH`` and checks it against ``CONFIG_SHA256`` (the digest the renderer put
   in the task definition, so an artifact changed after it was written is noticed); when
   ``BOOTSTRAP_FROM`` is set, downloads the bootstrap archive, validates it against hostile
   content and writes a sanitized re-packed ``/oab/home.tar``; then writes ``/oab/config.toml``.
   Any failure exits non-zero (see ``main`` for the codes); the agent container depends on
   ``SUCCESS`` so the task fails visibly and the deployment circuit breaker keeps the previous
   task.
2. ``AGENT_CONTAINER`` (the stock image, unmodified) runs ``/bin/sh -c ENTRY_SCRIPT``: extracts
   ``/oab/home.tar`` into ``$HOME`` (adds or overwrites only: files the image ships stay),
   runs ``openab run -c /oab/config.toml``, answers on-demand snapshot requests dropped in
   ``/oab/inbox`` and, on SIGTERM, forwards the signal, waits for openab, and writes a final
   ``/oab/outbox/home.tar``; whenever it exits it leaves ``/oab/outbox/exited``.
3. ``SIDECAR_CONTAINER`` (controller image, ``essential: false``) runs ``sidecar_command()``: polls
   the control-plane bucket for on-demand snapshot requests, relays them to the inbox, and
   uploads every outbox archive (denylist-filtered) to the ``bootstrapFrom`` location as a new
   object version. The agent container depends on the sidecar's ``START`` so ECS stops the agent
   first and the sidecar is still there to upload the final archive.

Invariants:
- ``config.toml`` lives outside HOME and is written last, atomically (temp + rename); it never
  enters a snapshot (the sidecar drops it again in case an older archive put one in HOME).
- ``config.toml`` is written only if its sha256 equals ``CONFIG_SHA256`` when the task definition
  carries one (task definitions rendered before the variable existed are trusted as before).
- Nothing from an archive reaches HOME unless it passed validation (see
  :mod:`oab.controller.agent.archive`).
- Every file exchanged through the shared volume is published by rename, so a reader never sees a
  partial file.

Time model: the entry script polls the inbox once a second; the sidecar uses an injected
monotonic clock for its bounded waits and wall time only for the stored snapshot timestamps.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import signal
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from oab.controller.agent.archive import ArchiveLimits, ArchiveSummary, Denylist, sanitize_archive
from oab.controller.agent.sidecar import SidecarConfig, SnapshotSidecar, parse_s3_url
from oab.controller.api.service import AgentKey
from oab.controller.base.errors import AgentError, classify_aws
from oab.controller.base.redact import scrub
from oab.controller.base.taskcontract import (
    ENV_BOOTSTRAP_FROM,
    ENV_BUCKET,
    ENV_CONFIG_ARTIFACT,
    ENV_CONFIG_SHA256,
    ENV_DENYLIST,
    ENV_NAME,
    ENV_NAMESPACE,
    ENV_POLL_SECONDS,
    ENV_SHARED_DIR,
    INBOX,
    OUTBOX,
    SHARED_DIR,
)
from oab.controller.observability import logscrub

log = logging.getLogger(__name__)


class ArtifactError(AgentError):
    """An S3 object the task needs could not be read (missing config, access denied, ...)."""

    reason = "ArtifactUnavailable"


class ConfigMismatchError(AgentError):
    """The config artifact is not the one the task definition was rendered with."""

    reason = "ConfigArtifactMismatch"


_SHA256_RE: Final = re.compile(r"[0-9a-f]{64}")


class InitConfig(BaseModel):
    """Settings of the init container, validated once (from the container environment)."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    config_artifact: str = Field(description="s3:// URL of this generation's config.toml.")
    config_sha256: str | None = Field(
        default=None,
        description="Expected sha256 (hex) of the artifact. None (task definitions rendered "
        "before the digest existed) skips the check.",
    )
    bootstrap_from: str | None = Field(
        default=None,
        description="s3:// URL of the state archive. A missing object is not an error (the first "
        "start of an agent whose snapshots go there); any other failure is.",
    )
    shared_dir: Path = Field(default=Path(SHARED_DIR), description="The task volume's mount.")
    limits: ArchiveLimits = Field(default_factory=ArchiveLimits)
    max_config_bytes: int = Field(
        default=1024 * 1024, gt=0, description="Cap on config.toml (rendered files are small)."
    )

    @field_validator("config_artifact", "bootstrap_from")
    @classmethod
    def _s3_url(cls, value: str | None) -> str | None:
        if value is not None:
            parse_s3_url(value)
        return value

    @field_validator("config_sha256")
    @classmethod
    def _digest(cls, value: str | None) -> str | None:
        if value is not None and not _SHA256_RE.fullmatch(value):
            raise ValueError(f"{ENV_CONFIG_SHA256} must be 64 lowercase hex digits")
        return value


@dataclass(frozen=True)
class InitResult:
    """What the init container prepared."""

    restored: ArchiveSummary | None  # None: no bootstrapFrom, or no object there yet
    config_bytes: int


def _aws_error(exc: Exception, operation: str, url: str) -> ArtifactError:
    aws = classify_aws(exc, operation=operation)
    err = ArtifactError(f"{url}: {aws}")
    err.retryable = aws.retryable
    return err


def _prepare_shared(shared: Path) -> None:
    """Create the inbox and outbox so that every container's uid can use them.

    The containers may run as different users (the stock image's agent user, the controller
    image's non-root user) and each deletes files the other wrote (the request, the answered
    archives), so no sticky bit: the volume is private to the task.
    """
    for sub in (INBOX, OUTBOX):
        path = shared / sub
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o777)


def _download_bootstrap(s3: Any, config: InitConfig) -> ArchiveSummary | None:
    assert config.bootstrap_from is not None
    url = config.bootstrap_from
    bucket, key = parse_s3_url(url)
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
            log.warning("%s does not exist yet: starting with the image's HOME", url)
            return None
        raise _aws_error(exc, "HeadObject", url) from exc
    except BotoCoreError as exc:
        raise _aws_error(exc, "HeadObject", url) from exc
    size = int(head.get("ContentLength", 0))
    if size > config.limits.max_total_bytes:
        raise AgentError(f"{url} is {size} bytes, over {config.limits.max_total_bytes}")
    with tempfile.TemporaryDirectory(prefix=".bootstrap-", dir=config.shared_dir) as scratch:
        local = Path(scratch) / "bootstrap"
        try:
            # Pin the version we sized, so a snapshot uploaded meanwhile cannot swap it.
            extra = {"VersionId": head["VersionId"]} if head.get("VersionId") else None
            s3.download_file(bucket, key, str(local), ExtraArgs=extra)
        except (ClientError, BotoCoreError) as exc:
            raise _aws_error(exc, "GetObject", url) from exc
        summary = sanitize_archive(
            local, config.shared_dir / "home.tar", limits=config.limits, compress=False
        )
    log.info("validated %s: %d members, %d bytes", url, summary.members, summary.total_bytes)
    return summary


def _fetch_config(s3: Any, config: InitConfig) -> bytes:
    """The artifact's bytes, size-capped and checked against ``config_sha256``."""
    url = config.config_artifact
    bucket, key = parse_s3_url(url)
    try:
        obj = s3.get_object(Bucket=bucket, Key=key)
        if int(obj.get("ContentLength", 0)) > config.max_config_bytes:
            raise AgentError(f"{url} is larger than {config.max_config_bytes} bytes")
        data: bytes = obj["Body"].read(config.max_config_bytes + 1)
    except (ClientError, BotoCoreError) as exc:
        raise _aws_error(exc, "GetObject", url) from exc
    if len(data) > config.max_config_bytes:
        raise AgentError(f"{url} is larger than {config.max_config_bytes} bytes")
    if config.config_sha256 is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != config.config_sha256:
            raise ConfigMismatchError(
                f"{url} has sha256 {actual}, but the task definition was rendered for"
                f" {config.config_sha256}: the artifact was changed after the controller wrote"
                " it; refusing to start the agent with it (re-apply the manifest to write a new"
                " generation, and find out who can write the artifacts prefix)"
            )
    return data


def _write_config(config: InitConfig, data: bytes) -> None:
    target = config.shared_dir / "config.toml"
    tmp = target.with_name(".config.toml.tmp")
    tmp.write_bytes(data)
    # Placeholders only (secrets arrive as environment variables), so world-readable is safe and
    # lets the image's agent user read it.
    tmp.chmod(0o644)
    tmp.replace(target)


def run_init(s3: Any, config: InitConfig) -> InitResult:
    """The init container: check the config artifact, restore the archive, write the config.

    The artifact is fetched and verified first (a tampered one fails before a large archive is
    downloaded) and written last (it must win). Raises ``ConfigMismatchError`` for an artifact
    that does not match ``CONFIG_SHA256``, ``UnsafeArchiveError``/``CorruptArchiveError`` for a
    hostile or broken archive and ``ArtifactError`` when S3 refuses; the container then exits
    non-zero and the task fails. Nothing is written to ``config.toml`` on any failure.
    """
    _prepare_shared(config.shared_dir)
    data = _fetch_config(s3, config)
    restored = _download_bootstrap(s3, config) if config.bootstrap_from else None
    _write_config(config, data)
    log.info("wrote %s (%d bytes)", config.shared_dir / "config.toml", len(data))
    return InitResult(restored=restored, config_bytes=len(data))


def _optional(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def init_config_from_env(env: Mapping[str, str]) -> InitConfig:
    """``InitConfig`` from the variables the task definition sets."""
    return InitConfig(
        config_artifact=env.get(ENV_CONFIG_ARTIFACT, ""),
        config_sha256=_optional(env, ENV_CONFIG_SHA256),
        bootstrap_from=_optional(env, ENV_BOOTSTRAP_FROM),
        shared_dir=Path(env.get(ENV_SHARED_DIR, SHARED_DIR)),
    )


def sidecar_config_from_env(env: Mapping[str, str]) -> SidecarConfig:
    """``SidecarConfig`` from the variables the task definition sets."""
    extra = env.get(ENV_DENYLIST, "").replace("\n", ",").split(",")
    poll = _optional(env, ENV_POLL_SECONDS)
    return SidecarConfig(
        agent=AgentKey(f"{env.get(ENV_NAMESPACE, '')}/{env.get(ENV_NAME, '')}"),
        bucket=env.get(ENV_BUCKET, ""),
        bootstrap_from=_optional(env, ENV_BOOTSTRAP_FROM),
        shared_dir=Path(env.get(ENV_SHARED_DIR, SHARED_DIR)),
        denylist=Denylist().with_extra(extra),
        **({"request_poll_interval": float(poll)} if poll else {}),
    )


# sysexits.h codes, so `docker inspect`/ECS stoppedReason tell the failure classes apart.
EX_DATAERR: Final = 65  # hostile or unreadable archive; config artifact not matching its digest
EX_UNAVAILABLE: Final = 69  # S3 refused or lacks an object the task needs
EX_IOERR: Final = 74  # the task's own disk failed (full volume, permissions)
EX_CONFIG: Final = 78  # invalid settings in the container environment


def main(argv: Sequence[str] | None = None) -> int:
    """``oab-agent init|sidecar``: the controller image's side of the agent start-up contract.

    Exit codes: 0 done; 65 (``EX_DATAERR``) a hostile or unreadable archive, or a config artifact
    that does not match ``CONFIG_SHA256``; 69 (``EX_UNAVAILABLE``) S3 refused; 74 (``EX_IOERR``)
    a local disk error; 78 (``EX_CONFIG``) invalid settings. Each prints one line, never a
    traceback.
    """
    parser = argparse.ArgumentParser(prog="oab-agent", description=main.__doc__)
    parser.add_argument("command", choices=("init", "sidecar"))
    args = parser.parse_args(argv)
    logscrub.install_root(
        stream=sys.stderr, level=logging.INFO, fmt="oab-agent %(levelname)s %(message)s"
    )
    from oab.controller.adapters.aws import make_client, make_session

    s3 = make_client(make_session(principal="oab-agent"), "s3")
    try:
        if args.command == "init":
            run_init(s3, init_config_from_env(os.environ))
            return 0
        sidecar = SnapshotSidecar(s3, sidecar_config_from_env(os.environ))
        stop = threading.Event()

        def _on_signal(_signum: int, _frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
        sidecar.run(stop)
        return 0
    except (ValidationError, ValueError) as exc:
        print(f"oab-agent {args.command}: invalid settings: {scrub(str(exc))}", file=sys.stderr)
        return EX_CONFIG
    except ArtifactError as exc:
        print(f"oab-agent {args.command}: {scrub(str(exc))}", file=sys.stderr)
        return EX_UNAVAILABLE
    except AgentError as exc:
        print(f"oab-agent {args.command}: {scrub(str(exc))}", file=sys.stderr)
        return EX_DATAERR
    except OSError as exc:
        print(f"oab-agent {args.command}: local I/O error: {scrub(str(exc))}", file=sys.stderr)
        return EX_IOERR


if __name__ == "__main__":
    sys.exit(main())
