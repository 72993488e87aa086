"""Typed store errors: a failed lookup is an error, never a "not found"."""

from __future__ import annotations


class StoreError(Exception):
    """The store failed to answer or rejected the operation."""


class StoreUnavailableError(StoreError):
    """The store could not be reached or is temporarily failing; retrying later may work."""


class StoreConflictError(StoreUnavailableError):
    """Two transactions met (a deadlock, a serialization failure): running it again works."""


class StoreConstraintError(StoreError):
    """The store refused the data: a constraint, a reference or a value was invalid."""
