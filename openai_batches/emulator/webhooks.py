"""Signed webhook delivery (Standard Webhooks, as OpenAI uses it).

:func:`sign` is the pure signing function (checked against the reference test vector);
:class:`WebhookDispatcher` posts events from a background thread with httpx so an API
request never waits on a receiver, and retries non-2xx answers (3xx included: redirects are
not followed) with exponential backoff, keeping the same ``webhook-id`` and sending a fresh
``webhook-timestamp`` on every attempt.
"""

from __future__ import annotations

import heapq
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..signing import sign
from . import ids

USER_AGENT = "OpenAI/1.0 (+https://platform.openai.com/docs/webhooks)"


def event_body(
    event_type: str, batch_id: str, created_at: int, event_id: str | None = None
) -> bytes:
    """The exact bytes of a thin batch event, as OpenAI sends them."""
    event = {
        "object": "event",
        "id": event_id or ids.event_id(),
        "type": event_type,
        "created_at": created_at,
        "data": {"id": batch_id},
    }
    return json.dumps(event, separators=(",", ":")).encode()


@dataclass
class Delivery:
    """One event on its way to one URL, with the outcome of every attempt."""

    webhook_id: str
    url: str
    secret: str
    body: bytes
    event_type: str
    attempts: list[dict[str, Any]] = field(default_factory=list)
    delivered: bool = False
    gave_up: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "webhook_id": self.webhook_id,
            "url": self.url,
            "type": self.event_type,
            "event": json.loads(self.body),
            "attempts": list(self.attempts),
            "delivered": self.delivered,
            "gave_up": self.gave_up,
        }


class WebhookDispatcher:
    """Delivers queued events in a daemon thread, retrying with backoff."""

    def __init__(
        self, *, max_attempts: int = 6, backoff: float = 0.5, timeout: float = 5.0
    ) -> None:
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.timeout = timeout
        self.deliveries: list[Delivery] = []
        self._queue: list[tuple[float, int, Delivery]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._busy = 0
        self._stopped = False

    def enqueue(self, url: str, secret: str, body: bytes, event_type: str) -> Delivery:
        delivery = Delivery(ids.webhook_id(), url, secret, body, event_type)
        with self._cond:
            self.deliveries.append(delivery)
            heapq.heappush(self._queue, (time.monotonic(), next(self._seq), delivery))
            if self._thread is None or not self._thread.is_alive():
                self._stopped = False
                self._thread = threading.Thread(
                    target=self._run, name="emulator-webhooks", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()
        return delivery

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until nothing is queued or in flight (retries included); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def clear(self) -> None:
        with self._cond:
            self._queue.clear()
            self.deliveries.clear()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._queue.clear()
            self._cond.notify_all()

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout, follow_redirects=False) as client:
            while True:
                with self._cond:
                    while not self._stopped and (
                        not self._queue or self._queue[0][0] > time.monotonic()
                    ):
                        wait = self._queue[0][0] - time.monotonic() if self._queue else None
                        self._cond.wait(wait)
                    if self._stopped:
                        return
                    _, _, delivery = heapq.heappop(self._queue)
                    self._busy += 1
                ok = False
                try:
                    ok = self._attempt(client, delivery)
                finally:
                    with self._cond:
                        self._busy -= 1
                        if ok:
                            delivery.delivered = True
                        elif len(delivery.attempts) >= self.max_attempts:
                            delivery.gave_up = True
                        else:
                            delay = self.backoff * 2 ** (len(delivery.attempts) - 1)
                            heapq.heappush(
                                self._queue, (time.monotonic() + delay, next(self._seq), delivery)
                            )
                        self._cond.notify_all()

    def _attempt(self, client: httpx.Client, delivery: Delivery) -> bool:
        # The timestamp is real wall time, not the emulated clock: receivers check it
        # against their own clock (300 s tolerance).
        timestamp = int(time.time())
        headers = {
            "user-agent": USER_AGENT,
            "content-type": "application/json",
            "webhook-id": delivery.webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(
                delivery.secret, delivery.webhook_id, timestamp, delivery.body
            ),
        }
        record: dict[str, Any] = {"timestamp": timestamp, "status_code": None, "error": None}
        delivery.attempts.append(record)
        try:
            response = client.post(delivery.url, content=delivery.body, headers=headers)
        except httpx.HTTPError as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"
            return False
        record["status_code"] = response.status_code
        return 200 <= response.status_code < 300
