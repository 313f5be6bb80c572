from __future__ import annotations

import csv
import io
import re
from importlib import resources

import pytest

from taapit_async._currencies import CURRENCY_EXPONENTS, currency_exponent


def _csv_rows() -> list[dict[str, str]]:
    text = resources.files("taapit_async").joinpath("_data/iso4217.csv").read_text("utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def test_table_holds_the_active_iso_currencies() -> None:
    assert 150 <= len(CURRENCY_EXPONENTS) <= 175


@pytest.mark.parametrize(
    ("code", "exponent"),
    [
        ("eur", 2),
        ("usd", 2),
        ("gbp", 2),
        ("jpy", 0),
        ("krw", 0),
        ("isk", 0),
        ("bhd", 3),
        ("kwd", 3),
        ("clf", 4),
        ("uyw", 4),
        ("uyi", 0),
        ("xcg", 2),
        ("zwg", 2),
    ],
)
def test_well_known_currencies_have_their_iso_exponent(code: str, exponent: int) -> None:
    assert CURRENCY_EXPONENTS[code] == exponent
    assert currency_exponent(code) == exponent


@pytest.mark.parametrize("code", ["xau", "xag", "xts", "xxx", "xdr", "xsu", "hrk", "ang", "sll"])
def test_metals_test_codes_units_without_minor_unit_and_withdrawn_codes_are_absent(
    code: str,
) -> None:
    assert code not in CURRENCY_EXPONENTS
    assert currency_exponent(code) is None


@pytest.mark.parametrize("code", ["EUR", "eur", "Eur", "eUr"])
def test_lookup_ignores_case(code: str) -> None:
    assert currency_exponent(code) == 2


@pytest.mark.parametrize("code", ["", "zzz", "euro", "12"])
def test_unknown_code_returns_none(code: str) -> None:
    assert currency_exponent(code) is None


def test_mapping_is_read_only() -> None:
    with pytest.raises(TypeError):
        CURRENCY_EXPONENTS["eur"] = 3  # type: ignore[index]
    assert CURRENCY_EXPONENTS["eur"] == 2


def test_mapping_keys_are_lowercase() -> None:
    assert all(code == code.lower() for code in CURRENCY_EXPONENTS)


def test_every_csv_row_is_well_formed() -> None:
    rows = _csv_rows()
    assert rows
    for row in rows:
        assert list(row) == ["code", "number", "minor_units", "name"]
        assert re.fullmatch(r"[A-Z]{3}", row["code"]), row
        assert re.fullmatch(r"[0-9]{3}", row["number"]), row
        assert re.fullmatch(r"[0-4]", row["minor_units"]), row
        assert row["name"], row
        assert row["name"] == row["name"].strip(), row
    codes = [row["code"] for row in rows]
    numbers = [row["number"] for row in rows]
    assert len(set(codes)) == len(codes)
    assert len(set(numbers)) == len(numbers)
    assert codes == sorted(codes)
    assert len(CURRENCY_EXPONENTS) == len(rows)
