"""Cross-cutting pieces: settings, logging, security."""
