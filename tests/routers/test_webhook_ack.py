"""The webhook's pre-rendered answer is byte for byte what FastAPI renders from `WebhookAck`."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from app.routers.whatsapp.schemas import WebhookAck, webhook_ack_json

_counts = st.integers(min_value=0, max_value=2**63)


@given(_counts, _counts, _counts)
def test_pre_rendered_ack_is_the_models_json(received: int, accepted: int, duplicates: int) -> None:
    model = WebhookAck(received=received, accepted=accepted, duplicates=duplicates)

    assert webhook_ack_json(received, accepted, duplicates) == model.model_dump_json().encode()


def test_common_answers() -> None:
    assert webhook_ack_json(1, 1, 0) == b'{"received":1,"accepted":1,"duplicates":0}'
    assert webhook_ack_json(3, 2, 1) == b'{"received":3,"accepted":2,"duplicates":1}'
