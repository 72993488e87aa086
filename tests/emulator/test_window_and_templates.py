"""The 24-hour customer-service window and message templates (by WABA id)."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import PHONE_NUMBER_ID, USER_WA_ID, WABA_ID, RunningEmulator

pytestmark = pytest.mark.timeout(30)


def _template_send(
    name: str, language: str = "es", params: list[str] | None = None
) -> dict[str, Any]:
    template: dict[str, Any] = {"name": name, "language": {"code": language}}
    if params is not None:
        template["components"] = [
            {"type": "body", "parameters": [{"type": "text", "text": p} for p in params]}
        ]
    return {
        "messaging_product": "whatsapp",
        "to": USER_WA_ID,
        "type": "template",
        "template": template,
    }


async def _create_template(
    kapso: RunningEmulator, name: str = "recordatorio_f29"
) -> dict[str, Any]:
    response = await kapso.client.post(
        kapso.proxy(f"{WABA_ID}/message_templates"),
        json={
            "name": name,
            "language": "es",
            "category": "UTILITY",
            "parameter_format": "POSITIONAL",
            "components": [{"type": "BODY", "text": "Hola {{1}}, tu F29 vence el {{2}}."}],
        },
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_free_form_without_inbound_is_131047(kapso: RunningEmulator) -> None:
    response = await kapso.send_text("Hola")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == 131047
    assert error["type"] == "OAuthException"
    assert "fbtrace_id" in error
    assert (await kapso.client.get("/_emulator/outbox")).json()["data"] == []


async def test_window_closes_24_hours_after_the_last_inbound(kapso: RunningEmulator) -> None:
    await kapso.inbound()
    assert (await kapso.send_text()).status_code == 200

    await kapso.client.post("/_emulator/clock/advance", json={"hours": 23})
    assert (await kapso.send_text()).status_code == 200
    await kapso.client.post("/_emulator/clock/advance", json={"hours": 2})
    late = await kapso.send_text()

    assert late.status_code == 400
    assert late.json()["error"]["code"] == 131047


async def test_approved_template_passes_outside_the_window(kapso: RunningEmulator) -> None:
    await _create_template(kapso)

    response = await kapso.client.post(
        kapso.proxy(f"{PHONE_NUMBER_ID}/messages"),
        json=_template_send("recordatorio_f29", params=["María", "20 de diciembre"]),
    )

    assert response.status_code == 200, response.text
    assert response.json()["messages"][0]["message_status"] == "accepted"
    outbox = (await kapso.client.get("/_emulator/outbox")).json()["data"]
    assert outbox[0]["content"] == "Hola María, tu F29 vence el 20 de diciembre."


async def test_seeded_hello_world_template_can_be_sent(kapso: RunningEmulator) -> None:
    response = await kapso.client.post(
        kapso.proxy(f"{PHONE_NUMBER_ID}/messages"), json=_template_send("hello_world", "en_US")
    )

    assert response.status_code == 200, response.text


async def test_only_approved_templates_can_be_sent(kapso: RunningEmulator) -> None:
    await kapso.configure(template_approval="pending")
    created = await _create_template(kapso)
    assert created["status"] == "PENDING"

    pending = await kapso.client.post(
        kapso.proxy(f"{PHONE_NUMBER_ID}/messages"),
        json=_template_send("recordatorio_f29", params=["a", "b"]),
    )
    missing = await kapso.client.post(
        kapso.proxy(f"{PHONE_NUMBER_ID}/messages"), json=_template_send("no_such_template")
    )
    await kapso.client.post(
        f"/_emulator/templates/{created['id']}/status", json={"status": "APPROVED"}
    )
    approved = await kapso.client.post(
        kapso.proxy(f"{PHONE_NUMBER_ID}/messages"),
        json=_template_send("recordatorio_f29", params=["a", "b"]),
    )

    assert pending.status_code == 400
    assert pending.json()["error"]["code"] == 132001
    assert missing.json()["error"]["code"] == 132001
    assert approved.status_code == 200


async def test_template_parameter_count_must_match(kapso: RunningEmulator) -> None:
    await _create_template(kapso)

    response = await kapso.client.post(
        kapso.proxy(f"{PHONE_NUMBER_ID}/messages"),
        json=_template_send("recordatorio_f29", params=["solo uno"]),
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == 132000


async def test_templates_list_create_get_delete(kapso: RunningEmulator) -> None:
    created = await _create_template(kapso)
    assert set(created) == {"id", "status", "category"}
    assert created == {"id": created["id"], "status": "APPROVED", "category": "UTILITY"}

    listed = await kapso.client.get(
        kapso.proxy(f"{WABA_ID}/message_templates"), params={"name": "recordatorio"}
    )
    fetched = await kapso.client.get(kapso.proxy(created["id"]))
    duplicate = await kapso.client.post(
        kapso.proxy(f"{WABA_ID}/message_templates"),
        json={
            "name": "recordatorio_f29",
            "language": "es",
            "category": "UTILITY",
            "components": [{"type": "BODY", "text": "x"}],
        },
    )
    bad_name = await kapso.client.post(
        kapso.proxy(f"{WABA_ID}/message_templates"),
        json={
            "name": "Bad Name",
            "language": "es",
            "category": "UTILITY",
            "components": [{"type": "BODY", "text": "x"}],
        },
    )
    deleted = await kapso.client.delete(
        kapso.proxy(f"{WABA_ID}/message_templates"), params={"name": "recordatorio_f29"}
    )
    after = await kapso.client.get(kapso.proxy(f"{WABA_ID}/message_templates"))

    body = listed.json()
    assert [t["name"] for t in body["data"]] == ["recordatorio_f29"]
    assert set(body["data"][0]) >= {"id", "name", "language", "status", "category", "components"}
    assert "cursors" in body["paging"]
    assert fetched.json()["name"] == "recordatorio_f29"
    assert duplicate.status_code == 400
    assert bad_name.status_code == 400
    assert deleted.json() == {"success": True}
    assert [t["name"] for t in after.json()["data"]] == ["hello_world"]


async def test_window_mode_fail_status_accepts_then_fails(kapso_hooked: RunningEmulator) -> None:
    kapso = kapso_hooked
    await kapso.configure(window_mode="fail_status")

    response = await kapso.send_text("Hola")
    await kapso.drain()

    assert response.status_code == 200
    failed = await kapso.deliveries("whatsapp.message.failed")
    assert len(failed) == 1
    assert '"code":131047' in failed[0]["body"]
