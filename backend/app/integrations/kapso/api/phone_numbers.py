"""Business phone numbers connected to the project (Platform API v1)."""

from __future__ import annotations

from app.integrations.kapso.api.base import BaseAPI, parse_model
from app.integrations.kapso.models import DataEnvelope, OffsetPage, PhoneNumber


class PhoneNumbersAPI(BaseAPI):
    """The project's WhatsApp numbers ("WhatsApp configs")."""

    async def list(self, *, page: int = 1, per_page: int = 20) -> OffsetPage[PhoneNumber]:
        data = await self._http.request_json(
            "GET",
            self._http.platform_url("whatsapp/phone_numbers"),
            params={"page": page, "per_page": per_page},
        )
        return parse_model(OffsetPage[PhoneNumber], data)

    async def get(self, phone_number_id: str) -> PhoneNumber:
        data = await self._http.request_json(
            "GET", self._http.platform_url(f"whatsapp/phone_numbers/{phone_number_id}")
        )
        return parse_model(DataEnvelope[PhoneNumber], data).data
