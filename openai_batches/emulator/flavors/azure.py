"""Azure OpenAI Batch on the wire: OpenAI's shape under ``/openai/``, Azure's auth and limits.

Both API surfaces are served (see ``shared/reference/other-providers.md`` §1):

- the v1 API: ``/openai/v1/files``, ``/openai/v1/files/{id}``, ``/openai/v1/files/{id}/content``,
  ``/openai/v1/batches``, ``/openai/v1/batches/{id}``, ``/openai/v1/batches/{id}/cancel``;
  ``api-version`` optional (``v1``, ``preview`` or ``latest``); a create answers 200;
- the dated API: the same paths under ``/openai/`` with a required ``?api-version=YYYY-MM-DD``
  (or ``...-preview``); a create answers 201.

Auth: an ``api-key`` header, or ``Authorization: Bearer`` with a Microsoft Entra ID token
(one of ``tokens``) or, on the v1 surface, the key itself. A wrong credential gets Azure's
401 (``{"error": {"code": "401", "message": "Access denied due to invalid subscription key
or wrong API endpoint. ..."}}``).

What differs from OpenAI: ``model`` on every line is a deployment name (``deployments``
maps names to models; an unknown one fails the batch with ``model_not_found``); 100,000
requests and 200 MB per batch; ``expires_after``/``output_expires_after`` 14 to 30 days and
no default expiry on inputs (so the 500-file cap on unexpiring inputs applies); the batch
never expires (Azure keeps running past 24 hours); a successful batch has an empty error
file; result lines have no ``id`` and a bare-UUID ``request_id``; a UTF-8 BOM fails the batch
with Azure's misleading message; ``token_limit_exceeded`` comes as a failed batch (the token
budget, as on OpenAI) or, with ``fail_fast``, as a 400 at create. Every answer carries
``apim-request-id``; a create for a budgeted deployment carries ``deployment-enqueued-tokens``
and ``deployment-maximum-enqueued-tokens``.

``quirks=True`` serves the batch object the way Microsoft's own samples show it
(capitalised ``status``, ISO-8601 timestamps, ``""`` for missing file ids, ``null`` request
counts while validating) so an adapter's tolerant parsing can be tested.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..records import ApiError, Limits, RequestFailure, _Batch
from ..responses import snapshot
from ..runner import estimate_file
from .openai import OpenAIFlavor

if TYPE_CHECKING:
    from ..app import EmulatorApp, Request
    from ..core import Emulator

#: Endpoints a batch create may name: Azure's samples send ``/chat/completions`` (no
#: ``/v1``) whatever the file holds; the v1 reference lists OpenAI's spelling.
AZURE_ENDPOINTS = ("/chat/completions", "/v1/chat/completions", "/responses", "/v1/responses")
#: What the lines may run on (Azure reads the file to tell chat from Responses).
RUN_ENDPOINTS = ("/v1/chat/completions", "/v1/responses")
FOURTEEN_DAYS = 14 * 86400
V1_VERSIONS = ("v1", "preview", "latest")
_DATED_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")
_TIMESTAMPS = (
    "created_at",
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)

KEY_REFUSED = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
    "provide a valid key for an active subscription and use a correct regional API endpoint "
    "for your resource."
)
KEY_MISSING = (
    "Access denied due to missing subscription key. Make sure to include subscription key "
    "when making requests to an API."
)
ENTRA_REFUSED = (
    "Unauthorized. Access token is missing, invalid, audience is incorrect "
    "(https://cognitiveservices.azure.com), or have expired."
)
BOM_MESSAGE = (
    "Validation failed: A valid model deployment name couldn't be extracted from the input "
    "file. Please ensure that each row in the input file has a valid deployment name "
    "specified in the 'model' field, and that the deployment name is consistent across all "
    "rows."
)


def _iso(ts: Any) -> Any:
    """An epoch second as Azure's curl samples write it: ``2024-07-19T17:13:57.0000000+00:00``."""
    if not isinstance(ts, int):
        return ts
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000+00:00")


class AzureFlavor(OpenAIFlavor):
    """Azure OpenAI's Global Batch: both API surfaces, key or Entra ID token auth."""

    name = "azure"
    base_path = "/openai/v1"
    prefix = "/v1"  # routes match after the surface's prefix is rewritten to /v1
    endpoints = AZURE_ENDPOINTS
    min_expires_after = FOURTEEN_DAYS
    dotted_form = True
    expires = False
    empty_error_file = True
    default_input_expiry = None

    def __init__(
        self,
        emulator: Emulator,
        *,
        tokens: Collection[str] = (),
        deployments: dict[str, str] | None = None,
        fail_fast: bool = False,
        quirks: bool = False,
        max_unexpiring_input_files: int = 500,
        max_input_files: int = 10_000,
    ) -> None:
        super().__init__(emulator)
        #: Entra ID access tokens accepted as ``Authorization: Bearer`` (a set: a test
        #: revokes one, as expiry would, by removing it).
        self.tokens = set(tokens)
        #: Deployment name -> model; None accepts any name as a deployment of itself.
        self.deployments = deployments
        self.fail_fast = fail_fast
        self.quirks = quirks
        self.max_unexpiring_input_files = max_unexpiring_input_files
        self.max_input_files = max_input_files
        # Batch id -> (enqueued tokens with it, the cap), for the create's headers.
        self._queues: dict[str, tuple[int, int]] = {}

    def default_limits(self) -> Limits:
        return Limits(max_requests=100_000, max_batch_file_bytes=200 * 1024 * 1024)

    def new_batch_id(self) -> str:
        return f"batch_{uuid.uuid4()}"

    # ------------------------------------------------------------------ surfaces and auth

    @staticmethod
    def surface_of(path: str) -> tuple[str, str] | None:
        """(surface, the path with its surface prefix rewritten to ``/v1``), or None."""
        if path.startswith("/openai/v1/"):
            return "v1", "/v1/" + path[len("/openai/v1/") :]
        for name in ("files", "batches"):
            if path == f"/openai/{name}" or path.startswith(f"/openai/{name}/"):
                return "dated", "/v1/" + path[len("/openai/") :]
        return None

    def is_download(self, path: str) -> bool:
        found = self.surface_of(path)
        return found is not None and super().is_download(found[1])

    def authenticate(self, environ: dict[str, Any]) -> None:
        key = environ.get("HTTP_API_KEY", "").strip()
        scheme, _, bearer = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        bearer = bearer.strip() if scheme.lower() == "bearer" else ""
        configured = self.emu.api_key
        open_door = configured is None and not self.tokens
        if key:
            if open_door or key == configured:
                return
            raise ApiError(401, KEY_REFUSED, type="invalid_request_error", code="401")
        if bearer:
            found = self.surface_of(environ.get("PATH_INFO") or "/")
            # The v1 surface takes the key as a bearer token too (the plain OpenAI SDK
            # sends it that way); the dated surface only takes Entra ID tokens there.
            key_as_bearer = found is not None and found[0] == "v1" and bearer == configured
            if open_door or bearer in self.tokens or key_as_bearer:
                return
            raise ApiError(401, ENTRA_REFUSED, type="invalid_request_error", code="401")
        raise ApiError(401, KEY_MISSING, type="invalid_request_error", code="401")

    def response_headers(self, request_id: str) -> list[tuple[str, str]]:
        return [("apim-request-id", str(uuid.uuid4())), ("x-request-id", request_id)]

    def not_found(self, kind: str, object_id: str) -> ApiError:
        return ApiError(404, f"{kind} {object_id} not found.", param="id", code="404")

    def route(self, app: EmulatorApp, request: Request) -> Iterable[bytes]:
        found = self.surface_of(request.path)
        if found is None:
            raise ApiError(404, "Resource not found", code="404")
        request.surface, request.path = found
        version = request.query.get("api-version", [None])[0]
        if request.surface == "v1":
            if version is not None and version not in V1_VERSIONS:
                raise ApiError(
                    400,
                    f"API version not supported: {version}. The v1 API takes no api-version "
                    f"or one of {', '.join(V1_VERSIONS)}.",
                    code="BadRequest",
                )
        elif version is None:
            raise ApiError(404, "Resource not found", code="404")
        elif not _DATED_VERSION.match(version):
            raise ApiError(400, f"API version not supported: {version}", code="BadRequest")
        return super().route(app, request)

    def answer_created(self, app: EmulatorApp, request: Request, payload: Any) -> Iterable[bytes]:
        batch = self.emu.create_batch(payload)
        headers: list[tuple[str, str]] = []
        queue = self._queues.pop(batch["id"], None)
        if queue is not None:
            # The only documented view of the deployment's queue (dated API example).
            headers = [
                ("deployment-enqueued-tokens", str(queue[0])),
                ("deployment-maximum-enqueued-tokens", str(queue[1])),
            ]
        status = 201 if request.surface == "dated" else 200
        return app.answer(request, batch, status, headers)

    # ------------------------------------------------------------------ create checks

    def check_upload(self, purpose: str, expires_after: int | None) -> None:
        if purpose != "batch":
            return
        inputs = self.emu.list_files(purpose="batch")["data"]
        if expires_after is None:
            unexpiring = sum(1 for f in inputs if f["expires_at"] is None)
            if unexpiring >= self.max_unexpiring_input_files:
                raise ApiError(
                    400,
                    f"This resource already has {unexpiring} batch input files without an "
                    "expiry, the most it may hold. Delete some, or upload with "
                    "expires_after.",
                    code="quota_exceeded",
                )
        if len(inputs) >= self.max_input_files:
            raise ApiError(
                400,
                f"This resource already has {len(inputs)} batch input files, the most it "
                "may hold. Delete some first.",
                code="quota_exceeded",
            )

    def admit(self, b: _Batch) -> None:
        # The lines say what runs: the run endpoint is read from the file at validation.
        b.run_endpoint = ""
        if not (self.fail_fast or self.emu.has_token_budgets()):
            return
        # A budgeted deployment is checked (fail-fast regions) and reported in headers at
        # once, which needs the file's deployment and tokens now rather than at validation.
        model, tokens = estimate_file(self.emu, b)
        b.run_endpoint = ""
        refusal = self.emu.budget_refusal(model, tokens)
        if refusal is not None and self.fail_fast:
            # Code and text both say it: Microsoft's sample matches the substring.
            raise ApiError(400, f"{refusal} (token_limit_exceeded)", code="token_limit_exceeded")
        b.model, b.tokens = model, tokens
        budget = self.emu.token_budget(model)
        if budget is not None:
            self._queues[b.id] = (self.emu.enqueued_tokens(model) + tokens, budget)

    # ------------------------------------------------------------------ the runner

    def line_endpoint(self, b: _Batch, url: Any) -> str | None:
        if not isinstance(url, str):
            return None
        url = url.rstrip("/")
        endpoint = url if url.startswith("/v1/") else "/v1" + url
        if endpoint not in RUN_ENDPOINTS:
            return None
        if not b.run_endpoint:
            b.run_endpoint = endpoint
        return endpoint if endpoint == b.run_endpoint else None

    def model_error(self, model: str) -> tuple[str, str] | None:
        if self.deployments is None or model in self.deployments:
            return None
        return (
            "model_not_found",
            f"The provided model deployment '{model}' was not found. Ensure the deployment "
            "exists and is of type Global-Batch or DataZone-Batch.",
        )

    def bom_error(self) -> tuple[str, str] | None:
        return "invalid_request", BOM_MESSAGE

    def result_body(self, b: _Batch, body: dict[str, Any], ran_at: int, key: str) -> dict[str, Any]:
        from ..responses import response_body

        deployment = b.model or ""
        model = (self.deployments or {}).get(deployment, deployment)
        answer = response_body(b.run_endpoint, body, snapshot(model), ran_at, key)
        if b.run_endpoint == "/v1/chat/completions":
            # Azure runs every request through its content filters and says so.
            safe = {"filtered": False, "severity": "safe"}
            categories = ("hate", "self_harm", "sexual", "violence")
            for choice in answer.get("choices", []):
                choice["content_filter_results"] = {c: dict(safe) for c in categories}
            answer["prompt_filter_results"] = [
                {
                    "prompt_index": 0,
                    "content_filter_results": {
                        **{c: dict(safe) for c in categories},
                        "jailbreak": {"filtered": False, "detected": False},
                    },
                }
            ]
        return answer

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
        target, line = super().result_line(
            b, custom_id, status=status, payload=payload, failure=failure, not_run=not_run
        )
        # Azure's samples carry no batch_req_ id and a bare UUID as the request id.
        del line["id"]
        if line["response"] is not None:
            line["response"]["request_id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, b.id + custom_id))
        return target, line

    # ------------------------------------------------------------------ the batch object

    def present(self, b: _Batch, now: float) -> dict[str, Any]:
        batch = super().present(b, now)
        # Deployment names are what Azure knows a batch by (no dated snapshot).
        batch["model"] = b.model
        if not self.quirks:
            return batch
        batch["status"] = batch["status"].capitalize()
        for name in _TIMESTAMPS:
            batch[name] = _iso(batch[name])
        for name in ("output_file_id", "error_file_id"):
            if batch[name] is None:
                batch[name] = ""
        if b.status == "validating":
            batch["request_counts"] = {"total": None, "completed": None, "failed": None}
        return batch
