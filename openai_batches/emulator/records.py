"""The emulator's records: limits, timings, the API error, and the file, fault, failure and
batch records the core keeps, shared by the core, the request runner and the flavours."""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
NOT_DOWNLOADABLE = ("assistants", "user_data")
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
FAULT_KINDS = (
    "status",
    "drop",
    "slow",
    "truncate",
    "file_not_found",
    "huge",
    "drip",
    "garbage",
    "wrong_shape",
    "no_id",
    "stuck_cursor",
)

DAY = 86400
THIRTY_DAYS = 2592000
#: The shortest ``expires_after`` / ``output_expires_after`` OpenAI accepts (one hour).
MIN_EXPIRES_AFTER = 3600


@dataclass(frozen=True)
class Timing:
    """Seconds spent in each state. ``run`` time grows with the number of requests."""

    validate: float
    run_base: float
    run_per_request: float
    run_max: float
    finalize: float
    cancel: float

    def run_duration(self, requests: int) -> float:
        return min(self.run_max, self.run_base + self.run_per_request * requests)


#: ``instant``: every transition is due at once (a batch is terminal on the first request
#: after its create). ``fast``: a small batch walks every state in about five seconds.
#: ``realistic``: minutes to hours, like the real service.
PROFILES: dict[str, Timing] = {
    "instant": Timing(0, 0, 0, 0, 0, 0),
    "fast": Timing(1.0, 2.0, 0.00005, 8.0, 1.0, 1.0),
    "realistic": Timing(30.0, 120.0, 0.5, 6 * 3600.0, 120.0, 300.0),
}


@dataclass
class Limits:
    """The provider's limits; tests may lower them to exercise the errors cheaply."""

    max_requests: int = 50_000
    max_batch_file_bytes: int = 200 * 1024 * 1024
    max_file_bytes: int = 512 * 1024 * 1024
    max_embedding_inputs: int = 50_000
    max_reported_errors: int = 100
    #: What the ``x-ratelimit-*`` headers announce (per minute; Files and Batches calls
    #: spend requests, not tokens).
    requests_per_minute: int = 5_000
    tokens_per_minute: int = 2_000_000


class ApiError(Exception):
    """An HTTP error answer with OpenAI's ``{"error": {...}}`` body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = list(headers)

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def error_type_for(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


@dataclass
class FileRecord:
    id: str
    seq: int
    filename: str
    purpose: str
    bytes: int
    created_at: int
    expires_at: int | None
    path: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


@dataclass
class Fault:
    """A scripted misbehaviour for the next ``count`` calls matching ``method`` + ``path``.

    ``path`` is a glob (``fnmatch``) on the request path, e.g. ``/v1/files/*/content``;
    ``method`` is an HTTP method or ``*``.
    """

    method: str
    path: str
    kind: str
    count: int = 1
    status: int | None = None
    retry_after: float | None = None
    delay: float | None = None
    size: int | None = None
    #: ``x-should-retry`` on a status fault (None: no header).
    should_retry: bool | None = None

    def matches(self, method: str, path: str) -> bool:
        return (self.method == "*" or self.method.upper() == method.upper()) and fnmatchcase(
            path, self.path
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "kind": self.kind,
            "count": self.count,
            "status": self.status,
            "retry_after": self.retry_after,
            "delay": self.delay,
            "size": self.size,
            "should_retry": self.should_retry,
        }


@dataclass
class RequestFailure:
    """How one request fails when it runs (goes to the error file with ``error: null``)."""

    status_code: int = 400
    code: str | None = "context_length_exceeded"
    message: str = "This model's maximum context length was exceeded (emulated failure)."
    type: str | None = None
    param: str | None = None

    def line_body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type or error_type_for(self.status_code),
                "param": self.param,
                "code": self.code,
            }
        }


@dataclass
class _Batch:
    id: str
    seq: int
    endpoint: str
    #: The endpoint the lines run on: ``endpoint`` unless the flavour reads it from the
    #: file (Azure takes ``/chat/completions`` and runs what the lines say).
    run_endpoint: str
    input_file_id: str
    completion_window: str
    metadata: dict[str, str] | None
    output_expires_after: int | None
    created: float
    timing: Timing
    #: Seconds from creation until the batch expires (its completion window).
    window: float = DAY
    status: str = "validating"
    model: str | None = None
    errors: list[dict[str, Any]] | None = None
    stamps: dict[str, int | None] = field(default_factory=dict)
    output_file_id: str | None = None
    error_file_id: str | None = None
    usage: dict[str, Any] | None = None
    # Filled by validation: line offsets, per-line flags, processing order.
    offsets: array = field(default_factory=lambda: array("q"))
    flags: bytearray = field(default_factory=bytearray)
    order: array = field(default_factory=lambda: array("l"))
    fail_prefix: array = field(default_factory=lambda: array("l", [0]))
    runnable: int = 0
    tokens: int = 0
    run_started: float = 0.0
    run_duration: float = 0.0
    phase_started: float = 0.0
    cancel_time: float | None = None
    final_counts: tuple[int, int, int] | None = None
    # Scripted failures taken by this batch at validation (so a ``times``-limited script
    # still applies when the batch runs after the script ran out).
    scripted: dict[str, RequestFailure] = field(default_factory=dict)

    @property
    def expires(self) -> float:
        return self.created + self.window

    @property
    def total(self) -> int:
        return len(self.offsets)

    def done_at(self, t: float) -> int:
        """How many runnable requests have finished by time ``t`` (in processing order)."""
        if self.status == "validating" or self.run_duration <= 0:
            return self.runnable
        frac = (t - self.run_started) / self.run_duration
        return max(0, min(self.runnable, math.floor(self.runnable * frac)))

    def counts(self, now: float) -> tuple[int, int, int]:
        if self.final_counts is not None:
            return self.final_counts
        if self.status == "validating" or (
            self.status == "cancelling" and self.stamps.get("in_progress_at") is None
        ):
            return (0, 0, 0)
        t = now if self.cancel_time is None else min(now, self.cancel_time)
        done = self.done_at(t)
        failed = self.fail_prefix[done]
        return (self.total, done - failed, failed)


def set_uses(uses: dict[str, int], custom_id: str, times: int | None) -> None:
    """Record that a script for ``custom_id`` applies to the next ``times`` batches (None:
    to every batch)."""
    if times is None:
        uses.pop(custom_id, None)
    elif times < 1:
        raise ValueError("times must be at least 1")
    else:
        uses[custom_id] = times


def take_scripted(scripted: dict[str, Any] | set[str], uses: dict[str, int], custom_id: str) -> Any:
    """The script for ``custom_id`` for the batch being validated (counting one use; the
    script is forgotten when its uses run out)."""
    found = scripted.get(custom_id) if isinstance(scripted, dict) else None
    if found is None and isinstance(scripted, set) and custom_id in scripted:
        found = True
    if found is None:
        return None
    if custom_id in uses:
        uses[custom_id] -= 1
        if uses[custom_id] <= 0:
            del uses[custom_id]
            if isinstance(scripted, dict):
                del scripted[custom_id]
            else:
                scripted.discard(custom_id)
    return found
