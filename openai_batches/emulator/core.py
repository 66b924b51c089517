"""The emulator's state and the batch lifecycle, independent of HTTP.

:class:`Emulator` owns the files (bytes on disk under ``data_dir``, metadata in memory), the
batches, the scripted faults and failures, and the clock. State moves lazily: every API
call (and the server's ticker thread) runs :meth:`Emulator.tick`, which applies every
transition that is due at the clock's ``now`` in chronological order. Tests with a
:class:`~openai_batches.emulator.clock.ManualClock` therefore see exactly the same history
every run.

Heavy work (validating an input file, writing result files) reads the input line by line and
seeks to line offsets; only an ``array`` of offsets and a byte of flags per line stay in
memory, so a 50,000-line, 200 MB batch costs a few megabytes.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import math
import os
import random
import re
import shutil
import tempfile
import threading
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from typing import Any, BinaryIO

from . import ids
from .clock import Clock, ManualClock, RealClock
from .multipart import MultipartError, parse_multipart
from .responses import (
    DEFAULT_MODELS,
    embedding_input_count,
    estimate_input_tokens,
    response_body,
    snapshot,
    usage_of,
)
from .validation import check_body
from .webhooks import Delivery, WebhookDispatcher, event_body

ENDPOINTS = (
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/videos",
)
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
)

DAY = 86400
THIRTY_DAYS = 2592000
#: The shortest ``expires_after`` / ``output_expires_after`` OpenAI accepts (one hour).
MIN_EXPIRES_AFTER = 3600
EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."
CANCELLED_MESSAGE = "This request was not executed because the batch was cancelled."
URL_MISMATCH_MESSAGE = "The URL provided for this request does not prefix-match the batch endpoint"

_FLAG_FAIL = 1
_FLAG_STALL = 2


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
    input_file_id: str
    completion_window: str
    metadata: dict[str, str] | None
    output_expires_after: int | None
    created: float
    timing: Timing
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
        return self.created + DAY

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

    def as_dict(self, now: float) -> dict[str, Any]:
        total, completed, failed = self.counts(now)
        s = self.stamps
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            # The alias the lines use stays in ``model`` (token budgets are keyed by it).
            "model": None if self.model is None else snapshot(self.model),
            "errors": None if self.errors is None else {"object": "list", "data": self.errors},
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": int(self.created),
            "in_progress_at": s.get("in_progress_at"),
            "expires_at": int(self.expires),
            "finalizing_at": s.get("finalizing_at"),
            "completed_at": s.get("completed_at"),
            "failed_at": s.get("failed_at"),
            "expired_at": s.get("expired_at"),
            "cancelling_at": s.get("cancelling_at"),
            "cancelled_at": s.get("cancelled_at"),
            "request_counts": {"total": total, "completed": completed, "failed": failed},
            "usage": self.usage,
            "metadata": self.metadata,
        }


def _page(
    items: list[Any], ids_: list[str], after: str | None, limit: int
) -> tuple[list[Any], bool]:
    start = 0
    if after is not None:
        try:
            start = ids_.index(after) + 1
        except ValueError:
            return [], False
    chunk = items[start : start + limit]
    return chunk, start + limit < len(items)


class Emulator:
    """An in-process OpenAI Files + Batches service.

    ``timing`` is ``"instant"``, ``"fast"`` or ``"realistic"`` (see :data:`PROFILES`).
    ``clock`` is a :class:`Clock`, ``"manual"`` or ``"real"``; by default ``instant`` uses
    a manual clock (tests step it with :meth:`advance`) and the other profiles real time.
    ``api_key``: when set, only ``Bearer <api_key>`` is accepted; otherwise any non-empty
    bearer key is. ``data_dir``: where file bytes live (a temporary directory, removed by
    :meth:`close`, when None).
    """

    def __init__(
        self,
        timing: str = "instant",
        data_dir: str | None = None,
        api_key: str | None = None,
        *,
        clock: Clock | str | None = None,
        limits: Limits | None = None,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        webhook_max_attempts: int = 6,
        webhook_backoff: float = 0.5,
        organization: str = "org-emulator",
        project: str = "proj_emulator",
    ) -> None:
        if timing not in PROFILES:
            raise ValueError(f"timing must be one of {sorted(PROFILES)}")
        self.timing = timing
        self.api_key = api_key
        self.limits = limits or Limits()
        self.organization = organization
        self.project = project
        if clock is None:
            clock = "manual" if timing == "instant" else "real"
        if clock == "manual":
            self.clock: Clock = ManualClock()
        elif clock == "real":
            self.clock = RealClock()
        elif isinstance(clock, str):
            raise ValueError("clock must be 'manual', 'real' or a Clock")
        else:
            self.clock = clock
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="openai-emulator-")
        self._files_dir = os.path.join(self.data_dir, "files")
        self._tmp_dir = os.path.join(self.data_dir, "tmp")
        os.makedirs(self._files_dir, exist_ok=True)
        os.makedirs(self._tmp_dir, exist_ok=True)
        # One re-entrant lock guards all metadata; heavy batch work runs under it too,
        # which keeps transitions strictly ordered (uploads and downloads stream outside it).
        self._lock = threading.RLock()
        self._initial_webhook = (webhook_url, webhook_secret)
        self.webhooks = WebhookDispatcher(
            max_attempts=webhook_max_attempts, backoff=webhook_backoff
        )
        self._seq = 0
        self._init_state()
        self.webhook_url, self.webhook_secret = self._initial_webhook
        self._app: Any = None

    def _init_state(self) -> None:
        self._files: dict[str, FileRecord] = {}
        self._batches: dict[str, _Batch] = {}
        self._batch_order: list[str] = []  # creation order; lists read it backwards
        self._active: dict[str, _Batch] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._faults: list[Fault] = []
        self._failures: dict[str, RequestFailure] = {}
        self._stalls: set[str] = set()
        # Batches a scripted failure or stall still applies to; absent means every batch.
        self._failure_uses: dict[str, int] = {}
        self._stall_uses: dict[str, int] = {}
        self._budgets: dict[str, int] = {}
        # (expires_at, seq, file_id) of every file that expires: the provider deletes a file
        # at its expires_at, so from then on it answers 404 like a deleted one.
        self._expiring: list[tuple[int, int, str]] = []
        self.events: list[dict[str, Any]] = []
        # The current rate-limit window: when it started and the requests spent in it.
        self._window: tuple[float, int] = (-math.inf, 0)

    # ------------------------------------------------------------------ public Python API

    @property
    def wsgi_app(self) -> Any:
        """The WSGI callable serving ``/v1/...`` and the ``/_emulator/...`` control API."""
        if self._app is None:
            from .app import EmulatorApp

            self._app = EmulatorApp(self)
        return self._app

    def now(self) -> float:
        return self.clock.now()

    def advance(self, seconds: float) -> None:
        """Move the clock forward and apply every transition that became due."""
        self.clock.advance(seconds)
        self.tick()

    def tick(self) -> None:
        """Apply every transition due at the clock's current time."""
        with self._lock:
            self._run_due(self.clock.now())

    def inject_fault(
        self,
        method: str,
        path: str,
        kind: str,
        *,
        count: int = 1,
        status: int | None = None,
        retry_after: float | None = None,
        delay: float | None = None,
        size: int | None = None,
        should_retry: bool | None = None,
    ) -> Fault:
        """Make the next ``count`` calls matching ``method`` and the glob ``path`` misbehave.

        ``kind``: ``"status"`` (answer ``status``, default 429 with ``retry-after``:
        ``retry_after`` seconds, 1 when not given, none when negative; ``should_retry``
        adds ``x-should-retry: true|false``, the header OpenAI uses to overrule a client's
        own retry decision),
        ``"drop"`` (close the connection without answering), ``"slow"`` (wait ``delay``
        seconds, then answer normally), ``"truncate"`` (send half of the answer's bytes,
        then close), ``"file_not_found"`` (a batch create answers 400 "Cannot find file
        ...").

        Broken or hostile servers, for testing a client's limits: ``"huge"`` (answer 200
        with ``size`` bytes, default 150 MB, with no Content-Length, generated as sent;
        the call is not run), ``"drip"`` (send the real answer one byte every ``delay``
        seconds, default 1), ``"garbage"`` (200 with a body that is not JSON),
        ``"wrong_shape"`` (200 with a JSON list), ``"no_id"`` (the real answer without its
        ``id`` fields). Every kind but ``huge`` runs the call first, as a server that did
        the work and then failed to say so would.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {FAULT_KINDS}")
        if count < 1:
            raise ValueError("count must be at least 1")
        fault = Fault(method, path, kind, count, status, retry_after, delay, size, should_retry)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def spend_request(self) -> dict[str, str]:
        """Count one API call against the per-minute request limit (a fixed window from
        the first call, on the emulator's clock); return the ``x-ratelimit-*`` headers."""
        now = self.clock.now()
        with self._lock:
            start, used = self._window
            if now >= start + 60:
                start, used = now, 0
            used += 1
            self._window = (start, used)
        rpm, tpm = self.limits.requests_per_minute, self.limits.tokens_per_minute
        return {
            "x-ratelimit-limit-requests": str(rpm),
            "x-ratelimit-limit-tokens": str(tpm),
            "x-ratelimit-remaining-requests": str(max(0, rpm - used)),
            "x-ratelimit-remaining-tokens": str(tpm),
            "x-ratelimit-reset-requests": duration(start + 60 - now),
            "x-ratelimit-reset-tokens": "0s",
        }

    def take_fault(self, method: str, path: str) -> Fault | None:
        """Consume one use of the first fault matching this call (the HTTP layer's hook)."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.count -= 1
                    if fault.count <= 0:
                        self._faults.remove(fault)
                    return replace(fault)
        return None

    def fail_request(
        self,
        custom_id: str,
        status_code: int = 400,
        code: str | None = "context_length_exceeded",
        message: str = "This model's maximum context length was exceeded (emulated failure).",
        *,
        type: str | None = None,
        param: str | None = None,
        times: int | None = None,
    ) -> None:
        """Make the request with this ``custom_id`` fail when it runs: in every later batch,
        or in the next ``times`` batches that carry it (then it succeeds, as a transient
        failure does when it is sent again).

        Takes effect for batches validated after the call.
        """
        with self._lock:
            self._failures[custom_id] = RequestFailure(status_code, code, message, type, param)
            self._set_uses(self._failure_uses, custom_id, times)

    def stall_request(self, custom_id: str, *, times: int | None = None) -> None:
        """Make the request with this ``custom_id`` never finish, so its batch stays
        ``in_progress`` until cancelled or expired with the other results kept: in every
        later batch, or in the next ``times`` batches that carry it."""
        with self._lock:
            self._stalls.add(custom_id)
            self._set_uses(self._stall_uses, custom_id, times)

    @staticmethod
    def _set_uses(uses: dict[str, int], custom_id: str, times: int | None) -> None:
        if times is None:
            uses.pop(custom_id, None)
        elif times < 1:
            raise ValueError("times must be at least 1")
        else:
            uses[custom_id] = times

    def _take(
        self, scripted: dict[str, Any] | set[str], uses: dict[str, int], custom_id: str
    ) -> Any:
        """The script for ``custom_id`` for the batch being validated (counting one use)."""
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

    def set_token_budget(self, model: str, tokens: int | None) -> None:
        """Cap the enqueued input tokens of ``model`` (None removes the cap)."""
        with self._lock:
            if tokens is None:
                self._budgets.pop(model, None)
            else:
                self._budgets[model] = tokens

    def set_timing(self, timing: str) -> None:
        """Change the timing profile for batches created from now on."""
        if timing not in PROFILES:
            raise ValueError(f"timing must be one of {sorted(PROFILES)}")
        with self._lock:
            self.timing = timing

    def configure_webhook(self, url: str | None, secret: str | None) -> None:
        """Send signed batch events to ``url`` (both None switches webhooks off)."""
        with self._lock:
            self.webhook_url, self.webhook_secret = url, secret

    def wait_for_webhooks(self, timeout: float = 10.0) -> bool:
        """Block until every queued webhook delivery (and retry) is done."""
        return self.webhooks.wait_idle(timeout)

    @property
    def webhook_deliveries(self) -> list[Delivery]:
        return list(self.webhooks.deliveries)

    def reset(self) -> None:
        """Forget every file, batch, fault, scripted failure, budget and delivery."""
        with self._lock:
            for rec in self._files.values():
                _unlink(rec.path)
            self._init_state()
            self.webhooks.clear()
            self.webhook_url, self.webhook_secret = self._initial_webhook

    def close(self) -> None:
        """Stop webhook delivery and remove the data dir if the emulator created it."""
        self.webhooks.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def get_batch(self, batch_id: str) -> dict[str, Any]:
        return self.retrieve_batch(batch_id)

    def list_batches(self) -> list[dict[str, Any]]:
        """Every batch, newest first."""
        with self._lock:
            self._run_due(self.clock.now())
            now = self.clock.now()
            return [self._batches[i].as_dict(now) for i in reversed(self._batch_order)]

    def get_file(self, file_id: str) -> dict[str, Any]:
        return self.retrieve_file(file_id)

    def file_content(self, file_id: str) -> bytes:
        """A file's bytes (for tests; HTTP downloads stream instead)."""
        path, _, _ = self.open_content(file_id)
        with open(path, "rb") as fh:
            return fh.read()

    def add_file(
        self, content: bytes, filename: str = "input.jsonl", purpose: str = "batch"
    ) -> dict[str, Any]:
        """Store a file without HTTP (handy for seeding state in tests)."""
        path = os.path.join(self._tmp_dir, f"seed-{ids.request_id()}")
        with open(path, "wb") as fh:
            fh.write(content)
        return self._register_upload(path, filename, purpose, len(content), None)

    def state(self) -> dict[str, Any]:
        """Everything, for debugging (``GET /_emulator/state``)."""
        with self._lock:
            self._run_due(self.clock.now())
            now = self.clock.now()
            return {
                "now": now,
                "timing": self.timing,
                "clock": type(self.clock).__name__,
                "batches": [self._batches[i].as_dict(now) for i in reversed(self._batch_order)],
                "files": [f.as_dict() for f in self._files.values()],
                "faults": [f.as_dict() for f in self._faults],
                "failures": {k: vars(v) for k, v in self._failures.items()},
                "stalls": sorted(self._stalls),
                "token_budgets": dict(self._budgets),
                "webhook_url": self.webhook_url,
                "events": list(self.events),
                "webhook_deliveries": [d.as_dict() for d in self.webhooks.deliveries],
            }

    # ------------------------------------------------------------------ files

    def create_file(
        self, stream: BinaryIO, content_type: str, content_length: int | None
    ) -> dict[str, Any]:
        """Handle ``POST /v1/files``: stream the multipart body to disk, then register it."""
        try:
            form = parse_multipart(
                stream, content_type, content_length, self._tmp_dir, self.limits.max_file_bytes
            )
        except MultipartError as err:
            raise ApiError(400, f"Invalid multipart body: {err}.") from err
        try:
            upload = form.files.get("file")
            if upload is None:
                raise _missing("file")
            purpose = form.fields.get("purpose")
            if not purpose:
                raise _missing("purpose")
            if purpose not in UPLOAD_PURPOSES:
                raise ApiError(
                    400,
                    f"'{purpose}' is not one of {list(UPLOAD_PURPOSES)} - 'purpose'",
                    param="purpose",
                    code="invalid_value",
                )
            if purpose == "batch" and not upload.filename.lower().endswith(".jsonl"):
                raise ApiError(400, "Invalid file format for Batch API. Must be .jsonl")
            limit = (
                self.limits.max_batch_file_bytes
                if purpose == "batch"
                else self.limits.max_file_bytes
            )
            if upload.too_large or upload.size > limit:
                raise ApiError(400, "File is too large.")
            expires_after = _form_expires_after(form.fields)
        except ApiError:
            form.discard()
            raise
        return self._register_upload(
            upload.path, upload.filename, purpose, upload.size, expires_after
        )

    def _register_upload(
        self, tmp_path: str, filename: str, purpose: str, size: int, expires_after: int | None
    ) -> dict[str, Any]:
        file_id = ids.file_id()
        path = os.path.join(self._files_dir, file_id)
        os.replace(tmp_path, path)
        with self._lock:
            created = int(self.clock.now())
            if expires_after is None and purpose == "batch":
                expires_after = THIRTY_DAYS
            rec = FileRecord(
                id=file_id,
                seq=self._next_seq(),
                filename=os.path.basename(filename) or "upload",
                purpose=purpose,
                bytes=size,
                created_at=created,
                expires_at=None if expires_after is None else created + expires_after,
                path=path,
            )
            self._store_file(rec)
            return rec.as_dict()

    def _store_file(self, rec: FileRecord) -> None:
        self._files[rec.id] = rec
        if rec.expires_at is not None:
            heapq.heappush(self._expiring, (rec.expires_at, rec.seq, rec.id))

    def _expire_files(self, now: float) -> None:
        """Delete every file whose ``expires_at`` has come (under the lock)."""
        heap = self._expiring
        while heap and heap[0][0] <= now:
            expires_at, _, file_id = heapq.heappop(heap)
            rec = self._files.get(file_id)
            if rec is not None and rec.expires_at == expires_at:
                self._remove_file(rec)

    def _remove_file(self, rec: FileRecord) -> None:
        del self._files[rec.id]
        # An active batch still reads its input; its bytes go with the data dir.
        if not any(b.input_file_id == rec.id for b in self._active.values()):
            _unlink(rec.path)

    def _file(self, file_id: str) -> FileRecord:
        self._expire_files(self.clock.now())
        rec = self._files.get(file_id)
        if rec is None:
            raise ApiError(404, f"No such File object: {file_id}", param="id")
        return rec

    def retrieve_file(self, file_id: str) -> dict[str, Any]:
        with self._lock:
            return self._file(file_id).as_dict()

    def list_files(
        self,
        *,
        purpose: str | None = None,
        limit: int = 10000,
        order: str = "desc",
        after: str | None = None,
    ) -> dict[str, Any]:
        with self._lock:
            self._expire_files(self.clock.now())
            recs = sorted(self._files.values(), key=lambda r: (r.created_at, r.seq))
            if order == "desc":
                recs.reverse()
            if purpose:
                recs = [r for r in recs if r.purpose == purpose]
            chunk, more = _page(recs, [r.id for r in recs], after, limit)
            return _list([r.as_dict() for r in chunk], more)

    def delete_file(self, file_id: str) -> dict[str, Any]:
        with self._lock:
            self._remove_file(self._file(file_id))
            return {"id": file_id, "object": "file", "deleted": True}

    def open_content(self, file_id: str) -> tuple[str, int, str]:
        """(path, size, filename) of a downloadable file."""
        with self._lock:
            rec = self._file(file_id)
            if rec.purpose in NOT_DOWNLOADABLE:
                raise ApiError(400, f"Not allowed to download files of purpose: {rec.purpose}")
            return rec.path, rec.bytes, rec.filename

    # ------------------------------------------------------------------ batches

    def create_batch(self, payload: Any) -> dict[str, Any]:
        """Handle ``POST /v1/batches`` (synchronous checks only; content is checked later)."""
        if not isinstance(payload, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        for key in ("input_file_id", "endpoint", "completion_window"):
            if payload.get(key) in (None, ""):
                raise _missing(key)
        endpoint = payload["endpoint"]
        if endpoint not in ENDPOINTS:
            raise _invalid_value("endpoint", endpoint, ENDPOINTS)
        window = payload["completion_window"]
        if window != "24h":
            raise _invalid_value("completion_window", window, ("24h",))
        metadata = _check_metadata(payload.get("metadata"))
        output_expires_after = _json_expires_after(
            payload.get("output_expires_after"), "output_expires_after"
        )
        file_id = payload["input_file_id"]
        with self._lock:
            self._expire_files(self.clock.now())
            rec = self._files.get(file_id) if isinstance(file_id, str) else None
            if rec is None:
                raise self.cannot_find_file(str(file_id))
            if rec.purpose != "batch":
                raise ApiError(
                    400,
                    f"The input file {file_id} has purpose '{rec.purpose}'; "
                    "batches need a file uploaded with purpose 'batch'.",
                    param="input_file_id",
                )
            now = self.clock.now()
            batch = _Batch(
                id=ids.batch_id(),
                seq=self._next_seq(),
                endpoint=endpoint,
                input_file_id=file_id,
                completion_window=window,
                metadata=metadata,
                output_expires_after=output_expires_after,
                created=now,
                timing=PROFILES[self.timing],
            )
            self._batches[batch.id] = batch
            self._batch_order.append(batch.id)
            self._active[batch.id] = batch
            self._schedule(batch)
            return batch.as_dict(now)

    def cannot_find_file(self, file_id: str) -> ApiError:
        return ApiError(
            400,
            f"Cannot find file {file_id}, or project {self.project} does not have access to it.",
            param="file_id",
        )

    def _batch(self, batch_id: str) -> _Batch:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise ApiError(404, f"No such Batch object: {batch_id}", param="id")
        return batch

    def retrieve_batch(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            self._run_due(self.clock.now())
            return self._batch(batch_id).as_dict(self.clock.now())

    def list_batches_page(self, *, limit: int = 20, after: str | None = None) -> dict[str, Any]:
        """Handle ``GET /v1/batches``: newest first, ``after`` is the last id of the page."""
        with self._lock:
            self._run_due(self.clock.now())
            now = self.clock.now()
            order = self._batch_order
            n = len(order)
            start = 0
            if after is not None:
                batch = self._batches.get(after)
                if batch is None:
                    return _list([], False)
                start = n - self._batch_order_index(batch)
            end = min(n, start + limit)
            data = [self._batches[order[n - 1 - i]].as_dict(now) for i in range(start, end)]
            return _list(data, end < n)

    def _batch_order_index(self, batch: _Batch) -> int:
        # Batches are appended in seq order, so bisect on seq.
        lo, hi = 0, len(self._batch_order)
        while lo < hi:
            mid = (lo + hi) // 2
            if self._batches[self._batch_order[mid]].seq < batch.seq:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            now = self.clock.now()
            self._run_due(now)
            batch = self._batch(batch_id)
            if batch.status in TERMINAL:
                raise ApiError(
                    400,
                    f"Cannot cancel a batch with status '{batch.status}'.",
                    param="batch_id",
                )
            if batch.status != "cancelling":
                if batch.status in ("in_progress", "finalizing"):
                    batch.cancel_time = now
                batch.status = "cancelling"
                batch.stamps["cancelling_at"] = int(now)
                batch.phase_started = now
                self._schedule(batch)
            return batch.as_dict(now)

    # ------------------------------------------------------------------ lifecycle

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _due(self, b: _Batch) -> float:
        if b.status == "validating":
            return b.created + b.timing.validate
        if b.status == "in_progress":
            stalled = b.runnable < b.total
            finish = math.inf if stalled else b.run_started + b.run_duration
            return min(finish, b.expires)
        if b.status == "finalizing":
            return b.phase_started + b.timing.finalize
        if b.status == "cancelling":
            return b.phase_started + b.timing.cancel
        return math.inf

    def _schedule(self, b: _Batch) -> None:
        due = self._due(b)
        if due != math.inf:
            heapq.heappush(self._heap, (due, b.seq, b.id))

    def _run_due(self, now: float) -> None:
        # A heap of (due, seq, id) with lazy invalidation: an entry whose due time no longer
        # matches the batch (it was cancelled, or already moved on) is skipped.
        heap = self._heap
        while heap and heap[0][0] <= now:
            due, _, batch_id = heapq.heappop(heap)
            b = self._active.get(batch_id)
            if b is None or self._due(b) != due:
                continue
            self._step(b, due)
            if b.id in self._active:
                self._schedule(b)
        self._expire_files(now)

    def _step(self, b: _Batch, t: float) -> None:
        if b.status == "validating":
            errors = self._validate(b)
            if errors:
                self._finish(b, "failed", t, errors=errors)
            else:
                b.status = "in_progress"
                b.stamps["in_progress_at"] = int(t)
                b.run_started = t
                b.run_duration = b.timing.run_duration(b.total)
        elif b.status == "in_progress":
            if t >= b.expires and (b.runnable < b.total or b.run_started + b.run_duration > t):
                self._write_results(b, b.done_at(b.expires), "batch_expired", EXPIRED_MESSAGE, t)
                self._finish(b, "expired", t)
            else:
                b.status = "finalizing"
                b.stamps["finalizing_at"] = int(t)
                b.phase_started = t
        elif b.status == "finalizing":
            self._write_results(b, b.runnable, "batch_expired", EXPIRED_MESSAGE, t)
            self._finish(b, "completed", t)
        elif b.status == "cancelling":
            if b.stamps.get("in_progress_at") is not None:
                done = b.done_at(b.cancel_time if b.cancel_time is not None else t)
                self._write_results(b, done, "batch_cancelled", CANCELLED_MESSAGE, t)
            self._finish(b, "cancelled", t)

    def _finish(
        self, b: _Batch, status: str, t: float, errors: list[dict[str, Any]] | None = None
    ) -> None:
        b.status = status
        b.stamps[f"{status}_at"] = int(t)
        if errors is not None:
            b.errors = errors
        if b.final_counts is None:
            b.final_counts = (b.total, 0, 0) if status != "failed" else (0, 0, 0)
        del self._active[b.id]
        self._emit(f"batch.{status}", b.id, int(t))

    def _emit(self, event_type: str, batch_id: str, created_at: int) -> None:
        body = event_body(event_type, batch_id, created_at)
        self.events.append(json.loads(body))
        if self.webhook_url and self.webhook_secret:
            self.webhooks.enqueue(self.webhook_url, self.webhook_secret, body, event_type)

    def _validate(self, b: _Batch) -> list[dict[str, Any]]:
        """Check the input file line by line; fill offsets/flags/order on success."""
        errors: list[dict[str, Any]] = []
        cap = self.limits.max_reported_errors

        def add(code: str, message: str, param: str | None = None, line: int | None = None) -> None:
            if len(errors) < cap:
                errors.append({"code": code, "message": message, "param": param, "line": line})

        rec = self._files.get(b.input_file_id)
        if rec is None or not os.path.exists(rec.path):
            add("invalid_file", f"The input file {b.input_file_id} could not be read.")
            return errors
        if rec.bytes > self.limits.max_batch_file_bytes:
            add(
                "file_too_large",
                f"The batch input file is larger than the {self.limits.max_batch_file_bytes:,} "
                "byte limit.",
            )
            return errors
        offsets: array = array("q")
        flags = bytearray()
        seen: dict[str, int] = {}
        model: str | None = None
        tokens = 0
        embedding_inputs = 0
        count = 0
        pos = 0
        with open(rec.path, "rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                start, pos = pos, pos + len(raw)
                if not raw.strip():
                    continue
                count += 1
                if count > self.limits.max_requests:
                    errors.clear()
                    add(
                        "too_many_tasks",
                        f"The batch input file has more than {self.limits.max_requests:,} "
                        "requests; the limit is "
                        f"{self.limits.max_requests:,} requests per batch.",
                    )
                    return errors
                try:
                    obj = json.loads(raw)
                except ValueError:
                    obj = None
                if not isinstance(obj, dict):
                    add(
                        "invalid_json_line",
                        "This line is not parseable as valid JSON.",
                        None,
                        lineno,
                    )
                    continue
                missing = [k for k in ("custom_id", "method", "url", "body") if k not in obj]
                for key in missing:
                    add(
                        "missing_required_parameter",
                        f"Missing required parameter: '{key}'.",
                        key,
                        lineno,
                    )
                if missing:
                    continue
                custom_id = obj["custom_id"]
                if not isinstance(custom_id, str) or not custom_id:
                    add(
                        "invalid_value",
                        "custom_id must be a non-empty string.",
                        "custom_id",
                        lineno,
                    )
                    continue
                if custom_id in seen:
                    add(
                        "duplicate_custom_id",
                        f"The custom_id '{custom_id}' is used more than once in this file "
                        f"(first on line {seen[custom_id]}). Each custom_id must be unique.",
                        "custom_id",
                        lineno,
                    )
                else:
                    seen[custom_id] = lineno
                if obj["method"] != "POST":
                    add(
                        "invalid_method",
                        f"Invalid method '{obj['method']}'. Only POST is supported.",
                        "method",
                        lineno,
                    )
                url = obj["url"]
                if not isinstance(url, str) or url.rstrip("/") != b.endpoint:
                    add("url_mismatch", URL_MISMATCH_MESSAGE, "url", lineno)
                body = obj["body"]
                if not isinstance(body, dict):
                    add("invalid_body", "The body must be a JSON object.", "body", lineno)
                    continue
                line_model = body.get("model", DEFAULT_MODELS.get(b.endpoint))
                if not isinstance(line_model, str) or not line_model:
                    add(
                        "missing_required_parameter",
                        "Missing required parameter: 'body.model'.",
                        "body.model",
                        lineno,
                    )
                elif model is None:
                    model = line_model
                elif line_model != model:
                    add(
                        "model_mismatch",
                        f"All requests in a batch must use the same model: this line uses "
                        f"'{line_model}' but earlier lines use '{model}'.",
                        "body.model",
                        lineno,
                    )
                if b.endpoint == "/v1/embeddings":
                    embedding_inputs += embedding_input_count(body)
                tokens += estimate_input_tokens(b.endpoint, body)
                marker = body.get("emulator")
                flag = 0
                scripted = self._take(self._failures, self._failure_uses, custom_id)
                if scripted is not None:
                    b.scripted[custom_id] = scripted
                if (
                    check_body(b.endpoint, body) is not None
                    or scripted is not None
                    or (
                        isinstance(marker, dict)
                        and isinstance(marker.get("status_code"), int)
                        and marker["status_code"] >= 400
                    )
                ):
                    flag |= _FLAG_FAIL
                stall = self._take(self._stalls, self._stall_uses, custom_id) is not None
                if stall or (isinstance(marker, dict) and marker.get("stall")):
                    flag |= _FLAG_STALL
                offsets.append(start)
                flags.append(flag)
        if count == 0:
            add("empty_file", "The batch input file is empty.")
        if embedding_inputs > self.limits.max_embedding_inputs:
            add(
                "too_many_embedding_inputs",
                f"The batch has {embedding_inputs:,} embedding inputs; the limit is "
                f"{self.limits.max_embedding_inputs:,} per batch.",
            )
        if errors:
            return errors
        assert model is not None
        budget = self._budgets.get(model)
        if budget is not None:
            enqueued = sum(
                o.tokens
                for o in self._active.values()
                if o.model == model and o.status in ("in_progress", "finalizing", "cancelling")
            )
            if enqueued + tokens > budget:
                add(
                    "token_limit_exceeded",
                    f"Enqueued token limit reached for {model} in organization "
                    f"{self.organization}. Limit: {budget:,} enqueued tokens. Please try again "
                    "once some in_progress batches have been completed.",
                )
                return errors
        b.model = model
        b.tokens = tokens
        b.offsets = offsets
        b.flags = flags
        # Processing order: a shuffle seeded by the batch id (deterministic, not the input
        # order); stalled requests go last because they never finish.
        runnable = [i for i in range(len(flags)) if not flags[i] & _FLAG_STALL]
        random.Random(b.id).shuffle(runnable)
        stalled = [i for i in range(len(flags)) if flags[i] & _FLAG_STALL]
        b.order = array("l", runnable + stalled)
        b.runnable = len(runnable)
        prefix = array("l", [0])
        failed = 0
        for i in runnable:
            failed += flags[i] & _FLAG_FAIL
            prefix.append(failed)
        b.fail_prefix = prefix
        return errors

    def _failure_for(
        self, b: _Batch, custom_id: str, body: dict[str, Any]
    ) -> RequestFailure | None:
        endpoint = b.endpoint
        # A body its endpoint refuses fails as the real API fails it, before anything a
        # test scripted: the request never gets as far as the model.
        refused = check_body(endpoint, body)
        if refused is not None:
            return RequestFailure(
                status_code=400,
                code=refused.code,
                message=refused.message,
                type="invalid_request_error",
                param=refused.param,
            )
        scripted = b.scripted.get(custom_id)
        if scripted is not None:
            return scripted
        marker = body.get("emulator")
        if isinstance(marker, dict) and isinstance(marker.get("status_code"), int):
            status = marker["status_code"]
            if status >= 400:
                return RequestFailure(
                    status_code=status,
                    code=marker.get("code", "context_length_exceeded" if status < 500 else None),
                    message=marker.get("message", f"Emulated failure with status {status}."),
                    type=marker.get("type"),
                    param=marker.get("param"),
                )
        return None

    def _write_results(
        self, b: _Batch, done: int, not_run_code: str, not_run_message: str, t: float
    ) -> None:
        """Write the output and error files: ``done`` requests ran, the rest never did."""
        rec = self._files.get(b.input_file_id)
        path = rec.path if rec is not None else os.path.join(self._files_dir, b.input_file_id)
        out_id, err_id = ids.file_id(), ids.file_id()
        out_path = os.path.join(self._files_dir, out_id)
        err_path = os.path.join(self._files_dir, err_id)
        completed = failed = 0
        in_tok = out_tok = reasoning = 0
        out_bytes = err_bytes = 0
        dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
        # Result files are opened on first write: most small batches need only one of them.
        sinks: dict[str, BinaryIO] = {}

        def write(kind: str, data: bytes) -> None:
            sink = sinks.get(kind)
            if sink is None:
                sink = sinks[kind] = open(  # noqa: SIM115 - closed in the finally below
                    out_path if kind == "output" else err_path, "wb", buffering=256 * 1024
                )
            sink.write(data)

        try:
            with open(path, "rb") as src:
                for rank, idx in enumerate(b.order):
                    src.seek(b.offsets[idx])
                    obj = json.loads(src.readline())
                    custom_id = obj["custom_id"]
                    line: dict[str, Any] = {
                        "id": ids.batch_request_id(b.id, custom_id),
                        "custom_id": custom_id,
                        "response": None,
                        "error": None,
                    }
                    target = "error"
                    if rank < done:
                        body = obj["body"]
                        ran_at = int(b.run_started + b.run_duration * rank / max(1, b.runnable))
                        # The flag fixed at validation decides, so live request_counts
                        # and the final files always agree.
                        failure = (
                            (self._failure_for(b, custom_id, body) or RequestFailure())
                            if b.flags[idx] & _FLAG_FAIL
                            else None
                        )
                        if failure is not None:
                            failed += 1
                            payload = failure.line_body()
                            status = failure.status_code
                        else:
                            completed += 1
                            payload = response_body(
                                b.endpoint, body, b.model or "", ran_at, b.id + custom_id
                            )
                            status = 200
                            target = "output"
                            i, o, r = usage_of(b.endpoint, payload)
                            in_tok, out_tok, reasoning = in_tok + i, out_tok + o, reasoning + r
                        line["response"] = {
                            "status_code": status,
                            "request_id": ids.line_request_id(b.id, custom_id),
                            "body": payload,
                        }
                    else:
                        line["error"] = {"code": not_run_code, "message": not_run_message}
                    data = (dumps(line) + "\n").encode()
                    write(target, data)
                    if target == "output":
                        out_bytes += len(data)
                    else:
                        err_bytes += len(data)
        finally:
            for sink in sinks.values():
                sink.close()
        created = int(t)
        expires = created + (b.output_expires_after or THIRTY_DAYS)
        for file_id, fpath, size, kind in (
            (out_id, out_path, out_bytes, "output"),
            (err_id, err_path, err_bytes, "error"),
        ):
            if size == 0:
                continue
            self._store_file(
                FileRecord(
                    id=file_id,
                    seq=self._next_seq(),
                    filename=f"{b.id}_{kind}.jsonl",
                    purpose="batch_output",
                    bytes=size,
                    created_at=created,
                    expires_at=expires,
                    path=fpath,
                )
            )
            if kind == "output":
                b.output_file_id = file_id
            else:
                b.error_file_id = file_id
        b.final_counts = (b.total, completed, failed)
        b.usage = {
            "input_tokens": in_tok,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": out_tok,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": in_tok + out_tok,
        }


# ---------------------------------------------------------------------- helpers


def duration(seconds: float) -> str:
    """A wait as OpenAI's rate-limit headers write it: ``20ms``, ``8.64s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    minutes, rest = divmod(round(seconds, 2), 60)
    secs = f"{rest:.2f}".rstrip("0").rstrip(".")
    return f"{int(minutes)}m{secs}s" if minutes else f"{secs}s"


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _list(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        # Never "data: [] with has_more: true": the SDK's paginator would stop silently.
        "has_more": bool(data) and has_more,
    }


def _missing(key: str) -> ApiError:
    return ApiError(
        400,
        f"Missing required parameter: '{key}'.",
        param=key,
        code="missing_required_parameter",
    )


def _invalid_value(param: str, value: Any, allowed: Iterable[str]) -> ApiError:
    choices = ", ".join(f"'{a}'" for a in allowed)
    return ApiError(
        400,
        f"Invalid value: '{value}'. Supported values are: {choices}.",
        param=param,
        code="invalid_value",
    )


_JSON_TYPE_NAMES = {
    bool: "a boolean",
    int: "an integer",
    float: "a decimal",
    str: "a string",
    list: "an array",
    dict: "an object",
    type(None): "null",
}


def _invalid_type(param: str, expected: str, value: Any) -> ApiError:
    got = _JSON_TYPE_NAMES.get(type(value), "an unsupported type")
    return ApiError(
        400,
        f"Invalid type for '{param}': expected {expected}, but got {got} instead.",
        param=param,
        code="invalid_type",
    )


def _expiry_seconds(value: int, param: str) -> int:
    if value < MIN_EXPIRES_AFTER:
        raise ApiError(
            400,
            f"Invalid '{param}': integer below minimum value. Expected a value >= "
            f"{MIN_EXPIRES_AFTER}, but got {value} instead.",
            param=param,
            code="integer_below_min_value",
        )
    if value > THIRTY_DAYS:
        raise ApiError(
            400,
            f"Invalid '{param}': integer above maximum value. Expected a value <= "
            f"{THIRTY_DAYS}, but got {value} instead.",
            param=param,
            code="integer_above_max_value",
        )
    return value


def _expiry_anchor(anchor: Any, param: str) -> None:
    if not isinstance(anchor, str):
        raise _invalid_type(f"{param}.anchor", "a string", anchor)
    if anchor != "created_at":
        raise _invalid_value(f"{param}.anchor", anchor, ("created_at",))


def _json_expires_after(value: Any, param: str) -> int | None:
    """``output_expires_after`` of a JSON body: an object with exactly ``anchor`` (only
    ``created_at``) and an integer ``seconds`` in 3600..2592000 (the SPEC's schema)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid_type(param, "an object", value)
    for key in value:
        if key not in ("anchor", "seconds"):
            raise ApiError(
                400,
                f"Unknown parameter: '{param}.{key}'.",
                param=f"{param}.{key}",
                code="unknown_parameter",
            )
    for key in ("anchor", "seconds"):
        if key not in value:
            raise _missing(f"{param}.{key}")
    _expiry_anchor(value["anchor"], param)
    seconds = value["seconds"]
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise _invalid_type(f"{param}.seconds", "an integer", seconds)
    return _expiry_seconds(seconds, f"{param}.seconds")


_FORM_INTEGER = re.compile(r"-?[0-9]+")


def _form_expires_after(fields: dict[str, str]) -> int | None:
    """``expires_after`` of a multipart upload, flattened as ``expires_after[anchor]`` and
    ``expires_after[seconds]`` (how the SDK sends it); both or neither must be there."""
    param = "expires_after"
    given = {k: v for k, v in fields.items() if k == param or k.startswith(param + "[")}
    if not given:
        return None
    for key in given:
        if key not in ("expires_after[anchor]", "expires_after[seconds]"):
            name = key.replace("[", ".").replace("]", "")
            raise ApiError(
                400, f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter"
            )
    for key in ("anchor", "seconds"):
        if f"{param}[{key}]" not in given:
            raise _missing(f"{param}.{key}")
    _expiry_anchor(given["expires_after[anchor]"], param)
    raw = given["expires_after[seconds]"]
    if not _FORM_INTEGER.fullmatch(raw):
        raise _invalid_type(f"{param}.seconds", "an integer", raw)
    return _expiry_seconds(int(raw), f"{param}.seconds")


def _check_metadata(metadata: Any) -> dict[str, str] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise ApiError(400, "Invalid type for 'metadata': expected an object.", param="metadata")
    if len(metadata) > 16:
        raise ApiError(
            400,
            f"Invalid 'metadata': too many properties. Expected at most 16, got {len(metadata)}.",
            param="metadata",
        )
    for key, value in metadata.items():
        if len(key) > 64:
            raise ApiError(
                400,
                f"Invalid 'metadata': key '{key[:20]}...' is longer than 64 characters.",
                param="metadata",
            )
        if not isinstance(value, str) or len(value) > 512:
            raise ApiError(
                400,
                f"Invalid 'metadata': the value of '{key}' must be a string of at most "
                "512 characters.",
                param="metadata",
            )
    return dict(metadata)
