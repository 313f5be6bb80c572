"""The pytest plugin that ships with the package, exercised in a separate pytest run."""

from __future__ import annotations

from typing import Any

import pytest

pytest_plugins = ["pytester"]


def test_users_can_assert_on_the_fake_with_the_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(
        """
        import pytest

        pytestmark = pytest.mark.asyncio

        async def test_lead(taapit_fake, taapit_client):
            result = await taapit_client.track.lead(
                tracking_id="t1", customer={"external_id": "u1"}
            )
            assert result.success
            assert [e.customer.external_id for e in taapit_fake.leads] == ["u1"]

        async def test_retries_do_not_wait(taapit_fake, taapit_client):
            taapit_fake.fail_next(2, status=503)
            result = await taapit_client.track.sale(
                tracking_id="t1", customer={"external_id": "u1"}, amount=10, currency="eur"
            )
            assert result.success and result.attempts == 3
            assert len(taapit_fake.sales) == 1
        """
    )
    result = pytester.runpytest_subprocess("-W", "error")
    result.assert_outcomes(passed=2)


async def test_the_fixtures_work_in_this_suite_too(taapit_fake: Any, taapit_client: Any) -> None:
    taapit_fake.rate_limit_next(1, retry_after="0")
    result = await taapit_client.track.lead(tracking_id="t1", customer={"external_id": "u1"})
    assert result.success
    assert result.attempts == 2
    assert taapit_client.base_url == "http://taapit.localhost"
