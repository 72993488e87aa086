"""The WhatsApp services; `authenticate_user_by_whatsapp` is the seed's entry point."""

from app.services.whatsapp.auth import authenticate_user_by_whatsapp

__all__ = ["authenticate_user_by_whatsapp"]
