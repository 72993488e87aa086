"""The `kapso-emulator` command (serve and `say`), the chat page and the state file."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kapso_emulator.app import EmulatorApp, create_app
from kapso_emulator.cli import build_parser, config_from_args

from .conftest import USER, RunningEmulator, make_config, serve

COMMAND = str(Path(sys.executable).parent / "kapso-emulator")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def emulator_process(tmp_path: Path) -> Iterator[str]:
    """`kapso-emulator` started as people start it, configured through environment variables."""
    port = _free_port()
    env = {
        **os.environ,
        "KAPSO_EMULATOR_PORT": str(port),
        "KAPSO_EMULATOR_STATE_FILE": str(tmp_path / "state.json"),
        "KAPSO_EMULATOR_TIME_SCALE": "0.01",
    }
    process = subprocess.Popen(
        [COMMAND], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/_emulator/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("kapso-emulator did not start")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.timeout(60)
def test_say_sends_an_inbound_message_to_a_running_emulator(emulator_process: str) -> None:
    result = subprocess.run(
        [COMMAND, "say", USER, "Hola", "--name", "María", "--url", emulator_process],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert '"id": "wamid.' in result.stdout
    chat = httpx.get(f"{emulator_process}/_emulator/chat", params={"phone": USER}).json()
    assert chat["conversations"][0]["name"] == "María"
    assert [m["content"] for m in chat["thread"]] == ["Hola"]


@pytest.mark.timeout(30)
def test_say_reports_an_unreachable_emulator() -> None:
    result = subprocess.run(
        [COMMAND, "say", USER, "Hola", "--url", f"http://127.0.0.1:{_free_port()}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert result.returncode == 2
    assert "cannot reach" in result.stderr


def test_options_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAPSO_EMULATOR_WEBHOOK_URL", "http://127.0.0.1:8089/api/whatsapp/webhook")
    monkeypatch.setenv("KAPSO_WEBHOOK_SECRET", "from-the-service-env")
    monkeypatch.setenv("KAPSO_EMULATOR_PORT", "9999")
    monkeypatch.setenv("KAPSO_EMULATOR_WEBHOOK_CONCURRENCY", "7")

    args = build_parser().parse_args(["serve", "--time-scale", "0.5", "--batching"])
    config = config_from_args(args)

    assert args.port == 9999
    assert args.webhook_concurrency == 7
    assert config.webhook_url == "http://127.0.0.1:8089/api/whatsapp/webhook"
    assert config.webhook_secret == "from-the-service-env"
    assert config.time_scale == 0.5
    assert config.batching is True
    assert config.public_url == "http://127.0.0.1:9999"


@pytest.mark.timeout(30)
async def test_chat_page_renders_and_its_data_shows_both_sides(kapso: RunningEmulator) -> None:
    await kapso.inbound(text="Hola", name="María")
    await kapso.send_text("¡Hola María!")
    await kapso.drain()

    page = await kapso.client.get("/")
    chat = (await kapso.client.get("/_emulator/chat", params={"phone": USER})).json()

    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert 'id="compose"' in page.text
    assert [(m["direction"], m["content"], m["status"]) for m in chat["thread"]] == [
        ("inbound", "Hola", "received"),
        ("outbound", "¡Hola María!", "read"),
    ]


@pytest.mark.timeout(30)
async def test_state_survives_a_restart_with_a_state_file(tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    first = create_app(make_config(), state_file)
    assert isinstance(first, EmulatorApp)
    async with serve(first) as url, httpx.AsyncClient(base_url=url) as client:
        await client.post("/_emulator/inbound", json={"phone": USER, "text": "Hola"})
        await first.emulator.webhooks.cancel_all()

    second = create_app(make_config(), state_file)
    async with serve(second) as url, httpx.AsyncClient(base_url=url) as client:
        chat = (await client.get("/_emulator/chat", params={"phone": USER})).json()

    assert [m["content"] for m in chat["thread"]] == ["Hola"]
