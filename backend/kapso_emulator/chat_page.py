"""The chat page at `/`: play a WhatsApp user and watch the service answer."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from jinja2 import Environment, select_autoescape

from kapso_emulator.deps import EmulatorDep

router = APIRouter(include_in_schema=False)

_environment = Environment(autoescape=select_autoescape(default=True))


def _template_source() -> str:
    return (resources.files("kapso_emulator") / "templates" / "chat.html").read_text("utf-8")


@router.get("/", response_class=HTMLResponse)
async def chat_page(emulator: EmulatorDep, phone: str = "+56912345678") -> HTMLResponse:
    """The page; its script polls `/_emulator/chat` every second."""
    template = _environment.from_string(_template_source())
    phone_config = emulator.config.phone_numbers[0]
    html = template.render(
        business=phone_config.verified_name,
        business_phone=phone_config.display_phone_number,
        default_phone=phone,
        webhook_url=emulator.config.webhook_url or "(none: set --webhook-url)",
    )
    return HTMLResponse(html)
