"""The client against the fake Taapit API served by a real uvicorn on 127.0.0.1."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from decimal import Decimal

import pytest

from taapit_async import AsyncTaapit, Customer, ErrorCode
from taapit_async.testing import FakeTaapit, FakeTaapitServer

pytestmark = pytest.mark.server

SECRET = "taapit_sk_live_do_not_log_me_8f3a2c"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeTaapitServer]:
    with FakeTaapitServer(FakeTaapit(api_key=SECRET)) as running:
        yield running


@pytest.fixture
def fake(server: FakeTaapitServer) -> FakeTaapit:
    server.fake.reset()
    server.fake.clear_faults()
    return server.fake


async def test_a_lead_and_a_sale_reach_the_fake_over_tcp(
    server: FakeTaapitServer, fake: FakeTaapit
) -> None:
    async with AsyncTaapit(SECRET, base_url=server.url) as taapit:
        lead = await taapit.track.lead(
            tracking_id="rLnWe1uz9t282v7g",
            customer=Customer(external_id="user_123", email="john@example.com"),
        )
        sale = await taapit.track.sale(
            customer={"external_id": "user_123"}, amount=Decimal("99.99"), currency="EUR"
        )
    assert lead.success
    assert sale.success
    assert lead.event_id == fake.leads[0].event_id
    assert [(e.kind, e.amount, e.currency) for e in fake.events] == [
        ("lead", None, None),
        ("sale", Decimal("99.99"), "eur"),
    ]


async def test_a_reply_lost_after_recording_is_retried_and_counted_once(
    server: FakeTaapitServer, fake: FakeTaapit
) -> None:
    fake.drop_next(1, after_record=True)
    async with AsyncTaapit(SECRET, base_url=server.url, backoff_base=0.01) as taapit:
        result = await taapit.track.sale(
            tracking_id="t1",
            customer={"external_id": "u"},
            amount=5,
            currency="usd",
            idempotency_key="order_1",
        )
    assert result.success
    assert result.attempts == 2
    assert len(fake.sales) == 1
    assert fake.attempts("order_1") == 2


async def test_a_dropped_connection_is_a_network_error_after_the_retries(
    server: FakeTaapitServer, fake: FakeTaapit
) -> None:
    fake.drop_next(3)
    async with AsyncTaapit(SECRET, base_url=server.url, backoff_base=0.01) as taapit:
        result = await taapit.track.lead(tracking_id="t1", customer={"external_id": "u"})
    assert result.error is not None
    assert result.error.code == ErrorCode.NETWORK_ERROR
    assert result.attempts == 3
    assert fake.events == []


async def test_a_wrong_key_is_unauthorized_and_not_retried(
    server: FakeTaapitServer, fake: FakeTaapit
) -> None:
    async with AsyncTaapit("taapit_sk_wrong", base_url=server.url) as taapit:
        result = await taapit.track.lead(tracking_id="t1", customer={"external_id": "u"})
    assert result.error is not None
    assert result.error.code == ErrorCode.UNAUTHORIZED
    assert result.attempts == 1


async def test_the_secret_and_emails_stay_out_of_debug_logs_of_every_library(
    server: FakeTaapitServer, fake: FakeTaapit, caplog: pytest.LogCaptureFixture
) -> None:
    fake.fail_next(1, status=503)
    fake.rate_limit_next(1, retry_after="0")
    with caplog.at_level(logging.DEBUG):
        async with AsyncTaapit(SECRET, base_url=server.url, backoff_base=0.01) as taapit:
            ok = await taapit.track.lead(
                tracking_id="t1",
                customer=Customer(external_id="u", email="jane.secret@example.com"),
            )
            bad = await taapit.track.sale(
                customer={"external_id": "unknown", "email": "jane.secret@example.com"},
                amount=1,
                currency="eur",
            )
    assert ok.success
    assert bad.error is not None  # a sale of an unknown customer needs a tracking id
    assert {r.name.split(".")[0] for r in caplog.records} >= {"taapit_async", "httpcore"}
    everything = caplog.text + "".join(repr(r.args) for r in caplog.records)
    everything += repr(ok) + repr(bad) + str(bad.error)
    assert SECRET not in everything
    assert "jane.secret@example.com" not in everything
