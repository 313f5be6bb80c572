"""``python -m taapit_async outbox ...`` on real outbox files."""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from taapit_async import AsyncTaapit
from taapit_async._outbox_cli import main
from taapit_async.testing import FakeTaapitServer


@pytest.fixture
def server() -> Iterator[FakeTaapitServer]:
    with FakeTaapitServer() as running:
        yield running


async def fill(path: Path, server: FakeTaapitServer, *, good: int, bad: int) -> None:
    """Leave ``good`` pending rows and ``bad`` dead letters in ``path``."""
    async with AsyncTaapit(server.fake.api_key, base_url=server.url, outbox=path) as taapit:
        for i in range(bad):  # unknown customers without a tracking id: dead letters
            delivery = await taapit.background.sale(
                customer={"external_id": f"nobody{i}"}, amount=1, currency="eur"
            )
            await delivery.result()
    async with AsyncTaapit(
        server.fake.api_key, base_url="http://127.0.0.1:9", outbox=path, timeout=0.1,
        backoff_base=60, backoff_max=60, drain_timeout=0,
    ) as offline:  # fmt: skip
        for i in range(good):
            await offline.background.lead(
                tracking_id="t1", customer={"external_id": f"u{i}"}, idempotency_key=f"k{i}"
            )


def run(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(args), out=out)
    return code, out.getvalue()


@pytest.mark.server
async def test_status_list_retry_and_purge(tmp_path: Path, server: FakeTaapitServer) -> None:
    path = tmp_path / "o.sqlite3"
    await fill(path, server, good=3, bad=2)

    code, text = run("status", str(path))
    assert code == 0
    assert "pending       3" in text
    assert "dead letters  2" in text

    code, text = run("list", str(path))
    assert "k0" in text
    assert "k2" in text
    assert "@" not in text  # bodies (and their e-mails) are never printed
    code, text = run("list", "--dead", str(path))
    assert text.count("  sale  ") == 2
    assert "missing_tracking_id" in text

    code, text = run("retry", str(path))
    assert "2 dead letter(s) queued again" in text
    assert "pending       5" in run("status", str(path))[1]

    assert run("purge", str(path))[0] == 2  # refuses without --yes
    code, text = run("purge", "--pending", "--yes", str(path))
    assert "5 row(s) deleted" in text
    assert "pending       0" in run("status", str(path))[1]


@pytest.mark.server
async def test_retry_send_delivers_with_a_progress_bar(
    tmp_path: Path, server: FakeTaapitServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "o.sqlite3"
    await fill(path, server, good=20, bad=0)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE events SET next_attempt_at = 0")
    monkeypatch.setenv("TAAPIT_API_KEY", server.fake.api_key)
    monkeypatch.setenv("TAAPIT_BASE_URL", server.url)
    code, text = await asyncio_to_thread(run, "retry", "--send", str(path))
    assert code == 0
    assert "20/20" in text
    assert "sent 20, dead letters 0" in text
    assert len(server.fake.leads) == 20


async def asyncio_to_thread(func: object, *args: str) -> tuple[int, str]:
    import asyncio  # noqa: PLC0415

    return await asyncio.to_thread(func, *args)  # type: ignore[arg-type]


def test_a_missing_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", str(tmp_path / "nope.sqlite3")]) == 1
    assert "no outbox file at" in capsys.readouterr().err
