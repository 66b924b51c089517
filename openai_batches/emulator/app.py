"""The WSGI layer: routing, auth, JSON/error bodies, streaming downloads and faults.

``/v1/...`` mirrors OpenAI (bearer auth, ``x-request-id`` on every answer). ``/_emulator/...``
is the control API (JSON, no auth):

=====================================  ===================================================
``GET  /_emulator/state``              everything, for debugging
``GET  /_emulator/health``             ``{"ok": true, "now": ...}``
``POST /_emulator/advance``            ``{"seconds": 3600}`` moves the clock, runs transitions
``POST /_emulator/tick``               runs transitions due now
``POST /_emulator/reset``              forgets everything
``POST /_emulator/faults``             ``{"method": "POST", "path": "/v1/batches",
                                       "kind": "status", "count": 2, "status": 429,
                                       "retry_after": 1, "should_retry": false}`` (kinds: status, drop, slow,
                                       truncate, file_not_found, huge, drip, garbage,
                                       wrong_shape, no_id; ``delay`` for slow and drip,
                                       ``size`` for huge)
``GET|DELETE /_emulator/faults``       list / clear pending faults
``POST /_emulator/fail_request``       ``{"custom_id": "r1", "status_code": 400,
                                       "code": "context_length_exceeded", "message": "...",
                                       "times": 1}`` (``times``: only the next N batches)
``POST /_emulator/stall_request``      ``{"custom_id": "r1", "times": 1}``
``POST /_emulator/token_budget``       ``{"model": "gpt-4o-mini", "tokens": 1000}`` (null: none)
``POST /_emulator/timing``             ``{"timing": "fast"}``
``POST /_emulator/webhook``            ``{"url": "http://...", "secret": "whsec_..."}``
``GET  /_emulator/webhooks``           webhook deliveries and their attempts
=====================================  ===================================================
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs

from . import ids
from .core import FAULT_KINDS, ApiError, Emulator, Fault, error_type_for

StartResponse = Callable[..., Any]
CHUNK = 64 * 1024

_STATUS_TEXT = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

_FILE = re.compile(r"^/v1/files/([^/]+)$")
_FILE_CONTENT = re.compile(r"^/v1/files/([^/]+)/content$")
_BATCH = re.compile(r"^/v1/batches/([^/]+)$")
_BATCH_CANCEL = re.compile(r"^/v1/batches/([^/]+)/cancel$")


class DropConnection(Exception):
    """Raised inside the app to make the server close the socket without (more) output."""


#: Fault kinds that answer 200 with a broken body (``truncate`` also acts on downloads).
_BODY_FAULTS = frozenset({"huge", "drip", "garbage", "wrong_shape", "no_id", "truncate"})


def _generated(size: int) -> Iterator[bytes]:
    # One reused chunk: a 150 MB answer costs the emulator 64 KiB.
    chunk = b" " * CHUNK
    yield b'{"data": "'
    sent = 0
    while sent < size:
        piece = chunk if size - sent >= CHUNK else chunk[: size - sent]
        sent += len(piece)
        yield piece


def _dripped(chunks: Iterable[bytes], delay: float) -> Iterator[bytes]:
    for chunk in chunks:
        for i in range(len(chunk)):
            time.sleep(delay)
            yield chunk[i : i + 1]


def _cut(head: bytes) -> Iterator[bytes]:
    yield head
    raise DropConnection()


def _without_ids(payload: Any) -> Any:
    if isinstance(payload, dict):
        if isinstance(payload.get("data"), list):
            return {**payload, "data": [_without_ids(x) for x in payload["data"]]}
        return {k: v for k, v in payload.items() if k != "id"}
    return payload


def _status_line(status: int) -> str:
    return f"{status} {_STATUS_TEXT.get(status, 'Error')}"


def _read_json(environ: dict[str, Any], limit: int = 10 * 1024 * 1024) -> Any:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > limit:
        raise ApiError(413, "Request body too large.")
    raw = environ["wsgi.input"].read(length) if length else b""
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError as err:
        raise ApiError(
            400,
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
            "but what was sent was not valid JSON.)",
        ) from err


def _int_param(query: dict[str, list[str]], name: str, default: int, lo: int, hi: int) -> int:
    raw = query.get(name, [None])[0]
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as err:
        raise ApiError(
            400,
            f"Invalid '{name}': expected an integer, but got '{raw}' instead.",
            param=name,
            code="invalid_type",
        ) from err
    if value < lo:
        raise ApiError(
            400,
            f"Invalid '{name}': integer below minimum value. Expected a value >= {lo}, but got "
            f"{value} instead.",
            param=name,
            code="integer_below_min_value",
        )
    if value > hi:
        raise ApiError(
            400,
            f"Invalid '{name}': integer above maximum value. Expected a value <= {hi}, but got "
            f"{value} instead.",
            param=name,
            code="integer_above_max_value",
        )
    return value


class EmulatorApp:
    """WSGI callable over an :class:`Emulator`."""

    def __init__(self, emulator: Emulator) -> None:
        self.emu = emulator

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        request_id = ids.request_id()
        method = environ.get("REQUEST_METHOD", "GET").upper()
        path = environ.get("PATH_INFO") or "/"
        try:
            if path.startswith("/_emulator"):
                return self._json(
                    start_response, 200, self._control(method, path, environ), request_id
                )
            start_response = self._rate_limited(start_response)
            fault = self.emu.take_fault(method, path)
            if fault is not None:
                self._apply_fault(fault)
            self._authenticate(environ)
            if fault is not None and fault.kind in _BODY_FAULTS:
                return self._body_fault(fault, method, path, environ, start_response, request_id)
            return self._route(method, path, environ, start_response, request_id, fault)
        except ApiError as err:
            return self._json(start_response, err.status, err.body(), request_id, err.headers)

    # ------------------------------------------------------------------ plumbing

    def _rate_limited(self, start_response: StartResponse) -> StartResponse:
        """``start_response`` adding the ``x-ratelimit-*`` headers of this call (a 429
        says no request is left)."""
        limits = self.emu.spend_request()

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if status.startswith("429"):
                limits["x-ratelimit-remaining-requests"] = "0"
            return start_response(status, [*headers, *limits.items()], exc_info)

        return start

    def _json(
        self,
        start_response: StartResponse,
        status: int,
        payload: Any,
        request_id: str,
        extra: Iterable[tuple[str, str]] = (),
    ) -> list[bytes]:
        body = json.dumps(payload).encode()
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("x-request-id", request_id),
            ("openai-version", "2020-10-01"),
            ("openai-organization", self.emu.organization),
            *extra,
        ]
        start_response(_status_line(status), headers)
        return [body]

    def _apply_fault(self, fault: Fault) -> None:
        if fault.kind == "drop":
            raise DropConnection()
        if fault.kind == "slow":
            time.sleep(fault.delay if fault.delay is not None else 2.0)
        elif fault.kind == "status":
            status = fault.status or 429
            headers: list[tuple[str, str]] = []
            # A 429 says retry-after (1 s unless told); a negative retry_after sends none.
            if status == 429 or fault.retry_after is not None:
                retry_after = fault.retry_after if fault.retry_after is not None else 1
                if retry_after >= 0:
                    headers.append(("retry-after", f"{retry_after:g}"))
            if fault.should_retry is not None:
                headers.append(("x-should-retry", "true" if fault.should_retry else "false"))
            message = {
                429: "Rate limit reached for requests (emulated). Please try again later.",
                500: "The server had an error while processing your request. Sorry about that!",
                502: "Bad gateway.",
                503: "The server is overloaded or not ready yet.",
            }.get(status, f"Emulated error {status}.")
            raise ApiError(
                status,
                message,
                type=error_type_for(status),
                code="rate_limit_exceeded" if status == 429 else None,
                headers=headers,
            )
        # "truncate" and "file_not_found" act inside their handlers, the body faults in
        # _body_fault.

    def _body_fault(
        self,
        fault: Fault,
        method: str,
        path: str,
        environ: dict[str, Any],
        start_response: StartResponse,
        request_id: str,
    ) -> Iterable[bytes]:
        """Answer 200 with a broken body (see :meth:`Emulator.inject_fault`)."""
        if fault.kind == "huge":
            size = fault.size if fault.size is not None else 150 * 1024 * 1024
            start_response(
                "200 OK", [("Content-Type", "application/json"), ("x-request-id", request_id)]
            )
            return _generated(size)
        if fault.kind == "truncate" and _FILE_CONTENT.match(path):
            # Downloads truncate as they stream (see _download), never held in memory.
            return self._route(method, path, environ, start_response, request_id, fault)
        captured: list[Any] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured[:] = [status, headers]
            return lambda data: None

        # Every route calls start_response before it returns its (lazy) body.
        result = self._route(method, path, environ, capture, request_id, None)
        status, headers = captured
        if fault.kind == "drip" or not status.startswith("2"):
            # A failed call is answered untouched; a drip streams the real answer slowly.
            start_response(status, headers)
            if not status.startswith("2"):
                return result
            return _dripped(result, fault.delay if fault.delay is not None else 1.0)
        body = b"".join(result)
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        if fault.kind == "truncate":
            start_response(status, [*headers, ("Content-Length", str(len(body)))])
            return _cut(body[: len(body) // 2])
        if fault.kind == "garbage":
            body = body[: max(1, len(body) // 2)] + b"\x00<html>Bad Gateway"
        elif fault.kind == "wrong_shape":
            body = json.dumps([json.loads(body)]).encode()
        elif fault.kind == "no_id":
            body = json.dumps(_without_ids(json.loads(body))).encode()
        start_response(status, [*headers, ("Content-Length", str(len(body)))])
        return [body]

    def _authenticate(self, environ: dict[str, Any]) -> None:
        header = environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, key = header.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise ApiError(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                param=None,
                code=None,
            )
        if self.emu.api_key is not None and key != self.emu.api_key:
            shown = key[:3] + "*" * max(0, len(key) - 7) + key[-4:] if len(key) > 7 else "***"
            raise ApiError(
                401,
                f"Incorrect API key provided: {shown}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )

    # ------------------------------------------------------------------ /v1 routes

    def _route(
        self,
        method: str,
        path: str,
        environ: dict[str, Any],
        start_response: StartResponse,
        request_id: str,
        fault: Fault | None,
    ) -> Iterable[bytes]:
        emu = self.emu
        query = parse_qs(environ.get("QUERY_STRING", ""))

        def ok(payload: Any) -> list[bytes]:
            return self._json(start_response, 200, payload, request_id)

        if path == "/v1/files":
            if method == "POST":
                length = environ.get("CONTENT_LENGTH")
                return ok(
                    emu.create_file(
                        environ["wsgi.input"],
                        environ.get("CONTENT_TYPE", ""),
                        int(length) if length else None,
                    )
                )
            if method == "GET":
                order = query.get("order", ["desc"])[0]
                if order not in ("asc", "desc"):
                    raise ApiError(
                        400,
                        f"Invalid value: '{order}'. Supported values are: 'asc' and 'desc'.",
                        param="order",
                        code="invalid_value",
                    )
                return ok(
                    emu.list_files(
                        purpose=query.get("purpose", [None])[0],
                        limit=_int_param(query, "limit", 10000, 1, 10000),
                        order=order,
                        after=query.get("after", [None])[0],
                    )
                )
            raise self._not_allowed(method, path)
        if m := _FILE_CONTENT.match(path):
            if method != "GET":
                raise self._not_allowed(method, path)
            truncate = fault is not None and fault.kind == "truncate"
            return self._download(m.group(1), start_response, request_id, truncate)
        if m := _FILE.match(path):
            if method == "GET":
                return ok(emu.retrieve_file(m.group(1)))
            if method == "DELETE":
                return ok(emu.delete_file(m.group(1)))
            raise self._not_allowed(method, path)
        if path == "/v1/batches":
            if method == "POST":
                payload = _read_json(environ)
                if fault is not None and fault.kind == "file_not_found":
                    file_id = payload.get("input_file_id") if isinstance(payload, dict) else None
                    raise emu.cannot_find_file(str(file_id))
                return ok(emu.create_batch(payload))
            if method == "GET":
                return ok(
                    emu.list_batches_page(
                        limit=_int_param(query, "limit", 20, 1, 100),
                        after=query.get("after", [None])[0],
                    )
                )
            raise self._not_allowed(method, path)
        if m := _BATCH_CANCEL.match(path):
            if method != "POST":
                raise self._not_allowed(method, path)
            return ok(emu.cancel_batch(m.group(1)))
        if m := _BATCH.match(path):
            if method != "GET":
                raise self._not_allowed(method, path)
            return ok(emu.retrieve_batch(m.group(1)))
        raise ApiError(404, f"Invalid URL ({method} {path})")

    def _not_allowed(self, method: str, path: str) -> ApiError:
        return ApiError(405, f"Invalid method for URL ({method} {path})")

    def _download(
        self, file_id: str, start_response: StartResponse, request_id: str, truncate: bool
    ) -> Iterator[bytes]:
        path, size, filename = self.emu.open_content(file_id)
        try:
            fh = open(path, "rb")  # noqa: SIM115 - closed by the generator below
        except FileNotFoundError as err:
            raise ApiError(404, f"No such File object: {file_id}", param="id") from err
        start_response(
            "200 OK",
            [
                ("Content-Type", "application/octet-stream"),
                ("Content-Length", str(size)),
                ("Content-Disposition", f'attachment; filename="{filename}"'),
                ("x-request-id", request_id),
            ],
        )
        # A truncating fault sends half the bytes it promised, then drops the socket.
        limit = size // 2 if truncate else size

        def stream() -> Iterator[bytes]:
            sent = 0
            with fh:
                while sent < limit:
                    chunk = fh.read(min(CHUNK, limit - sent))
                    if not chunk:
                        break
                    sent += len(chunk)
                    yield chunk
            if truncate:
                raise DropConnection()

        return stream()

    # ------------------------------------------------------------------ control API

    def _control(self, method: str, path: str, environ: dict[str, Any]) -> Any:
        emu = self.emu
        action = path[len("/_emulator") :].strip("/")
        if method == "GET" and action == "state":
            return emu.state()
        if method == "GET" and action == "health":
            return {"ok": True, "now": emu.now(), "timing": emu.timing}
        if action == "faults" and method == "GET":
            return {"faults": emu.state()["faults"]}
        if action == "faults" and method == "DELETE":
            emu.clear_faults()
            return {"ok": True}
        if action == "webhooks" and method == "GET":
            return {"deliveries": [d.as_dict() for d in emu.webhook_deliveries]}
        if method != "POST":
            raise ApiError(404, f"Unknown control call ({method} {path})")
        body = _read_json(environ)
        if not isinstance(body, dict):
            raise ApiError(400, "The control API takes a JSON object.")
        try:
            if action == "advance":
                emu.advance(float(body.get("seconds", 0)))
            elif action == "tick":
                emu.tick()
            elif action == "reset":
                emu.reset()
            elif action == "faults":
                kind = body.get("kind", "status")
                if kind not in FAULT_KINDS:
                    raise ApiError(400, f"kind must be one of {list(FAULT_KINDS)}", param="kind")
                fault = emu.inject_fault(
                    body.get("method", "*"),
                    body.get("path", "*"),
                    kind,
                    count=int(body.get("count", 1)),
                    status=body.get("status"),
                    retry_after=body.get("retry_after"),
                    delay=body.get("delay"),
                    size=body.get("size"),
                    should_retry=body.get("should_retry"),
                )
                return {"ok": True, "fault": fault.as_dict()}
            elif action == "fail_request":
                emu.fail_request(
                    body["custom_id"],
                    int(body.get("status_code", 400)),
                    body.get("code", "context_length_exceeded"),
                    body.get(
                        "message",
                        "This model's maximum context length was exceeded (emulated failure).",
                    ),
                    type=body.get("type"),
                    param=body.get("param"),
                    times=body.get("times"),
                )
            elif action == "stall_request":
                emu.stall_request(body["custom_id"], times=body.get("times"))
            elif action == "token_budget":
                emu.set_token_budget(body["model"], body.get("tokens"))
            elif action == "timing":
                emu.set_timing(body["timing"])
            elif action == "webhook":
                emu.configure_webhook(body.get("url"), body.get("secret"))
            else:
                raise ApiError(404, f"Unknown control call ({method} {path})")
        except (KeyError, ValueError, TypeError) as err:
            raise ApiError(400, f"Bad control call: {err!r}") from err
        return {"ok": True, "now": emu.now()}
