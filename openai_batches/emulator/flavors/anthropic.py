"""Anthropic's Message Batches API on the wire (``shared/reference/other-providers.md`` §2).

==========================================================  =================================
``POST   /v1/messages/batches``                             create from inline ``requests``
``GET    /v1/messages/batches``                             list: newest first, ``after_id`` /
                                                            ``before_id`` / ``limit`` (1-1000)
``GET    /v1/messages/batches/{id}``                        retrieve
``POST   /v1/messages/batches/{id}/cancel``                 cancel
``DELETE /v1/messages/batches/{id}``                        delete (only once ended)
``GET    /v1/messages/batches/{id}/results``                the results, streamed as JSONL
==========================================================  =================================

Auth is ``x-api-key`` (or ``Authorization: Bearer`` with the key or one of ``auth_tokens``,
as newer SDKs send it) plus a required ``anthropic-version``. Errors are
``{"type": "error", "error": {"type", "message"}, "request_id"}`` with a ``request-id``
header. The ``beta`` query of the SDK's beta resource is ignored.

A create checks the envelope at once (1 to 100,000 requests, ``custom_id`` 1-64 of
``[a-zA-Z0-9_-]`` and unique, ``params`` an object, the body at most 256 MB: 413
``request_too_large``); each request's ``params`` are checked only when it runs (an
``errored`` result). The requests are kept as a JSONL file on disk and run by the shared core,
so the clock, stalls, scripted failures and faults work as for OpenAI. There is no
validating phase, no batch-level failure, no metadata and no webhook; a batch expires after
24 hours (unrun requests ``expired``); results stay downloadable for 29 days after
creation, then ``archived_at`` is set and the results answer 404.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .. import ids
from ..records import DAY, PROFILES, TERMINAL, ApiError, Limits, RequestFailure, _Batch
from ..validation import BodyError
from . import Flavor
from .anthropic_messages import ENDPOINT, check_message_body, message_body

if TYPE_CHECKING:
    from ..app import EmulatorApp, Request
    from ..core import Emulator

RETENTION = 29 * DAY
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_BATCHES = "/v1/messages/batches"
_BATCH = re.compile(r"^/v1/messages/batches/([^/]+)$")
_ACTION = re.compile(r"^/v1/messages/batches/([^/]+)/(cancel|results)$")

#: HTTP status -> ``error.type`` [A-ERR].
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_type(status: int) -> str:
    if status in ERROR_TYPES:
        return ERROR_TYPES[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def rfc3339(ts: float | None) -> str | None:
    """``2024-09-24T18:37:24.100435Z``, the way Anthropic writes times."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _invalid(message: str) -> ApiError:
    return ApiError(400, message)


class AnthropicFlavor(Flavor):
    """Message Batches: inline requests in, one JSONL of results out."""

    name = "anthropic"
    base_path = ""  # the SDK's base_url is the server root; it adds /v1/messages/batches
    one_model = False  # each request names its own model
    webhooks = False
    default_input_expiry = None  # the stored requests go when the batch is deleted

    def __init__(self, emulator: Emulator, *, auth_tokens: Iterable[str] = ()) -> None:
        super().__init__(emulator)
        #: Bearer tokens accepted besides the key (``Anthropic(auth_token=...)``).
        self.auth_tokens = set(auth_tokens)
        # Requests per batch (the core knows them only once validated) and the root URL
        # ``results_url`` points at (the host the last call came in on).
        self._sizes: dict[str, int] = {}
        self.root_url = "http://127.0.0.1"

    def default_limits(self) -> Limits:
        return Limits(max_requests=100_000, max_batch_file_bytes=256 * 1024 * 1024)

    def new_batch_id(self) -> str:
        return "msgbatch_01" + ids.file_id()[len("file-") :]

    # ------------------------------------------------------------------ auth and errors

    def authenticate(self, environ: dict[str, Any]) -> None:
        key = environ.get("HTTP_X_API_KEY", "").strip()
        scheme, _, bearer = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        given = key or (bearer.strip() if scheme.lower() == "bearer" else "")
        if not given:
            raise ApiError(401, "x-api-key header is required")
        configured = self.emu.api_key
        if configured is not None or self.auth_tokens:
            accepted = given == configured or (not key and given in self.auth_tokens)
            if not accepted:
                raise ApiError(401, "invalid x-api-key")
        version = environ.get("HTTP_ANTHROPIC_VERSION", "").strip()
        if not version:
            raise ApiError(400, "anthropic-version: header is required")
        if not _VERSION.match(version):
            raise ApiError(400, f"anthropic-version: invalid version '{version}'")

    def error_body(self, err: ApiError, request_id: str) -> dict[str, Any]:
        # The core raises with OpenAI's default type; the status decides unless a more
        # specific Anthropic type was given.
        specific = err.type in ERROR_TYPES.values() and err.type != "invalid_request_error"
        kind = err.type if specific else error_type(err.status)
        return {
            "type": "error",
            "error": {"type": kind, "message": err.message},
            "request_id": request_id,
        }

    def response_headers(self, request_id: str) -> list[tuple[str, str]]:
        return [("request-id", request_id)]

    def ratelimit_headers(
        self, limit: int, remaining: int, reset: float, tokens: int
    ) -> dict[str, str]:
        return {
            "anthropic-ratelimit-requests-limit": str(limit),
            "anthropic-ratelimit-requests-remaining": str(remaining),
            "anthropic-ratelimit-requests-reset": rfc3339(self.emu.now() + reset) or "",
        }

    def not_found(self, kind: str, object_id: str) -> ApiError:
        noun = "message_batch" if kind == "Batch" else kind.lower()
        return ApiError(404, f"{noun} {object_id} not found")

    def cannot_find_file(self, file_id: str) -> ApiError:
        return ApiError(500, f"the stored requests {file_id} are gone")

    # ------------------------------------------------------------------ routes

    def is_download(self, path: str) -> bool:
        m = _ACTION.match(path)
        return m is not None and m.group(2) == "results"

    def route(self, app: EmulatorApp, request: Request) -> Iterable[bytes]:
        emu, method, path = self.emu, request.method, request.path
        self.root_url = request.root_url
        if path == _BATCHES:
            if method == "POST":
                payload = app.read_json(request.environ, emu.limits.max_batch_file_bytes)
                return app.answer(request, emu.create_batch(payload))
            if method == "GET":
                return app.answer(request, self.list_batches(app, request.query))
            raise app.not_allowed(method, path)
        if m := _ACTION.match(path):
            batch_id, action = m.groups()
            if action == "cancel":
                if method != "POST":
                    raise app.not_allowed(method, path)
                return app.answer(request, emu.cancel_batch(batch_id))
            if method != "GET":
                raise app.not_allowed(method, path)
            return self.results(app, request, batch_id)
        if m := _BATCH.match(path):
            if method == "GET":
                return app.answer(request, emu.retrieve_batch(m.group(1)))
            if method == "DELETE":
                return app.answer(request, self.delete(m.group(1)))
            raise app.not_allowed(method, path)
        raise ApiError(404, f"Not found: {method} {path}")

    def list_batches(self, app: EmulatorApp, query: dict[str, list[str]]) -> dict[str, Any]:
        after = query.get("after_id", [None])[0]
        before = query.get("before_id", [None])[0]
        if after and before:
            raise _invalid("Only one of before_id and after_id may be given.")
        limit = app.int_param(query, "limit", 20, 1, 1000)
        batches, more = self.emu.page_batches(limit=limit, after=after, before=before)
        now = self.emu.now()
        data = [self.present(b, now) for b in batches]
        return {
            "data": data,
            "has_more": bool(data) and more,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }

    def results(self, app: EmulatorApp, request: Request, batch_id: str) -> Iterable[bytes]:
        b = self.emu.find_batch(batch_id)
        if b.status not in TERMINAL:
            raise _invalid(
                f"Message batch {batch_id} is still processing; its results are available "
                "once processing_status is 'ended'."
            )
        if self._archived(b, self.emu.now()):
            raise ApiError(404, f"The results of message batch {batch_id} have been archived.")
        path, size, _ = self.emu.open_content(b.output_file_id or "")
        truncate = request.fault is not None and request.fault.kind == "truncate"
        return app.download(
            request, path, size, f"{batch_id}_results.jsonl", truncate, "application/binary"
        )

    def delete(self, batch_id: str) -> dict[str, Any]:
        b = self.emu.find_batch(batch_id)
        if b.status not in TERMINAL:
            raise _invalid(
                f"Message batch {batch_id} cannot be deleted while it is still processing; "
                "cancel it first."
            )
        self.emu.forget_batch(batch_id)
        self._sizes.pop(batch_id, None)
        return {"id": batch_id, "type": "message_batch_deleted"}

    # ------------------------------------------------------------------ create

    def create_batch(self, payload: Any, request: Request | None = None) -> dict[str, Any]:
        """Check the envelope, store the requests as JSONL, start the batch."""
        requests = self._requests(payload)
        emu = self.emu
        path = os.path.join(emu.tmp_dir, f"requests-{ids.request_id()}")
        size = 0
        with open(path, "wb") as fh:
            for item in requests:
                line = {
                    "custom_id": item["custom_id"],
                    "method": "POST",
                    "url": ENDPOINT,
                    "body": item["params"],
                }
                data = (json.dumps(line, separators=(",", ":")) + "\n").encode()
                fh.write(data)
                size += len(data)
        stored = emu.store_upload(path, "requests.jsonl", "batch", size, None)
        # Processing starts at create: there is no validating phase to wait through.
        batch = emu.start_batch(
            endpoint=ENDPOINT,
            input_file_id=stored["id"],
            completion_window="24h",
            timing=replace(PROFILES[emu.timing], validate=0),
        )
        self._sizes[batch.id] = len(requests)
        return self.present(batch, emu.now())

    def _requests(self, payload: Any) -> list[dict[str, Any]]:
        if not isinstance(payload, dict):
            raise _invalid("Input should be a valid dictionary")
        for key in payload:
            if key != "requests":
                raise _invalid(f"{key}: Extra inputs are not permitted")
        requests = payload.get("requests")
        if requests is None:
            raise _invalid("requests: Field required")
        if not isinstance(requests, list):
            raise _invalid("requests: Input should be a valid list")
        if not requests:
            raise _invalid("requests: List should have at least 1 item after validation, not 0")
        cap = self.emu.limits.max_requests
        if len(requests) > cap:
            raise _invalid(
                f"requests: List should have at most {cap} items after validation, "
                f"not {len(requests)}"
            )
        seen: dict[str, int] = {}
        for i, item in enumerate(requests):
            where = f"requests.{i}"
            if not isinstance(item, dict):
                raise _invalid(f"{where}: Input should be a valid dictionary")
            for key in item:
                if key not in ("custom_id", "params"):
                    raise _invalid(f"{where}.{key}: Extra inputs are not permitted")
            for key in ("custom_id", "params"):
                if key not in item:
                    raise _invalid(f"{where}.{key}: Field required")
            custom_id = item["custom_id"]
            if not isinstance(custom_id, str):
                raise _invalid(f"{where}.custom_id: Input should be a valid string")
            if not custom_id:
                raise _invalid(f"{where}.custom_id: String should have at least 1 character")
            if len(custom_id) > 64:
                raise _invalid(f"{where}.custom_id: String should have at most 64 characters")
            if not CUSTOM_ID.match(custom_id):
                raise _invalid(
                    f"{where}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
                )
            if custom_id in seen:
                raise _invalid(
                    f"{where}.custom_id: '{custom_id}' is already used by requests."
                    f"{seen[custom_id]}; custom_id values must be unique within a batch"
                )
            seen[custom_id] = i
            if not isinstance(item["params"], dict):
                raise _invalid(f"{where}.params: Input should be a valid dictionary")
        return requests

    # ------------------------------------------------------------------ the runner

    def line_endpoint(self, b: _Batch, url: Any) -> str | None:
        return ENDPOINT

    def check_body(self, endpoint: str, body: dict[str, Any]) -> BodyError | None:
        return check_message_body(body)

    def result_body(self, b: _Batch, body: dict[str, Any], ran_at: int, key: str) -> dict[str, Any]:
        return message_body(body, key)

    def results_expire_at(self, b: _Batch, created: int) -> int | None:
        return int(b.created) + RETENTION

    def result_line(
        self,
        b: _Batch,
        custom_id: str,
        *,
        status: int | None,
        payload: dict[str, Any] | None,
        failure: RequestFailure | None,
        not_run: str,
    ) -> tuple[str, dict[str, Any]]:
        result: dict[str, Any]
        if status is None:
            result = {"type": "canceled" if not_run == "cancelled" else "expired"}
        elif failure is not None:
            kind = failure.type if failure.type in ERROR_TYPES.values() else None
            result = {
                "type": "errored",
                "error": {
                    "type": "error",
                    "error": {
                        "type": kind or error_type(failure.status_code),
                        "message": failure.message,
                    },
                    "request_id": ids.line_request_id(b.id, custom_id),
                },
            }
        else:
            result = {"type": "succeeded", "message": payload}
        # One results file: every request has a line, whatever became of it.
        return "output", {"custom_id": custom_id, "result": result}

    # ------------------------------------------------------------------ the batch object

    def _archived(self, b: _Batch, now: float) -> bool:
        return now >= b.created + RETENTION

    def present(self, b: _Batch, now: float) -> dict[str, Any]:
        size = self._sizes.get(b.id, b.total)
        ended = b.status in TERMINAL
        counts = {"processing": size, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if ended:
            # Only the end tells: every count but ``processing`` stays 0 until then.
            _, succeeded, errored = b.counts(now)
            unrun = max(0, size - succeeded - errored)
            counts = {
                "processing": 0,
                "succeeded": succeeded,
                "errored": errored,
                "canceled": unrun if b.status == "cancelled" else 0,
                "expired": unrun if b.status != "cancelled" else 0,
            }
        s = b.stamps
        ended_at = next(
            (
                s[k]
                for k in ("completed_at", "cancelled_at", "expired_at", "failed_at")
                if s.get(k) is not None
            ),
            None,
        )
        archived = self._archived(b, now)
        return {
            "id": b.id,
            "type": "message_batch",
            "processing_status": (
                "ended" if ended else "canceling" if b.status == "cancelling" else "in_progress"
            ),
            "request_counts": counts,
            "ended_at": rfc3339(ended_at),
            "created_at": rfc3339(b.created),
            "expires_at": rfc3339(b.created + DAY),
            "cancel_initiated_at": rfc3339(s.get("cancelling_at")),
            "archived_at": rfc3339(b.created + RETENTION) if archived else None,
            "results_url": (
                f"{self.root_url}{_BATCHES}/{b.id}/results" if ended and not archived else None
            ),
        }
