"""Webhook helpers: tracking id through metadata, Stripe amounts, Checkout sales, signatures."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import logging
import subprocess
import sys
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taapit_async import (
    ConfigurationError,
    TaapitError,
    ValidationError,
    ValidationTypeError,
    webhooks,
)
from taapit_async._currencies import CURRENCY_EXPONENTS, currency_exponent
from taapit_async._models import SaleEvent
from taapit_async.webhooks import (
    METADATA_KEY,
    StripeSale,
    WebhookSignatureError,
    sign_stripe_payload,
    stripe_amount_to_units,
    stripe_checkout_sale,
    tracking_id_from,
    units_to_stripe_amount,
    verify_stripe_signature,
    with_tracking_id,
)

from ._support import frame_locals

TID = "rLnWe1uz9t282v7g"
OTHER_TID = "Zx9_other-visitor"
INVALID_TIDS = ["", "has space", "<script>", "x" * 129, "caf\u00e9", "a\r\nSet-Cookie: x"]

# Stripe's documented lists (https://docs.stripe.com/currencies), written out again here so
# that the tests check the module against the documentation, not against itself.
STRIPE_ZERO_DECIMAL = ["bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf",
                       "vnd", "vuv", "xaf", "xof", "xpf"]  # fmt: skip
STRIPE_THREE_DECIMAL = ["bhd", "jod", "kwd", "omr", "tnd"]
STRIPE_WHOLE_UNITS_AS_TWO_DECIMAL = ["isk", "ugx"]  # Stripe's "special cases"


def sale_event(amount: Decimal, currency: str) -> SaleEvent:
    """What ``taapit.track.sale`` validates, without a client."""
    return SaleEvent.build(
        tracking_id=TID,
        customer={"external_id": "user_123"},
        amount=amount,
        currency=currency,
        metadata=None,
    )


# --- Tracking id in metadata ------------------------------------------------------------


def test_with_tracking_id_returns_a_new_dict_and_leaves_the_input_alone() -> None:
    metadata = {"order_id": "order_456"}
    result = with_tracking_id(metadata, TID)
    assert result == {"order_id": "order_456", "ta_tid": TID}
    assert metadata == {"order_id": "order_456"}
    assert result is not metadata


def test_with_tracking_id_accepts_no_metadata() -> None:
    assert with_tracking_id(None, TID) == {METADATA_KEY: TID}


def test_no_tracking_id_adds_nothing() -> None:
    assert with_tracking_id({"order_id": "1"}, None) == {"order_id": "1"}
    assert with_tracking_id(None, None) == {}


@pytest.mark.parametrize("tracking_id", INVALID_TIDS)
def test_invalid_tracking_id_adds_nothing_and_is_never_logged(
    tracking_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="taapit_async"):
        result = with_tracking_id({"order_id": "1"}, tracking_id)
    assert result == {"order_id": "1"}
    if tracking_id:
        assert tracking_id not in caplog.text


def test_the_same_tracking_id_already_present_is_kept() -> None:
    assert with_tracking_id({"ta_tid": TID}, TID) == {"ta_tid": TID}


def test_a_different_tracking_id_already_present_is_refused_without_echoing_either() -> None:
    with pytest.raises(ValidationError, match="already has a different 'ta_tid'") as info:
        with_tracking_id({"ta_tid": OTHER_TID}, TID)
    assert TID not in str(info.value)
    assert OTHER_TID not in str(info.value)


def test_an_existing_tracking_id_is_kept_when_no_new_one_is_given() -> None:
    assert with_tracking_id({"ta_tid": OTHER_TID}, None) == {"ta_tid": OTHER_TID}
    assert with_tracking_id({"ta_tid": OTHER_TID}, "bad id!") == {"ta_tid": OTHER_TID}


def test_stripe_limit_of_fifty_metadata_keys_is_checked_before_adding_ours() -> None:
    forty_nine = {f"k{i}": "v" for i in range(49)}
    assert len(with_tracking_id(forty_nine, TID)) == 50
    fifty = {f"k{i}": "v" for i in range(50)}
    with pytest.raises(ValidationError, match="at most 50"):
        with_tracking_id(fifty, TID)
    assert with_tracking_id(fifty, None) == fifty  # nothing added: nothing to refuse


def test_with_tracking_id_refuses_arguments_of_the_wrong_type() -> None:
    with pytest.raises(ValidationTypeError, match="metadata must be a mapping"):
        with_tracking_id(["ta_tid"], TID)  # type: ignore[arg-type]
    with pytest.raises(ValidationTypeError, match="tracking_id must be a str"):
        with_tracking_id({}, 12345)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ({"data": {"object": {"metadata": {"ta_tid": TID}}}}, TID),  # an event
        ({"id": "cs_test_1", "metadata": {"ta_tid": TID}}, TID),  # a Checkout Session
        ({"ta_tid": TID, "order_id": "1"}, TID),  # metadata itself
        (None, None),
        ({}, None),
        ({"data": {"object": {"metadata": {}}}}, None),
        ({"data": {"object": {"metadata": None}}}, None),
        ({"id": "pi_1", "metadata": {"order_id": "1"}}, None),
    ],
)
def test_tracking_id_from_reads_events_objects_and_metadata(
    source: dict[str, Any] | None, expected: str | None
) -> None:
    assert tracking_id_from(source) == expected


def test_tracking_id_from_does_not_fall_through_to_another_shape() -> None:
    """The first matching shape decides, so the answer never depends on stray keys."""
    event = {"data": {"object": {"metadata": {}}}, "metadata": {"ta_tid": TID}, "ta_tid": TID}
    assert tracking_id_from(event) is None
    session = {"metadata": {}, "ta_tid": TID}
    assert tracking_id_from(session) is None


def test_metadata_keys_named_like_stripe_fields_are_still_metadata() -> None:
    """Stripe metadata values are strings, so they are never taken for an event or object."""
    assert tracking_id_from({"data": "x", "metadata": "y", "ta_tid": TID}) == TID


@pytest.mark.parametrize("tracking_id", INVALID_TIDS)
def test_tracking_id_from_treats_a_malformed_id_as_absent(tracking_id: str) -> None:
    assert tracking_id_from({"metadata": {"ta_tid": tracking_id}}) is None
    assert tracking_id_from({"metadata": {"ta_tid": 42}}) is None


def test_tracking_id_from_refuses_what_is_not_a_mapping() -> None:
    with pytest.raises(ValidationTypeError, match="must be a mapping"):
        tracking_id_from('{"ta_tid": "x"}')  # type: ignore[arg-type]


def test_metadata_round_trip_through_a_stripe_object() -> None:
    class StripeObject(dict[str, Any]):
        """The ``stripe`` package's objects are dict subclasses."""

    session = StripeObject(id="cs_test_1", metadata=with_tracking_id({"a": "b"}, TID))
    assert tracking_id_from(session) == TID


# --- Stripe amounts ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        (2999, "eur", "29.99"),
        (2999, "EUR", "29.99"),
        (1000, "usd", "10.00"),
        (5, "gbp", "0.05"),
        (0, "eur", "0.00"),
        (500, "jpy", "500"),
        (50000, "krw", "50000"),
        (5000, "mga", "5000.00"),  # zero-decimal at Stripe, two decimals in ISO 4217
        (5120, "kwd", "5.120"),
        (1230, "bhd", "1.230"),
        (1234500, "isk", "12345"),  # two-decimal at Stripe, no minor unit in ISO 4217
        (500000, "ugx", "5000"),
        (12345, "huf", "123.45"),  # only HUF and TWD payouts are whole units
        (12345, "twd", "123.45"),
    ],
)
def test_stripe_amounts_convert_by_stripes_rules(amount: int, currency: str, expected: str) -> None:
    result = stripe_amount_to_units(amount, currency)
    assert result == Decimal(expected)
    assert str(result) == expected  # the ISO 4217 number of decimals
    assert sale_event(result, currency).amount == Decimal(expected)


@pytest.mark.parametrize("currency", STRIPE_ZERO_DECIMAL)
def test_stripe_zero_decimal_currencies_count_units(currency: str) -> None:
    assert stripe_amount_to_units(500, currency) == 500
    assert units_to_stripe_amount(500, currency) == 500


@pytest.mark.parametrize("currency", STRIPE_THREE_DECIMAL)
def test_stripe_three_decimal_currencies_count_thousandths(currency: str) -> None:
    assert stripe_amount_to_units(5120, currency) == Decimal("5.12")
    assert units_to_stripe_amount(Decimal("5.12"), currency) == 5120


@pytest.mark.parametrize("currency", STRIPE_WHOLE_UNITS_AS_TWO_DECIMAL)
def test_isk_and_ugx_are_two_decimal_at_stripe_though_iso_gives_them_none(currency: str) -> None:
    assert currency_exponent(currency) == 0
    assert stripe_amount_to_units(500, currency) == 5
    assert units_to_stripe_amount(5, currency) == 500
    sale_event(stripe_amount_to_units(1234500, currency), currency)  # passes the SDK


@pytest.mark.parametrize("currency", STRIPE_WHOLE_UNITS_AS_TWO_DECIMAL)
def test_isk_and_ugx_amounts_not_divisible_by_100_are_refused_as_not_from_stripe(
    currency: str,
) -> None:
    with pytest.raises(ValidationError, match=r"not a Stripe amount for (ISK|UGX).*unchanged"):
        stripe_amount_to_units(1234550, currency)


def test_three_decimal_amount_with_a_last_digit_is_read_exactly() -> None:
    """Stripe refuses to create it, but if it reports one, converting it loses nothing."""
    assert stripe_amount_to_units(5124, "kwd") == Decimal("5.124")


@pytest.mark.parametrize("currency", sorted(CURRENCY_EXPONENTS))
def test_every_currency_of_the_sdk_is_known(currency: str) -> None:
    assert stripe_amount_to_units(0, currency) == 0
    assert units_to_stripe_amount(0, currency) == 0


@pytest.mark.parametrize(
    ("amount", "error", "message"),
    [
        (True, ValidationTypeError, "amount must be Stripe's integer amount"),
        (29.99, ValidationTypeError, "amount must be Stripe's integer amount"),
        ("2999", ValidationTypeError, "amount must be Stripe's integer amount"),
        (Decimal(2999), ValidationTypeError, "amount must be Stripe's integer amount"),
        (None, ValidationTypeError, "amount must be Stripe's integer amount"),
        (-1, ValidationError, "amount must be zero or more"),
        (10**15, ValidationError, "more than 15 digits"),
        pytest.param(10**5000, ValidationError, "more than 15 digits", id="5000-digits"),
    ],
)
def test_bad_stripe_amounts_are_refused_naming_the_field(
    amount: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        stripe_amount_to_units(amount, "eur")  # type: ignore[arg-type]


@pytest.mark.parametrize("currency", ["xxx", "eu", "", "euro", "xau"])
def test_unknown_currency_is_refused(currency: str) -> None:
    with pytest.raises(ValidationError, match=r"currency .* is not an active ISO 4217 code"):
        stripe_amount_to_units(100, currency)
    with pytest.raises(ValidationError, match=r"currency .* is not an active ISO 4217 code"):
        units_to_stripe_amount(1, currency)


def test_currency_of_the_wrong_type_is_a_type_error() -> None:
    with pytest.raises(ValidationTypeError, match="currency must be an ISO 4217 code"):
        stripe_amount_to_units(100, 978)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        (Decimal("29.99"), "eur", 2999),
        (Decimal("29.990"), "eur", 2999),
        (29, "eur", 2900),
        (Decimal("0.01"), "usd", 1),
        (Decimal(500), "jpy", 500),
        (Decimal("1E+3"), "jpy", 1000),
        (12345, "isk", 1234500),
        (Decimal("5000"), "ugx", 500000),
        (Decimal("5.12"), "kwd", 5120),
        (Decimal("5.120"), "kwd", 5120),
        (Decimal("123.45"), "huf", 12345),
        (0, "eur", 0),
        (Decimal("-0"), "eur", 0),
    ],
)
def test_units_convert_to_stripe_amounts_exactly(
    amount: Decimal | int, currency: str, expected: int
) -> None:
    assert units_to_stripe_amount(amount, currency) == expected


@pytest.mark.parametrize(
    ("amount", "currency", "message"),
    [
        (Decimal("29.999"), "eur", r"3 decimals, more than Stripe charges in EUR \(2\)"),
        (Decimal("1.5"), "jpy", r"more than Stripe charges in JPY \(0\)"),
        (Decimal("12345.5"), "isk", r"ISK \(0: whole units only"),
        (Decimal("0.5"), "ugx", r"UGX \(0: whole units only"),
        (Decimal("5.124"), "kwd", r"KWD \(2: Stripe requires the last of its three digits"),
    ],
)
def test_units_with_more_decimals_than_stripe_charges_are_refused(
    amount: Decimal, currency: str, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        units_to_stripe_amount(amount, currency)


@pytest.mark.parametrize(
    ("amount", "error", "message"),
    [
        (29.99, ValidationTypeError, "floats are not exact"),
        (True, ValidationTypeError, "must be a Decimal or an int"),
        ("29.99", ValidationTypeError, "must be a Decimal or an int"),
        (Decimal("NaN"), ValidationError, "finite"),
        (Decimal("Infinity"), ValidationError, "finite"),
        (Decimal("-0.01"), ValidationError, "zero or more"),
        (-1, ValidationError, "zero or more"),
        (Decimal("1E+13"), ValidationError, "larger than any Stripe amount"),
        (Decimal("1E+999999999"), ValidationError, "larger than any Stripe amount"),
        (Decimal("1E-999999999"), ValidationError, "decimals"),
    ],
)
def test_bad_units_are_refused(amount: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        units_to_stripe_amount(amount, "eur")  # type: ignore[arg-type]


def charged_decimals(currency: str) -> int:
    """How many decimals Stripe charges in, from the documented lists above."""
    if currency in STRIPE_ZERO_DECIMAL or currency in STRIPE_WHOLE_UNITS_AS_TWO_DECIMAL:
        return 0
    if currency in STRIPE_THREE_DECIMAL:
        return 2  # three digits, the last of which must be 0
    iso = currency_exponent(currency)
    assert iso is not None
    return min(2, iso)


@given(
    currency=st.sampled_from(sorted(CURRENCY_EXPONENTS)),
    units=st.integers(min_value=0, max_value=10**10),
    places=st.integers(min_value=0, max_value=4),
)
def test_units_round_trip_through_stripe_amounts(currency: str, units: int, places: int) -> None:
    """Whatever Stripe would accept comes back unchanged, and passes the SDK's validation."""
    amount = Decimal(units).scaleb(-places)
    exponent = amount.normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    decimals = max(0, -exponent)
    if units and decimals > charged_decimals(currency):
        with pytest.raises(ValidationError, match="decimals, more than Stripe charges"):
            units_to_stripe_amount(amount, currency)
        return
    back = stripe_amount_to_units(units_to_stripe_amount(amount, currency), currency)
    assert back == amount
    assert sale_event(back, currency).amount == amount


@given(
    currency=st.sampled_from(sorted(CURRENCY_EXPONENTS)),
    stripe_amount=st.integers(min_value=0, max_value=10**12),
)
def test_every_stripe_amount_gives_a_valid_sale_or_a_clear_error(
    currency: str, stripe_amount: int
) -> None:
    # Only where Stripe writes two decimals the currency does not have (ISK, UGX, ...).
    if (
        currency_exponent(currency) == 0
        and currency not in STRIPE_ZERO_DECIMAL
        and stripe_amount % 100 != 0
    ):
        with pytest.raises(ValidationError, match="is not a Stripe amount"):
            stripe_amount_to_units(stripe_amount, currency)
        return
    units = stripe_amount_to_units(stripe_amount, currency)
    assert sale_event(units, currency).amount == units
    if currency not in STRIPE_THREE_DECIMAL or stripe_amount % 10 == 0:
        assert units_to_stripe_amount(units, currency) == stripe_amount


# --- Stripe Checkout --------------------------------------------------------------------

# A checkout.session.completed event as Stripe sends it (fields from the API reference for
# Event and Checkout Session; unrelated fields trimmed).
CHECKOUT_COMPLETED = """
{
  "id": "evt_1PqRsTAbCdEfGhIj0a1b2c3d",
  "object": "event",
  "api_version": "2024-06-20",
  "created": 1700000000,
  "data": {
    "object": {
      "id": "cs_test_a1b2c3d4e5f6g7h8i9j0",
      "object": "checkout.session",
      "amount_subtotal": 2999,
      "amount_total": 2999,
      "cancel_url": "https://example.com/cancel",
      "client_reference_id": "user_123",
      "created": 1699999900,
      "currency": "eur",
      "customer": "cus_PqRsTuVwXyZ123",
      "customer_details": {
        "address": {"city": "Paris", "country": "FR", "line1": null, "line2": null,
                    "postal_code": "75001", "state": null},
        "email": "john@example.com",
        "name": "John Doe",
        "phone": null,
        "tax_exempt": "none",
        "tax_ids": []
      },
      "customer_email": null,
      "expires_at": 1700086300,
      "livemode": false,
      "metadata": {"order_id": "order_456", "ta_tid": "rLnWe1uz9t282v7g"},
      "mode": "payment",
      "payment_intent": "pi_3PqRsTAbCdEfGhIj1a2b3c4d",
      "payment_method_types": ["card"],
      "payment_status": "paid",
      "status": "complete",
      "success_url": "https://example.com/success",
      "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
      "url": null
    }
  },
  "livemode": false,
  "pending_webhooks": 1,
  "request": {"id": null, "idempotency_key": null},
  "type": "checkout.session.completed"
}
"""


def checkout_event(
    event_type: str = "checkout.session.completed", **session: Any
) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(CHECKOUT_COMPLETED)
    event["type"] = event_type
    event["data"]["object"].update(session)
    return event


def test_paid_checkout_session_becomes_a_sale() -> None:
    sale = stripe_checkout_sale(json.loads(CHECKOUT_COMPLETED))
    assert sale == StripeSale(
        tracking_id=TID,
        external_id="user_123",
        email="john@example.com",
        amount=Decimal("29.99"),
        currency="eur",
        idempotency_key="cs_test_a1b2c3d4e5f6g7h8i9j0",
    )


def test_checkout_sale_passes_the_sdk_sale_validation() -> None:
    sale = stripe_checkout_sale(checkout_event())
    assert sale is not None
    assert sale.external_id is not None
    event = SaleEvent.build(
        tracking_id=sale.tracking_id,
        customer={"external_id": sale.external_id, "email": sale.email},
        amount=sale.amount,
        currency=sale.currency,
        metadata=None,
    )
    assert (event.amount, event.currency, event.tracking_id) == (Decimal("29.99"), "eur", TID)


def test_checkout_sale_does_not_modify_the_event() -> None:
    event = checkout_event()
    before = copy.deepcopy(event)
    stripe_checkout_sale(event)
    assert event == before


def test_completed_session_with_a_delayed_payment_is_not_a_sale_yet() -> None:
    assert stripe_checkout_sale(checkout_event(payment_status="unpaid")) is None


def test_async_payment_succeeded_is_the_sale_with_the_sessions_idempotency_key() -> None:
    later = stripe_checkout_sale(
        checkout_event("checkout.session.async_payment_succeeded", id="cs_test_delayed")
    )
    assert later is not None
    assert later.idempotency_key == "cs_test_delayed"


def test_session_without_a_payment_is_not_a_sale() -> None:
    """A free trial or a setup-mode session: Stripe reports no amount, nothing was paid."""
    event = checkout_event(
        payment_status="no_payment_required", mode="setup", amount_total=None, currency=None
    )
    assert stripe_checkout_sale(event) is None


def test_redelivered_event_gives_the_same_idempotency_key() -> None:
    first = stripe_checkout_sale(checkout_event())
    again = checkout_event()
    again["id"] = "evt_another_delivery"
    second = stripe_checkout_sale(again)
    assert first is not None
    assert second is not None
    assert first.idempotency_key == second.idempotency_key


def test_external_id_is_client_reference_id_then_the_named_metadata_key() -> None:
    metadata = {"user_id": "user_from_metadata", "ta_tid": TID}
    with_reference = checkout_event(metadata=metadata)
    without = checkout_event(client_reference_id=None, metadata=metadata)
    assert _sale(with_reference, external_id_key="user_id").external_id == "user_123"
    assert _sale(without, external_id_key="user_id").external_id == "user_from_metadata"
    assert _sale(without).external_id is None  # no key is guessed


def test_email_falls_back_to_customer_email() -> None:
    event = checkout_event(customer_details=None, customer_email="prefilled@example.com")
    assert _sale(event).email == "prefilled@example.com"
    assert _sale(checkout_event(customer_details=None)).email is None


def test_malformed_tracking_id_in_the_session_gives_none() -> None:
    assert _sale(checkout_event(metadata={"ta_tid": "<script>"})).tracking_id is None
    assert _sale(checkout_event(metadata={})).tracking_id is None


@pytest.mark.parametrize(
    ("amount_total", "currency", "expected"),
    [(500, "jpy", Decimal(500)), (1234500, "isk", Decimal(12345)), (5120, "KWD", Decimal("5.12"))],
)
def test_checkout_amounts_follow_stripes_currency_rules(
    amount_total: int, currency: str, expected: Decimal
) -> None:
    sale = _sale(checkout_event(amount_total=amount_total, currency=currency))
    assert sale.amount == expected
    assert sale.currency == currency.lower()


def test_sale_repr_shows_no_email() -> None:
    assert "john@example.com" not in repr(_sale(checkout_event()))


def test_stripe_package_objects_work_as_events() -> None:
    class StripeObject(dict[str, Any]):
        """The ``stripe`` package's objects are dict subclasses."""

    event = StripeObject(checkout_event())
    event["data"] = StripeObject(data=None, object=StripeObject(event["data"]["object"]))
    assert _sale(event).amount == Decimal("29.99")


@pytest.mark.parametrize("event_type", ["payment_intent.succeeded", "checkout.session.expired"])
def test_other_event_types_are_refused(event_type: str) -> None:
    with pytest.raises(ValidationError, match=r"not checkout\.session\.completed or"):
        stripe_checkout_sale(checkout_event(event_type))


def test_event_without_a_type_is_refused() -> None:
    event = checkout_event()
    del event["type"]
    with pytest.raises(ValidationError, match="event type is missing"):
        stripe_checkout_sale(event)


def test_a_session_passed_instead_of_the_event_is_refused() -> None:
    session = checkout_event()["data"]["object"]
    with pytest.raises(ValidationError, match="event type is missing"):
        stripe_checkout_sale(session)
    session_as_event = {"type": "checkout.session.completed", "data": session}
    with pytest.raises(ValidationError, match=r"event.data.object is missing"):
        stripe_checkout_sale(session_as_event)


def test_an_object_that_is_not_a_checkout_session_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"not a checkout\.session"):
        stripe_checkout_sale(checkout_event(object="payment_intent"))


@pytest.mark.parametrize("field", ["id", "payment_status", "amount_total", "currency"])
def test_missing_session_fields_are_named(field: str) -> None:
    event = checkout_event()
    del event["data"]["object"][field]
    with pytest.raises(ValidationError, match=rf"event\.data\.object\.{field} is missing"):
        stripe_checkout_sale(event)


def test_bad_session_values_are_refused_naming_the_field() -> None:
    with pytest.raises(ValidationTypeError, match=r"event\.data\.object\.amount_total must be"):
        stripe_checkout_sale(checkout_event(amount_total="2999"))
    with pytest.raises(ValidationError, match=r"event\.data\.object\.currency 'zzz' is not"):
        stripe_checkout_sale(checkout_event(currency="zzz"))
    for bad_id in (42, "", "cs test with spaces"):
        with pytest.raises(ValidationError, match=r"event\.data\.object\.id must be the Check"):
            stripe_checkout_sale(checkout_event(id=bad_id))
    with pytest.raises(ValidationError, match="event type is 42, not checkout"):
        stripe_checkout_sale({**checkout_event(), "type": 42})


def test_checkout_sale_refuses_arguments_of_the_wrong_type() -> None:
    with pytest.raises(ValidationTypeError, match="event must be a mapping"):
        stripe_checkout_sale(CHECKOUT_COMPLETED)  # type: ignore[arg-type]
    with pytest.raises(ValidationTypeError, match="external_id_key must be a str"):
        stripe_checkout_sale(checkout_event(), external_id_key=1)  # type: ignore[arg-type]


def _sale(event: dict[str, Any], **options: Any) -> StripeSale:
    sale = stripe_checkout_sale(event, **options)
    assert sale is not None
    return sale


# --- Stripe signatures ------------------------------------------------------------------

SECRET = "whsec_test_0123456789abcdef"
NOW = 1_700_000_000
PAYLOAD = CHECKOUT_COMPLETED.encode()


def stripe_hmac(payload: bytes, secret: str, timestamp: int) -> str:
    """Stripe's documented scheme, computed independently of the module."""
    signed = f"{timestamp}.".encode() + payload
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def test_signed_payload_verifies() -> None:
    header = sign_stripe_payload(PAYLOAD, SECRET, timestamp=NOW)
    verify_stripe_signature(PAYLOAD, header, SECRET, now=NOW)


def test_signature_header_follows_stripes_scheme() -> None:
    header = sign_stripe_payload(PAYLOAD, SECRET, timestamp=NOW)
    assert header == f"t={NOW},v1={stripe_hmac(PAYLOAD, SECRET, NOW)}"


def test_header_signed_by_stripes_scheme_verifies() -> None:
    header = f"t={NOW},v1={stripe_hmac(PAYLOAD, SECRET, NOW)}"
    verify_stripe_signature(PAYLOAD, header, SECRET, now=NOW + 10)


def test_signing_now_by_default_verifies_now() -> None:
    verify_stripe_signature(PAYLOAD, sign_stripe_payload(PAYLOAD, SECRET), SECRET)


def test_tampered_payload_is_refused() -> None:
    header = sign_stripe_payload(PAYLOAD, SECRET, timestamp=NOW)
    tampered = PAYLOAD.replace(b'"amount_total": 2999', b'"amount_total": 1')
    assert tampered != PAYLOAD
    with pytest.raises(WebhookSignatureError, match="no v1 signature matches"):
        verify_stripe_signature(tampered, header, SECRET, now=NOW)


def test_reencoded_json_body_is_refused() -> None:
    """Parsing and dumping the body again changes its bytes: sign what was received."""
    header = sign_stripe_payload(PAYLOAD, SECRET, timestamp=NOW)
    reencoded = json.dumps(json.loads(PAYLOAD)).encode()
    with pytest.raises(WebhookSignatureError, match="raw request body"):
        verify_stripe_signature(reencoded, header, SECRET, now=NOW)


def test_wrong_secret_is_refused() -> None:
    header = sign_stripe_payload(PAYLOAD, "whsec_someone_else", timestamp=NOW)
    with pytest.raises(WebhookSignatureError, match="signing secret"):
        verify_stripe_signature(PAYLOAD, header, SECRET, now=NOW)


def test_a_refused_signature_leaves_no_key_or_valid_signature_in_the_frames() -> None:
    # Error trackers record every frame's locals; they scrub a variable named `secret`.
    header = sign_stripe_payload(PAYLOAD, "whsec_someone_else", timestamp=NOW)
    with pytest.raises(WebhookSignatureError) as caught:
        verify_stripe_signature(PAYLOAD, header, SECRET, now=NOW)
    for local in frame_locals(caught.value):
        if not local.startswith("secret="):
            assert SECRET not in local
            assert stripe_hmac(PAYLOAD, SECRET, NOW) not in local  # the valid signature


def test_tampered_timestamp_is_refused() -> None:
    header = sign_stripe_payload(PAYLOAD, SECRET, timestamp=NOW)
    replayed = header.replace(f"t={NOW}", f"t={NOW + 3600}")
    with pytest.raises(WebhookSignatureError, match="no v1 signature matches"):
        verify_stripe_signature(PAYLOAD, replayed, SECRET, now=NOW + 3600)


def test_timestamp_at_the_tolerance_is_accepted_and_beyond_it_refused() -> None:
    header = sign_stripe_payload(PAYLOAD, SECRET, timestamp=NOW)
    verify_stripe_signature(PAYLOAD, header, SECRET, now=NOW + 300)
    with pytest.raises(WebhookSignatureError, match="301 seconds old, beyond the 300 s"):
        verify_stripe_signature(PAYLOAD, header, SECRET, now=NOW + 301)


def test_timestamp_far_in_the_future_is_refused() -> None:
    header = sign_stripe_payload(PAYLOAD, SECRET, timestamp=NOW + 1000)
    with pytest.raises(WebhookSignatureError, match="1000 seconds in the future"):
        verify_stripe_signature(PAYLOAD, header, SECRET, now=NOW)


def test_tolerance_can_be_chosen() -> None:
    header = sign_stripe_payload(PAYLOAD, SECRET, timestamp=NOW)
    verify_stripe_signature(PAYLOAD, header, SECRET, tolerance=3600, now=NOW + 3000)
    with pytest.raises(WebhookSignatureError, match="beyond the 10 s tolerance"):
        verify_stripe_signature(PAYLOAD, header, SECRET, tolerance=10, now=NOW + 11)


def test_one_valid_signature_among_several_is_enough() -> None:
    """Stripe sends one v1 per active secret while a secret is being rolled."""
    good = stripe_hmac(PAYLOAD, SECRET, NOW)
    bad = stripe_hmac(PAYLOAD, "whsec_old", NOW)
    for header in (f"t={NOW},v1={bad},v1={good}", f"t={NOW},v1={good},v1={bad}"):
        verify_stripe_signature(PAYLOAD, header, SECRET, now=NOW)


def test_other_schemes_are_ignored_and_spaces_tolerated() -> None:
    good = stripe_hmac(PAYLOAD, SECRET, NOW)
    header = (
        f"v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39, v1={good}, t={NOW}"
    )
    verify_stripe_signature(PAYLOAD, header, SECRET, now=NOW)


def test_a_v0_signature_alone_is_refused() -> None:
    header = f"t={NOW},v0={stripe_hmac(PAYLOAD, SECRET, NOW)}"
    with pytest.raises(WebhookSignatureError, match="no v1 signature"):
        verify_stripe_signature(PAYLOAD, header, SECRET, now=NOW)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "header is missing"),
        ("", "header is missing"),
        ("   ", "header is missing"),
        ("garbage", "malformed"),
        ("t=1700000000;v1=abc", "exactly one t="),
        ("v1=abc", "exactly one t="),
        ("t=,v1=abc", "exactly one t="),
        ("t=abc,v1=abc", "exactly one t="),
        ("t=-5,v1=abc", "exactly one t="),
        ("t=1e9,v1=abc", "exactly one t="),
        ("t=\u0661\u0662\u0663,v1=abc", "exactly one t="),  # non-ASCII digits
        ("t=1700000000,t=1700000001,v1=abc", "exactly one t="),
        ("t=1700000000", "no v1 signature"),
        ("t=1700000000,v1=", "no v1 signature matches"),
        ("t=1700000000,v1=\u00e9\u00e9\u00e9", "no v1 signature matches"),
        ("t=1700000000,v1=abc,\r\nX-Injected: 1", "malformed"),
    ],
)
def test_malformed_headers_are_refused_without_echoing_them(
    header: str | None, message: str
) -> None:
    with pytest.raises(WebhookSignatureError, match=message) as info:
        verify_stripe_signature(PAYLOAD, header, SECRET, now=NOW)
    if header and header.strip():
        assert header not in str(info.value)
        assert "abc" not in str(info.value)


def test_signature_error_is_a_value_error_with_a_stable_code() -> None:
    with pytest.raises(ValueError, match="missing") as info:
        verify_stripe_signature(PAYLOAD, None, SECRET)
    assert isinstance(info.value, TaapitError)
    assert info.value.code == "invalid_signature"
    assert str(info.value).startswith("invalid_signature: ")


def test_payload_must_be_the_raw_bytes() -> None:
    header = sign_stripe_payload(PAYLOAD, SECRET, timestamp=NOW)
    with pytest.raises(ValidationTypeError, match="raw request body as bytes"):
        verify_stripe_signature(CHECKOUT_COMPLETED, header, SECRET, now=NOW)  # type: ignore[arg-type]
    with pytest.raises(ValidationTypeError, match="raw request body as bytes"):
        sign_stripe_payload(CHECKOUT_COMPLETED, SECRET)  # type: ignore[arg-type]


def test_header_of_the_wrong_type_is_a_type_error() -> None:
    with pytest.raises(ValidationTypeError, match="Stripe-Signature header as a str"):
        verify_stripe_signature(PAYLOAD, b"t=1,v1=a", SECRET)  # type: ignore[arg-type]


@pytest.mark.parametrize("secret", ["", None, b"whsec_bytes"])
def test_an_empty_or_missing_secret_is_a_configuration_error(secret: object) -> None:
    """An empty HMAC key would let anyone forge a valid signature."""
    with pytest.raises(ConfigurationError, match="signing secret"):
        verify_stripe_signature(PAYLOAD, f"t={NOW},v1=abc", secret, now=NOW)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="signing secret"):
        sign_stripe_payload(PAYLOAD, secret)  # type: ignore[arg-type]


@pytest.mark.parametrize("tolerance", [-1, True, 1.5, None])
def test_bad_tolerance_is_a_configuration_error(tolerance: object) -> None:
    header = sign_stripe_payload(PAYLOAD, SECRET, timestamp=NOW)
    with pytest.raises(ConfigurationError, match="tolerance"):
        verify_stripe_signature(PAYLOAD, header, SECRET, tolerance=tolerance, now=NOW)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("timestamp", "error"),
    [(-1, ValidationError), (1.5, ValidationTypeError), (True, ValidationTypeError)],
)
def test_bad_signing_timestamp_is_refused(timestamp: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="timestamp"):
        sign_stripe_payload(PAYLOAD, SECRET, timestamp=timestamp)  # type: ignore[arg-type]


# --- The module itself ------------------------------------------------------------------


def test_public_names_are_sorted_documented_and_exampled() -> None:
    assert webhooks.__all__ == sorted(webhooks.__all__, key=lambda n: (not n.isupper(), n))
    for name in webhooks.__all__:
        value = getattr(webhooks, name)
        if callable(value):
            assert "Example:" in (value.__doc__ or ""), name


def test_importing_the_module_imports_no_web_framework() -> None:
    code = (
        "import sys, taapit_async.webhooks; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'starlette', 'fastapi', 'stripe'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
