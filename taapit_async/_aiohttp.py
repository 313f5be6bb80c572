"""The fast transport: aiohttp's connection pool (``AsyncTaapit(transport="aiohttp")``).

Imported only when that transport is chosen, so aiohttp stays an optional extra. It keeps
the contract of `HttpxTransport`: the same TLS trust, per-phase timeouts, no redirects,
and every aiohttp failure translated to the SDK's errors here.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping

import aiohttp
import yarl
from aiohttp.http_exceptions import ContentEncodingError

from ._errors import APIConnectionError, APITimeoutError, InvalidResponseError
from ._transport import HTTPReply, ssl_context

__all__ = ["AiohttpTransport"]


class AiohttpTransport:
    """POSTs over one ``aiohttp.ClientSession``, opened on first use.

    Args:
        headers: Headers of every request (the session's defaults).
        timeout: Seconds allowed for each of pool wait plus connect, and each socket read.
        max_connections: Connections the pool keeps at most.
    """

    def __init__(self, *, headers: Mapping[str, str], timeout: float, max_connections: int):
        self._headers = dict(headers)
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=timeout, sock_connect=timeout, sock_read=timeout
        )
        self._max_connections = max_connections
        # A session belongs to the loop it was made on, and the client may be built before
        # any loop runs: it is opened by the first post (the SDK pins one loop per client).
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, tuple[yarl.URL, str | None]] = {}

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections, limit_per_host=0, ssl=ssl_context()
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=self._headers,
            timeout=self._timeout,
            # Proxies from HTTP(S)_PROXY/NO_PROXY, as httpx honours them.
            trust_env=True,
        )
        return self._session

    async def post(self, url: str, headers: Mapping[str, str], body: bytes) -> HTTPReply:
        """POST ``body`` and read the whole reply."""
        session = self._session or self._open()
        target = self._urls.get(url)
        if target is None:
            parsed = yarl.URL(url)
            target = self._urls[url] = (parsed, _all_proxy(parsed))
        try:
            async with session.post(
                target[0],
                data=body,
                headers=headers,
                proxy=target[1],
                # A redirect is a misconfigured base_url: never follow it with the secret key.
                allow_redirects=False,
            ) as response:
                content = await response.read()
                status = response.status
                retry_after = response.headers.get("Retry-After") if status >= 400 else None
        except TimeoutError as exc:  # aiohttp's timeouts subclass it (asyncio's is an alias)
            raise APITimeoutError(f"no reply in time ({type(exc).__name__})") from exc
        except aiohttp.ClientPayloadError as exc:
            if isinstance(exc.__cause__, ContentEncodingError):
                raise InvalidResponseError(f"unreadable reply ({type(exc).__name__})") from exc
            raise APIConnectionError(f"{type(exc).__name__}: {exc}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise APIConnectionError(f"{type(exc).__name__}: {_describe(exc)}") from exc
        return HTTPReply(status=status, body=content, retry_after=retry_after)

    async def aclose(self) -> None:
        """Close the session and its connections."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def _all_proxy(url: yarl.URL) -> str | None:
    """``ALL_PROXY`` for ``url``: httpx honours it, aiohttp's ``trust_env`` does not."""
    proxies = urllib.request.getproxies()
    if url.scheme in proxies or "all" not in proxies:
        return None  # no proxy, or one aiohttp finds by itself
    if urllib.request.proxy_bypass(url.host or ""):  # NO_PROXY
        return None
    return proxies["all"]


def _describe(exc: BaseException) -> str:
    """The error's text without its request: aiohttp's repr of one lists the headers."""
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"{exc.status}, message={exc.message!r}"
    return str(exc) or type(exc).__name__
