"""Finding a visitor's ``ta_tid`` in a cookie header, a query string or a small body.

Shared by the ASGI middleware and the framework helpers so that both read ids the same way:
a valid id is ``[A-Za-z0-9_-]{1,128}``; anything else counts as absent and is never echoed.
Where a source repeats the key, the first value is the one that counts.
"""

from __future__ import annotations

import json
import string
from typing import Final, Literal
from urllib.parse import parse_qsl

from taapit_async._models import is_valid_tracking_id

__all__ = [
    "COOKIE_NAME",
    "DEFAULT_BODY_LIMIT",
    "Source",
    "body_kind",
    "from_body",
    "from_cookie_header",
    "from_form",
    "from_json",
    "from_query",
]

Source = Literal["cookie", "body", "query"]

#: The first-party cookie, URL parameter and form field that carry the tracking id.
COOKIE_NAME: Final = "ta_tid"
#: Largest body the middleware reads to look for an id; larger bodies stream through.
DEFAULT_BODY_LIMIT: Final = 64 * 1024

_COOKIE_PREFIX: Final = COOKIE_NAME.encode() + b"="
# The bytes of a valid id, ``[A-Za-z0-9_-]``, and its longest length (see _models).
_ID_BYTES: Final = (string.ascii_letters + string.digits + "_-").encode()
_MAX_ID_LENGTH: Final = 128
_JSON_KEYS: Final = ("trackingId", COOKIE_NAME)
_JSON_WHITESPACE: Final = " \t\n\r"
_DECODER: Final = json.JSONDecoder()
# The usual Content-Type values, looked up before parsing one: this runs on every request.
_COMMON_KINDS: Final[dict[bytes, Literal["json", "form"]]] = {
    b"application/json": "json",
    b"application/json; charset=utf-8": "json",
    b"application/x-www-form-urlencoded": "form",
}


def _valid(value: object) -> str | None:
    return value if is_valid_tracking_id(value) else None  # type: ignore[return-value]


def from_cookie_header(header: bytes) -> str | None:
    """Return the valid ``ta_tid`` of a ``Cookie`` header value, or None."""
    # Find the pair directly instead of splitting every cookie: this runs on every request.
    start = header.find(_COOKIE_PREFIX)
    while start >= 0:
        if start == 0 or header[start - 1] in b"; \t":
            end = header.find(b";", start)
            value = header[start + len(_COOKIE_PREFIX) : end if end >= 0 else None].strip()
            # RFC 6265 allows a quoted value; ids never contain quotes themselves.
            if len(value) >= 2 and value[:1] == value[-1:] == b'"':
                value = value[1:-1]
            # The id rule checked on the bytes themselves: deleting every allowed byte must
            # leave nothing. Cheaper than decoding and a regex, and exactly the same rule.
            if 0 < len(value) <= _MAX_ID_LENGTH and not value.translate(None, _ID_BYTES):
                return value.decode("ascii")
            return None
        start = header.find(_COOKIE_PREFIX, start + 1)
    return None


def from_query(query_string: bytes | str) -> str | None:
    """Return the valid ``ta_tid`` of a raw query string, or None."""
    if not query_string:
        return None
    text = query_string.decode("latin-1") if isinstance(query_string, bytes) else query_string
    if COOKIE_NAME not in text and "ta%5Ftid" not in text.lower():
        return None
    for name, value in parse_qsl(text, keep_blank_values=True):
        if name == COOKIE_NAME:
            return _valid(value)
    return None


def body_kind(content_type: bytes | str | None) -> Literal["json", "form"] | None:
    """Tell which bodies may be read for an id: JSON (incl. ``+json``) and url-encoded forms.

    Multipart and every other type are never read.
    """
    if not content_type:
        return None
    if isinstance(content_type, bytes) and content_type in _COMMON_KINDS:
        return _COMMON_KINDS[content_type]
    text = content_type.decode("latin-1") if isinstance(content_type, bytes) else content_type
    media = text.partition(";")[0].strip().lower()
    if media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    ):
        return "json"
    if media == "application/x-www-form-urlencoded":
        return "form"
    return None


def from_json(body: bytes) -> str | None:
    """Return the id of a JSON object body: ``trackingId``, then ``ta_tid``; else None."""
    if body[:1] != b"{" or body[1:2] == b"\x00":
        # A BOM, leading space, UTF-16/32 or not an object at all: the general path.
        return _object_id(_parse(body))
    # Here json.loads would decode as UTF-8 too (no BOM, no NUL up front), so a key can only
    # be spelt without its own letters through a \u escape ("ta\u005ftid"): with neither
    # key nor any backslash in the bytes there is no id to find, and no need to parse.
    # (A lone backslash is one memchr, cheaper than looking for "\u" itself.)
    if b"trackingId" not in body and b"ta_tid" not in body and b"\\" not in body:
        return None
    try:
        # What json.loads(body) does, minus its encoding sniffing and whitespace regexes.
        text = body.decode("utf-8", "surrogatepass")
        data, end = _DECODER.raw_decode(text)
    except (ValueError, RecursionError):
        return None
    if end != len(text) and text[end:].strip(_JSON_WHITESPACE):  # json.loads: "Extra data"
        return None
    return _object_id(data)


def _parse(body: bytes) -> object:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # invalid, not UTF-8/16/32, or nested too deep
        return None


def _object_id(data: object) -> str | None:
    if not isinstance(data, dict):
        return None
    for key in _JSON_KEYS:
        if key in data:
            found = _valid(data[key])
            if found is not None:
                return found
    return None


def from_form(body: bytes) -> str | None:
    """Return the valid ``ta_tid`` field of a url-encoded form body, or None."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:  # a form is percent-encoded ASCII; anything else is not one
        return None
    return from_query(text)


def from_body(kind: Literal["json", "form"], body: bytes) -> str | None:
    """Return the id of a body of the given kind, or None."""
    return from_json(body) if kind == "json" else from_form(body)
