"""Constants and builders shared by the test modules."""

from __future__ import annotations

from typing import Any

import httpx

from taapit_async import AsyncTaapit
from taapit_async.testing import FakeTaapit

API_KEY = "taapit_sk_test_0123456789abcdef"
BASE_URL = "https://track.taap.it"
LEAD_URL = f"{BASE_URL}/api/events/lead"
SALE_URL = f"{BASE_URL}/api/events/sale"


def make_client(**options: Any) -> AsyncTaapit:
    """A client with tiny backoff so that retry tests take milliseconds."""
    options.setdefault("backoff_base", 0.001)
    options.setdefault("backoff_max", 0.002)
    return AsyncTaapit(API_KEY, **options)


def fake_client(fake: FakeTaapit, **options: Any) -> AsyncTaapit:
    """A client talking to an in-process fake, with tiny backoff (override with options)."""
    options.setdefault("backoff_base", 0.001)
    options.setdefault("backoff_max", 0.002)
    return AsyncTaapit(
        fake.api_key,
        base_url="http://taapit.localhost",
        http_client=httpx.AsyncClient(transport=fake.transport()),
        **options,
    )
