"""The client against a respx-mocked Taapit: requests, retries, results, never raising."""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import logging
import re
import sys
import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest
import respx

from taapit_async import (
    DEFAULT_MAX_RETRIES,
    APIConnectionError,
    APITimeoutError,
    AsyncTaapit,
    AuthenticationError,
    ClientClosedError,
    ClientStateError,
    ConfigurationError,
    Customer,
    DisabledError,
    ErrorCode,
    InternalError,
    InvalidRequestError,
    InvalidResponseError,
    RateLimitError,
    RejectedError,
    ServerError,
    TaapitError,
    ValidationError,
    __version__,
    _client,
)
from taapit_async._transport import HttpxTransport

from ._support import API_KEY, BASE_URL, LEAD_URL, SALE_URL, make_client

TID = "rLnWe1uz9t282v7g"
CUSTOMER = Customer(external_id="user_123", email="john@example.com")


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the waits between retries instead of sleeping them."""
    recorded: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        recorded.append(seconds)

    monkeypatch.setattr(_client, "_sleep", fake_sleep)
    return recorded


async def send_lead(taapit: AsyncTaapit, **overrides: Any) -> Any:
    args: dict[str, Any] = {"tracking_id": TID, "customer": CUSTOMER}
    args.update(overrides)
    return await taapit.track.lead(**args)


# --- what goes out --------------------------------------------------------------------


async def test_lead_posts_json_with_bearer_key_and_sdk_user_agent(
    api: respx.MockRouter, taapit: AsyncTaapit
) -> None:
    route = api.post("/api/events/lead").respond(200, json={"success": True})
    await send_lead(taapit, metadata={"source": "signup-api"})
    request = route.calls.last.request
    assert str(request.url) == LEAD_URL
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.headers["content-type"] == "application/json"
    assert re.fullmatch(
        rf"taapit-async/{re.escape(__version__)} CPython/3\.\d+\.\d+\S* httpx/\S+",
        request.headers["user-agent"],
    )
    uuid.UUID(request.headers["idempotency-key"])
    assert request.content == (
        b'{"trackingId":"rLnWe1uz9t282v7g","customer":{"externalId":"user_123",'
        b'"email":"john@example.com"},"metadata":{"source":"signup-api"}}'
    )


async def test_sale_posts_to_the_sale_endpoint(api: respx.MockRouter, taapit: AsyncTaapit) -> None:
    route = api.post("/api/events/sale").respond(200)
    result = await taapit.track.sale(
        customer={"external_id": "user_123"}, amount=Decimal("99.99"), currency="EUR"
    )
    assert result.success
    assert str(route.calls.last.request.url) == SALE_URL
    assert route.calls.last.request.content == (
        b'{"customer":{"externalId":"user_123"},"amount":99.99,"currency":"eur"}'
    )


async def test_base_url_with_a_path_prefix_is_kept() -> None:
    with respx.mock(base_url="https://proxy.example.com/taapit") as router:
        route = router.post("/api/events/lead").respond(200)
        async with make_client(base_url="https://proxy.example.com/taapit/") as taapit:
            assert (await send_lead(taapit)).success
    assert route.called


# --- what comes back ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "event_id"),
    [
        (httpx.Response(200, json={"success": True, "eventId": "evt_1"}), "evt_1"),
        (httpx.Response(201, json={"id": "evt_2"}), "evt_2"),
        (httpx.Response(202), None),
        (httpx.Response(204), None),
        (httpx.Response(200, text="OK"), None),
        (httpx.Response(200, json=["unexpected"]), None),
    ],
)
async def test_any_2xx_is_success_and_the_event_id_is_read_when_present(
    api: respx.MockRouter, taapit: AsyncTaapit, reply: httpx.Response, event_id: str | None
) -> None:
    api.post("/api/events/lead").mock(return_value=reply)
    result = await send_lead(taapit, idempotency_key="signup-42")
    assert result.success
    assert result.error is None
    assert result.event_id == event_id
    assert result.status_code == reply.status_code
    assert result.attempts == 1
    assert result.idempotency_key == "signup-42"


async def test_2xx_saying_success_false_is_rejected_with_the_servers_code(
    api: respx.MockRouter, taapit: AsyncTaapit
) -> None:
    route = api.post("/api/events/lead").respond(
        200,
        json={"success": False, "error": {"code": "link_disabled", "message": "off"}},
        headers={"Retry-After": "30"},  # a pause is a refusal's to ask for, not a 2xx's
    )
    result = await send_lead(taapit)
    assert not result.success
    assert isinstance(result.error, RejectedError)
    assert result.error.code == "link_disabled"
    assert result.error.message == "off"
    assert result.error.retry_after is None
    assert route.call_count == 1


async def test_2xx_saying_success_false_without_a_code_is_rejected(
    api: respx.MockRouter, taapit: AsyncTaapit
) -> None:
    api.post("/api/events/lead").respond(200, json={"success": False})
    result = await send_lead(taapit)
    assert result.error is not None
    assert result.error.code == ErrorCode.REJECTED


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_a_redirect_is_an_invalid_response_and_is_not_followed(
    api: respx.MockRouter, taapit: AsyncTaapit, status: int
) -> None:
    route = api.post("/api/events/lead").respond(
        status, headers={"Location": "https://evil.example.com/"}
    )
    result = await send_lead(taapit)
    assert isinstance(result.error, InvalidResponseError)
    assert result.error.code == "invalid_response"
    assert "check base_url" in result.error.message
    assert route.call_count == 1


# --- the retry matrix -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_type", "code"),
    [
        (408, None, ErrorCode.TIMEOUT),
        (429, RateLimitError, ErrorCode.RATE_LIMITED),
        (500, ServerError, ErrorCode.SERVER_ERROR),
        (502, ServerError, ErrorCode.SERVER_ERROR),
        (503, ServerError, ErrorCode.SERVER_ERROR),
        (504, ServerError, ErrorCode.SERVER_ERROR),
    ],
)
async def test_retryable_statuses_are_retried_up_to_max_retries(
    api: respx.MockRouter,
    taapit: AsyncTaapit,
    waits: list[float],
    status: int,
    error_type: type[Exception] | None,
    code: str,
) -> None:
    route = api.post("/api/events/lead").respond(status)
    result = await send_lead(taapit)
    assert route.call_count == 1 + DEFAULT_MAX_RETRIES
    assert result.attempts == 1 + DEFAULT_MAX_RETRIES
    assert len(waits) == DEFAULT_MAX_RETRIES
    assert result.error is not None
    assert result.error.code == code
    assert result.error.retryable
    assert result.status_code == status
    if error_type is not None:
        assert isinstance(result.error, error_type)


@pytest.mark.parametrize(
    ("status", "error_type", "code"),
    [
        (400, InvalidRequestError, ErrorCode.INVALID_REQUEST),
        (401, AuthenticationError, ErrorCode.UNAUTHORIZED),
        (403, AuthenticationError, ErrorCode.UNAUTHORIZED),
        (404, InvalidRequestError, ErrorCode.INVALID_REQUEST),
        (409, InvalidRequestError, ErrorCode.INVALID_REQUEST),
        (413, InvalidRequestError, ErrorCode.INVALID_REQUEST),
        (422, InvalidRequestError, ErrorCode.INVALID_REQUEST),
    ],
)
async def test_client_errors_are_not_retried(
    api: respx.MockRouter,
    taapit: AsyncTaapit,
    waits: list[float],
    status: int,
    error_type: type[TaapitError],
    code: str,
) -> None:
    route = api.post("/api/events/lead").respond(
        status, json={"success": False, "error": {"code": "bad", "message": "nope"}}
    )
    result = await send_lead(taapit)
    assert route.call_count == 1
    assert waits == []
    assert isinstance(result.error, error_type)
    assert result.error.code == code
    assert not result.error.retryable
    assert "bad: nope" in result.error.message


@pytest.mark.parametrize(
    ("exception", "error_type", "code"),
    [
        (httpx.ConnectError("refused"), APIConnectionError, ErrorCode.NETWORK_ERROR),
        (httpx.ReadError("reset"), APIConnectionError, ErrorCode.NETWORK_ERROR),
        (
            httpx.RemoteProtocolError("Server disconnected without sending a response."),
            APIConnectionError,
            ErrorCode.NETWORK_ERROR,
        ),
        (httpx.ConnectTimeout("slow"), APITimeoutError, ErrorCode.TIMEOUT),
        (httpx.ReadTimeout("slow"), APITimeoutError, ErrorCode.TIMEOUT),
        (httpx.PoolTimeout("busy"), APITimeoutError, ErrorCode.TIMEOUT),
    ],
)
async def test_connection_errors_and_timeouts_are_retried(
    api: respx.MockRouter,
    taapit: AsyncTaapit,
    waits: list[float],
    exception: Exception,
    error_type: type[TaapitError],
    code: str,
) -> None:
    route = api.post("/api/events/lead").mock(side_effect=exception)
    result = await send_lead(taapit)
    assert route.call_count == 3
    assert isinstance(result.error, error_type)
    assert result.error.code == code
    assert result.status_code is None
    assert isinstance(result.error.__cause__, type(exception))


async def test_a_retry_that_succeeds_returns_success_with_the_attempt_count(
    api: respx.MockRouter, taapit: AsyncTaapit, waits: list[float]
) -> None:
    api.post("/api/events/sale").mock(
        side_effect=[httpx.ConnectError("refused"), httpx.Response(503), httpx.Response(200)]
    )
    result = await taapit.track.sale(customer={"external_id": "u"}, amount=10, currency="usd")
    assert result.success
    assert result.attempts == 3
    assert result.status_code == 200


async def test_every_retry_reuses_the_idempotency_key(
    api: respx.MockRouter, taapit: AsyncTaapit, waits: list[float]
) -> None:
    route = api.post("/api/events/lead").respond(503)
    result = await send_lead(taapit)
    keys = {call.request.headers["idempotency-key"] for call in route.calls}
    assert keys == {result.idempotency_key}


async def test_a_supplied_idempotency_key_is_sent_on_every_attempt(
    api: respx.MockRouter, taapit: AsyncTaapit, waits: list[float]
) -> None:
    route = api.post("/api/events/sale").mock(
        side_effect=[httpx.Response(500), httpx.Response(200)]
    )
    result = await taapit.track.sale(
        customer={"external_id": "u"},
        amount=Decimal("49.00"),
        currency="eur",
        idempotency_key="evt_1NqJ2Stripe",
    )
    assert [c.request.headers["idempotency-key"] for c in route.calls] == ["evt_1NqJ2Stripe"] * 2
    assert result.idempotency_key == "evt_1NqJ2Stripe"


async def test_each_event_gets_its_own_random_idempotency_key(
    api: respx.MockRouter, taapit: AsyncTaapit
) -> None:
    route = api.post("/api/events/lead").respond(200)
    for _ in range(5):
        await send_lead(taapit)
    assert len({c.request.headers["idempotency-key"] for c in route.calls}) == 5


async def test_backoff_waits_stay_within_the_full_jitter_bounds(
    api: respx.MockRouter, waits: list[float]
) -> None:
    api.post("/api/events/lead").respond(503)
    async with make_client(max_retries=4, backoff_base=0.5, backoff_max=1.5) as taapit:
        await send_lead(taapit)
    assert len(waits) == 4
    for retry, wait in enumerate(waits, start=1):
        assert 0 <= wait <= min(1.5, 0.5 * 2 ** (retry - 1))


async def test_retry_after_seconds_sets_the_wait(
    api: respx.MockRouter, taapit: AsyncTaapit, waits: list[float]
) -> None:
    api.post("/api/events/lead").mock(
        side_effect=[httpx.Response(429, headers={"Retry-After": "2"}), httpx.Response(200)]
    )
    result = await send_lead(taapit)
    assert result.success
    assert waits == [2.0]


async def test_retry_after_http_date_sets_the_wait(
    api: respx.MockRouter, taapit: AsyncTaapit, waits: list[float]
) -> None:
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3)
    header = email.utils.format_datetime(when, usegmt=True)
    api.post("/api/events/lead").mock(
        side_effect=[httpx.Response(503, headers={"Retry-After": header}), httpx.Response(200)]
    )
    assert (await send_lead(taapit)).success
    assert len(waits) == 1
    assert 1.0 <= waits[0] <= 3.0


async def test_retry_after_beyond_the_cap_ends_the_retries(
    api: respx.MockRouter, waits: list[float]
) -> None:
    route = api.post("/api/events/lead").respond(429, headers={"Retry-After": "120"})
    async with make_client(retry_after_max=60) as taapit:
        result = await send_lead(taapit)
    assert route.call_count == 1
    assert waits == []
    assert isinstance(result.error, RateLimitError)


async def test_a_wait_that_would_pass_the_deadline_ends_the_retries(
    api: respx.MockRouter, waits: list[float]
) -> None:
    route = api.post("/api/events/lead").respond(503, headers={"Retry-After": "5"})
    async with make_client(deadline=2.0) as taapit:
        result = await send_lead(taapit)
    assert route.call_count == 1
    assert waits == []
    assert result.error is not None
    assert result.error.code == ErrorCode.SERVER_ERROR


async def test_unusable_retry_after_falls_back_to_backoff(
    api: respx.MockRouter, taapit: AsyncTaapit, waits: list[float]
) -> None:
    api.post("/api/events/lead").mock(
        side_effect=[httpx.Response(503, headers={"Retry-After": "soon"}), httpx.Response(200)]
    )
    assert (await send_lead(taapit)).success
    assert len(waits) == 1
    assert waits[0] <= 0.002


async def test_max_retries_zero_means_a_single_attempt(
    api: respx.MockRouter, waits: list[float]
) -> None:
    route = api.post("/api/events/lead").respond(503)
    async with make_client(max_retries=0) as taapit:
        result = await send_lead(taapit)
    assert route.call_count == 1
    assert result.attempts == 1


async def test_the_deadline_bounds_the_whole_call(api: respx.MockRouter) -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return httpx.Response(200)  # pragma: no cover

    api.post("/api/events/lead").mock(side_effect=hang)
    loop = asyncio.get_running_loop()
    async with make_client(deadline=0.2) as taapit:
        started = loop.time()
        result = await send_lead(taapit)
        elapsed = loop.time() - started
    assert elapsed < 2
    assert isinstance(result.error, APITimeoutError)
    assert "deadline of 0.2s" in result.error.message
    assert result.attempts == 1


async def test_cancelling_the_caller_is_not_swallowed(api: respx.MockRouter) -> None:
    started = asyncio.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        started.set()
        await asyncio.sleep(30)
        return httpx.Response(200)  # pragma: no cover

    api.post("/api/events/lead").mock(side_effect=hang)
    async with make_client() as taapit:
        task = asyncio.create_task(send_lead(taapit))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# --- never raise ----------------------------------------------------------------------


class ExplodingTransport(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise RuntimeError("bug in a custom transport")


async def test_an_unexpected_exception_becomes_an_internal_error_result(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with httpx.AsyncClient(transport=ExplodingTransport()) as http:
        taapit = AsyncTaapit(API_KEY, http_client=http)
        result = await send_lead(taapit)
    assert isinstance(result.error, InternalError)
    assert result.error.code == ErrorCode.INTERNAL_ERROR
    assert "unexpected error while sending" in caplog.text
    # The traceback is in the text, for a bug report; the frames, which hold the headers
    # and the body, are not handed to log handlers (error trackers record their locals).
    assert "RuntimeError: bug in a custom transport" in caplog.text
    assert all(record.exc_info is None for record in caplog.records)


async def test_failures_are_logged_as_warnings_with_code_and_attempts(
    api: respx.MockRouter, taapit: AsyncTaapit, caplog: pytest.LogCaptureFixture
) -> None:
    api.post("/api/events/lead").respond(401)
    with caplog.at_level(logging.WARNING, logger="taapit_async"):
        result = await send_lead(taapit)
    (record,) = [r for r in caplog.records if r.name == "taapit_async"]
    assert record.levelno == logging.WARNING
    assert "taapit lead not tracked after 1 attempt(s): unauthorized (HTTP 401)" in (
        record.getMessage()
    )
    assert str(result.idempotency_key) in record.getMessage()


async def test_server_text_in_errors_is_scrubbed_of_emails_and_shortened(
    api: respx.MockRouter, taapit: AsyncTaapit
) -> None:
    api.post("/api/events/lead").respond(
        400,
        json={"error": {"code": "invalid_email", "message": "john@example.com " + "x" * 500}},
    )
    result = await send_lead(taapit)
    assert result.error is not None
    assert "john@example.com" not in str(result.error)
    assert "<email>" in result.error.message
    assert len(result.error.message) < 300


# --- secrets --------------------------------------------------------------------------


async def test_the_key_never_appears_in_reprs_results_errors_or_debug_logs(
    api: respx.MockRouter, caplog: pytest.LogCaptureFixture, waits: list[float]
) -> None:
    api.post("/api/events/lead").mock(
        side_effect=[httpx.ConnectError("refused"), httpx.Response(401)]
    )
    api.post("/api/events/sale").respond(200, json={"eventId": "e1"})
    with caplog.at_level(logging.DEBUG):
        taapit = make_client()
        failed = await send_lead(taapit)
        ok = await taapit.track.sale(customer=CUSTOMER, amount=1, currency="eur")
        await taapit.aclose()
    texts = [repr(taapit), str(taapit), repr(failed), repr(ok), str(failed.error)]
    texts += [repr(failed.error), caplog.text]
    texts += [str(r.args) for r in caplog.records]
    for text in texts:
        assert API_KEY not in text
        assert API_KEY[10:] not in text
        assert "john@example.com" not in text


def test_configuration_errors_never_repeat_the_key() -> None:
    with pytest.raises(ConfigurationError) as info:
        AsyncTaapit("taapit_sk_secret with space")
    assert "secret" not in str(info.value)


# --- configuration --------------------------------------------------------------------


def test_missing_api_key_says_how_to_provide_one() -> None:
    with pytest.raises(ConfigurationError, match="no API key: pass api_key= or set TAAPIT_API_KEY"):
        AsyncTaapit()


def test_empty_api_key_is_no_key_even_when_the_environment_has_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TAAPIT_API_KEY", API_KEY)
    with pytest.raises(ConfigurationError, match="no API key"):
        AsyncTaapit("")


async def test_the_key_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, api: respx.MockRouter
) -> None:
    monkeypatch.setenv("TAAPIT_API_KEY", "taapit_sk_from_env")
    route = api.post("/api/events/lead").respond(200)
    async with AsyncTaapit() as taapit:
        await send_lead(taapit)
    assert route.calls.last.request.headers["authorization"] == "Bearer taapit_sk_from_env"


async def test_an_explicit_key_beats_the_environment(
    monkeypatch: pytest.MonkeyPatch, api: respx.MockRouter
) -> None:
    monkeypatch.setenv("TAAPIT_API_KEY", "taapit_sk_from_env")
    route = api.post("/api/events/lead").respond(200)
    async with AsyncTaapit("taapit_sk_explicit") as taapit:
        await send_lead(taapit)
    assert route.calls.last.request.headers["authorization"] == "Bearer taapit_sk_explicit"


def test_base_url_comes_from_the_environment_and_loses_its_trailing_slash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TAAPIT_BASE_URL", "http://127.0.0.1:8787/")
    assert AsyncTaapit(API_KEY).base_url == "http://127.0.0.1:8787"
    assert AsyncTaapit(API_KEY, base_url="https://eu.example.com").base_url == (
        "https://eu.example.com"
    )
    assert AsyncTaapit(API_KEY).base_url != BASE_URL


def test_default_base_url_is_taapits() -> None:
    assert AsyncTaapit(API_KEY).base_url == BASE_URL


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:8000",
        "http://LOCALHOST",
        "http://app.localhost",
        "http://127.0.0.1",
        "http://127.8.9.10:1234",
        "http://[::1]:8787",
    ],
)
def test_plain_http_is_allowed_to_loopback_hosts(url: str) -> None:
    assert AsyncTaapit(API_KEY, base_url=url).base_url.startswith("http://")


@pytest.mark.parametrize(
    "url",
    [
        "http://track.taap.it",
        "http://10.0.0.1",
        "http://localhost.example.com",
        "http://128.0.0.1",
        "http://[::2]",
    ],
)
def test_plain_http_off_loopback_is_refused(url: str) -> None:
    with pytest.raises(ConfigurationError, match="unencrypted: use https://"):
        AsyncTaapit(API_KEY, base_url=url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "must be a non-empty URL"),
        ("ftp://track.taap.it", "must be an http"),
        ("track.taap.it", "must be an http"),
        ("https://track.taap.it/?x=1", "must not carry a query string"),
        ("https://track.taap.it/#top", "must not carry a query string"),
        ("https://[bad", "is not a valid URL"),
        ("https://exa mple.com", "is not a valid URL"),
        ("https://host:99999", "is not a valid URL"),
        ("https://a\x00b.com", "is not a valid URL"),
        ("http://", "must be an http"),
    ],
)
def test_malformed_base_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        AsyncTaapit(API_KEY, base_url=url)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"timeout": 0}, "timeout must be a number of seconds > 0"),
        ({"timeout": float("inf")}, "timeout must be"),
        ({"timeout": "5"}, "timeout must be"),
        ({"timeout": True}, "timeout must be"),
        ({"max_retries": -1}, "max_retries must be an int >= 0"),
        ({"max_retries": 1.5}, "max_retries must be an int >= 0"),
        ({"deadline": 0}, "deadline must be a finite number of seconds > 0"),
        ({"deadline": float("nan")}, "deadline must be"),
        ({"backoff_base": -1}, "backoff_base must be a finite number of seconds >= 0"),
        ({"backoff_max": float("inf")}, "backoff_max must be"),
        ({"retry_after_max": "60"}, "retry_after_max must be"),
        ({"max_in_flight": 0}, "max_in_flight must be an int >= 1"),
        ({"enabled": "yes"}, "enabled must be True, False or None"),
        ({"http_client": object()}, "http_client must be an httpx.AsyncClient"),
        ({"transport": "requests"}, "transport must be 'httpx' \\(the default\\) or 'aiohttp'"),
        ({"transport": "aiohttp", "http2": True}, "speaks HTTP/1.1 only: drop http2=True"),
        (
            {"http2": True, "http_client": httpx.AsyncClient()},
            r"drop http2=True and build yours with httpx.AsyncClient\(http2=True\)",
        ),
        (
            {"transport": "aiohttp", "http_client": httpx.AsyncClient()},
            "http_client is an httpx client, so it needs transport='httpx'",
        ),
    ],
)
def test_bad_options_are_configuration_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        AsyncTaapit(API_KEY, **options)


def test_the_aiohttp_transport_without_aiohttp_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "aiohttp", None)  # import aiohttp now raises
    with pytest.raises(ConfigurationError, match=r"pip install 'taapit-async\[aiohttp\]'"):
        AsyncTaapit(API_KEY, transport="aiohttp")


def test_http2_without_h2_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "h2", None)  # import h2 now raises
    with pytest.raises(ConfigurationError, match=r"pip install 'taapit-async\[http2\]'"):
        AsyncTaapit(API_KEY, http2=True)


def test_api_key_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="api_key must be a str"):
        AsyncTaapit(b"taapit_sk_bytes")  # type: ignore[arg-type]


# --- disabled mode --------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "false", "no", "off", "OFF", " False "])
async def test_taapit_enabled_off_disables_tracking_without_a_key(
    monkeypatch: pytest.MonkeyPatch, api: respx.MockRouter, value: str
) -> None:
    monkeypatch.setenv("TAAPIT_ENABLED", value)
    route = api.post("/api/events/lead").respond(200)
    async with AsyncTaapit() as taapit:
        assert not taapit.enabled
        result = await send_lead(taapit)
    assert not route.called
    assert isinstance(result.error, DisabledError)
    assert result.error.code == "disabled"
    assert result.attempts == 0
    assert result.idempotency_key is not None


@pytest.mark.parametrize("value", ["1", "true", "yes", "on", ""])
def test_taapit_enabled_on_still_needs_a_key(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("TAAPIT_ENABLED", value)
    with pytest.raises(ConfigurationError, match="no API key"):
        AsyncTaapit()


def test_unreadable_taapit_enabled_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TAAPIT_ENABLED", "maybe")
    with pytest.raises(ConfigurationError, match="TAAPIT_ENABLED='maybe' is not understood"):
        AsyncTaapit(API_KEY)


async def test_disabled_client_still_validates_its_arguments() -> None:
    async with AsyncTaapit(enabled=False) as taapit:
        with pytest.raises(ValidationError, match="currency"):
            await taapit.track.sale(customer={"external_id": "u"}, amount=1, currency="zzz")
        result = await taapit.track.sale(customer={"external_id": "u"}, amount=1, currency="eur")
    assert result.error is not None
    assert result.error.code == ErrorCode.DISABLED
    assert "disabled" in repr(taapit) or "enabled=False" in repr(taapit)


async def test_explicit_enabled_beats_the_environment(
    monkeypatch: pytest.MonkeyPatch, api: respx.MockRouter
) -> None:
    monkeypatch.setenv("TAAPIT_ENABLED", "0")
    route = api.post("/api/events/lead").respond(200)
    async with AsyncTaapit(API_KEY, enabled=True) as taapit:
        assert (await send_lead(taapit)).success
    assert route.called


# --- lifecycle ------------------------------------------------------------------------


async def test_a_call_after_close_raises_client_closed() -> None:
    taapit = make_client()
    await taapit.aclose()
    assert taapit.closed
    with pytest.raises(ClientClosedError, match="this AsyncTaapit client is closed") as info:
        await send_lead(taapit)
    assert isinstance(info.value, RuntimeError)


async def test_aclose_is_idempotent_and_reentering_a_closed_client_raises() -> None:
    taapit = make_client()
    await taapit.aclose()
    await taapit.aclose()
    with pytest.raises(ClientClosedError):
        async with taapit:
            pass  # pragma: no cover


async def test_a_users_own_http_client_is_used_and_never_closed(api: respx.MockRouter) -> None:
    route = api.post("/api/events/lead").respond(200)
    async with httpx.AsyncClient(headers={"X-Trace": "1"}) as http:
        async with AsyncTaapit(API_KEY, http_client=http) as taapit:
            assert (await send_lead(taapit)).success
        assert not http.is_closed
    assert route.calls.last.request.headers["x-trace"] == "1"
    assert route.calls.last.request.headers["authorization"] == f"Bearer {API_KEY}"


async def test_the_clients_own_pool_is_closed_by_aclose() -> None:
    taapit = make_client()
    transport = taapit._transport
    assert isinstance(transport, HttpxTransport)
    await taapit.aclose()
    assert transport.client.is_closed


def test_use_from_a_second_event_loop_is_a_clear_error() -> None:
    with respx.mock(base_url=BASE_URL) as router:
        router.post("/api/events/lead").respond(200)
        taapit = make_client()
        assert asyncio.run(send_lead(taapit)).success
        with pytest.raises(ClientStateError, match="first used on another event loop"):
            asyncio.run(send_lead(taapit))


async def test_in_flight_requests_never_exceed_max_in_flight(api: respx.MockRouter) -> None:
    in_flight = 0
    peak = 0

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return httpx.Response(200)

    api.post("/api/events/lead").mock(side_effect=slow)
    async with make_client(max_in_flight=3) as taapit:
        results = await asyncio.gather(*(send_lead(taapit) for _ in range(20)))
    assert all(r.success for r in results)
    assert peak == 3
