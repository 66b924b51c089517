"""Standard Webhooks signing, as OpenAI signs its webhooks (stdlib only).

Shared by the app's webhook receiver (:mod:`openai_batches.webhooks`) and the emulator that
sends signed events, so both ends agree by construction and one test vector covers both.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping

#: Default replay window, as in the official SDK (seconds).
DEFAULT_TOLERANCE = 300


class InvalidSignature(ValueError):
    """The webhook's headers or signature do not check out."""


def _key(secret: str) -> bytes:
    # Same rule as the SDK: a whsec_ secret is base64 of the key; anything else is the key.
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[len("whsec_") :])
        except binascii.Error as err:
            raise InvalidSignature("The webhook secret is not valid base64 after whsec_.") from err
    return secret.encode("utf-8")


def sign(secret: str, webhook_id: str, timestamp: int | str, body: bytes) -> str:
    """The ``webhook-signature`` header value (``v1,<base64 HMAC-SHA256>``) for one delivery."""
    content = f"{webhook_id}.{timestamp}.".encode() + body
    mac = hmac.new(_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: int = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> str:
    """Check a delivery; return its ``webhook-id``. Raises :class:`InvalidSignature`.

    ``headers`` is looked up case-insensitively (Django's ``request.headers`` already is).
    Several space-separated signatures are accepted (secret rotation).
    """
    lower = {k.lower(): v for k, v in headers.items()}
    missing = [
        h for h in ("webhook-id", "webhook-timestamp", "webhook-signature") if h not in lower
    ]
    if missing:
        raise InvalidSignature(f"Could not find {missing[0]} header")
    webhook_id = lower["webhook-id"]
    try:
        timestamp = int(lower["webhook-timestamp"])
    except ValueError as err:
        raise InvalidSignature("Invalid webhook-timestamp header") from err
    current = time.time() if now is None else now
    if current - timestamp > tolerance:
        raise InvalidSignature("Webhook timestamp is too old")
    if timestamp > current + tolerance:
        raise InvalidSignature("Webhook timestamp is too new")
    expected = sign(secret, webhook_id, timestamp, body).split(",", 1)[1]
    for part in lower["webhook-signature"].split():
        candidate = part.split(",", 1)[1] if part.startswith("v1,") else part
        if hmac.compare_digest(candidate.encode(), expected.encode()):
            return webhook_id
    raise InvalidSignature("The given webhook signature does not match the expected signature")
