"""TaapitMiddleware at the raw ASGI level: sources, transparency, cookies, lifespan."""

from __future__ import annotations

import asyncio
import json
from collections.abc import MutableMapping, Sequence
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taapit_async import AsyncTaapit, ConfigurationError, ErrorCode, ValidationError
from taapit_async.integrations.asgi import (
    CookieOptions,
    RequestTracker,
    TaapitMiddleware,
    current_tracker,
)
from taapit_async.testing import FakeTaapit

TID = "rLnWe1uz9t282v7g"
OTHER = "Other_click-42"

Message = MutableMapping[str, Any]
Scope = MutableMapping[str, Any]


class Recorder:
    """An ASGI app that reads the whole body and records what it saw."""

    def __init__(self) -> None:
        self.received: list[Message] = []
        self.tracker: RequestTracker | None = None
        self.context_tracker: RequestTracker | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        self.tracker = scope["state"]["taapit"]
        self.context_tracker = current_tracker()
        while True:
            message = await receive()
            self.received.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def http_scope(
    *,
    method: str = "POST",
    query: str = "",
    headers: Sequence[tuple[bytes, bytes]] = (),
    scheme: str = "http",
) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": scheme,
        "path": "/",
        "raw_path": b"/",
        "query_string": query.encode(),
        "headers": list(headers),
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }


def messages_for(chunks: Sequence[bytes], *, disconnect: bool = False) -> list[Message]:
    messages: list[Message] = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ] or [{"type": "http.request", "body": b"", "more_body": False}]
    if disconnect:
        messages[-1]["more_body"] = True
        messages.append({"type": "http.disconnect"})
    return messages


async def run(app: Any, scope: dict[str, Any], messages: Sequence[Message]) -> list[Message]:
    """Drive one request; return what the app sent."""
    pending = list(messages)
    sent: list[Message] = []

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def json_headers(
    body: bytes, content_type: bytes = b"application/json"
) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]


async def tracker_for(
    *, body: bytes = b"", headers: Sequence[tuple[bytes, bytes]] = (), **scope: Any
) -> RequestTracker:
    app = Recorder()
    await run(TaapitMiddleware(app), http_scope(headers=headers, **scope), messages_for([body]))
    assert app.tracker is not None
    return app.tracker


# --- where the id comes from ----------------------------------------------------------


async def test_the_cookie_is_the_first_source() -> None:
    body = json.dumps({"trackingId": OTHER}).encode()
    tracker = await tracker_for(
        body=body, headers=[(b"cookie", f"ta_tid={TID}".encode()), *json_headers(body)]
    )
    assert (tracker.tracking_id, tracker.source) == (TID, "cookie")


async def test_a_json_body_comes_before_the_query_on_a_post() -> None:
    body = json.dumps({"email": "a@b.c", "trackingId": TID}).encode()
    tracker = await tracker_for(body=body, headers=json_headers(body), query=f"ta_tid={OTHER}")
    assert (tracker.tracking_id, tracker.source) == (TID, "body")


async def test_json_tracking_id_beats_json_ta_tid() -> None:
    body = json.dumps({"ta_tid": OTHER, "trackingId": TID}).encode()
    assert (await tracker_for(body=body, headers=json_headers(body))).tracking_id == TID


async def test_an_invalid_json_tracking_id_falls_through_to_ta_tid() -> None:
    body = json.dumps({"trackingId": "bad id", "ta_tid": TID}).encode()
    assert (await tracker_for(body=body, headers=json_headers(body))).tracking_id == TID


async def test_a_vendor_json_content_type_is_read() -> None:
    body = json.dumps({"trackingId": TID}).encode()
    headers = json_headers(body, b"application/vnd.api+json; charset=utf-8")
    assert (await tracker_for(body=body, headers=headers)).source == "body"


async def test_a_form_field_is_read_and_the_first_value_counts() -> None:
    body = urlencode([("email", "a@b.c"), ("ta_tid", TID), ("ta_tid", OTHER)]).encode()
    headers = json_headers(body, b"application/x-www-form-urlencoded")
    tracker = await tracker_for(body=body, headers=headers)
    assert (tracker.tracking_id, tracker.source) == (TID, "body")


async def test_the_query_is_the_last_source_on_a_post() -> None:
    tracker = await tracker_for(query=f"utm=x&ta_tid={TID}")
    assert (tracker.tracking_id, tracker.source) == (TID, "query")


async def test_a_get_with_a_url_id_is_a_fresh_click_that_beats_the_cookie() -> None:
    tracker = await tracker_for(
        method="GET", query=f"ta_tid={OTHER}", headers=[(b"cookie", f"ta_tid={TID}".encode())]
    )
    assert (tracker.tracking_id, tracker.source) == (OTHER, "query")


async def test_no_id_anywhere_gives_an_empty_tracker() -> None:
    tracker = await tracker_for()
    assert (tracker.tracking_id, tracker.source) == (None, None)


@pytest.mark.parametrize(
    "hostile",
    ["a;b", "a\r\nSet-Cookie: x=1", "<script>alert(1)</script>", "x" * 129, "", "a b", "é"],
)
async def test_hostile_ids_count_as_absent_everywhere(hostile: str) -> None:
    body = json.dumps({"trackingId": hostile}).encode()
    cookie = b"ta_tid=" + hostile.encode("utf-8").replace(b";", b"%3B").replace(b"\r\n", b"")
    tracker = await tracker_for(
        body=body,
        headers=[(b"cookie", cookie), *json_headers(body)],
        query=urlencode({"ta_tid": hostile}),
    )
    assert tracker.tracking_id is None


async def test_an_invalid_cookie_falls_through_to_the_body() -> None:
    body = json.dumps({"trackingId": TID}).encode()
    tracker = await tracker_for(
        body=body, headers=[(b"cookie", b"ta_tid=<bad>; other=1"), *json_headers(body)]
    )
    assert tracker.source == "body"


async def test_a_quoted_cookie_value_is_read() -> None:
    tracker = await tracker_for(headers=[(b"cookie", f'theme=dark; ta_tid="{TID}"'.encode())])
    assert tracker.tracking_id == TID


async def test_the_body_is_not_read_when_a_valid_cookie_was_found() -> None:
    reads = 0

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> Message:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: Message) -> None:
        pass

    scope = http_scope(headers=[(b"cookie", f"ta_tid={TID}".encode()), *json_headers(b"{}")])
    await TaapitMiddleware(app)(scope, receive, send)
    assert reads == 0


@pytest.mark.parametrize(
    "content_type",
    [b"multipart/form-data; boundary=x", b"text/plain", b"application/octet-stream", b""],
)
async def test_other_body_types_are_never_read(content_type: bytes) -> None:
    body = json.dumps({"trackingId": TID}).encode()
    tracker = await tracker_for(body=body, headers=json_headers(body, content_type))
    assert tracker.tracking_id is None


async def test_a_declared_length_over_the_cap_is_not_read() -> None:
    body = json.dumps({"trackingId": TID, "pad": "x" * 100}).encode()
    app = Recorder()
    reads: list[Message] = []
    middleware = TaapitMiddleware(app, body_limit=50)
    messages = messages_for([body])

    async def receive() -> Message:
        message = messages.pop(0)
        reads.append(message)
        return message

    async def send(message: Message) -> None:
        pass

    await middleware(http_scope(headers=json_headers(body)), receive, send)
    assert app.tracker is not None
    assert app.tracker.tracking_id is None
    assert app.received == reads  # the app read it all itself, nothing was held back


@pytest.mark.parametrize(
    "body", [b"{not json", b"\xff\xfe\x00", b"[1, 2]", b"null", b"", b'"string"']
)
async def test_unparseable_or_non_object_bodies_give_no_id(body: bytes) -> None:
    assert (await tracker_for(body=body, headers=json_headers(body))).tracking_id is None


async def test_the_context_variable_holds_the_same_tracker_and_is_reset() -> None:
    app = Recorder()
    await run(TaapitMiddleware(app), http_scope(query=f"ta_tid={TID}"), messages_for([b""]))
    assert app.context_tracker is app.tracker
    with pytest.raises(LookupError, match="inside a request handled by TaapitMiddleware"):
        current_tracker()


async def test_concurrent_requests_never_mix_trackers() -> None:
    seen: dict[str, str | None] = {}

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await asyncio.sleep(0.001 * (hash(scope["path"]) % 5))
        seen[scope["path"]] = current_tracker().tracking_id
        assert scope["state"]["taapit"] is current_tracker()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware = TaapitMiddleware(app)

    async def one(i: int) -> None:
        scope = http_scope(method="GET", query=f"ta_tid=id_{i}")
        scope["path"] = f"/{i}"
        await run(middleware, scope, messages_for([b""]))

    await asyncio.gather(*(one(i) for i in range(200)))
    assert seen == {f"/{i}": f"id_{i}" for i in range(200)}


async def test_requests_sharing_one_lifespan_state_dict_keep_their_own_trackers() -> None:
    shared: dict[str, Any] = {"db": "the app's own state"}  # as asgi-lifespan hands it out
    seen: dict[str, str | None] = {}

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await asyncio.sleep(0.001 * (int(scope["path"][1:]) % 5))
        seen[scope["path"]] = scope["state"]["taapit"].tracking_id
        assert scope["state"]["db"] == "the app's own state"
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware = TaapitMiddleware(app)

    async def one(i: int) -> None:
        scope = http_scope(method="GET", query=f"ta_tid=id_{i}")
        scope["path"] = f"/{i}"
        scope["state"] = shared
        await run(middleware, scope, messages_for([b""]))

    await asyncio.gather(*(one(i) for i in range(50)))
    assert seen == {f"/{i}": f"id_{i}" for i in range(50)}
    assert shared == {"db": "the app's own state"}  # the lifespan's dict is left alone


# --- transparency ---------------------------------------------------------------------

content_types = st.sampled_from(
    [
        b"application/json",
        b"application/json; charset=utf-8",
        b"application/problem+json",
        b"application/x-www-form-urlencoded",
        b"multipart/form-data; boundary=zzz",
        b"text/plain",
        None,
    ]
)
bodies = st.one_of(
    st.binary(max_size=300),
    st.dictionaries(st.sampled_from(["trackingId", "ta_tid", "x"]), st.text(max_size=20)).map(
        lambda d: json.dumps(d).encode()
    ),
    st.lists(st.tuples(st.sampled_from(["ta_tid", "a"]), st.text(max_size=10))).map(
        lambda pairs: urlencode(pairs).encode()
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=bodies,
    content_type=content_types,
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=6),
    declare_length=st.booleans(),
    disconnect=st.booleans(),
    limit=st.sampled_from([0, 16, 64, 65536]),
)
def test_the_app_receives_exactly_the_messages_it_would_without_the_middleware(
    body: bytes,
    content_type: bytes | None,
    cuts: list[int],
    declare_length: bool,
    disconnect: bool,
    limit: int,
) -> None:
    points = sorted({min(c, len(body)) for c in cuts})
    chunks = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    headers: list[tuple[bytes, bytes]] = []
    if content_type is not None:
        headers.append((b"content-type", content_type))
    if declare_length:
        headers.append((b"content-length", str(len(body)).encode()))

    bare, wrapped = Recorder(), Recorder()

    async def both() -> tuple[list[Message], list[Message]]:
        async def bare_app(scope: Scope, receive: Any, send: Any) -> None:
            scope["state"] = {"taapit": None}
            # Recorder reads current_tracker(); give the bare run a context too.
            bare.tracker = None
            while True:
                message = await receive()
                bare.received.append(message)
                if message["type"] != "http.request" or not message.get("more_body", False):
                    break
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        sent_bare = await run(
            bare_app, http_scope(headers=headers), messages_for(chunks, disconnect=disconnect)
        )
        sent_wrapped = await run(
            TaapitMiddleware(wrapped, body_limit=limit),
            http_scope(headers=headers),
            messages_for(chunks, disconnect=disconnect),
        )
        return sent_bare, sent_wrapped

    sent_bare, sent_wrapped = asyncio.run(both())
    assert wrapped.received == bare.received
    assert sent_wrapped == sent_bare
    assert wrapped.tracker is not None
    if wrapped.tracker.tracking_id is not None:
        assert wrapped.tracker.source == "body"
        assert len(body) <= limit
        assert (content_type is not None and b"json" in content_type) or b"urlencoded" in (
            content_type or b""
        )


async def test_a_huge_body_streams_through_with_bounded_buffering() -> None:
    chunk = b"x" * 65536
    count = 64  # 4 MiB in all
    held: list[int] = []

    app = Recorder()
    middleware = TaapitMiddleware(app)
    produced = 0

    async def receive() -> Message:
        nonlocal produced
        produced += 1
        held.append(produced - len(app.received))  # messages read but not yet seen by the app
        return {"type": "http.request", "body": chunk, "more_body": produced < count}

    async def send(message: Message) -> None:
        pass

    await middleware(http_scope(headers=[(b"content-type", b"application/json")]), receive, send)
    assert len(app.received) == count
    assert all(m["body"] is chunk for m in app.received)
    assert max(held) <= 2  # at most the cap plus the chunk that crossed it


async def test_a_disconnect_while_peeking_is_passed_to_the_app() -> None:
    app = Recorder()
    body = b'{"trackingId": "' + TID.encode()
    await run(
        TaapitMiddleware(app),
        http_scope(headers=[(b"content-type", b"application/json")]),
        [{"type": "http.request", "body": body, "more_body": True}, {"type": "http.disconnect"}],
    )
    assert [m["type"] for m in app.received] == ["http.request", "http.disconnect"]
    assert app.tracker is not None
    assert app.tracker.tracking_id is None


async def test_websocket_and_unknown_scopes_pass_through_untouched() -> None:
    seen: list[tuple[Scope, Any, Any]] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        seen.append((scope, receive, send))

    async def receive() -> Message:  # pragma: no cover
        return {}

    async def send(message: Message) -> None:  # pragma: no cover
        pass

    middleware = TaapitMiddleware(app, client=AsyncTaapit(enabled=False))
    scope = {
        "type": "websocket",
        "path": "/ws",
        "query_string": f"ta_tid={TID}".encode(),
        "headers": [],
    }
    await middleware(scope, receive, send)
    ((seen_scope, seen_receive, seen_send),) = seen
    assert seen_scope is scope
    assert "state" not in scope
    assert seen_receive is receive
    assert seen_send is send


# --- the cookie -----------------------------------------------------------------------


def cookie_headers(sent: list[Message]) -> list[tuple[bytes, bytes]]:
    start = next(m for m in sent if m["type"] == "http.response.start")
    return [(k, v) for k, v in start["headers"] if k in {b"set-cookie", b"cache-control"}]


async def respond_with(reply_headers: list[tuple[bytes, bytes]], **scope: Any) -> list[Message]:
    async def app(s: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": reply_headers})
        await send({"type": "http.response.body", "body": b"hi"})

    options = scope.pop("options", {})
    return await run(TaapitMiddleware(app, **options), http_scope(**scope), messages_for([b""]))


async def test_a_click_sets_the_first_party_cookie_and_keeps_other_cookies() -> None:
    sent = await respond_with(
        [(b"set-cookie", b"session=abc; HttpOnly"), (b"content-type", b"text/html")],
        method="GET",
        query=f"ta_tid={TID}",
    )
    start = sent[0]
    assert (b"set-cookie", b"session=abc; HttpOnly") in start["headers"]
    assert (
        b"set-cookie",
        f"ta_tid={TID}; Path=/; Max-Age=7776000; SameSite=Lax".encode(),
    ) in start["headers"]
    assert (b"content-type", b"text/html") in start["headers"]
    assert sent[1] == {"type": "http.response.body", "body": b"hi"}


async def test_the_cookie_is_secure_on_https_and_takes_its_options() -> None:
    sent = await respond_with(
        [],
        method="GET",
        query=f"ta_tid={TID}",
        scheme="https",
        options={
            "cookie": CookieOptions(
                max_age=3600, domain="example.com", samesite="strict", httponly=True
            )
        },
    )
    assert (
        b"set-cookie",
        f"ta_tid={TID}; Path=/; Max-Age=3600; Domain=example.com; SameSite=Strict; "
        "Secure; HttpOnly".encode(),
    ) in sent[0]["headers"]


async def test_a_cookie_response_cannot_be_stored_by_a_shared_cache() -> None:
    sent = await respond_with(
        [(b"cache-control", b"public, max-age=600, s-maxage=3600")],
        method="GET",
        query=f"ta_tid={TID}",
    )
    assert (b"cache-control", b"private, max-age=600") in cookie_headers(sent)
    sent = await respond_with([], method="GET", query=f"ta_tid={TID}")
    assert (b"cache-control", b"private") in cookie_headers(sent)
    sent = await respond_with(
        [(b"Cache-Control", b"no-store")], method="GET", query=f"ta_tid={TID}"
    )
    assert (b"cache-control", b"private, no-store") in cookie_headers(sent)


async def test_no_cookie_when_the_url_id_equals_the_cookie() -> None:
    sent = await respond_with(
        [(b"cache-control", b"public")],
        method="GET",
        query=f"ta_tid={TID}",
        headers=[(b"cookie", f"ta_tid={TID}".encode())],
    )
    assert cookie_headers(sent) == [(b"cache-control", b"public")]


async def test_a_post_does_not_replace_an_existing_cookie_but_sets_a_missing_one() -> None:
    sent = await respond_with(
        [], method="POST", query=f"ta_tid={OTHER}", headers=[(b"cookie", f"ta_tid={TID}".encode())]
    )
    assert cookie_headers(sent) == []
    sent = await respond_with([], method="POST", query=f"ta_tid={OTHER}")
    assert any(k == b"set-cookie" for k, _ in cookie_headers(sent))


async def test_a_hostile_url_id_sets_no_cookie() -> None:
    sent = await respond_with([], method="GET", query="ta_tid=%0D%0ASet-Cookie:%20x%3D1")
    assert cookie_headers(sent) == []


async def test_the_consent_hook_can_veto_the_cookie() -> None:
    asked: list[str] = []

    def consent(scope: Any) -> bool:
        asked.append(scope["path"])
        return False

    sent = await respond_with([], method="GET", query=f"ta_tid={TID}", options={"consent": consent})
    assert asked == ["/"]
    assert cookie_headers(sent) == []


async def test_a_failing_consent_hook_means_no_cookie_and_the_request_succeeds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def consent(scope: Any) -> bool:
        raise RuntimeError("consent service down")

    sent = await respond_with([], method="GET", query=f"ta_tid={TID}", options={"consent": consent})
    assert sent[0]["status"] == 200
    assert cookie_headers(sent) == []
    assert "consent hook failed" in caplog.text


async def test_the_cookie_can_be_turned_off() -> None:
    sent = await respond_with(
        [], method="GET", query=f"ta_tid={TID}", options={"set_cookie": False}
    )
    assert cookie_headers(sent) == []


def test_bad_middleware_options_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="body_limit must be an int >= 0"):
        TaapitMiddleware(Recorder(), body_limit=-1)
    with pytest.raises(ConfigurationError, match="client must be an AsyncTaapit"):
        TaapitMiddleware(Recorder(), client="key")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="samesite must be"):
        CookieOptions(samesite="loose")  # type: ignore[arg-type]


def test_samesite_none_cookies_are_always_secure() -> None:
    header = CookieOptions(samesite="none").header(TID, https=False)
    assert header.endswith(b"SameSite=None; Secure")


# --- the tracker ----------------------------------------------------------------------


async def test_a_lead_without_an_id_sends_nothing_and_says_why() -> None:
    tracker = RequestTracker(None, None, AsyncTaapit("taapit_sk_x"))
    result = await tracker.lead(customer={"external_id": "u1"})
    assert not result.success
    assert result.error is not None
    assert result.error.code == ErrorCode.MISSING_TRACKING_ID
    assert result.attempts == 0


async def test_a_lead_without_an_id_still_validates_its_arguments() -> None:
    tracker = RequestTracker(None, None, AsyncTaapit("taapit_sk_x"))
    with pytest.raises(ValidationError, match="external_id"):
        await tracker.lead(customer={"external_id": " "})
    with pytest.raises(ValidationError, match="metadata"):
        await tracker.lead(customer={"external_id": "u"}, metadata={"x": float("nan")})


async def test_a_tracker_without_a_client_says_how_to_set_one_up() -> None:
    tracker = RequestTracker(TID, "cookie", None)
    with pytest.raises(ConfigurationError, match="taapit_lifespan"):
        await tracker.lead(customer={"external_id": "u1"})
    assert repr(tracker) == f"RequestTracker(tracking_id='{TID}', source='cookie')"


async def test_the_tracker_queues_in_the_background_too() -> None:
    fake = FakeTaapit()
    client = AsyncTaapit(
        fake.api_key,
        base_url="http://taapit.localhost",
        http_client=httpx.AsyncClient(transport=fake.transport()),
    )
    async with client:
        tracker = RequestTracker(TID, "cookie", client)
        lead = await tracker.background.lead(customer={"external_id": "u1"})
        sale = await tracker.background.sale(
            customer={"external_id": "u1"}, amount=10, currency="eur", idempotency_key="o1"
        )
        assert (await lead.result()).success
        assert (await sale.result()).success
    assert [(e.kind, e.tracking_id) for e in fake.events] == [("lead", TID), ("sale", TID)]


async def test_a_background_lead_without_an_id_is_a_done_failure() -> None:
    tracker = RequestTracker(None, None, AsyncTaapit("taapit_sk_x"))
    delivery = await tracker.background.lead(customer={"external_id": "u1"})
    assert delivery.done()
    result = await delivery.result()
    assert result.error is not None
    assert result.error.code == ErrorCode.MISSING_TRACKING_ID
