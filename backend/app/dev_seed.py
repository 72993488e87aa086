"""`uv run python -m app.dev_seed`: a demo user for local development (idempotent).

Seeds +56912345678 (María González) working in "Demo SpA" into the configured store, so the
local flow can be tried at once: `uv run kapso-emulator say +56912345678 "Hola"`.
"""

from __future__ import annotations

import asyncio

from app.core.settings import get_settings
from app.repositories.factory import create_whatsapp_repository

DEMO_PHONE = "+56912345678"
DEMO_NAME = "María González"
DEMO_COMPANY = "Demo SpA"
DEMO_RUT = "76.123.456-7"


async def seed() -> str:
    repository = await create_whatsapp_repository(get_settings())
    try:
        profile = await repository.find_profile_by_phone(DEMO_PHONE)
        if profile is None:
            profile = await repository.create_profile(phone=DEMO_PHONE, full_name=DEMO_NAME)
        if await repository.get_active_company(profile.id) is None:
            company = await repository.create_company(business_name=DEMO_COMPANY, rut=DEMO_RUT)
            await repository.create_session(user_id=profile.id, company_id=company.id)
        store = repository.backend_name
        return f"Demo user {DEMO_NAME} ({DEMO_PHONE}) in {DEMO_COMPANY}, stored in {store}"
    finally:
        await repository.aclose()


def main() -> None:
    print(asyncio.run(seed()))


if __name__ == "__main__":
    main()
