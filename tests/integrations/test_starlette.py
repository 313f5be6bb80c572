"""Plain Starlette apps, in-process and under a real uvicorn on 127.0.0.1."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from taapit_async import AsyncTaapit
from taapit_async.integrations.asgi import TaapitMiddleware
from taapit_async.integrations.starlette import get_client, get_tracker, taapit_lifespan
from taapit_async.testing import FakeTaapit, FakeTaapitServer
from tests._support import served_in_process

TID = "rLnWe1uz9t282v7g"


async def signup(request: Request) -> JSONResponse:
    tracker = await get_tracker(request)
    form = await request.form()
    result = await tracker.lead(customer={"external_id": str(form["email"])})
    return JSONResponse({"tracked": result.success, "source": tracker.source})


async def stream(request: Request) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(3):
            yield f"chunk{i};".encode()

    return StreamingResponse(chunks(), media_type="text/plain")


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    text = await websocket.receive_text()
    await websocket.send_text(f"echo:{text}")
    await websocket.close()


async def upload(request: Request) -> JSONResponse:
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
    return JSONResponse({"size": size, "tracking_id": (await get_tracker(request)).tracking_id})


def build_app(
    client: AsyncTaapit | Callable[[], AsyncTaapit] | None = None,
    *,
    fake: FakeTaapit | None = None,
) -> Starlette:
    def factory() -> AsyncTaapit:
        assert fake is not None
        return AsyncTaapit(
            fake.api_key,
            base_url="http://taapit.localhost",
            http_client=httpx.AsyncClient(transport=fake.transport()),
        )

    return Starlette(
        routes=[
            Route("/signup", signup, methods=["POST"]),
            Route("/stream", stream),
            Route("/upload", upload, methods=["POST"]),
            WebSocketRoute("/ws", echo),
        ],
        middleware=[Middleware(TaapitMiddleware)],
        lifespan=taapit_lifespan(client=client or factory),
    )


async def test_a_starlette_form_signup_is_tracked_in_process() -> None:
    fake = FakeTaapit()
    app = build_app(fake=fake)
    async with served_in_process(app) as http:
        reply = await http.post(f"/signup?ta_tid={TID}", data={"email": "a@b.c"})
    assert reply.json() == {"tracked": True, "source": "query"}
    assert fake.leads[0].tracking_id == TID


async def test_get_client_returns_the_lifespan_client() -> None:
    client = AsyncTaapit(enabled=False)

    async def home(request: Request) -> JSONResponse:
        return JSONResponse({"same": get_client(request) is client})

    app = Starlette(routes=[Route("/", home)], lifespan=taapit_lifespan(client=client))
    async with served_in_process(app) as http:
        assert (await http.get("/")).json() == {"same": True}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve(app: Starlette) -> Iterator[str]:
    """Run ``app`` under a real uvicorn on 127.0.0.1 in a thread."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        threading.Event().wait(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def fake_server() -> Iterator[FakeTaapitServer]:
    with FakeTaapitServer() as server:
        yield server


@pytest.mark.server
async def test_a_visitor_journey_through_real_uvicorn_servers(
    fake_server: FakeTaapitServer,
) -> None:
    """The shop and Taapit are both real servers; cookies travel as a browser's would."""

    def client() -> AsyncTaapit:  # built and closed on the server's own event loop
        return AsyncTaapit(fake_server.fake.api_key, base_url=fake_server.url)

    with serve(build_app(client)) as shop:
        async with httpx.AsyncClient(base_url=shop) as browser:
            landing = await browser.get(f"/stream?ta_tid={TID}")
            assert landing.text == "chunk0;chunk1;chunk2;"  # a streamed body, untouched
            assert browser.cookies["ta_tid"] == TID
            reply = await browser.post("/signup", data={"email": "a@b.c"})
            big = b"x" * (1024 * 1024)
            uploaded = await browser.post(
                "/upload", content=big, headers={"content-type": "application/json"}
            )
    assert reply.json() == {"tracked": True, "source": "cookie"}
    assert uploaded.json() == {"size": len(big), "tracking_id": TID}
    assert [e.tracking_id for e in fake_server.fake.leads] == [TID]


async def test_websockets_pass_through_the_middleware() -> None:
    app = build_app(AsyncTaapit(enabled=False))
    inbox: list[dict[str, object]] = [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": "hi"},
        {"type": "websocket.disconnect", "code": 1000},
    ]
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return inbox.pop(0)

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "path": "/ws",
        "raw_path": b"/ws",
        "query_string": f"ta_tid={TID}".encode(),
        "headers": [],
        "scheme": "ws",
        "server": ("shop.test", 80),
        "client": ("127.0.0.1", 5000),
        "subprotocols": [],
        "root_path": "",
        "asgi": {"version": "3.0"},
        "app": app,
    }
    await app(scope, receive, send)  # type: ignore[arg-type]
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert sent[1]["text"] == "echo:hi"
