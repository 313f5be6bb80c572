"""Client settings: explicit arguments first, then the environment, then the defaults."""

from __future__ import annotations

import ipaddress
import math
import os
import platform
import re
from collections.abc import Mapping
from typing import Final

import attrs
import httpx

from ._errors import ConfigurationError
from ._retry import RetryPolicy
from ._version import __version__

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_IN_FLIGHT",
    "ENV_API_KEY",
    "ENV_BASE_URL",
    "ENV_ENABLED",
    "Settings",
    "resolve_settings",
    "user_agent",
]

#: Where events go unless ``base_url=`` or ``TAAPIT_BASE_URL`` says otherwise.
DEFAULT_BASE_URL: Final = "https://track.taap.it"
#: Requests one client keeps in flight at once; further calls wait their turn in order.
#: Off loopback a request takes tens of milliseconds, so this caps throughput at about
#: ``max_in_flight / latency``; the sharded pool keeps 32 as cheap per request as 8.
DEFAULT_MAX_IN_FLIGHT: Final = 32

ENV_API_KEY: Final = "TAAPIT_API_KEY"
ENV_BASE_URL: Final = "TAAPIT_BASE_URL"
ENV_ENABLED: Final = "TAAPIT_ENABLED"

_FALSE: Final = frozenset({"0", "false", "no", "off"})
_TRUE: Final = frozenset({"1", "true", "yes", "on", ""})
# A key travels in a header: whitespace or control characters would split or corrupt it.
_KEY_SHAPE: Final = re.compile(r"[\x21-\x7e]+")
_HOSTNAME: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


def user_agent() -> str:
    """Return the ``User-Agent`` sent with every request: SDK, Python and httpx versions."""
    return (
        f"taapit-async/{__version__} "
        f"{platform.python_implementation()}/{platform.python_version()} "
        f"httpx/{httpx.__version__}"
    )


def _is_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return _HOSTNAME.fullmatch(host) is not None
    return True


def _is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_base_url(raw: object, source: str) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ConfigurationError(
            f"{source} must be a non-empty URL such as {DEFAULT_BASE_URL!r}, not {raw!r}"
        )
    try:
        url = httpx.URL(raw.strip())
    except httpx.InvalidURL as exc:
        raise ConfigurationError(f"{source} is not a valid URL ({exc})") from None
    if url.scheme not in {"http", "https"} or not url.host:
        raise ConfigurationError(
            f"{source} must be an http(s) URL with a host, such as {DEFAULT_BASE_URL!r}"
        )
    if not _is_host(url.host) or not 0 < (url.port or 443) < 65536:
        raise ConfigurationError(f"{source} is not a valid URL (check its host and port)")
    if url.query or url.fragment:
        raise ConfigurationError(f"{source} must not carry a query string or a fragment")
    if url.scheme == "http" and not _is_loopback(url.host):
        raise ConfigurationError(
            f"{source} uses plain http:// to {url.host!r}, which would send the secret key "
            "unencrypted: use https://, or http:// only to localhost/127.0.0.1 for testing"
        )
    return str(url).rstrip("/")


def _parse_enabled(environ: Mapping[str, str]) -> bool:
    raw = environ.get(ENV_ENABLED)
    if raw is None:
        return True
    value = raw.strip().lower()
    if value in _FALSE:
        return False
    if value in _TRUE:
        return True
    raise ConfigurationError(
        f"{ENV_ENABLED}={raw!r} is not understood: use 1/true/yes/on or 0/false/no/off"
    )


def _check_api_key(raw: object, *, from_env: bool) -> str:
    source = ENV_API_KEY if from_env else "api_key"
    if not isinstance(raw, str):
        raise ConfigurationError(f"{source} must be a str, not {type(raw).__name__}")
    if not raw:
        raise ConfigurationError(
            f"no API key: pass api_key= or set {ENV_API_KEY} "
            "(your secret key is under Settings > Conversion in the Taapit dashboard)"
        )
    if _KEY_SHAPE.fullmatch(raw) is None:
        # Never repeat the key itself, not even a malformed one.
        raise ConfigurationError(
            f"{source} contains whitespace or control characters: copy the key again "
            "without surrounding spaces or line breaks"
        )
    return raw


@attrs.frozen
class Settings:
    """Everything a client needs to know, resolved and checked once."""

    api_key: str | None = attrs.field(repr=False)
    base_url: str
    enabled: bool
    timeout: float
    retry: RetryPolicy
    max_in_flight: int

    @property
    def lead_url(self) -> str:
        """The endpoint for leads."""
        return f"{self.base_url}/api/events/lead"

    @property
    def sale_url(self) -> str:
        """The endpoint for sales."""
        return f"{self.base_url}/api/events/sale"


def resolve_settings(
    *,
    api_key: str | None,
    base_url: str | None,
    enabled: bool | None,
    timeout: float,
    retry: RetryPolicy,
    max_in_flight: int,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Combine arguments, environment and defaults; raise ``ConfigurationError`` if unusable."""
    env = os.environ if environ is None else environ
    if enabled is None:
        enabled = _parse_enabled(env)
    elif not isinstance(enabled, bool):
        raise ConfigurationError(f"enabled must be True, False or None, not {enabled!r}")

    key: str | None
    if api_key is not None:
        key = _check_api_key(api_key, from_env=False)
    elif env.get(ENV_API_KEY):
        key = _check_api_key(env[ENV_API_KEY].strip(), from_env=True)
    elif enabled:
        key = _check_api_key("", from_env=False)
    else:
        key = None  # disabled mode needs no secret: apps start in development and CI

    if base_url is not None:
        url = _check_base_url(base_url, "base_url")
    elif env.get(ENV_BASE_URL):
        url = _check_base_url(env[ENV_BASE_URL], ENV_BASE_URL)
    else:
        url = DEFAULT_BASE_URL

    # Arguments arrive untyped from users' config files: check what the annotations promise.
    raw_timeout: object = timeout
    raw_in_flight: object = max_in_flight
    if (
        isinstance(raw_timeout, bool)
        or not isinstance(raw_timeout, int | float)
        or not 0 < raw_timeout < math.inf
    ):
        raise ConfigurationError(f"timeout must be a number of seconds > 0, not {timeout!r}")
    if isinstance(raw_in_flight, bool) or not isinstance(raw_in_flight, int) or raw_in_flight < 1:
        raise ConfigurationError(f"max_in_flight must be an int >= 1, not {max_in_flight!r}")
    return Settings(
        api_key=key,
        base_url=url,
        enabled=enabled,
        timeout=float(timeout),
        retry=retry,
        max_in_flight=max_in_flight,
    )
