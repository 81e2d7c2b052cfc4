"""What ``oabctl leader`` shows: the stored lease, read once, for display.

Ages are computed from the stored wall-clock stamps against this host's wall clock, so they are
approximate (clock skew between hosts shows up here). They are for humans only; the election never
compares wall clocks.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from oab.leader.clock import Clock, SystemClock
from oab.leader.lease import DynamoLeaseStore

__all__ = ["describe", "render_text"]


def _iso(ts: float) -> str | None:
    if not ts:
        return None
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds")


def describe(client: Any, table: str, name: str, *, clock: Clock | None = None) -> dict[str, Any]:
    """The lease ``name`` in ``table`` as a JSON-ready dict.

    Keys: ``lease``, ``holder`` (``None`` when released or never acquired), ``epoch``,
    ``revision``, ``lease_duration_s``, ``renewed_at`` / ``acquired_at`` (ISO-8601, UTC),
    ``renewed_age_s`` (approximate, wall clock), ``transitions``.
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
        }
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
    }


def render_text(info: dict[str, Any]) -> str:
    """A short human-readable rendering of :func:`describe`'s result."""
    if info.get("revision") is None:
        return f"lease {info['lease']}: never acquired"
    holder = info["holder"] or "(released)"
    return "\n".join(
        [
            f"lease:          {info['lease']}",
            f"holder:         {holder}",
            f"epoch:          {info['epoch']}",
            f"renewed:        {info['renewed_at']} ({info['renewed_age_s']} s ago)",
            f"lease duration: {info['lease_duration_s']} s",
            f"acquired:       {info['acquired_at']}",
            f"transitions:    {info['transitions']}",
        ]
    )
