"""Live updates for the job list and the job page, without a reload or a JavaScript build.

``static/openai_batches/live.js`` polls :func:`live_view` every few seconds while a job on
the page is moving (submission requested, submitting, or at the provider with results not
yet ingested) and swaps in the fragments it returns: the same HTML the page itself renders
for those cells and fields, built by the same display methods. It stops when nothing on the
page moves. A GET here never writes; it needs the job view permission, like the pages, and
runs a constant number of queries whatever the number of jobs asked about.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib.admin.helpers import AdminReadonlyField
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.template.loader import render_to_string
from django.utils.html import conditional_escape

from ..models import BatchJob
from .display import MOVING_STATES

if TYPE_CHECKING:
    from .jobs import BatchJobAdmin

#: Cells of a job's row on the list that change while it moves.
LIST_FIELDS = ("status_badge", "progress", "when", "tokens", "cost_usd")

#: Fields of the job page that change while it moves (the rest are the job's own settings).
PAGE_FIELDS = (
    "status_badge",
    "items_link",
    "progress",
    "usage_table",
    "cost_usd",
    "provider_status",
    "provider_model",
    "batches_table",
    "provider_errors_table",
    "timeline",
    "last_error",
    "last_error_at",
)

#: At most this many jobs per request: a list page shows at most ``list_per_page`` (50).
MAX_IDS = 200


def parse_ids(raw: str) -> list[int]:
    """``"3,17,42"`` -> ``[3, 17, 42]``; ValueError naming the bad part otherwise."""
    ids: list[int] = []
    for part in filter(None, raw.split(",")):
        if not part.isdigit():
            raise ValueError(f"ids: {part[:20]!r} is not a job id")
        ids.append(int(part))
    if not ids:
        raise ValueError("ids: give the job ids, comma-separated")
    if len(ids) > MAX_IDS:
        raise ValueError(f"ids: at most {MAX_IDS} jobs per request, got {len(ids)}")
    return ids


def live_view(model_admin: BatchJobAdmin, request: HttpRequest) -> HttpResponse:
    """``GET ?ids=1,2,3`` (the list) or ``GET ?ids=1&page=1`` (a job page): JSON fragments."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    try:
        ids = parse_ids(request.GET.get("ids", ""))
    except ValueError as err:
        return HttpResponseBadRequest(str(err), content_type="text/plain; charset=utf-8")
    page = request.GET.get("page") == "1"
    if page and len(ids) != 1:
        return HttpResponseBadRequest(
            "ids: a job page asks about one job", content_type="text/plain"
        )
    jobs = list(model_admin.get_queryset(request).filter(pk__in=ids))
    payload: dict[str, Any] = {}
    for job in jobs:
        entry: dict[str, Any] = {"moving": job.state in MOVING_STATES, "state": job.state}
        if page:
            entry["fields"] = _page_fields(model_admin, request, job)
            entry["buttons"] = render_to_string(
                "openai_batches/batchjob/object_buttons.html",
                {"object_buttons": model_admin.object_buttons(request, job)},
                request=request,
            )
        else:
            entry["fields"] = {
                name: str(conditional_escape(getattr(model_admin, name)(job)))
                for name in LIST_FIELDS
            }
        payload[str(job.pk)] = entry
    # No Cache-Control of our own: admin_view's never_cache already forbids storing it.
    return JsonResponse(
        {
            "moving": any(entry["moving"] for entry in payload.values()),
            "interval": model_admin.live_interval,
            "jobs": payload,
        }
    )


def _page_fields(model_admin: BatchJobAdmin, request: HttpRequest, job: BatchJob) -> dict[str, str]:
    """Each live field as the job page renders it (Django's own read-only field display)."""
    form = model_admin.get_form(request, job, change=True)(instance=job)
    readonly = set(model_admin.get_readonly_fields(request, job))
    return {
        name: str(
            AdminReadonlyField(form, name, is_first=False, model_admin=model_admin).contents()
        )
        for name in PAGE_FIELDS
        if name in readonly
    }
