"""Money as integer minor units plus an ISO 4217 currency. Never a float.

`parse_amount` turns the decimal string (or integer) a client sends into minor
units using the currency's exponent, and refuses more decimals than the
currency has; `format_amount` is its inverse for responses.
"""

from __future__ import annotations

import re
from typing import Final

# ISO 4217 exponents. Currencies absent here are refused: a billing service
# must not guess how many decimals a currency has.
_ZERO_DECIMAL: Final = frozenset(
    "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF".split()
)
_THREE_DECIMAL: Final = frozenset("BHD IQD JOD KWD LYD OMR TND".split())
_TWO_DECIMAL: Final = frozenset(
    (
        "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BRL BSD "
        "BTN BWP BYN BZD CAD CDF CHF CNY COP CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB "
        "EUR FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD "
        "KES KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU "
        "MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR "
        "RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SYP SZL THB TJS "
        "TMT TOP TRY TTD TWD TZS UAH USD UYU UZS VES WST XCD YER ZAR ZMW ZWL"
    ).split()
)

# Used with fullmatch: `$` would also match before a final "\n", so "1.50\n"
# would be charged as 1.50.
_AMOUNT_RE: Final = re.compile(r"(0|[1-9][0-9]*)(?:\.([0-9]+))?", re.ASCII)


class MoneyError(ValueError):
    """A client-side mistake in an amount or currency; `code` is for the API."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def currency_exponent(currency: str) -> int:
    """Number of decimals of an ISO 4217 currency; raises MoneyError if unknown."""
    if currency in _TWO_DECIMAL:
        return 2
    if currency in _ZERO_DECIMAL:
        return 0
    if currency in _THREE_DECIMAL:
        return 3
    raise MoneyError("unknown_currency", f"unknown ISO 4217 currency {currency!r}")


def is_known_currency(currency: str) -> bool:
    return currency in _TWO_DECIMAL or currency in _ZERO_DECIMAL or currency in _THREE_DECIMAL


def parse_amount(value: str | int, currency: str) -> int:
    """Decimal string like "12.50" (or an integer of major units) -> minor units."""
    exponent = currency_exponent(currency)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise MoneyError("invalid_amount", "amount must be a decimal string such as \"12.50\"")
    text = str(value)
    match = _AMOUNT_RE.fullmatch(text)
    if match is None:
        raise MoneyError(
            "invalid_amount", "amount must be a positive decimal string such as \"12.50\""
        )
    whole, fraction = match.group(1), match.group(2) or ""
    if len(fraction) > exponent:
        raise MoneyError(
            "amount_precision",
            f"{currency} has {exponent} decimals; amount {text} has {len(fraction)}",
        )
    if len(whole) > 18:
        raise MoneyError("amount_too_large", "amount is too large")
    scale: int = 10**exponent
    minor_fraction = int(fraction.ljust(exponent, "0")) if exponent else 0
    return int(whole) * scale + minor_fraction


def format_amount(amount_minor: int, currency: str) -> str:
    """Minor units -> decimal string with exactly the currency's decimals."""
    exponent = currency_exponent(currency)
    sign = "-" if amount_minor < 0 else ""
    magnitude = abs(amount_minor)
    if exponent == 0:
        return f"{sign}{magnitude}"
    whole, fraction = divmod(magnitude, 10**exponent)
    return f"{sign}{whole}.{fraction:0{exponent}d}"
