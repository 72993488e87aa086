"""Reading a request body with a size cap, refusing oversize bodies before reading them whole."""

from __future__ import annotations

import logging

from fastapi import Request
from starlette.requests import ClientDisconnect

from app.core.errors import BadRequestError, PayloadTooLargeError

logger = logging.getLogger(__name__)


async def read_body_limited(request: Request, max_bytes: int) -> bytes:
    """The raw body, or 413 as soon as it is known to exceed `max_bytes`."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise BadRequestError("Content-Length is not a number", code="bad_request") from None
        if length > max_bytes:
            raise _too_large(max_bytes)
    chunks: list[bytes] = []
    received = 0
    # Chunked bodies carry no length: count while streaming and stop at the cap.
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_bytes:
                raise _too_large(max_bytes)
            chunks.append(chunk)
    except ClientDisconnect:
        # Nobody is left to answer; nothing was recorded. Not an error of ours.
        logger.info("Client disconnected while sending the request body")
        raise BadRequestError(
            "The client disconnected mid-body", code="client_disconnected"
        ) from None
    return b"".join(chunks)


def _too_large(max_bytes: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"Request body exceeds the limit of {max_bytes} bytes")
