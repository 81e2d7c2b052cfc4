"""Fencing: the token other components attach to every write made on a leader's authority.

A :class:`Fence` names the lease item plus the holder and epoch the writer believes it holds. Put
:meth:`Fence.condition_check` into the same ``TransactWriteItems`` as the write: DynamoDB applies
the write only if, at that instant, the lease's holder is still the writer and its epoch is still
the writer's epoch. A paused or partitioned former leader therefore cannot write after a new leader
acquired (epochs only grow), however late its request arrives. Renewals keep holder and epoch, so
a fence stays valid for the whole term; a release removes the holder, so it fences out even the
releasing leader's stragglers.

When the transaction is cancelled, :func:`fence_failed` tells from ``CancellationReasons`` whether
the fence was the item that failed; :func:`raise_if_fenced` turns that into :class:`FencedOut`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from oab.leader.errors import FencedOut
from oab.leader.record import Epoch, ReplicaId, lease_key

__all__ = ["Fence", "FencedOut", "fence_failed", "raise_if_fenced"]


@dataclass(frozen=True, kw_only=True)
class Fence:
    """Proof of leadership for one term: lease ``lease_name`` in ``table``, holder and epoch."""

    table: str
    lease_name: str
    holder: ReplicaId
    epoch: Epoch

    @property
    def key(self) -> dict[str, dict[str, str]]:
        """The low-level DynamoDB key of the lease item."""
        return lease_key(self.lease_name)

    def condition_check(self) -> dict[str, Any]:
        """A ``TransactWriteItems`` item that fails unless holder and epoch are still ours."""
        return {
            "ConditionCheck": {
                "TableName": self.table,
                "Key": self.key,
                "ConditionExpression": "#holder = :holder AND #epoch = :epoch",
                "ExpressionAttributeNames": {"#holder": "holder", "#epoch": "epoch"},
                "ExpressionAttributeValues": {
                    ":holder": {"S": self.holder},
                    ":epoch": {"N": str(int(self.epoch))},
                },
            }
        }


def fence_failed(exc: BaseException, index: int) -> bool:
    """True when ``exc`` is a cancelled transaction whose item ``index`` (the fence) failed."""
    if not isinstance(exc, ClientError):
        return False
    if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
        return False
    reasons = exc.response.get("CancellationReasons") or []
    if not 0 <= index < len(reasons):
        return False
    return bool(reasons[index].get("Code") == "ConditionalCheckFailed")


def raise_if_fenced(exc: BaseException, index: int, fence: Fence) -> None:
    """Raise :class:`FencedOut` (from ``exc``) if the fence at ``index`` failed; else return."""
    if fence_failed(exc, index):
        raise FencedOut(lease=fence.lease_name, holder=fence.holder, epoch=fence.epoch) from exc
