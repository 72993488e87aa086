"""What WhatsApp users read: Spanish (Chile) by default, every text overridable."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict


class WhatsAppTexts(BaseModel):
    """User-facing messages; `{name}`, `{url}`, `{files}` are filled in when sent."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    greeting_named: str = "¡Hola, {name}!"
    greeting: str = "¡Hola!"
    registration: str = (
        "{greeting} No encontramos tu número de WhatsApp en Fizko. "
        "Para conversar con Fizko por aquí, regístrate en {url} y agrega este número "
        "a tu perfil."
    )
    no_active_company: str = (
        "{greeting} Tu cuenta de Fizko no tiene una empresa activa. "
        "Entra a {url} y selecciona una empresa para seguir por WhatsApp."
    )
    acknowledgement: str = (
        "{greeting} Recibimos tu mensaje. Te responderemos por aquí a la brevedad."
    )
    file_received: str = (
        "{greeting} Recibimos tu archivo ({files}). Lo revisaremos y te responderemos por aquí."
    )
    file_kinds: dict[str, str] = {
        "image": "imagen",
        "document": "documento",
        "audio": "audio",
        "video": "video",
        "sticker": "sticker",
    }
    file_default: str = "archivo"

    def greet(self, contact_name: str | None) -> str:
        first = (contact_name or "").strip().split(" ")[0]
        return self.greeting_named.format(name=first) if first else self.greeting

    @classmethod
    def load(cls, path: Path | None) -> WhatsAppTexts:
        """Defaults, with any keys of a JSON file (WHATSAPP_TEXTS_FILE) overriding them."""
        if path is None:
            return cls()
        overrides = json.loads(path.read_text(encoding="utf-8"))
        return cls.model_validate({**cls().model_dump(), **overrides})
