"""FastAPI apps driven in-process: Tracker with and without the middleware, lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Annotated, Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI, Form, Request
from pydantic import BaseModel

from taapit_async import AsyncTaapit, ConfigurationError, ErrorCode
from taapit_async.integrations.asgi import TaapitMiddleware
from taapit_async.integrations.fastapi import TaapitClient, Tracker, taapit_lifespan
from taapit_async.testing import FakeTaapit
from tests._support import served_in_process

TID = "rLnWe1uz9t282v7g"
OTHER = "Other_click-42"


class Signup(BaseModel):
    email: str
    trackingId: str | None = None  # the JSON key the vendor's snippet sends


def client_factory(fake: FakeTaapit) -> Callable[[], AsyncTaapit]:
    def build() -> AsyncTaapit:
        return AsyncTaapit(
            fake.api_key,
            base_url="http://taapit.localhost",
            http_client=httpx.AsyncClient(transport=fake.transport()),
            backoff_base=0,
        )

    return build


def build_app(fake: FakeTaapit, *, middleware: bool) -> FastAPI:
    app = FastAPI(lifespan=taapit_lifespan(client=client_factory(fake)))
    if middleware:
        app.add_middleware(TaapitMiddleware)

    @app.get("/")
    async def landing(tracker: Tracker) -> dict[str, Any]:
        return {"tracking_id": tracker.tracking_id, "source": tracker.source}

    @app.post("/api/signup")
    async def signup_json(body: Signup, tracker: Tracker) -> dict[str, Any]:
        result = await tracker.lead(customer={"external_id": body.email, "email": body.email})
        return {"tracked": result.success, "code": result.error and result.error.code,
                "source": tracker.source}  # fmt: skip

    @app.post("/signup")
    async def signup_form(email: Annotated[str, Form()], tracker: Tracker) -> dict[str, Any]:
        result = await tracker.lead(customer={"external_id": email})
        return {"tracked": result.success, "source": tracker.source}

    @app.post("/webhook")
    async def webhook(request: Request, taapit: TaapitClient) -> dict[str, Any]:
        event = await request.json()
        result = await taapit.track.sale(
            tracking_id=event["ta_tid"],
            customer={"external_id": event["user"]},
            amount=Decimal(event["amount"]),
            currency="eur",
            idempotency_key=event["id"],
        )
        return {"tracked": result.success}

    return app


running = served_in_process


@pytest.fixture
def fake() -> FakeTaapit:
    return FakeTaapit()


@pytest.mark.parametrize("middleware", [True, False])
async def test_a_json_signup_tracks_a_lead_with_the_body_id(
    fake: FakeTaapit, middleware: bool
) -> None:
    async with running(build_app(fake, middleware=middleware)) as http:
        reply = await http.post("/api/signup", json={"email": "a@b.c", "trackingId": TID})
    assert reply.json() == {"tracked": True, "code": None, "source": "body"}
    (lead,) = fake.leads
    assert lead.tracking_id == TID
    assert lead.customer.external_id == "a@b.c"


@pytest.mark.parametrize("middleware", [True, False])
async def test_a_form_signup_reads_the_form_field(fake: FakeTaapit, middleware: bool) -> None:
    async with running(build_app(fake, middleware=middleware)) as http:
        reply = await http.post("/signup", data={"email": "a@b.c", "ta_tid": TID})
    assert reply.json() == {"tracked": True, "source": "body"}
    assert fake.leads[0].tracking_id == TID


@pytest.mark.parametrize("middleware", [True, False])
async def test_the_cookie_wins_over_the_body(fake: FakeTaapit, middleware: bool) -> None:
    async with running(build_app(fake, middleware=middleware)) as http:
        http.cookies.set("ta_tid", TID)
        reply = await http.post("/api/signup", json={"email": "a@b.c", "trackingId": OTHER})
    assert reply.json()["source"] == "cookie"
    assert fake.leads[0].tracking_id == TID


@pytest.mark.parametrize("middleware", [True, False])
async def test_the_query_is_used_when_nothing_else_has_an_id(
    fake: FakeTaapit, middleware: bool
) -> None:
    async with running(build_app(fake, middleware=middleware)) as http:
        reply = await http.post(f"/api/signup?ta_tid={TID}", json={"email": "a@b.c"})
        landing = await http.get(f"/?ta_tid={OTHER}")
    assert reply.json()["source"] == "query"
    assert landing.json() == {"tracking_id": OTHER, "source": "query"}


@pytest.mark.parametrize("middleware", [True, False])
async def test_no_id_means_no_lead_and_a_clear_code(fake: FakeTaapit, middleware: bool) -> None:
    async with running(build_app(fake, middleware=middleware)) as http:
        reply = await http.post("/api/signup", json={"email": "a@b.c"})
    assert reply.json() == {"tracked": False, "code": "missing_tracking_id", "source": None}
    assert fake.leads == []


async def test_a_click_sets_the_cookie_and_the_next_request_carries_it(fake: FakeTaapit) -> None:
    async with running(build_app(fake, middleware=True)) as http:
        landing = await http.get(f"/?ta_tid={TID}")
        assert "ta_tid" in landing.headers["set-cookie"]
        assert landing.headers["cache-control"] == "private"
        reply = await http.post("/api/signup", json={"email": "a@b.c"})
    assert reply.json()["source"] == "cookie"
    assert fake.leads[0].tracking_id == TID


async def test_the_client_dependency_sends_a_webhook_sale_once(fake: FakeTaapit) -> None:
    event = {"id": "evt_1", "ta_tid": TID, "user": "u1", "amount": "49.90"}
    async with running(build_app(fake, middleware=False)) as http:
        first = await http.post("/webhook", json=event)
        again = await http.post("/webhook", json=event)  # the provider redelivers
    assert first.json() == again.json() == {"tracked": True}
    (sale,) = fake.sales
    assert sale.amount == Decimal("49.9")
    assert fake.attempts("evt_1") == 2


async def test_taapit_lifespan_keeps_the_users_own_lifespan_and_state(fake: FakeTaapit) -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def mine(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        events.append("start")
        yield {"db": "connected"}
        events.append("stop")

    app = FastAPI(lifespan=taapit_lifespan(mine, client=client_factory(fake)))

    @app.get("/state")
    async def state(request: Request, taapit: TaapitClient) -> dict[str, Any]:
        return {"db": request.state.db, "client": type(taapit).__name__}

    async with running(app) as http:
        assert (await http.get("/state")).json() == {"db": "connected", "client": "AsyncTaapit"}
    assert events == ["start", "stop"]


async def test_the_lifespan_closes_the_client_it_built(fake: FakeTaapit) -> None:
    built: list[AsyncTaapit] = []

    def factory() -> AsyncTaapit:
        built.append(client_factory(fake)())
        return built[-1]

    app = FastAPI(lifespan=taapit_lifespan(client=factory))
    async with running(app):
        assert not built[0].closed
    assert built[0].closed


async def test_a_client_handed_to_the_lifespan_is_left_open() -> None:
    client = AsyncTaapit(enabled=False)
    async with running(FastAPI(lifespan=taapit_lifespan(client=client))):
        pass
    assert not client.closed


async def test_disabled_mode_starts_without_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TAAPIT_API_KEY", raising=False)
    monkeypatch.setenv("TAAPIT_ENABLED", "0")
    app = FastAPI(lifespan=taapit_lifespan())
    app.add_middleware(TaapitMiddleware)

    @app.post("/signup")
    async def signup(tracker: Tracker) -> dict[str, Any]:
        result = await tracker.lead(customer={"external_id": "u1"})
        return {"code": result.error and result.error.code}

    async with running(app) as http:
        reply = await http.post(f"/signup?ta_tid={TID}")
    assert reply.json() == {"code": ErrorCode.DISABLED}


async def test_the_middleware_alone_owns_a_client_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TAAPIT_ENABLED", "off")
    app = FastAPI()
    app.add_middleware(TaapitMiddleware)
    seen: list[AsyncTaapit] = []

    @app.get("/")
    async def home(taapit: TaapitClient) -> dict[str, bool]:
        seen.append(taapit)
        return {"enabled": taapit.enabled}

    async with running(app) as http:
        assert (await http.get("/")).json() == {"enabled": False}
    assert seen[0].closed  # closed at shutdown by the middleware that built it


async def test_the_middleware_fails_startup_when_no_key_is_configured() -> None:
    app = FastAPI()
    app.add_middleware(TaapitMiddleware)
    with pytest.raises(ConfigurationError, match="no API key"):
        async with LifespanManager(app):
            pass  # pragma: no cover


async def test_no_client_at_all_is_a_clear_error_for_the_client_dependency() -> None:
    app = FastAPI()

    @app.get("/")
    async def home(taapit: TaapitClient) -> None:  # pragma: no cover
        pass

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as http:
        with pytest.raises(Exception, match="lifespan=taapit_lifespan"):
            await http.get("/")
