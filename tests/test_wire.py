"""The wire format: the bodies of the API reference, byte for byte in meaning."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from taapit_async import Customer
from taapit_async._models import LeadEvent, SaleEvent
from taapit_async._wire import Reply, ReplyError, encode_event, parse_reply

TID = "rLnWe1uz9t282v7g"


def decoded(event: LeadEvent | SaleEvent) -> Any:
    return json.loads(encode_event(event), parse_float=Decimal)


def test_reference_curl_lead_body() -> None:
    event = LeadEvent.build(
        tracking_id=TID,
        customer=Customer(external_id="user_123", email="john@example.com"),
        metadata=None,
    )
    assert encode_event(event) == (
        b'{"trackingId":"rLnWe1uz9t282v7g",'
        b'"customer":{"externalId":"user_123","email":"john@example.com"}}'
    )


def test_reference_lead_with_names_and_metadata() -> None:
    event = LeadEvent.build(
        tracking_id=TID,
        customer={
            "external_id": "user_123",
            "email": "john@example.com",
            "firstname": "John",
            "lastname": "Doe",
        },
        metadata={"source": "signup-api", "plan": "pro"},
    )
    assert decoded(event) == {
        "trackingId": TID,
        "customer": {
            "externalId": "user_123",
            "email": "john@example.com",
            "firstname": "John",
            "lastname": "Doe",
        },
        "metadata": {"source": "signup-api", "plan": "pro"},
    }


def test_reference_sale_with_tracking_id() -> None:
    event = SaleEvent.build(
        tracking_id=TID,
        customer={"external_id": "user_123", "email": "john@example.com"},
        amount=Decimal("99.99"),
        currency="eur",
        metadata={"orderId": "order_456"},
    )
    assert decoded(event) == {
        "trackingId": TID,
        "customer": {"externalId": "user_123", "email": "john@example.com"},
        "amount": Decimal("99.99"),
        "currency": "eur",
        "metadata": {"orderId": "order_456"},
    }
    assert b'"amount":99.99,' in encode_event(event)


def test_reference_sale_without_tracking_id_omits_the_key() -> None:
    event = SaleEvent.build(
        tracking_id=None,
        customer={"external_id": "user_123"},
        amount=99.99,
        currency="EUR",
        metadata=None,
    )
    assert encode_event(event) == (
        b'{"customer":{"externalId":"user_123"},"amount":99.99,"currency":"eur"}'
    )


def test_reference_full_request_body_with_every_customer_field() -> None:
    event = SaleEvent.build(
        tracking_id=TID,
        customer=Customer(
            external_id="user_123",
            email="john@example.com",
            firstname="John",
            lastname="Doe",
            phone_number="+33612345678",
            avatar_url="https://example.com/avatar.jpg",
        ),
        amount=Decimal("99.99"),
        currency="eur",
        metadata={},
    )
    assert decoded(event) == {
        "trackingId": TID,
        "customer": {
            "externalId": "user_123",
            "email": "john@example.com",
            "firstname": "John",
            "lastname": "Doe",
            "phoneNumber": "+33612345678",
            "avatarUrl": "https://example.com/avatar.jpg",
        },
        "amount": Decimal("99.99"),
        "currency": "eur",
        "metadata": {},
    }


def test_metadata_goes_out_exactly_as_given() -> None:
    metadata = {
        "orderId": "order_456",
        "product_ids": ["p1", "p2"],
        "CamelCase": {"snake_case": None, "n": 1.5},
        "unicode": "crème brûlée",
    }
    event = LeadEvent.build(tracking_id=TID, customer={"external_id": "u"}, metadata=metadata)
    assert decoded(event)["metadata"] == json.loads(json.dumps(metadata), parse_float=Decimal)
    assert "crème brûlée".encode() in encode_event(event)


def test_none_customer_fields_are_omitted_never_null() -> None:
    event = LeadEvent.build(
        tracking_id=TID,
        customer={"external_id": "u", "email": None, "firstname": None},
        metadata=None,
    )
    body = encode_event(event)
    assert b"null" not in body
    assert decoded(event) == {"trackingId": TID, "customer": {"externalId": "u"}}


@pytest.mark.parametrize(
    ("amount", "currency", "literal"),
    [
        (Decimal("29.99"), "eur", b'"amount":29.99,'),
        (30, "eur", b'"amount":30,'),
        (Decimal("30.00"), "eur", b'"amount":30,'),
        (0.1 + 0.2, "eur", b'"amount":0.3,'),
        (500, "jpy", b'"amount":500,'),
        (Decimal("1.234"), "kwd", b'"amount":1.234,'),
        (Decimal("9999999999.99"), "usd", b'"amount":9999999999.99,'),
        (0, "usd", b'"amount":0,'),
    ],
)
def test_amount_is_a_json_number_in_currency_units(
    amount: Any, currency: str, literal: bytes
) -> None:
    event = SaleEvent.build(
        tracking_id=None,
        customer={"external_id": "u"},
        amount=amount,
        currency=currency,
        metadata=None,
    )
    assert literal in encode_event(event)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", Reply()),
        (b"OK", Reply()),
        (b"\xff\xfe", Reply()),
        (b"[1, 2]", Reply()),
        (b"null", Reply()),
        (b'{"success": true, "eventId": "evt_1"}', Reply(success=True, event_id="evt_1")),
        (b'{"id": "evt_2", "extra": {"x": 1}}', Reply(id="evt_2")),
        (b'{"success": "yes", "eventId": 5, "error": 3}', Reply()),
        (
            b'{"success": false, "error": {"code": "duplicate", "message": "seen", "x": 1}}',
            Reply(success=False, error=ReplyError(code="duplicate", message="seen")),
        ),
        (
            b'{"success": false, "error": "customer not found"}',
            Reply(success=False, error=ReplyError(message="customer not found")),
        ),
        (
            b'{"success": false, "error": {"code": 7, "message": null}}',
            Reply(success=False, error=ReplyError()),
        ),
    ],
)
def test_replies_are_read_leniently(body: bytes, expected: Reply) -> None:
    assert parse_reply(body) == expected


@pytest.mark.parametrize(
    "body",
    [
        b'\xef\xbb\xbf{"success": false, "error": "bad"}',  # UTF-8 with a byte order mark
        '{"success": false, "error": "bad"}'.encode("utf-16"),
        '{"success": false, "error": "bad"}'.encode("utf-32-le"),
    ],
    ids=["utf-8-bom", "utf-16", "utf-32"],
)
def test_a_reply_in_any_encoding_json_allows_is_read(body: bytes) -> None:
    # A refusal must not read as an empty reply, which counts as delivered.
    assert parse_reply(body) == Reply(success=False, error=ReplyError(message="bad"))
