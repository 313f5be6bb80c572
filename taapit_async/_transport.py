"""The one boundary between the SDK and whatever carries the bytes.

The rest of the SDK sends a body and gets a status, a ``Retry-After`` and a body back; it
never sees an httpx type. httpx errors are translated here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import attrs
import httpx

from ._errors import APIConnectionError, APITimeoutError, InvalidResponseError

__all__ = ["HTTPReply", "HttpxTransport", "Transport"]


@attrs.frozen
class HTTPReply:
    """What the SDK needs of an HTTP reply."""

    status: int
    body: bytes
    retry_after: str | None = None


class Transport(Protocol):
    """Sends one POST and returns its reply, or raises an ``APIConnectionError``.

    A transport is built with the headers every request carries (key, content type, user
    agent); ``post`` gets only the per-request ones (the idempotency key).
    """

    async def post(self, url: str, headers: Mapping[str, str], body: bytes) -> HTTPReply:
        """POST ``body`` to ``url``; translate every transport failure to an ``APIError``."""

    async def aclose(self) -> None:
        """Release the connections this transport owns (never a user's own client)."""


class HttpxTransport:
    """The default transport: one ``httpx.AsyncClient`` connection pool.

    Args:
        client: A user's own client, which is used as is and never closed; None to build
            one tuned for this SDK.
        headers: Headers of every request. On the client built here they are the client's
            defaults, which httpx merges far more cheaply than per-request headers
            (measured: about 20 % of the CPU of a post on a null transport).
        timeout: Seconds allowed for each of connect, write, read and pool wait.
        max_connections: Pool size of the client built here.
        http2: Negotiate HTTP/2 (needs the ``h2`` package: ``taapit-async[http2]``).
    """

    def __init__(
        self,
        client: httpx.AsyncClient | None,
        *,
        headers: Mapping[str, str],
        timeout: float,
        max_connections: int,
        http2: bool = False,
    ) -> None:
        self._owned = client is None
        # httpx parses a str URL on every request (about a tenth of a post's CPU); the SDK
        # posts to two fixed URLs, so each is parsed once.
        self._urls: dict[str, httpx.URL] = {}
        self._timeout = None if client is None else httpx.Timeout(timeout)
        # A user's client keeps its own defaults; ours are then sent with each request.
        self._headers = None if client is None else dict(headers)
        self._client = client or httpx.AsyncClient(
            headers=headers,
            timeout=timeout,
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
            ),
            http2=http2,
            # A redirect is a misconfigured base_url: never follow it with the secret key.
            follow_redirects=False,
        )

    @property
    def client(self) -> httpx.AsyncClient:
        """The underlying httpx client."""
        return self._client

    async def post(self, url: str, headers: Mapping[str, str], body: bytes) -> HTTPReply:
        """POST ``body`` and read the whole reply."""
        parsed = self._urls.get(url)
        if parsed is None:
            parsed = self._urls[url] = httpx.URL(url)
        try:
            if self._timeout is None:
                response = await self._client.post(parsed, content=body, headers=headers)
            else:
                # A user's client may have no timeout at all; ours is the contract.
                response = await self._client.post(
                    parsed,
                    content=body,
                    headers={**(self._headers or {}), **headers},
                    timeout=self._timeout,
                    follow_redirects=False,
                )
        except httpx.TimeoutException as exc:
            raise APITimeoutError(f"no reply in time ({type(exc).__name__})") from exc
        except (httpx.DecodingError, httpx.TooManyRedirects) as exc:
            raise InvalidResponseError(f"unreadable reply ({type(exc).__name__})") from exc
        except httpx.RequestError as exc:
            raise APIConnectionError(f"{type(exc).__name__}: {exc}") from exc
        status = response.status_code
        return HTTPReply(
            status=status,
            body=response.content,
            # Only a refusal can ask for a pause; skip the header scan on the common path.
            retry_after=response.headers.get("retry-after") if status >= 400 else None,
        )

    async def aclose(self) -> None:
        """Close the pool if this transport built it."""
        if self._owned:
            await self._client.aclose()
