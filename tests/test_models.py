"""Validation at construction: every bad input raises before I/O, naming field and fix."""

from __future__ import annotations

import math
import traceback
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

import pytest

from taapit_async import Customer, TrackResult, ValidationError, ValidationTypeError
from taapit_async._errors import ServerError
from taapit_async._models import (
    MAX_METADATA_BYTES,
    LeadEvent,
    SaleEvent,
    check_idempotency_key,
    is_valid_tracking_id,
)
from taapit_async._wire import encode_event

TID = "rLnWe1uz9t282v7g"


def sale(**overrides: Any) -> SaleEvent:
    args: dict[str, Any] = {
        "tracking_id": TID,
        "customer": {"external_id": "user_123"},
        "amount": Decimal("99.99"),
        "currency": "eur",
        "metadata": None,
    }
    args.update(overrides)
    return SaleEvent.build(**args)


def lead(**overrides: Any) -> LeadEvent:
    args: dict[str, Any] = {
        "tracking_id": TID,
        "customer": {"external_id": "user_123"},
        "metadata": None,
    }
    args.update(overrides)
    return LeadEvent.build(**args)


# --- customer -------------------------------------------------------------------------


@pytest.mark.parametrize("external_id", ["", " ", "\t\n"])
def test_blank_external_id_is_missing(external_id: str) -> None:
    with pytest.raises(ValidationError, match=r"customer\.external_id is missing or blank"):
        Customer(external_id=external_id)


def test_customer_mapping_without_external_id_names_the_field() -> None:
    with pytest.raises(ValidationError, match=r"customer\.external_id is missing"):
        Customer.coerce({"email": "a@example.com"})


def test_non_str_external_id_is_a_type_error_with_a_fix() -> None:
    with pytest.raises(ValidationTypeError, match=r"str\(user\.id\)") as info:
        Customer(external_id=123)  # type: ignore[arg-type]
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [("externalId", "external_id"), ("phoneNumber", "phone_number"), ("avatarUrl", "avatar_url")],
)
def test_camel_case_customer_key_suggests_the_snake_case_name(key: str, suggestion: str) -> None:
    value = {key: "u"} if key == "externalId" else {"external_id": "u1", key: "x"}
    with pytest.raises(ValidationError, match=f"use the snake_case name {suggestion!r}"):
        Customer.coerce(value)


def test_unknown_customer_key_lists_the_known_keys() -> None:
    with pytest.raises(ValidationError, match="'nickname': the known keys are avatar_url, email"):
        Customer.coerce({"external_id": "u1", "nickname": "jo"})


def test_customer_of_the_wrong_type_says_what_to_pass() -> None:
    with pytest.raises(ValidationTypeError, match=r"Customer\(external_id=\.\.\.\)"):
        Customer.coerce("user_123")


@pytest.mark.parametrize("field", ["email", "firstname", "lastname", "phone_number", "avatar_url"])
def test_optional_customer_fields_must_be_str(field: str) -> None:
    with pytest.raises(ValidationTypeError, match=f"customer.{field} must be a str or None"):
        Customer.coerce({"external_id": "u1", field: 42})


def test_overlong_customer_field_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"customer\.email is longer than 1024"):
        Customer(external_id="u", email="a" * 1025)
    with pytest.raises(ValidationError, match=r"customer\.external_id is longer than 1024"):
        Customer(external_id="u" * 1025)


def test_customer_repr_shows_no_personal_data() -> None:
    customer = Customer(
        external_id="user_123",
        email="john@example.com",
        firstname="John",
        lastname="Doe",
        phone_number="+33612345678",
        avatar_url="https://example.com/a.jpg",
    )
    text = repr(customer)
    assert text == "Customer(external_id='user_123')"


def test_customer_passes_through_coerce_unchanged() -> None:
    customer = Customer(external_id="u1")
    assert Customer.coerce(customer) is customer


# --- tracking id ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "tracking_id",
    ["", "a b", "a;b", "a\r\nSet-Cookie: x=1", "<script>", "x" * 129, "é", "a.b", "a/b"],
)
def test_invalid_tracking_id_is_refused_without_echoing_it(tracking_id: str) -> None:
    with pytest.raises(ValidationError, match="tracking_id is not a valid ta_tid") as info:
        lead(tracking_id=tracking_id)
    if tracking_id:
        assert tracking_id not in str(info.value)


@pytest.mark.parametrize("tracking_id", ["a", "x" * 128, "rLnWe1uz9t282v7g", "A-b_9"])
def test_well_formed_tracking_ids_are_accepted(tracking_id: str) -> None:
    assert lead(tracking_id=tracking_id).tracking_id == tracking_id
    assert is_valid_tracking_id(tracking_id)


def test_lead_requires_a_tracking_id() -> None:
    with pytest.raises(ValidationError, match="tracking_id is required for a lead"):
        lead(tracking_id=None)


def test_tracking_id_of_the_wrong_type_is_a_type_error() -> None:
    with pytest.raises(ValidationTypeError, match="tracking_id must be a str, not int"):
        lead(tracking_id=123)


def test_sale_tracking_id_is_optional() -> None:
    assert sale(tracking_id=None).tracking_id is None


# --- amount and currency --------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "error", "message"),
    [
        (-1, ValidationError, "amount must be zero or more"),
        (Decimal("-0.01"), ValidationError, "amount must be zero or more"),
        (math.nan, ValidationError, "amount must be a finite number"),
        (math.inf, ValidationError, "amount must be a finite number"),
        (-math.inf, ValidationError, "amount must be a finite number"),
        (Decimal("NaN"), ValidationError, "amount must be a finite number"),
        (Decimal("Infinity"), ValidationError, "amount must be a finite number"),
        (True, ValidationTypeError, "amount must be an int, float or Decimal"),
        ("29.99", ValidationTypeError, r"not str: pass Decimal\('29.99'\)"),
        (None, ValidationTypeError, "amount must be an int, float or Decimal"),
    ],
)
def test_bad_amounts_are_refused(amount: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        sale(amount=amount)


@pytest.mark.parametrize(
    ("amount", "currency", "exponent"),
    [
        (Decimal("29.999"), "eur", "EUR allows \\(2\\)"),
        (Decimal("100.5"), "jpy", "JPY allows \\(0\\)"),
        (1.234, "usd", "USD allows \\(2\\)"),
        (Decimal("1.2345"), "kwd", "KWD allows \\(3\\)"),
    ],
)
def test_more_decimals_than_the_currency_allows_is_refused(
    amount: object, currency: str, exponent: str
) -> None:
    with pytest.raises(ValidationError, match=f"has more decimals than {exponent}"):
        sale(amount=amount, currency=currency)


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        (0.1 + 0.2, "eur", Decimal("0.30")),
        (29.99, "eur", Decimal("29.99")),
        (Decimal("29.990"), "eur", Decimal("29.99")),
        (30, "eur", Decimal("30.00")),
        (500, "jpy", Decimal("500")),
        (Decimal("1.234"), "bhd", Decimal("1.234")),
        (Decimal("0.5"), "clf", Decimal("0.5000")),
        (0, "usd", Decimal("0.00")),
    ],
)
def test_amounts_are_quantized_to_the_currency(
    amount: object, currency: str, expected: Decimal
) -> None:
    event = sale(amount=amount, currency=currency)
    assert event.amount == expected
    assert event.amount.as_tuple().exponent == expected.as_tuple().exponent


def test_amount_beyond_the_exact_range_of_a_json_number_is_refused() -> None:
    with pytest.raises(ValidationError, match="more significant digits than a JSON number"):
        sale(amount=Decimal("12345678901234567.89"))


def test_absurdly_large_amount_is_refused() -> None:
    with pytest.raises(ValidationError, match="too large to be sent exactly"):
        sale(amount=Decimal("1e40"))


@pytest.mark.parametrize("currency", ["EUR", "eur", "Eur", " usd "])
def test_currency_is_sent_lowercase_whatever_its_case(currency: str) -> None:
    assert sale(currency=currency).currency == currency.strip().lower()


@pytest.mark.parametrize("currency", ["", "euro", "xau", "xts", "xxx", "hrk", "abc", "€"])
def test_unknown_currency_is_refused(currency: str) -> None:
    with pytest.raises(ValidationError, match="is not an active ISO 4217 code"):
        sale(currency=currency)


def test_currency_of_the_wrong_type_is_a_type_error() -> None:
    with pytest.raises(ValidationTypeError, match="currency must be an ISO 4217 code as a str"):
        sale(currency=978)


# --- metadata -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "metadata",
    [
        {"when": object()},
        {"ratio": math.nan},
        {"ratio": math.inf},
        {"items": {1, 2}},
        {"amount": Decimal("1.00")},
    ],
)
def test_metadata_that_is_not_json_is_refused(metadata: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="metadata is not JSON-serializable"):
        lead(metadata=metadata)


@pytest.mark.parametrize("metadata", [{1: "a"}, {"nested": {2: "b"}}, {"list": [{3: "c"}]}])
def test_metadata_keys_must_be_str_at_every_depth(metadata: dict[Any, Any]) -> None:
    with pytest.raises(ValidationError, match=r"metadata is not JSON-serializable \(key \d"):
        lead(metadata=metadata)


def _loop_in_a_dict() -> dict[str, Any]:
    metadata: dict[str, Any] = {"plan": "pro"}
    metadata["self"] = metadata
    return metadata


def _loop_deep_in_a_list() -> dict[str, Any]:
    inner: list[Any] = ["a", {"b": 1}]
    inner[1]["back"] = inner
    return {"items": [inner]}


@pytest.mark.parametrize("metadata", [_loop_in_a_dict(), _loop_deep_in_a_list()])
def test_metadata_that_contains_itself_is_refused_not_walked_forever(
    metadata: dict[str, Any],
) -> None:
    with pytest.raises(ValidationError, match="metadata contains itself"):
        lead(metadata=metadata)


def test_metadata_that_doubles_at_each_level_is_refused_before_it_is_expanded() -> None:
    shared: list[Any] = ["x"]
    for _ in range(60):  # 2**60 values once expanded, from 60 small lists
        shared = [shared, shared]
    with pytest.raises(ValidationError, match=r"more than 16384 values, more than fit"):
        lead(metadata={"tree": shared})


def test_metadata_that_builds_new_objects_on_every_access_is_refused_not_walked_forever() -> None:
    class Fresh(Mapping[str, Any]):  # a read-only view, wrapping what it holds anew each time
        def __init__(self, data: dict[str, Any]) -> None:
            self._data = data

        def __getitem__(self, key: str) -> Any:
            value = self._data[key]
            return Fresh(value) if isinstance(value, dict) else value

        def __iter__(self) -> Iterator[str]:
            return iter(self._data)

        def __len__(self) -> int:
            return len(self._data)

    looped: dict[str, Any] = {"plan": "pro"}
    looped["self"] = looped
    with pytest.raises(ValidationError, match="more than 16384 values"):
        lead(metadata=Fresh(looped))


def test_metadata_nested_deeper_than_json_can_encode_is_a_validation_error() -> None:
    deep: list[Any] = []
    for _ in range(5000):  # 10 KB as JSON: under the size cap, over the encoder's depth
        deep = [deep]
    event = lead(metadata={"deep": deep})
    with pytest.raises(ValidationError, match="metadata is nested too deeply"):
        encode_event(event)


def test_metadata_sharing_one_list_in_two_places_is_json_and_accepted() -> None:
    tags = ["spring", "promo"]
    event = lead(metadata={"tags": tags, "again": {"tags": tags}})
    assert b'"again":{"tags":["spring","promo"]}' in encode_event(event)


@pytest.mark.parametrize("metadata", [["a"], "text", 3])
def test_metadata_must_be_a_mapping(metadata: object) -> None:
    with pytest.raises(ValidationTypeError, match="metadata must be a mapping"):
        lead(metadata=metadata)


def test_oversized_metadata_is_refused_with_its_size() -> None:
    metadata = {"blob": "x" * MAX_METADATA_BYTES}
    with pytest.raises(ValidationError, match=r"metadata is \d+ bytes as JSON, more than"):
        encode_event(lead(metadata=metadata))  # measured once the body is built


def test_metadata_up_to_the_cap_is_accepted() -> None:
    metadata = {"blob": "x" * (MAX_METADATA_BYTES - len('{"blob":""}'))}
    assert lead(metadata=metadata).metadata == metadata
    assert encode_event(lead(metadata=metadata))


def test_metadata_keeps_nulls_and_nested_values() -> None:
    metadata: dict[str, Any] = {"plan": None, "items": [1, 2.5, "x", True, None, {"k": []}]}
    assert lead(metadata=metadata).metadata == metadata


# --- idempotency keys -----------------------------------------------------------------


@pytest.mark.parametrize("key", ["", "has space", "tab\t", "ü", "x" * 256, "line\nbreak"])
def test_idempotency_key_must_be_header_safe(key: str) -> None:
    with pytest.raises(ValidationError, match="idempotency_key must be 1 to 255 printable"):
        check_idempotency_key(key)


def test_idempotency_key_of_the_wrong_type_is_a_type_error() -> None:
    with pytest.raises(ValidationTypeError, match="idempotency_key must be a str, not int"):
        check_idempotency_key(42)


# --- results --------------------------------------------------------------------------


def test_raise_for_error_returns_the_result_on_success() -> None:
    result = TrackResult(success=True, status_code=200, attempts=1)
    assert result.raise_for_error() is result


def test_raise_for_error_raises_the_returned_error() -> None:
    error = ServerError("Taapit failed on its side", status_code=503)
    result = TrackResult(success=False, error=error, status_code=503, attempts=3)
    error.__cause__ = ConnectionResetError("peer reset")
    error.retry_after = 2.0
    with pytest.raises(ServerError) as info:
        result.raise_for_error()
    raised = info.value
    assert (raised.code, raised.message, raised.status_code, raised.retryable) == (
        error.code,
        error.message,
        503,
        True,
    )
    assert raised.retry_after == 2.0
    assert raised.__cause__ is error.__cause__
    assert error.__traceback__ is None  # the result's own error stays frameless


def test_raise_for_error_twice_does_not_carry_the_first_callers_frames() -> None:
    result = TrackResult(success=False, error=ServerError("down", status_code=503))

    def first_handler() -> None:
        card = "card-4242"
        try:
            raise KeyError(card)
        except KeyError:  # raised while handling: the KeyError becomes its context
            result.raise_for_error()

    def second_handler() -> None:
        result.raise_for_error()

    for handler in (first_handler, second_handler):
        with pytest.raises(ServerError) as info:
            handler()
    second = info.value
    frames = traceback.extract_tb(second.__traceback__)
    assert [f.name for f in frames][-2:] == ["second_handler", "raise_for_error"]
    assert "first_handler" not in [f.name for f in frames]
    assert second.__context__ is None  # not the first handler's KeyError
    assert "card-4242" not in "".join(traceback.format_exception(second))
