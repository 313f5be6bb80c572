"""Reading ids from bodies: the fast paths give exactly what a full ``json.loads`` gives."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taapit_async import AsyncTaapit
from taapit_async._models import is_valid_tracking_id
from taapit_async.integrations._extract import body_kind, from_cookie_header, from_json
from taapit_async.integrations.asgi import Message, Receive, Scope, Send, TaapitMiddleware

TID = "rLnWe1uz9t282v7g"


def reference(body: bytes) -> str | None:
    """What ``from_json`` means: parse the whole body, then ``trackingId``, then ``ta_tid``."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    for key in ("trackingId", "ta_tid"):
        if key in data and is_valid_tracking_id(data[key]):
            return str(data[key])
    return None


def escaped(key: str, mask: int) -> str:
    """A JSON string literal for ``key`` with the characters ``mask`` picks as ``\\uXXXX``."""
    chars = (
        f"\\u{ord(c):04x}" if mask >> i & 1 else json.dumps(c)[1:-1] for i, c in enumerate(key)
    )
    return '"' + "".join(chars) + '"'


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12) | st.just(TID),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)
keys = st.sampled_from(["trackingId", "ta_tid", "tracking_id", "ta_tidx", "x"]) | st.text(
    max_size=8
)


@st.composite
def json_bodies(draw: st.DrawFn) -> bytes:
    """JSON objects spelt every way json.loads accepts, and some ways it does not."""
    pairs = draw(st.lists(st.tuples(keys, json_values, st.integers(0, 2**12)), max_size=5))
    text = "{" + ",".join(f"{escaped(k, mask)}:{json.dumps(v)}" for k, v, mask in pairs) + "}"
    text = draw(st.sampled_from(["", " ", "\n\t"])) + text
    text += draw(st.sampled_from(["", " \r\n", "x", "{}", "\x0c"]))
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16-le", "utf-16", "utf-32-be"]))
    body = text.encode(encoding, "surrogatepass")
    return body[: draw(st.integers(0, len(body)))] if draw(st.booleans()) else body


@settings(max_examples=500, deadline=None)
@given(body=json_bodies() | st.binary(max_size=64))
def test_from_json_finds_exactly_what_a_full_parse_finds(body: bytes) -> None:
    assert from_json(body) == reference(body)


@pytest.mark.parametrize(
    "key",
    ["ta\\u005ftid", "\\u0074a_tid", "tracking\\u0049d", "\\u0074\\u0072ackingId"],
)
def test_a_key_spelt_with_unicode_escapes_is_still_found(key: str) -> None:
    """The no-key shortcut must not skip a body whose key is written with escapes."""
    body = f'{{"email": "a@example.com", "{key}": "{TID}"}}'.encode()

    assert from_json(body) == TID


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le", "utf-32-be"])
def test_bodies_in_every_encoding_json_accepts_are_read(encoding: str) -> None:
    body = json.dumps({"trackingId": TID}).encode(encoding)

    assert from_json(body) == TID


@pytest.mark.parametrize(
    ("body", "found"),
    [
        (b'{"ta_tid": "%s"}  \r\n' % TID.encode(), TID),  # trailing whitespace is fine
        (b'{"ta_tid": "%s"} {}' % TID.encode(), None),  # trailing data is not JSON
        (b' {"ta_tid": "%s"}' % TID.encode(), TID),  # neither is leading whitespace a problem
        (b'{"ta_tid": "%s", "x": "\xed\xa0\x80"}' % TID.encode(), TID),  # as json.loads
        (b'{"email": "a@example.com", "pad": "' + b"x" * 900 + b'"}', None),
        (b'{"email": "a\\nb", "ta_tid": "%s"}' % TID.encode(), TID),
    ],
)
def test_edge_bodies_read_as_a_full_parse_reads_them(body: bytes, found: str | None) -> None:
    assert reference(body) == found
    assert from_json(body) == found


@pytest.mark.parametrize("prefix", [b"", b" "])
def test_a_body_nested_too_deep_has_no_id_instead_of_raising(prefix: bytes) -> None:
    body = prefix + b'{"trackingId": "' + TID.encode() + b'", "a": ' + b"[" * 30_000
    body += b"]" * 30_000 + b"}"

    assert from_json(body) is None


def reference_cookie(header: bytes) -> str | None:
    """What ``from_cookie_header`` means: the first ``ta_tid`` pair decides, checked as text."""
    start = header.find(b"ta_tid=")
    while start >= 0:
        if start == 0 or header[start - 1] in b"; \t":
            end = header.find(b";", start)
            value = header[start + 7 : end if end >= 0 else None].strip()
            if len(value) >= 2 and value[:1] == value[-1:] == b'"':
                value = value[1:-1]
            text = value.decode("latin-1")
            return text if is_valid_tracking_id(text) else None
        start = header.find(b"ta_tid=", start + 1)
    return None


cookie_values = (
    st.binary(max_size=12)
    | st.just(TID.encode())
    | st.text("ab_-9Z", min_size=120, max_size=130).map(str.encode)
    | st.sampled_from([b"", b'""', b'"' + TID.encode() + b'"', b'"' + TID.encode(), b" a "])
)


@settings(max_examples=500, deadline=None)
@given(
    pairs=st.lists(
        st.tuples(st.sampled_from(["ta_tid", "xta_tid", "session", "TA_TID"]), cookie_values),
        max_size=4,
    ),
    separator=st.sampled_from([b"; ", b";", b"; \t", b" "]),
)
def test_from_cookie_header_applies_the_id_rule_exactly(
    pairs: list[tuple[str, bytes]], separator: bytes
) -> None:
    header = separator.join(name.encode() + b"=" + value for name, value in pairs)

    assert from_cookie_header(header) == reference_cookie(header)


@pytest.mark.parametrize("byte", range(256))
def test_every_byte_value_is_judged_as_the_text_rule_judges_it(byte: int) -> None:
    header = b"ta_tid=ab" + bytes([byte]) + b"cd"

    assert from_cookie_header(header) == reference_cookie(header)


@pytest.mark.parametrize(
    "content_type",
    [
        b"application/json",
        b"application/json; charset=utf-8",
        b"application/x-www-form-urlencoded",
        b"Application/JSON",
        b"application/vnd.api+json",
        b"multipart/form-data; boundary=x",
        b"text/plain",
    ],
)
def test_common_content_types_are_classified_as_by_parsing_them(content_type: bytes) -> None:
    assert body_kind(content_type) == body_kind(content_type.decode())


async def test_the_middleware_passes_a_too_deep_body_on_instead_of_failing() -> None:
    body = b'{"trackingId": "' + TID.encode() + b'", "a": ' + b"[" * 30_000
    body += b"]" * 30_000 + b"}"
    seen: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(await receive())
        seen.append({"tracker": scope["state"]["taapit"].tracking_id})

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        raise AssertionError(message)  # pragma: no cover

    scope: Scope = {
        "type": "http",
        "method": "POST",
        "headers": [(b"content-type", b"application/json")],
        "query_string": b"",
    }
    await TaapitMiddleware(app, client=AsyncTaapit(enabled=False))(scope, receive, send)

    assert seen == [{"type": "http.request", "body": body, "more_body": False}, {"tracker": None}]
