"""The fast transport: aiohttp's connection pool (``AsyncTaapit(transport="aiohttp")``).

Imported only when that transport is chosen, so aiohttp stays an optional extra. It keeps
the contract of `HttpxTransport`: the same TLS trust, per-phase timeouts, no redirects,
and every aiohttp failure translated to the SDK's errors here.
"""

from __future__ import annotations

import functools
import urllib.request
from collections.abc import Mapping

import aiohttp
import httpx
import yarl
from aiohttp.http_exceptions import ContentEncodingError

from ._errors import APIConnectionError, APITimeoutError, InvalidResponseError
from ._transport import HTTPReply

# httpx's TLS defaults (certifi, or SSL_CERT_FILE/SSL_CERT_DIR), so both transports trust
# the same servers; but not httpx's own context object, on which httpcore sets the ALPN
# protocols (``h2`` with http2=True) before each handshake, which aiohttp cannot speak.
_ssl_context = functools.cache(httpx.create_ssl_context)

__all__ = ["AiohttpTransport"]


class AiohttpTransport:
    """POSTs over one ``aiohttp.ClientSession``, opened on first use.

    Args:
        headers: Headers of every request (the session's defaults).
        timeout: Seconds allowed for a connect, and for each socket read.
        max_connections: Connections the pool keeps at most.
    """

    def __init__(self, *, headers: Mapping[str, str], timeout: float, max_connections: int):
        self._headers = dict(headers)
        # No ``connect`` (pool wait plus connect) timer: the SDK's gate never lets more
        # requests out than the pool has connections, so only a real connect can stall,
        # and ``sock_connect`` bounds that. One timer less per request.
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_connect=timeout, sock_read=timeout
        )
        self._max_connections = max_connections
        # A session belongs to the loop it was made on, and the client may be built before
        # any loop runs: it is opened by the first post (the SDK pins one loop per client).
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, tuple[yarl.URL, str | None]] = {}

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections, limit_per_host=0, ssl=_ssl_context()
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=self._headers,
            timeout=self._timeout,
            # Not trust_env: it also reads ~/.netrc in a thread on every request (measured:
            # it more than tripled the CPU per event). Proxies come from `_env_proxy`.
            trust_env=False,
        )
        return self._session

    async def post(self, url: str, headers: Mapping[str, str], body: bytes) -> HTTPReply:
        """POST ``body`` and read the whole reply."""
        session = self._session or self._open()
        target = self._urls.get(url)
        if target is None:
            parsed = yarl.URL(url)
            target = self._urls[url] = (parsed, _env_proxy(parsed))
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


def _env_proxy(url: yarl.URL) -> str | None:
    """The proxy for ``url`` from the environment, as httpx picks it.

    ``HTTPS_PROXY``/``HTTP_PROXY`` by scheme, else ``ALL_PROXY``; none for a host in
    ``NO_PROXY``. Read once per URL, when the client first posts to it.
    """
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if proxy is None or urllib.request.proxy_bypass(url.host or ""):
        return None
    return proxy


def _describe(exc: BaseException) -> str:
    """The error's text without its request: aiohttp's repr of one lists the headers."""
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"{exc.status}, message={exc.message!r}"
    return str(exc) or type(exc).__name__
