"""The cluster profile: defaults every replica and operator share, and the renderer's context.

Design
------
``oabctl init`` stores the profile at ``config/cluster.json`` in the control-plane bucket
(:data:`~oab.controller.base.names.CLUSTER_PROFILE_KEY`; read and written by
:mod:`oab.controller.adapters.clusterprofile`): cluster, region, account, table prefix and the
default networking for agents. The controller and ``oabctl render``/``diff`` fill with it what a
manifest and the settings leave out (:func:`render_context`), so every replica and every operator
sees the same defaults without sharing a settings file.

Invariants: settings win over the profile; the profile holds no secret.
Time model: ``updatedAt`` is the writer's wall clock, for display only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from oab.controller.core.render import RenderContext
from oab.controller.core.settings import Settings

__all__ = ["ClusterProfile", "render_context"]


@dataclass(frozen=True, kw_only=True)
class ClusterProfile:
    """Defaults shared by every replica and operator, stored at ``config/cluster.json``."""

    cluster: str
    region: str
    account: str
    table_prefix: str
    subnets: tuple[str, ...] = ()
    security_groups: tuple[str, ...] = ()
    updated_at: str = ""

    def to_json(self) -> dict[str, Any]:
        """The stored camelCase form."""
        return {
            "cluster": self.cluster,
            "region": self.region,
            "account": self.account,
            "tablePrefix": self.table_prefix,
            "subnets": list(self.subnets),
            "securityGroups": list(self.security_groups),
            "updatedAt": self.updated_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClusterProfile:
        """Parse the stored form."""
        return cls(
            cluster=str(data["cluster"]),
            region=str(data["region"]),
            account=str(data["account"]),
            table_prefix=str(data["tablePrefix"]),
            subnets=tuple(data.get("subnets", ())),
            security_groups=tuple(data.get("securityGroups", ())),
            updated_at=str(data.get("updatedAt", "")),
        )


def render_context(
    settings: Settings, profile: ClusterProfile | None, *, account: str, account_known: bool = True
) -> RenderContext:
    """The renderer's context: settings first, then the cluster profile ``init`` stored.

    The tenant boundary comes from the settings' ``role_allowlist`` and ``secret_allowlist``.
    ``account_known`` ``False`` says ``account`` is a stand-in (``oabctl`` without the ``account``
    setting): ARNs are rendered with it but their account is not compared by the tenant checks.
    """
    return RenderContext(
        region=settings.region,
        bucket=settings.bucket,
        cluster=settings.cluster,
        agent_image=settings.agent_image,
        execution_role_arn=settings.execution_role,
        task_role_arn=settings.task_role,
        account_id=account,
        log_group=settings.agent_log_group,
        default_subnets=settings.subnets or (profile.subnets if profile else ()),
        default_security_groups=settings.security_groups
        or (profile.security_groups if profile else ()),
        role_allowlist=settings.role_allowlist,
        secret_allowlist=settings.secret_allowlist,
        account_known=account_known,
    )
