"""One error shape for every error the API answers, and the handler that produces it.

Every error body is ``{"error": {"type", "message", "problems": [...]}}`` (plus ``state`` for a
409). The handler is attached to the app's views only (``get_exception_handler``), so the host
project's own DRF views and its ``EXCEPTION_HANDLER`` setting are left alone.

Mapping: the app's :class:`~openai_batches.exceptions.ValidationError` -> 400 with every
problem, :class:`~openai_batches.exceptions.LimitExceeded` -> 413,
:class:`~openai_batches.exceptions.InvalidStateError` -> 409 with the reason,
:class:`~openai_batches.exceptions.ProviderError` -> 502 (the provider, not the client, failed),
:class:`~openai_batches.exceptions.ConfigurationError` -> 503 naming the job and its account
only (the details, which name settings and other accounts, go to the log),
and DRF's own exceptions (401/403/404/405/406/415/429 ...) keep their status and headers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from .. import exceptions as app_exceptions

logger = logging.getLogger(__name__)


class PayloadTooLarge(exceptions.APIException):
    """The request body is larger than the API accepts (413)."""

    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "payload_too_large"


class ServerMisconfigured(exceptions.APIException):
    """The job cannot be acted on until an operator fixes ``OPENAI_BATCHES`` (503)."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The server's OPENAI_BATCHES setting does not allow this now."
    default_code = "configuration_error"


class ProviderUnavailable(exceptions.APIException):
    """The provider could not be reached or refused the call (502)."""

    status_code = status.HTTP_502_BAD_GATEWAY
    default_detail = "The provider did not answer as expected."
    default_code = "provider_error"


def error_body(
    error_type: str,
    message: str,
    problems: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The one error shape (see the module docstring)."""
    return {"error": {"type": error_type, "message": message, "problems": problems or [], **extra}}


def problem(field: str | None, message: str, index: int | None = None) -> dict[str, Any]:
    """A problem dict shaped like :meth:`openai_batches.exceptions.Problem.as_dict`."""
    return {
        "index": index,
        "line": None if index is None else index + 1,
        "field": field,
        "message": message,
    }


def flatten_drf_detail(detail: Any, path: tuple[str | int, ...] = ()) -> Iterator[dict[str, Any]]:
    """Turn DRF's nested ``{"field": ["msg"], "items": {0: {...}}}`` into flat problems.

    The first integer in the path becomes the item ``index`` so serializer errors read like
    the service's own problems; the rest is joined with dots into ``field``.
    """
    if isinstance(detail, dict):
        for key, value in detail.items():
            yield from flatten_drf_detail(value, (*path, key))
        return
    if isinstance(detail, list) and detail and all(isinstance(d, str) for d in detail):
        for message in detail:
            yield _problem_at(path, str(message))
        return
    if isinstance(detail, list):
        for i, value in enumerate(detail):
            # Lists of per-element errors (ListField/many=True) carry empty entries for
            # elements that were fine; keep positions so the index stays right.
            if value in ({}, [], None, ""):
                continue
            yield from flatten_drf_detail(value, (*path, i))
        return
    yield _problem_at(path, str(detail))


def _problem_at(path: tuple[str | int, ...], message: str) -> dict[str, Any]:
    index: int | None = None
    names: list[str] = []
    for part in path:
        if isinstance(part, int) and index is None:
            index = part
        elif part != "non_field_errors":
            names.append(str(part))
    return problem(".".join(names) or None, message, index)


def _first_message(detail: Any) -> str:
    for item in flatten_drf_detail(detail):
        return str(item["message"])
    return ""


def _misconfigured_message(context: dict[str, Any]) -> str:
    job = getattr(context.get("view"), "_job", None)
    if job is None:
        return str(ServerMisconfigured.default_detail)
    return (
        f"Job {job.uuid} cannot be acted on now: its account {job.account!r} is not usable "
        "with the server's current OPENAI_BATCHES setting. An operator must fix the setting "
        "(manage.py check names the problem); the job is unchanged."
    )


def conflict_message(exc: app_exceptions.InvalidStateError, context: dict[str, Any]) -> str:
    """The 409's message, naming the job by the UUID the API addresses it by.

    The services' own message names the job by its database pk (the admin's key), which an
    API client has never seen.
    """
    view = context.get("view")
    kwargs = getattr(view, "kwargs", None) or {}
    job_uuid = exc.job_uuid or kwargs.get("uuid") or kwargs.get("job_uuid")
    if exc.action and exc.reason and job_uuid:
        return f"Job {job_uuid} cannot be {exc.action}: {exc.reason}."
    message = str(exc)
    if job_uuid and exc.job_id is not None:
        message = re.sub(rf"\bJob {exc.job_id}\b", f"Job {job_uuid}", message)
    return message


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF exception handler for the app's views; see the module docstring for the mapping."""
    if isinstance(exc, app_exceptions.ValidationError):
        limit = isinstance(exc, app_exceptions.LimitExceeded)
        problems = [p.as_dict() for p in exc.problems]
        noun = "limit" if limit else "problem"
        return Response(
            error_body(
                "payload_too_large" if limit else "invalid_request",
                f"{len(problems)} {noun}(s) in the input; nothing was saved.",
                problems,
                truncated=exc.truncated,
            ),
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
            if limit
            else status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, app_exceptions.InvalidStateError):
        return Response(
            error_body("invalid_state", conflict_message(exc, context), state=exc.state),
            status=status.HTTP_409_CONFLICT,
        )
    if isinstance(exc, app_exceptions.ConfigurationError):
        # The details name settings and other accounts: they go to the log, for the
        # operator, and the client learns only which job and account are affected.
        logger.error("openai_batches API: %s", exc)
        exc = ServerMisconfigured(_misconfigured_message(context))
    elif isinstance(exc, app_exceptions.ProviderError):
        # The provider's message helps the operator; it never contains our API key.
        exc = ProviderUnavailable(f"The provider call failed: {exc}")
    elif isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge(
            f"The body is larger than DATA_UPLOAD_MAX_MEMORY_SIZE "
            f"({settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,} bytes). Upload the items as a JSONL "
            "file instead."
        )
    elif isinstance(exc, TooManyFieldsSent):
        exc = exceptions.ParseError(str(exc))

    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # an unexpected error: let Django log it and answer 500
    if isinstance(exc, exceptions.ValidationError):
        problems = list(flatten_drf_detail(exc.detail))
        response.data = error_body(
            "invalid_request",
            f"{len(problems)} problem(s) in the input; nothing was saved.",
            problems,
        )
        return response
    if isinstance(exc, Http404):
        error_type = "not_found"
    elif isinstance(exc, DjangoPermissionDenied):
        error_type = "permission_denied"
    elif isinstance(exc, exceptions.APIException):
        error_type = str(exc.default_code)
    else:  # pragma: no cover - DRF only answers for the classes above
        error_type = "error"
    detail = getattr(exc, "detail", None)
    message = _first_message(detail) if detail is not None else str(exc)
    if error_type == "not_found" and not isinstance(exc, exceptions.NotFound):
        message = "Not found."
    response.data = error_body(error_type, message)
    return response
