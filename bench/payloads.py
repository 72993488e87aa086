"""Pre-generated signed v2 `whatsapp.message.received` deliveries, as Kapso sends them.

Every delivery has its own wamid, idempotency key and signature, so none is a duplicate and
the service does its full work for each. They are built before the load starts, so the load
generator only copies bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import PHONE_NUMBER_ID, WEBHOOK_SECRET

EVENT = "whatsapp.message.received"
TEXT = "Hola, ¿cuánto IVA debo pagar este mes?"


@dataclass(frozen=True)
class Sender:
    """A WhatsApp user and the Kapso conversation they write on."""

    phone: str  # E.164
    conversation_id: str
    name: str = "María González"


def sign(body: bytes, secret: str = WEBHOOK_SECRET) -> str:
    """Kapso's X-Webhook-Signature: hex HMAC-SHA256 of the raw body."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def message_received(sender: Sender, wamid: str, text: str = TEXT) -> dict[str, object]:
    """A v2 `whatsapp.message.received` body for a text message (Kapso's shape)."""
    digits = sender.phone.lstrip("+")
    now = int(time.time())
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    return {
        "message": {
            "id": wamid,
            "timestamp": str(now),
            "type": "text",
            "from": digits,
            "text": {"body": text},
            "kapso": {
                "direction": "inbound",
                "status": "received",
                "processing_status": "pending",
                "origin": "cloud_api",
                "has_media": False,
                "content": text,
            },
        },
        "conversation": {
            "id": sender.conversation_id,
            "phone_number": sender.phone,
            "phone_number_id": PHONE_NUMBER_ID,
            "status": "active",
            "last_active_at": stamp,
            "created_at": stamp,
            "updated_at": stamp,
            "metadata": {},
            "kapso": {
                "contact_name": sender.name,
                "messages_count": 1,
                "last_message_type": "text",
                "last_inbound_at": stamp,
            },
        },
        "is_new_conversation": False,
        "phone_number_id": PHONE_NUMBER_ID,
    }


@dataclass(frozen=True)
class Delivery:
    idempotency_key: str
    signature: str
    body: bytes

    def headers(self) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            "X-Webhook-Event": EVENT,
            "X-Webhook-Payload-Version": "v2",
            "X-Webhook-Signature": self.signature,
            "X-Idempotency-Key": self.idempotency_key,
        }


def deliveries(count: int, senders: Sequence[Sender], *, run: str = "") -> Iterator[Delivery]:
    """`count` unique signed deliveries, round-robin over `senders`."""
    tag = run or uuid.uuid4().hex[:8]
    for index in range(count):
        sender = senders[index % len(senders)]
        body = json.dumps(
            message_received(sender, f"wamid.bench{tag}{index:09d}"),
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
        yield Delivery(str(uuid.uuid4()), sign(body), body)


def write_request_file(path: Path, items: Iterator[Delivery]) -> int:
    """One delivery per line, `key<TAB>signature<TAB>body`, for bench/wrk/deliveries.lua."""
    written = 0
    with path.open("wb") as out:
        for item in items:
            out.write(
                b"%s\t%s\t%s\n"
                % (item.idempotency_key.encode(), item.signature.encode(), item.body)
            )
            written += 1
    return written
