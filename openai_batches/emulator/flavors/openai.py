"""OpenAI's Files and Batches API on the wire: ``/v1/files``, ``/v1/batches``, bearer auth,
``{"error": {...}}`` bodies, the batch object and OpenAI's result lines.

This is the default flavour and the base of Azure's, which speaks the same shape with other
URLs, auth and limits.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from .. import ids
from ..multipart import MultipartError, parse_multipart
from ..records import DAY, UPLOAD_PURPOSES, ApiError, RequestFailure, _Batch
from ..responses import snapshot
from . import Flavor
from .wire import (
    MIN_EXPIRES_AFTER,
    check_metadata,
    duration,
    form_expires_after,
    invalid_value,
    json_expires_after,
    list_body,
    missing,
)

if TYPE_CHECKING:
    from ..app import EmulatorApp, Request

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
EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."
CANCELLED_MESSAGE = "This request was not executed because the batch was cancelled."


class OpenAIFlavor(Flavor):
    """``/v1/files`` and ``/v1/batches`` exactly as api.openai.com serves them."""

    name = "openai"
    #: The path prefix of every API route (Azure's differ).
    prefix: ClassVar[str] = "/v1"
    endpoints: ClassVar[tuple[str, ...]] = ENDPOINTS
    #: The shortest ``expires_after`` / ``output_expires_after`` accepted.
    min_expires_after: ClassVar[int] = MIN_EXPIRES_AFTER
    #: Upload ``expires_after.seconds`` (dots) as well as ``expires_after[seconds]``.
    dotted_form: ClassVar[bool] = False

    def __init__(self, emulator: Any) -> None:
        super().__init__(emulator)
        p = re.escape(self.prefix)
        self._file = re.compile(rf"^{p}/files/([^/]+)$")
        self._file_content = re.compile(rf"^{p}/files/([^/]+)/content$")
        self._batch = re.compile(rf"^{p}/batches/([^/]+)$")
        self._batch_cancel = re.compile(rf"^{p}/batches/([^/]+)/cancel$")

    # ------------------------------------------------------------------ auth and errors

    def authenticate(self, environ: dict[str, Any]) -> None:
        header = environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, key = header.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise ApiError(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        if self.emu.api_key is not None and key != self.emu.api_key:
            shown = key[:3] + "*" * max(0, len(key) - 7) + key[-4:] if len(key) > 7 else "***"
            raise ApiError(
                401,
                f"Incorrect API key provided: {shown}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )

    def response_headers(self, request_id: str) -> list[tuple[str, str]]:
        return [
            ("x-request-id", request_id),
            ("openai-version", "2020-10-01"),
            ("openai-organization", self.emu.organization),
        ]

    def ratelimit_headers(
        self, limit: int, remaining: int, reset: float, tokens: int
    ) -> dict[str, str]:
        # openai-batch-api.md §6.4 (RL-GUIDE) lists these six; "The reset values are duration
        # strings such as ``20ms``, ``60s`` or ``6m0s``". Which ones the Files and Batches
        # endpoints send is UNCONFIRMED there, so no client of ours relies on them. Batch
        # calls spend no tokens, so the token budget always reads full.
        return {
            "x-ratelimit-limit-requests": str(limit),
            "x-ratelimit-limit-tokens": str(tokens),
            "x-ratelimit-remaining-requests": str(remaining),
            "x-ratelimit-remaining-tokens": str(tokens),
            "x-ratelimit-reset-requests": duration(reset),
            "x-ratelimit-reset-tokens": "0s",
        }

    def not_found(self, kind: str, object_id: str) -> ApiError:
        return ApiError(404, f"No such {kind} object: {object_id}", param="id")

    def cannot_find_file(self, file_id: str) -> ApiError:
        return ApiError(
            400,
            f"Cannot find file {file_id}, or project {self.emu.project} does not have access "
            "to it.",
            param="file_id",
        )

    # ------------------------------------------------------------------ routes

    def is_download(self, path: str) -> bool:
        return self._file_content.match(path) is not None

    def route(self, app: EmulatorApp, request: Request) -> Iterable[bytes]:
        emu = self.emu
        method, path, query = request.method, request.path, request.query
        files, batches = f"{self.prefix}/files", f"{self.prefix}/batches"
        if path == files:
            if method == "POST":
                return app.answer(request, self.create_file(request))
            if method == "GET":
                order = query.get("order", ["desc"])[0]
                if order not in ("asc", "desc"):
                    raise ApiError(
                        400,
                        f"Invalid value: '{order}'. Supported values are: 'asc' and 'desc'.",
                        param="order",
                        code="invalid_value",
                    )
                return app.answer(
                    request,
                    emu.list_files(
                        purpose=query.get("purpose", [None])[0],
                        limit=app.int_param(query, "limit", 10000, 1, 10000),
                        order=order,
                        after=query.get("after", [None])[0],
                    ),
                )
            raise app.not_allowed(method, path)
        if m := self._file_content.match(path):
            if method != "GET":
                raise app.not_allowed(method, path)
            truncate = request.fault is not None and request.fault.kind == "truncate"
            file_path, size, filename = emu.open_content(m.group(1))
            return app.download(request, file_path, size, filename, truncate)
        if m := self._file.match(path):
            if method == "GET":
                return app.answer(request, emu.retrieve_file(m.group(1)))
            if method == "DELETE":
                return app.answer(request, emu.delete_file(m.group(1)))
            raise app.not_allowed(method, path)
        if path == batches:
            if method == "POST":
                payload = app.read_json(request.environ)
                if request.fault is not None and request.fault.kind == "file_not_found":
                    file_id = payload.get("input_file_id") if isinstance(payload, dict) else None
                    raise self.cannot_find_file(str(file_id))
                return self.answer_created(app, request, payload)
            if method == "GET":
                return app.answer(
                    request,
                    self.list_batches(
                        limit=app.int_param(query, "limit", 20, 1, 100),
                        after=query.get("after", [None])[0],
                    ),
                )
            raise app.not_allowed(method, path)
        if m := self._batch_cancel.match(path):
            if method != "POST":
                raise app.not_allowed(method, path)
            return app.answer(request, emu.cancel_batch(m.group(1)))
        if m := self._batch.match(path):
            if method != "GET":
                raise app.not_allowed(method, path)
            return app.answer(request, emu.retrieve_batch(m.group(1)))
        raise ApiError(404, f"Invalid URL ({method} {path})")

    def answer_created(self, app: EmulatorApp, request: Request, payload: Any) -> Iterable[bytes]:
        # Through the emulator's method, so a test can wrap a create (make it land, then fail).
        return app.answer(request, self.emu.create_batch(payload))

    # ------------------------------------------------------------------ files

    def create_file(self, request: Request) -> dict[str, Any]:
        """``POST /files``: stream the multipart body to disk, check it, then store it."""
        emu, environ = self.emu, request.environ
        length = environ.get("CONTENT_LENGTH")
        try:
            form = parse_multipart(
                environ["wsgi.input"],
                environ.get("CONTENT_TYPE", ""),
                int(length) if length else None,
                emu.tmp_dir,
                emu.limits.max_file_bytes,
            )
        except MultipartError as err:
            raise ApiError(400, f"Invalid multipart body: {err}.") from err
        try:
            upload = form.files.get("file")
            if upload is None:
                raise missing("file")
            purpose = form.fields.get("purpose")
            if not purpose:
                raise missing("purpose")
            if purpose not in UPLOAD_PURPOSES:
                raise ApiError(
                    400,
                    f"'{purpose}' is not one of {list(UPLOAD_PURPOSES)} - 'purpose'",
                    param="purpose",
                    code="invalid_value",
                )
            if purpose == "batch" and not upload.filename.lower().endswith(".jsonl"):
                raise ApiError(400, "Invalid file format for Batch API. Must be .jsonl")
            limits = emu.limits
            limit = limits.max_batch_file_bytes if purpose == "batch" else limits.max_file_bytes
            if upload.too_large or upload.size > limit:
                raise ApiError(400, "File is too large.")
            expires_after = form_expires_after(
                form.fields, self.min_expires_after, dots=self.dotted_form
            )
            self.check_upload(purpose, expires_after)
        except ApiError:
            form.discard()
            raise
        return emu.store_upload(upload.path, upload.filename, purpose, upload.size, expires_after)

    def check_upload(self, purpose: str, expires_after: int | None) -> None:
        """Provider rules on an upload beyond OpenAI's (Azure's input-file caps)."""

    # ------------------------------------------------------------------ batches

    def create_batch(self, payload: Any, request: Request | None = None) -> dict[str, Any]:
        """``POST /batches`` (synchronous checks only; the file's content is checked later)."""
        if not isinstance(payload, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        for key in ("input_file_id", "endpoint", "completion_window"):
            if payload.get(key) in (None, ""):
                raise missing(key)
        endpoint = payload["endpoint"]
        if endpoint not in self.endpoints:
            raise invalid_value("endpoint", endpoint, self.endpoints)
        window = payload["completion_window"]
        seconds = self.window_seconds(window)
        metadata = check_metadata(payload.get("metadata"))
        output_expires_after = json_expires_after(
            payload.get("output_expires_after"), "output_expires_after", self.min_expires_after
        )
        batch = self.emu.start_batch(
            endpoint=endpoint,
            input_file_id=payload["input_file_id"],
            completion_window=window,
            window=seconds,
            metadata=metadata,
            output_expires_after=output_expires_after,
            admit=self.admit,
        )
        return self.present(batch, self.emu.now())

    def window_seconds(self, window: Any) -> float:
        """The seconds a ``completion_window`` gives a batch (OpenAI takes only ``24h``)."""
        if window != "24h":
            raise invalid_value("completion_window", window, ("24h",))
        return DAY

    def admit(self, b: _Batch) -> None:
        """Synchronous checks on a batch about to be created (under the emulator's lock);
        raise an :class:`ApiError` to refuse it. Azure's fail-fast quota lives here."""

    def list_batches(self, *, limit: int, after: str | None) -> dict[str, Any]:
        """``GET /batches``: newest first, ``after`` is the last id of the previous page."""
        batches, more = self.emu.page_batches(limit=limit, after=after)
        now = self.emu.now()
        return list_body([self.present(b, now) for b in batches], more)

    def present(self, b: _Batch, now: float) -> dict[str, Any]:
        total, completed, failed = b.counts(now)
        s = b.stamps
        return {
            "id": b.id,
            "object": "batch",
            "endpoint": b.endpoint,
            # The alias the lines use stays in ``model`` (token budgets are keyed by it).
            "model": None if b.model is None else snapshot(b.model),
            "errors": None if b.errors is None else {"object": "list", "data": b.errors},
            "input_file_id": b.input_file_id,
            "completion_window": b.completion_window,
            "status": b.status,
            "output_file_id": b.output_file_id,
            "error_file_id": b.error_file_id,
            "created_at": int(b.created),
            "in_progress_at": s.get("in_progress_at"),
            "expires_at": int(b.expires),
            "finalizing_at": s.get("finalizing_at"),
            "completed_at": s.get("completed_at"),
            "failed_at": s.get("failed_at"),
            "expired_at": s.get("expired_at"),
            "cancelling_at": s.get("cancelling_at"),
            "cancelled_at": s.get("cancelled_at"),
            "request_counts": {"total": total, "completed": completed, "failed": failed},
            "usage": b.usage,
            "metadata": b.metadata,
        }

    # ------------------------------------------------------------------ result lines

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
        line: dict[str, Any] = {
            "id": ids.batch_request_id(b.id, custom_id),
            "custom_id": custom_id,
            "response": None,
            "error": None,
        }
        if status is None:
            code, message = (
                ("batch_expired", EXPIRED_MESSAGE)
                if not_run == "expired"
                else ("batch_cancelled", CANCELLED_MESSAGE)
            )
            line["error"] = {"code": code, "message": message}
            return "error", line
        line["response"] = {
            "status_code": status,
            "request_id": ids.line_request_id(b.id, custom_id),
            "body": payload,
        }
        return ("output" if failure is None else "error"), line
