"""Fizko's WhatsApp integration over Kapso."""
