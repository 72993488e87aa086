"""The Kapso emulator as the benchmark runs it, plus precise timings of what it saw.

`uvicorn bench.emulator_server:create_app --factory`, configured by BENCH_EMULATOR_* variables.
The control API's outbox gives times to the second; `/_bench/messages` gives every inbound and
outbound message with its exact time on the emulator's clock, and the inbound message an
outbound reply quotes, so reply latency is measured on one clock.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI

from bench.common import KAPSO_API_KEY, PHONE_NUMBER_ID, WABA_ID, WEBHOOK_SECRET
from kapso_emulator.app import EmulatorApp
from kapso_emulator.app import create_app as create_emulator
from kapso_emulator.config import EmulatorConfig, PhoneNumberConfig, StatusDelays


def create_app() -> FastAPI:
    webhook_url = os.environ.get("BENCH_EMULATOR_WEBHOOK_URL") or None
    config = EmulatorConfig(
        webhook_url=webhook_url,
        webhook_secret=WEBHOOK_SECRET,
        api_key=KAPSO_API_KEY,
        # Kapso's real limits would throttle the benchmark, not measure it.
        rate_limit_per_minute=1_000_000_000,
        # Every accepted send comes back as sent (at once), delivered (1 s) and read (3 s)
        # status webhooks, as with Kapso: real load on the service, so it stays in.
        status_delays=StatusDelays(sent=0.0, delivered=1.0, read=3.0),
        phone_numbers=[
            PhoneNumberConfig(phone_number_id=PHONE_NUMBER_ID, business_account_id=WABA_ID)
        ],
    )
    app = create_emulator(config)
    assert isinstance(app, EmulatorApp)
    emulator_app = app

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/_bench/messages")
    async def messages(since: float = 0.0) -> dict[str, Any]:
        """Every message (recorded at `since` or later, a Unix time): id, direction,
        recipient/sender, exact time, quoted message."""
        state = emulator_app.emulator.state
        return {
            "data": [
                {
                    "id": message.id,
                    "direction": message.direction.value,
                    "wa_id": message.user_wa_id,
                    "at": message.timestamp.timestamp(),
                    "reply_to": (message.context or {}).get("id"),
                    "callback": message.biz_opaque_callback_data,
                }
                for message in state.messages.values()
                if message.timestamp.timestamp() >= since
            ],
            "pending_tasks": emulator_app.emulator.webhooks.pending,
        }

    return app
