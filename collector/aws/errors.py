"""One reading of AWS failures: what kind a botocore exception is, with its error code and message.

botocore raises a ``ClientError`` for an answer (the code in ``response["Error"]["Code"]``; SQS's JSON
protocol also keeps the older query-protocol code in ``"QueryErrorCode"``, so both are read) and a
``BotoCoreError`` for a failure before any answer (no credentials, endpoint unreachable). Everything in
``aws/`` and the ``hopscope dlq`` command asks :func:`classify` instead of reading codes itself.

botocore is not imported here: an exception can only be botocore's once botocore is loaded.
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class AwsErrorKind(enum.Enum):
    MISSING_QUEUE = "missing queue"
    THROTTLED = "throttled"
    ACCESS_DENIED = "access denied"
    PURGE_IN_PROGRESS = "purge in progress"
    UNSUPPORTED_OPERATION = "unsupported operation"  # the endpoint lacks the action (moto, LocalStack)
    MESSAGE_REFUSED = "message refused"  # the message itself (too large, bad characters), not the queue
    CREDENTIALS_MISSING = "credentials missing"
    ENDPOINT_UNREACHABLE = "endpoint unreachable"
    OTHER = "other"


_MISSING_QUEUE_CODES = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})
_PURGE_IN_PROGRESS = "PurgeQueueInProgress"  # also as AWS.SimpleQueueService.PurgeQueueInProgress
_THROTTLED_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "SlowDown",
        "AWS.SimpleQueueService.RequestThrottled",
    }
)
_ACCESS_DENIED_CODES = frozenset(
    {"AccessDenied", "AccessDeniedException", "AuthorizationError", "UnauthorizedOperation"}
)
# Codes of an endpoint that does not know the operation at all.
_UNSUPPORTED_CODES = frozenset(
    {
        "InvalidAction",
        "UnknownOperation",
        "UnknownOperationException",
        "NotImplemented",
        "NotImplementedError",
        "UnsupportedOperation",
        "AWS.SimpleQueueService.UnsupportedOperation",
    }
)
# Errors about the messages themselves (a body too large for the target, bad characters).
_MESSAGE_REFUSED_CODES = frozenset(
    {
        "InvalidParameterValue",
        "InvalidMessageContents",
        "InvalidAttributeName",
        "InvalidAttributeValue",
        "MessageTooLong",
        "BatchRequestTooLong",
        "AWS.SimpleQueueService.BatchRequestTooLong",
        "AWS.SimpleQueueService.InvalidMessageContents",
    }
)


@dataclass(frozen=True)
class AwsError:
    """What :func:`classify` read from an exception."""

    kind: AwsErrorKind
    code: str  # the AWS error code of an answer, else the exception's class name
    message: str  # the answer's message ("" when it has none), else the exception's text
    answered: bool  # the endpoint answered (a ClientError): ``code`` and ``message`` are its answer's
    status: int | None = None  # the answer's HTTP status
    endpoint_url: str | None = None  # the endpoint that could not be reached

    def describe(self) -> str:
        """One line for a person: what AWS answered, or what went wrong before any answer."""
        if self.kind is AwsErrorKind.CREDENTIALS_MISSING:
            return "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
        if self.kind is AwsErrorKind.ENDPOINT_UNREACHABLE:
            return f"cannot reach {self.endpoint_url or 'the SQS endpoint'}"
        if not self.answered:
            return self.message
        return f"{self.code}: {self.message}" if self.message else self.code


def classify(error: BaseException) -> AwsError:
    """The kind, code and message of any exception a boto3 call raised (OTHER for anything unknown)."""
    response = getattr(error, "response", None)
    if isinstance(response, Mapping):
        return _answered(error, response)
    kind, endpoint_url = _unanswered_kind(error)
    return AwsError(kind, type(error).__name__, str(error), answered=False, endpoint_url=endpoint_url)


def _answered(error: BaseException, response: Mapping[str, Any]) -> AwsError:
    details = response.get("Error") or {}
    code = str(details.get("Code") or type(error).__name__)
    codes = {code, *([str(details["QueryErrorCode"])] if details.get("QueryErrorCode") else [])}
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    status = status if isinstance(status, int) else None
    return AwsError(_answer_kind(codes, code, status), code, str(details.get("Message") or ""), True, status)


def _answer_kind(codes: set[str], code: str, status: int | None) -> AwsErrorKind:
    # moto's server answers an operation it does not implement with a bare HTTP 500 page (no AWS error
    # code, so botocore's code is the status itself); LocalStack with 501; others with an unknown-action code.
    if codes & _UNSUPPORTED_CODES or status == 501 or (status == 500 and code == "500"):
        return AwsErrorKind.UNSUPPORTED_OPERATION
    if codes & _MISSING_QUEUE_CODES:
        return AwsErrorKind.MISSING_QUEUE
    if _PURGE_IN_PROGRESS in code:
        return AwsErrorKind.PURGE_IN_PROGRESS
    if codes & _THROTTLED_CODES:
        return AwsErrorKind.THROTTLED
    if codes & _ACCESS_DENIED_CODES:
        return AwsErrorKind.ACCESS_DENIED
    if codes & _MESSAGE_REFUSED_CODES:
        return AwsErrorKind.MESSAGE_REFUSED
    return AwsErrorKind.OTHER


def _unanswered_kind(error: BaseException) -> tuple[AwsErrorKind, str | None]:
    exceptions: Any = sys.modules.get("botocore.exceptions")
    if exceptions is None:  # botocore never loaded: not one of its exceptions
        return AwsErrorKind.OTHER, None
    if isinstance(error, exceptions.NoCredentialsError):
        return AwsErrorKind.CREDENTIALS_MISSING, None
    if isinstance(error, exceptions.EndpointConnectionError):
        return AwsErrorKind.ENDPOINT_UNREACHABLE, getattr(error, "kwargs", {}).get("endpoint_url")
    return AwsErrorKind.OTHER, None
