"""Phone numbers normalise to one E.164 form however they were typed."""

from __future__ import annotations

import pytest

from app.core.phone import (
    InvalidPhoneNumberError,
    normalize_phone,
    try_normalize_phone,
    whatsapp_digits,
)


@pytest.mark.parametrize(
    "raw",
    [
        "+56 9 1234 5678",
        "56912345678",
        "+56912345678",
        "912345678",
        "0056912345678",
        "+56-9-1234-5678",
    ],
)
def test_chilean_mobile_forms_are_one_number(raw: str) -> None:
    assert normalize_phone(raw) == "+56912345678"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+1 415 555 0100", "+14155550100"),
        ("14155550100", "+14155550100"),
        ("+56 2 2345 6789", "+56223456789"),
    ],
)
def test_other_numbers(raw: str, expected: str) -> None:
    assert normalize_phone(raw) == expected


@pytest.mark.parametrize("raw", ["", "   ", "abc", "12", "+"])
def test_not_a_phone_number(raw: str) -> None:
    with pytest.raises(InvalidPhoneNumberError):
        normalize_phone(raw)
    assert try_normalize_phone(raw) is None


def test_whatsapp_digits() -> None:
    assert whatsapp_digits("+56912345678") == "56912345678"
    assert try_normalize_phone(None) is None
