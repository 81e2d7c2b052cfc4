"""Names and layouts: every string the control plane writes for another component to read.

Design
------
kopf keeps its conventions in one module (``_cogs/configs/conventions.py``); so does this
controller. Each name here is read back by another process, by another version of the
controller, or by an operator, so each is defined once:

- **API**: the group and version, the fleet label, the restart annotation, the cleanup finalizer,
  the kubectl-style resource names.
- **ECS**: the name of an agent's service and task-definition family, and the tags on both.
- **S3** (the control-plane bucket): manifests, fleets, config artifacts, snapshot records and
  requests, the cluster profile; :data:`CONTROL_PLANE_PREFIXES` is the list ``bootstrapFrom``
  may not point into.
- **DynamoDB**: table names (one prefix), index and TTL attribute names, and the keys of the
  controller's own items (status, change records). The lease's and the work queue's keys and
  the queue's ``ready-index`` belong to :mod:`oab.leader.record` and :mod:`oab.queue.store`,
  which never import the controller.
- **Secrets**: the SSM and Secrets Manager paths an agent owns (what its execution role grants).

The task's own names (containers, shared volume, environment) are the task contract, next to the
entry script that reads them: :mod:`oab.controller.base.taskcontract`.

Invariants
----------
- A name changes only together with a migration: the content-hash tag, written by the renderer
  and compared by the reconciler, is what keeps a crash from registering a task definition twice;
  a moved S3 prefix would let ``bootstrapFrom`` point into the control plane.
- Agent keys are ``{namespace}/{name}`` of DNS labels; functions that parse a key or an object
  key answer ``None`` (or raise ``ValueError``, where documented) for anything else.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
import time
import zlib
from dataclasses import dataclass
from typing import Final

__all__ = [
    "AGENT_LOG_GROUP",
    "API_GROUP",
    "API_VERSION",
    "ARTIFACT_PREFIX",
    "CHANGE_SHARDS",
    "CLEANUP_FINALIZER",
    "CLUSTER_PROFILE_KEY",
    "CONFIG_PREFIX",
    "CONTENT_HASH_TAG",
    "CONTROL_PLANE_PREFIXES",
    "FLEET_LABEL",
    "FLEET_PREFIX",
    "GENERATION_TAG",
    "LOCAL_TAG",
    "MANAGED_BY",
    "MANAGED_BY_TAG",
    "MANIFEST_PREFIX",
    "NAMESPACE_TAG",
    "NAME_TAG",
    "RESTART_ANNOTATION",
    "RUN_INDEX",
    "SERVICE_RESOURCE",
    "SNAPSHOT_NUDGE_PREFIX",
    "SNAPSHOT_RECORD_PREFIX",
    "SNAPSHOT_REQUEST_PREFIX",
    "STATUS_SORT_KEY",
    "TTL_ATTRIBUTE",
    "TableNames",
    "agent_key_of",
    "agent_of_status_partition",
    "agent_parameter_prefix",
    "agent_secret_prefix",
    "artifact_key",
    "artifact_prefix",
    "change_partition_key",
    "change_shard_of",
    "change_sort_key",
    "ecs_name",
    "is_agent_key",
    "is_object_key",
    "kind_prefix",
    "manifest_key",
    "object_key",
    "resource_name",
    "snapshot_record_key",
    "snapshot_record_prefix",
    "snapshot_records_after",
    "snapshot_request_key",
    "split_agent_key",
    "status_partition_key",
]

# ------------------------------------------------------------------------------------------ API

API_GROUP: Final = "oab.dev"
#: ``apiVersion`` of every manifest (the API models pin it as a literal).
API_VERSION: Final = "oab.dev/v1"
#: Label on every child of a fleet; its value is the fleet's name.
FLEET_LABEL: Final = "oab.dev/fleet"
#: Annotation written by ``oabctl restart``: a new value forces a new deployment.
RESTART_ANNOTATION: Final = "oab.dev/restartedAt"
#: Finalizer on a tombstone until the controller has cleaned the agent's ECS resources up.
CLEANUP_FINALIZER: Final = "oab.dev/ecs-cleanup"
#: kubectl-style name of an agent resource (``oabctl`` prints it).
SERVICE_RESOURCE: Final = "oabservice.oab.dev"


def resource_name(kind: str) -> str:
    """kubectl-style resource name of a kind: ``OABFleet`` -> ``oabfleet.oab.dev``."""
    return f"{kind.lower()}.{API_GROUP}"


# ------------------------------------------------------------------------------------------ ECS

#: Tag keys written on task definitions and services.
NAMESPACE_TAG: Final = "oab.dev/namespace"
NAME_TAG: Final = "oab.dev/name"
GENERATION_TAG: Final = "oab.dev/generation"
#: The content hash of a task definition request: the renderer writes it, the reconciler reuses
#: an ACTIVE revision that carries the same value instead of registering another one.
CONTENT_HASH_TAG: Final = "oab.dev/content-hash"
MANAGED_BY_TAG: Final = "oab.dev/managed-by"
MANAGED_BY: Final = "oab-controller"
#: Tag key (value = cluster name) on the networking ``oabctl init`` creates in the emulator.
LOCAL_TAG: Final = "oab:local"
#: CloudWatch log group of every agent container unless settings name another.
AGENT_LOG_GROUP: Final = "/oab/agents"


def ecs_name(namespace: str, name: str) -> str:
    """ECS service name and task definition family of an agent: ``oab-{namespace}-{name}``.

    Ambiguous by construction (labels contain ``-``): see
    :func:`oab.controller.api.service.ecs_name_rivals`.
    """
    return f"oab-{namespace}-{name}"


# ------------------------------------------------------------------------------------------- S3

MANIFEST_PREFIX: Final = "manifests/"
FLEET_PREFIX: Final = "fleets/"
ARTIFACT_PREFIX: Final = "artifacts/"
SNAPSHOT_RECORD_PREFIX: Final = "snapshots/"
SNAPSHOT_REQUEST_PREFIX: Final = "snapshot-requests/"
CONFIG_PREFIX: Final = "config/"
#: The cluster profile ``oabctl init`` writes (cluster, region, account, default networking).
CLUSTER_PROFILE_KEY: Final = CONFIG_PREFIX + "cluster.json"

#: Key prefixes of the control-plane bucket the controller, oabctl or the agents' sidecars write or
#: read: manifests and fleets (store), per-generation config artifacts (render), snapshot records
#: and requests (agent sidecar), the cluster profile (``oabctl init``). ``bootstrapFrom`` may not
#: point under any of them.
CONTROL_PLANE_PREFIXES: Final[tuple[str, ...]] = (
    MANIFEST_PREFIX,
    FLEET_PREFIX,
    ARTIFACT_PREFIX,
    SNAPSHOT_RECORD_PREFIX,
    SNAPSHOT_REQUEST_PREFIX,
    CONFIG_PREFIX,
)

_KIND_PREFIX: Final = {"OABService": MANIFEST_PREFIX, "OABFleet": FLEET_PREFIX}
_LABEL: Final = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
#: The object keys of manifests: an agent's or a fleet's, namespace and name DNS labels.
_OBJECT_KEY: Final = re.compile(rf"(manifests|fleets)/{_LABEL}/{_LABEL}\.yaml")


def kind_prefix(kind: str) -> str:
    """Where manifests of ``kind`` live: ``manifests/`` (``OABService``) or ``fleets/``
    (``OABFleet``); ``ValueError`` for another kind."""
    try:
        return _KIND_PREFIX[kind]
    except KeyError:
        raise ValueError(f"unknown kind {kind!r}; expected one of {sorted(_KIND_PREFIX)}") from None


def object_key(kind: str, namespace: str, name: str) -> str:
    """The bucket key of a manifest: ``manifests/{ns}/{name}.yaml`` (an ``OABService``) or
    ``fleets/{ns}/{name}.yaml`` (an ``OABFleet``); ``ValueError`` for another kind."""
    return f"{kind_prefix(kind)}{namespace}/{name}.yaml"


def manifest_key(agent: str) -> str:
    """The bucket key of agent ``{namespace}/{name}``'s manifest."""
    return f"{MANIFEST_PREFIX}{agent}.yaml"


def is_object_key(key: str) -> bool:
    """Whether ``key`` is an agent's or a fleet's manifest key (namespace and name DNS labels)."""
    return _OBJECT_KEY.fullmatch(key) is not None


def agent_key_of(object_key: str) -> str | None:
    """``manifests/{ns}/{name}.yaml`` -> ``{ns}/{name}``; None for fleets and any key that is
    not an agent's manifest (namespace and name must be DNS labels)."""
    match = _OBJECT_KEY.fullmatch(object_key)
    if match is None or match.group(1) != "manifests":
        return None
    return object_key.removeprefix(MANIFEST_PREFIX).removesuffix(".yaml")


def is_agent_key(key: str) -> bool:
    """Whether ``key`` is ``{namespace}/{name}`` of DNS labels (the only keys of a work unit)."""
    return agent_key_of(manifest_key(key)) is not None


def split_agent_key(agent: str) -> tuple[str, str]:
    """``{namespace}/{name}`` -> ``(namespace, name)``; ``ValueError`` unless both are non-empty
    and the name holds no ``/``."""
    namespace, sep, name = agent.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise ValueError(f"agent key must be 'namespace/name', got {agent!r}")
    return namespace, name


def artifact_prefix(namespace: str, name: str) -> str:
    """Prefix of every config artifact of one agent (deleted with the agent)."""
    return f"{ARTIFACT_PREFIX}{namespace}/{name}/"


def artifact_key(namespace: str, name: str, *, generation: int, digest: str) -> str:
    """``artifacts/{ns}/{name}/{generation}/{digest}/config.toml``: the write-once config of one
    generation *and* one rendering of it (``digest``: the start of the config's sha256)."""
    return f"{artifact_prefix(namespace, name)}{generation}/{digest}/config.toml"


def snapshot_request_key(agent: str) -> str:
    """Key of agent ``{namespace}/{name}``'s pending on-demand snapshot request."""
    namespace, name = split_agent_key(agent)
    return f"{SNAPSHOT_REQUEST_PREFIX}{namespace}/{name}"


def snapshot_record_prefix(agent: str) -> str:
    """Prefix of agent ``{namespace}/{name}``'s snapshot records."""
    namespace, name = split_agent_key(agent)
    return f"{SNAPSHOT_RECORD_PREFIX}{namespace}/{name}/"


def _stamp(wall: float) -> str:
    whole = int(wall)
    millis = int((wall - whole) * 1000)
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(whole)) + f".{millis:03d}Z"


def snapshot_record_key(agent: str, *, taken_at: float, snapshot_id: str) -> str:
    """``snapshots/{ns}/{name}/{YYYYmmddTHHMMSS.fffZ}-{id}.json``: sorted by time (S3 lists keys
    in order, so ``StartAfter`` finds the newer ones), findable by id."""
    return f"{snapshot_record_prefix(agent)}{_stamp(taken_at)}-{snapshot_id}.json"


def snapshot_records_after(agent: str, wall: float) -> str:
    """The ``StartAfter`` key that lists agent's records taken from ``wall`` on."""
    return f"{snapshot_record_prefix(agent)}{_stamp(wall)}"


#: ``version_id`` of a change record that only nudges the reconciler to ingest snapshot records
#: (``oabctl snapshot``); followed by the snapshot id.
SNAPSHOT_NUDGE_PREFIX: Final = "snapshot:"

# ------------------------------------------------------------------------------------- DynamoDB

#: TTL attribute of every table (epoch seconds).
TTL_ATTRIBUTE: Final = "expires_at"
#: Index of the run log by run id.
RUN_INDEX: Final = "run-index"


@dataclass(frozen=True, kw_only=True)
class TableNames:
    """Names of the four control-plane tables (default prefix ``oab``)."""

    lease: str = "oab-lease"
    queue: str = "oab-queue"
    state: str = "oab-state"
    runlog: str = "oab-runlog"

    @classmethod
    def with_prefix(cls, prefix: str) -> TableNames:
        """Names ``{prefix}-lease``, ``{prefix}-queue``, ``{prefix}-state``, ``{prefix}-runlog``."""
        return cls(
            lease=f"{prefix}-lease",
            queue=f"{prefix}-queue",
            state=f"{prefix}-state",
            runlog=f"{prefix}-runlog",
        )

    def all(self) -> tuple[str, ...]:
        """Every table name, in creation order."""
        return (self.lease, self.queue, self.state, self.runlog)


#: Sort key of an agent's status item in the state table.
STATUS_SORT_KEY: Final = "status"
_STATUS_PK_PREFIX: Final = "agent#"


def status_partition_key(agent: str) -> str:
    """Partition key of agent ``{namespace}/{name}``'s status item: ``agent#{ns}/{name}``."""
    return f"{_STATUS_PK_PREFIX}{agent}"


def agent_of_status_partition(pk: str) -> str:
    """The agent key a status item's partition key names (the inverse of
    :func:`status_partition_key`)."""
    return pk.removeprefix(_STATUS_PK_PREFIX)


#: Partitions change records are spread over (readers query every one).
CHANGE_SHARDS: Final = 4


def change_shard_of(object_key: str, *, shards: int = CHANGE_SHARDS) -> int:
    """The change-record partition of an object key: crc32, stable in every process (never
    ``hash()``). The work queue's ready shards use sha256 (``oab.queue.row.ready_shard_of``);
    each function places its own table's rows, so neither may change without moving them."""
    return zlib.crc32(object_key.encode()) % shards


def change_partition_key(shard: int) -> str:
    """Partition key of a change-record shard: ``changes#{shard}``."""
    return f"changes#{shard}"


def change_sort_key(*, epoch_ms: int, object_key: str, generation: int) -> str:
    """Sort key of a change record, ``{epoch_ms:013d}#{key}#{generation}``: a range query per
    shard returns changes in write-time order."""
    return f"{epoch_ms:013d}#{object_key}#{generation}"


# -------------------------------------------------------------------------------------- secrets


def agent_parameter_prefix(namespace: str, name: str) -> str:
    """SSM parameters an agent owns: ``/oab/{namespace}/{name}/...``."""
    return f"/oab/{namespace}/{name}/"


def agent_secret_prefix(namespace: str, name: str) -> str:
    """Secrets Manager secrets an agent owns: ``oab/{namespace}/{name}/...``."""
    return f"oab/{namespace}/{name}/"
