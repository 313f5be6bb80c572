"""The taapit-async demo: one visitor, from a Taapit link to a paid order, on this machine.

No account, no network, a few seconds. It starts two real servers on 127.0.0.1:

- the fake Taapit API (``taapit_async.testing.FakeTaapitServer``), which records the events
  it receives and lists them on its page ``/_fake/``;
- the example shop (``examples/fastapi_shop``), a FastAPI app that uses taapit-async: its
  middleware keeps the visitor's ``ta_tid`` in a cookie, a sign-up is a lead, and the
  payment's webhook reports the sale, both delivered in the background through the outbox.

Then it plays the visitor with an httpx client that keeps cookies as a browser does:
landing, sign-up, checkout, payment. It waits for the shop's background delivery and checks
that the fake holds one lead and one sale carrying the landing's tracking id. The fake
answers the sale's first attempt with a 503, so the outbox's retry is part of the story.

Run it with ``python3 -m nox -s demo`` (``python3 -m nox -s demo -- --keep-running`` to
click around afterwards), or ``python examples/demo.py`` in a venv that has
``taapit-async[server,fastapi]`` and ``python-multipart``. It exits with status 1 when the
journey was not attributed (try ``--tracking-id ''``: a visitor who came another way).
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import TextIO

try:
    import httpx
    from fastapi_shop.servers import shop_and_taapit

    from taapit_async.testing import FakeTaapit
except (ImportError, RuntimeError) as exc:  # FastAPI raises RuntimeError without multipart
    sys.exit(
        f"{exc}\nThe demo needs: pip install 'taapit-async[server,fastapi]' python-multipart"
        " (or run: python3 -m nox -s demo)"
    )

# The id a Taapit deeplink puts in the landing URL (``?ta_tid=``), one per click.
TRACKING_ID = "rLnWe1uz9t282v7g"
WAIT = 10.0  # seconds background delivery may take before the demo gives up


class DemoError(Exception):
    """The journey broke off: a page failed, or delivery did not settle in time."""


def paint(text: str, code: str, stream: TextIO | None = None) -> str:
    """Wrap ``text`` in an ANSI style (``"1"`` bold, ``"32"`` green, ...) for ``stream``.

    Escape codes are for a person at a terminal, never for a pipe, a file or a CI log.
    """
    tty = (stream or sys.stdout).isatty() and "NO_COLOR" not in os.environ
    return f"\033[{code}m{text}\033[0m" if tty else text


def step(number: int, title: str) -> None:
    """Print a step's title."""
    print(f"\n{paint(f'{number}. {title}', '1')}")


def say(text: str) -> None:
    """Print an explanation under the current step."""
    print(f"   {text}")


def visit(
    browser: httpx.Client, method: str, path: str, data: dict[str, str] | None = None
) -> httpx.Response:
    """Send one request as a browser would, redirects followed; print every hop."""
    response = browser.request(method, path, data=data)
    for number, hop in enumerate([*response.history, response]):
        request = hop.request
        arrow = "-> " if number else ""  # a redirect the browser followed
        target = request.url.raw_path.decode()
        say(f"{arrow}{request.method} {target}: {hop.status_code} {hop.reason_phrase}")
    if response.is_error:
        msg = f"{method} {path} answered {response.status_code}: {response.text[:200]}"
        raise DemoError(msg)
    return response


def settle(shop: str) -> None:
    """Wait until the shop has delivered (or given up on) every event it queued.

    Raises:
        DemoError: Events were still queued after ``WAIT`` seconds.
    """
    deadline = time.monotonic() + WAIT
    # The shop's /healthz shows its Taapit client's counters; in_queue counts the events
    # of its outbox that are neither delivered nor given up on yet.
    while (in_queue := httpx.get(f"{shop}/healthz").json()["taapit"]["in_queue"]) > 0:
        if time.monotonic() > deadline:
            msg = f"the shop still had {in_queue} event(s) to deliver after {WAIT} s"
            raise DemoError(msg)
        time.sleep(0.02)


def delivered(fake: FakeTaapit, kind: str) -> str:
    """Tell what the fake answered to each attempt to send an event of this kind."""
    path = f"/api/events/{kind}"
    answers = [str(r.status or "no reply") for r in fake.requests if r.path == path]
    if not answers:
        return "Nothing was sent to the fake Taapit API."
    told = f"Sent in the background; the fake Taapit API answered {', then '.join(answers)}."
    if len(answers) > 1:
        told += "\n   The outbox retried after a short backoff, with the same idempotency key."
    return told


def walk(browser: httpx.Client, shop: str, fake: FakeTaapit, tracking_id: str) -> str:
    """Play the visitor, from the Taapit link to the paid order; return the order's id."""
    if tracking_id:
        step(1, "A visitor clicks a Taapit link and lands on the shop")
        visit(browser, "GET", f"/?ta_tid={tracking_id}")
    else:
        step(1, "A visitor comes to the shop another way, not through a Taapit link")
        visit(browser, "GET", "/")
    cookie = browser.cookies.get("ta_tid")
    if cookie:
        say(f"TaapitMiddleware saw ?ta_tid= and set the shop's own cookie ta_tid={cookie}.")
    else:
        say("No valid ?ta_tid= in the URL, so no cookie: this visit cannot be attributed.")

    step(2, "They sign up with the HTML form: a lead")
    visit(browser, "POST", "/signup", data={"email": "ada@example.com", "name": "Ada"})
    if cookie:
        say("The shop's Tracker read the id from the cookie and queued the lead in the outbox,")
        say("a SQLite file: the visitor never waits for Taapit. (With JavaScript on, the page")
        say("posts JSON to /api/signup with the id in the body instead.)")
    else:
        say("The shop's Tracker found no tracking id, so it queued no lead.")
    settle(shop)
    say(delivered(fake, "lead"))

    step(3, "They check out")
    provider = visit(browser, "POST", "/checkout")
    say("The shop opened a Checkout Session at a stand-in Stripe and put the visitor's ta_tid")
    say("in its metadata (if there is one): Stripe's webhook comes later, with no cookie.")

    step(4, "They pay, and Stripe's signed webhook confirms it: a sale")
    # A fault on purpose: the outbox retries, and the idempotency key keeps it one sale.
    fake.fail_next(1, status=503)
    say("(The fake Taapit API is set to answer the next event with a 503, once.)")
    confirmation = visit(browser, "POST", provider.url.path)
    order_id = confirmation.url.path.rpartition("/")[2]
    say("The stand-in Stripe posted a signed checkout.session.completed event to")
    say("/webhooks/stripe. The shop checked the signature, turned 2900 cents into EUR 29.00,")
    say(f"and queued the sale with its order id, {order_id}, as the idempotency key.")
    settle(shop)
    say(delivered(fake, "sale"))
    return order_id


def show_records(fake: FakeTaapit) -> None:
    """Print the events the fake recorded, as a table."""
    print(f"\n{paint('What the fake Taapit API recorded', '1')}")
    header = ("event", "tracking id", "customer", "amount", "idempotency key", "attempts")
    rows = [
        (
            event.kind,
            event.tracking_id or "(none)",
            event.customer.external_id,
            f"{event.amount:.2f} {event.currency.upper()}" if event.currency else "-",
            event.idempotency_key or "-",
            str(fake.attempts(event.idempotency_key)) if event.idempotency_key else "1",
        )
        for event in fake.events
    ]
    if not rows:
        say("nothing")
        return
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        say("  ".join(cells).rstrip())


def attribution_problems(fake: FakeTaapit, tracking_id: str, order_id: str) -> list[str]:
    """Say what keeps the journey from being attributed; an empty list when nothing does."""
    problems = [] if tracking_id else ["the visitor did not come through a Taapit link"]
    for kind, events in (("lead", fake.leads), ("sale", fake.sales)):
        if len(events) != 1:
            problems.append(f"the fake Taapit API recorded {len(events)} {kind}s, not one")
        elif tracking_id and events[0].tracking_id != tracking_id:
            carried = events[0].tracking_id or "(none)"
            problems.append(f"the {kind} carries {carried}, not the landing's {tracking_id}")
    if problems:
        return problems
    (lead,), (sale,) = fake.leads, fake.sales
    if sale.customer.external_id != lead.customer.external_id:
        problems.append("the sale's customer is not the lead's")
    if (sale.amount, sale.currency, sale.idempotency_key) != (Decimal("29.00"), "eur", order_id):
        got = f"{sale.amount} {sale.currency}, key {sale.idempotency_key}"
        problems.append(f"the sale is {got}, not 29.00 eur, key {order_id}")
    return problems


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(
        prog="python examples/demo.py",
        description="Walk one visitor from a Taapit link to a paid order in the example shop, "
        "against a fake Taapit API on 127.0.0.1.",
    )
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="keep the shop and the fake Taapit API up until Ctrl-C, to click around",
    )
    parser.add_argument(
        "--tracking-id",
        default=TRACKING_ID,
        metavar="ID",
        help=f"the ta_tid of the landing URL (default {TRACKING_ID}); '' for a visitor "
        "who did not come through a Taapit link, which the demo reports as a failure",
    )
    return parser.parse_args(argv)


def keep_running(landing: str, taapit: str) -> None:
    """Keep both servers up until Ctrl-C (or SIGTERM)."""
    # SIGTERM stops the demo as Ctrl-C does, so that both servers shut down and the
    # temporary outbox is removed (nox sends it when Ctrl-C is not enough).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        print("\nBoth servers keep running. Open in a browser:")
        say(f"the example shop:      {landing}")
        say(f"the fake Taapit API:   {taapit}/_fake/")
        print("Press Ctrl-C to stop.", flush=True)
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nStopped.")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; return the process's exit status (1 when not attributed)."""
    args = parse_args(argv)
    tracking_id: str = args.tracking_id
    # Line by line even into a pipe or a CI log, so that the story and the shop's log lines
    # (on stderr) come out in the order they happened.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    logging.basicConfig(format="   [log] %(name)s: %(message)s", level=logging.WARNING)
    print(paint("taapit-async demo: one visitor, from a Taapit link to a paid order", "1"))
    # A fresh outbox each run: an old file's leftover events would be resumed and sent.
    with (
        tempfile.TemporaryDirectory(prefix="taapit-demo-") as tmp,
        shop_and_taapit(Path(tmp) / "outbox.sqlite3") as (shop, taapit),
        httpx.Client(base_url=shop, follow_redirects=True, timeout=WAIT) as browser,
    ):
        landing = f"{shop}/?ta_tid={tracking_id}" if tracking_id else f"{shop}/"
        say(f"the example shop:      {landing}")
        say(f"the fake Taapit API:   {taapit.url}/_fake/ (what it recorded)")
        try:
            order_id = walk(browser, shop, taapit.fake, tracking_id)
        except DemoError as exc:
            problems = [f"the journey broke off: {exc}"]
        else:
            show_records(taapit.fake)
            problems = attribution_problems(taapit.fake, tracking_id, order_id)
        if problems:
            failed = paint("FAILED", "31", sys.stderr)
            print(f"\n{failed}: the journey was not attributed:", file=sys.stderr)
            for problem in problems:
                print(f"   - {problem}", file=sys.stderr)
        else:
            ok = paint("OK", "32")
            print(f"\n{ok}: one lead and one sale, both attributed to ta_tid={tracking_id}.")
        if args.keep_running:
            keep_running(landing, taapit.url)
        else:
            print("To click through it yourself: python3 -m nox -s demo -- --keep-running")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
