"""The error tree: codes, messages, builtin bases, and results that survive pickling."""

from __future__ import annotations

import pickle
from typing import TypeVar

import httpx
import pytest
import respx

from taapit_async import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    ClientClosedError,
    ClientStateError,
    ConfigurationError,
    ErrorCode,
    InvalidResponseError,
    RejectedError,
    ServerError,
    TaapitError,
    TrackResult,
    ValidationError,
    ValidationTypeError,
)

from ._support import error_chain, make_client

_E = TypeVar("_E", bound=Exception)


def test_the_tree_subclasses_the_matching_builtins() -> None:
    assert issubclass(ConfigurationError, ValueError)
    assert issubclass(ValidationError, ValueError)
    assert issubclass(ValidationTypeError, TypeError)
    assert issubclass(ClientClosedError, RuntimeError)
    assert issubclass(ClientStateError, RuntimeError)
    assert issubclass(APITimeoutError, APIConnectionError)
    assert issubclass(AuthenticationError, APIStatusError)
    for error in (APIError, ConfigurationError, ValidationError, ClientStateError):
        assert issubclass(error, TaapitError)


def test_str_reads_well_in_a_log() -> None:
    assert str(ServerError("Taapit failed on its side", status_code=503)) == (
        "server_error (HTTP 503): Taapit failed on its side"
    )
    assert str(APIConnectionError("ConnectError: refused")) == (
        "network_error: ConnectError: refused"
    )


def test_repr_names_every_field() -> None:
    error = RejectedError("off", code="link_disabled", status_code=200)
    assert repr(error) == (
        "RejectedError(code='link_disabled', message='off', status_code=200, retryable=False)"
    )


def test_known_codes_become_error_code_members_and_others_stay_strings() -> None:
    assert ServerError("x").code is ErrorCode.SERVER_ERROR
    assert RejectedError("x", code="rejected").code is ErrorCode.REJECTED
    assert RejectedError("x", code="link_disabled").code == "link_disabled"
    assert ErrorCode("timeout") is ErrorCode.TIMEOUT
    assert isinstance(ErrorCode.TIMEOUT, str)


def test_retryable_defaults_per_class_and_can_be_overridden() -> None:
    assert ServerError("x").retryable
    assert APIConnectionError("x").retryable
    assert not AuthenticationError("x").retryable
    assert APIStatusError("x", code=ErrorCode.TIMEOUT, retryable=True).retryable


@pytest.mark.parametrize(
    "error",
    [
        ServerError("Taapit failed on its side", status_code=503),
        RejectedError("off", code="link_disabled", status_code=200),
        APITimeoutError("deadline"),
        InvalidResponseError("redirect", status_code=302),
        ValidationError("amount must be zero or more"),
    ],
)
def test_errors_survive_pickling_whole(error: TaapitError) -> None:
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is type(error)
    assert repr(clone) == repr(error)


async def test_a_failed_result_survives_pickling() -> None:
    with respx.mock(base_url="https://track.taap.it") as router:
        router.post("/api/events/lead").mock(side_effect=httpx.ConnectError("refused"))
        async with make_client(max_retries=0) as taapit:
            result = await taapit.track.lead(tracking_id="t", customer={"external_id": "u"})
    clone = pickle.loads(pickle.dumps(result))
    assert isinstance(clone, TrackResult)
    assert repr(clone.error) == repr(result.error)


def test_a_result_keeps_the_chain_of_its_error_but_no_frames() -> None:
    def fail(exc: _E) -> _E:
        """``exc``, raised and caught: with a traceback, as a transport's errors have."""
        try:
            raise exc
        except Exception:
            return exc

    member = fail(OSError("connect to ::1 refused"))
    group = fail(ExceptionGroup("every address failed", [member]))  # anyio's, say
    cause = fail(httpx.ConnectError("all connection attempts failed"))
    cause.__cause__ = group
    error = APIConnectionError("ConnectError: all connection attempts failed")
    error.__cause__ = cause
    error = fail(error)
    assert all(e.__traceback__ is not None for e in (member, group, cause, error))

    result = TrackResult(success=False, error=error)

    assert result.error is error
    assert list(error_chain(error)) == [error, cause, group, member]
    assert all(e.__traceback__ is None for e in error_chain(error))
