"""The one error hierarchy of ``oab.queue``.

Every error says whether retrying the same call can help (``retryable``) and keeps the AWS error
code when one caused it (``code``; the boto error itself is chained with ``raise ... from``).
Conditional-write failures become named domain errors that carry what won: :class:`ClaimLost`
names the current owner and state of the row, :class:`ExtraConditionFailed` names which of the
caller's extra transaction items failed and why.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from oab.queue.row import UnreadableRow


class QueueError(Exception):
    """Base class of every error raised by ``oab.queue``."""

    retryable: bool = False

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class InvalidQueueConfig(QueueError, ValueError):
    """A :class:`~oab.queue.config.QueueConfig` field is out of range."""


class QueueUnavailable(QueueError):
    """DynamoDB failed the request for a reason other than a condition, and the same request
    may succeed later (throttling, 5xx, timeouts, a conflicting transaction)."""

    retryable = True


class QueueRejected(QueueError):
    """DynamoDB refused the request as invalid (``ValidationException``: an item over 400 KB, a
    bad attribute value; or ``AccessDenied``): the same request can never succeed, so it must
    not be retried as it is."""

    retryable = False


class CorruptRow(QueueError):
    """A stored work-unit row cannot be decoded (wrong types, missing or out-of-range
    attributes); ``row`` says which and what is wrong, and carries what is needed to replace it
    conditionally. Never retryable as is: the queue quarantines the row (rewrites it as a parked
    row with the reason) and goes on with the others."""

    def __init__(self, row: UnreadableRow) -> None:
        super().__init__(f"work unit {row.key} is unreadable: {row.problem}", code="CorruptRow")
        self.row = row
        self.key = row.key


class Contention(QueueError):
    """The row kept changing under us for ``max_conflict_retries`` compare-and-swap rounds."""

    retryable = True


class KeyNotFound(QueueError):
    """No work unit exists for the key."""

    def __init__(self, key: str) -> None:
        super().__init__(f"no work unit for {key}")
        self.key = key


class NotRetryable(QueueError):
    """An operator retry was asked for a row that is in flight or done."""

    def __init__(self, key: str, state: str) -> None:
        super().__init__(f"{key} is {state}: only parked or waiting rows can be retried")
        self.key = key
        self.state = state


class ClaimLost(QueueError):
    """The caller's claim is no longer the row's claim: it expired and was taken over (or the row
    was completed by the taker). The caller's attempt is rejected; ``current_*`` say who won."""

    def __init__(
        self,
        key: str,
        *,
        claim_token: str,
        current_state: str | None,
        current_owner: str | None,
        current_claim_token: str | None,
    ) -> None:
        super().__init__(
            f"claim {claim_token} on {key} lost: row is {current_state}"
            + (f", owned by {current_owner}" if current_owner else "")
        )
        self.key = key
        self.claim_token = claim_token
        self.current_state = current_state
        self.current_owner = current_owner
        self.current_claim_token = current_claim_token


class ExtraConditionFailed(QueueError):
    """One of the caller's extra transaction items (e.g. the leader's fence) failed.

    ``index`` is the position in the caller's ``extra_items`` (0 for ``extra_condition``),
    ``reason`` the DynamoDB cancellation code (``ConditionalCheckFailed``, ...). Nothing was
    written: the queue row and every other item are unchanged.
    """

    def __init__(self, index: int, reason: str, *, message: str = "") -> None:
        super().__init__(
            f"extra transaction item {index} failed: {reason}"
            + (f" ({message})" if message else ""),
            code=reason,
        )
        self.index = index
        self.reason = reason
