"""The API's OpenAPI 3 document (drf-spectacular), limited to the app's own endpoints.

The view generates from the host's full URLconf, so paths carry whatever prefix the host
included the API under, then keeps only the app's operations: the host's other views, and
their settings, stay out of this document.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from .. import __version__

TITLE = "openai_batches API"
DESCRIPTION = (
    "Create OpenAI Batch API jobs, add their requests, submit, follow and cancel them, and "
    "download their results as JSONL. Every error has the body "
    '`{"error": {"type", "message", "problems": [{"index", "line", "field", "message"}]}}`.'
)

F = TypeVar("F", bound=Callable[..., Any])


def api_schema(**kwargs: Any) -> Callable[[F], F]:
    """``extend_schema`` built on drf-spectacular's AutoSchema whatever the host's
    ``DEFAULT_SCHEMA_CLASS`` is (on a method, ``extend_schema`` falls back to that setting,
    and DRF's own AutoSchema cannot describe an operation for drf-spectacular)."""

    def decorator(func: F) -> F:
        func.schema = AutoSchema  # type: ignore[attr-defined]
        return extend_schema(**kwargs)(func)

    return decorator


def only_batches_endpoints(
    endpoints: list[tuple[Any, ...]], **kwargs: Any
) -> list[tuple[Any, ...]]:
    """drf-spectacular preprocessing hook: keep the operations of the app's API views."""
    from .views import BatchesViewSet

    kept = []
    for endpoint in endpoints:
        callback = endpoint[3]
        cls = getattr(callback, "cls", None)
        if isinstance(cls, type) and issubclass(cls, BatchesViewSet):
            kept.append(endpoint)
    return kept


class BatchesSchemaView(SpectacularAPIView):
    """``GET schema/``: YAML by default, JSON with ``?format=json`` or ``Accept``."""

    # Like the API views, independent of the host's DEFAULT_SCHEMA_CLASS.
    schema = AutoSchema()

    @api_schema(exclude=True)
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    custom_settings = {
        "TITLE": TITLE,
        "DESCRIPTION": DESCRIPTION,
        "VERSION": __version__,
        "PREPROCESSING_HOOKS": ["openai_batches.api.schema.only_batches_endpoints"],
    }
