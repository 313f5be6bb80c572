"""Every ```python block of README.md runs as written, one test case per block.

The blocks are fragments of a reader's app, so each one runs in a small namespace of the
names a reader has from the surrounding text (see `reader`), against a real
`FakeTaapit`. A block may use top-level ``await``: it is compiled with
``ast.PyCF_ALLOW_TOP_LEVEL_AWAIT`` and its code object awaited inside the test's loop. The
code is compiled as README.md itself, at its own line numbers, so a traceback shows the
README's line.

Running is the least a block proves. What it defines is then used for real, by the driver
registered under that name in `DRIVERS` (an ``app`` gets a request, a handler is called
with a real request, a test function is run with the plugin's fixtures), and each driver
asserts what the fake recorded.

A block that cannot run on purpose carries ``<!-- readme-test: skip (reason) -->`` on
the line right before its fence; it is reported as a skip with that reason.
"""

from __future__ import annotations

import ast
import functools
import inspect
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import CodeType, SimpleNamespace
from typing import Any

import httpx
import pytest
import respx
from asgi_lifespan import LifespanManager
from starlette.requests import Request
from starlette.responses import Response

from taapit_async import DEFAULT_BASE_URL, AsyncTaapit
from taapit_async.integrations.fastapi import RequestTracker, TaapitClient
from taapit_async.testing import FakeTaapit, RecordedCustomer
from taapit_async.webhooks import WebhookSignatureError, sign_stripe_payload

from ._support import fake_client

README = Path(__file__).resolve().parent.parent / "README.md"

TID = "rLnWe1uz9t282v7g"  # the visitor's ta_tid throughout
KNOWN_CUSTOMER = "user_123"  # the README's customer, known to the fake from an earlier lead
STRIPE_SECRET = "whsec_test_readme"

_FENCE = "```"
_PYTHON_FENCE = re.compile(r"```python\s*")
_MARKER = "readme-test:"
_SKIP_MARKER = re.compile(r"<!--\s*readme-test:\s*skip\s*\((?P<reason>.*\S.*)\)\s*-->\s*")
_HEADING = re.compile(r"#{1,6}\s+(?P<title>.+)")


@dataclass(frozen=True)
class Block:
    """One ```python block of the README.

    Attributes:
        line: The README line of its opening fence (1-based).
        heading: The nearest heading above it.
        source: Its code, without the fences.
        skip_reason: The reason of a skip marker right before the fence, or None.
    """

    line: int
    heading: str
    source: str = field(repr=False)
    skip_reason: str | None

    @property
    def id(self) -> str:
        """The test id: ``L110-fastapi``, the fence's line and the heading's slug."""
        slug = re.sub(r"[^a-z0-9]+", "-", self.heading.lower()).strip("-")
        return f"L{self.line}-{slug or 'top'}"

    def compile(self) -> CodeType:
        """Compile the block as README.md at its own lines, top-level ``await`` allowed.

        ``dont_inherit``: this module's ``from __future__ import annotations`` must not leak
        in; a reader's annotations are evaluated eagerly (FastAPI reads them).
        """
        top_level_await = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        code = compile(self.source, str(README), "exec", flags=top_level_await, dont_inherit=True)
        return _shifted(code, self.line)


def _shifted(code: CodeType, lines: int) -> CodeType:
    """``code`` moved down by ``lines``, nested functions too: line tables are relative.

    Moving the code rather than padding the source keeps a traceback's listing to the
    block (pytest lists a frame from its code's first line).
    """
    consts = tuple(_shifted(c, lines) if isinstance(c, CodeType) else c for c in code.co_consts)
    return code.replace(co_firstlineno=code.co_firstlineno + lines, co_consts=consts)


def readme_blocks(text: str) -> list[Block]:
    """Return the README's ```python blocks in order; fences of other languages are passed."""
    blocks: list[Block] = []
    heading = ""
    lines = text.splitlines()
    fence_line: int | None = None  # the open fence's index, when inside any fence
    is_python = False
    for index, line in enumerate(lines):
        if fence_line is not None:
            if line.strip() == _FENCE:
                if is_python:
                    previous = lines[fence_line - 1] if fence_line else ""
                    marker = _SKIP_MARKER.fullmatch(previous)
                    blocks.append(
                        Block(
                            line=fence_line + 1,
                            heading=heading,
                            source="\n".join(lines[fence_line + 1 : index]) + "\n",
                            skip_reason=marker["reason"].strip() if marker else None,
                        )
                    )
                fence_line = None
        elif line.startswith(_FENCE):
            fence_line, is_python = index, _PYTHON_FENCE.fullmatch(line) is not None
        elif match := _HEADING.fullmatch(line):
            heading = match["title"]
    assert fence_line is None, f"README.md:{fence_line + 1}: a code fence is never closed"
    return blocks


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))


@dataclass
class Reader:
    """A reader's world for one block: the fake Taapit and the names the README assumes.

    Attributes:
        fake: The fake Taapit API every client of the test talks to.
        taapit: The reader's client (``taapit`` in the namespace).
        namespace: The globals the block runs in.
        caplog: The test's log capture.
    """

    fake: FakeTaapit
    taapit: AsyncTaapit
    namespace: dict[str, Any] = field(repr=False)
    caplog: pytest.LogCaptureFixture = field(repr=False)

    async def run(self, block: Block) -> set[str]:
        """Run ``block`` in the namespace; return the names it bound or rebound."""
        before = dict(self.namespace)
        result = eval(block.compile(), self.namespace)
        if inspect.iscoroutine(result):  # the block has a top-level await
            await result
        return {
            name
            for name, value in self.namespace.items()
            if not name.startswith("__") and (name not in before or before[name] is not value)
        }


def _forward_to(fake: FakeTaapit) -> Callable[[httpx.Request], Awaitable[httpx.Response]]:
    """A respx side effect that hands a request to the fake, in-process."""
    transport = fake.transport()

    async def forward(request: httpx.Request) -> httpx.Response:
        return await transport.handle_async_request(request)

    return forward


@pytest.fixture
async def reader(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[Reader]:
    """A fresh fake, the reader's client and tracker, and the namespace a block runs in.

    Blocks that build their own client from the environment (``AsyncTaapit()``,
    ``taapit_lifespan()``) get the fake's key from ``TAAPIT_API_KEY``, and their requests
    to the default base URL are routed to the same fake by respx; any other request fails.
    """
    fake = FakeTaapit()
    fake.add_customer(KNOWN_CUSTOMER)
    monkeypatch.setenv("TAAPIT_API_KEY", fake.api_key)
    with respx.mock(base_url=DEFAULT_BASE_URL, assert_all_called=False) as taapit_api:
        taapit_api.route().mock(side_effect=_forward_to(fake))
        async with fake_client(fake) as taapit:
            namespace: dict[str, Any] = {
                # A module's name, for the reader's logging.getLogger(__name__).
                "__name__": "readme",
                # The app's one client ("create one client when the app starts"), on the fake.
                "taapit": taapit,
                # What TaapitMiddleware or Tracker hands a request handler: a visitor who
                # arrived through a Taapit link with ?ta_tid=TID (kept by the cookie).
                "tracker": RequestTracker(TID, "cookie", taapit),
                # Imports a fragment takes for granted from the blocks around it.
                "AsyncTaapit": AsyncTaapit,
                "Decimal": Decimal,
                "json": json,
                "Request": Request,  # Starlette's, which FastAPI re-exports
                "Response": Response,
                "TaapitClient": TaapitClient,
                # The Stripe endpoint's signing secret, from the reader's configuration.
                "STRIPE_SECRET": STRIPE_SECRET,
            }
            yield Reader(fake=fake, taapit=taapit, namespace=namespace, caplog=caplog)
            for value in namespace.values():  # clients the block built for itself
                if isinstance(value, AsyncTaapit) and value is not taapit:
                    await value.aclose()


# --- Drivers: what a block defines, used for real ---------------------------------------

Driver = Callable[[Reader], Awaitable[None]]


async def _signs_up(reader: Reader) -> None:
    """``on_signup(user, tracking_id)``: the lead is recorded; a refusal is logged."""
    on_signup = reader.namespace["on_signup"]
    user = SimpleNamespace(id=42, email="ada@example.com")
    await on_signup(user, TID)
    (lead,) = reader.fake.leads
    assert lead.tracking_id == TID
    assert lead.customer == RecordedCustomer(external_id="42", email="ada@example.com")

    reader.fake.fail_next(1, status=400)  # the README's failure branch, not retried
    await on_signup(user, TID)
    assert len(reader.fake.leads) == 1
    assert any(
        r.name == "readme" and r.getMessage().startswith("lead not tracked")
        for r in reader.caplog.records
    )


async def _confirms_a_payment(reader: Reader) -> None:
    """``on_payment_confirmed(order)``, twice: one sale, as the redelivery comment says."""
    order = SimpleNamespace(id="order_456", user_id=KNOWN_CUSTOMER)
    await reader.namespace["on_payment_confirmed"](order)
    await reader.namespace["on_payment_confirmed"](order)
    (sale,) = reader.fake.sales
    assert (sale.amount, sale.currency) == (Decimal("99.99"), "eur")
    assert sale.idempotency_key == "order_456"
    assert sale.customer.external_id == KNOWN_CUSTOMER


async def _serves_a_signup(reader: Reader) -> None:
    """``app``: started by its lifespan, POST /signup from a visitor with the cookie: a lead."""
    app = reader.namespace["app"]
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app),
            base_url="http://shop.localhost",
            cookies={"ta_tid": TID},
        ) as browser,
    ):
        reply = await browser.post("/signup", json={"email": "ada@example.com"})
    assert reply.status_code == 200, f"POST /signup: {reply.status_code} {reply.text}"
    (lead,) = reader.fake.leads
    assert lead.tracking_id == TID


async def _carries_the_id_to_checkout(reader: Reader) -> None:
    """``metadata`` for the payment holds the tracker's id under ``ta_tid``."""
    assert reader.namespace["metadata"].get("ta_tid") == TID


def _webhook_request(body: bytes, signature: str) -> Request:
    """A real Starlette request, as Stripe would post it."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/webhooks/stripe",
        "query_string": b"",
        "headers": [
            (b"content-type", b"application/json"),
            (b"stripe-signature", signature.encode()),
        ],
    }
    return Request(scope, receive)


async def _receives_a_stripe_webhook(reader: Reader) -> None:
    """``stripe_webhook(request, taapit)``: a signed paid session is one sale, once."""
    handler = reader.namespace["stripe_webhook"]
    session = {
        "object": "checkout.session",
        "id": "cs_test_readme",
        "payment_status": "paid",
        "amount_total": 2999,
        "currency": "eur",
        "client_reference_id": KNOWN_CUSTOMER,
        "customer_details": {"email": "ada@example.com"},
        "metadata": reader.namespace.get("metadata", {"ta_tid": TID}),
    }
    event = {"type": "checkout.session.completed", "data": {"object": session}}
    body = json.dumps(event).encode()
    for _ in range(2):  # Stripe redelivers
        request = _webhook_request(body, sign_stripe_payload(body, STRIPE_SECRET))
        response = await handler(request, reader.taapit)
        assert response.status_code == 204
    (sale,) = reader.fake.sales
    assert (sale.tracking_id, sale.amount, sale.currency) == (TID, Decimal("29.99"), "eur")
    assert sale.idempotency_key == "cs_test_readme"

    forged = sign_stripe_payload(body, "whsec_someone_else")
    with pytest.raises(WebhookSignatureError):
        await handler(_webhook_request(body, forged), reader.taapit)


async def _delivers_in_the_background(reader: Reader) -> None:
    """``delivery``: its result is a success, and the fake recorded that event."""
    delivery = reader.namespace["delivery"]
    result = await delivery.result()
    assert result.success, result.error
    assert [e.idempotency_key for e in reader.fake.events] == [delivery.idempotency_key]


async def _builds_its_own_client(reader: Reader) -> None:
    """A block that rebinds ``taapit``: an open client, from the environment's key.

    (The outbox block names a file under /var/lib/myapp, so building the client is as far
    as it goes: starting it would open that file. The fixture closes the client.)
    """
    client = reader.namespace["taapit"]
    assert isinstance(client, AsyncTaapit)
    assert not client.closed
    assert client.base_url == DEFAULT_BASE_URL


async def _runs_readme_test(name: str, reader: Reader) -> None:
    """A test function of "Testing your own app", with the plugin's two fixtures.

    They are built as taapit_async/testing/_plugin.py builds them: a fresh fake, and a
    client on it whose retries do not wait.
    """
    test = reader.namespace[name]
    fake = FakeTaapit()
    async with fake_client(fake, backoff_base=0, backoff_max=0) as client:
        fixtures = {"taapit_fake": fake, "taapit_client": client}
        await test(**{arg: fixtures[arg] for arg in inspect.signature(test).parameters})
    assert fake.events, f"{name} sent nothing to its fake"


DRIVERS: dict[str, Driver] = {
    "on_signup": _signs_up,
    "on_payment_confirmed": _confirms_a_payment,
    "app": _serves_a_signup,
    "metadata": _carries_the_id_to_checkout,
    "stripe_webhook": _receives_a_stripe_webhook,
    "delivery": _delivers_in_the_background,
    "taapit": _builds_its_own_client,
}
"""The driver for each name a block may bind; every ``test_*`` function is run as well."""


def drivers_for(namespace: dict[str, Any], bound: set[str]) -> Iterator[Driver]:
    """The drivers of the names a block bound, test functions in definition order last."""
    yield from (driver for name, driver in DRIVERS.items() if name in bound)
    for name in namespace:
        if name in bound and name.startswith("test_"):
            yield functools.partial(_runs_readme_test, name)


# --- Tests --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "block",
    [
        pytest.param(
            block,
            id=block.id,
            marks=[pytest.mark.skip(reason=block.skip_reason)] if block.skip_reason else [],
        )
        for block in BLOCKS
    ],
)
async def test_readme_python_block_runs_as_written(block: Block, reader: Reader) -> None:
    bound = await reader.run(block)
    for driver in drivers_for(reader.namespace, bound):
        await driver(reader)


def test_readme_has_python_blocks_to_run() -> None:
    assert BLOCKS, "no ```python block found in README.md: is the parser still right?"


def skip_marker_problems(text: str) -> list[str]:
    """Every ``readme-test:`` line that is not a skip marker with a reason before a block."""
    problems = []
    lines = text.splitlines()
    for number, line in enumerate(lines, start=1):
        if _MARKER not in line:
            continue
        following = lines[number] if number < len(lines) else ""
        if not _SKIP_MARKER.fullmatch(line):
            problems.append(f"README.md:{number}: write <!-- readme-test: skip (why) -->")
        elif not _PYTHON_FENCE.fullmatch(following):
            problems.append(f"README.md:{number}: a skip marker needs ```python right after")
    return problems


def test_every_skip_marker_in_the_readme_carries_a_reason_right_before_a_python_block() -> None:
    assert skip_marker_problems(README.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    "marker",
    [
        "<!-- readme-test: skip -->",
        "<!-- readme-test: skip () -->",
        "<!-- readme-test: skip (  ) -->",
        "<!-- readme-test: skpi (typo) -->",
    ],
)
def test_a_skip_marker_without_a_reason_is_reported(marker: str) -> None:
    text = f"{marker}\n```python\npass\n```\n"
    assert skip_marker_problems(text) == ["README.md:1: write <!-- readme-test: skip (why) -->"]
    assert readme_blocks(text)[0].skip_reason is None  # never a silent skip


def test_a_skip_marker_away_from_a_python_fence_is_reported() -> None:
    text = "<!-- readme-test: skip (pseudo-code) -->\n\n```python\npass\n```\n"
    assert skip_marker_problems(text) == ["README.md:1: a skip marker needs ```python right after"]


def test_a_skip_marker_right_before_a_fence_skips_that_block_with_its_reason() -> None:
    text = (
        "## Setup\n"
        "<!-- readme-test: skip (pseudo-code: needs a live Stripe account) -->\n"
        "```python\nstripe.go()\n```\n"
        "```python\nrun()\n```\n"
    )
    first, second = readme_blocks(text)
    assert first.skip_reason == "pseudo-code: needs a live Stripe account"
    assert second.skip_reason is None
    assert skip_marker_problems(text) == []


def test_blocks_are_python_fences_only_named_by_line_and_heading() -> None:
    text = "# Top\n```sh\n# not a heading\n```\n## Fast API!\n\n```python\nx = 1\n```\n"
    (block,) = readme_blocks(text)
    assert (block.id, block.source) == ("L7-fast-api", "x = 1\n")
