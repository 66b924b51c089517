"""Id generators in the exact formats OpenAI uses, so client code that checks prefixes works."""

from __future__ import annotations

import hashlib
import random
import string
import uuid

_BASE62 = string.digits + string.ascii_letters


def file_id() -> str:
    """``file-`` plus 22 base62 characters (e.g. ``file-52voFe6FU6MWyAwa1Uj39R``)."""
    return "file-" + "".join(random.choices(_BASE62, k=22))


def batch_id() -> str:
    """``batch_`` plus 32 hex characters."""
    return "batch_" + uuid.uuid4().hex


def event_id() -> str:
    """``evt_`` plus 32 hex characters (webhook event ids)."""
    return "evt_" + uuid.uuid4().hex


def webhook_id() -> str:
    """``wh_`` plus 32 hex characters (webhook delivery ids, stable across retries)."""
    return "wh_" + uuid.uuid4().hex


def request_id() -> str:
    """``req_`` plus 32 hex characters, sent as ``x-request-id`` on every response."""
    return "req_" + uuid.uuid4().hex


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\x00".join(parts).encode()).digest()


def batch_request_id(batch: str, custom_id: str) -> str:
    """Deterministic ``batch_req_`` id for one result line (24 base62 chars, like real ones)."""
    n = int.from_bytes(_digest("batch_req", batch, custom_id), "big")
    chars = []
    for _ in range(24):
        n, r = divmod(n, 62)
        chars.append(_BASE62[r])
    return "batch_req_" + "".join(chars)


def line_request_id(batch: str, custom_id: str) -> str:
    """Deterministic ``req_`` id for the ``response.request_id`` of a result line."""
    return "req_" + _digest("req", batch, custom_id).hex()[:32]


def stable_hex(*parts: str, length: int = 24) -> str:
    """Deterministic hex used for ids inside generated response bodies."""
    return _digest(*parts).hex()[:length]
