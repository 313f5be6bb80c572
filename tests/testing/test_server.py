"""The fake Taapit API served for real by uvicorn, over loopback TCP."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from taapit_async.testing import FakeTaapit, FakeTaapitServer, _server
from taapit_async.testing._server import main

from ._bodies import (
    CURL_LEAD,
    CURL_SALE_WITH_TRACKING_ID,
    CURL_SALE_WITHOUT_TRACKING_ID,
    REQUEST_BODY_EXAMPLE,
    node_sdk_lead,
    node_sdk_sale,
    python_requests_lead,
)

pytestmark = pytest.mark.server

AUTH = {"Authorization": "Bearer taapit_sk_test"}
JSON = {**AUTH, "Content-Type": "application/json"}
LEAD = "/api/events/lead"
SALE = "/api/events/sale"
HAS_HTTPTOOLS = importlib.util.find_spec("httptools") is not None
IMPLEMENTATIONS = [
    "h11",
    pytest.param(
        "httptools", marks=pytest.mark.skipif(not HAS_HTTPTOOLS, reason="httptools not installed")
    ),
]
# A lost connection shows as one or the other, depending on whether the client was reading
# when the reset arrived; both are what a client's retry logic must treat as a network error.
DISCONNECTED = (httpx.RemoteProtocolError, httpx.ReadError)


@pytest.fixture(scope="module", params=IMPLEMENTATIONS)
def server(request: pytest.FixtureRequest) -> Iterator[FakeTaapitServer]:
    with FakeTaapitServer(http=request.param) as served:
        yield served


@pytest.fixture
def fake(server: FakeTaapitServer) -> Iterator[FakeTaapit]:
    server.fake.reset()
    yield server.fake
    server.fake.reset()


@pytest.fixture
def http(server: FakeTaapitServer, fake: FakeTaapit) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=JSON) as client:
        yield client


def lead(external_id: str = "user_123") -> dict[str, Any]:
    return {"trackingId": "rLnWe1uz9t282v7g", "customer": {"externalId": external_id}}


def test_reference_bodies_are_accepted_over_http(http: httpx.Client, fake: FakeTaapit) -> None:
    replies = [
        http.post(LEAD, content=CURL_LEAD),
        http.post(SALE, content=CURL_SALE_WITH_TRACKING_ID),
        http.post(SALE, content=CURL_SALE_WITHOUT_TRACKING_ID),
        http.post(SALE, content=REQUEST_BODY_EXAMPLE),
        http.post(LEAD, json=python_requests_lead()),
        http.post(LEAD, json=node_sdk_lead()),
        http.post(SALE, json=node_sdk_sale()),
    ]

    assert [r.status_code for r in replies] == [200] * 7, [r.text for r in replies]
    assert [r.json()["eventId"] for r in replies] == [e.event_id for e in fake.events]
    assert [e.amount for e in fake.sales] == [Decimal("99.99")] * 3 + [Decimal("149.99")]


def test_rejection_and_unauthorized_over_http(http: httpx.Client, fake: FakeTaapit) -> None:
    missing = http.post(
        SALE, json={"customer": {"externalId": "x"}, "amount": 1, "currency": "eur"}
    )
    unauthorized = http.post(LEAD, json=lead(), headers={"Authorization": "Bearer wrong_key_42"})

    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "missing_tracking_id"
    assert unauthorized.status_code == 401
    assert "wrong_key_42" not in unauthorized.text
    assert fake.events == []


def test_port_zero_binds_a_free_port_and_url_says_which(server: FakeTaapitServer) -> None:
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}"
    assert repr(server) == f"FakeTaapitServer({server.url})"


def test_drop_aborts_the_tcp_connection_without_a_reply(
    http: httpx.Client, fake: FakeTaapit
) -> None:
    fake.drop_next()

    with pytest.raises(DISCONNECTED):
        http.post(LEAD, json=lead(), headers={"Idempotency-Key": "k"})
    after = http.post(LEAD, json=lead(), headers={"Idempotency-Key": "k"})

    assert after.status_code == 200
    assert len(fake.leads) == 1
    assert [(r.status, r.fault) for r in fake.requests] == [(None, "drop"), (200, None)]


def test_drop_after_record_loses_the_reply_over_http(http: httpx.Client, fake: FakeTaapit) -> None:
    fake.drop_next(after_record=True)

    with pytest.raises(DISCONNECTED):
        http.post(LEAD, json=lead(), headers={"Idempotency-Key": "k"})
    retried = http.post(LEAD, json=lead(), headers={"Idempotency-Key": "k"})

    assert retried.status_code == 200
    assert retried.headers["idempotent-replayed"] == "true"
    assert retried.json()["eventId"] == fake.leads[0].event_id
    assert len(fake.leads) == 1
    assert fake.attempts("k") == 2


def test_drop_on_a_raw_socket_closes_without_a_single_byte(
    server: FakeTaapitServer, fake: FakeTaapit
) -> None:
    """The client gets no status line at all: not a 500, not a partial reply."""
    fake.drop_next()
    body = json.dumps(lead()).encode()
    head = (
        f"POST {LEAD} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer taapit_sk_test\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()

    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(head + body)
        try:
            received = sock.recv(65536)
        except ConnectionResetError:
            received = b""

    assert received == b""


def test_error_rate_limit_and_delay_faults_over_http(http: httpx.Client, fake: FakeTaapit) -> None:
    fake.fail_next(status=502)
    fake.rate_limit_next(retry_after="Wed, 21 Oct 2015 07:28:00 GMT")
    fake.delay_next(seconds=0.05)

    replies = [http.post(LEAD, json=lead()) for _ in range(3)]

    assert [r.status_code for r in replies] == [502, 429, 200]
    assert replies[1].headers["retry-after"] == "Wed, 21 Oct 2015 07:28:00 GMT"
    assert [r.fault for r in fake.requests] == ["error", "rate_limit", "delay"]


def test_control_endpoints_drive_the_fake_over_http(http: httpx.Client, fake: FakeTaapit) -> None:
    control = {"Authorization": ""}  # no authentication needed
    assert http.post("/_fake/faults", json={"fail": 1, "status": 503}, headers=control).is_success
    assert http.post("/_fake/faults", json={"drop": 1, "after_record": True}).is_success

    first = http.post(SALE, content=CURL_SALE_WITH_TRACKING_ID, headers={"Idempotency-Key": "o"})
    with pytest.raises(DISCONNECTED):
        http.post(SALE, content=CURL_SALE_WITH_TRACKING_ID, headers={"Idempotency-Key": "o"})
    third = http.post(SALE, content=CURL_SALE_WITH_TRACKING_ID, headers={"Idempotency-Key": "o"})

    events = json.loads(http.get("/_fake/events", headers=control).text, parse_float=Decimal)
    log = http.get("/_fake/requests").json()
    stats = http.get("/_fake/stats").json()
    assert (first.status_code, third.status_code) == (503, 200)
    assert [(e["kind"], e["amount"], e["currency"], e["attempts"]) for e in events] == [
        ("sale", Decimal("99.99"), "eur", 3)
    ]
    assert [r["fault"] for r in log] == ["error", "drop_after_record", None]
    assert stats["events"] == 1
    assert stats["replayed"] == 1

    assert http.post("/_fake/reset").is_success
    assert http.get("/_fake/events").json() == []
    assert fake.events == []


def test_random_fault_plan_under_the_server_never_answers_500(
    http: httpx.Client, fake: FakeTaapit
) -> None:
    http.post("/_fake/faults", json={"error_rate": 0.3, "drop_rate": 0.3, "seed": 5})

    outcomes: list[int | str] = []
    for i in range(60):
        try:
            outcomes.append(
                http.post(LEAD, json=lead(), headers={"Idempotency-Key": f"k{i}"}).status_code
            )
        except DISCONNECTED:
            outcomes.append("disconnected")

    assert set(outcomes) == {200, 503, "disconnected"}
    assert outcomes.count(200) == len([r for r in fake.requests if r.status == 200])


async def test_concurrent_keep_alive_clients_while_the_test_thread_inspects(
    server: FakeTaapitServer, fake: FakeTaapit
) -> None:
    stop = threading.Event()
    seen: list[int] = []

    def inspect() -> None:
        while not stop.is_set():
            seen.append(fake.stats()["events"])
            time.sleep(0.001)  # let the server thread have the GIL

    reader = threading.Thread(target=inspect)
    reader.start()
    limits = httpx.Limits(max_connections=16)
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=JSON, limits=limits) as http:
            replies = await asyncio.gather(
                *(
                    http.post(LEAD, json=lead(f"u{i}"), headers={"Idempotency-Key": f"k{i % 100}"})
                    for i in range(100)
                )
            )
            replies += await asyncio.gather(
                *(
                    http.post(LEAD, json=lead(f"u{i}"), headers={"Idempotency-Key": f"k{i}"})
                    for i in range(100)
                )
            )
    finally:
        stop.set()
        reader.join()

    assert all(r.status_code == 200 for r in replies)
    assert len(fake.leads) == 100
    assert sum(r.replayed for r in fake.requests) == 100
    assert seen == sorted(seen)


# -- lifecycle --------------------------------------------------------------------------


def test_server_starts_stops_and_restarts() -> None:
    served = FakeTaapitServer(http="h11")
    with pytest.raises(RuntimeError, match="not running"):
        _ = served.url
    served.start()
    try:
        with pytest.raises(RuntimeError, match="already running"):
            served.start()
        assert httpx.get(f"{served.url}/_fake/stats").status_code == 200
    finally:
        served.stop()
    served.stop()  # a second stop is a no-op

    with served:
        assert httpx.get(f"{served.url}/_fake/stats").status_code == 200
    with pytest.raises(RuntimeError, match="not running"):
        _ = served.port


def test_two_servers_run_side_by_side_with_their_own_fakes() -> None:
    with FakeTaapitServer(http="h11") as one, FakeTaapitServer(http="h11") as two:
        httpx.post(f"{one.url}{LEAD}", json=lead("one"), headers=AUTH)
        httpx.post(f"{two.url}{LEAD}", json=lead("two"), headers=AUTH)

        assert one.port != two.port
        assert [e.customer.external_id for e in one.fake.leads] == ["one"]
        assert [e.customer.external_id for e in two.fake.leads] == ["two"]


def test_start_reports_a_port_already_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        served = FakeTaapitServer(port=port, http="h11", log_level="critical")
        with pytest.raises(RuntimeError, match="did not start"):
            served.start()


def test_asking_for_a_missing_http_implementation_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(_server._PROTOCOLS, "httptools", raising=False)
    with pytest.raises(ImportError, match="pip install httptools"):
        FakeTaapitServer(http="httptools")


def without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make uvloop look not installed, whether it is or not."""
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvloop" else find_spec(name)
    )


def test_the_server_runs_on_the_event_loop_asked_for() -> None:
    with FakeTaapitServer(loop="asyncio") as served:
        reply = httpx.post(f"{served.url}{LEAD}", json=lead("on asyncio"), headers=AUTH)
    assert reply.status_code == 200
    assert served.fake.leads[0].customer.external_id == "on asyncio"


def test_asking_for_uvloop_without_it_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    without_uvloop(monkeypatch)
    with pytest.raises(ImportError, match="pip install uvloop"):
        FakeTaapitServer(loop="uvloop")
    with pytest.raises(SystemExit) as exit_info:
        main(["--loop", "uvloop"])
    assert exit_info.value.code == 2
    assert "pip install uvloop" in capsys.readouterr().err


def test_an_unknown_event_loop_is_refused() -> None:
    with pytest.raises(ValueError, match="loop must be 'auto', 'asyncio' or 'uvloop', not 'trio'"):
        FakeTaapitServer(loop="trio")  # type: ignore[arg-type]


def test_without_uvicorn_the_server_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    monkeypatch.delitem(sys.modules, "taapit_async.testing._server")

    with pytest.raises(ImportError, match=r"pip install 'taapit-async\[server\]'"):
        importlib.import_module("taapit_async.testing._server")


def test_in_process_fake_imports_without_uvicorn() -> None:
    code = (
        "import sys; sys.modules['uvicorn'] = None\n"
        "from taapit_async.testing import FakeTaapit\n"
        "FakeTaapit()\n"
        "try:\n"
        "    from taapit_async.testing import FakeTaapitServer\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )

    assert "taapit-async[server]" in result.stdout


# -- the fake-server command ------------------------------------------------------------


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_fake_server_command_serves_until_interrupted(stop_signal: signal.Signals) -> None:
    code = "import sys; from taapit_async.testing._server import main; sys.exit(main(sys.argv[1:]))"
    args = ["--port", "0", "--api-key", "taapit_sk_demo", "--http", "h11", "--latency", "0"]
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    with subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True, cwd=root, env=env
    ) as proc:
        stdout = proc.stdout
        assert stdout is not None
        lines: queue.Queue[str] = queue.Queue()

        def pump() -> None:
            for line in stdout:
                lines.put(line.strip())

        # A thread reads the output, so that a silent command fails the test in 30 s
        # instead of hanging it.
        reader = threading.Thread(target=pump)
        reader.start()
        try:
            first, second = lines.get(timeout=30), lines.get(timeout=30)
            url = first.rsplit(" ", 1)[1]
            reply = httpx.post(
                f"{url}{LEAD}", json=lead(), headers={"Authorization": "Bearer taapit_sk_demo"}
            )
            proc.send_signal(stop_signal)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            reader.join()

    assert url.startswith("http://127.0.0.1:")
    assert second == "API key: taapit_sk_demo"
    assert reply.status_code == 200


def test_fake_server_command_refuses_bad_rates(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--error-rate", "2"])

    assert exit_info.value.code == 2
    assert "error_rate" in capsys.readouterr().err
