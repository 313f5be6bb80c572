"""A real browser through the FastAPI shop: Playwright drives Debian's headless Chromium.

The fake Taapit API and the shop run under uvicorn on 127.0.0.1. The browser opens the
deeplink, signs up, checks out and pays; the fake must then hold one lead and one sale with
the deeplink's id. Twice: with JavaScript (the page's script signs up through the JSON
API) and without (the plain form post, the cookie alone carrying the id).

Needs ``playwright`` (the ``e2e`` dependency group) and the ``chromium`` Debian package;
Playwright's own browser downloads are not used. Without them the test is skipped, unless
``TAAPIT_REQUIRE_BROWSER=1`` (CI) makes that a failure. Screenshots of the confirmation
page and of the fake's page go to ``test-artifacts/browser/`` (``TAAPIT_ARTIFACTS`` moves
them).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ._support import TID, eventually_sync, shop_and_taapit

if TYPE_CHECKING:
    from playwright.sync_api import Browser

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("TAAPIT_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(os.environ.get("TAAPIT_ARTIFACTS", ROOT / "test-artifacts")) / "browser"


def missing_browser() -> str | None:
    """Why the browser test cannot run here, or None when it can."""
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install --group e2e, or nox -s e2e)"
    if not CHROMIUM.is_file():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


def skip_or_fail(reason: str) -> None:
    """Skip for want of a browser; in CI (``TAAPIT_REQUIRE_BROWSER=1``) fail instead."""
    if os.environ.get("TAAPIT_REQUIRE_BROWSER") == "1":
        pytest.fail(f"TAAPIT_REQUIRE_BROWSER=1, but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    reason = missing_browser()
    if reason is not None:
        skip_or_fail(reason)
    from playwright.sync_api import sync_playwright  # noqa: PLC0415  # only when present

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.mark.server
@pytest.mark.parametrize(
    ("javascript", "signed_up_with"),
    [(True, "JSON API"), (False, "HTML form")],
    ids=["javascript-on", "javascript-off"],
)
def test_a_browser_visitor_from_a_deeplink_is_attributed_a_lead_and_a_sale(
    chromium: Browser, tmp_path: Path, javascript: bool, signed_up_with: str
) -> None:
    with shop_and_taapit(tmp_path / "outbox.sqlite3") as (shop, taapit):
        context = chromium.new_context(java_script_enabled=javascript)
        context.set_default_timeout(10_000)  # a page of this shop loads in milliseconds
        page = context.new_page()
        page.goto(f"{shop}/?ta_tid={TID}")
        assert {(c["name"], c["value"]) for c in context.cookies()} == {("ta_tid", TID)}

        page.fill("input[name=email]", "ada@example.com")
        page.fill("input[name=name]", "Ada")
        page.get_by_role("button", name="Sign up").click()
        page.wait_for_url("**/welcome")
        assert f"Signed up with the {signed_up_with}" in page.inner_text("body")

        page.get_by_role("button", name="Buy now").click()
        page.wait_for_url("**/fake-stripe/checkout/*")
        page.get_by_role("button", name="Pay").click()
        page.wait_for_url("**/orders/*")
        assert page.inner_text("#status") == "Payment confirmed by Stripe's webhook."
        order_id = page.inner_text("#order")

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        name = "javascript-on" if javascript else "javascript-off"
        page.screenshot(path=ARTIFACTS / f"confirmation-{name}.png", full_page=True)

        # The sale went to the outbox; its delivery runs in the background.
        eventually_sync(lambda: len(taapit.fake.events) == 2, "a lead and a sale")
        page.goto(f"{taapit.url}/_fake/")
        page.screenshot(path=ARTIFACTS / f"fake-taapit-{name}.png", full_page=True)
        context.close()

    lead, sale = taapit.fake.events
    assert (lead.kind, lead.tracking_id, lead.customer.email) == ("lead", TID, "ada@example.com")
    assert lead.metadata == {"signedUpWith": signed_up_with}
    assert (sale.kind, sale.tracking_id, sale.idempotency_key) == ("sale", TID, order_id)
    assert sale.customer.external_id == lead.customer.external_id
    assert (sale.amount, sale.currency) == (Decimal("29.00"), "eur")  # 2900 cents


def test_a_missing_chromium_skips_the_browser_test_with_the_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", tmp_path / "chromium")
    monkeypatch.delenv("TAAPIT_REQUIRE_BROWSER", raising=False)
    reason = missing_browser()
    assert reason == f"no Chromium at {tmp_path / 'chromium'} (apt-get install chromium)"
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium"):
        skip_or_fail(reason)


def test_a_missing_browser_fails_where_one_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAAPIT_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="TAAPIT_REQUIRE_BROWSER=1, but no playwright"):
        skip_or_fail("no playwright")
