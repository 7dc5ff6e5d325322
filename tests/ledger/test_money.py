"""ledger.money: integer minor units, never a float."""

from __future__ import annotations

import pytest

from ledger.money import (
    MoneyError,
    currency_exponent,
    format_amount,
    is_known_currency,
    parse_amount,
)


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("12.50", "USD", 1250),
        ("12.5", "USD", 1250),
        ("0.01", "EUR", 1),
        ("12", "USD", 1200),
        (7, "USD", 700),
        ("500", "JPY", 500),
        ("1.234", "KWD", 1234),
        ("0", "USD", 0),
    ],
)
def test_parse_amount(text: str | int, currency: str, minor: int) -> None:
    assert parse_amount(text, currency) == minor


@pytest.mark.parametrize(
    ("value", "currency", "code"),
    [
        ("12.345", "USD", "amount_precision"),
        ("1.5", "JPY", "amount_precision"),
        ("-1", "USD", "invalid_amount"),
        ("1e3", "USD", "invalid_amount"),
        ("01", "USD", "invalid_amount"),
        (" 1", "USD", "invalid_amount"),
        ("1.50\n", "USD", "invalid_amount"),
        ("1.50 ", "USD", "invalid_amount"),
        ("1.50\r", "USD", "invalid_amount"),
        ("\u0661", "USD", "invalid_amount"),
        (1.5, "USD", "invalid_amount"),
        (True, "USD", "invalid_amount"),
        ("1" * 19, "USD", "amount_too_large"),
        ("1", "XXX", "unknown_currency"),
    ],
)
def test_parse_amount_refuses(value: object, currency: str, code: str) -> None:
    with pytest.raises(MoneyError) as raised:
        parse_amount(value, currency)  # type: ignore[arg-type]
    assert raised.value.code == code


def test_format_is_the_inverse_of_parse() -> None:
    for text, currency in [("12.50", "USD"), ("500", "JPY"), ("1.234", "KWD"), ("0.00", "EUR")]:
        assert format_amount(parse_amount(text, currency), currency) == text
    assert format_amount(-1250, "USD") == "-12.50"


def test_currency_table() -> None:
    exponents = [currency_exponent(code) for code in ("USD", "JPY", "BHD")]
    assert exponents == [2, 0, 3]
    assert is_known_currency("EUR") and not is_known_currency("usd")
