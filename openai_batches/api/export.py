"""``GET jobs/{uuid}/export/``: a job's results as data (CSV or JSONL), streamed.

Thin over :func:`openai_batches.export.export_results`: the job is looked up the way every
other view does (``BatchJob.objects.for_user``, so another user's job is a 404), with the
configured permission classes and the API's one error shape. The format comes from
``?format=csv|jsonl`` or the ``Accept`` header (CSV when either allows anything).
"""

from __future__ import annotations

from typing import Any

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework.exceptions import ValidationError
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request

from .. import export
from ..models import ItemState
from .parsers import JSONLRenderer
from .schema import api_schema
from .views import JOB_UUID, BatchesViewSet, _errors, coalesce, job_for


class CSVRenderer(BaseRenderer):
    """``text/csv``: only ever streams the export (errors are JSON, see BatchesViewSet)."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ) -> bytes:
        return b""


STATE = OpenApiParameter(
    "state",
    OpenApiTypes.STR,
    OpenApiParameter.QUERY,
    enum=ItemState.values,
    description="Only the items in this state.",
)
FORMAT = OpenApiParameter(
    "format",
    OpenApiTypes.STR,
    OpenApiParameter.QUERY,
    enum=list(export.FORMATS),
    description="csv (the default) or jsonl; the Accept header works too.",
)


class JobExportViewSet(BatchesViewSet):
    """The one export action (routed as ``job-export``)."""

    pagination_class = None
    renderer_classes = [CSVRenderer, JSONLRenderer]

    @api_schema(
        summary="Export a job's results as CSV or JSONL",
        description=(
            "One row (CSV) or line (JSONL) per item, in the order the items were added: "
            "custom_id, state, the answer (text, tool calls, vectors, moderation flags or "
            "images), finish_reason, a failure code and one-line reason, tokens, cost, the "
            "linked object and, for a structured output, the parsed fields (one CSV column "
            "each). Streamed from the database, never built in memory. See "
            "`openai_batches.export` for the columns."
        ),
        parameters=[JOB_UUID, FORMAT, STATE],
        responses={
            (200, "text/csv"): OpenApiResponse(
                OpenApiTypes.STR, description="CSV with a header row."
            ),
            (200, "application/jsonl"): OpenApiResponse(
                OpenApiTypes.OBJECT, description="JSONL: one object per item."
            ),
            **{
                (code, "application/json"): response for code, response in _errors(400, 404).items()
            },
        },
    )
    def export(self, request: Request, uuid: str | None = None) -> StreamingHttpResponse:
        job = job_for(request, uuid)
        self.check_object_permissions(request, job)
        state = request.query_params.get("state") or None
        if state is not None and state not in ItemState.values:
            raise ValidationError({"state": [f"must be one of {', '.join(ItemState.values)}"]})
        fmt = request.accepted_renderer.format
        response = StreamingHttpResponse(
            coalesce(export.export_results(job, fmt, state=state)),
            content_type=export.content_type(fmt),
        )
        response["Content-Disposition"] = f'attachment; filename="{export.filename(job, fmt)}"'
        return response


job_export = JobExportViewSet.as_view({"get": "export"})
