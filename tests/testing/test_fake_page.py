"""The fake's read-only HTML page, ``GET /_fake/``: what it recorded, for people."""

from __future__ import annotations

import html
import json
from typing import Any

import httpx

from taapit_async.testing import FakeTaapit

TID = "rLnWe1uz9t282v7g"
HOSTILE = '<script>alert("x")</script>'


async def call(
    fake: FakeTaapit, method: str, path: str, body: Any = None, key: str | None = None
) -> httpx.Response:
    """One request to the fake, in-process; API requests carry the key and the JSON body."""
    headers = {"Authorization": f"Bearer {fake.api_key}", "Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    content = None if body is None else json.dumps(body)
    async with httpx.AsyncClient(transport=fake.transport(), base_url="http://t.test") as http:
        return await http.request(method, path, content=content, headers=headers)


async def page(fake: FakeTaapit, path: str = "/_fake/") -> str:
    return (await call(fake, "GET", path)).text


async def test_the_page_lists_events_with_ids_amounts_and_attempts(
    taapit_fake: FakeTaapit,
) -> None:
    lead = {"trackingId": TID, "customer": {"externalId": "user_1", "email": "a@b.c"}}
    sale = {"customer": {"externalId": "user_1"}, "amount": 29.99, "currency": "eur"}
    assert (await call(taapit_fake, "POST", "/api/events/lead", lead, "k1")).status_code == 200
    taapit_fake.fail_next(status=503)
    for status in (503, 200):
        reply = await call(taapit_fake, "POST", "/api/events/sale", sale, "ord_1")
        assert reply.status_code == status

    shown = await page(taapit_fake)

    assert "2 events (1 leads, 1 sales) from 3 requests; 0 replayed, 1 faults injected" in shown
    assert f"<td>lead</td><td>{TID}</td><td>user_1</td><td>a@b.c</td>" in shown
    assert "<td>29.99 EUR</td><td>ord_1</td><td>2</td>" in shown  # two attempts, one sale
    assert "<td>503</td><td>error status</td>" in shown


async def test_the_page_shows_queued_faults_and_the_random_plan(taapit_fake: FakeTaapit) -> None:
    taapit_fake.fail_next(2, status=502)
    taapit_fake.rate_limit_next(retry_after=3)
    taapit_fake.drop_next(after_record=True)
    taapit_fake.set_fault_rates(error_rate=0.25, seed=1)

    shown = await page(taapit_fake)

    assert (
        "next 4 requests: HTTP 502, HTTP 502, HTTP 429, Retry-After 3, reply lost after recording"
    ) in shown
    assert "random faults: error rate 0.25 (HTTP 503), drop rate 0" in shown


async def test_an_empty_fake_says_so(taapit_fake: FakeTaapit) -> None:
    shown = await page(taapit_fake, "/_fake")  # with or without the trailing slash
    assert "No event recorded yet." in shown
    assert "No request yet." in shown
    assert "no fault queued" in shown


async def test_everything_recorded_is_html_escaped(taapit_fake: FakeTaapit) -> None:
    lead = {
        "trackingId": HOSTILE,
        "customer": {"externalId": HOSTILE, "email": "<img src=x onerror=alert(1)>"},
        "metadata": {HOSTILE: "</td></table><b>"},
    }
    reply = await call(taapit_fake, "POST", "/api/events/lead", lead, "<i>key</i>")
    assert reply.status_code == 200
    shown = await page(taapit_fake)
    for raw in ("<script", "<img", "<i>", "</table><b>"):
        assert raw not in shown
    assert html.escape(HOSTILE) in shown
    assert "&lt;i&gt;key&lt;/i&gt;" in shown


async def test_the_page_is_served_as_uncacheable_html_that_runs_no_script(
    taapit_fake: FakeTaapit,
) -> None:
    reply = await call(taapit_fake, "GET", "/_fake/")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "text/html; charset=utf-8"
    assert reply.headers["cache-control"] == "no-store"
    assert reply.headers["content-security-policy"].startswith("default-src 'none'")
    assert reply.headers["content-length"] == str(len(reply.content))


async def test_the_page_is_read_only_and_not_logged(taapit_fake: FakeTaapit) -> None:
    refused = await call(taapit_fake, "POST", "/_fake/")
    assert (refused.status_code, refused.headers["allow"]) == (405, "GET")
    await page(taapit_fake)
    assert taapit_fake.requests == []
