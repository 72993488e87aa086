"""One module per group of WhatsApp routes."""
