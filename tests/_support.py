"""Constants and builders shared by the test modules."""

from __future__ import annotations

from typing import Any

from taapit_async import AsyncTaapit

API_KEY = "taapit_sk_test_0123456789abcdef"
BASE_URL = "https://track.taap.it"
LEAD_URL = f"{BASE_URL}/api/events/lead"
SALE_URL = f"{BASE_URL}/api/events/sale"


def make_client(**options: Any) -> AsyncTaapit:
    """A client with tiny backoff so that retry tests take milliseconds."""
    options.setdefault("backoff_base", 0.001)
    options.setdefault("backoff_max", 0.002)
    return AsyncTaapit(API_KEY, **options)
