"""Storage: every query, on PostgreSQL, in one store per job (inbox, outbound, conversations,
directory — gathered in `stores.Stores`); their records and errors."""

from app.repositories.errors import StoreConstraintError, StoreError, StoreUnavailableError

__all__ = ["StoreConstraintError", "StoreError", "StoreUnavailableError"]
