"""`kapso-emulator`: run the emulator, or `kapso-emulator say +569... "Hola"` to play a user."""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import httpx
import uvicorn

from kapso_emulator.app import create_app
from kapso_emulator.config import (
    DEFAULT_PHONE_NUMBER_ID,
    DEFAULT_PORT,
    DEFAULT_WABA_ID,
    DEFAULT_WEBHOOK_CONCURRENCY,
    DEFAULT_WEBHOOK_SECRET,
    EmulatorConfig,
    PayloadVersion,
    PhoneNumberConfig,
    TemplateApproval,
    WindowMode,
)

ENV = "KAPSO_EMULATOR_"


def _env(name: str, *fallbacks: str, default: str | None = None) -> str | None:
    """`KAPSO_EMULATOR_<name>`, then the service's own variables (so one `.env` serves both)."""
    for key in (ENV + name, *fallbacks):
        value = os.environ.get(key)
        if value:
            return value
    return default


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser("serve", help="run the emulator (the default command)")
    serve.add_argument("--host", default=_env("HOST", default="127.0.0.1"))
    serve.add_argument(
        "--port", type=int, default=int(_env("PORT", default=str(DEFAULT_PORT)) or 0)
    )
    serve.add_argument(
        "--webhook-url", default=_env("WEBHOOK_URL"), help="where webhooks are delivered"
    )
    serve.add_argument(
        "--webhook-secret",
        default=_env("WEBHOOK_SECRET", "KAPSO_WEBHOOK_SECRET", default=DEFAULT_WEBHOOK_SECRET),
        help="HMAC key of X-Webhook-Signature (env falls back to KAPSO_WEBHOOK_SECRET)",
    )
    serve.add_argument(
        "--payload-version",
        choices=[v.value for v in PayloadVersion],
        default=_env("PAYLOAD_VERSION", default="v2"),
    )
    serve.add_argument(
        "--batching",
        action=argparse.BooleanOptionalAction,
        default=(_env("BATCHING", default="false") or "").lower() in ("1", "true", "yes"),
        help="buffer whatsapp.message.received into batches",
    )
    serve.add_argument(
        "--webhook-concurrency",
        type=int,
        default=int(
            _env("WEBHOOK_CONCURRENCY", default=str(DEFAULT_WEBHOOK_CONCURRENCY))
            or DEFAULT_WEBHOOK_CONCURRENCY
        ),
        help="webhook requests in flight at once (and connections to the service)",
    )
    serve.add_argument("--state-file", default=_env("STATE_FILE"), help="persist state as JSON")
    serve.add_argument(
        "--time-scale",
        type=float,
        default=float(_env("TIME_SCALE", default="1.0") or 1.0),
        help="multiply every Kapso delay (retries, statuses, batch window) by this",
    )
    serve.add_argument("--api-key", default=_env("API_KEY"), help="accept only this API key")
    serve.add_argument(
        "--rate-limit", type=int, default=int(_env("RATE_LIMIT", default="1000") or 1000)
    )
    serve.add_argument(
        "--template-approval",
        choices=[v.value for v in TemplateApproval],
        default=_env("TEMPLATE_APPROVAL", default="auto"),
    )
    serve.add_argument(
        "--window-mode",
        choices=[v.value for v in WindowMode],
        default=_env("WINDOW_MODE", default="reject"),
        help="24-hour window: reject the send, fail it by status event, or off",
    )
    serve.add_argument(
        "--phone-number-id",
        default=_env("PHONE_NUMBER_ID", "KAPSO_PHONE_NUMBER_ID", default=DEFAULT_PHONE_NUMBER_ID),
    )
    serve.add_argument(
        "--waba-id", default=_env("WABA_ID", "KAPSO_WABA_ID", default=DEFAULT_WABA_ID)
    )
    serve.add_argument("--public-url", default=_env("PUBLIC_URL"), help="base of download URLs")
    serve.add_argument("--log-level", default=_env("LOG_LEVEL", default="info"))


def _say_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    say = sub.add_parser("say", help="send a message as a WhatsApp user to a running emulator")
    say.add_argument("phone", help="the user's number, e.g. +56912345678")
    say.add_argument("text", nargs="?", default=None, help="message text (caption for media)")
    say.add_argument("--name", default=None, help="the user's WhatsApp profile name")
    say.add_argument("--type", default="text", choices=["text", "image", "document", "audio"])
    say.add_argument("--file", default=None, help="a file to send as the image/document")
    say.add_argument(
        "--url",
        default=_env("URL", default=f"http://127.0.0.1:{_env('PORT', default=str(DEFAULT_PORT))}"),
        help="the running emulator",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kapso-emulator", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    _serve_parser(sub)
    _say_parser(sub)
    return parser


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    public_url = args.public_url or f"http://{args.host}:{args.port}"
    return EmulatorConfig(
        webhook_url=args.webhook_url,
        webhook_secret=args.webhook_secret,
        payload_version=PayloadVersion(args.payload_version),
        batching=args.batching,
        time_scale=args.time_scale,
        api_key=args.api_key,
        rate_limit_per_minute=args.rate_limit,
        template_approval=TemplateApproval(args.template_approval),
        window_mode=WindowMode(args.window_mode),
        public_url=public_url,
        phone_numbers=[
            PhoneNumberConfig(
                phone_number_id=args.phone_number_id, business_account_id=args.waba_id
            )
        ],
    )


def serve(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    app = create_app(
        config,
        Path(args.state_file) if args.state_file else None,
        webhook_concurrency=args.webhook_concurrency,
    )
    print(
        f"Kapso emulator on http://{args.host}:{args.port} (chat page at /, control API at "
        f"/_emulator, docs at /docs); webhooks → {config.webhook_url or 'nowhere'}",
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def say(args: argparse.Namespace) -> int:
    body: dict[str, object] = {"phone": args.phone, "type": args.type}
    if args.text:
        body["text" if args.type == "text" else "caption"] = args.text
    if args.name:
        body["name"] = args.name
    if args.file:
        path = Path(args.file)
        body["media_base64"] = base64.b64encode(path.read_bytes()).decode("ascii")
        body["filename"] = path.name
    try:
        response = httpx.post(f"{args.url.rstrip('/')}/_emulator/inbound", json=body, timeout=10)
    except httpx.HTTPError as err:
        print(f"cannot reach the emulator at {args.url}: {err}", file=sys.stderr)
        return 2
    if response.status_code >= 400:
        print(f"the emulator refused ({response.status_code}): {response.text}", file=sys.stderr)
        return 1
    data = response.json()
    print(json.dumps({"id": data["message"]["id"], "conversation_id": data["conversation_id"]}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `uv run kapso-emulator`."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments or arguments[0] not in ("serve", "say", "-h", "--help"):
        arguments.insert(0, "serve")
    args = build_parser().parse_args(arguments)
    if args.command == "say":
        return say(args)
    return serve(args)


if __name__ == "__main__":
    raise SystemExit(main())
