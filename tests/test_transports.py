"""One suite, every transport: the client over real TCP on 127.0.0.1.

Each test runs once per transport (`TRANSPORTS`: a user's own ``http_client`` and
``http2=True``, on httpx's own pool, included;
`SDK_OWNED` where closing is the point): retries, timeouts, errors, idempotency keys and
redaction must not depend on what carries the bytes. Most talk to the fake Taapit
API under a real uvicorn; what the fake cannot say (a redirect, a corrupt gzip body) comes
from `ScriptedServer`, a few lines of asyncio that answer canned bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import ssl
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, NoReturn

import aiohttp.resolver
import httpx
import pytest
import trustme

from taapit_async import (
    APIConnectionError,
    AsyncTaapit,
    ConfigurationError,
    Customer,
    ErrorCode,
    _aiohttp,
    _client,
)
from taapit_async._transport import HttpxTransport, ShardedPool, ssl_context
from taapit_async.testing import FakeTaapit, FakeTaapitServer

from ._support import error_chain, frame_locals

pytestmark = pytest.mark.server

SECRET = "taapit_sk_live_do_not_log_me_8f3a2c"
#: A user's own httpx client (``http_client=``) rides on the httpx transport, but with
#: per-request headers and the user's pool, so it runs the whole suite too.
OWN_CLIENT = "own-httpx-client"
#: ``http2=True``: httpx's own pool instead of the SDK's shards (plain http:// URLs, as
#: here, still speak HTTP/1.1: HTTP/2 is negotiated over TLS; see the TLS tests below).
HTTP2 = "httpx-http2"
TRANSPORTS = ["httpx", "aiohttp", OWN_CLIENT, HTTP2]
#: The transports whose connections the SDK owns (and closes): a user's client stays open.
SDK_OWNED = ["httpx", "aiohttp", HTTP2]
#: Loggers each transport's library writes DEBUG records to.
LIBRARY_LOGGERS = {
    "httpx": {"httpx", "httpcore"},
    "aiohttp": set[str](),
    OWN_CLIENT: {"httpx", "httpcore"},
    HTTP2: {"httpx", "httpcore"},
}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeTaapitServer]:
    with FakeTaapitServer(FakeTaapit(api_key=SECRET)) as running:
        yield running


@pytest.fixture
def fake(server: FakeTaapitServer) -> FakeTaapit:
    server.fake.reset()
    server.fake.clear_faults()
    return server.fake


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def new_client(
    variant: str, own_clients: list[httpx.AsyncClient], api_key: str = SECRET, **options: Any
) -> AsyncTaapit:
    """A client on ``variant`` (a `TRANSPORTS` entry); a user's own client joins the list."""
    if variant == OWN_CLIENT:
        own = httpx.AsyncClient()  # reads SSL_CERT_FILE and proxies now, as users' do
        own_clients.append(own)
        return AsyncTaapit(api_key, http_client=own, **options)
    if variant == HTTP2:
        return AsyncTaapit(api_key, http2=True, **options)
    return AsyncTaapit(api_key, transport=variant, **options)  # type: ignore[arg-type]


@pytest.fixture
async def connect(
    server: FakeTaapitServer, transport: str
) -> AsyncIterator[Callable[..., AsyncTaapit]]:
    """Build clients on the parametrized transport (the fake's URL unless given)."""
    own_clients: list[httpx.AsyncClient] = []

    def build(api_key: str = SECRET, **options: Any) -> AsyncTaapit:
        options.setdefault("base_url", server.url)
        options.setdefault("backoff_base", 0.01)
        return new_client(transport, own_clients, api_key, **options)

    yield build
    for own in own_clients:  # the SDK never closes a user's client: the user does
        await own.aclose()


async def test_a_lead_and_a_sale_reach_the_fake_over_tcp(
    connect: Callable[..., AsyncTaapit], fake: FakeTaapit
) -> None:
    async with connect() as taapit:
        lead = await taapit.track.lead(
            tracking_id="rLnWe1uz9t282v7g",
            customer=Customer(external_id="user_123", email="john@example.com"),
        )
        sale = await taapit.track.sale(
            customer={"external_id": "user_123"}, amount=Decimal("99.99"), currency="EUR"
        )
    assert lead.success
    assert sale.success
    assert lead.event_id == fake.leads[0].event_id
    assert [(e.kind, e.amount, e.currency) for e in fake.events] == [
        ("lead", None, None),
        ("sale", Decimal("99.99"), "eur"),
    ]


async def test_a_server_error_is_retried_with_the_same_idempotency_key(
    connect: Callable[..., AsyncTaapit], fake: FakeTaapit
) -> None:
    fake.fail_next(2, status=503)
    async with connect() as taapit:
        result = await taapit.track.lead(
            tracking_id="t1", customer={"external_id": "u"}, idempotency_key="signup_u"
        )
    assert result.success
    assert result.attempts == 3
    assert fake.attempts("signup_u") == 3
    assert [r.idempotency_key for r in fake.requests] == ["signup_u"] * 3
    assert len(fake.leads) == 1


async def test_a_reply_lost_after_recording_is_retried_and_counted_once(
    connect: Callable[..., AsyncTaapit], fake: FakeTaapit
) -> None:
    fake.drop_next(1, after_record=True)
    async with connect() as taapit:
        result = await taapit.track.sale(
            tracking_id="t1",
            customer={"external_id": "u"},
            amount=5,
            currency="usd",
            idempotency_key="order_1",
        )
    assert result.success
    assert result.attempts == 2
    assert len(fake.sales) == 1
    assert fake.attempts("order_1") == 2


async def test_a_dropped_connection_is_a_network_error_after_the_retries(
    connect: Callable[..., AsyncTaapit], fake: FakeTaapit
) -> None:
    fake.drop_next(3)
    async with connect() as taapit:
        result = await taapit.track.lead(tracking_id="t1", customer={"external_id": "u"})
    assert result.error is not None
    assert result.error.code == ErrorCode.NETWORK_ERROR
    assert result.attempts == 3
    assert fake.events == []


async def test_a_refused_connection_is_a_network_error_after_the_retries(
    connect: Callable[..., AsyncTaapit],
) -> None:
    async with ScriptedServer(b"") as scripted:
        url = scripted.url
    # The port is closed now: nothing listens there.
    async with connect(base_url=url, max_retries=1) as taapit:
        result = await taapit.track.lead(tracking_id="t1", customer={"external_id": "u"})
    assert result.error is not None
    assert result.error.code == ErrorCode.NETWORK_ERROR
    assert result.attempts == 2


async def test_a_slow_reply_times_out_and_the_retry_succeeds(
    connect: Callable[..., AsyncTaapit], fake: FakeTaapit
) -> None:
    fake.delay_next(1, seconds=2.0)
    async with connect(timeout=0.3) as taapit:
        result = await taapit.track.lead(
            tracking_id="t1", customer={"external_id": "u"}, idempotency_key="slow_1"
        )
    assert result.success
    assert result.attempts == 2
    assert fake.attempts("slow_1") == 2


async def test_replies_slower_than_the_timeout_end_as_a_timeout_error(
    connect: Callable[..., AsyncTaapit], fake: FakeTaapit
) -> None:
    fake.delay_next(2, seconds=2.0)
    async with connect(timeout=0.2, max_retries=1) as taapit:
        started = time.monotonic()
        result = await taapit.track.lead(tracking_id="t1", customer={"external_id": "u"})
        elapsed = time.monotonic() - started
    assert result.error is not None
    assert result.error.code == ErrorCode.TIMEOUT
    assert result.attempts == 2
    assert elapsed < 1.5  # two attempts of 0.2 s each, not the server's 2 s


async def test_a_callers_own_timeout_carries_no_frames_holding_the_key(
    connect: Callable[..., AsyncTaapit], fake: FakeTaapit
) -> None:
    fake.delay_next(1, seconds=2.0)
    async with connect() as taapit:
        with pytest.raises(TimeoutError) as caught:
            async with asyncio.timeout(0.2):
                await taapit.track.lead(tracking_id="t1", customer={"external_id": "u"})
    # The cancellation came up through the HTTP library, whose frames held the headers.
    assert not any(SECRET in local for local in frame_locals(caught.value))
    assert isinstance(caught.value.__cause__, asyncio.CancelledError)


async def test_a_name_lookup_that_hangs_ends_as_a_timeout_error(
    connect: Callable[..., AsyncTaapit], monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups: list[object] = []

    async def hung_dns(*args: object, **kwargs: object) -> NoReturn:
        host = args[1]  # (loop, host, port, ...): bytes from anyio, str from aiohttp
        lookups.append(host.decode() if isinstance(host, bytes) else host)
        await asyncio.sleep(60)
        raise AssertionError("unreachable")

    # Every transport resolves names through the loop (anyio, aiohttp's threaded resolver),
    # except aiohttp with aiodns installed (`aiohttp[speedups]`), which asks c-ares.
    monkeypatch.setattr(asyncio.BaseEventLoop, "getaddrinfo", hung_dns)
    monkeypatch.setattr(
        aiohttp.resolver.AsyncResolver, "resolve", lambda *args, **kwargs: hung_dns(*args)
    )
    async with connect(base_url="http://localhost:9", timeout=0.2, max_retries=0) as taapit:
        started = time.monotonic()
        result = await taapit.track.lead(tracking_id="t1", customer={"external_id": "u"})
        elapsed = time.monotonic() - started
    assert result.error is not None
    assert result.error.code == ErrorCode.TIMEOUT
    assert elapsed < 1.5  # the connect timeout bounds the lookup, not the call's deadline
    assert lookups == ["localhost"]


async def test_retry_after_sets_the_pause_before_the_next_attempt(
    connect: Callable[..., AsyncTaapit], fake: FakeTaapit
) -> None:
    fake.rate_limit_next(1, retry_after="1")
    async with connect(backoff_base=0.001, backoff_max=0.002) as taapit:
        result = await taapit.track.lead(
            tracking_id="t1", customer={"external_id": "u"}, idempotency_key="paced_1"
        )
    assert result.success
    assert result.attempts == 2
    # (Filtered by key: a slow request of an earlier test may still be finishing.)
    first, second = (r.received_at for r in fake.requests if r.idempotency_key == "paced_1")
    assert second - first >= 0.95


async def test_a_wrong_key_is_unauthorized_and_not_retried(
    connect: Callable[..., AsyncTaapit], fake: FakeTaapit
) -> None:
    async with connect("taapit_sk_wrong") as taapit:
        result = await taapit.track.lead(
            tracking_id="t1", customer={"external_id": "u"}, idempotency_key="wrong_key_1"
        )
    assert result.error is not None
    assert result.error.code == ErrorCode.UNAUTHORIZED
    assert result.attempts == 1
    assert fake.attempts("wrong_key_1") == 1


async def test_a_rejected_event_is_an_invalid_request_and_not_retried(
    connect: Callable[..., AsyncTaapit], fake: FakeTaapit
) -> None:
    async with connect() as taapit:
        # A sale of a customer Taapit never saw needs a tracking id: the API says 4xx.
        result = await taapit.track.sale(
            customer={"external_id": "nobody"},
            amount=1,
            currency="eur",
            idempotency_key="unknown_customer_1",
        )
    assert result.error is not None
    assert result.attempts == 1
    assert fake.attempts("unknown_customer_1") == 1
    assert fake.sales == []


@pytest.mark.parametrize("status", [301, 307, 308])
async def test_a_redirect_is_not_followed(connect: Callable[..., AsyncTaapit], status: int) -> None:
    reply = (
        f"HTTP/1.1 {status} Moved\r\nLocation: http://127.0.0.1:9/steal\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    async with ScriptedServer(reply) as scripted, connect(base_url=scripted.url) as taapit:
        result = await taapit.track.lead(tracking_id="t1", customer={"external_id": "u"})
    assert result.error is not None
    assert result.error.code == ErrorCode.INVALID_RESPONSE
    assert "check base_url" in result.error.message
    assert len(scripted.requests) == 1


async def test_a_corrupt_compressed_reply_is_an_invalid_response(
    connect: Callable[..., AsyncTaapit],
) -> None:
    reply = json_reply(b"this is not gzip at all", extra_headers=b"Content-Encoding: gzip\r\n")
    async with ScriptedServer(reply) as scripted, connect(base_url=scripted.url) as taapit:
        result = await taapit.track.lead(tracking_id="t1", customer={"external_id": "u"})
    assert result.error is not None
    assert result.error.code == ErrorCode.INVALID_RESPONSE
    assert len(scripted.requests) == 1


async def test_a_compressed_reply_is_read(connect: Callable[..., AsyncTaapit]) -> None:
    body = gzip.compress(b'{"success": true, "eventId": "evt_gz", "tracked": true}')
    reply = json_reply(body, extra_headers=b"Content-Encoding: gzip\r\n")
    async with ScriptedServer(reply) as scripted, connect(base_url=scripted.url) as taapit:
        result = await taapit.track.lead(tracking_id="t1", customer={"external_id": "u"})
    assert result.success
    assert result.event_id == "evt_gz"


async def test_sequential_calls_reuse_one_keep_alive_connection(
    connect: Callable[..., AsyncTaapit],
) -> None:
    async with ScriptedServer(OK_REPLY) as scripted:
        async with connect(base_url=scripted.url) as taapit:
            for i in range(10):
                result = await taapit.track.lead(
                    tracking_id="t1", customer={"external_id": f"u{i}"}
                )
                assert result.success
        assert len(scripted.requests) == 10
        assert scripted.connections == 1


async def test_concurrency_is_bounded_by_max_in_flight(connect: Callable[..., AsyncTaapit]) -> None:
    async with ScriptedServer(OK_REPLY, delay=0.05) as scripted:
        async with connect(base_url=scripted.url, max_in_flight=3) as taapit:
            results = await asyncio.gather(
                *(
                    taapit.track.lead(tracking_id="t1", customer={"external_id": f"u{i}"})
                    for i in range(12)
                )
            )
        assert all(r.success for r in results)
        assert scripted.most_at_once == 3
        assert scripted.connections == 3


@pytest.mark.parametrize("transport", SDK_OWNED)
async def test_closing_the_client_closes_its_connections(
    connect: Callable[..., AsyncTaapit],
) -> None:
    async with ScriptedServer(OK_REPLY) as scripted:
        taapit = connect(base_url=scripted.url)
        await asyncio.gather(
            *(
                taapit.track.lead(tracking_id="t1", customer={"external_id": f"u{i}"})
                for i in range(4)
            )
        )
        assert scripted.open_connections > 0
        await taapit.aclose()
        await scripted.wait_until_all_closed()


@pytest.mark.parametrize("transport", SDK_OWNED)
async def test_a_retry_after_closing_fails_instead_of_reconnecting(
    connect: Callable[..., AsyncTaapit],
) -> None:
    async with ScriptedServer(OK_REPLY, delay=0.3) as scripted:
        taapit = connect(base_url=scripted.url, backoff_base=0.001, backoff_max=0.002)
        call = asyncio.create_task(
            taapit.track.lead(tracking_id="t1", customer={"external_id": "u"})
        )
        await scripted.received.wait()
        await taapit.aclose()  # cuts the request in flight: its retry must not reopen
        result = await call
        await scripted.wait_until_all_closed()
    assert result.error is not None
    assert result.error.code == ErrorCode.SHUTDOWN
    assert result.attempts == 2
    assert scripted.connections == 1


async def test_closing_the_client_leaves_your_own_http_client_open() -> None:
    own_clients: list[httpx.AsyncClient] = []
    async with ScriptedServer(OK_REPLY) as scripted:
        taapit = new_client(OWN_CLIENT, own_clients, base_url=scripted.url)
        assert (await taapit.track.lead(tracking_id="t1", customer={"external_id": "u"})).success
        await taapit.aclose()
        (own,) = own_clients
        assert not own.is_closed
        assert scripted.open_connections == 1
        await own.aclose()
        await scripted.wait_until_all_closed()


async def test_your_own_http_client_closed_too_early_is_named() -> None:
    own = httpx.AsyncClient()
    await own.aclose()
    async with AsyncTaapit(SECRET, http_client=own, base_url="http://127.0.0.1:9") as taapit:
        result = await taapit.track.lead(tracking_id="t1", customer={"external_id": "u"})
    assert result.error is not None
    assert result.error.code == ErrorCode.SHUTDOWN
    assert "your http_client was closed" in result.error.message
    assert result.attempts == 1


async def test_background_events_are_delivered(
    connect: Callable[..., AsyncTaapit], fake: FakeTaapit
) -> None:
    fake.fail_next(2, status=500)
    async with connect() as taapit:
        deliveries = [
            await taapit.background.lead(tracking_id="t1", customer={"external_id": f"u{i}"})
            for i in range(40)
        ]
        assert await taapit.flush(timeout=10)
    results = [await d.result() for d in deliveries]
    assert all(r.success for r in results)
    assert len(fake.leads) == 40


async def test_outbox_events_are_delivered(
    connect: Callable[..., AsyncTaapit], fake: FakeTaapit, tmp_path: Path
) -> None:
    fake.fail_next(2, status=503)
    async with connect(outbox=tmp_path / "outbox.sqlite3") as taapit:
        deliveries = [
            await taapit.background.sale(
                customer={"external_id": f"u{i}"},
                tracking_id="t1",
                amount=10,
                currency="eur",
                idempotency_key=f"order_{i}",
            )
            for i in range(20)
        ]
        results = [await d.result() for d in deliveries]
    assert all(r.success for r in results)
    assert sorted(e.idempotency_key or "" for e in fake.sales) == sorted(
        f"order_{i}" for i in range(20)
    )


async def test_the_secret_and_emails_stay_out_of_debug_logs_and_errors(
    connect: Callable[..., AsyncTaapit],
    fake: FakeTaapit,
    transport: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake.fail_next(1, status=503)
    fake.rate_limit_next(1, retry_after="0")
    with caplog.at_level(logging.DEBUG):
        async with connect() as taapit:
            ok = await taapit.track.lead(
                tracking_id="t1",
                customer=Customer(external_id="u", email="jane.secret@example.com"),
            )
            bad = await taapit.track.sale(
                customer={"external_id": "unknown", "email": "jane.secret@example.com"},
                amount=1,
                currency="eur",
            )
        # The reply breaks off mid-body: a transport error chained to the SDK's error.
        cut_off = b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n{"
        async with (
            ScriptedServer(cut_off, hang_up=True) as cut,
            connect(base_url=cut.url, max_retries=0) as taapit,
        ):
            broken = await taapit.track.lead(
                tracking_id="t1",
                customer=Customer(external_id="u", email="jane.secret@example.com"),
            )
        # A reply no HTTP parser accepts: aiohttp's error for it lists the request headers.
        garbled = b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n"
        async with (
            ScriptedServer(garbled) as bad_reply,
            connect(base_url=bad_reply.url, max_retries=0) as taapit,
        ):
            unparsable = await taapit.track.lead(tracking_id="t1", customer={"external_id": "u"})
    assert ok.success
    assert bad.error is not None  # a sale of an unknown customer needs a tracking id
    assert broken.error is not None
    assert broken.error.code == ErrorCode.NETWORK_ERROR
    assert {r.name.split(".")[0] for r in caplog.records} >= {"taapit_async"} | LIBRARY_LOGGERS[
        transport
    ]
    everything = caplog.text + "".join(repr(r.args) for r in caplog.records)
    everything += repr(ok) + repr(bad) + str(bad.error) + repr(broken)
    assert unparsable.error is not None
    assert unparsable.error.code == ErrorCode.NETWORK_ERROR
    for error in (broken.error, unparsable.error):
        everything += "".join(traceback.format_exception(error))
        everything += "".join(f"{e!r} {e.args!r} {vars(e)!r}" for e in error_chain(error))
        # A request kept on an error (httpx's `.request`) hides its headers from repr().
        everything += "".join(
            repr(dict(value.headers))
            for e in error_chain(error)
            for value in vars(e).values()
            if hasattr(value, "headers")
        )
        # What an error tracker that records local variables (Sentry's default) would see.
        everything += "".join(frame_locals(error))
        assert all(e.__traceback__ is None for e in error_chain(error))
        assert error.__cause__ is not None  # the transport's own error is kept
    assert SECRET not in everything
    assert "jane.secret@example.com" not in everything


async def test_every_transport_sends_the_same_request() -> None:
    seen: dict[str, bytes] = {}
    own_clients: list[httpx.AsyncClient] = []
    for name in TRANSPORTS:
        async with ScriptedServer(OK_REPLY) as scripted:
            async with new_client(name, own_clients, base_url=scripted.url) as taapit:
                await taapit.track.lead(
                    tracking_id="t1", customer={"external_id": "u"}, idempotency_key="k1"
                )
            seen[name] = scripted.requests[0]
    for own in own_clients:
        await own.aclose()

    def parse(raw: bytes) -> tuple[str, dict[str, str], bytes]:
        head, _, body = raw.partition(b"\r\n\r\n")
        start, *lines = head.decode().split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines)
        return start, {k.lower(): v for k, v in headers.items()}, body

    requests = {name: parse(raw) for name, raw in seen.items()}
    first = requests[TRANSPORTS[0]]
    for name, (start, headers, body) in requests.items():
        assert start == "POST /api/events/lead HTTP/1.1", name
        assert body == first[2], name
        assert headers["authorization"] == f"Bearer {SECRET}", name
        assert headers["content-type"] == "application/json", name
        assert headers["accept"] == "application/json", name
        assert headers["idempotency-key"] == "k1", name
        assert headers["user-agent"].startswith("taapit-async/"), name
        assert headers["content-length"] == str(len(body)), name
        # Only the transport's own bookkeeping may differ.
        shared = set(headers) - {"accept-encoding", "connection"}
        assert shared == set(first[1]) - {"accept-encoding", "connection"}, name


async def test_every_transport_hands_back_status_headers_and_body() -> None:
    body = b'{"success": true, "eventId": "evt_1"}'
    reply_bytes = json_reply(body, extra_headers=b"X-Request-Id: req_42\r\nRetry-After: 7\r\n")
    own_clients: list[httpx.AsyncClient] = []
    for name in TRANSPORTS:
        async with (
            ScriptedServer(reply_bytes) as scripted,
            new_client(name, own_clients, base_url=scripted.url) as taapit,
        ):
            reply = await taapit._transport.post(f"{scripted.url}/api/events/lead", {}, b"{}")
        assert reply.status == 200, name
        assert reply.body == body, name
        assert reply.headers.get("x-request-id") == "req_42", name  # any case reads
        assert reply.headers.get("X-Request-ID") == "req_42", name
        assert reply.retry_after == "7", name
    for own in own_clients:
        await own.aclose()


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
@pytest.mark.parametrize("with_scheme", [True, False], ids=["http-url", "host-port"])
async def test_a_proxy_from_the_environment_is_used(
    connect: Callable[..., AsyncTaapit],
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    with_scheme: bool,
) -> None:
    async with ScriptedServer(OK_REPLY) as proxy:
        # "host:port" alone means an http:// proxy, as curl and httpx read it.
        monkeypatch.setenv(variable, proxy.url if with_scheme else proxy.url[len("http://") :])
        async with connect(base_url="http://localhost:9") as taapit:
            result = await taapit.track.lead(tracking_id="t1", customer={"external_id": "u"})
    assert result.success
    # A proxy gets the absolute URL in the request line.
    assert proxy.requests[0].startswith(b"POST http://localhost:9/api/events/lead HTTP/1.1")


def test_the_aiohttp_transport_refuses_a_proxy_it_cannot_speak_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALL_PROXY", "socks5://jane:hunter2@127.0.0.1:1080")
    with pytest.raises(ConfigurationError, match=r"ALL_PROXY names a socks5:// proxy") as caught:
        AsyncTaapit(SECRET, transport="aiohttp")
    assert "hunter2" not in str(caught.value)
    assert not any("hunter2" in local for local in frame_locals(caught.value))


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ALL_PROXY", "jane:hun://ter2@proxy.local:3128"),  # a password that looks like a scheme
        ("HTTPS_PROXY", "http://jane:ter2@[::1"),  # an unclosed IPv6 host
        ("http_proxy", "http://jane:ter2@"),  # no host
    ],
)
def test_the_aiohttp_transport_names_an_unreadable_proxy_without_quoting_it(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=rf"(?i){variable} .*is not a proxy URL") as caught:
        AsyncTaapit(SECRET, transport="aiohttp")
    seen = "".join(traceback.format_exception(caught.value)) + "".join(frame_locals(caught.value))
    assert "ter2" not in seen
    # The frames of AsyncTaapit(...) itself hold the key as `api_key` (trackers scrub that
    # name); none below it holds it under another name.
    assert all(
        SECRET not in local
        for local in frame_locals(caught.value)
        if not local.startswith("api_key=")
    )


def test_a_bug_while_building_the_transport_keeps_its_place_as_text_not_frames(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken_transport(*args: object, **kwargs: object) -> NoReturn:
        raise RuntimeError("a bug in the transport's constructor")

    monkeypatch.setattr(_client, "HttpxTransport", broken_transport)
    with pytest.raises(RuntimeError, match="a bug in the") as caught:
        AsyncTaapit(SECRET)
    below_the_call = caught.value.__traceback__
    assert below_the_call is not None
    # Only AsyncTaapit(...) and _new_transport remain; _open_transport's frame held the headers.
    assert "_open_transport" not in [f.name for f in traceback.extract_tb(below_the_call)]
    note = "\n".join(caught.value.__notes__)
    assert "_open_transport" in note  # where it happened, for a bug report
    assert "broken_transport" in note
    assert SECRET not in note


async def test_an_encoding_aiohttp_cannot_decode_is_an_invalid_response() -> None:
    # httpx reads an encoding it does not know as plain bytes; aiohttp refuses the reply.
    reply = json_reply(b"\x28\xb5\x2f\xfd", extra_headers=b"Content-Encoding: zstd\r\n")
    async with (
        ScriptedServer(reply) as scripted,
        AsyncTaapit(SECRET, base_url=scripted.url, transport="aiohttp") as taapit,
    ):
        result = await taapit.track.lead(tracking_id="t1", customer={"external_id": "u"})
    assert result.error is not None
    assert result.error.code == ErrorCode.INVALID_RESPONSE
    assert result.attempts == 1


@pytest.fixture
def tls_server_ca(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[trustme.CA]:
    """A throwaway CA; the TLS contexts are rebuilt so each test reads SSL_CERT_FILE anew."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    for cached in (ssl_context, _aiohttp._ssl_context):
        cached.cache_clear()
    yield trustme.CA()
    for cached in (ssl_context, _aiohttp._ssl_context):
        cached.cache_clear()


async def test_tls_is_verified_against_the_same_trust_store(
    connect: Callable[..., AsyncTaapit],
    tls_server_ca: trustme.CA,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_server_ca.issue_cert("127.0.0.1").configure_cert(server_context)
    async with ScriptedServer(OK_REPLY, tls=server_context) as scripted:
        url = scripted.url.replace("http://", "https://")
        async with connect(base_url=url, max_retries=0) as taapit:
            untrusted = await taapit.track.lead(tracking_id="t1", customer={"external_id": "u"})
        # The CA through SSL_CERT_FILE, as httpx reads it.
        ca_file = tmp_path / "ca.pem"
        tls_server_ca.cert_pem.write_to_path(str(ca_file))
        monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
        for cached in (ssl_context, _aiohttp._ssl_context):
            cached.cache_clear()
        async with connect(base_url=url, max_retries=0) as taapit:
            trusted = await taapit.track.lead(tracking_id="t1", customer={"external_id": "u"})
    assert untrusted.error is not None
    assert untrusted.error.code == ErrorCode.NETWORK_ERROR
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.error.message
    assert trusted.success
    assert len(scripted.requests) == 1  # the untrusted handshake never sent the event


# -- the default httpx pool -------------------------------------------------------------


def httpx_transport(**options: Any) -> HttpxTransport:
    options.setdefault("client", None)
    options.setdefault("headers", {"Content-Type": "application/json"})
    options.setdefault("timeout", 5.0)
    options.setdefault("max_connections", 2)
    return HttpxTransport(**options)


async def test_more_requests_than_shards_share_the_least_busy_ones() -> None:
    transport = httpx_transport(max_connections=2)
    assert transport.sharded
    async with ScriptedServer(OK_REPLY, delay=0.05) as scripted:
        replies = await asyncio.gather(
            *(transport.post(f"{scripted.url}/api/events/lead", {}, b"{}") for _ in range(7))
        )
        await transport.aclose()
    assert [r.status for r in replies] == [200] * 7
    assert scripted.connections == 2
    assert scripted.most_at_once == 2


async def test_a_failed_request_gives_its_shard_back() -> None:
    transport = httpx_transport(max_connections=3)
    pool = transport.client._transport
    assert isinstance(pool, ShardedPool)
    idle_before = list(pool._idle)
    async with ScriptedServer(b"") as hanging_up:
        with pytest.raises(APIConnectionError):
            await transport.post(f"{hanging_up.url}/api/events/lead", {}, b"{}")
    assert pool._idle == idle_before  # the same shard is on top again, none is busy
    assert set(pool._busy.values()) == {0}
    async with ScriptedServer(OK_REPLY) as scripted:
        reply = await transport.post(f"{scripted.url}/api/events/lead", {}, b"{}")
    await transport.aclose()
    assert reply.status == 200
    assert scripted.connections == 1


async def test_an_httpx_error_is_chained_without_its_request_even_a_custom_one() -> None:
    class ProxyRefused(httpx.ConnectError):
        def __init__(self, message: str, code: int, *, request: httpx.Request) -> None:
            super().__init__(f"{message} ({code})", request=request)

    def refuse(request: httpx.Request) -> NoReturn:
        raise ProxyRefused("the proxy said no", 407, request=request)

    own = httpx.AsyncClient(transport=httpx.MockTransport(refuse))
    async with AsyncTaapit(SECRET, http_client=own, max_retries=0) as taapit:
        result = await taapit.track.lead(tracking_id="t1", customer={"external_id": "u"})
    await own.aclose()
    assert result.error is not None
    assert result.error.code == ErrorCode.NETWORK_ERROR
    cause = result.error.__cause__
    assert isinstance(cause, httpx.RequestError)
    assert "ProxyRefused: the proxy said no (407)" in str(cause)
    assert result.error.__context__ is None
    with pytest.raises(RuntimeError):  # httpx's word for "no request on this error"
        cause.request  # noqa: B018


def test_http2_and_environment_proxies_keep_httpxs_own_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert not httpx_transport(http2=True).sharded
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    assert not httpx_transport().sharded
    monkeypatch.delenv("HTTPS_PROXY")
    monkeypatch.setenv("NO_PROXY", "*")  # no proxy at all: only where not to use one
    assert httpx_transport().sharded
    monkeypatch.setenv("FTP_PROXY", "http://127.0.0.1:9")  # httpx ignores it: so does the pool
    assert httpx_transport().sharded


async def test_http2_still_talks_to_an_http1_server(server: FakeTaapitServer) -> None:
    async with AsyncTaapit(SECRET, base_url=server.url, http2=True) as taapit:
        result = await taapit.track.lead(tracking_id="t1", customer={"external_id": "u"})
    assert result.success


# -- a server that answers canned bytes ---------------------------------------------------


def json_reply(body: bytes, *, extra_headers: bytes = b"") -> bytes:
    """A complete HTTP/1.1 200 reply carrying ``body``."""
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s"
        % (extra_headers, len(body), body)
    )


OK_REPLY = json_reply(b'{"success": true, "eventId": "evt_1", "tracked": true}')


class ScriptedServer:
    """An HTTP/1.1 server on 127.0.0.1 that answers every request with the same bytes.

    It records each request's raw bytes and counts connections, so a test sees what the
    client put on the wire and how it used its pool. ``delay`` holds each reply back;
    ``hang_up`` closes the connection after each reply; an empty reply closes it at once.
    """

    def __init__(
        self,
        reply: bytes,
        *,
        delay: float = 0.0,
        hang_up: bool = False,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.reply = reply
        self.tls = tls
        self.delay = delay
        self.hang_up = hang_up
        self.requests: list[bytes] = []
        self.connections = 0
        self.open_connections = 0
        self.most_at_once = 0
        self._busy = 0
        self._server: asyncio.Server | None = None
        self._closed = asyncio.Event()
        #: Set once the first request has arrived.
        self.received = asyncio.Event()

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    async def __aenter__(self) -> ScriptedServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 1)

    async def wait_until_all_closed(self, timeout: float = 5.0) -> None:
        """Return once the client has closed every connection it opened."""
        async with asyncio.timeout(timeout):
            while self.open_connections:
                self._closed.clear()
                await self._closed.wait()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_connections += 1
        try:
            async for raw in _requests(reader):
                self.requests.append(raw)
                self.received.set()
                self._busy += 1
                self.most_at_once = max(self.most_at_once, self._busy)
                try:
                    if self.delay:
                        await asyncio.sleep(self.delay)
                    if not self.reply:
                        break
                    writer.write(self.reply)
                    await writer.drain()
                    if self.hang_up:
                        break
                finally:
                    self._busy -= 1
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            self.open_connections -= 1
            self._closed.set()
            writer.close()


async def _requests(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """Each request on a connection, head and body (by Content-Length), until EOF."""
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        yield head + await reader.readexactly(length)
