"""Storage: the `WhatsAppRepository` interface, its models and errors, and the factory."""

from app.repositories.errors import StoreConstraintError, StoreError, StoreUnavailableError
from app.repositories.factory import create_whatsapp_repository, resolve_store_backend
from app.repositories.whatsapp import WhatsAppRepository

__all__ = [
    "StoreConstraintError",
    "StoreError",
    "StoreUnavailableError",
    "WhatsAppRepository",
    "create_whatsapp_repository",
    "resolve_store_backend",
]
