"""Azure OpenAI Batch (Global Batch / Data Zone Batch): OpenAI's Files + Batches shape
under ``/openai/``, with Azure's surfaces, authentication, limits and quirks
(``shared/reference/other-providers.md`` §1).

- **Surfaces**: ``API_VERSION`` None or ``"v1"`` (or ``"preview"``/``"latest"``) calls
  the v1 API at ``{BASE_URL}/openai/v1/``; a dated version (``"2024-10-21"``,
  ``"2025-04-01-preview"``) calls ``{BASE_URL}/openai/...?api-version=...``. ``BASE_URL`` is
  the resource endpoint (``https://RESOURCE.openai.azure.com``); a URL already ending in
  ``/openai`` or ``/openai/v1`` is accepted too.
- **Auth**: ``API_KEY`` goes in the ``api-key`` header; ``TOKEN_PROVIDER`` (a dotted path
  to a callable, e.g. one made with ``azure.identity.get_bearer_token_provider``) gives
  Microsoft Entra ID bearer tokens instead. A callable returning a string is called per
  request (azure-identity's caches itself); one returning an ``AccessToken``-like object
  (``.token``, ``.expires_on``) or a ``(token, expires_on)`` pair is cached in memory until
  a minute before it expires. A token is never stored, logged or shown.
- **Limits**: 100,000 requests and 200 MB per batch; chat completions and Responses only
  (no embeddings); ``model`` on every line is the deployment name.
- **Retention**: input uploads always carry ``expires_after`` (Azure caps a resource at
  500 input files without one), 14 to 30 days: ``FILE_EXPIRES_AFTER`` /
  ``OUTPUT_EXPIRES_AFTER`` below 14 days are raised to 14 days (system check W041), None
  sends 14 days for inputs.
- **No expiry**: Azure keeps running a batch past 24 hours. The app applies its own
  deadline (the account's ``DEADLINE``, else the batch's completion window), reported as
  the batch's ``expires_at``: a batch still running past it is cancelled when next
  polled, with the error ``deadline_exceeded`` on the part. Only the app's own batches
  (those carrying its metadata) are held to it: a listing never cancels another
  program's batch on the same resource. Its finished results are
  kept; the requests that never ran are ``batch_cancelled`` and sent again under the
  ``RETRY`` policy, as after any cancel nobody asked for.
- **Quota**: ``token_limit_exceeded`` comes as a failed batch (``errors.data[].code``, as
  on OpenAI) or, in fail-fast regions, as a 400 at create; the 400 is raised as an
  :class:`~openai_batches.exceptions.APIError` whose ``code`` is ``token_limit_exceeded``
  even when Azure names it only in the message.
- **Quirks** parsed safely: capitalised statuses, ISO-8601 times, ``""`` file ids,
  ``null`` request counts and endpoint.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any, ClassVar

import httpx
from django.utils.module_loading import import_string

from ..client import (
    _HEADER_SAFE,
    _MAX_TIMESTAMP,
    DeadlineExceeded,
    HeaderAuth,
    OpenAIClient,
    _bounded,
    _check_batch,
    _segment,
)
from ..conf import MAX_EXPIRES_AFTER, Account, Secret
from ..exceptions import APIError, ConfigurationError, ProviderError
from ..jsonl import METADATA_JOB_KEY
from .base import DAY, Adapter, Limits, _where, normalize_openai_shape, window_seconds

logger = logging.getLogger(__name__)

#: Azure's range for ``expires_after`` / ``output_expires_after`` (14 to 30 days).
MIN_EXPIRES_AFTER = 14 * DAY
V1_VERSIONS = ("v1", "preview", "latest")
DATED_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")
#: A cached token is renewed this many seconds before it expires.
TOKEN_MARGIN = 60.0
_TERMINAL = ("completed", "failed", "expired", "cancelled")


def is_v1(version: str | None) -> bool:
    return version is None or version in V1_VERSIONS


def resolve_token_provider(account: Account) -> Callable[[], Any]:
    """The account's TOKEN_PROVIDER as a callable (a dotted path is imported)."""
    provider = account.token_provider
    if isinstance(provider, str):
        try:
            provider = import_string(provider)
        except ImportError as err:
            raise ConfigurationError(
                f"The TOKEN_PROVIDER of account {account.name!r} cannot be imported: {err}"
            ) from None
    if not callable(provider):
        raise ConfigurationError(
            f"The TOKEN_PROVIDER of account {account.name!r} must be a callable returning a "
            "token, or its dotted path."
        )
    return provider


#: Tokens that said when they expire, per account, endpoint and token provider, shared by
#: every client of the process
#: (a client lives for one operation): in memory only, dropped shortly before expiry.
_TOKENS: dict[tuple[str, str, Any], tuple[Secret, float]] = {}


def forget_tokens() -> None:
    """Drop every cached token (tests; a process that rotates identities)."""
    _TOKENS.clear()


class _TokenAuth(httpx.Auth):
    """A bearer token from a token provider, asked for per request unless it said when the
    token expires (then kept, as a Secret in memory only, until shortly before)."""

    def __init__(self, provider: Callable[[], Any], account: Account) -> None:
        self._provider = provider
        self._account = account.name
        self._timeout = account.timeout
        # A token is only ever sent where it was obtained for: the cache is per account,
        # endpoint and provider, so a settings change never sends an old token elsewhere.
        self._key = (account.name, account.base_url, provider)

    def _fresh(self) -> Secret:
        """A new token. The provider runs in a thread of its own so that one that hangs (a
        metadata endpoint that never answers) costs at most the exchange's deadline; no
        frame here holds what it returned until it is a Secret (error reports print
        every frame's locals, and a token refused for a stray newline is still a token)."""
        wait = _bounded(self._timeout, DeadlineExceeded)
        box: list[Any] = []
        thread = threading.Thread(
            target=_ask, args=(self._provider, box), name="token-provider", daemon=True
        )
        thread.start()
        thread.join(wait)
        if not box:
            raise ProviderError(
                f"The TOKEN_PROVIDER of account {self._account!r} did not answer within {wait:g} s."
            )
        (outcome,) = box
        if isinstance(outcome, BaseException):
            # The provider's own message may describe the credential chain, never a token.
            raise ProviderError(
                f"The TOKEN_PROVIDER of account {self._account!r} failed: "
                f"{type(outcome).__name__}: {outcome}"
            ) from None
        if outcome is None:
            raise ConfigurationError(
                f"The TOKEN_PROVIDER of account {self._account!r} did not return a token "
                "(a string of printable ASCII without spaces)."
            )
        token, expires = outcome
        if isinstance(expires, int | float) and not isinstance(expires, bool):
            _TOKENS[self._key] = (token, float(expires))
        else:
            _TOKENS.pop(self._key, None)
        return token

    def _token(self) -> tuple[Secret, bool]:
        cached = _TOKENS.get(self._key)
        if cached is not None and time.time() < cached[1] - TOKEN_MARGIN:
            return cached[0], True
        return self._fresh(), False

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token, from_cache = self._token()
        request.headers["Authorization"] = "Bearer " + token.reveal()
        response = yield request
        if response.status_code == 401 and from_cache:
            # Revoked before its stated expiry: never use it again, and ask for a new one
            # now when the request can be sent twice (else the caller's next call will).
            _TOKENS.pop(self._key, None)
            if not _replayable(request):
                return
            request.headers["Authorization"] = "Bearer " + self._fresh().reveal()
            yield request

    def __repr__(self) -> str:
        return "<_TokenAuth ********>"


def _ask(provider: Callable[[], Any], box: list[Any]) -> None:
    """Call ``provider`` and put in ``box`` ``(Secret, expires_on)``, None for an answer that
    is not a token, or the exception it raised (run in a thread of its own)."""
    try:
        box.append(_as_token(provider()))
    except Exception as err:
        err.__traceback__ = None  # its frames' locals are the credential chain's
        box.append(err)


def _as_token(value: Any) -> tuple[Secret, Any] | None:
    """A token provider's answer as ``(Secret, expires_on)``: a string, an
    ``AccessToken``-like object (``.token``, ``.expires_on``) or a ``(token, expires_on)``
    pair; None when it is none of them."""
    expires: Any = None
    if isinstance(value, tuple) and len(value) == 2:
        value, expires = value
    elif not isinstance(value, str) and hasattr(value, "token"):
        value, expires = value.token, getattr(value, "expires_on", None)
    if not isinstance(value, str) or not _HEADER_SAFE.fullmatch(value):
        return None
    return Secret(value), expires


def _replayable(request: httpx.Request) -> bool:
    """Whether ``request`` can be sent again: a body held in memory can, a streamed upload
    cannot (it is then left to the caller's retry)."""
    return isinstance(request.stream, httpx.ByteStream)


class AzureProvider(Adapter, OpenAIClient):
    """Azure OpenAI (``PROVIDER: "azure"``)."""

    name = "azure"
    limits: ClassVar[Limits] = Limits(
        max_requests=100_000, max_bytes=200 * 1024 * 1024, max_embedding_inputs=None
    )
    endpoints = ("/v1/chat/completions", "/v1/responses")
    #: The time the deadline is judged at (tests put the emulator's clock here).
    now: ClassVar[Callable[[], float]] = staticmethod(time.time)

    @classmethod
    def settings_problems(cls, account: Account) -> list[tuple[str, str]]:
        problems = super().settings_problems(account)
        version = account.api_version
        if not (is_v1(version) or (isinstance(version, str) and DATED_VERSION.match(version))):
            problems.append(
                (
                    f"The {account.name!r} account's API_VERSION {version!r} is not an Azure "
                    "api-version.",
                    f"Set {_where(account, 'API_VERSION')} to None or 'v1' for the v1 API, or "
                    "a dated version such as '2024-10-21' or '2025-04-01-preview'.",
                )
            )
        return problems

    # -- construction ------------------------------------------------------------------

    def _check_credentials(self) -> None:
        account = self.account
        if not account.base_url:
            raise ConfigurationError(
                f"No BASE_URL for Azure account {account.name!r}: set it to the resource "
                "endpoint, https://RESOURCE.openai.azure.com."
            )
        self._check_base_url()
        if not is_v1(account.api_version) and not DATED_VERSION.match(account.api_version or ""):
            raise ConfigurationError(
                f"The API_VERSION of Azure account {account.name!r} must be None, 'v1' or a "
                "dated version such as '2024-10-21'."
            )
        if account.token_provider:
            self._token_provider = resolve_token_provider(account)
            return
        if not account.api_key and not account.is_local:
            raise ConfigurationError(
                f"No credentials for Azure account {account.name!r}: set its API_KEY (or "
                "AZURE_OPENAI_API_KEY) or a TOKEN_PROVIDER."
            )
        if account.api_key and not _HEADER_SAFE.fullmatch(account.api_key.reveal()):
            raise ConfigurationError(
                f"The API key of account {account.name!r} contains whitespace or control "
                "characters; check how it is read (a trailing newline is the usual cause)."
            )

    def _base_url(self) -> str:
        root = re.sub(r"/openai(/v1)?$", "", self.account.base_url.rstrip("/"))
        return f"{root}/openai/v1/" if is_v1(self.account.api_version) else f"{root}/openai/"

    def _params(self) -> dict[str, str]:
        version = self.account.api_version
        return {} if version in (None, "v1") else {"api-version": str(version)}

    def _headers(self) -> dict[str, str]:
        return {}

    def _auth(self) -> httpx.Auth:
        if self.account.token_provider:
            return _TokenAuth(self._token_provider, self.account)
        return HeaderAuth(self.account.api_key, "api-key", prefix="")

    request_id_header = "apim-request-id"

    # -- the deadline Azure does not keep ---------------------------------------------

    def _deadline(self, batch: dict[str, Any]) -> float:
        if self.account.deadline:
            return self.account.deadline
        return float(window_seconds(batch.get("completion_window")) or DAY)

    def _batch(self, obj: Any) -> dict[str, Any]:
        batch = _check_batch(normalize_openai_shape(obj))
        created = batch.get("created_at")
        if not isinstance(created, int):
            return batch
        # Never past a time the services can store (a hostile created_at near year 9999).
        due = min(created + self._deadline(batch), _MAX_TIMESTAMP)
        batch["expires_at"] = int(due)
        cancelled = batch.get("cancelling_at") or batch.get("cancelled_at")
        by_deadline = isinstance(cancelled, int) and cancelled >= due
        stopped = batch["status"] in ("cancelling", "cancelled")
        if stopped and by_deadline and not (batch.get("errors") or {}).get("data"):
            # Cancelled at (or after) the app's deadline: say so where the operator looks
            # (the part's provider errors), since nobody asked for this cancel.
            batch["errors"] = {
                "object": "list",
                "data": [
                    {
                        "code": "deadline_exceeded",
                        "message": "Cancelled by the app: still running past its "
                        f"deadline of {int(due - created)} s (Azure never expires a "
                        "batch).",
                    }
                ],
            }
        return batch

    def _past_deadline(self, batch: dict[str, Any]) -> dict[str, Any]:
        """``batch``, cancelled first if it is still running past the app's deadline."""
        if batch["status"] in (*_TERMINAL, "cancelling"):
            return batch
        if type(self).now() < (batch.get("expires_at") or float("inf")):
            return batch
        logger.warning(
            "Azure batch %s is still %s past the app's deadline; cancelling it",
            batch["id"],
            batch["status"],
        )
        try:
            return self._call("POST", f"batches/{_segment(batch['id'])}/cancel", self._batch)
        except APIError as err:
            logger.warning("could not cancel Azure batch %s: %s", batch["id"], err)
            return batch

    def retrieve_batch(self, batch_id: str) -> dict[str, Any]:
        return self._past_deadline(super().retrieve_batch(batch_id))

    def list_batches(self, *, after: str | None = None, limit: int = 100) -> dict[str, Any]:
        page = super().list_batches(after=after, limit=limit)
        # A resource is shared (other apps, other teams, the portal): only a batch carrying
        # this app's metadata is held to this app's deadline. Retrieves are of our own ids.
        page["data"] = [
            self._past_deadline(b) if METADATA_JOB_KEY in (b.get("metadata") or {}) else b
            for b in page.get("data") or []
        ]
        return page

    # -- files and batches -------------------------------------------------------------

    def upload_file(
        self, path: Path, *, filename: str, expires_after: int | None = None
    ) -> dict[str, Any]:
        return super().upload_file(
            path, filename=filename, expires_after=_azure_expiry(expires_after)
        )

    def create_batch(
        self,
        *,
        input_file_id: str,
        endpoint: str,
        completion_window: str,
        metadata: Any,
        output_expires_after: int | None = None,
    ) -> dict[str, Any]:
        expiry = _azure_expiry(output_expires_after) if output_expires_after is not None else None
        try:
            return super().create_batch(
                input_file_id=input_file_id,
                endpoint=endpoint,
                # Azure fails a batch asking for anything else; the app's deadline applies.
                completion_window="24h",
                metadata=metadata,
                output_expires_after=expiry,
            )
        except APIError as err:
            if err.status_code == 400 and "token_limit_exceeded" in f"{err.code} {err.message}":
                # Fail-fast regions refuse at create; the exact body is unconfirmed, so the
                # code is set from the text: the same error the failed-batch path names.
                err.code = "token_limit_exceeded"
            raise


def _azure_expiry(seconds: int | float | None) -> int:
    """An expiry within Azure's 14-30 days: None is 14 days (never none: a resource holds
    at most 500 input files without an expiry), shorter is raised to 14 days."""
    if seconds is None:
        return MIN_EXPIRES_AFTER
    return int(min(max(seconds, MIN_EXPIRES_AFTER), MAX_EXPIRES_AFTER))
