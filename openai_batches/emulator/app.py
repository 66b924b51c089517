"""The WSGI layer shared by every flavour: faults, rate-limit headers, JSON answers,
streaming downloads, and the control API. The flavour (:mod:`.flavors`) routes the API
calls themselves (``/v1/...`` for OpenAI, ``/openai/...`` for Azure, ``/v1/messages/batches``
for Anthropic), authenticates them and shapes their error bodies.

``/_emulator/...`` is the control API (JSON, no auth), the same for every flavour:

=====================================  ===================================================
``GET  /_emulator/state``              everything, for debugging
``GET  /_emulator/health``             ``{"ok": true, "now": ..., "flavor": "openai"}``
``POST /_emulator/advance``            ``{"seconds": 3600}`` moves the clock, runs transitions
``POST /_emulator/tick``               runs transitions due now
``POST /_emulator/reset``              forgets everything
``POST /_emulator/faults``             ``{"method": "POST", "path": "/v1/batches",
                                       "kind": "status", "count": 2, "status": 429,
                                       "retry_after": 1, "should_retry": false}`` (kinds: status, drop, slow,
                                       truncate, file_not_found, huge, drip, garbage,
                                       wrong_shape, no_id, stuck_cursor; ``delay`` for
                                       slow and drip,
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
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode

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


@dataclass
class Request:
    """One API call, as the flavour's router sees it."""

    method: str
    path: str
    environ: dict[str, Any]
    query: dict[str, list[str]]
    start_response: StartResponse
    request_id: str
    fault: Fault | None
    #: Which of the flavour's API surfaces the call came in on (Azure: ``"v1"`` or
    #: ``"dated"``); the flavour sets it while routing.
    surface: str = ""

    @property
    def root_url(self) -> str:
        """``scheme://host[:port]`` this call reached (for absolute URLs in answers)."""
        scheme = self.environ.get("wsgi.url_scheme", "http")
        host = self.environ.get("HTTP_HOST") or (
            f"{self.environ.get('SERVER_NAME', '127.0.0.1')}:{self.environ.get('SERVER_PORT')}"
        )
        return f"{scheme}://{host}"


class DropConnection(Exception):
    """Raised inside the app to make the server close the socket without (more) output."""


#: Fault kinds that answer 200 with a broken body (``truncate`` also acts on downloads).
_BODY_FAULTS = frozenset(
    {"huge", "drip", "garbage", "wrong_shape", "no_id", "truncate", "stuck_cursor"}
)
#: The query parameters a list pages with (OpenAI's and Anthropic's names).
_CURSORS = ("after", "before", "after_id", "before_id")


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
            self.emu.flavor.authenticate(environ)
            if fault is not None and fault.kind in _BODY_FAULTS:
                return self._body_fault(fault, method, path, environ, start_response, request_id)
            return self._route(method, path, environ, start_response, request_id, fault)
        except ApiError as err:
            body = self.emu.flavor.error_body(err, request_id)
            return self._json(start_response, err.status, body, request_id, err.headers)

    # ------------------------------------------------------------------ plumbing

    def _rate_limited(self, start_response: StartResponse) -> StartResponse:
        """``start_response`` adding the ``x-ratelimit-*`` headers of this call (a 429
        says no request is left)."""
        limits = self.emu.spend_request()

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if status.startswith("429"):
                for name in limits:
                    if name.endswith("remaining-requests"):
                        limits[name] = "0"
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
            *self.emu.flavor.response_headers(request_id),
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
        if fault.kind == "truncate" and self.emu.flavor.is_download(path):
            # Downloads truncate as they stream (see _download), never held in memory.
            return self._route(method, path, environ, start_response, request_id, fault)
        if fault.kind == "stuck_cursor":
            # A list that ignores its cursor: every page is the first one.
            query = parse_qs(environ.get("QUERY_STRING", ""))
            kept = {k: v for k, v in query.items() if k not in _CURSORS}
            environ = {**environ, "QUERY_STRING": urlencode(kept, doseq=True)}
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
        elif fault.kind == "stuck_cursor":
            page = json.loads(body)
            if isinstance(page, dict):
                page["has_more"] = True  # ... and says more follow
            body = json.dumps(page).encode()
        elif fault.kind == "no_id":
            body = json.dumps(_without_ids(json.loads(body))).encode()
        start_response(status, [*headers, ("Content-Length", str(len(body)))])
        return [body]

    # ------------------------------------------------------------------ for the flavours

    def _route(
        self,
        method: str,
        path: str,
        environ: dict[str, Any],
        start_response: StartResponse,
        request_id: str,
        fault: Fault | None,
    ) -> Iterable[bytes]:
        query = parse_qs(environ.get("QUERY_STRING", ""))
        request = Request(method, path, environ, query, start_response, request_id, fault)
        return self.emu.flavor.route(self, request)

    def answer(
        self,
        request: Request,
        payload: Any,
        status: int = 200,
        headers: Iterable[tuple[str, str]] = (),
    ) -> list[bytes]:
        """Answer ``request`` with a JSON body."""
        return self._json(request.start_response, status, payload, request.request_id, headers)

    read_json = staticmethod(_read_json)
    int_param = staticmethod(_int_param)

    def not_allowed(self, method: str, path: str) -> ApiError:
        return ApiError(405, f"Invalid method for URL ({method} {path})")

    def download(
        self,
        request: Request,
        path: str,
        size: int,
        filename: str,
        truncate: bool,
        content_type: str = "application/octet-stream",
    ) -> Iterator[bytes]:
        """Stream a stored file's bytes (never the whole file in memory)."""
        try:
            fh = open(path, "rb")  # noqa: SIM115 - closed by the generator below
        except FileNotFoundError as err:
            raise self.emu.flavor.not_found("File", filename) from err
        request.start_response(
            "200 OK",
            [
                ("Content-Type", content_type),
                ("Content-Length", str(size)),
                ("Content-Disposition", f'attachment; filename="{filename}"'),
                *self.emu.flavor.response_headers(request.request_id),
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
            return {"ok": True, "now": emu.now(), "timing": emu.timing, "flavor": emu.flavor.name}
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
