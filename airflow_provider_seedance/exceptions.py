"""Errors raised by the Seedance provider.

Every error derives from :class:`SeedanceError` (an ``AirflowException``), so a DAG author can catch the
whole family at once. Messages say what went wrong and what to do next; they never contain the API token.
"""

from __future__ import annotations

from typing import Any, ClassVar

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException


class SeedanceError(AirflowException):
    """Base class for every error raised by the Seedance provider."""


class SeedanceConfigurationError(SeedanceError, AirflowFailException):
    """
    The connection or an operator argument is misconfigured (no HTTP call was made).

    Derives from ``AirflowFailException``: retrying the task cannot fix it, so Airflow fails it at once.
    """


class SeedanceInputError(SeedanceConfigurationError, ValueError):
    """
    Raise when the generation input breaks a rule of the model's schema.

    Raised before any HTTP request is made.

    :param message: the full, human-readable explanation (names each field and its rule).
    :param errors: structured ``[{"field", "rule", "value"}]`` entries, for programmatic use.
    """

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


class SeedanceAPIError(SeedanceError):
    """
    Raise when the RunComfy API answered with an error.

    :param message: what went wrong and what to do.
    :param status_code: the HTTP status, kept as ``http_status`` (``None`` when the transport failed before a
        response).
    :param error_code: RunComfy's numeric ``error_code`` when the body carried one.
    :param request_id: the request the call was about, when known.
    :param retry_after: the server's ``Retry-After`` hint in seconds, when it sent one.
    """

    retryable: ClassVar[bool] = False
    """Whether the same call may succeed when repeated later: the error's class decides."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_code: int | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = status_code
        self.error_code = error_code
        self.request_id = request_id
        self.retry_after = retry_after


class SeedanceTransientError(SeedanceAPIError):
    """A failure that may go away on its own: 408/429/5xx, dropped connections, timeouts, garbled bodies."""

    retryable: ClassVar[bool] = True


class SeedanceRateLimitError(SeedanceTransientError):
    """HTTP 429 (or 408): slow down; ``retry_after`` holds the server's hint in seconds, if any."""


class SeedanceServerError(SeedanceTransientError):
    """HTTP 5xx from the API."""


class SeedanceConnectionError(SeedanceTransientError):
    """The HTTP call failed in transport: connect error, dropped connection or timeout."""


class SeedanceMalformedResponseError(SeedanceTransientError):
    """The API answered 2xx with a body that is not the JSON the contract describes."""


class SeedanceInputRejectedError(SeedanceAPIError):
    """HTTP 400/422: the API rejected the request's input."""


class SeedanceInvalidIdentifierError(SeedanceAPIError):
    """400001 InvalidResourceIdentifier: a malformed or unknown ``model_id`` or ``request_id``."""


class SeedanceAuthenticationError(SeedanceAPIError):
    """401 or 400004 UserAccountError: the token is missing, expired or revoked."""


class SeedancePermissionDeniedError(SeedanceAPIError):
    """403 or 403001 PermissionDeniedError: the request belongs to another account."""


class SeedanceNotFoundError(SeedanceAPIError):
    """404 or 404001 ResourceNotFound: unknown, deleted or expired request (or unknown model)."""


class SeedanceInsufficientBalanceError(SeedanceAPIError):
    """402 or 400002 InsufficientResources: the account has no balance left."""


class SeedanceSubmissionStateUnknownError(SeedanceError, AirflowFailException):
    """
    Raise when a submit POST ended ambiguously (timeout, dropped connection, 5xx, 2xx without an id).

    The request may or may not have been created and billed. It is never retried automatically, and as an
    ``AirflowFailException`` it also stops Airflow's task retries from paying for a second video.

    :param message: the explanation.
    :param model_id: the model the submission was for.
    :param request_id: the id the answer named, when it named one (the request may exist under that id).
    """

    def __init__(self, message: str, *, model_id: str | None = None, request_id: str | None = None) -> None:
        super().__init__(message)
        self.model_id = model_id
        self.request_id = request_id


class SeedanceRequestNotStoredError(SeedanceError, AirflowFailException):
    """
    Raise when a try fails after submitting a request whose id could not be stored for the next try.

    A retry could not re-attach to that request and would submit (and pay for) a second one, so, as an
    ``AirflowFailException``, this failure is not retried by Airflow. The message names the request, to
    follow it with ``SeedanceRequestSensor`` or check it in the RunComfy request history.

    :param message: the explanation, with the error that ended the try.
    :param request_id: the request that was submitted.
    """

    def __init__(self, message: str, *, request_id: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


class SeedanceRequestFailedError(SeedanceError):
    """
    Raise when a generation request ended without success (failed, cancelled, timed out, unknown state).

    :param message: the explanation, including the API's error text.
    :param request_id: the request that ended.
    :param status: the terminal status (``failed``, ``cancelled``, ``timeout``, ``error``).
    """

    def __init__(self, message: str, *, request_id: str | None = None, status: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id
        self.status = status


class SeedanceTimeoutError(SeedanceRequestFailedError):
    """The generation did not finish before the operator's ``timeout`` deadline."""


class SeedanceCostLimitError(SeedanceConfigurationError):
    """The estimated price of a generation is above ``max_cost_usd``: nothing was submitted."""


class SeedanceTransferError(SeedanceError):
    """Copying an output file to object storage failed; nothing partial was left behind."""


class SeedanceIntegrityError(SeedanceTransferError):
    """The copied bytes do not match what the source announced (size or checksum)."""


class SeedanceURLRefusedError(SeedanceInputError):
    """
    A download or image check was refused before connecting: the URL carries credentials, or its host is
    (or resolves to) an address downloads never reach (link-local / cloud metadata, or a private network
    where the connection forbids them). Retrying cannot help.
    """


__all__ = [
    "SeedanceAPIError",
    "SeedanceAuthenticationError",
    "SeedanceConfigurationError",
    "SeedanceConnectionError",
    "SeedanceCostLimitError",
    "SeedanceError",
    "SeedanceInputError",
    "SeedanceInputRejectedError",
    "SeedanceInsufficientBalanceError",
    "SeedanceIntegrityError",
    "SeedanceInvalidIdentifierError",
    "SeedanceMalformedResponseError",
    "SeedanceNotFoundError",
    "SeedancePermissionDeniedError",
    "SeedanceRateLimitError",
    "SeedanceRequestFailedError",
    "SeedanceRequestNotStoredError",
    "SeedanceServerError",
    "SeedanceSubmissionStateUnknownError",
    "SeedanceTimeoutError",
    "SeedanceTransferError",
    "SeedanceTransientError",
    "SeedanceURLRefusedError",
]
