"""Constants and payload builders shared by the Kapso client's unit tests."""

from __future__ import annotations

BASE = "https://kapso.test"
PROXY = f"{BASE}/meta/whatsapp/v24.0"
PLATFORM = f"{BASE}/platform/v1"
LEGACY = "https://legacy.kapso.test/api/v1"
API_KEY = "test-key-123"
PHONE_NUMBER_ID = "1029384756"
WABA_ID = "waba-1"


class SleepRecorder:
    """Stands in for asyncio.sleep: records the delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def sent_response(wamid: str = "wamid.OUT1", wa_id: str = "56912345678") -> dict[str, object]:
    return {
        "messaging_product": "whatsapp",
        "contacts": [{"input": wa_id, "wa_id": wa_id}],
        "messages": [{"id": wamid}],
    }


def conversation_record(
    conversation_id: str = "conv-1", phone: str = "+56912345678"
) -> dict[str, object]:
    return {
        "id": conversation_id,
        "phone_number": phone,
        "phone_number_id": PHONE_NUMBER_ID,
        "status": "active",
        "last_active_at": "2026-11-25T12:00:00Z",
        "metadata": {},
        "kapso": {"contact_name": "María González", "last_inbound_at": "2026-11-25T12:00:00Z"},
    }
