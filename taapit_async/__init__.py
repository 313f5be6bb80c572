"""taapit-async: asyncio-native server-side conversion tracking for Taapit.

Example:
    >>> from taapit_async import AsyncTaapit, Customer
    >>> async with AsyncTaapit() as taapit:  # the key comes from TAAPIT_API_KEY
    ...     result = await taapit.track.lead(
    ...         tracking_id="rLnWe1uz9t282v7g",
    ...         customer=Customer(external_id="user_123", email="john@example.com"),
    ...     )
    ...     if not result.success:
    ...         log.warning("lead not tracked: %s", result.error)

Runtime failures come back in ``TrackResult.error`` (never raised); invalid arguments and
configuration raise ``ValidationError`` / ``ConfigurationError`` before anything is sent.
"""

from __future__ import annotations

from ._breaker import DEFAULT_BREAKER_COOLDOWN, DEFAULT_BREAKER_THRESHOLD, DEFAULT_RECOVERY_RATE
from ._client import AsyncTaapit, Background, Track
from ._config import DEFAULT_BASE_URL, DEFAULT_MAX_IN_FLIGHT
from ._delivery import (
    DEFAULT_BACKGROUND_DEADLINE,
    DEFAULT_BACKGROUND_MAX_RETRIES,
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_MAX_QUEUE,
    Delivery,
    DeliveryStats,
)
from ._errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    ClientClosedError,
    ClientStateError,
    ConfigurationError,
    DisabledError,
    ErrorCode,
    InOutboxError,
    InternalError,
    InvalidRequestError,
    InvalidResponseError,
    MissingTrackingIdError,
    QueueFullError,
    RateLimitError,
    RejectedError,
    ServerError,
    ShutdownError,
    TaapitError,
    ValidationError,
    ValidationTypeError,
)
from ._models import MAX_METADATA_BYTES, Customer, TrackResult
from ._outbox import (
    DEFAULT_OUTBOX_LEASE,
    DEFAULT_OUTBOX_MAX_AGE,
    DEFAULT_OUTBOX_MAX_ATTEMPTS,
    OutboxError,
)
from ._retry import (
    DEFAULT_BACKOFF_BASE,
    DEFAULT_BACKOFF_MAX,
    DEFAULT_DEADLINE,
    DEFAULT_MAX_RETRIES,
    DEFAULT_RETRY_AFTER_MAX,
    DEFAULT_TIMEOUT,
)
from ._version import __version__

__all__ = [
    "DEFAULT_BACKGROUND_DEADLINE",
    "DEFAULT_BACKGROUND_MAX_RETRIES",
    "DEFAULT_BACKOFF_BASE",
    "DEFAULT_BACKOFF_MAX",
    "DEFAULT_BASE_URL",
    "DEFAULT_BREAKER_COOLDOWN",
    "DEFAULT_BREAKER_THRESHOLD",
    "DEFAULT_DEADLINE",
    "DEFAULT_DRAIN_TIMEOUT",
    "DEFAULT_MAX_IN_FLIGHT",
    "DEFAULT_MAX_QUEUE",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_OUTBOX_LEASE",
    "DEFAULT_OUTBOX_MAX_AGE",
    "DEFAULT_OUTBOX_MAX_ATTEMPTS",
    "DEFAULT_RECOVERY_RATE",
    "DEFAULT_RETRY_AFTER_MAX",
    "DEFAULT_TIMEOUT",
    "MAX_METADATA_BYTES",
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncTaapit",
    "AuthenticationError",
    "Background",
    "ClientClosedError",
    "ClientStateError",
    "ConfigurationError",
    "Customer",
    "Delivery",
    "DeliveryStats",
    "DisabledError",
    "ErrorCode",
    "InOutboxError",
    "InternalError",
    "InvalidRequestError",
    "InvalidResponseError",
    "MissingTrackingIdError",
    "OutboxError",
    "QueueFullError",
    "RateLimitError",
    "RejectedError",
    "ServerError",
    "ShutdownError",
    "TaapitError",
    "Track",
    "TrackResult",
    "ValidationError",
    "ValidationTypeError",
    "__version__",
]
