"""The emulator's shared core: state and the batch lifecycle, independent of HTTP and of any
provider's wire format.

:class:`Emulator` owns the files (bytes on disk under ``data_dir``, metadata in memory), the
batches, the scripted faults and failures, and the clock. State moves lazily: every API
call (and the server's ticker thread) runs :meth:`Emulator.tick`, which applies every
transition that is due at the clock's ``now`` in chronological order. Tests with a
:class:`~openai_batches.emulator.clock.ManualClock` therefore see exactly the same history
every run.

The request runner (:mod:`.runner`) validates input files and writes result files; a
flavour (:mod:`.flavors`) gives the provider's URLs, auth, errors and object shapes.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import math
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from . import ids, runner
from .clock import Clock, ManualClock, RealClock
from .records import (  # noqa: F401 - re-exported: the core's public names
    DAY,
    FAULT_KINDS,
    MIN_EXPIRES_AFTER,
    NOT_DOWNLOADABLE,
    PROFILES,
    TERMINAL,
    THIRTY_DAYS,
    UPLOAD_PURPOSES,
    ApiError,
    Fault,
    FileRecord,
    Limits,
    RequestFailure,
    Timing,
    _Batch,
    error_type_for,
)
from .webhooks import Delivery, WebhookDispatcher, event_body

if TYPE_CHECKING:
    from .flavors import Flavor


class Emulator:
    """An in-process batch service: OpenAI's Files + Batches API, or another provider's.

    ``flavor`` picks the wire format (``"openai"``, the default; ``"azure"``;
    ``"anthropic"``) and ``flavor_options`` that flavour's own settings (see the classes in
    :mod:`openai_batches.emulator.flavors`). ``limits`` default to the flavour's.

    ``timing`` is ``"instant"``, ``"fast"`` or ``"realistic"`` (see :data:`PROFILES`).
    ``clock`` is a :class:`Clock`, ``"manual"`` or ``"real"``; by default ``instant`` uses
    a manual clock (tests step it with :meth:`advance`) and the other profiles real time.
    ``api_key``: when set, only that key is accepted (OpenAI: ``Bearer <api_key>``; Azure:
    ``api-key``; Anthropic: ``x-api-key``); otherwise any non-empty credential is. ``data_dir``: where file bytes live (a temporary directory, removed by
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
        flavor: str = "openai",
        flavor_options: dict[str, Any] | None = None,
    ) -> None:
        from .flavors import make_flavor

        if timing not in PROFILES:
            raise ValueError(f"timing must be one of {sorted(PROFILES)}")
        self.timing = timing
        self.api_key = api_key
        self.flavor: Flavor = make_flavor(flavor, self, dict(flavor_options or {}))
        self.limits = limits or self.flavor.default_limits()
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
        # The most input tokens each model ever had enqueued at once: what tests compare
        # with a client's budget to show it was never exceeded.
        self._peak_enqueued: dict[str, int] = {}
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
        the first call, on the emulator's clock); return the flavour's rate-limit headers."""
        now = self.clock.now()
        with self._lock:
            start, used = self._window
            if now >= start + 60:
                start, used = now, 0
            used += 1
            self._window = (start, used)
        rpm = self.limits.requests_per_minute
        return self.flavor.ratelimit_headers(
            rpm, max(0, rpm - used), start + 60 - now, self.limits.tokens_per_minute
        )

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

    def token_budget(self, model: str | None) -> int | None:
        """The enqueued-token cap of ``model`` (None: no cap)."""
        return None if model is None else self._budgets.get(model)

    def peak_enqueued_tokens(self, model: str) -> int:
        """The most input tokens ``model`` ever had enqueued at once (0: none ever)."""
        with self._lock:
            self._run_due(self.clock.now())
            return self._peak_enqueued.get(model, 0)

    def has_token_budgets(self) -> bool:
        return bool(self._budgets)

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
            present = self.flavor.present
            return [present(self._batches[i], now) for i in reversed(self._batch_order)]

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
        return self.store_upload(path, filename, purpose, len(content), None)

    def state(self) -> dict[str, Any]:
        """Everything, for debugging (``GET /_emulator/state``)."""
        with self._lock:
            self._run_due(self.clock.now())
            now = self.clock.now()
            return {
                "now": now,
                "timing": self.timing,
                "clock": type(self.clock).__name__,
                "flavor": self.flavor.name,
                "batches": [
                    self.flavor.present(self._batches[i], now) for i in reversed(self._batch_order)
                ],
                "files": [f.as_dict() for f in self._files.values()],
                "faults": [f.as_dict() for f in self._faults],
                "failures": {k: vars(v) for k, v in self._failures.items()},
                "stalls": sorted(self._stalls),
                "token_budgets": dict(self._budgets),
                "peak_enqueued_tokens": dict(self._peak_enqueued),
                "webhook_url": self.webhook_url,
                "events": list(self.events),
                "webhook_deliveries": [d.as_dict() for d in self.webhooks.deliveries],
            }

    # ------------------------------------------------------------------ files

    @property
    def tmp_dir(self) -> str:
        """Where uploads stream to before they are stored."""
        return self._tmp_dir

    def store_upload(
        self, tmp_path: str, filename: str, purpose: str, size: int, expires_after: int | None
    ) -> dict[str, Any]:
        """Keep an uploaded (or generated) file: move it from ``tmp_path`` and register it.
        A batch input with no ``expires_after`` gets the flavour's default expiry."""
        file_id = ids.file_id()
        path = os.path.join(self._files_dir, file_id)
        os.replace(tmp_path, path)
        with self._lock:
            created = int(self.clock.now())
            if expires_after is None and purpose == "batch":
                expires_after = self.flavor.default_input_expiry
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
            raise self.flavor.not_found("File", file_id)
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
            from .flavors.wire import list_body

            start = 0
            if after is not None:
                found = [i for i, r in enumerate(recs) if r.id == after]
                if not found:
                    return list_body([], False)
                start = found[0] + 1
            chunk = recs[start : start + limit]
            return list_body([r.as_dict() for r in chunk], start + limit < len(recs))

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
        """Create a batch from a create call's JSON body, in the flavour's wire format."""
        return self.flavor.create_batch(payload)

    def start_batch(
        self,
        *,
        endpoint: str,
        input_file_id: Any,
        completion_window: str,
        metadata: dict[str, str] | None = None,
        output_expires_after: int | None = None,
        run_endpoint: str | None = None,
        window: float = DAY,
        timing: Timing | None = None,
        admit: Callable[[_Batch], None] | None = None,
    ) -> _Batch:
        """Create a batch over a stored input file (the flavours' create calls end here).

        ``run_endpoint`` is what the lines run on when the flavour finds it in the file
        (Azure); ``admit`` may refuse the batch under the lock, before it exists."""
        with self._lock:
            now = self.clock.now()
            self._expire_files(now)
            rec = self._files.get(input_file_id) if isinstance(input_file_id, str) else None
            if rec is None:
                raise self.flavor.cannot_find_file(str(input_file_id))
            if rec.purpose != "batch":
                raise ApiError(
                    400,
                    f"The input file {input_file_id} has purpose '{rec.purpose}'; "
                    "batches need a file uploaded with purpose 'batch'.",
                    param="input_file_id",
                )
            batch = _Batch(
                id=self.flavor.new_batch_id(),
                seq=self._next_seq(),
                endpoint=endpoint,
                run_endpoint=endpoint if run_endpoint is None else run_endpoint,
                input_file_id=input_file_id,
                completion_window=completion_window,
                metadata=metadata,
                output_expires_after=output_expires_after,
                created=now,
                timing=timing or PROFILES[self.timing],
                window=window,
            )
            if admit is not None:
                admit(batch)
            self._batches[batch.id] = batch
            self._batch_order.append(batch.id)
            self._active[batch.id] = batch
            self._schedule(batch)
            return batch

    def cannot_find_file(self, file_id: str) -> ApiError:
        return self.flavor.cannot_find_file(file_id)

    def _batch(self, batch_id: str) -> _Batch:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise self.flavor.not_found("Batch", batch_id)
        return batch

    def find_batch(self, batch_id: str) -> _Batch:
        """The batch (after every due transition), or the flavour's 404."""
        with self._lock:
            self._run_due(self.clock.now())
            return self._batch(batch_id)

    def retrieve_batch(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            return self.flavor.present(self.find_batch(batch_id), self.clock.now())

    def page_batches(
        self, *, limit: int, after: str | None = None, before: str | None = None
    ) -> tuple[list[_Batch], bool]:
        """One page of batches, newest first: the ``limit`` older than ``after`` (or newer
        than ``before``, the ones closest to it), and whether more lie that way."""
        with self._lock:
            self._run_due(self.clock.now())
            order = self._batch_order
            n = len(order)
            if before is not None:
                batch = self._batches.get(before)
                if batch is None:
                    return [], False
                # ``order`` is oldest first: the newer ones sit after ``before``.
                start = self._batch_order_index(batch) + 1
                end = min(n, start + limit)
                return [self._batches[order[i]] for i in reversed(range(start, end))], end < n
            start = 0
            if after is not None:
                batch = self._batches.get(after)
                if batch is None:
                    return [], False
                start = n - self._batch_order_index(batch)
            end = min(n, start + limit)
            return [self._batches[order[n - 1 - i]] for i in range(start, end)], end < n

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

    def forget_batch(self, batch_id: str) -> None:
        """Delete an ended batch and its result files (Anthropic's delete call)."""
        with self._lock:
            batch = self._batch(batch_id)
            del self._batches[batch_id]
            self._batch_order.remove(batch_id)
            for file_id in (batch.output_file_id, batch.error_file_id, batch.input_file_id):
                rec = self._files.get(file_id or "")
                if rec is not None:
                    self._remove_file(rec)

    def budget_refusal(self, model: str | None, tokens: int) -> str | None:
        """Why ``tokens`` more input tokens of ``model`` do not fit its enqueued-token budget
        (None when they fit or there is no budget)."""
        budget = self.token_budget(model)
        if budget is None:
            return None
        enqueued = self.enqueued_tokens(model)
        if enqueued + tokens <= budget:
            return None
        return (
            f"Enqueued token limit reached for {model} in organization {self.organization}. "
            f"Limit: {budget:,} enqueued tokens. Please try again once some in_progress "
            "batches have been completed."
        )

    def enqueued_tokens(self, model: str | None) -> int:
        """Input tokens of ``model`` in batches that hold budget (past validation, unended)."""
        return sum(
            o.tokens
            for o in self._active.values()
            if o.model == model and o.status in ("in_progress", "finalizing", "cancelling")
        )

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
            return self.flavor.present(batch, now)

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
            return min(finish, b.expires) if self.flavor.expires else finish
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
            errors = runner.validate_input(self, b)
            if errors:
                self._finish(b, "failed", t, errors=errors)
            else:
                b.status = "in_progress"
                b.stamps["in_progress_at"] = int(t)
                b.run_started = t
                b.run_duration = b.timing.run_duration(b.total)
                if b.model is not None:
                    enqueued = self.enqueued_tokens(b.model)
                    if enqueued > self._peak_enqueued.get(b.model, 0):
                        self._peak_enqueued[b.model] = enqueued
        elif b.status == "in_progress":
            if (
                self.flavor.expires
                and t >= b.expires
                and (b.runnable < b.total or b.run_started + b.run_duration > t)
            ):
                runner.write_results(self, b, b.done_at(b.expires), "expired", t)
                self._finish(b, "expired", t)
            else:
                b.status = "finalizing"
                b.stamps["finalizing_at"] = int(t)
                b.phase_started = t
        elif b.status == "finalizing":
            runner.write_results(self, b, b.runnable, "expired", t)
            self._finish(b, "completed", t)
        elif b.status == "cancelling":
            if b.stamps.get("in_progress_at") is not None:
                done = b.done_at(b.cancel_time if b.cancel_time is not None else t)
                runner.write_results(self, b, done, "cancelled", t)
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
        if self.flavor.webhooks and self.webhook_url and self.webhook_secret:
            self.webhooks.enqueue(self.webhook_url, self.webhook_secret, body, event_type)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
