"""Standard Webhooks signing, as OpenAI signs its webhooks (stdlib only).

Shared by the app's webhook receiver (:mod:`openai_batches.webhooks`) and the emulator that
sends signed events, so both ends agree by construction and one test vector covers both.
The secret may be a plain string or anything with a ``reveal()`` method (the app's
:class:`~openai_batches.conf.Secret`), unwrapped only inside the HMAC call so no frame of
ours holds it in a local an error report would print.

Unlike the SDK (which strips a leading ``v1,`` when present and compares what is left),
only ``v1,`` signatures count: a bare or other-version signature is refused, as the
Standard Webhooks spec asks.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import Protocol

#: Default replay window, as in the official SDK (seconds).
DEFAULT_TOLERANCE = 300


class InvalidSignature(ValueError):
    """The webhook's headers or signature do not check out."""


class _Revealable(Protocol):
    def reveal(self) -> str: ...


SecretLike = str | _Revealable


def _raw(secret: SecretLike) -> str:
    return secret if isinstance(secret, str) else secret.reveal()


def _key(secret: SecretLike) -> bytes:
    # Same rule as the SDK: a whsec_ secret is base64 of the key; anything else is the key.
    if _raw(secret).startswith("whsec_"):
        try:
            return base64.b64decode(_raw(secret)[len("whsec_") :])
        except binascii.Error:
            # No "from": the decoder's error and its frames would carry the secret.
            raise InvalidSignature("The webhook secret is not valid base64 after whsec_.") from None
    return _raw(secret).encode("utf-8")


def _mac(secret: SecretLike, webhook_id: str, timestamp: int | str, body: bytes) -> str:
    content = f"{webhook_id}.{timestamp}.".encode() + body
    return base64.b64encode(hmac.new(_key(secret), content, hashlib.sha256).digest()).decode()


def sign(secret: SecretLike, webhook_id: str, timestamp: int | str, body: bytes) -> str:
    """The ``webhook-signature`` header value (``v1,<base64 HMAC-SHA256>``) for one delivery."""
    return "v1," + _mac(secret, webhook_id, timestamp, body)


def verify(
    secret: SecretLike,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: int = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> str:
    """Check a delivery; return its ``webhook-id``. Raises :class:`InvalidSignature`.

    ``headers`` is looked up case-insensitively (Django's ``request.headers`` already is).
    Several space-separated signatures are accepted (secret rotation); each must carry the
    ``v1,`` prefix.
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
    expected = _mac(secret, webhook_id, timestamp, body).encode()
    for part in lower["webhook-signature"].split():
        version, _, candidate = part.partition(",")
        if version == "v1" and hmac.compare_digest(candidate.encode(), expected):
            return webhook_id
    raise InvalidSignature("The given webhook signature does not match the expected signature")
