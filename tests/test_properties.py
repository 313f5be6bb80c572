"""Property tests: any input to the public calls gives a valid request or a ValidationError."""

from __future__ import annotations

import asyncio
import json
import math
import re
from decimal import Decimal
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taapit_async import AsyncTaapit, Customer, TrackResult, ValidationError
from taapit_async._currencies import CURRENCY_EXPONENTS

from ._support import API_KEY

TRACKING_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
CUSTOMER_KEYS = {"externalId", "email", "firstname", "lastname", "phoneNumber", "avatarUrl"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
anything = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10),
    st.decimals(), st.binary(max_size=5), st.just(object()),
)  # fmt: skip

tracking_ids = st.one_of(
    st.from_regex(TRACKING_ID, fullmatch=True), st.text(max_size=140), anything
)
customer_fields = st.sampled_from(
    ["external_id", "email", "firstname", "lastname", "phone_number", "avatar_url",
     "externalId", "nickname"]
)  # fmt: skip
customers = st.one_of(
    st.builds(Customer, external_id=st.text(min_size=1, max_size=30).filter(str.strip)),
    st.dictionaries(customer_fields, st.one_of(st.text(max_size=30), anything), max_size=6),
    anything,
)
amounts = st.one_of(
    st.integers(min_value=-(10**18), max_value=10**18),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(0, 6).flatmap(lambda p: st.decimals(allow_nan=True, allow_infinity=True, places=p)),
    st.decimals(allow_nan=True, allow_infinity=True),
    anything,
)
currencies = st.one_of(
    st.sampled_from(sorted(CURRENCY_EXPONENTS)).map(lambda c: c.upper()),
    st.sampled_from(sorted(CURRENCY_EXPONENTS)),
    st.text(max_size=5),
    anything,
)
metadatas = st.one_of(
    st.none(), st.dictionaries(st.text(max_size=10), json_values, max_size=5), anything
)


def check_body(kind: str, body: bytes) -> None:
    """The body is strict JSON in Taapit's shape, whatever the input was."""
    data = json.loads(body, parse_float=Decimal, parse_constant=_refuse)
    assert isinstance(data, dict)
    assert not {k for k, v in data.items() if v is None}
    assert set(data) <= {"trackingId", "customer", "amount", "currency", "metadata"}
    if kind == "lead" or "trackingId" in data:
        assert TRACKING_ID.fullmatch(data["trackingId"])
    customer = data["customer"]
    assert set(customer) <= CUSTOMER_KEYS
    assert customer["externalId"].strip()
    assert all(isinstance(v, str) for v in customer.values())
    if kind == "sale":
        amount = Decimal(data["amount"])
        assert amount >= 0
        assert data["currency"] in CURRENCY_EXPONENTS
        assert -int(amount.as_tuple().exponent) <= max(CURRENCY_EXPONENTS[data["currency"]], 0) or (
            amount == amount.to_integral_value()
        )
    else:
        assert "amount" not in data
        assert "currency" not in data


def _refuse(constant: str) -> Any:
    raise AssertionError(f"non-JSON constant {constant} in a request body")


async def call(kind: str, **arguments: Any) -> tuple[TrackResult | None, list[bytes]]:
    bodies: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        return httpx.Response(200, json={"success": True})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        taapit = AsyncTaapit(API_KEY, http_client=http)
        method = taapit.track.lead if kind == "lead" else taapit.track.sale
        try:
            return await method(**arguments), bodies
        except ValidationError:
            assert bodies == []  # nothing may leave before validation passed
            return None, bodies


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tracking_id=tracking_ids, customer=customers, metadata=metadatas)
def test_any_lead_input_gives_a_valid_request_or_a_validation_error(
    tracking_id: Any, customer: Any, metadata: Any
) -> None:
    result, bodies = asyncio.run(
        call("lead", tracking_id=tracking_id, customer=customer, metadata=metadata)
    )
    if result is not None:
        assert result.success
        (body,) = bodies
        check_body("lead", body)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tracking_id=st.none() | tracking_ids,
    customer=customers,
    amount=amounts,
    currency=currencies,
    metadata=metadatas,
)
def test_any_sale_input_gives_a_valid_request_or_a_validation_error(
    tracking_id: Any, customer: Any, amount: Any, currency: Any, metadata: Any
) -> None:
    result, bodies = asyncio.run(
        call(
            "sale",
            tracking_id=tracking_id,
            customer=customer,
            amount=amount,
            currency=currency,
            metadata=metadata,
        )
    )
    if result is not None:
        assert result.success
        (body,) = bodies
        check_body("sale", body)


@settings(max_examples=200, deadline=None)
@given(
    amount=st.decimals(min_value=0, max_value=10**9, places=2, allow_nan=False),
    currency=st.sampled_from(["eur", "usd", "gbp", "chf"]),
)
def test_two_decimal_amounts_arrive_with_their_exact_value(amount: Decimal, currency: str) -> None:
    result, bodies = asyncio.run(
        call("sale", customer={"external_id": "u"}, amount=amount, currency=currency)
    )
    assert result is not None
    assert result.success
    sent = json.loads(bodies[0], parse_float=Decimal)["amount"]
    assert Decimal(sent) == amount


@settings(max_examples=200, deadline=None)
@given(value=st.floats(min_value=0, max_value=1e9, allow_nan=False))
def test_float_amounts_are_sent_rounded_to_cents_or_refused(value: float) -> None:
    try:
        result, bodies = asyncio.run(
            call("sale", customer={"external_id": "u"}, amount=value, currency="eur")
        )
    except ValidationError:  # pragma: no cover  # raised inside call() and caught there
        raise
    if result is None:
        assert not math.isclose(round(value, 2), value, rel_tol=1e-12)
        return
    sent = json.loads(bodies[0], parse_float=Decimal)["amount"]
    assert math.isclose(float(sent), value, rel_tol=1e-12)
