"""Logging set-up, and helpers that keep personal data out of logs above DEBUG."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str = "INFO") -> None:
    """Route the service's logs to stderr with one format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request URL at INFO; URLs can carry phone numbers as query filters.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def mask_phone(phone: str | None) -> str:
    """Keep only the last four digits of a phone number: `+56912345678` → `***5678`."""
    if not phone:
        return "<none>"
    digits = [c for c in phone if c.isdigit()]
    if len(digits) <= 4:
        return "***"
    return "***" + "".join(digits[-4:])
