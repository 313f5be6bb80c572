"""The fake Taapit API, driven in-process through ``FakeTaapit.transport()``."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from taapit_async.testing import FakeTaapit, RecordedCustomer, RecordedEvent

from ._bodies import (
    CURL_LEAD,
    CURL_SALE_WITH_TRACKING_ID,
    CURL_SALE_WITHOUT_TRACKING_ID,
    REQUEST_BODY_EXAMPLE,
    node_sdk_lead,
    node_sdk_sale,
    python_requests_lead,
)

KEY = "taapit_sk_test"
AUTH = {"Authorization": f"Bearer {KEY}"}
LEAD = "/api/events/lead"
SALE = "/api/events/sale"


@pytest.fixture
def fake() -> FakeTaapit:
    return FakeTaapit()


@pytest.fixture
async def client(fake: FakeTaapit) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=fake.transport(), base_url="http://taapit.test", headers=AUTH
    ) as http:
        yield http


async def post(
    client: httpx.AsyncClient,
    path: str,
    body: str | dict[str, Any],
    *,
    key: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST a body given as JSON text (sent verbatim) or as an object."""
    sent = {"Content-Type": "application/json", **(headers or {})}
    if key is not None:
        sent["Idempotency-Key"] = key
    content = body if isinstance(body, str) else json.dumps(body)
    return await client.post(path, content=content, headers=sent)


def lead(external_id: Any = "user_123", **extra: Any) -> dict[str, Any]:
    return {"trackingId": "rLnWe1uz9t282v7g", "customer": {"externalId": external_id}, **extra}


def sale(external_id: str = "user_123", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "customer": {"externalId": external_id},
        "amount": 10,
        "currency": "eur",
    }
    return {**body, **extra}


def assert_rejected(response: httpx.Response, status: int, code: str, field: str | None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == code
    if field is not None:
        assert body["error"]["field"] == field
        assert field.rsplit(".", 1)[-1] in body["error"]["message"]


# -- the reference's own bodies ---------------------------------------------------------


async def test_curl_lead_body_is_accepted(client: httpx.AsyncClient, fake: FakeTaapit) -> None:
    response = await post(client, LEAD, CURL_LEAD)

    assert response.status_code == 200
    assert response.json()["success"] is True
    assert response.json()["eventId"] == fake.leads[0].event_id
    assert fake.leads[0].customer == RecordedCustomer("user_123", email="[email protected]")
    assert fake.leads[0].tracking_id == "rLnWe1uz9t282v7g"


async def test_curl_sale_bodies_are_accepted_with_and_without_tracking_id(
    client: httpx.AsyncClient, fake: FakeTaapit
) -> None:
    assert (await post(client, LEAD, CURL_LEAD)).status_code == 200

    with_id = await post(client, SALE, CURL_SALE_WITH_TRACKING_ID)
    without_id = await post(client, SALE, CURL_SALE_WITHOUT_TRACKING_ID)

    assert (with_id.status_code, without_id.status_code) == (200, 200)
    first, second = fake.sales
    assert (first.amount, first.currency, first.metadata) == (
        Decimal("99.99"),
        "eur",
        {"orderId": "order_456"},
    )
    assert (second.tracking_id, second.customer.external_id) == (None, "user_123")


async def test_python_requests_example_with_none_names_is_accepted(
    client: httpx.AsyncClient, fake: FakeTaapit
) -> None:
    response = await client.post(LEAD, json=python_requests_lead())

    assert response.status_code == 200
    assert fake.leads[0].customer.firstname is None
    assert fake.leads[0].body["customer"]["lastname"] is None


async def test_request_body_example_is_accepted_as_a_sale(
    client: httpx.AsyncClient, fake: FakeTaapit
) -> None:
    response = await post(client, SALE, REQUEST_BODY_EXAMPLE)

    assert response.status_code == 200
    assert fake.sales[0].customer == RecordedCustomer(
        external_id="user_123",
        email="[email protected]",
        firstname="John",
        lastname="Doe",
        phone_number="+33612345678",
        avatar_url="https://example.com/avatar.jpg",
    )
    assert fake.sales[0].metadata == {}


async def test_request_body_example_is_refused_as_a_lead_for_its_amount(
    client: httpx.AsyncClient,
) -> None:
    assert_rejected(
        await post(client, LEAD, REQUEST_BODY_EXAMPLE), 400, "invalid_request", "amount"
    )


async def test_node_sdk_bodies_are_accepted(client: httpx.AsyncClient, fake: FakeTaapit) -> None:
    assert (await post(client, LEAD, node_sdk_lead())).status_code == 200
    assert (await post(client, SALE, node_sdk_sale())).status_code == 200
    assert fake.sales[0].metadata == {"orderId": "order_456", "productIds": ["prod_1", "prod_2"]}


# -- validation -------------------------------------------------------------------------

REJECTIONS: list[tuple[str, Any, str, str]] = [
    (LEAD, {"customer": {"externalId": "u"}}, "missing_tracking_id", "trackingId"),
    (LEAD, lead(trackingId=None), "missing_tracking_id", "trackingId"),
    (LEAD, lead(trackingId=""), "invalid_request", "trackingId"),
    (LEAD, lead(trackingId=123), "invalid_request", "trackingId"),
    (LEAD, {"trackingId": "t"}, "invalid_request", "customer"),
    (LEAD, {"trackingId": "t", "customer": None}, "invalid_request", "customer"),
    (LEAD, {"trackingId": "t", "customer": "user_123"}, "invalid_request", "customer"),
    (LEAD, {"trackingId": "t", "customer": {}}, "invalid_request", "customer.externalId"),
    (LEAD, lead(external_id=""), "invalid_request", "customer.externalId"),
    (LEAD, lead(external_id="   "), "invalid_request", "customer.externalId"),
    (LEAD, lead(external_id=123), "invalid_request", "customer.externalId"),
    (LEAD, lead(external_id=None), "invalid_request", "customer.externalId"),
    (
        LEAD,
        {"trackingId": "t", "customer": {"externalId": "u", "email": 42}},
        "invalid_request",
        "customer.email",
    ),
    (
        LEAD,
        {"trackingId": "t", "customer": {"externalId": "u", "phoneNumber": ["+33"]}},
        "invalid_request",
        "customer.phoneNumber",
    ),
    (
        LEAD,
        {"trackingId": "t", "customer": {"externalId": "u", "name": "John"}},
        "invalid_request",
        "customer.name",
    ),
    (
        LEAD,
        {"trackingId": "t", "customer": {"external_id": "u"}},
        "invalid_request",
        "customer.external_id",
    ),
    (LEAD, {"tracking_id": "t", "customer": {"externalId": "u"}}, "invalid_request", "tracking_id"),
    (LEAD, lead(metadata=["a"]), "invalid_request", "metadata"),
    (LEAD, lead(metadata="a=b"), "invalid_request", "metadata"),
    (LEAD, lead(amount=10), "invalid_request", "amount"),
    (LEAD, lead(currency="eur"), "invalid_request", "currency"),
    (
        SALE,
        {"trackingId": "t", "customer": {"externalId": "u"}, "currency": "eur"},
        "invalid_request",
        "amount",
    ),
    (SALE, sale(trackingId="t", amount=None), "invalid_request", "amount"),
    (SALE, sale(trackingId="t", amount="99.99"), "invalid_request", "amount"),
    (SALE, sale(trackingId="t", amount=True), "invalid_request", "amount"),
    (SALE, sale(trackingId="t", amount=-0.01), "invalid_request", "amount"),
    (SALE, sale(trackingId="t", amount={"value": 1}), "invalid_request", "amount"),
    (
        SALE,
        {"trackingId": "t", "customer": {"externalId": "u"}, "amount": 1},
        "invalid_request",
        "currency",
    ),
    (SALE, sale(trackingId="t", currency="euro"), "invalid_request", "currency"),
    (SALE, sale(trackingId="t", currency="e1r"), "invalid_request", "currency"),
    (SALE, sale(trackingId="t", currency="€ur"), "invalid_request", "currency"),
    (SALE, sale(trackingId="t", currency=978), "invalid_request", "currency"),
    (SALE, sale(trackingId="t", currency=""), "invalid_request", "currency"),
    (SALE, sale(trackingId="t", customerExternalId="u"), "invalid_request", "customerExternalId"),
    (SALE, sale("new_customer"), "missing_tracking_id", "trackingId"),
]


@pytest.mark.parametrize(
    ("path", "body", "code", "field"),
    REJECTIONS,
    ids=[
        f"{path.rsplit('/', 1)[1]}-{field}-{i}" for i, (path, _, _, field) in enumerate(REJECTIONS)
    ],
)
async def test_invalid_body_is_rejected_naming_its_field(
    client: httpx.AsyncClient, fake: FakeTaapit, path: str, body: Any, code: str, field: str
) -> None:
    assert_rejected(await post(client, path, body), 400, code, field)
    assert fake.events == []


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        ("not json", "application/json"),
        ("[1, 2]", "application/json"),
        ('"lead"', "application/json"),
        ("", "application/json"),
        ('{"trackingId": "t", "customer": {"externalId": "u"}, "x": NaN}', "application/json"),
        ('{"trackingId": "t", "customer": {"externalId": "u"}}', "text/plain"),
        (
            '{"trackingId": "t", "customer": {"externalId": "u"}}',
            "application/x-www-form-urlencoded",
        ),
        ('{"trackingId": "t", "customer": {"externalId": "u"}}', ""),
    ],
)
async def test_body_that_is_not_a_json_object_is_rejected(
    client: httpx.AsyncClient, fake: FakeTaapit, content: str, content_type: str
) -> None:
    response = await client.post(LEAD, content=content, headers={"Content-Type": content_type})

    assert_rejected(response, 400, "invalid_request", None)
    assert fake.events == []


@pytest.mark.parametrize(
    "content_type",
    ["application/json; charset=utf-8", "Application/JSON", "application/vnd.taapit+json"],
)
async def test_json_media_types_are_accepted(client: httpx.AsyncClient, content_type: str) -> None:
    response = await client.post(
        LEAD, content=json.dumps(lead()), headers={"Content-Type": content_type}
    )

    assert response.status_code == 200


async def test_sale_amount_is_recorded_exactly_and_currency_lowercased(
    client: httpx.AsyncClient, fake: FakeTaapit
) -> None:
    await post(
        client,
        SALE,
        '{"trackingId": "t", "customer": {"externalId": "u"}, "amount": 0.1, "currency": "EUR"}',
    )
    await post(client, SALE, sale(trackingId="t", amount=30, currency="Jpy"))
    await post(client, SALE, sale(trackingId="t", amount=0, currency="usd"))

    assert [(s.amount, s.currency) for s in fake.sales] == [
        (Decimal("0.1"), "eur"),
        (Decimal(30), "jpy"),
        (Decimal(0), "usd"),
    ]
    assert fake.sales[0].body["amount"] == Decimal("0.1")


async def test_null_optional_fields_count_as_absent(
    client: httpx.AsyncClient, fake: FakeTaapit
) -> None:
    body = {
        "trackingId": "t",
        "customer": {"externalId": "u", "email": None, "phoneNumber": None, "avatarUrl": None},
        "metadata": None,
        "amount": None,
        "currency": None,
    }
    assert (await post(client, LEAD, body)).status_code == 200
    assert fake.leads[0].metadata is None
    assert fake.leads[0].customer == RecordedCustomer("u")


async def test_success_reply_carries_a_fresh_event_id(client: httpx.AsyncClient) -> None:
    first = (await post(client, LEAD, lead())).json()
    second = (await post(client, LEAD, lead())).json()

    assert first["success"] is True
    assert first["eventId"].startswith("evt_")
    assert first["eventId"] != second["eventId"]


# -- the trackingId rule for sales ------------------------------------------------------


async def test_sale_without_tracking_id_is_accepted_for_a_customer_known_from_a_lead(
    client: httpx.AsyncClient, fake: FakeTaapit
) -> None:
    await post(client, LEAD, lead("user_1"))

    assert (await post(client, SALE, sale("user_1"))).status_code == 200
    assert fake.sales[0].tracking_id is None


async def test_sale_without_tracking_id_is_rejected_for_a_new_customer(
    client: httpx.AsyncClient,
) -> None:
    await post(client, LEAD, lead("user_1"))

    response = await post(client, SALE, sale("user_2"))

    assert_rejected(response, 400, "missing_tracking_id", "trackingId")
    assert "new customer" in response.json()["error"]["message"]


async def test_rejected_lead_does_not_make_its_customer_known(client: httpx.AsyncClient) -> None:
    await post(client, LEAD, lead("user_1", metadata="not an object"))

    assert_rejected(
        await post(client, SALE, sale("user_1")), 400, "missing_tracking_id", "trackingId"
    )


async def test_sale_with_tracking_id_does_not_make_its_customer_known(
    client: httpx.AsyncClient,
) -> None:
    """Only a lead makes a customer known: the fake is no more lenient than the reference."""
    assert (await post(client, SALE, sale("user_1", trackingId="t"))).status_code == 200

    assert_rejected(
        await post(client, SALE, sale("user_1")), 400, "missing_tracking_id", "trackingId"
    )


async def test_add_customer_makes_a_customer_known(
    client: httpx.AsyncClient, fake: FakeTaapit
) -> None:
    fake.add_customer("user_9")

    assert (await post(client, SALE, sale("user_9"))).status_code == 200


# -- authentication ---------------------------------------------------------------------


async def test_request_without_authorization_is_unauthorized(fake: FakeTaapit) -> None:
    async with httpx.AsyncClient(transport=fake.transport(), base_url="http://taapit.test") as http:
        response = await post(http, LEAD, lead())

    assert_rejected(response, 401, "unauthorized", None)
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert fake.events == []
    assert fake.requests[0].status == 401


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer taapit_sk_live_SECRET_0123456789",
        "Basic dGFhcGl0X3NrX3Rlc3Q6",
        "taapit_sk_test",
        "Bearer ",
        "Bearer taapit_sk_test_and_more",
    ],
)
async def test_wrong_key_is_unauthorized_and_never_echoed(
    client: httpx.AsyncClient, fake: FakeTaapit, authorization: str
) -> None:
    response = await post(client, LEAD, lead(), headers={"Authorization": authorization})

    assert_rejected(response, 401, "unauthorized", None)
    secret = authorization.rpartition(" ")[2]
    assert not secret or secret not in response.text
    assert fake.events == []


async def test_bearer_scheme_is_case_insensitive(client: httpx.AsyncClient) -> None:
    response = await post(client, LEAD, lead(), headers={"Authorization": f"bearer {KEY}"})

    assert response.status_code == 200


async def test_fake_accepts_only_its_own_key() -> None:
    fake = FakeTaapit(api_key="taapit_sk_other")
    async with httpx.AsyncClient(transport=fake.transport(), base_url="http://taapit.test") as http:
        ours = await post(http, LEAD, lead(), headers={"Authorization": "Bearer taapit_sk_other"})
        default = await post(http, LEAD, lead(), headers=AUTH)

    assert (ours.status_code, default.status_code) == (200, 401)
    assert fake.api_key == "taapit_sk_other"


async def test_recorded_headers_redact_the_key(client: httpx.AsyncClient, fake: FakeTaapit) -> None:
    await post(client, LEAD, lead(), key="k-1", headers={"X-Trace": "abc"})

    event = fake.leads[0]
    assert event.headers["authorization"] == "<redacted>"
    assert event.headers["x-trace"] == "abc"
    assert event.headers["idempotency-key"] == "k-1"
    assert KEY not in repr(event)
    assert KEY not in repr(fake)


def test_empty_api_key_is_refused() -> None:
    with pytest.raises(ValueError, match="api_key"):
        FakeTaapit(api_key="")


# -- idempotency ------------------------------------------------------------------------


async def test_repeat_of_an_idempotency_key_replays_the_first_reply_and_records_once(
    client: httpx.AsyncClient, fake: FakeTaapit
) -> None:
    first = await post(client, SALE, sale(trackingId="t"), key="order_456")
    second = await post(client, SALE, sale(trackingId="t"), key="order_456")

    assert (second.status_code, second.content) == (first.status_code, first.content)
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert len(fake.sales) == 1
    assert fake.attempts("order_456") == 2
    assert [r.replayed for r in fake.requests] == [False, True]


async def test_repeat_of_a_rejected_request_replays_the_rejection(
    client: httpx.AsyncClient, fake: FakeTaapit
) -> None:
    first = await post(client, SALE, sale("new"), key="k")
    await post(client, LEAD, lead("new"))
    second = await post(client, SALE, sale("new"), key="k")

    assert (second.status_code, second.content) == (first.status_code, first.content)
    assert first.status_code == 400
    assert fake.sales == []


async def test_idempotency_key_reused_with_a_different_body_is_422(
    client: httpx.AsyncClient, fake: FakeTaapit
) -> None:
    await post(client, SALE, sale(trackingId="t", amount=10), key="k")

    other_amount = await post(client, SALE, sale(trackingId="t", amount=11), key="k")
    other_route = await post(client, LEAD, lead(), key="k")

    assert_rejected(other_amount, 422, "idempotency_key_reused", "Idempotency-Key")
    assert_rejected(other_route, 422, "idempotency_key_reused", "Idempotency-Key")
    assert len(fake.events) == 1
    assert fake.attempts("k") == 3


async def test_requests_without_idempotency_key_are_each_recorded(
    client: httpx.AsyncClient, fake: FakeTaapit
) -> None:
    await post(client, LEAD, lead())
    await post(client, LEAD, lead())

    assert len(fake.leads) == 2
    assert fake.leads[0].idempotency_key is None


async def test_unauthorized_attempt_does_not_claim_the_idempotency_key(
    client: httpx.AsyncClient, fake: FakeTaapit
) -> None:
    await post(client, LEAD, lead(), key="k", headers={"Authorization": "Bearer nope"})

    assert (await post(client, LEAD, lead(), key="k")).status_code == 200
    assert fake.attempts("k") == 2


async def test_attempts_count_faulted_tries_too(
    client: httpx.AsyncClient, fake: FakeTaapit
) -> None:
    fake.fail_next(2)
    for _ in range(3):
        await post(client, LEAD, lead(), key="k")

    assert fake.attempts("k") == 3
    assert fake.attempts("unknown") == 0
    assert len(fake.leads) == 1


@pytest.mark.parametrize("key", ["", "k" * 256])
async def test_idempotency_key_out_of_bounds_is_rejected(
    client: httpx.AsyncClient, key: str
) -> None:
    response = await post(client, LEAD, lead(), key=key)

    assert_rejected(response, 400, "invalid_request", "Idempotency-Key")


# -- routes and protocol ----------------------------------------------------------------


async def test_unknown_path_is_404_json(client: httpx.AsyncClient, fake: FakeTaapit) -> None:
    for path in ("/", "/api/events/click", "/api/events/lead/"):
        response = await client.post(path, json=lead())
        assert_rejected(response, 404, "not_found", None)
    assert [r.status for r in fake.requests] == [404, 404, 404]


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
async def test_other_method_on_an_event_route_is_405_json(
    client: httpx.AsyncClient, method: str
) -> None:
    response = await client.request(method, SALE)

    assert_rejected(response, 405, "method_not_allowed", None)
    assert response.headers["allow"] == "POST"


async def test_lifespan_startup_and_shutdown_complete(fake: FakeTaapit) -> None:
    incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: list[dict[str, Any]] = []
    for message in ("lifespan.startup", "lifespan.shutdown"):
        incoming.put_nowait({"type": message})

    async def send(message: Any) -> None:
        sent.append(message)

    await fake({"type": "lifespan", "asgi": {"version": "3.0"}}, incoming.get, send)

    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]


async def test_websocket_is_refused_politely(fake: FakeTaapit) -> None:
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: Any) -> None:
        sent.append(message)

    await fake({"type": "websocket", "path": "/"}, receive, send)

    assert sent == [{"type": "websocket.close", "code": 1008}]


# -- records ----------------------------------------------------------------------------


async def test_records_keep_acceptance_order_and_split_by_kind(
    client: httpx.AsyncClient, fake: FakeTaapit
) -> None:
    await post(client, LEAD, lead("a"))
    await post(client, SALE, sale("a"))
    await post(client, LEAD, lead("b"))

    assert [(e.kind, e.customer.external_id) for e in fake.events] == [
        ("lead", "a"),
        ("sale", "a"),
        ("lead", "b"),
    ]
    assert [e.customer.external_id for e in fake.leads] == ["a", "b"]
    assert [e.customer.external_id for e in fake.sales] == ["a"]
    assert fake.stats() == {
        "events": 3,
        "leads": 2,
        "sales": 1,
        "requests": 3,
        "replayed": 0,
        "faults": 0,
    }


async def test_event_lists_are_copies(client: httpx.AsyncClient, fake: FakeTaapit) -> None:
    await post(client, LEAD, lead())

    fake.events.clear()
    fake.requests.clear()

    assert len(fake.events) == 1
    assert len(fake.requests) == 1


async def test_recorded_events_are_frozen_and_hashable(
    client: httpx.AsyncClient, fake: FakeTaapit
) -> None:
    await post(client, LEAD, lead(metadata={"a": 1}))
    event = fake.leads[0]

    with pytest.raises(AttributeError):
        event.kind = "sale"  # type: ignore[misc]
    assert isinstance(event, RecordedEvent)
    assert {event} == {event}


async def test_reset_forgets_everything_but_the_configuration(
    client: httpx.AsyncClient, fake: FakeTaapit
) -> None:
    fake.latency = 0.001
    await post(client, LEAD, lead("a"), key="k")
    fake.fail_next(5)

    fake.reset()

    assert (fake.events, fake.requests, fake.attempts("k")) == ([], [], 0)
    assert_rejected(await post(client, SALE, sale("a")), 400, "missing_tracking_id", "trackingId")
    assert (await post(client, LEAD, lead("a"), key="k")).status_code == 200
    assert fake.latency == 0.001


# -- faults -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (500, "server_error"),
        (502, "server_error"),
        (503, "server_error"),
        (504, "server_error"),
        (429, "rate_limited"),
        (408, "timeout"),
        (401, "unauthorized"),
        (409, "invalid_request"),
    ],
)
async def test_fail_next_answers_the_status_then_handles_normally(
    client: httpx.AsyncClient, fake: FakeTaapit, status: int, code: str
) -> None:
    fake.fail_next(2, status=status)

    replies = [await post(client, LEAD, lead(), key="k") for _ in range(3)]

    assert [r.status_code for r in replies] == [status, status, 200]
    assert_rejected(replies[0], status, code, None)
    assert len(fake.leads) == 1
    assert [(r.status, r.fault) for r in fake.requests] == [
        (status, "error"),
        (status, "error"),
        (200, None),
    ]


@pytest.mark.parametrize(("n", "status"), [(0, 503), (1, 200), (1, 600), (1, True), (True, 503)])
def test_fail_next_refuses_nonsense(fake: FakeTaapit, n: int, status: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        fake.fail_next(n, status=status)


@pytest.mark.parametrize(
    ("retry_after", "header"),
    [
        ("1", "1"),
        (2, "2"),
        ("Wed, 21 Oct 2015 07:28:00 GMT", "Wed, 21 Oct 2015 07:28:00 GMT"),
        (None, None),
    ],
)
async def test_rate_limit_next_answers_429_with_retry_after(
    client: httpx.AsyncClient, fake: FakeTaapit, retry_after: str | int | None, header: str | None
) -> None:
    fake.rate_limit_next(retry_after=retry_after)

    limited = await post(client, LEAD, lead())
    after = await post(client, LEAD, lead())

    assert_rejected(limited, 429, "rate_limited", None)
    assert limited.headers.get("retry-after") == header
    assert after.status_code == 200
    assert fake.requests[0].fault == "rate_limit"


async def test_delay_next_waits_then_handles_normally(
    client: httpx.AsyncClient, fake: FakeTaapit
) -> None:
    fake.delay_next(seconds=0.15)

    started = time.monotonic()
    delayed = await post(client, LEAD, lead())
    elapsed = time.monotonic() - started
    prompt_started = time.monotonic()
    await post(client, LEAD, lead())
    prompt = time.monotonic() - prompt_started

    assert delayed.status_code == 200
    assert elapsed >= 0.15
    assert prompt < 0.1
    assert len(fake.leads) == 2
    assert [r.fault for r in fake.requests] == ["delay", None]


async def test_delay_lets_other_requests_through_meanwhile(
    client: httpx.AsyncClient, fake: FakeTaapit
) -> None:
    fake.delay_next(seconds=0.3)

    slow = asyncio.create_task(post(client, LEAD, lead("slow")))
    await asyncio.sleep(0.05)
    await post(client, LEAD, lead("fast"))
    await slow

    assert [e.customer.external_id for e in fake.leads] == ["fast", "slow"]


async def test_constant_latency_is_added_to_every_request(fake: FakeTaapit) -> None:
    slow = FakeTaapit(latency=0.05)
    async with httpx.AsyncClient(
        transport=slow.transport(), base_url="http://t", headers=AUTH
    ) as http:
        started = time.monotonic()
        await post(http, LEAD, lead())
        await post(http, LEAD, lead())
        assert time.monotonic() - started >= 0.1
    assert slow.latency == 0.05


@pytest.mark.parametrize("seconds", [-1, float("nan"), float("inf"), True])
def test_latency_refuses_nonsense(fake: FakeTaapit, seconds: float) -> None:
    with pytest.raises(ValueError, match="latency"):
        fake.latency = seconds
    with pytest.raises(ValueError, match="seconds"):
        fake.delay_next(seconds=seconds)


async def test_drop_next_disconnects_without_reply_and_records_nothing(
    client: httpx.AsyncClient, fake: FakeTaapit
) -> None:
    fake.drop_next()

    with pytest.raises(
        httpx.RemoteProtocolError, match="Server disconnected without sending a response"
    ):
        await post(client, LEAD, lead(), key="k")
    retried = await post(client, LEAD, lead(), key="k")

    assert retried.status_code == 200
    assert "idempotent-replayed" not in retried.headers
    assert len(fake.leads) == 1
    assert [(r.status, r.fault) for r in fake.requests] == [(None, "drop"), (200, None)]


async def test_drop_after_record_loses_the_reply_and_the_retry_gets_it_back(
    client: httpx.AsyncClient, fake: FakeTaapit
) -> None:
    fake.drop_next(after_record=True)

    with pytest.raises(httpx.RemoteProtocolError):
        await post(client, SALE, sale(trackingId="t"), key="order_1")
    assert len(fake.sales) == 1
    retried = await post(client, SALE, sale(trackingId="t"), key="order_1")

    assert retried.status_code == 200
    assert retried.json()["eventId"] == fake.sales[0].event_id
    assert retried.headers["idempotent-replayed"] == "true"
    assert len(fake.sales) == 1
    assert fake.attempts("order_1") == 2
    assert [(r.status, r.fault) for r in fake.requests] == [
        (None, "drop_after_record"),
        (200, None),
    ]


async def test_queued_faults_fire_in_order(client: httpx.AsyncClient, fake: FakeTaapit) -> None:
    fake.fail_next(status=500)
    fake.rate_limit_next()
    fake.drop_next()

    statuses: list[int | None] = []
    for _ in range(4):
        try:
            statuses.append((await post(client, LEAD, lead())).status_code)
        except httpx.RemoteProtocolError:
            statuses.append(None)

    assert statuses == [500, 429, None, 200]


async def test_faults_touch_only_the_api_routes(
    client: httpx.AsyncClient, fake: FakeTaapit
) -> None:
    fake.fail_next()

    assert (await client.post("/nowhere", json={})).status_code == 404
    assert (await client.get("/_fake/stats")).status_code == 200
    assert (await post(client, LEAD, lead())).status_code == 503


async def test_clear_faults_cancels_queued_and_random_faults(
    client: httpx.AsyncClient, fake: FakeTaapit
) -> None:
    fake.fail_next(3)
    fake.set_fault_rates(error_rate=1.0, seed=1)

    fake.clear_faults()

    assert (await post(client, LEAD, lead())).status_code == 200


async def _outcomes(fake: FakeTaapit, count: int) -> list[int | str]:
    outcomes: list[int | str] = []
    async with httpx.AsyncClient(
        transport=fake.transport(), base_url="http://t", headers=AUTH
    ) as http:
        for i in range(count):
            try:
                outcomes.append((await post(http, LEAD, lead(), key=f"k{i}")).status_code)
            except httpx.RemoteProtocolError:
                recorded = any(e.idempotency_key == f"k{i}" for e in fake.events)
                outcomes.append("lost reply" if recorded else "drop")
    return outcomes


async def test_seeded_fault_plan_is_reproducible() -> None:
    plans = []
    for seed in (7, 7, 8):
        fake = FakeTaapit()
        fake.set_fault_rates(
            error_rate=0.2,
            drop_rate=0.1,
            rate_limit_rate=0.1,
            drop_after_record_share=0.5,
            seed=seed,
        )
        plans.append(await _outcomes(fake, 300))

    assert plans[0] == plans[1]
    assert plans[0] != plans[2]
    counts = {outcome: plans[0].count(outcome) for outcome in set(plans[0])}
    assert set(counts) == {200, 503, 429, "drop", "lost reply"}
    assert 30 <= counts[503] <= 90
    assert 10 <= counts[429] <= 50
    assert 10 <= counts["drop"] + counts["lost reply"] <= 50


async def test_fault_plan_latency_is_bounded_jitter() -> None:
    fake = FakeTaapit()
    fake.set_fault_rates(latency=0.02, seed=3)

    started = time.monotonic()
    outcomes = await _outcomes(fake, 10)

    assert outcomes == [200] * 10
    assert 0.02 < time.monotonic() - started < 0.5


async def test_fault_plan_can_lose_every_reply_after_recording() -> None:
    fake = FakeTaapit()
    fake.set_fault_rates(drop_rate=1.0, drop_after_record_share=1.0, seed=1)

    assert await _outcomes(fake, 5) == ["lost reply"] * 5


@pytest.mark.parametrize(
    "rates",
    [
        {"error_rate": 1.5},
        {"drop_rate": -0.1},
        {"error_rate": 0.6, "drop_rate": 0.5},
        {"drop_after_record_share": 2},
        {"error_status": 200},
        {"latency": -1},
    ],
)
def test_fault_rates_refuse_nonsense(fake: FakeTaapit, rates: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must"):
        fake.set_fault_rates(**rates)


# -- control endpoints ------------------------------------------------------------------


async def test_control_events_lists_events_with_exact_amounts_and_attempts(
    client: httpx.AsyncClient, fake: FakeTaapit
) -> None:
    fake.fail_next()
    await post(client, SALE, CURL_SALE_WITH_TRACKING_ID, key="k")
    await post(client, SALE, CURL_SALE_WITH_TRACKING_ID, key="k")
    precise = (
        '{"trackingId": "t", "customer": {"externalId": "u"}, '
        '"amount": 0.1000000000000000000001, "currency": "eur"}'
    )
    await post(client, SALE, precise)

    response = await client.get("/_fake/events")
    events = json.loads(response.text, parse_float=Decimal)

    assert response.status_code == 200
    assert [e["amount"] for e in events] == [Decimal("99.99"), Decimal("0.1000000000000000000001")]
    assert [e["attempts"] for e in events] == [2, None]
    assert events[0]["customer"]["external_id"] == "user_123"
    assert events[0]["headers"]["authorization"] == "<redacted>"
    assert events[0]["body"]["metadata"] == {"orderId": "order_456"}


async def test_control_requests_and_stats_report_the_log(
    client: httpx.AsyncClient, fake: FakeTaapit
) -> None:
    fake.fail_next()
    await post(client, LEAD, lead(), key="k")
    await post(client, LEAD, lead(), key="k")

    log = (await client.get("/_fake/requests")).json()
    stats = (await client.get("/_fake/stats")).json()

    assert [(r["status"], r["fault"], r["idempotency_key"]) for r in log] == [
        (503, "error", "k"),
        (200, None, "k"),
    ]
    assert stats == {"events": 1, "leads": 1, "sales": 0, "requests": 2, "replayed": 0, "faults": 1}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"fail": 1, "status": 502}, 502),
        ({"rate_limit": 1, "retry_after": "3"}, 429),
        ({"delay": 1, "seconds": 0.01}, 200),
        ({"error_rate": 1.0, "seed": 1}, 503),
        ({"error_rate": 1.0, "error_status": 500}, 500),
    ],
)
async def test_control_faults_inject_faults(
    client: httpx.AsyncClient, spec: dict[str, Any], expected: int
) -> None:
    assert (await client.post("/_fake/faults", json=spec)).json() == {"success": True}

    assert (await post(client, LEAD, lead())).status_code == expected


@pytest.mark.parametrize("after_record", [False, True])
async def test_control_faults_inject_drops(
    client: httpx.AsyncClient, fake: FakeTaapit, after_record: bool
) -> None:
    await client.post("/_fake/faults", json={"drop": 1, "after_record": after_record})

    with pytest.raises(httpx.RemoteProtocolError):
        await post(client, LEAD, lead())
    assert len(fake.leads) == int(after_record)


async def test_control_faults_clear_and_reset(client: httpx.AsyncClient, fake: FakeTaapit) -> None:
    await client.post("/_fake/faults", json={"fail": 5})
    await client.post("/_fake/faults", json={"clear": True})
    await post(client, LEAD, lead())

    assert (await post(client, LEAD, lead())).status_code == 200
    assert (await client.post("/_fake/reset")).status_code == 200
    assert fake.events == []


@pytest.mark.parametrize(
    "spec",
    [
        "not json",
        [1],
        {},
        {"explode": 1},
        {"fail": 0},
        {"fail": 1, "status": 200},
        {"fail": 1, "seconds": 2},
        {"delay": 1, "seconds": -1},
        {"error_rate": 2},
        {"error_rate": 0.1, "bogus": 1},
    ],
)
async def test_control_faults_refuse_a_bad_spec(client: httpx.AsyncClient, spec: Any) -> None:
    content = spec if isinstance(spec, str) else json.dumps(spec)

    response = await client.post("/_fake/faults", content=content)

    assert_rejected(response, 400, "invalid_request", None)


async def test_control_endpoints_check_method_and_path_and_are_not_logged(
    client: httpx.AsyncClient, fake: FakeTaapit
) -> None:
    assert (await client.post("/_fake/events")).status_code == 405
    assert (await client.get("/_fake/reset")).status_code == 405
    assert (await client.get("/_fake/nothing")).status_code == 404

    assert fake.requests == []


# -- concurrency ------------------------------------------------------------------------


async def test_concurrent_requests_and_a_reading_thread_see_consistent_state(
    client: httpx.AsyncClient, fake: FakeTaapit
) -> None:
    stop = threading.Event()
    seen: list[int] = []

    def inspect() -> None:
        while not stop.is_set():
            events, stats = fake.events, fake.stats()
            assert stats["events"] >= len(events)
            seen.append(len(events))
            time.sleep(0.001)  # let the event loop have the GIL

    reader = threading.Thread(target=inspect)
    reader.start()
    try:
        await asyncio.gather(
            *(post(client, LEAD, lead(f"u{i % 50}"), key=f"k{i % 150}") for i in range(300))
        )
    finally:
        stop.set()
        reader.join()

    assert len(fake.leads) == 150
    assert len({e.event_id for e in fake.events}) == 150
    assert sum(fake.attempts(f"k{i}") for i in range(150)) == 300
    assert seen == sorted(seen)
