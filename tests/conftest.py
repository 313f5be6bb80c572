"""Shared fixtures: an environment without Taapit variables, a client on respx."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import respx

from taapit_async import AsyncTaapit

from ._support import BASE_URL, make_client


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's own TAAPIT_* variables, nor their proxies."""
    for name in ("TAAPIT_API_KEY", "TAAPIT_BASE_URL", "TAAPIT_ENABLED"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    """A respx router standing in for Taapit; every request must match a route."""
    with respx.mock(base_url=BASE_URL, assert_all_called=False) as router:
        yield router


@pytest.fixture
async def taapit() -> AsyncIterator[AsyncTaapit]:
    async with make_client() as client:
        yield client
