"""Routes under /api/whatsapp."""
