"""The simulated ECS data plane's control API: its settings, request bodies, errors and client.

The simulator itself (:mod:`oab.controller.local.dataplane`) runs inside the emulator process and
serves ``/_oab/dataplane/<action>`` (JSON in, JSON out) before moto sees the request. This module
holds what both sides share, and :class:`DataPlaneControl`, the client that tests, the demo, the
benches and chaos scenarios use to configure the simulator, inject faults, step it and read its
status. It imports nothing of moto, so the client is cheap to import anywhere.

Invariants: every request body is validated by the pydantic model named here (``extra`` fields
are refused, with HTTP 400); a refused or unreachable call raises :class:`ControlRequestError`,
retryable only when the emulator could not answer (no status, or 5xx).

Time model: none here; the simulator's clock moves only through ``StepRequest.advance_s``.

This module is local/testing tooling: product code never imports it.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from oab.controller.base.errors import OabError

__all__ = [
    "CONTROL_PREFIX",
    "ControlRequestError",
    "DataPlaneConfig",
    "DataPlaneControl",
    "DataPlaneError",
    "FaultMode",
    "SecretFault",
    "ServiceFault",
    "StepRequest",
]

#: Path prefix of the control API; moto serves nothing under it.
CONTROL_PREFIX = "/_oab/dataplane/"

FaultMode = Literal["secret-injection", "crash-loop"]


# --------------------------------------------------------------------------------------- errors
class DataPlaneError(OabError):
    """Base of the data plane's errors; ``retryable``: whether repeating the call may succeed."""

    retryable = False
    reason = "DataPlaneError"


class ControlRequestError(DataPlaneError):
    """The control API refused a request (bad input) or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        # Unreachable (no HTTP status) may be a restarting emulator; a 4xx never heals itself.
        self.retryable = status is None or status >= 500


# --------------------------------------------------------------------------------------- config
class DataPlaneConfig(BaseModel):
    """Simulator settings, validated once; the control API replaces them as a whole."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Seconds from launch until a task runs (or fails). Longer looks like Fargate; shorter
    #: makes tests and benches faster.
    start_delay_s: float = Field(default=1.0, ge=0.0, le=3600.0)
    #: Minimum failed tasks before the circuit breaker trips (ECS uses at least 3).
    circuit_breaker_threshold: int = Field(default=3, ge=1, le=200)
    #: Background step period. Smaller reacts sooner but takes the global lock more often.
    tick_s: float = Field(default=0.2, gt=0.0, le=10.0)
    #: When true the background thread does not step; only ``POST .../step`` moves time.
    paused: bool = False
    #: Seconds a FAILED deployment stays listed (as ACTIVE) after its circuit breaker tripped.
    failed_deployment_linger_s: float = Field(default=10.0, ge=0.0)
    #: Seconds a stopped task stays describable (ECS: about an hour).
    stopped_task_retention_s: float = Field(default=3600.0, ge=0.0)
    #: Cap on stopped tasks kept per service, so long runs do not grow the emulator.
    max_stopped_tasks_per_service: int = Field(default=10, ge=0)
    #: Refuse CreateService over an ACTIVE service of the same name unless clientToken matches.
    strict_create: bool = True
    #: Circuit breaker with rollback when the service has no deploymentConfiguration.
    rollback_by_default: bool = True


class ServiceFault(BaseModel):
    """Body of ``POST .../fault/service``: new tasks of one service fail (``None`` clears)."""

    model_config = ConfigDict(extra="forbid")
    cluster: str = Field(min_length=1)
    service: str = Field(min_length=1)
    mode: FaultMode | None


class SecretFault(BaseModel):
    """Body of ``POST .../fault/secret``: tasks referencing a ``valueFrom`` prefix fail."""

    model_config = ConfigDict(extra="forbid")
    value_from: str = Field(min_length=1)
    mode: FaultMode | None = "secret-injection"


class StepRequest(BaseModel):
    """Body of ``POST .../step``: skip the simulator clock ahead, then step once."""

    model_config = ConfigDict(extra="forbid")
    advance_s: float = Field(default=0.0, ge=0.0, le=86_400.0)


# ------------------------------------------------------------------------------------- client
class DataPlaneControl:
    """Client of the control API, for tests, the demo and chaos scenarios."""

    def __init__(self, endpoint: str, *, timeout: float = 10.0) -> None:
        self._base = endpoint.rstrip("/") + CONTROL_PREFIX
        self._timeout = timeout

    def _call(self, action: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self._base + action,
            data=data,
            method="GET" if body is None else "POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self._timeout) as resp:
                result: dict[str, Any] = json.loads(resp.read())
                return result
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise ControlRequestError(
                f"data plane {action}: HTTP {exc.code}: {detail}", status=exc.code
            ) from exc
        except (OSError, urllib.error.URLError) as exc:
            raise ControlRequestError(f"data plane {action}: {exc}") from exc

    def exec_session(self, session_id: str) -> dict[str, Any]:
        """What an ``ExecuteCommand`` session was opened for (cluster, task, container, runtime
        id, command; never its token); :class:`ControlRequestError` (404) when unknown."""
        return self._call(f"exec/{session_id}")

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Change settings (fields of :class:`DataPlaneConfig`); returns the status."""
        return self._call("configure", settings)

    def fail_service(self, cluster: str, service: str, *, mode: FaultMode | None) -> dict[str, Any]:
        """Make new tasks of one service fail with ``mode``; ``None`` clears the fault."""
        return self._call("fault/service", {"cluster": cluster, "service": service, "mode": mode})

    def fail_secret(
        self, value_from: str, *, mode: FaultMode | None = "secret-injection"
    ) -> dict[str, Any]:
        """Fail new tasks whose task definition references a ``valueFrom`` with this prefix."""
        return self._call("fault/secret", {"value_from": value_from, "mode": mode})

    def step(self, *, advance_s: float = 0.0) -> dict[str, Any]:
        """Skip the simulator clock ``advance_s`` ahead and run one step now."""
        return self._call("step", {"advance_s": advance_s})

    def reset(self) -> dict[str, Any]:
        """Clear faults and restore the start-up configuration (moto's reset does this too)."""
        return self._call("reset", {})

    def status(self) -> dict[str, Any]:
        """Configuration, faults, counters and per-service deployment summaries."""
        return self._call("status")
