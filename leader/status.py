"""What ``oabctl leader`` shows: the stored lease, read once, for display.

Ages are computed from the stored wall-clock stamps against this host's wall clock, so they are
approximate (clock skew between hosts shows up here). They are for humans only; the election never
compares wall clocks.

A lease item that does not decode is described, never raised: ``readable`` is False, ``problem``
names the attribute at fault (never its value), ``holder`` is ``None`` (nobody holds an unreadable
lease; standbys replace it once it stays unchanged for one lease duration) and ``epoch`` is the
stored epoch when that attribute alone still decodes. A stored duration above the maximum is shown
as clamped, with a ``problem`` saying so.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from oab.leader.clock import Clock, SystemClock
from oab.leader.lease import DynamoLeaseStore
from oab.leader.record import MAX_LEASE_DURATION_MS, UnreadableLease

__all__ = ["describe", "render_text"]


def _iso(ts: float) -> str | None:
    if not ts:
        return None
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds")


def describe(client: Any, table: str, name: str, *, clock: Clock | None = None) -> dict[str, Any]:
    """The lease ``name`` in ``table`` as a JSON-ready dict.

    Keys: ``lease``, ``holder`` (``None`` when released, never acquired or unreadable), ``epoch``,
    ``revision``, ``lease_duration_s`` (what standbys wait: the stored duration, clamped),
    ``renewed_at`` / ``acquired_at`` (ISO-8601, UTC), ``renewed_age_s`` (approximate, wall
    clock), ``transitions``, ``readable`` (False when the item does not decode) and ``problem``
    (``None``, or what is wrong with the stored item).
    """
    now = (clock or SystemClock()).time()
    record = DynamoLeaseStore(client, table, name).get()
    if record is None:
        return {
            "lease": name,
            "holder": None,
            "epoch": 0,
            "revision": None,
            "lease_duration_s": None,
            "renewed_at": None,
            "acquired_at": None,
            "renewed_age_s": None,
            "transitions": 0,
            "readable": True,
            "problem": None,
        }
    if isinstance(record, UnreadableLease):
        return {
            "lease": name,
            "holder": None,
            "epoch": None if record.epoch is None else int(record.epoch),
            "revision": None,
            "lease_duration_s": None,
            "renewed_at": None,
            "acquired_at": None,
            "renewed_age_s": None,
            "transitions": record.transitions,
            "readable": False,
            "problem": f"unreadable lease item: {record.problem}",
        }
    problem = None
    if record.duration_clamped:
        problem = (
            f"stored lease duration {record.lease_duration_ms} ms exceeds the maximum "
            f"{MAX_LEASE_DURATION_MS} ms; standbys wait {MAX_LEASE_DURATION_MS} ms"
        )
    return {
        "lease": name,
        "holder": record.holder,
        "epoch": int(record.epoch),
        "revision": record.revision,
        "lease_duration_s": record.lease_duration,
        "renewed_at": _iso(record.renewed_at),
        "acquired_at": _iso(record.acquired_at),
        "renewed_age_s": round(max(0.0, now - record.renewed_at), 3) if record.renewed_at else None,
        "transitions": record.transitions,
        "readable": True,
        "problem": problem,
    }


def render_text(info: dict[str, Any]) -> str:
    """A short human-readable rendering of :func:`describe`'s result."""
    if info.get("readable") is False:
        epoch = "unknown" if info.get("epoch") is None else info["epoch"]
        return "\n".join(
            [
                f"lease:          {info['lease']}",
                "holder:         (none: the stored item is unreadable)",
                f"epoch:          {epoch}",
                f"problem:        {info['problem']}",
                "standbys replace the item once it stays unchanged for one lease duration",
            ]
        )
    if info.get("revision") is None:
        return f"lease {info['lease']}: never acquired"
    holder = info["holder"] or "(released)"
    lines = [
        f"lease:          {info['lease']}",
        f"holder:         {holder}",
        f"epoch:          {info['epoch']}",
        f"renewed:        {info['renewed_at']} ({info['renewed_age_s']} s ago)",
        f"lease duration: {info['lease_duration_s']} s",
        f"acquired:       {info['acquired_at']}",
        f"transitions:    {info['transitions']}",
    ]
    if info.get("problem"):
        lines.append(f"problem:        {info['problem']}")
    return "\n".join(lines)
