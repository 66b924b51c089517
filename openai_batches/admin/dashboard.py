"""The admin dashboard page: the figures of :mod:`openai_batches.dashboard`, drawn.

The figures are built in one place, :func:`openai_batches.dashboard.collect` (the API
serves the same ones); this module only checks who may see the page, and turns the figures
into a server-side SVG and tables behind every chart. Whoever holds the admin's view (or
change) permission on batch jobs sees every job's figures, as on the job list.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.template.response import TemplateResponse
from django.utils.translation import gettext as _

from ..conf import app_settings
from ..dashboard import (
    OUTCOMES,
    PERIODS,
    SYNC_FACTOR,
    Figures,
    Spend,
    collect,
    failure_code,
    outcome_of,
)

if TYPE_CHECKING:
    from .jobs import BatchJobAdmin


def dashboard_view(model_admin: BatchJobAdmin, request: HttpRequest) -> HttpResponse:
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    raw = request.GET.get("days", str(PERIODS[0]))
    if not raw.isdigit() or int(raw) not in PERIODS:
        return HttpResponseBadRequest(
            _("days: choose one of %(choices)s") % {"choices": ", ".join(map(str, PERIODS))},
            content_type="text/plain; charset=utf-8",
        )
    figures = collect(int(raw))
    opts = model_admin.opts
    context = {
        **model_admin.admin_site.each_context(request),
        "title": _("Batch dashboard"),
        "subtitle": None,
        "opts": opts,
        "app_label": opts.app_label,
        "has_view_permission": True,
        "media": model_admin.media,
        "f": figures,
        "periods": sorted(PERIODS),
        "chart": day_chart(figures.per_day),
        "model_rows": bar_rows(
            [(m, s, s.total_tokens) for m, s in figures.per_model], key=lambda r: r[2]
        ),
        "outcome_rows": bar_rows(figures.outcomes, key=lambda r: r[2]),
        "failure_rows": bar_rows(figures.failures, key=lambda r: r[1]),
        "in_flight": [
            (job, model_admin.status_badge(job), model_admin.progress(job))
            for job in figures.in_flight
        ],
        "has_prices": bool(app_settings.PRICES),
    }
    request.current_app = model_admin.admin_site.name
    return TemplateResponse(request, "openai_batches/dashboard.html", context)


def bar_rows(rows: list[Any], key: Any) -> list[tuple[Any, float]]:
    """Each row with its bar's width in percent of the largest."""
    top = max((key(r) for r in rows), default=0) or 1
    return [(r, round(100 * key(r) / top, 1)) for r in rows]


def day_chart(per_day: list[tuple[date, Spend]]) -> dict[str, Any]:
    """Geometry of the per-day SVG: for each day a synchronous and a batch bar side by side."""
    height, step, bar = 120.0, 12.0, 5.0
    top = max((s.sync_cost for _, s in per_day), default=Decimal(0)) or Decimal(1)
    bars = []
    for i, (day, spend) in enumerate(per_day):
        sync_h = float(spend.sync_cost / top) * height
        batch_h = float(spend.batch_cost / top) * height
        x = i * step + 1
        bars.append(
            {
                "day": day,
                "spend": spend,
                "sync_x": x,
                "batch_x": x + bar,
                "sync_y": height - sync_h,
                "batch_y": height - batch_h,
                "sync_h": sync_h,
                "batch_h": batch_h,
            }
        )
    return {
        "width": len(per_day) * step + 2,
        "height": height,
        "bar": bar,
        "bars": bars,
        "top": top,
    }


# The figures' names, re-exported so imports from this module's 0.2 surface keep working.
__all__ = [
    "OUTCOMES",
    "PERIODS",
    "SYNC_FACTOR",
    "Figures",
    "Spend",
    "bar_rows",
    "collect",
    "dashboard_view",
    "day_chart",
    "failure_code",
    "outcome_of",
]
