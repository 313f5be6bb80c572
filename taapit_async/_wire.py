"""The wire format: one private cattrs converter owns the JSON Taapit reads and writes.

Outgoing bodies are camelCase, keys whose value is None are left out (never ``null``),
``metadata`` goes out exactly as the caller gave it, and amounts are JSON numbers in
currency units. Replies are read leniently: the reference documents no response body, so
unknown fields and unexpected types are ignored instead of failing a delivered event.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Final

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from ._errors import ValidationError
from ._models import Customer, LeadEvent, SaleEvent, check_metadata_size

__all__ = ["Reply", "encode_event", "parse_reply"]


def _identity(value: Any) -> Any:
    return value


def _amount_to_json(amount: Decimal) -> int | float:
    # Models have checked that the amount is exact as a double, so this loses nothing; an
    # integral amount goes out without a fraction (EUR 30 as 30, JPY 500 as 500).
    integral = amount.to_integral_value()
    return int(integral) if integral == amount else float(amount)


def _lenient(kind: type[Any]) -> Any:
    # A reply field of an unexpected type reads as absent rather than failing the event.
    def structure(value: Any, _type: Any) -> Any:
        return value if isinstance(value, kind) else None

    return structure


@attrs.frozen
class ReplyError:
    """The ``error`` object of a Taapit reply, when it has one."""

    code: str | None = None
    message: str | None = None


@attrs.frozen
class Reply:
    """The parts of a Taapit reply body the client uses."""

    success: bool | None = None
    event_id: str | None = None
    id: str | None = None
    error: ReplyError | None = None


_converter: Final = cattrs.Converter()
_converter.register_unstructure_hook(Decimal, _amount_to_json)
_converter.register_unstructure_hook(
    Customer,
    make_dict_unstructure_fn(
        Customer,
        _converter,
        _cattrs_omit_if_default=True,
        external_id=override(rename="externalId"),
        phone_number=override(rename="phoneNumber"),
        avatar_url=override(rename="avatarUrl"),
    ),
)
for _event in (LeadEvent, SaleEvent):
    _converter.register_unstructure_hook(
        _event,
        make_dict_unstructure_fn(
            _event,
            _converter,
            _cattrs_omit_if_default=True,
            tracking_id=override(rename="trackingId"),
            metadata=override(unstruct_hook=_identity),
        ),
    )

_converter.register_structure_hook(str | None, _lenient(str))
_converter.register_structure_hook(bool | None, _lenient(bool))
_structure_error_object = make_dict_structure_fn(
    ReplyError, _converter, _cattrs_forbid_extra_keys=False
)


def _structure_reply_error(value: Any, _type: Any) -> ReplyError | None:
    # Servers say "error": "text" as often as "error": {"code": ..., "message": ...}.
    if isinstance(value, str):
        return ReplyError(message=value)
    if isinstance(value, dict):
        return _structure_error_object(value, ReplyError)
    return None


_converter.register_structure_hook(ReplyError | None, _structure_reply_error)
_converter.register_structure_hook(
    Reply,
    make_dict_structure_fn(
        Reply, _converter, _cattrs_forbid_extra_keys=False, event_id=override(rename="eventId")
    ),
)


# Built once: json.dumps with options builds a new encoder on every call.
_encoder: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def encode_event(event: LeadEvent | SaleEvent) -> bytes:
    """Return the request body for ``event``: compact UTF-8 JSON in Taapit's camelCase.

    Raises:
        ValidationError: The metadata is over its size cap (checked here, where the body's
            size is known, so that metadata is serialized once), or nested too deeply for
            the JSON encoder.
    """
    try:
        body = _encoder.encode(_converter.unstructure(event)).encode()
    except RecursionError:  # only metadata nests: a few thousand levels fit in its cap
        raise ValidationError(
            "metadata is nested too deeply to encode as JSON: flatten it (a few levels "
            "are plenty to analyse conversions)"
        ) from None
    check_metadata_size(event.metadata, len(body))
    return body


def parse_reply(body: bytes) -> Reply:
    """Read a reply body leniently; anything that is not a JSON object is an empty ``Reply``."""
    if not body:
        return Reply()
    try:
        # Decoded first: given bytes, json.loads sniffs the encoding in Python each time.
        data = json.loads(body.decode())
    except ValueError:
        try:  # a byte order mark, or UTF-16/32: json's own detection reads those
            data = json.loads(body)
        except ValueError:  # not JSON: still a reply, just one without details
            return Reply()
    if not isinstance(data, dict):
        return Reply()
    return _converter.structure(data, Reply)
