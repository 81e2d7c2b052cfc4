"""One error hierarchy for the leader package.

Every error says whether retrying can help (``retryable``) and, when it came from AWS, keeps the
error code and is raised ``from`` the original exception.

- :class:`LeaseUnavailable` (retryable): the store could not be reached, or a write's outcome is
  unknown and could not be read back. Never treated as success.
- :class:`LeaseLost`: a conditional lease write failed; carries what won: a record, an
  unreadable item, or ``None`` when the item is gone.
- :class:`LeaseItemInvalid`: a stored lease item does not decode (names the attribute). The store
  never raises it to the elector: it turns such an item into an ``UnreadableLease``.
- :class:`FencedOut`: a write made on a leader's authority was rejected because the fence (holder
  and epoch) no longer matches the lease.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from oab.leader.record import Epoch, StoredLease


class LeaderError(Exception):
    """Base of every error raised by ``oab.leader``."""

    retryable: bool = False

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class LeaseUnavailable(LeaderError):
    """The lease store did not answer, or a write's outcome is unknown. Retry later."""

    retryable = True


class LeaseLost(LeaderError):
    """A conditional write lost: someone else's write is current. ``current`` is what won."""

    def __init__(self, message: str, *, current: StoredLease | None, code: str | None = None):
        super().__init__(message, code=code)
        self.current = current


class LeaseItemInvalid(LeaderError):
    """A stored lease item does not decode: ``field`` is the attribute at fault."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class FencedOut(LeaderError):
    """A fenced write was rejected: ``holder`` no longer holds ``epoch`` of lease ``lease``."""

    def __init__(self, *, lease: str, holder: str, epoch: Epoch) -> None:
        super().__init__(
            f"fenced out: {holder} no longer holds epoch {epoch} of lease {lease}",
            code="ConditionalCheckFailed",
        )
        self.lease = lease
        self.holder = holder
        self.epoch = epoch
