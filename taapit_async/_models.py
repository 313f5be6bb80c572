"""The event models, validated at construction, and the result of a track call.

Every check here runs before any I/O and raises a ``ValidationError`` (or its ``TypeError``
flavour) whose message names the field and says how to fix it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs

from ._currencies import currency_exponent
from ._errors import (
    TaapitError,
    ValidationError,
    ValidationTypeError,
    fresh_copy,
    without_frames,
)

if TYPE_CHECKING:
    from typing import Self

__all__ = [
    "MAX_METADATA_BYTES",
    "Customer",
    "EventKind",
    "LeadEvent",
    "SaleEvent",
    "TrackResult",
    "check_idempotency_key",
    "check_metadata",
    "check_metadata_size",
    "check_tracking_id",
    "is_valid_tracking_id",
]

EventKind = Literal["lead", "sale"]

#: Largest ``metadata`` accepted, measured as compact UTF-8 JSON.
MAX_METADATA_BYTES: Final = 16 * 1024

#: Longest string accepted in a customer field; ``external_id`` included.
MAX_FIELD_LENGTH: Final = 1024

_TRACKING_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
# Printable ASCII without spaces: anything else could not travel in an HTTP header unchanged.
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
_CAMEL_HUMP = re.compile(r"(?<!^)(?=[A-Z])")


def is_valid_tracking_id(value: object) -> bool:
    """Tell whether ``value`` is a well-formed tracking id (``[A-Za-z0-9_-]{1,128}``)."""
    return isinstance(value, str) and _TRACKING_ID.fullmatch(value) is not None


def check_tracking_id(value: object, *, required: bool) -> str | None:
    """Return a valid tracking id, None when absent and allowed, or raise ``ValidationError``.

    The message never repeats the rejected value: tracking ids come from visitors' URLs and
    cookies, and echoing them into logs is how markup and CR/LF get in.
    """
    if value is None:
        if required:
            raise ValidationError(
                "tracking_id is required for a lead: pass the visitor's ta_tid "
                "(from the ta_tid cookie, the request body or the ?ta_tid= URL parameter)"
            )
        return None
    if not isinstance(value, str):
        raise ValidationTypeError(
            f"tracking_id must be a str, not {type(value).__name__}: pass the visitor's ta_tid"
        )
    if _TRACKING_ID.fullmatch(value) is None:
        raise ValidationError(
            "tracking_id is not a valid ta_tid: it must be 1 to 128 characters of "
            "A-Z, a-z, 0-9, '_' or '-'"
        )
    return value


def check_idempotency_key(value: object) -> str:
    """Return ``value`` if it can be sent as an ``Idempotency-Key`` header, else raise."""
    if not isinstance(value, str):
        raise ValidationTypeError(
            f"idempotency_key must be a str, not {type(value).__name__}: "
            "pass your order or payment event id, or leave it out for a random key"
        )
    if _IDEMPOTENCY_KEY.fullmatch(value) is None:
        raise ValidationError(
            "idempotency_key must be 1 to 255 printable ASCII characters without spaces: "
            "pass your order or payment event id, or leave it out for a random key"
        )
    return value


def _optional_str(field: str) -> Any:
    def check(_instance: object, _attribute: object, value: Any) -> None:
        if value is None:
            return
        if not isinstance(value, str):
            raise ValidationTypeError(
                f"customer.{field} must be a str or None, not {type(value).__name__}"
            )
        if len(value) > MAX_FIELD_LENGTH:
            raise ValidationError(
                f"customer.{field} is longer than {MAX_FIELD_LENGTH} characters: shorten it"
            )

    return check


def _check_external_id(_instance: object, _attribute: object, value: Any) -> None:
    if not isinstance(value, str):
        raise ValidationTypeError(
            f"customer.external_id must be a str, not {type(value).__name__}: "
            "pass your own user id, e.g. str(user.id)"
        )
    if not value.strip():
        raise ValidationError(
            "customer.external_id is missing or blank: pass your own user id, e.g. str(user.id)"
        )
    if len(value) > MAX_FIELD_LENGTH:
        raise ValidationError(
            f"customer.external_id is longer than {MAX_FIELD_LENGTH} characters: shorten it"
        )


@attrs.frozen
class Customer:
    """The customer an event is about, identified by your own user id.

    Args:
        external_id: Your internal user id; links a sale to an earlier lead. Required.
        email: The customer's e-mail address.
        firstname: First name.
        lastname: Last name.
        phone_number: Phone number, ideally in E.164 form (``+33612345678``).
        avatar_url: URL of the customer's picture.

    Raises:
        ValidationError: ``external_id`` is missing or blank, or a field is too long.
        ValidationTypeError: A field is not a ``str``.

    Example:
        >>> Customer(external_id="user_123", email="john@example.com")
        Customer(external_id='user_123')

        Only ``external_id`` shows in the repr: personal data stays out of logs.
    """

    external_id: str = attrs.field(validator=_check_external_id)
    # Personal data stays out of reprs so that logging a customer or a result leaks nothing.
    email: str | None = attrs.field(default=None, validator=_optional_str("email"), repr=False)
    firstname: str | None = attrs.field(
        default=None, validator=_optional_str("firstname"), repr=False
    )
    lastname: str | None = attrs.field(
        default=None, validator=_optional_str("lastname"), repr=False
    )
    phone_number: str | None = attrs.field(
        default=None, validator=_optional_str("phone_number"), repr=False
    )
    avatar_url: str | None = attrs.field(
        default=None, validator=_optional_str("avatar_url"), repr=False
    )

    @classmethod
    def coerce(cls, value: object) -> Customer:
        """Return ``value`` as a ``Customer``: a ``Customer`` or a mapping of its field names.

        Raises:
            ValidationError: A key is unknown (the message suggests the snake_case spelling
                for camelCase keys such as ``externalId``) or a value is invalid.
            ValidationTypeError: ``value`` is neither a ``Customer`` nor a mapping.
        """
        if isinstance(value, Customer):
            return value
        if not isinstance(value, Mapping):
            raise ValidationTypeError(
                f"customer must be a Customer or a mapping, not {type(value).__name__}: "
                "pass Customer(external_id=...) or {'external_id': ...}"
            )
        for key in value:
            if key not in _CUSTOMER_FIELDS:
                raise ValidationError(_unknown_customer_key(key))
        if "external_id" not in value:
            raise ValidationError(
                "customer.external_id is missing: pass your own user id, e.g. "
                "{'external_id': str(user.id)}"
            )
        return cls(**value)


_CUSTOMER_FIELDS: Final = frozenset(a.name for a in attrs.fields(Customer))


def _unknown_customer_key(key: object) -> str:
    known = ", ".join(sorted(_CUSTOMER_FIELDS))
    if isinstance(key, str):
        snake = _CAMEL_HUMP.sub("_", key).lower()
        if snake in _CUSTOMER_FIELDS:
            return f"customer has an unknown key {key!r}: use the snake_case name {snake!r}"
    return f"customer has an unknown key {key!r}: the known keys are {known}"


_JSON_SCALARS: Final = (str, int, bool, type(None))
#: The scalar types themselves, found by one set lookup (subclasses go the isinstance way).
_PLAIN_SCALARS: Final = frozenset(_JSON_SCALARS)


def _json_problem(value: object) -> str | None:
    """Say why ``value`` is not strict JSON with str keys, or return None if it is.

    One iterative pass instead of a trial ``json.dumps``: the wire encoder dumps the
    metadata once, when the body is built, and ``json.dumps`` would quietly turn int keys
    into strings, which would change what the caller gave.

    Raises:
        ValidationError: ``value`` holds more values than fit in ``MAX_METADATA_BYTES``, or
            contains itself.
    """
    stack = [value]
    # Every JSON value takes a byte at least, so more values than the cap's bytes cannot
    # fit: stop there, or a container holding itself would keep this loop (and the event
    # loop it runs on) busy forever, and shared lists that double at each level nearly so.
    budget = MAX_METADATA_BYTES
    while stack:
        item = stack.pop()
        if isinstance(item, _JSON_SCALARS):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                return f"{item!r} is not a JSON number"
            continue
        if isinstance(item, Mapping):
            budget -= len(item)
            if budget < 0:
                raise _too_many_values(value)
            for key, child in item.items():
                if not isinstance(key, str):
                    return f"key {key!r} is not a str"
                if type(child) not in _PLAIN_SCALARS:  # most values: no second look
                    stack.append(child)
        elif isinstance(item, list | tuple):
            budget -= len(item)
            if budget < 0:
                raise _too_many_values(value)
            stack.extend(item)
        else:
            return f"{type(item).__name__} is not a JSON type"
    return None


def _too_many_values(value: object) -> ValidationError:
    """The error for metadata with more values than fit in its cap: a cycle, or size."""
    if _contains_itself(value) is True:
        return ValidationError(
            "metadata contains itself (a dict or list inside it is one of its own parents), "
            "so it has no JSON form: pass a copy without the loop"
        )
    return ValidationError(
        f"metadata holds more than {MAX_METADATA_BYTES} values, more than fit in the "
        f"{MAX_METADATA_BYTES} bytes allowed: keep only what you need to analyse conversions"
    )


def _contains_itself(value: object) -> bool | None:
    """True when a dict, list or tuple in ``value`` holds itself, at any depth.

    Depth first, each container once: met again while still open, it is its own ancestor;
    met again once closed, it is only shared (which JSON allows). None when that takes more
    steps than values fit in the cap: a mapping that builds new objects on every access
    never meets one twice.
    """
    open_ids: set[int] = set()
    closed_ids: set[int] = set()
    stack: list[tuple[object, bool]] = [(value, False)]
    steps = 0
    while stack:
        steps += 1
        if steps > 2 * MAX_METADATA_BYTES:  # each container is entered and left once
            return None
        item, leaving = stack.pop()
        if leaving:
            open_ids.discard(id(item))
            closed_ids.add(id(item))
            continue
        if id(item) in open_ids:
            return True
        if id(item) in closed_ids:
            continue
        if isinstance(item, Mapping):
            children: Iterable[object] = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        open_ids.add(id(item))
        stack.append((item, True))
        stack.extend((child, False) for child in children)
    return False


def _check_metadata(_instance: object, _attribute: object, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping):
        raise ValidationTypeError(
            f"metadata must be a mapping with str keys, not {type(value).__name__}"
        )
    problem = _json_problem(value)
    if problem is not None:
        raise ValidationError(
            f"metadata is not JSON-serializable ({problem}): use only str keys and str, int, "
            "finite float, bool, None, list and dict values"
        )


def check_metadata_size(value: Mapping[str, Any] | None, body_size: int) -> None:
    """Raise ``ValidationError`` if ``value`` is over ``MAX_METADATA_BYTES`` as JSON.

    ``body_size`` (the whole encoded body) bounds the metadata's size, so the metadata is
    measured on its own only when the body is large enough for it to be over the cap.
    """
    if value is None or body_size <= MAX_METADATA_BYTES:
        return
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_METADATA_BYTES:
        raise ValidationError(
            f"metadata is {size} bytes as JSON, more than the {MAX_METADATA_BYTES} allowed: "
            "keep only what you need to analyse conversions"
        )


def check_metadata(value: object) -> None:
    """Raise ``ValidationError`` unless ``value`` is None or a small JSON object."""
    _check_metadata(None, None, value)


def _check_amount(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ValidationTypeError(
            f"amount must be an int, float or Decimal in currency units, not "
            f"{type(value).__name__}: pass Decimal('29.99') for 29.99"
        )
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(f"amount must be a finite number, not {value!r}")
        return Decimal(repr(value))
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValidationError(f"amount must be a finite number, not {value!r}")
        return value
    return Decimal(value)


def _normalize_currency(value: object) -> str:
    if not isinstance(value, str):
        raise ValidationTypeError(
            f"currency must be an ISO 4217 code as a str (e.g. 'eur'), not {type(value).__name__}"
        )
    code = value.strip().lower()
    if currency_exponent(code) is None:
        raise ValidationError(
            f"currency {value!r} is not an active ISO 4217 code: use a code such as "
            "'eur', 'usd' or 'gbp'"
        )
    return code


def _quantize_amount(amount: Decimal, raw: object, currency: str) -> Decimal:
    exponent = currency_exponent(currency)
    assert exponent is not None  # the currency was checked first
    step = Decimal(1).scaleb(-exponent)
    try:
        quantized = amount.quantize(step)
    except InvalidOperation:
        raise ValidationError(
            f"amount {amount} is too large to be sent exactly: check its units"
        ) from None
    if quantized != amount and not (
        # A float such as 0.1 + 0.2 is 0.30000000000000004: tolerate that noise, and send 0.3.
        isinstance(raw, float) and math.isclose(float(quantized), raw, rel_tol=1e-12)
    ):
        raise ValidationError(
            f"amount {amount} has more decimals than {currency.upper()} allows ({exponent}): "
            "pass it in currency units rounded to the currency's minor unit"
        )
    # The wire carries amounts as JSON numbers (binary doubles on most servers): refuse what
    # a double cannot carry exactly instead of letting the server round it silently.
    if Decimal(repr(float(quantized))) != quantized:
        raise ValidationError(
            f"amount {amount} has more significant digits than a JSON number carries "
            "exactly (15): check its units"
        )
    return quantized


def _check_amount_sign(amount: Decimal) -> None:
    if amount < 0:
        raise ValidationError(
            f"amount must be zero or more, not {amount}: report refunds to Taapit separately"
        )


def _to_amount(value: object) -> Decimal:
    amount = _check_amount(value)
    _check_amount_sign(amount)
    return amount


@attrs.frozen(kw_only=True)
class LeadEvent:
    """A validated lead: a visitor signed up. Internal; the client builds it."""

    tracking_id: str
    customer: Customer
    metadata: Mapping[str, Any] | None = attrs.field(default=None, validator=_check_metadata)

    @classmethod
    def build(cls, *, tracking_id: object, customer: object, metadata: object) -> Self:
        """Validate the arguments of ``track.lead`` and return the event."""
        checked = check_tracking_id(tracking_id, required=True)
        assert checked is not None
        return cls(
            tracking_id=checked,
            customer=Customer.coerce(customer),
            metadata=metadata,  # type: ignore[arg-type]  # checked by the attrs validator
        )


@attrs.frozen(kw_only=True)
class SaleEvent:
    """A validated sale: a visitor paid. Internal; the client builds it."""

    tracking_id: str | None = None
    customer: Customer
    amount: Decimal
    currency: str
    metadata: Mapping[str, Any] | None = attrs.field(default=None, validator=_check_metadata)

    @classmethod
    def build(
        cls,
        *,
        tracking_id: object,
        customer: object,
        amount: object,
        currency: object,
        metadata: object,
    ) -> Self:
        """Validate the arguments of ``track.sale`` and return the event."""
        checked_id = check_tracking_id(tracking_id, required=False)
        checked_customer = Customer.coerce(customer)
        decimal_amount = _to_amount(amount)
        code = _normalize_currency(currency)
        return cls(
            customer=checked_customer,
            amount=_quantize_amount(decimal_amount, amount, code),
            currency=code,
            tracking_id=checked_id,
            metadata=metadata,  # type: ignore[arg-type]  # checked by the attrs validator
        )


def _frameless(error: TaapitError | None) -> TaapitError | None:
    return None if error is None else without_frames(error)


@attrs.frozen
class TrackResult:
    """What became of one event. Runtime failures land here instead of being raised.

    Attributes:
        success: True when Taapit accepted the event.
        error: None on success, else a ``TaapitError`` with ``code``, ``message``,
            ``status_code`` and ``retryable``; ``str(error)`` reads well in a log. Its
            ``__cause__`` chain keeps the HTTP library's exceptions (type and message) but
            no tracebacks: their frames hold the request's headers (the API key) and body,
            which error trackers recording local variables would send on. Building a
            result drops them from the error passed in, in place.
        status_code: The HTTP status of the last reply, None when there was none.
        attempts: How many HTTP requests were made (0 when nothing was sent).
        idempotency_key: The ``Idempotency-Key`` every attempt of this event carried.
        event_id: The event id from Taapit's reply, when it gave one.

    Example:
        >>> result = await taapit.track.lead(tracking_id=tid, customer=customer)
        >>> if not result.success:
        ...     log.warning("lead not tracked: %s", result.error)
    """

    success: bool
    error: TaapitError | None = attrs.field(default=None, converter=_frameless)
    status_code: int | None = None
    attempts: int = 0
    idempotency_key: str | None = None
    event_id: str | None = None

    def raise_for_error(self) -> Self:
        """Raise ``error`` if the event failed; return the result itself otherwise.

        The traceback starts at this call: where the request failed inside the HTTP library
        is not kept (see ``error``), only what failed, in the chain of causes. What is raised
        is a copy of ``error`` (same type, code, message, status and cause): a result is
        shared (``Delivery``, ``on_result``), and one handler's traceback, or the exception
        it was handling, must not travel with the error into the next.

        Example:
            >>> (await taapit.track.sale(...)).raise_for_error()
        """
        if self.error is not None:
            raise fresh_copy(self.error)
        return self
