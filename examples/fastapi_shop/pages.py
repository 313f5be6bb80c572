"""The shop's pages: plain server-rendered HTML, every value escaped, no build step."""

from __future__ import annotations

from html import escape

from taapit_async.webhooks import stripe_amount_to_units

_STYLE = """
body { font: 16px/1.5 system-ui, sans-serif; max-width: 36rem; margin: 2rem auto; }
form { display: grid; gap: .5rem; margin: 1rem 0; }
input, button { font: inherit; padding: .4rem .6rem; }
button { cursor: pointer; }
.note { color: #555; font-size: .9rem; }
.stripe { border: 2px dashed #635bff; padding: 1rem; border-radius: .5rem; }
"""

# With JavaScript on, the form is sent to the JSON API instead, with the id in the body as
# Taapit's browser snippet sends it. Without JavaScript this never runs: the plain form post
# reaches /signup and the ta_tid cookie alone carries the id.
_SIGNUP_SCRIPT = """
document.getElementById("signup").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const cookie = document.cookie.match(/(?:^|; )ta_tid=([^;]*)/);
  const reply = await fetch("/api/signup", {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify({
      email: form.email.value,
      name: form.name.value,
      trackingId: cookie ? cookie[1] : null,
    }),
  });
  const answer = await reply.json();
  window.location.assign(answer.next);
});
"""


def money(amount: int, currency: str) -> str:
    """Format a Stripe amount (cents) for people: ``money(2900, "eur")`` is ``"EUR 29.00"``."""
    return f"{currency.upper()} {stripe_amount_to_units(amount, currency)}"


def _page(title: str, body: str, *, script: str = "") -> str:
    tag = f"<script>{script}</script>" if script else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body>{body}{tag}</body></html>"
    )


def landing(tracking_id: str | None) -> str:
    """The landing page a Taapit deeplink opens, with the sign-up form."""
    origin = (
        f"You came through a Taapit link (<code>ta_tid={escape(tracking_id)}</code>)."
        if tracking_id
        else "You did not come through a Taapit link: your sign-up will not be attributed."
    )
    body = f"""
<h1>Taapit Shop</h1>
<p>The Pro plan: everything, every month.</p>
<p class="note">{origin}</p>
<form id="signup" method="post" action="/signup">
  <label>E-mail <input name="email" type="email" required></label>
  <label>Name <input name="name"></label>
  <button type="submit">Sign up</button>
</form>
"""
    return _page("Taapit Shop", body, script=_SIGNUP_SCRIPT)


def welcome(*, name: str, via: str, price: str) -> str:
    """The page after sign-up: the product and its checkout button."""
    body = f"""
<h1>Welcome, {escape(name)}!</h1>
<p class="note">Signed up with the {escape(via)}.</p>
<p>Pro plan, one month: <strong>{escape(price)}</strong></p>
<form method="post" action="/checkout"><button type="submit">Buy now</button></form>
"""
    return _page("Welcome", body)


def provider_checkout(*, session_id: str, email: str, price: str, pay_url: str) -> str:
    """The stand-in for Stripe's hosted checkout page."""
    body = f"""
<div class="stripe">
<h1>Stripe Checkout <small>(test mode)</small></h1>
<p class="note">A stand-in served by the shop itself: no card is charged.</p>
<p>Pay <strong>{escape(price)}</strong> to Taapit Shop as {escape(email)}.</p>
<p class="note">Session <code>{escape(session_id)}</code>, card 4242 4242 4242 4242</p>
<form method="post" action="{escape(pay_url)}"><button type="submit">Pay</button></form>
</div>
"""
    return _page("Stripe Checkout (test mode)", body)


def confirmation(*, order_id: str, price: str, paid: bool, sale_queued: bool) -> str:
    """The order's confirmation page, with what the webhook did."""
    if paid:
        status = "Payment confirmed by Stripe's webhook."
        taapit = "reported to Taapit (queued in the outbox)" if sale_queued else "not reported"
    else:
        status, taapit = "Waiting for Stripe to confirm the payment.", "not yet"
    body = f"""
<h1>Thank you!</h1>
<p>Order <code id="order">{escape(order_id)}</code>: {escape(price)}.</p>
<p id="status">{escape(status)}</p>
<p class="note">The sale: <span id="sale">{escape(taapit)}</span>.</p>
"""
    return _page("Order confirmed" if paid else "Order pending", body)
