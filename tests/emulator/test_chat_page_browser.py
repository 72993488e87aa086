"""The chat page at `/` in a real browser: Debian's Chromium, headless, driven by Selenium.

A person plays a WhatsApp user: picks a phone number, types a message and sends it; the service's
answer (sent here through the Meta-proxy API) shows up in the same thread with its status ticks.
`scripts/ensure-browser.sh` installs /usr/bin/chromium and /usr/bin/chromedriver (scripts/test.sh
runs it); without them this test fails, it does not skip.

The emulator runs on this test's event loop, so every blocking WebDriver call goes through
`asyncio.to_thread`: the loop keeps serving the page's requests meanwhile.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from .conftest import PHONE_NUMBER_ID, RunningEmulator, WebhookReceiver

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_SECONDS = 10

# A user other than the page's default number: the test creates this conversation from the page.
PHONE = "+56987654321"
WA_ID = "56987654321"
NAME = "Ana Navegador"
TYPED = "Hola desde el navegador"
ANSWER = "¡Hola Ana! Te responde Fizko."
# The browser's time zone: the page shows times there, not in UTC.
TIME_ZONE = "America/Santiago"

T = TypeVar("T")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    """Headless Debian Chromium with its own profile under `tmp_path`; quit after the test."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: run ./scripts/ensure-browser.sh")
    options = webdriver.ChromeOptions()
    # Both paths given: Selenium Manager is skipped, so nothing is downloaded.
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,800",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(
        executable_path=str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log")
    )
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": TIME_ZONE})
        yield driver
    finally:
        driver.quit()


async def _call(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(fn, *args)


async def _wait_for(driver: WebDriver, condition: Callable[[WebDriver], T], what: str) -> T:
    """Poll `condition` in a worker thread until it is truthy (at most WAIT_SECONDS)."""
    wait = WebDriverWait(driver, WAIT_SECONDS, poll_frequency=0.1)
    return await _call(wait.until, condition, f"timed out waiting for {what}")


def _bubbles(driver: WebDriver, direction: str) -> list[dict[str, str]]:
    """The thread's bubbles of one direction: their text and status tick (class, title, glyph)."""
    found: list[dict[str, str]] = driver.execute_script(
        """
        return [...document.querySelectorAll("#thread .msg." + arguments[0])].map((b) => {
          const tick = b.querySelector(".tick");
          return {
            text: b.querySelector(".text")?.textContent ?? "",
            time: b.querySelector(".meta")?.firstChild?.textContent.trim() ?? "",
            status: tick?.title ?? "",
            tick_class: tick?.className ?? "",
            tick: tick?.textContent ?? "",
          };
        });
        """,
        direction,
    )
    return found


@pytest.mark.timeout(60)
async def test_a_user_types_in_the_chat_page_and_sees_both_sides(
    kapso_hooked: RunningEmulator,
    receiver: WebhookReceiver,
    browser: webdriver.Chrome,
    tmp_path: Path,
) -> None:
    kapso = kapso_hooked
    await _call(browser.get, kapso.url + "/")
    await _wait_for(
        browser,
        lambda d: "Kapso emulator" in d.title and d.find_element(By.ID, "title").text,
        "page",
    )

    # Play a new user: a phone number and a WhatsApp name, then type and send.
    phone_box = await _call(browser.find_element, By.ID, "phone")
    await _call(phone_box.clear)
    await _call(phone_box.send_keys, PHONE)
    name_box = await _call(browser.find_element, By.ID, "name")
    await _call(name_box.send_keys, NAME)
    text_box = await _call(browser.find_element, By.ID, "text")
    await _call(text_box.click)  # leaving #phone fires its `change`: the page switches thread
    await _call(text_box.send_keys, TYPED)
    await _call((await _call(browser.find_element, By.ID, "send")).click)

    inbound = await _wait_for(
        browser, lambda d: [b for b in _bubbles(d, "inbound") if b["text"] == TYPED], "own message"
    )
    assert len(inbound) == 1
    assert inbound[0]["status"] == "received"
    assert await _call(lambda: browser.find_element(By.ID, "text").get_attribute("value")) == ""
    current = await _wait_for(
        browser,
        lambda d: d.find_elements(By.CSS_SELECTOR, "#convs li.current"),
        "the conversation in the list",
    )
    assert f"{NAME} · {PHONE}" in await _call(lambda: current[0].text)
    assert PHONE in await _call(lambda: browser.find_element(By.ID, "title").text)

    # The emulator recorded the inbound message and delivered Kapso's webhook for it.
    chat = (await kapso.client.get("/_emulator/chat", params={"phone": PHONE})).json()
    assert [(m["direction"], m["content"]) for m in chat["thread"]] == [("inbound", TYPED)]
    sent_at = datetime.fromisoformat(chat["thread"][0]["at"]).astimezone(ZoneInfo(TIME_ZONE))
    assert inbound[0]["time"] == sent_at.strftime("%H:%M")
    await kapso.drain()
    [delivery] = await kapso.deliveries("whatsapp.message.received")
    assert delivery["state"] == "delivered"
    payload = json.loads(delivery["body"])
    assert payload["message"]["from"] == WA_ID
    assert payload["message"]["text"]["body"] == TYPED
    assert payload["conversation"]["kapso"]["contact_name"] == NAME
    assert any(TYPED.encode() in r.body for r in receiver.requests)

    # The service answers through the Meta proxy; the page shows it with its status ticks.
    response = await kapso.client.post(
        kapso.proxy(f"{PHONE_NUMBER_ID}/messages"),
        json={
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": WA_ID,
            "type": "text",
            "text": {"body": ANSWER},
        },
    )
    assert response.status_code == 200, response.text
    await kapso.drain()
    outbound = await _wait_for(
        browser,
        lambda d: [b for b in _bubbles(d, "outbound") if b["text"] == ANSWER and b["status"]],
        "the service's answer with a status",
    )
    assert outbound[0]["status"] in {"sent", "delivered", "read"}
    read = await _wait_for(
        browser,
        lambda d: [b for b in _bubbles(d, "outbound") if b["status"] == "read"],
        "the answer's read ticks",
    )
    assert read[0]["tick"] == "✓✓"
    assert read[0]["tick_class"] == "tick read"
    assert [b["text"] for b in await _call(_bubbles, browser, "inbound")] == [TYPED]

    screenshot = tmp_path / "chat-page.png"
    assert await _call(browser.save_screenshot, str(screenshot))
    data = screenshot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 10_000

    # The page's script ran without errors (a missing favicon is not the page's fault).
    logs = await _call(browser.get_log, "browser")
    errors = [e for e in logs if e["level"] == "SEVERE" and "favicon.ico" not in e["message"]]
    assert errors == []
