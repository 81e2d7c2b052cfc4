"""The controller's error hierarchy: what is retryable, and the AWS error code and cause kept.

Every named error of the controller (the reconcile path, the CLI's input checks, the local
tooling) derives from :class:`OabError` and says whether retrying can help (``retryable``):
:class:`TerminalError` (retrying cannot help; :class:`InvalidInput` for refused input, also a
``ValueError``), :class:`RetryableError`, :class:`AwsError`, :class:`AgentError` (the in-task
program), and the adapters' own bases (``StoreError``, ``ExecError``, ``UnreadableItem``).
AWS errors keep their error code, HTTP status and request id and are raised ``from`` the
botocore exception. The worker's outcome policy
(:func:`oab.controller.core.outcome.decide`) is the only place that turns these into queue
actions.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import (
    ClientError,
    ConnectionError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    ReadTimeoutError,
)

#: AWS error codes that mean "slow down" (retry later, with backoff).
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "SlowDown",
        "RequestThrottled",
        "LimitExceededException",
    }
)

#: AWS error codes that are transient server-side failures.
TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "ServerException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
        "TransactionInProgressException",
    }
)


#: S3's answers to a conditional write (``If-Match``/``If-None-Match``) whose condition did not
#: hold: 412 ``PreconditionFailed``, and 409 ``ConditionalRequestConflict`` while a concurrent
#: conditional write to the same key is in flight. The one list: :func:`precondition_failed`.
CONDITION_FAILED_CODES = frozenset(
    {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}
)


class OabError(Exception):
    """Base of every controller error."""

    retryable: bool = False
    reason: str = "Error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class TerminalError(OabError):
    """Retrying cannot help until the input changes (bad manifest, IAM denied, ...): park."""

    retryable = False
    reason = "TerminalError"


class RetryableError(OabError):
    """A transient failure: retry with backoff."""

    retryable = True
    reason = "RetryableError"


class InvalidInput(TerminalError, ValueError):
    """Input refused as it is (a manifest, a document, an OpenAB config file, an expression): the
    message names the source, the field path and the fix. Terminal: the same input fails the
    same way. Also a ``ValueError``, which pydantic validators and older callers catch."""

    reason = "InvalidInput"


class ClaimInDoubt(OabError):
    """This worker's claim may have expired (a heartbeat failed or the local deadline passed):
    stop, make no side effect, write nothing more.

    Raised before an ECS or S3 call on the worker's own doubt; the queue's
    :class:`~oab.queue.errors.ClaimLost` is the confirmed case (the row's claim is someone
    else's). The outcome policy drops the unit for either; the stored reason is ``ClaimLost``.
    """

    retryable = False
    reason = "ClaimLost"


class AgentError(OabError):
    """Base of the errors of the in-task program (``oab-agent``) and the snapshot protocol."""

    retryable = False
    reason = "AgentError"


class PreconditionFailed(OabError):
    """A conditional write's condition did not hold: someone else wrote ``key`` first.

    S3 does not return the winning object, so the caller reads it (the desired-state store
    re-reads and recomputes; ``oabctl snapshot`` reports the pending request it finds). Retryable:
    a compare-and-swap round after a fresh read may succeed. ``code`` is S3's error code.
    """

    retryable = True
    reason = "PreconditionFailed"

    def __init__(self, key: str, *, code: str = "") -> None:
        super().__init__(key)
        self.key = key
        self.code = code


def precondition_failed(exc: Exception, *, key: str) -> PreconditionFailed | None:
    """The :class:`PreconditionFailed` that ``exc`` means for a conditional write of ``key``,
    or None when it is another failure. The one place S3's condition codes are read."""
    if not isinstance(exc, ClientError):
        return None
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return PreconditionFailed(key, code=code) if code in CONDITION_FAILED_CODES else None


class AwsError(OabError):
    """An AWS API error, with its code, HTTP status and request id."""

    def __init__(
        self,
        message: str,
        *,
        operation: str,
        code: str,
        status: int | None,
        request_id: str,
        retryable: bool,
        throttled: bool,
    ) -> None:
        super().__init__(message, reason="Throttled" if throttled else code or "AwsError")
        self.operation = operation
        self.code = code
        self.status = status
        self.request_id = request_id
        self.retryable = retryable
        self.throttled = throttled


def classify_aws(exc: Exception, *, operation: str) -> AwsError:
    """Turn a botocore exception into an :class:`AwsError` saying whether a retry can help."""
    if isinstance(exc, ClientError):
        resp: dict[str, Any] = exc.response
        code = str(resp.get("Error", {}).get("Code", ""))
        status = resp.get("ResponseMetadata", {}).get("HTTPStatusCode")
        request_id = str(resp.get("ResponseMetadata", {}).get("RequestId", ""))
        throttled = code in THROTTLING_CODES
        retryable = throttled or code in TRANSIENT_CODES or (status is not None and status >= 500)
        message = str(resp.get("Error", {}).get("Message", "")) or str(exc)
        return AwsError(
            f"{operation}: {code}: {message}",
            operation=operation,
            code=code,
            status=status,
            request_id=request_id,
            retryable=retryable,
            throttled=throttled,
        )
    transient = (
        ConnectionError,
        ConnectTimeoutError,
        EndpointConnectionError,
        ReadTimeoutError,
        HTTPClientError,
    )
    # Connection failures and timeouts may succeed on retry; anything else unknown may not.
    return AwsError(
        f"{operation}: {type(exc).__name__}: {exc}",
        operation=operation,
        code=type(exc).__name__,
        status=None,
        request_id="",
        retryable=isinstance(exc, transient),
        throttled=False,
    )
