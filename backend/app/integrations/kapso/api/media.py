"""Media (Meta proxy): upload, inspect, download and delete files."""

from __future__ import annotations

from typing import Final

from app.integrations.kapso.api.base import BaseAPI, KapsoHTTP, parse_model
from app.integrations.kapso.exceptions import (
    KapsoConfigurationError,
    KapsoRequestValidationError,
)
from app.integrations.kapso.models import DeleteResult, MediaInfo, MediaUploadResult

_MB: Final = 1024 * 1024
# WhatsApp's size limits by MIME family; WEBP is only accepted as a sticker.
_SIZE_LIMITS: Final = {
    "image/webp": 500 * 1024,
    "image": 5 * _MB,
    "video": 16 * _MB,
    "audio": 16 * _MB,
}
_DOCUMENT_LIMIT: Final = 100 * _MB


def media_size_limit(mime_type: str) -> int:
    """Largest file WhatsApp accepts for a MIME type."""
    mime = mime_type.lower()
    if mime in _SIZE_LIMITS:
        return _SIZE_LIMITS[mime]
    return _SIZE_LIMITS.get(mime.split("/", 1)[0], _DOCUMENT_LIMIT)


class MediaAPI(BaseAPI):
    """Files stored with WhatsApp for sending, and files users sent us."""

    def __init__(self, http: KapsoHTTP, default_phone_number_id: str | None) -> None:
        super().__init__(http)
        self._default_phone_number_id = default_phone_number_id

    def _sender(self, phone_number_id: str | None) -> str:
        sender = phone_number_id or self._default_phone_number_id
        if not sender:
            raise KapsoConfigurationError(
                "phone_number_id is required (no default business number configured)"
            )
        return sender

    async def upload(
        self,
        content: bytes,
        *,
        mime_type: str,
        filename: str = "file",
        phone_number_id: str | None = None,
    ) -> MediaUploadResult:
        """Upload a file; the returned id can be sent with `send_media(media_id=...)`."""
        if not content:
            raise KapsoRequestValidationError("file", "must not be empty")
        limit = media_size_limit(mime_type)
        if len(content) > limit:
            raise KapsoRequestValidationError(
                "file", f"is {len(content)} bytes; WhatsApp allows {limit} for {mime_type}"
            )
        # An upload repeated after a failure only leaves an unused media object: safe to retry.
        data = await self._http.request_json(
            "POST",
            self._http.proxy_url(f"{self._sender(phone_number_id)}/media"),
            files={"file": (filename, content, mime_type)},
            data={"messaging_product": "whatsapp", "type": mime_type},
        )
        return parse_model(MediaUploadResult, data)

    async def get(self, media_id: str, *, phone_number_id: str | None = None) -> MediaInfo:
        """A media object's metadata, with a short-lived `download_url`."""
        data = await self._http.request_json(
            "GET",
            self._http.proxy_url(media_id),
            params={"phone_number_id": self._sender(phone_number_id)},
        )
        return parse_model(MediaInfo, data)

    async def download(self, media_id: str, *, phone_number_id: str | None = None) -> bytes:
        """The file's bytes (fetches a fresh download URL first: they expire in minutes)."""
        info = await self.get(media_id, phone_number_id=phone_number_id)
        url = info.download_url or info.url
        if not url:
            raise KapsoRequestValidationError("media_id", "Kapso gave no download URL")
        return await self._http.download(url)

    async def delete(self, media_id: str, *, phone_number_id: str | None = None) -> bool:
        data = await self._http.request_json(
            "DELETE",
            self._http.proxy_url(media_id),
            params={"phone_number_id": self._sender(phone_number_id)},
        )
        return data is None or parse_model(DeleteResult, data).success
