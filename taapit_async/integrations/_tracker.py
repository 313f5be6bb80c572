"""``RequestTracker``: the tracking id of one request, and calls that use it."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from taapit_async._client import AsyncTaapit, new_idempotency_key
from taapit_async._delivery import Delivery
from taapit_async._errors import ConfigurationError, MissingTrackingIdError
from taapit_async._models import (
    Customer,
    TrackResult,
    check_idempotency_key,
    check_metadata,
)

from ._extract import Source

__all__ = ["RequestTracker"]


class RequestTracker:
    """The visitor's tracking id for one request, and lead/sale calls that carry it.

    Built by ``TaapitMiddleware`` (``request.state.taapit``, ``current_tracker()``) or by
    the framework helpers; not usually built directly.

    Attributes:
        tracking_id: The visitor's valid ``ta_tid``, or None when none was found.
        source: Where it was found: ``"cookie"``, ``"body"``, ``"query"``, or None.

    Example:
        >>> result = await tracker.lead(customer={"external_id": str(user.id)})
    """

    __slots__ = ("_client", "source", "tracking_id")

    def __init__(
        self, tracking_id: str | None, source: Source | None, client: AsyncTaapit | None
    ) -> None:
        self.tracking_id = tracking_id
        self.source = source
        self._client = client

    @property
    def background(self) -> TrackerBackground:
        """The background form: ``await tracker.background.lead(...)`` returns a ``Delivery``."""
        return TrackerBackground(self)

    def __repr__(self) -> str:
        # The id comes from the visitor; it is valid by construction, so safe to show.
        return f"RequestTracker(tracking_id={self.tracking_id!r}, source={self.source!r})"

    @property
    def client(self) -> AsyncTaapit:
        """The client this tracker sends with.

        Raises:
            ConfigurationError: No client was set up for this app.
        """
        client = self._client
        if client is None:
            raise ConfigurationError(
                "no Taapit client for this request: use FastAPI(lifespan=taapit_lifespan()) "
                "or Starlette(lifespan=taapit_lifespan()), or pass "
                "TaapitMiddleware(app, client=AsyncTaapit(...))"
            )
        return client

    async def lead(
        self,
        *,
        customer: Customer | Mapping[str, Any],
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> TrackResult:
        """Report a lead with this request's tracking id; see ``AsyncTaapit.track.lead``.

        Without a tracking id nothing is sent and the result fails with the code
        ``missing_tracking_id`` (arguments are still validated).
        """
        if self.tracking_id is None:
            return _missing_tracking_id(customer, metadata, idempotency_key)
        return await self.client.track.lead(
            tracking_id=self.tracking_id,
            customer=customer,
            metadata=metadata,
            idempotency_key=idempotency_key,
        )

    async def sale(
        self,
        *,
        customer: Customer | Mapping[str, Any],
        amount: Decimal | int | float,
        currency: str,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> TrackResult:
        """Report a sale with this request's tracking id, if any; see ``track.sale``.

        Without a tracking id the sale is sent without one: Taapit links it to the
        customer's earlier lead through ``external_id``.
        """
        return await self.client.track.sale(
            tracking_id=self.tracking_id,
            customer=customer,
            amount=amount,
            currency=currency,
            metadata=metadata,
            idempotency_key=idempotency_key,
        )


class TrackerBackground:
    """``tracker.background``: queue the request's events and return at once.

    The background form of ``RequestTracker.lead``/``sale``; see ``AsyncTaapit.background``.
    """

    __slots__ = ("_tracker",)

    def __init__(self, tracker: RequestTracker) -> None:
        self._tracker = tracker

    async def lead(
        self,
        *,
        customer: Customer | Mapping[str, Any],
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Delivery:
        """Queue a lead with the request's tracking id; a done failure without one."""
        tracker = self._tracker
        if tracker.tracking_id is None:
            result = _missing_tracking_id(customer, metadata, idempotency_key)
            key = result.idempotency_key or new_idempotency_key()
            return Delivery.resolved("lead", key, result)
        return await tracker.client.background.lead(
            tracking_id=tracker.tracking_id,
            customer=customer,
            metadata=metadata,
            idempotency_key=idempotency_key,
        )

    async def sale(
        self,
        *,
        customer: Customer | Mapping[str, Any],
        amount: Decimal | int | float,
        currency: str,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Delivery:
        """Queue a sale with the request's tracking id, if any."""
        tracker = self._tracker
        return await tracker.client.background.sale(
            tracking_id=tracker.tracking_id,
            customer=customer,
            amount=amount,
            currency=currency,
            metadata=metadata,
            idempotency_key=idempotency_key,
        )


def _missing_tracking_id(
    customer: object, metadata: object, idempotency_key: str | None
) -> TrackResult:
    """Validate a lead's arguments, then fail it: there is no id to attribute it to."""
    Customer.coerce(customer)
    check_metadata(metadata)
    key = None if idempotency_key is None else check_idempotency_key(idempotency_key)
    return TrackResult(
        success=False,
        error=MissingTrackingIdError(
            "lead not sent: no valid ta_tid in the request's cookie, body or URL "
            "(did the visitor arrive through a Taapit link?)"
        ),
        idempotency_key=key,
    )
