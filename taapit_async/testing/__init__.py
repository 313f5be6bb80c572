"""Test your Taapit integration against a fake Taapit API.

`FakeTaapit` behaves like the conversion-tracking API (authentication, validation, the
``trackingId`` rules, idempotency keys), records what it accepted and injects faults on
demand. Mount it in-process::

    from taapit_async.testing import FakeTaapit

    fake = FakeTaapit()
    async with httpx.AsyncClient(
        transport=fake.transport(), base_url="http://taapit.test"
    ) as http:
        ...  # point your client at it, then:
    assert [lead.customer.external_id for lead in fake.leads] == ["user_123"]

or serve it on a local port with `FakeTaapitServer` (needs ``taapit-async[server]``)::

    with FakeTaapitServer(fake) as server:
        ...  # base_url=server.url
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._fake import FakeTaapit, RecordedCustomer, RecordedEvent, RecordedRequest

if TYPE_CHECKING:
    from ._server import FakeTaapitServer

__all__ = [
    "FakeTaapit",
    "FakeTaapitServer",
    "RecordedCustomer",
    "RecordedEvent",
    "RecordedRequest",
]


def __getattr__(name: str) -> Any:
    # The server needs uvicorn, an optional extra: import it only when asked for, so the
    # in-process fake works without it and the ImportError names the extra to install.
    if name == "FakeTaapitServer":
        from ._server import FakeTaapitServer  # noqa: PLC0415

        return FakeTaapitServer
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
