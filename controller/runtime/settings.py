"""Settings of the controller daemon (``oab-controller run``): flags > env > TOML file > defaults.

Design
------
:class:`DaemonSettings` extends oabctl's :class:`~oab.controller.core.settings.Settings` (where the
control plane is: region, bucket, tables, cluster, endpoint, roles, networking) with what only a
replica needs: its id, lease timings, worker count, resync and poll periods, claim visibility,
backoff, rate limits and the graceful-shutdown budget. It is validated once at start; an invalid
value stops the process with exit code 2 and a message naming the setting, its source and the
fix.

Sources, highest first: command-line flags; environment variables ``OAB_<FIELD>`` (upper case,
e.g. ``OAB_WORKERS=8``, ``OAB_LEASE_DURATION_S=6``) and ``AWS_REGION``/``AWS_ENDPOINT_URL``;
the TOML file named by ``--config`` or ``OAB_CONTROLLER_CONFIG`` (flat keys, the field names);
the defaults below. Unknown keys in the file are errors.

Chaos-only settings (``chaos_clock_offset_s``, ``chaos_clock_rate``) skew this replica's clocks
for the failover suite; they are refused unless ``OAB_CHAOS=1`` is set, so a production replica
can never run with a skewed clock by accident.
"""

from __future__ import annotations

import os
import secrets
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, ValidationError, model_validator

from oab.controller.base.errors import OabError
from oab.controller.core.settings import ENV_VARS, LIST_FIELDS, Settings
from oab.controller.reconcile.ingress import DEFAULT_TELEGRAM_API_URL

CONFIG_ENV = "OAB_CONTROLLER_CONFIG"


class DaemonSettingsError(OabError):
    """The daemon's settings are invalid (exit code 2)."""

    reason = "InvalidSettings"


def default_replica_id() -> str:
    """Hostname plus a random suffix: unique even when containers share a hostname."""
    return f"{socket.gethostname()}-{secrets.token_hex(3)}"


_YEAR_S = 365 * 86_400.0


class DaemonSettings(Settings):
    """Everything one controller replica needs (see the module docstring for the sources).

    Every number has a documented range (``le``/``ge`` below); ``inf`` and ``nan`` are refused, so
    no value can disable a timeout or a lease (a lease of ``inf`` would never fail over).
    """

    model_config = ConfigDict(allow_inf_nan=False)

    replica_id: str = Field(
        default_factory=default_replica_id,
        min_length=1,
        max_length=128,
        description="This replica's identity in the lease and on claims (default hostname-xxxxxx).",
    )
    lease_name: str = Field(default="controller", description="Name of the leadership lease.")
    lease_duration_s: float = Field(
        default=6.0,
        gt=0,
        # The elector refuses more (oab.leader.record.MAX_LEASE_DURATION_MS): standbys clamp a
        # stored duration to it, so a longer promise would be cut short by them.
        le=60,
        description="How long a standby waits on an unchanged lease before taking over. Crash "
        "failover <= lease + retry period (+ one call timeout). Lower fails over faster but "
        "tolerates shorter pauses and slower DynamoDB calls.",
    )
    renew_deadline_s: float = Field(
        default=4.0,
        gt=0,
        le=60,
        description="A leader that cannot renew within this stops leading (before anyone may "
        "take over). Must be < lease duration; the gap is the safety margin.",
    )
    retry_period_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="Renew / campaign period. Graceful handoff takes about one period.",
    )
    workers: int = Field(default=4, ge=1, le=64, description="Reconcile threads per replica.")
    resync_period_s: float = Field(
        default=300.0,
        gt=0,
        le=86_400,
        description="Full resync (drift detection) period, jittered +-10 %.",
    )
    change_poll_s: float = Field(
        default=0.5, gt=0, le=60, description="How often the leader reads change records."
    )
    idle_poll_s: float = Field(
        default=0.5, gt=0, le=60, description="Worker sleep between empty claims (jittered)."
    )
    progress_poll_s: float = Field(
        default=2.0, gt=0, le=600, description="Requeue delay while a deployment is progressing."
    )
    telegram_api_url: str = Field(
        default=DEFAULT_TELEGRAM_API_URL,
        pattern=r"https?://\S+",
        max_length=2048,
        description="Telegram Bot API base URL for setWebhook (tests point it at a local fake).",
    )
    claim_visibility_s: float = Field(
        default=20.0,
        gt=0,
        le=3600,
        description="Claim deadline; heartbeats extend it every third. A crashed worker's unit "
        "is taken over once the deadline passed and another replica saw the claim unchanged "
        "for this long on its own clock: recovery <= 2 x this.",
    )
    queue_shards: int = Field(default=4, ge=1, le=64, description="Ready-index shards.")
    clock_skew_allowance_s: float = Field(
        default=900.0,
        ge=0,
        le=86_400,
        description="Work that is ready at once is stamped ready this far in the past, so "
        "replicas whose wall clocks lag by up to this much still claim it at once.",
    )
    backoff_base_s: float = Field(
        default=1.0, ge=0.001, le=3600, description="Failure backoff base (1 ms at least)."
    )
    backoff_cap_s: float = Field(default=300.0, gt=0, le=86_400, description="Failure backoff cap.")
    shutdown_timeout_s: float = Field(
        default=25.0,
        gt=0,
        le=600,
        description="SIGTERM budget: finish or release in-flight claims, hand the lease over. "
        "Keep below the ECS stopTimeout (ops/ uses 60 s).",
    )
    ecs_read_rate: float = Field(
        default=20.0, gt=0, le=10_000, description="ECS describe/list calls/s."
    )
    ecs_mutate_rate: float = Field(
        default=5.0, gt=0, le=10_000, description="ECS create/update/delete/s."
    )
    ecs_register_rate: float = Field(
        default=1.0, gt=0, le=10_000, description="Task definition writes/s."
    )
    chaos_clock_offset_s: float = Field(
        default=0.0,
        ge=-_YEAR_S,
        le=_YEAR_S,
        description="Chaos only: add this to the wall clock.",
    )
    chaos_clock_rate: float = Field(
        default=1.0, ge=0.01, le=100, description="Chaos only: monotonic clock rate multiplier."
    )

    @model_validator(mode="after")
    def _rules(self) -> DaemonSettings:
        if not self.lease_duration_s > self.renew_deadline_s > 1.2 * self.retry_period_s:
            raise ValueError(
                "need lease_duration_s > renew_deadline_s > 1.2 * retry_period_s; got "
                f"{self.lease_duration_s} / {self.renew_deadline_s} / {self.retry_period_s}"
            )
        if self.backoff_cap_s < self.backoff_base_s:
            raise ValueError("backoff_cap_s must be >= backoff_base_s")
        chaos = self.chaos_clock_offset_s != 0.0 or self.chaos_clock_rate != 1.0
        if chaos and os.environ.get("OAB_CHAOS") != "1":
            raise ValueError("chaos_clock_* settings need OAB_CHAOS=1 (failover suite only)")
        return self


#: The fields shared with oabctl read the same variables; the daemon's own read OAB_<FIELD>.
_ENV_ALIASES = ENV_VARS


def _env_values(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in DaemonSettings.model_fields:
        if name == "profile":
            continue
        keys = _ENV_ALIASES.get(name, (f"OAB_{name.upper()}",))
        for key in keys:
            if env.get(key):
                raw = env[key]
                if name in LIST_FIELDS:
                    out[name] = tuple(v.strip() for v in raw.split(",") if v.strip())
                else:
                    out[name] = raw
                break
    return out


def load_daemon_settings(
    flags: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    path: str | None = None,
) -> DaemonSettings:
    """Merge flags > env > file and validate; raises :class:`DaemonSettingsError`."""
    environ = os.environ if env is None else env
    file_path = path or environ.get(CONFIG_ENV)
    from_file: dict[str, Any] = {}
    if file_path:
        try:
            from_file = tomllib.loads(Path(file_path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise DaemonSettingsError(f"{file_path}: cannot read settings: {exc}") from exc
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    merged = {**from_file, **_env_values(environ), **given}
    try:
        return DaemonSettings(**merged)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "settings"
            source = (
                "flag"
                if field in given
                else "environment"
                if field in _env_values(environ)
                else file_path or "default"
            )
            problems.append(f"{field} ({source}): {err['msg']}")
        raise DaemonSettingsError("invalid controller settings: " + "; ".join(problems)) from exc
