"""The one boundary between the SDK and whatever carries the bytes.

The rest of the SDK sends a body and gets a status, a ``Retry-After`` and a body back; it
never sees an httpx or aiohttp type. httpx errors are translated here and nowhere else;
the optional aiohttp transport (``_aiohttp``) implements the same `Transport` protocol.
"""

from __future__ import annotations

import functools
import ssl
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Protocol

import attrs
import httpx

from ._errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    InvalidResponseError,
    ShutdownError,
)

__all__ = ["CLOSED_WHILE_SENDING", "HTTPReply", "HttpxTransport", "Transport", "ssl_context"]

#: What a request made after ``aclose()`` (by a retry that outlived it) fails with.
CLOSED_WHILE_SENDING = "the client was closed while this event was being sent"


@attrs.frozen
class HTTPReply:
    """One HTTP reply, whatever carried it: its status, headers and whole body.

    ``headers`` is the HTTP library's own mapping, read case-insensitively (httpx's
    ``Headers``, aiohttp's ``CIMultiDictProxy``): handing it over copies nothing.
    """

    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def retry_after(self) -> str | None:
        """The ``Retry-After`` header, when the reply has one."""
        return self.headers.get("retry-after")


class Transport(Protocol):
    """Sends one POST and returns its reply, or raises an ``APIConnectionError``.

    A transport is built with the headers every request carries (key, content type, user
    agent); ``post`` gets only the per-request ones (the idempotency key).
    """

    async def post(self, url: str, headers: Mapping[str, str], body: bytes) -> HTTPReply:
        """POST ``body`` to ``url``; translate every transport failure to an ``APIError``."""

    async def aclose(self) -> None:
        """Release the connections this transport owns (never a user's own client)."""


@functools.cache
def ssl_context() -> ssl.SSLContext:
    """The TLS settings of the httpx pools the SDK builds, built once per process.

    httpx's own defaults (certifi's CA bundle, or ``SSL_CERT_FILE``/``SSL_CERT_DIR``);
    building a context costs milliseconds, and a sharded pool would otherwise build one per
    shard. (The aiohttp transport builds its own with the same defaults.)
    """
    return httpx.create_ssl_context()


class _ReleasingStream(httpx.AsyncByteStream):
    """A shard's response body that hands the shard back when the body is closed."""

    def __init__(self, stream: httpx.AsyncByteStream, release: Callable[[], None]) -> None:
        self._stream = stream
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


class ShardedPool(httpx.AsyncBaseTransport):
    """Many one-connection httpx pools, each request taking an idle one.

    httpcore's pool walks all of its connections and queued requests under a lock for
    every request, so its cost per request grows with the pool: at 32 in flight raw httpx
    on a single pool of 32 spent about three times the CPU per event of the SDK on this one
    (see the README's Performance).
    A pool of one connection has nothing to walk. The SDK's gate admits at most ``size``
    requests at once, so an idle shard is always there; beyond that, a request joins the
    least busy shard's queue rather than failing.
    """

    def __init__(self, size: int, *, verify: ssl.SSLContext) -> None:
        one = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        self._shards = [httpx.AsyncHTTPTransport(verify=verify, limits=one) for _ in range(size)]
        self._busy = dict.fromkeys(range(size), 0)
        # A stack, so a low request rate keeps reusing the same warm connections.
        self._idle = list(range(size - 1, -1, -1))

    def _take(self) -> int:
        index = self._idle.pop() if self._idle else min(self._busy, key=self._busy.__getitem__)
        self._busy[index] += 1
        return index

    def _give_back(self, index: int) -> None:
        self._busy[index] -= 1
        if self._busy[index] == 0:
            self._idle.append(index)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` on an idle shard; the shard is busy until the body is closed."""
        index = self._take()
        try:
            response = await self._shards[index].handle_async_request(request)
        except BaseException:
            self._give_back(index)
            raise
        stream = response.stream
        assert isinstance(stream, httpx.AsyncByteStream)  # an async transport's body
        response.stream = _ReleasingStream(stream, functools.partial(self._give_back, index))
        return response

    async def aclose(self) -> None:
        """Close every shard's connection."""
        for shard in self._shards:
            await shard.aclose()


def _proxy_from_environment() -> bool:
    """True when ``HTTP(S)_PROXY``/``ALL_PROXY`` is set: httpx then routes through it.

    Only those: httpx ignores the rest (``FTP_PROXY``, say), and so does this check, or one
    unrelated variable would cost the tuned pool.
    """
    proxies = urllib.request.getproxies()
    return any(proxies.get(scheme) for scheme in ("http", "https", "all"))


def _translated(exc: httpx.RequestError) -> APIError:
    """The SDK's error for httpx's, chained to a copy of it without the request."""
    name = type(exc).__name__
    error: APIError
    if isinstance(exc, httpx.TimeoutException):
        error = APITimeoutError(f"no reply in time ({name})")
    elif isinstance(exc, httpx.DecodingError | httpx.TooManyRedirects):
        error = InvalidResponseError(f"unreadable reply ({name})")
    else:
        error = APIConnectionError(f"{name}: {exc}")
    error.__cause__ = _detached(exc)
    return error


def _detached(exc: httpx.RequestError) -> httpx.RequestError:
    """A copy of httpx's error without its ``request``, to chain under the SDK's error.

    The request holds the headers, the API key among them, and the result's error keeps
    its cause for the caller to read; the copy keeps the type, message and cause.
    """
    try:
        copy = type(exc)(str(exc))
    except Exception:  # noqa: BLE001 - a subclass (a custom transport's) with its own init
        copy = httpx.RequestError(f"{type(exc).__name__}: {exc}")
    copy.__cause__ = exc.__cause__
    return copy


class HttpxTransport:
    """The default transport: httpx, with a pool tuned for this SDK.

    Args:
        client: A user's own client, which is used as is and never closed; None to build
            one tuned for this SDK.
        headers: Headers of every request. On the client built here they are the client's
            defaults, which httpx merges far more cheaply than per-request headers
            (measured: about 20 % of the CPU of a post on a null transport).
        timeout: Seconds allowed for each of connect, write, read and pool wait.
        max_connections: Pool size of the client built here.
        http2: Negotiate HTTP/2 (needs the ``h2`` package: ``taapit-async[http2]``).

    The client built here spreads HTTP/1.1 requests over a `ShardedPool`. With HTTP/2 (one
    connection carries every request) or a proxy from the environment (which a custom
    httpx transport would bypass) it keeps httpx's own pool.
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
        #: True when requests go through a `ShardedPool`.
        self.sharded = client is None and not http2 and not _proxy_from_environment()
        if client is None:
            client = httpx.AsyncClient(
                headers=headers,
                timeout=timeout,
                limits=httpx.Limits(
                    max_connections=max_connections,
                    max_keepalive_connections=max_connections,
                ),
                http2=http2,
                verify=ssl_context(),
                transport=(
                    ShardedPool(max_connections, verify=ssl_context()) if self.sharded else None
                ),
                # A redirect is a misconfigured base_url: never follow it with the secret key.
                follow_redirects=False,
            )
        self._client = client

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
        except httpx.RequestError as exc:
            # Raised below, outside this block, so that httpx's error (its `.request` holds
            # the headers, the API key among them) is not our error's context either.
            failure = _translated(exc)
        except RuntimeError:  # httpx's word for a closed client
            if not self._client.is_closed:
                raise
            if self._owned:  # a retry that outlived aclose()
                raise ShutdownError(CLOSED_WHILE_SENDING) from None
            raise ShutdownError(
                "your http_client was closed while AsyncTaapit still used it: close it only "
                "after the AsyncTaapit client"
            ) from None
        else:
            return HTTPReply(
                status=response.status_code, headers=response.headers, body=response.content
            )
        raise failure

    async def aclose(self) -> None:
        """Close the pool if this transport built it."""
        if self._owned:
            await self._client.aclose()
