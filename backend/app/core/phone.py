"""Phone numbers in one canonical form (E.164), whatever way a person typed them."""

from __future__ import annotations

import phonenumbers

DEFAULT_REGION = "CL"


class InvalidPhoneNumberError(ValueError):
    """The text cannot be read as a phone number."""


def normalize_phone(raw: str, default_region: str = DEFAULT_REGION) -> str:
    """Return the E.164 form: `+56 9 1234 5678`, `56912345678`, `+56912345678` → `+56912345678`.

    Numbers without a country code are read in `default_region` (Chile); digits that start
    with a country code but lack the `+` (as WhatsApp sends them) are recognised too.
    """
    text = raw.strip() if raw else ""
    if not text:
        raise InvalidPhoneNumberError("phone number is empty")
    digits = "".join(ch for ch in text if ch.isdigit())
    candidates = [text]
    if not text.startswith("+") and digits:
        # WhatsApp ids and Kapso's `from` are international digits without the plus.
        candidates.append("+" + digits)
    parsed_numbers = []
    for candidate in candidates:
        try:
            parsed_numbers.append(phonenumbers.parse(candidate, default_region))
        except phonenumbers.NumberParseException:
            continue
    # Prefer a reading that is a valid number; test and unallocated numbers are only "possible".
    for check in (phonenumbers.is_valid_number, phonenumbers.is_possible_number):
        for parsed in parsed_numbers:
            if check(parsed):
                return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    raise InvalidPhoneNumberError(f"not a possible phone number ({len(digits)} digits)")


def try_normalize_phone(raw: str | None, default_region: str = DEFAULT_REGION) -> str | None:
    """`normalize_phone`, or None when the text is not a phone number."""
    if raw is None:
        return None
    try:
        return normalize_phone(raw, default_region)
    except InvalidPhoneNumberError:
        return None


def whatsapp_digits(e164: str) -> str:
    """The form WhatsApp's `to` field takes: digits only, no `+`."""
    return "".join(ch for ch in e164 if ch.isdigit())
