"""ISO 4217 currency exponents (minor units), read from the packaged list.

The table lives in ``_data/iso4217.csv``; see ``_data/README.md`` for its
source and how to update it.
"""

from __future__ import annotations

import csv
import io
import types
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["CURRENCY_EXPONENTS", "currency_exponent"]


def _load() -> Mapping[str, int]:
    """Read the packaged CSV into a read-only mapping.

    Returns:
        Lowercase ISO 4217 code -> number of minor-unit digits.
    """
    text = resources.files("taapit_async").joinpath("_data/iso4217.csv").read_text("utf-8")
    rows = csv.DictReader(io.StringIO(text))
    return types.MappingProxyType({row["code"].lower(): int(row["minor_units"]) for row in rows})


CURRENCY_EXPONENTS: Mapping[str, int] = _load()
"""Lowercase ISO 4217 code -> exponent (``"eur"`` -> 2, ``"jpy"`` -> 0, ``"kwd"`` -> 3)."""


def currency_exponent(code: str) -> int | None:
    """Return the number of minor-unit digits of an ISO 4217 currency.

    Args:
        code: A three-letter currency code, in any case (``"EUR"``, ``"eur"``).

    Returns:
        The exponent (2 for EUR, 0 for JPY, 3 for KWD), or None when the code is
        not an active ISO 4217 currency with a minor unit.
    """
    return CURRENCY_EXPONENTS.get(code.lower())
