"""One error tree for the app.

Everything the app raises on purpose derives from :class:`OpenAIBatchesError`, so a host
project can catch one class. :class:`ConfigurationError` also derives from Django's
``ImproperlyConfigured`` because a bad setting is a deployment problem, not a runtime one.
No exception message ever contains the API key: :class:`APIError` keeps the provider's body
and ``x-request-id`` but never the request headers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured


class OpenAIBatchesError(Exception):
    """Base class of every error this app raises on purpose."""


class ConfigurationError(OpenAIBatchesError, ImproperlyConfigured):
    """``OPENAI_BATCHES`` is missing something or holds a value out of range."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one input item (``index`` is 0-based, ``line`` 1-based)."""

    index: int | None
    field: str | None
    message: str

    @property
    def line(self) -> int | None:
        return None if self.index is None else self.index + 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "line": self.line,
            "field": self.field,
            "message": self.message,
        }

    def __str__(self) -> str:
        where = "input" if self.index is None else f"item {self.index} (line {self.line})"
        return f"{where}, {self.field or 'item'}: {self.message}"


class ValidationError(OpenAIBatchesError):
    """Input items were rejected; ``problems`` lists every one and nothing was saved."""

    def __init__(self, problems: list[Problem], *, truncated: bool = False) -> None:
        self.problems = problems
        self.truncated = truncated
        shown = "\n".join(f"  - {p}" for p in problems[:50])
        more = len(problems) - 50
        tail = f"\n  ... and {more} more" if more > 0 else ""
        if truncated:
            tail += "\n  (validation stopped early: too many problems)"
        super().__init__(
            f"{len(problems)} problem(s) in the batch input; nothing was saved:\n{shown}{tail}"
        )


class LimitExceeded(ValidationError):
    """The input is larger than one provider batch accepts (items or bytes)."""


class InvalidStateError(OpenAIBatchesError):
    """The job is not in a state that allows the requested action (admin/API map it to 409).

    ``action`` ("submitted", "cancelled", ...) and ``reason`` (why not, in words) let a
    surface compose its own message, naming the job the way it addresses jobs (the API by
    UUID, the admin by name and pk).
    """

    def __init__(
        self,
        message: str,
        *,
        job_id: int | None = None,
        state: str | None = None,
        job_uuid: str | None = None,
        action: str | None = None,
        reason: str | None = None,
    ) -> None:
        self.job_id = job_id
        self.state = state
        self.job_uuid = job_uuid
        self.action = action
        self.reason = reason
        super().__init__(message)


class ProviderError(OpenAIBatchesError):
    """Talking to the provider failed."""


class APIConnectionError(ProviderError):
    """No usable answer: connection refused or reset, timeout, truncated body.

    The outcome of a non-idempotent call (``POST /batches``) is unknown after this error.
    """


class APIError(ProviderError):
    """The provider answered with a non-2xx status."""

    def __init__(
        self,
        status_code: int,
        body: Any,
        *,
        request_id: str | None = None,
        method: str = "",
        path: str = "",
    ) -> None:
        self.status_code = status_code
        self.body = body
        #: Seconds the provider asked us to wait (retry-after headers), when it said. May
        #: exceed ``client.MAX_RETRY_AFTER``: then the client did not retry, and the caller
        #: reschedules (a failed poll backs off at least this long).
        self.retry_after: float | None = None
        self.request_id = request_id
        self.method = method
        self.path = path
        error = body.get("error") if isinstance(body, dict) else None
        error = error if isinstance(error, dict) else {}
        self.message: str = str(error.get("message") or body or "")
        self.code: str | None = error.get("code")
        self.type: str | None = error.get("type")
        self.param: str | None = error.get("param")
        rid = f" (request id {request_id})" if request_id else ""
        super().__init__(f"{method} {path} answered {status_code}{rid}: {self.message}".strip())

    @property
    def retryable(self) -> bool:
        return self.status_code in (408, 409, 429) or self.status_code >= 500


class RateLimitError(APIError):
    """429 from the provider."""


class NotFoundError(APIError):
    """404 from the provider."""


class AuthenticationError(APIError):
    """401 from the provider: the key is missing, wrong or revoked."""


class PermissionDeniedError(APIError):
    """403 from the provider: the key is valid but may not do this (a project or
    organisation without access, an unsupported region). Not an
    :class:`AuthenticationError`: rotating the key does not help."""
