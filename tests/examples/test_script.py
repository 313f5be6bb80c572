"""examples/script.py: the CSV backfill, with bounded concurrency and a progress bar."""

from __future__ import annotations

import io
import re
from decimal import Decimal
from pathlib import Path

import pytest
import script

from taapit_async import AsyncTaapit
from taapit_async.testing import FakeTaapit, FakeTaapitServer

from ._support import TID

CSV = f"""kind,tracking_id,external_id,email,amount,currency,order_id
sale,,user_1,,29.99,eur,ord_1
lead,{TID},user_1,ada@example.com,,,
lead,other-click,user_2,,,,
sale,other-click,user_2,,5,EUR,ord_2
"""


def test_the_csv_is_read_with_empty_cells_as_absent_values() -> None:
    rows = script.read_csv(io.StringIO(CSV))
    assert rows[0] == script.Conversion(
        kind="sale", external_id="user_1", amount=Decimal("29.99"), currency="eur",
        order_id="ord_1", line=2,
    )  # fmt: skip
    assert rows[1].tracking_id == TID
    assert rows[1].email == "ada@example.com"
    assert [row.kind for row in rows] == ["sale", "lead", "lead", "sale"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind,external_id\nlead,u1\n", "lacks the column(s) amount, currency"),
        (CSV.replace("lead,other-click", "click,other-click"), "line 4: needs kind lead or sale"),
        (CSV.replace("29.99", "29.9x"), "line 2: amount is not a number"),
    ],
    ids=["missing-columns", "unknown-kind", "bad-amount"],
)
def test_a_malformed_csv_is_refused_naming_the_line(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        script.read_csv(io.StringIO(text))


async def test_leads_go_first_so_a_sale_without_an_id_finds_its_customer(
    taapit_fake: FakeTaapit, taapit_client: AsyncTaapit
) -> None:
    bar = io.StringIO()
    rows = script.read_csv(io.StringIO(CSV))
    progress = script.Progress(len(rows), bar)
    failures = await script.backfill(rows, taapit_client, concurrency=2, progress=progress)
    progress.close()
    assert failures == []
    assert [e.kind for e in taapit_fake.events] == ["lead", "lead", "sale", "sale"]
    assert {(e.customer.external_id, e.amount) for e in taapit_fake.sales} == {
        ("user_1", Decimal("29.99")),
        ("user_2", Decimal("5")),
    }
    assert bar.getvalue().endswith("[##############################] 100%  4/4  failed 0\n")


async def test_running_the_backfill_again_counts_nothing_twice(
    taapit_fake: FakeTaapit, taapit_client: AsyncTaapit
) -> None:
    rows = script.read_csv(io.StringIO(CSV))
    await script.backfill(rows, taapit_client)
    assert await script.backfill(rows, taapit_client) == []
    assert len(taapit_fake.events) == 4
    assert sum(request.replayed for request in taapit_fake.requests) == 4


async def test_bad_rows_fail_alone_with_their_reason(
    taapit_fake: FakeTaapit, taapit_client: AsyncTaapit
) -> None:
    rows = [
        script.Conversion(kind="lead", external_id="u1", line=2),
        script.Conversion(kind="sale", external_id="u2", amount=Decimal(1), line=3),
        script.Conversion(kind="sale", external_id="u3", amount=Decimal(1), currency="zzz"),
        script.Conversion(kind="sale", external_id="u4", amount=Decimal(1), currency="eur"),
        script.Conversion(kind="lead", external_id="u5", tracking_id=TID),
    ]
    progress = script.Progress(len(rows), io.StringIO())
    failures = await script.backfill(rows, taapit_client, progress=progress)
    reasons = {conversion.external_id: reason for conversion, reason in failures}
    assert reasons.keys() == {"u1", "u2", "u3", "u4"}
    assert reasons["u1"] == "a lead needs its tracking_id"
    assert reasons["u2"] == "a sale needs its amount and currency"
    assert "currency" in reasons["u3"]  # refused by the client, before any I/O
    assert "missing_tracking_id" in reasons["u4"]  # refused by Taapit: an unknown customer
    assert [lead.customer.external_id for lead in taapit_fake.leads] == ["u5"]
    assert (progress.done, progress.failed) == (5, 4)


def test_the_progress_bar_redraws_in_place_at_most_ten_times_a_second() -> None:
    stream = io.StringIO()
    progress = script.Progress(1000, stream, width=10)
    for _ in range(999):
        progress.advance(ok=True)
    frames = stream.getvalue().count("\r")
    progress.advance(ok=False)  # the last one is always drawn
    assert frames < 20
    assert stream.getvalue().endswith("\r[##########] 100%  1000/1000  failed 1")


def run_command_line(
    text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *options: str
) -> tuple[int, FakeTaapit]:
    """Run ``script.py FILE`` against a served fake; return its exit status and the fake."""
    path = tmp_path / "conversions.csv"
    path.write_text(text, encoding="utf-8")
    with FakeTaapitServer() as taapit:
        monkeypatch.setenv("TAAPIT_API_KEY", taapit.fake.api_key)
        monkeypatch.setenv("TAAPIT_BASE_URL", taapit.url)
        return script.main([str(path), *options]), taapit.fake


@pytest.mark.server
@pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
def test_the_command_line_backfills_a_file_and_exits_zero(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    transport: str,
) -> None:
    status, fake = run_command_line(
        CSV, tmp_path, monkeypatch, "--concurrency", "3", "--transport", transport
    )
    assert (status, len(fake.events)) == (0, 4)
    out, err = capsys.readouterr()
    assert out == "sent 4 of 4 conversions\n"
    assert "4/4  failed 0" in err


@pytest.mark.server
def test_the_command_line_lists_failed_rows_and_exits_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = CSV.replace("lead,other-click,user_2", "lead,,user_2")
    status, fake = run_command_line(text, tmp_path, monkeypatch)
    assert (status, len(fake.events)) == (1, 3)
    out = capsys.readouterr().out
    assert out.startswith("sent 3 of 4 conversions\n")
    assert "  line 4: lead user_2: a lead needs its tracking_id" in out


def test_the_command_line_without_a_key_says_so_and_exits_two(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "conversions.csv"
    path.write_text(CSV, encoding="utf-8")
    assert script.main([str(path)]) == 2  # the test environment has no TAAPIT_API_KEY
    assert "cannot start:" in capsys.readouterr().err


def test_the_command_line_reports_an_unreadable_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert script.main([str(tmp_path / "missing.csv")]) == 2
    assert "cannot read" in capsys.readouterr().err
