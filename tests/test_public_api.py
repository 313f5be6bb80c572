"""The public surface is deliberate: this list changes only on purpose."""

from __future__ import annotations

import subprocess
import sys

import taapit_async
import taapit_async.testing

EXPECTED = [
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


def test_the_public_names_are_pinned() -> None:
    assert taapit_async.__all__ == EXPECTED


def test_every_public_name_exists_and_is_documented() -> None:
    for name in taapit_async.__all__:
        value = getattr(taapit_async, name)
        if isinstance(value, type) or callable(value):
            assert value.__doc__, f"{name} has no docstring"


def test_testing_module_names_exist() -> None:
    for name in taapit_async.testing.__all__:
        assert getattr(taapit_async.testing, name).__doc__


def test_defaults_are_what_the_readme_documents() -> None:
    assert taapit_async.DEFAULT_TIMEOUT == 5.0
    assert taapit_async.DEFAULT_DEADLINE == 10.0
    assert taapit_async.DEFAULT_MAX_RETRIES == 2
    assert taapit_async.DEFAULT_BACKOFF_BASE == 0.5
    assert taapit_async.DEFAULT_BACKOFF_MAX == 8.0
    assert taapit_async.DEFAULT_RETRY_AFTER_MAX == 60.0
    assert taapit_async.DEFAULT_MAX_IN_FLIGHT == 32
    assert taapit_async.DEFAULT_BASE_URL == "https://track.taap.it"
    assert taapit_async.DEFAULT_MAX_QUEUE == 10_000
    assert taapit_async.DEFAULT_BACKGROUND_MAX_RETRIES == 5
    assert taapit_async.DEFAULT_BACKGROUND_DEADLINE == 60.0
    assert taapit_async.DEFAULT_DRAIN_TIMEOUT == 5.0


def test_importing_the_package_imports_no_web_framework() -> None:
    code = (
        "import sys, taapit_async, taapit_async.testing; "
        "bad = [m for m in ('starlette', 'fastapi', 'uvicorn') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
