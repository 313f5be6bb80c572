"""Helpers for payment webhooks: carry the tracking id through a payment, read it back.

A sale is usually confirmed in a payment provider's webhook, long after the request that
knew the visitor's ``ta_tid``. The tracking id travels inside the payment's own metadata
(``metadata={"ta_tid": ...}`` when the Stripe Checkout Session is created) and comes back in
the event. Nothing here needs a web framework or the ``stripe`` package.

- ``with_tracking_id`` / ``tracking_id_from``: put the id into metadata, read it back.
- ``stripe_amount_to_units`` / ``units_to_stripe_amount``: Stripe's integer amounts by
  Stripe's own currency rules, which are not ISO 4217's for every currency.
- ``stripe_checkout_sale``: the sale in a ``checkout.session.completed`` or
  ``checkout.session.async_payment_succeeded`` event.
- ``verify_stripe_signature`` / ``sign_stripe_payload``: the ``Stripe-Signature`` header.

Example:
    >>> body = await request.body()
    >>> verify_stripe_signature(body, request.headers.get("stripe-signature"), secret)
    >>> sale = stripe_checkout_sale(json.loads(body))
    >>> if sale is not None and sale.external_id is not None:
    ...     await taapit.track.sale(
    ...         tracking_id=sale.tracking_id,
    ...         customer={"external_id": sale.external_id, "email": sale.email},
    ...         amount=sale.amount,
    ...         currency=sale.currency,
    ...         idempotency_key=sale.idempotency_key,
    ...     )
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

import attrs

from ._currencies import currency_exponent
from ._errors import (
    ConfigurationError,
    ErrorCode,
    TaapitError,
    ValidationError,
    ValidationTypeError,
)
from ._models import check_idempotency_key, is_valid_tracking_id

__all__ = [
    "METADATA_KEY",
    "STRIPE_SIGNATURE_TOLERANCE",
    "StripeSale",
    "WebhookSignatureError",
    "sign_stripe_payload",
    "stripe_amount_to_units",
    "stripe_checkout_sale",
    "tracking_id_from",
    "units_to_stripe_amount",
    "verify_stripe_signature",
    "with_tracking_id",
]

logger: Final = logging.getLogger("taapit_async")

#: The metadata key that carries the visitor's tracking id, as in Taapit's own guide.
METADATA_KEY: Final = "ta_tid"

#: Seconds a ``Stripe-Signature`` timestamp may differ from now (Stripe's libraries use 300).
STRIPE_SIGNATURE_TOLERANCE: Final = 300

# Stripe's metadata limits (https://docs.stripe.com/api/metadata): at most 50 keys, keys up
# to 40 characters, values up to 500. Our key has 6 characters and a valid id at most 128,
# so only the key count can be exceeded by adding it.
_STRIPE_METADATA_MAX_KEYS: Final = 50

# --- Stripe's currency rules ------------------------------------------------------------
# Source: https://docs.stripe.com/currencies ("Zero-decimal currencies", "Three-decimal
# currencies", "Special cases"), checked against copies of that page and against payment
# libraries quoting it (Shopify/money#258, woocommerce-gateway-stripe#2723, polar#11557).
# Every other currency is two-decimal at Stripe ("two-decimal unless otherwise noted").
#
# Zero-decimal: Stripe's amount is the number of units (JPY 500 is 500). Stripe's list also
# names UGX, but its special cases override that for the API: see below.
_STRIPE_ZERO_DECIMAL: Final = frozenset(
    {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "vnd", "vuv",
     "xaf", "xof", "xpf"}
)  # fmt: skip
# Three-decimal: KWD 5.120 is 5120, and Stripe requires the last digit to be 0 when a
# payment is created (round to the nearest ten: 5.124 KWD is charged as 5120 or 5130).
_STRIPE_THREE_DECIMAL: Final = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})
# Special cases. ISK and UGX have no minor unit any more (ISO 4217 exponent 0) but Stripe
# keeps them two-decimal for backwards compatibility: ISK 5 is 500, and an amount not
# divisible by 100 is refused by Stripe. HUF and TWD charges are ordinary two-decimal
# amounts; only their *payouts* must be divisible by 100, which does not concern a sale,
# so they need no entry here.
_STRIPE_WHOLE_UNITS_AS_TWO_DECIMAL: Final = frozenset({"isk", "ugx"})

# Stripe amounts have at most 8 digits in most currencies and 12 in a few; the bound keeps
# arithmetic on hostile input cheap (int-to-str conversion is capped at 4300 digits).
_STRIPE_AMOUNT_LIMIT: Final = 10**15

_HEX_SIGNATURE_SCHEME: Final = "v1"
_TIMESTAMP: Final = re.compile(r"[0-9]{1,15}")
_CHECKOUT_SALE_EVENTS: Final = frozenset(
    {"checkout.session.completed", "checkout.session.async_payment_succeeded"}
)


class WebhookSignatureError(TaapitError, ValueError):
    """A webhook's signature header is missing, malformed, wrong or too old.

    Answer such a request with HTTP 400 and do not act on its body: it did not come from
    the payment provider, or was replayed. The message never repeats the header's content.

    Example:
        >>> try:
        ...     verify_stripe_signature(body, header, secret)
        ... except WebhookSignatureError:
        ...     return Response(status_code=400)
    """

    default_code = ErrorCode.INVALID_SIGNATURE


# --- Tracking id in metadata ------------------------------------------------------------


def with_tracking_id(metadata: Mapping[str, str] | None, tracking_id: str | None) -> dict[str, str]:
    """Return a copy of ``metadata`` with the visitor's tracking id under ``"ta_tid"``.

    Use it when you create the payment, so that the webhook can find the visitor again.
    The input is never modified. A None or malformed tracking id (a tampered cookie, say)
    adds nothing, so the checkout goes on without attribution; the id is never repeated in
    an error or a log.

    Stripe's limits: the key (6 characters) and a valid id (at most 128 characters) are
    always within Stripe's 40 and 500; the 50-key limit is checked because adding our key
    could cross it.

    Args:
        metadata: The payment's own metadata, or None.
        tracking_id: The visitor's ``ta_tid`` (from the cookie, the request, a tracker).

    Returns:
        A new dict: ``metadata`` plus ``{"ta_tid": tracking_id}`` when the id is valid.

    Raises:
        ValidationError: ``metadata`` already holds a *different* ``ta_tid`` (which visitor
            the sale belongs to is your decision, not a silent overwrite: drop the old key
            or pass ``tracking_id=None`` to keep it), or adding the key would make more than
            50 keys, which Stripe refuses.
        ValidationTypeError: ``metadata`` is not a mapping, or ``tracking_id`` not a str.

    Example:
        >>> with_tracking_id({"order_id": "order_456"}, "rLnWe1uz9t282v7g")
        {'order_id': 'order_456', 'ta_tid': 'rLnWe1uz9t282v7g'}
        >>> with_tracking_id(None, "not a valid id!")
        {}

        With Stripe: ``stripe.checkout.Session.create(...,
        metadata=with_tracking_id({"order_id": order.id}, tracker.tracking_id))``.
    """
    if metadata is not None and not isinstance(metadata, Mapping):
        raise ValidationTypeError(
            f"metadata must be a mapping or None, not {type(metadata).__name__}: "
            "pass the payment's metadata dict"
        )
    if tracking_id is not None and not isinstance(tracking_id, str):
        raise ValidationTypeError(
            f"tracking_id must be a str or None, not {type(tracking_id).__name__}: "
            "pass the visitor's ta_tid"
        )
    result = dict(metadata or {})
    if tracking_id is None:
        return result
    if not is_valid_tracking_id(tracking_id):
        # Visitor input: a bad cookie must not fail the checkout, and is not logged verbatim.
        logger.debug("taapit: an invalid tracking id was not added to the payment metadata")
        return result
    if METADATA_KEY in result:
        if result[METADATA_KEY] == tracking_id:
            return result
        raise ValidationError(
            f"metadata already has a different {METADATA_KEY!r}: remove it to attribute the "
            f"payment to this visitor, or pass tracking_id=None to keep the existing one"
        )
    if len(result) >= _STRIPE_METADATA_MAX_KEYS:
        raise ValidationError(
            f"metadata has {len(result)} keys and Stripe accepts at most "
            f"{_STRIPE_METADATA_MAX_KEYS}: remove one to make room for {METADATA_KEY!r}"
        )
    result[METADATA_KEY] = tracking_id
    return result


def tracking_id_from(source: Mapping[str, Any] | None) -> str | None:
    """Read the tracking id back from a Stripe event, a Stripe object or a metadata mapping.

    The first shape that matches decides; there is no falling through to the next one:

    1. ``source["data"]["object"]`` is a mapping: an event, read
       ``source["data"]["object"]["metadata"]["ta_tid"]``.
    2. ``source["metadata"]`` is a mapping: an object (a Checkout Session, a PaymentIntent),
       read ``source["metadata"]["ta_tid"]``.
    3. Otherwise ``source`` is the metadata itself: read ``source["ta_tid"]``.

    Stripe metadata values are always strings, so a metadata mapping is never mistaken for
    an event or an object. ``stripe`` package objects are dicts and work as they are.
    Metadata set on a Checkout Session is not copied to its PaymentIntent: to read the id
    from ``payment_intent.*`` events, also pass ``payment_intent_data={"metadata": ...}``.

    Args:
        source: An event (``json.loads`` of the webhook body), an object, a metadata
            mapping, or None.

    Returns:
        The valid tracking id, or None when it is absent or malformed.

    Raises:
        ValidationTypeError: ``source`` is neither a mapping nor None.

    Example:
        >>> tracking_id_from({"data": {"object": {"metadata": {"ta_tid": "rLnWe1uz9t282v7g"}}}})
        'rLnWe1uz9t282v7g'
        >>> tracking_id_from({"ta_tid": "<script>"}) is None
        True
    """
    if source is None:
        return None
    if not isinstance(source, Mapping):
        raise ValidationTypeError(
            f"source must be a mapping (a Stripe event, object or metadata) or None, not "
            f"{type(source).__name__}: pass json.loads(body) or session['metadata']"
        )
    data = source.get("data")
    if isinstance(data, Mapping) and isinstance(data.get("object"), Mapping):
        metadata = data["object"].get("metadata")
    elif isinstance(source.get("metadata"), Mapping):
        metadata = source["metadata"]
    else:
        metadata = source
    if not isinstance(metadata, Mapping):
        return None
    value = metadata.get(METADATA_KEY)
    return value if is_valid_tracking_id(value) else None


# --- Stripe amounts ---------------------------------------------------------------------


def _stripe_currency(value: object, field: str) -> tuple[str, int, int]:
    """Return the lowercase code, Stripe's exponent and ISO's exponent of a currency."""
    if not isinstance(value, str):
        raise ValidationTypeError(
            f"{field} must be an ISO 4217 code as a str (e.g. 'eur'), not {type(value).__name__}"
        )
    code = value.strip().lower()
    iso = currency_exponent(code)
    if iso is None:
        raise ValidationError(
            f"{field} {value!r} is not an active ISO 4217 code: pass Stripe's own currency "
            "field (e.g. session['currency'])"
        )
    if code in _STRIPE_ZERO_DECIMAL:
        return code, 0, iso
    if code in _STRIPE_THREE_DECIMAL:
        return code, 3, iso
    return code, 2, iso


def _decimal(coefficient: int, exponent: int) -> Decimal:
    # Built from digits, not by division: exact whatever the size and the decimal context.
    return Decimal((0, tuple(int(d) for d in str(coefficient)), -exponent))


def _to_units(
    amount: object, currency: object, *, field: str, currency_field: str
) -> tuple[Decimal, str]:
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise ValidationTypeError(
            f"{field} must be Stripe's integer amount in the currency's smallest unit, not "
            f"{type(amount).__name__}: pass e.g. session['amount_total'] (2999 for EUR 29.99)"
        )
    if amount < 0:
        raise ValidationError(f"{field} must be zero or more, not {amount}: refunds are not sales")
    if amount >= _STRIPE_AMOUNT_LIMIT:
        raise ValidationError(f"{field} has more than 15 digits: no Stripe amount is that large")
    code, stripe_exp, iso_exp = _stripe_currency(currency, currency_field)
    if stripe_exp <= iso_exp:
        return _decimal(amount * 10 ** (iso_exp - stripe_exp), iso_exp), code
    # Stripe writes more decimals than the currency has (ISK, UGX): the extra digits are 00
    # in every amount Stripe accepts. Anything else did not come from Stripe unchanged, and
    # would only fail later as a fractional ISK; say so here, where the cause is visible.
    step = 10 ** (stripe_exp - iso_exp)
    if amount % step:
        example = 12345 * 10**stripe_exp
        raise ValidationError(
            f"{field} {amount} is not a Stripe amount for {code.upper()}: Stripe writes "
            f"{code.upper()} with {stripe_exp} decimals that are always 0 ({code.upper()} 12345 "
            f"is {example}); pass Stripe's integer amount unchanged"
        )
    return _decimal(amount // step, iso_exp), code


def stripe_amount_to_units(amount: int, currency: str) -> Decimal:
    """Convert a Stripe amount (an integer in the smallest unit) to currency units.

    Stripe's rules decide, not ISO 4217's alone: zero-decimal currencies (JPY, KRW, ...)
    are counted in units, three-decimal ones (BHD, JOD, KWD, OMR, TND) in thousandths, ISK
    and UGX in hundredths although they have no minor unit any more, every other currency
    in hundredths. The result has the currency's ISO 4217 number of decimals, so it passes
    ``taapit.track.sale`` as it is.

    Args:
        amount: Stripe's integer amount (``amount_total``, ``amount_received``, ...).
        currency: Stripe's currency code (``"eur"``), any case.

    Returns:
        The amount in units: 2999 EUR is ``Decimal("29.99")``, 500 JPY ``Decimal("500")``,
        1234500 ISK ``Decimal("12345")``, 500000 UGX ``Decimal("5000")``.

    Raises:
        ValidationTypeError: ``amount`` is not an int (a bool, a float or a str included),
            or ``currency`` not a str.
        ValidationError: ``amount`` is negative; ``currency`` is unknown; or, for ISK and
            UGX, ``amount`` is not divisible by 100 (Stripe refuses such amounts, so the
            number was not Stripe's: it was probably converted already).

    Example:
        >>> stripe_amount_to_units(2999, "eur")
        Decimal('29.99')
        >>> stripe_amount_to_units(1234500, "isk")
        Decimal('12345')
    """
    units, _ = _to_units(amount, currency, field="amount", currency_field="currency")
    return units


def units_to_stripe_amount(amount: Decimal | int, currency: str) -> int:
    """Convert an amount in currency units to Stripe's integer amount, exactly.

    The reverse of ``stripe_amount_to_units``, for creating a payment. Amounts Stripe
    would refuse are refused here, before the API call: more decimals than Stripe charges
    in the currency (0 for JPY, ISK and UGX, 2 for EUR, and 2 for the three-decimal
    currencies, since Stripe requires their last digit to be 0). Nothing is rounded.

    Args:
        amount: The amount in units, as a ``Decimal`` or an ``int`` (floats are refused:
            ``Decimal("29.99")``, not ``29.99``).
        currency: An ISO 4217 code, any case.

    Returns:
        Stripe's integer amount: EUR 29.99 is 2999, JPY 500 is 500, ISK 12345 is 1234500,
        KWD 5.12 is 5120.

    Raises:
        ValidationTypeError: ``amount`` is not a ``Decimal`` or an ``int``.
        ValidationError: ``amount`` is negative, not finite, too large, or has more decimals
            than Stripe charges in ``currency``; ``currency`` is unknown.

    Example:
        >>> units_to_stripe_amount(Decimal("29.99"), "eur")
        2999
        >>> units_to_stripe_amount(12345, "isk")
        1234500
    """
    if isinstance(amount, bool) or not isinstance(amount, int | Decimal):
        raise ValidationTypeError(
            f"amount must be a Decimal or an int in currency units, not {type(amount).__name__}: "
            "pass Decimal('29.99') for 29.99 (floats are not exact)"
        )
    value = Decimal(amount)
    if not value.is_finite():
        raise ValidationError(f"amount must be a finite number, not {value}")
    if value < 0:
        raise ValidationError(f"amount must be zero or more, not {value}")
    code, stripe_exp, iso_exp = _stripe_currency(currency, "currency")
    if value == 0:
        return 0
    if value.adjusted() + stripe_exp >= 15:
        raise ValidationError(
            f"amount {value} is more than 15 digits in Stripe's units, larger than any Stripe "
            "amount: check its units"
        )
    allowed = min(iso_exp, stripe_exp - 1 if code in _STRIPE_THREE_DECIMAL else stripe_exp)
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite, checked above
    text = "".join(map(str, digits)).lstrip("0")
    significant = text.rstrip("0")
    exponent += len(text) - len(significant)
    if -exponent > allowed:
        raise ValidationError(
            f"amount {value} has {-exponent} decimals, more than Stripe charges in "
            f"{code.upper()} ({allowed}{_why_fewer_decimals(code)}): round it first"
        )
    # exponent + stripe_exp >= 0 here: append that many zeros to the significant digits.
    return int(significant + "0" * (exponent + stripe_exp))


def _why_fewer_decimals(code: str) -> str:
    if code in _STRIPE_THREE_DECIMAL:
        return ": Stripe requires the last of its three digits to be 0"
    if code in _STRIPE_WHOLE_UNITS_AS_TWO_DECIMAL:
        return ": whole units only, sent with two decimals that are 00"
    return ""


# --- Stripe Checkout --------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class StripeSale:
    """A paid Stripe Checkout Session, ready for ``taapit.track.sale``.

    Attributes:
        tracking_id: The ``ta_tid`` from the session's metadata, or None.
        external_id: Your user id: the session's ``client_reference_id``, else the metadata
            key you named; None when neither is set (a sale needs one: look it up).
        email: ``customer_details.email``, else ``customer_email``; None when absent.
        amount: ``amount_total`` in currency units (``Decimal("29.99")``).
        currency: Lowercase ISO 4217 code (``"eur"``).
        idempotency_key: The Checkout Session id (``cs_...``): one session is one sale,
            whichever event reports it and however often Stripe redelivers it.

    Example:
        >>> sale = stripe_checkout_sale(event)
        >>> sale.amount, sale.currency, sale.idempotency_key
        (Decimal('29.99'), 'eur', 'cs_test_a1b2c3')
    """

    tracking_id: str | None
    external_id: str | None
    # Personal data stays out of the repr, as in Customer.
    email: str | None = attrs.field(repr=False)
    amount: Decimal
    currency: str
    idempotency_key: str


def _field(mapping: Mapping[str, Any], key: str, path: str) -> Any:
    if key not in mapping or mapping[key] is None:
        raise ValidationError(
            f"{path}.{key} is missing: pass the whole Checkout Session event as Stripe sent it"
        )
    return mapping[key]


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def stripe_checkout_sale(
    event: Mapping[str, Any], *, external_id_key: str | None = None
) -> StripeSale | None:
    """Return the sale in a Stripe Checkout event, or None when no money was paid yet.

    Accepts ``checkout.session.completed`` and ``checkout.session.async_payment_succeeded``.
    Only a session whose ``payment_status`` is ``"paid"`` is a sale:

    - ``"unpaid"`` on ``checkout.session.completed`` means a delayed payment method (a bank
      debit, say): the sale arrives later as ``checkout.session.async_payment_succeeded``.
    - ``"no_payment_required"`` means nothing was charged (a free trial, a setup-mode
      session, a 100% discount): not a sale; a subscription's later payments come as
      ``invoice.paid`` events, outside this helper.

    The idempotency key is the session id, not the event id: both events above can report
    the same session, and a redelivered event carries the same session id, so tracking
    either one more than once still counts one sale.

    Args:
        event: The webhook's event, ``json.loads`` of its (verified) body; a ``stripe``
            package ``Event`` works too.
        external_id_key: A metadata key to read your user id from when the session has no
            ``client_reference_id`` (e.g. ``"user_id"``). No metadata key is guessed.

    Returns:
        A ``StripeSale``, or None when the session is not paid.

    Raises:
        ValidationError: Another event type, not a Checkout Session, or a missing field
            (``id``, ``payment_status``, ``amount_total``, ``currency``); the message names it.
        ValidationTypeError: ``event`` is not a mapping.

    Example:
        >>> sale = stripe_checkout_sale(json.loads(body), external_id_key="user_id")
        >>> if sale is not None and sale.external_id is not None:
        ...     await taapit.track.sale(
        ...         tracking_id=sale.tracking_id,
        ...         customer={"external_id": sale.external_id, "email": sale.email},
        ...         amount=sale.amount,
        ...         currency=sale.currency,
        ...         idempotency_key=sale.idempotency_key,
        ...     )
    """
    if not isinstance(event, Mapping):
        raise ValidationTypeError(
            f"event must be a mapping, not {type(event).__name__}: pass json.loads(body)"
        )
    if external_id_key is not None and not isinstance(external_id_key, str):
        raise ValidationTypeError(
            f"external_id_key must be a str or None, not {type(external_id_key).__name__}"
        )
    event_type = event.get("type")
    if event_type not in _CHECKOUT_SALE_EVENTS:
        # repr() escapes CR/LF, and the cut keeps a hostile value short in logs.
        shown = "missing" if event_type is None else repr(event_type)[:80]
        raise ValidationError(
            f"event type is {shown}, not checkout.session.completed or "
            "checkout.session.async_payment_succeeded: check event['type'] before calling"
        )
    data = event.get("data")
    session = data.get("object") if isinstance(data, Mapping) else None
    if not isinstance(session, Mapping):
        raise ValidationError(
            "event.data.object is missing: pass the whole event, not only its payload"
        )
    if session.get("object", "checkout.session") != "checkout.session":
        raise ValidationError("event.data.object is not a checkout.session")
    path = "event.data.object"
    session_id = _field(session, "id", path)
    try:
        idempotency_key = check_idempotency_key(session_id)
    except ValidationError:
        raise ValidationError(
            f"{path}.id must be the Checkout Session id (cs_...), a short printable str"
        ) from None
    status = _field(session, "payment_status", path)
    if status != "paid":
        return None
    amount, currency = _to_units(
        _field(session, "amount_total", path),
        _field(session, "currency", path),
        field=f"{path}.amount_total",
        currency_field=f"{path}.currency",
    )
    metadata = session.get("metadata")
    external_id = _text(session.get("client_reference_id"))
    if external_id is None and external_id_key is not None and isinstance(metadata, Mapping):
        external_id = _text(metadata.get(external_id_key))
    details = session.get("customer_details")
    email = _text(details.get("email")) if isinstance(details, Mapping) else None
    return StripeSale(
        tracking_id=tracking_id_from(session),
        external_id=external_id,
        email=email or _text(session.get("customer_email")),
        amount=amount,
        currency=currency,
        idempotency_key=idempotency_key,
    )


# --- Stripe signatures ------------------------------------------------------------------


def _check_secret(secret: object) -> bytes:
    if not isinstance(secret, str) or not secret:
        # An empty key would make every signature computable by anyone: refuse, loudly.
        raise ConfigurationError(
            "secret must be the endpoint's signing secret (whsec_...), a non-empty str: "
            "copy it from the Stripe Dashboard or `stripe listen`"
        )
    return secret.encode()


def _check_payload(payload: object) -> bytes:
    if not isinstance(payload, bytes):
        raise ValidationTypeError(
            f"payload must be the raw request body as bytes, not {type(payload).__name__}: "
            "pass await request.body(), before any JSON parsing"
        )
    return payload


def _check_tolerance(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(f"tolerance must be an int number of seconds >= 0, not {value!r}")
    return value


def _check_timestamp(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationTypeError(
            f"timestamp must be an int (Unix seconds), not {type(value).__name__}"
        )
    if value < 0:
        raise ValidationError(f"timestamp must be zero or more, not {value}")
    return value


def _signature(key: bytes, timestamp: str, payload: bytes) -> str:
    return hmac.new(key, timestamp.encode() + b"." + payload, hashlib.sha256).hexdigest()


def _signed_with(secret: str, timestamp: str, payload: bytes, signatures: list[str]) -> bool:
    """Whether one of ``signatures`` is the payload's, in constant time.

    A function of its own so that the frame which raises on a mismatch holds neither the
    key's bytes nor a valid signature (error trackers record the locals of every frame).
    """
    expected = _signature(secret.encode(), timestamp, payload).encode()
    # Bytes, not str: compare_digest refuses non-ASCII str, and the header is untrusted.
    return any(hmac.compare_digest(expected, s.encode()) for s in signatures)


def _parse_header(header: object) -> tuple[str, list[str]]:
    if header is None or (isinstance(header, str) and not header.strip()):
        raise WebhookSignatureError(
            "the Stripe-Signature header is missing: the request did not come from Stripe"
        )
    if not isinstance(header, str):
        raise ValidationTypeError(
            f"header must be the Stripe-Signature header as a str, not {type(header).__name__}"
        )
    timestamps: list[str] = []
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            raise WebhookSignatureError(
                "the Stripe-Signature header is malformed: expected t=...,v1=..."
            )
        if key == "t":
            timestamps.append(value)
        elif key == _HEX_SIGNATURE_SCHEME:
            signatures.append(value)
        # Other schemes (v0 in test mode, future ones) are not ours to check: ignored.
    if len(timestamps) != 1 or _TIMESTAMP.fullmatch(timestamps[0]) is None:
        raise WebhookSignatureError(
            "the Stripe-Signature header is malformed: it needs exactly one t=<unix time>"
        )
    if not signatures:
        raise WebhookSignatureError(
            "the Stripe-Signature header has no v1 signature: expected t=...,v1=..."
        )
    return timestamps[0], signatures


def verify_stripe_signature(
    payload: bytes,
    header: str | None,
    secret: str,
    *,
    tolerance: int = STRIPE_SIGNATURE_TOLERANCE,
    now: float | None = None,
) -> None:
    """Check a Stripe webhook's ``Stripe-Signature`` header, without the ``stripe`` package.

    Stripe's scheme (https://docs.stripe.com/webhooks#verify-manually): the header is
    ``t=<unix time>,v1=<hex>[,v1=<hex>...]``; each ``v1`` is the HMAC-SHA256, keyed with
    the endpoint's signing secret, of ``f"{t}.{payload}"``. One matching ``v1`` is enough
    (Stripe sends several while a secret is being rolled); other schemes are ignored.
    Signatures are compared in constant time. Then the timestamp must be within
    ``tolerance`` seconds of ``now``, in either direction: an old one is a replay, one far
    in the future a broken clock.

    Args:
        payload: The raw request body, byte for byte (parsing and re-encoding JSON breaks
            the signature).
        header: The ``Stripe-Signature`` header's value; None when the request had none.
        secret: The endpoint's signing secret (``whsec_...``).
        tolerance: Seconds allowed between the header's timestamp and ``now`` (300).
        now: The current Unix time; ``time.time()`` by default (tests pin it).

    Raises:
        WebhookSignatureError: The header is missing or malformed, no ``v1`` signature
            matches, or the timestamp is outside the tolerance. Answer HTTP 400.
        ConfigurationError: ``secret`` is empty or not a str, or ``tolerance`` is negative.
        ValidationTypeError: ``payload`` is not ``bytes``.

    Example:
        >>> verify_stripe_signature(
        ...     await request.body(), request.headers.get("stripe-signature"), "whsec_..."
        ... )
    """
    body = _check_payload(payload)
    _check_secret(secret)
    seconds = _check_tolerance(tolerance)
    timestamp, signatures = _parse_header(header)
    if not _signed_with(secret, timestamp, body, signatures):
        raise WebhookSignatureError(
            "no v1 signature matches the payload: check the endpoint's signing secret "
            "(whsec_...) and pass the raw request body, unparsed"
        )
    age = (time.time() if now is None else now) - int(timestamp)
    if abs(age) > seconds:
        when = f"{age:.0f} seconds old" if age > 0 else f"{-age:.0f} seconds in the future"
        raise WebhookSignatureError(
            f"the signature's timestamp is {when}, beyond the {seconds} s tolerance: "
            "a replayed request, or a clock that needs syncing"
        )


def sign_stripe_payload(payload: bytes, secret: str, *, timestamp: int | None = None) -> str:
    """Build a valid ``Stripe-Signature`` header for ``payload``: for tests and demos.

    Stripe signs real webhooks itself; use this to send your own handler a request that
    ``verify_stripe_signature`` accepts.

    Args:
        payload: The exact body you will send.
        secret: The signing secret your handler verifies with (``whsec_test_...``).
        timestamp: The Unix time to sign at; now by default.

    Returns:
        The header value, ``t=<timestamp>,v1=<hex signature>``.

    Raises:
        ConfigurationError: ``secret`` is empty or not a str.
        ValidationTypeError: ``payload`` is not ``bytes`` or ``timestamp`` not an int.
        ValidationError: ``timestamp`` is negative.

    Example:
        >>> sign_stripe_payload(b"{}", "whsec_test", timestamp=1700000000)[:13]
        't=1700000000,'
    """
    body = _check_payload(payload)
    key = _check_secret(secret)
    signed_at = str(int(time.time()) if timestamp is None else _check_timestamp(timestamp))
    return f"t={signed_at},{_HEX_SIGNATURE_SCHEME}={_signature(key, signed_at, body)}"
