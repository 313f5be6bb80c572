"""The fast transport: aiohttp's connection pool (``AsyncTaapit(transport="aiohttp")``).

Imported only when that transport is chosen, so aiohttp stays an optional extra. It keeps
the contract of `HttpxTransport`: the same TLS trust, per-phase timeouts, no redirects,
and every aiohttp failure translated to the SDK's errors here.
"""

from __future__ import annotations

import functools
import re
import urllib.request
from collections.abc import Mapping

import aiohttp
import httpx
import yarl
from aiohttp.http_exceptions import ContentEncodingError

from ._errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    ConfigurationError,
    InvalidResponseError,
    ShutdownError,
)
from ._transport import CLOSED_WHILE_SENDING, HTTPReply

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
        # ``connect`` (name lookup, pool wait and connect) as httpx's connect timeout, which
        # bounds the lookup too: ``sock_connect`` alone would let a hung DNS server hold
        # the attempt until the call's whole deadline.
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=timeout, sock_connect=timeout, sock_read=timeout
        )
        self._max_connections = max_connections
        # Read now, as httpx reads them when its client is built; a bad one fails here.
        self._proxies = _env_proxies()
        # A session belongs to the loop it was made on, and the client may be built before
        # any loop runs: it is opened by the first post (the SDK pins one loop per client).
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._urls: dict[str, tuple[yarl.URL, str | None]] = {}

    def _open(self) -> aiohttp.ClientSession:
        if self._closed:
            # A retry that outlived aclose(): a new session now would never be closed.
            raise ShutdownError(CLOSED_WHILE_SENDING)
        connector = aiohttp.TCPConnector(
            limit=self._max_connections, limit_per_host=0, ssl=_ssl_context()
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=self._headers,
            timeout=self._timeout,
            # Not trust_env: it also reads ~/.netrc in a thread on every request (measured:
            # it more than tripled the CPU per event). Proxies come from `_env_proxies`.
            trust_env=False,
        )
        return self._session

    async def post(self, url: str, headers: Mapping[str, str], body: bytes) -> HTTPReply:
        """POST ``body`` and read the whole reply."""
        session = self._session or self._open()
        target = self._urls.get(url)
        if target is None:
            parsed = yarl.URL(url)
            target = self._urls[url] = (parsed, _proxy_for(parsed, self._proxies))
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
        except TimeoutError as exc:  # aiohttp's timeouts subclass it (asyncio's is an alias)
            raise APITimeoutError(f"no reply in time ({type(exc).__name__})") from exc
        except aiohttp.ClientPayloadError as exc:
            if isinstance(exc.__cause__, ContentEncodingError):
                raise InvalidResponseError(f"unreadable reply ({type(exc).__name__})") from exc
            raise APIConnectionError(f"{type(exc).__name__}: {exc}") from exc
        except aiohttp.ClientResponseError as exc:
            # Not raised here: aiohttp's error would become the context of ours.
            unparsable = _without_request(exc)
        except (aiohttp.ClientError, OSError) as exc:
            raise APIConnectionError(f"{type(exc).__name__}: {str(exc) or 'no detail'}") from exc
        else:
            return HTTPReply(status=response.status, headers=response.headers, body=content)
        raise unparsable

    async def aclose(self) -> None:
        """Close the session and its connections."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()


#: The proxy schemes aiohttp can speak to.
_PROXY_SCHEMES = frozenset({"http", "https"})
#: What a URL scheme may look like (RFC 3986); anything else is not quoted back.
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")


def _env_proxies() -> dict[str, str]:
    """The proxies of ``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY``, read as httpx reads them.

    A value without a scheme is an ``http://`` proxy. The values may hold credentials, so
    no error repeats them.

    Raises:
        ConfigurationError: A proxy this transport cannot use (SOCKS, say), or no URL at all.
    """
    proxies = {}
    for scheme, value in urllib.request.getproxies().items():
        if scheme not in {"http", "https", "all"} or not value:
            continue
        variable = f"{scheme.upper()}_PROXY"
        proxy = value if "://" in value else f"http://{value}"
        proxy_scheme = proxy.partition("://")[0].lower()
        if _SCHEME.fullmatch(proxy_scheme) and proxy_scheme not in _PROXY_SCHEMES:
            raise ConfigurationError(
                f"{variable} names a {proxy_scheme}:// proxy, which the aiohttp transport "
                "cannot use: give an http:// or https:// proxy, or use the default "
                "transport (httpx; SOCKS needs `pip install httpx[socks]`)"
            )
        try:
            host = yarl.URL(proxy).host if proxy_scheme in _PROXY_SCHEMES else None
        except ValueError:
            host = None
        if not host:
            raise ConfigurationError(
                f"{variable} (or {variable.lower()}) is not a proxy URL the aiohttp transport "
                "can read: give http://[user:password@]host:port"
            )
        proxies[scheme] = proxy
    return proxies


def _proxy_for(url: yarl.URL, proxies: Mapping[str, str]) -> str | None:
    """The proxy for ``url``: by its scheme, else ``ALL_PROXY``; none for ``NO_PROXY`` hosts."""
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if proxy is None or urllib.request.proxy_bypass(url.host or ""):
        return None
    return proxy


def _without_request(exc: aiohttp.ClientResponseError) -> APIError:
    """The SDK's error for a reply aiohttp could not parse.

    The repr of aiohttp's error lists the request's headers, the secret key among them, so
    the parser's own error (what was wrong with the reply) is chained instead.
    """
    text = f"{type(exc).__name__}: {exc.message!r}"  # (its status is not the server's)
    error = (
        InvalidResponseError(f"unreadable reply ({text})")  # an encoding it cannot decode
        if _caused_by(exc, ContentEncodingError)
        else APIConnectionError(text)
    )
    error.__cause__ = exc.__cause__
    return error


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """True when ``kind`` is somewhere in the chain of causes of ``exc``."""
    seen = {id(exc)}
    cause = exc.__cause__
    while cause is not None and id(cause) not in seen:  # a chain may loop back
        if isinstance(cause, kind):
            return True
        seen.add(id(cause))
        cause = cause.__cause__
    return False
