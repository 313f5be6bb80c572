"""examples/starlette_app.py: a JSON API with the middleware, driven in-process."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest
import starlette_app
from asgi_lifespan import LifespanManager
from starlette.applications import Starlette

from taapit_async import AsyncTaapit
from taapit_async.testing import FakeTaapit

from ._support import TID


@contextlib.asynccontextmanager
async def browse(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://app.test"
        ) as browser,
    ):
        yield browser


async def test_a_deeplink_visitor_signs_up_and_upgrades_with_both_events_attributed(
    taapit_fake: FakeTaapit, taapit_client: AsyncTaapit
) -> None:
    async with browse(starlette_app.create_app(taapit_client)) as browser:
        landing = await browser.get(f"/?ta_tid={TID}")
        assert f"ta_tid: {TID}" in landing.text
        assert browser.cookies["ta_tid"] == TID
        signup = await browser.post("/api/signup", json={"email": "Ada@example.com"})
        upgrade = await browser.post("/api/upgrade", json={"email": "ada@example.com"})
    assert signup.json() == {"tracked": True, "error": None}
    assert upgrade.json() == {"tracked": True, "error": None}
    lead, sale = taapit_fake.events
    user_id = starlette_app.user_id_for("ada@example.com")
    assert (lead.kind, lead.tracking_id, lead.customer.external_id) == ("lead", TID, user_id)
    assert (sale.kind, sale.tracking_id, sale.customer.external_id) == ("sale", TID, user_id)
    assert (sale.amount, sale.currency) == (Decimal("49.00"), "eur")
    assert sale.metadata == {"orderId": sale.idempotency_key}


async def test_a_json_signup_carries_the_id_in_its_body_without_a_cookie(
    taapit_fake: FakeTaapit, taapit_client: AsyncTaapit
) -> None:
    async with browse(starlette_app.create_app(taapit_client)) as browser:
        reply = await browser.post("/api/signup", json={"email": "bo@example.com", "ta_tid": TID})
    assert reply.json() == {"tracked": True, "error": None}
    assert [lead.tracking_id for lead in taapit_fake.leads] == [TID]


async def test_a_signup_without_a_tracking_id_is_answered_but_not_tracked(
    taapit_fake: FakeTaapit, taapit_client: AsyncTaapit, caplog: pytest.LogCaptureFixture
) -> None:
    async with browse(starlette_app.create_app(taapit_client)) as browser:
        reply = await browser.post("/api/signup", json={"email": "cy@example.com"})
    assert reply.json() == {"tracked": False, "error": "missing_tracking_id"}
    assert taapit_fake.requests == []
    assert "not tracked" in caplog.text


async def test_an_upgrade_without_a_tracking_id_is_linked_by_the_customer_id(
    taapit_fake: FakeTaapit, taapit_client: AsyncTaapit
) -> None:
    async with browse(starlette_app.create_app(taapit_client)) as browser:
        await browser.post("/api/signup", json={"email": "di@example.com", "trackingId": TID})
        reply = await browser.post("/api/upgrade", json={"email": "di@example.com"})
    assert reply.json() == {"tracked": True, "error": None}
    assert [(e.kind, e.tracking_id) for e in taapit_fake.events] == [("lead", TID), ("sale", None)]


async def test_a_signup_without_an_address_is_refused(taapit_client: AsyncTaapit) -> None:
    async with browse(starlette_app.create_app(taapit_client)) as browser:
        reply = await browser.post("/api/signup", json={"email": "nobody"})
    assert reply.status_code == 422


async def test_the_module_level_app_starts_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`uvicorn starlette_app:app` works with no key when tracking is turned off."""
    monkeypatch.setenv("TAAPIT_ENABLED", "0")
    async with browse(starlette_app.app) as browser:
        reply = await browser.post(
            "/api/signup", json={"email": "ed@example.com"}, headers={"cookie": f"ta_tid={TID}"}
        )
    assert reply.json() == {"tracked": False, "error": "disabled"}
