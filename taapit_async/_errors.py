"""The exception tree and the stable error codes.

Programming errors are raised at the call, before any I/O. Runtime failures are exceptions
too, but the client *returns* them in ``TrackResult.error`` instead of raising them, so that
tracking never breaks the operation it reports on; ``TrackResult.raise_for_error()`` raises
them for those who prefer.

::

    TaapitError
    ├── ConfigurationError (also ValueError)      bad client setup: no key, http:// off loopback
    ├── ValidationError (also ValueError)         bad event input: names the field and the fix
    │   └── ValidationTypeError (also TypeError)  an argument of the wrong type
    ├── ClientStateError (also RuntimeError)      wrong event loop
    │   └── ClientClosedError                     a call on a closed client
    └── APIError                                  runtime failures, returned in TrackResult
        ├── APIConnectionError                    network_error
        │   └── APITimeoutError                   timeout (client side)
        ├── APIStatusError                        an HTTP error status (408 gives timeout)
        │   ├── AuthenticationError               unauthorized (401, 403)
        │   ├── RateLimitError                    rate_limited (429)
        │   ├── InvalidRequestError               invalid_request (other 4xx)
        │   └── ServerError                       server_error (5xx)
        ├── InvalidResponseError                  invalid_response (a redirect, say)
        ├── RejectedError                         a 2xx reply whose body says success: false
        ├── MissingTrackingIdError                missing_tracking_id (nothing was sent)
        ├── QueueFullError                        queue_full (background queue full)
        ├── ShutdownError                         shutdown (closed before delivery)
        ├── InOutboxError                         in_outbox (closed; still in the outbox)
        ├── DisabledError                         disabled (tracking is turned off)
        └── InternalError                         internal_error (a bug: please report it)
"""

from __future__ import annotations

import copy
import enum
import traceback
from typing import TypeVar

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "ClientClosedError",
    "ClientStateError",
    "ConfigurationError",
    "DisabledError",
    "ErrorCode",
    "InOutboxError",
    "InternalError",
    "InvalidRequestError",
    "InvalidResponseError",
    "MissingTrackingIdError",
    "QueueFullError",
    "RateLimitError",
    "RejectedError",
    "ServerError",
    "ShutdownError",
    "TaapitError",
    "ValidationError",
    "ValidationTypeError",
]

_Error = TypeVar("_Error", bound=BaseException)
_TaapitError = TypeVar("_TaapitError", bound="TaapitError")


class ErrorCode(enum.StrEnum):
    """Stable machine codes carried by every ``TaapitError``.

    They are plain strings too, so ``result.error.code == "timeout"`` works.
    """

    CONFIGURATION = "configuration"
    VALIDATION = "validation"
    CLIENT_CLOSED = "client_closed"
    WRONG_EVENT_LOOP = "wrong_event_loop"
    FORKED = "forked"
    NETWORK_ERROR = "network_error"
    TIMEOUT = "timeout"
    RATE_LIMITED = "rate_limited"
    UNAUTHORIZED = "unauthorized"
    INVALID_REQUEST = "invalid_request"
    SERVER_ERROR = "server_error"
    INVALID_RESPONSE = "invalid_response"
    REJECTED = "rejected"
    MISSING_TRACKING_ID = "missing_tracking_id"
    QUEUE_FULL = "queue_full"
    SHUTDOWN = "shutdown"
    IN_OUTBOX = "in_outbox"
    OUTBOX_ERROR = "outbox_error"
    DEAD_LETTER = "dead_letter"
    DISABLED = "disabled"
    INTERNAL_ERROR = "internal_error"
    INVALID_SIGNATURE = "invalid_signature"


class TaapitError(Exception):
    """The root of every error this package raises or returns.

    Attributes:
        code: A stable machine code to match on (an ``ErrorCode``, also a ``str``).
        message: A human sentence saying what happened and what to do.
        status_code: The HTTP status of the reply, or None when there was no reply.
        retryable: Whether sending the same event again may succeed.
    """

    default_code: str = ErrorCode.INTERNAL_ERROR
    default_retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status_code: int | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code: str = _as_code(code or self.default_code)
        self.status_code = status_code
        self.retryable = self.default_retryable if retryable is None else retryable
        #: Seconds the server asked to wait (``Retry-After``), when it did.
        self.retry_after: float | None = None

    def __str__(self) -> str:
        status = f" (HTTP {self.status_code})" if self.status_code is not None else ""
        return f"{self.code}{status}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={str(self.code)!r}, message={self.message!r}, "
            f"status_code={self.status_code!r}, retryable={self.retryable!r})"
        )

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments do not survive the default pickling of exceptions; results
        # cross process boundaries (multiprocessing, the outbox's tooling), so keep them whole.
        return (
            _rebuild,
            (type(self), self.message, str(self.code), self.status_code, self.retryable),
        )


def _as_code(code: str) -> str:
    # Known codes become ErrorCode members (nicer reprs); a server's own codes stay as given.
    try:
        return ErrorCode(code)
    except ValueError:
        return code


def _rebuild(
    cls: type[TaapitError], message: str, code: str, status_code: int | None, retryable: bool
) -> TaapitError:
    error = cls.__new__(cls)
    TaapitError.__init__(error, message, code=code, status_code=status_code, retryable=retryable)
    return error


class ConfigurationError(TaapitError, ValueError):
    """The client was set up wrongly (no API key, a bad base URL, a bad option)."""

    default_code = ErrorCode.CONFIGURATION


class ValidationError(TaapitError, ValueError):
    """An event argument is invalid; the message names the field and the fix."""

    default_code = ErrorCode.VALIDATION


class ValidationTypeError(ValidationError, TypeError):
    """An event argument has the wrong type (a ``str`` amount, say)."""


class ClientStateError(TaapitError, RuntimeError):
    """The client cannot be used in its current state (another event loop, say)."""

    default_code = ErrorCode.WRONG_EVENT_LOOP


class ClientClosedError(ClientStateError):
    """A call was made on a client after ``aclose()``."""

    default_code = ErrorCode.CLIENT_CLOSED


class APIError(TaapitError):
    """A runtime failure while delivering an event; returned in ``TrackResult.error``."""


class APIConnectionError(APIError):
    """The request did not get a reply: the connection failed or was dropped."""

    default_code = ErrorCode.NETWORK_ERROR
    default_retryable = True


class APITimeoutError(APIConnectionError):
    """No reply within the timeout, or the call's total deadline ran out."""

    default_code = ErrorCode.TIMEOUT


class APIStatusError(APIError):
    """Taapit answered with an HTTP error status."""

    default_code = ErrorCode.INVALID_REQUEST


class AuthenticationError(APIStatusError):
    """Taapit refused the API key (401 or 403)."""

    default_code = ErrorCode.UNAUTHORIZED


class RateLimitError(APIStatusError):
    """Taapit asked us to slow down (429)."""

    default_code = ErrorCode.RATE_LIMITED
    default_retryable = True


class InvalidRequestError(APIStatusError):
    """Taapit refused the event itself (a 4xx other than 401, 403, 408 and 429)."""

    default_code = ErrorCode.INVALID_REQUEST


class ServerError(APIStatusError):
    """Taapit failed on its side (5xx)."""

    default_code = ErrorCode.SERVER_ERROR
    default_retryable = True


class InvalidResponseError(APIError):
    """The reply made no sense for this API (a redirect, say)."""

    default_code = ErrorCode.INVALID_RESPONSE


class RejectedError(APIError):
    """A 2xx reply whose JSON body says ``"success": false``."""

    default_code = ErrorCode.REJECTED


class MissingTrackingIdError(APIError):
    """No tracking id was known for the visitor, so the lead was not sent."""

    default_code = ErrorCode.MISSING_TRACKING_ID


class QueueFullError(APIError):
    """The background queue was full: the event was refused, not queued."""

    default_code = ErrorCode.QUEUE_FULL


class ShutdownError(APIError):
    """The client closed before a queued event could be delivered."""

    default_code = ErrorCode.SHUTDOWN


class InOutboxError(APIError):
    """The client closed before delivering an outbox event; it waits in the file."""

    default_code = ErrorCode.IN_OUTBOX


class DisabledError(APIError):
    """Tracking is disabled (``enabled=False`` or ``TAAPIT_ENABLED=0``): nothing was sent."""

    default_code = ErrorCode.DISABLED


class InternalError(APIError):
    """An unexpected exception inside the SDK or a custom transport; a bug to report."""

    default_code = ErrorCode.INTERNAL_ERROR


def without_frames(error: _Error) -> _Error:
    """``error`` with the traceback dropped from it and from every exception it chains to.

    The frames of a failed request hold its headers, the secret key among them, and an error
    tracker that records local variables (Sentry does by default) would send them on. The
    chain of exception types and messages stays, and says what went wrong.
    """
    seen: set[int] = set()
    todo: list[BaseException] = [error]
    while todo:
        current = todo.pop()
        if id(current) not in seen:
            seen.add(id(current))
            current.__traceback__ = None
            todo += [e for e in (current.__cause__, current.__context__) if e is not None]
            if isinstance(current, BaseExceptionGroup):  # anyio's, one per address tried
                todo += current.exceptions
    return error


def fresh_copy(error: _TaapitError) -> _TaapitError:
    """A copy of ``error`` to raise: same type, attributes and cause; no traceback, no context.

    An error kept in a shared result and raised by one handler after another would carry
    each handler's traceback, and the exception it was handling (frames, locals and all),
    into the next one.
    """
    clone = copy.copy(error)  # by TaapitError.__reduce__: type, message, code, status
    vars(clone).update(vars(error))
    clone.__cause__ = error.__cause__
    clone.__suppress_context__ = error.__suppress_context__
    return clone


def traceback_text(error: BaseException) -> str:
    """The traceback of ``error`` as text, to log without ``exc_info``.

    A record with ``exc_info`` hands the frames themselves to every handler, and error
    trackers (Sentry's logging integration) send their local variables: the request
    headers with the API key, the bodies with customers' e-mails. The text keeps what a bug
    report needs: where it failed and why.
    """
    return "".join(traceback.format_exception(error)).rstrip()
