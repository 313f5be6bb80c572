"""The pytest plugin (entry point ``taapit``): fixtures for your own test suite.

Installed with the package, so in your tests::

    async def test_signup_tracks_a_lead(taapit_fake, taapit_client):
        await signup(client=taapit_client, ...)
        assert [e.customer.external_id for e in taapit_fake.leads] == ["user_123"]

Both fixtures are synchronous, so they work under pytest-asyncio, anyio or any other
runner: the client talks to the fake in-process, with no sockets to close.
"""

from __future__ import annotations

import httpx
import pytest

from taapit_async._client import AsyncTaapit

from ._fake import FakeTaapit

__all__ = ["taapit_client", "taapit_fake"]

#: The base URL the ``taapit_client`` fixture uses; loopback, so plain http is allowed.
FIXTURE_BASE_URL = "http://taapit.localhost"


@pytest.fixture
def taapit_fake() -> FakeTaapit:
    """A fresh in-process fake Taapit API that records what it accepts."""
    return FakeTaapit()


@pytest.fixture
def taapit_client(taapit_fake: FakeTaapit) -> AsyncTaapit:
    """An ``AsyncTaapit`` wired to ``taapit_fake`` in-process, with retries that do not wait.

    Retries still happen (inject faults with ``taapit_fake.fail_next()``), but their backoff
    is zero so tests stay fast.
    """
    http_client = httpx.AsyncClient(transport=taapit_fake.transport())
    return AsyncTaapit(
        taapit_fake.api_key,
        base_url=FIXTURE_BASE_URL,
        http_client=http_client,
        backoff_base=0,
        backoff_max=0,
    )
