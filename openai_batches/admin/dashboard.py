"""The admin dashboard: spend and savings, tokens, outcomes, failures and work in flight.

Every figure is aggregated by the database (GROUP BY over stored fields), so the page runs
the same handful of queries for ten jobs or ten thousand. Costs are priced per group with
:func:`openai_batches.results.token_cost` and ``OPENAI_BATCHES["PRICES"]`` (batch rates per
1M tokens); cost is linear in tokens, so pricing a group's sums equals summing its jobs'
costs. What the same tokens would have cost synchronously is twice the batch price: OpenAI's
Batch API is billed at half the synchronous rate. :func:`collect` is independent of the admin
so other entry points (an API, a report) can serve the same figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.core.exceptions import PermissionDenied
from django.db.models import Case, CharField, Count, F, Sum, Value, When
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Coalesce, Concat, NullIf, TruncDate
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from ..conf import app_settings
from ..models import BatchJob, BatchStatus, ItemState, JobState, RequestItem
from ..results import Usage, token_cost
from .display import FAILED_ITEM_STATES, MOVING_STATES, count_items

if TYPE_CHECKING:
    from .jobs import BatchJobAdmin

#: The periods the page offers, in days; the first is the default.
PERIODS = (30, 7, 90, 365)

#: Synchronous price / batch price (OpenAI bills batches at half the synchronous rate).
SYNC_FACTOR = Decimal(2)

#: How many jobs in flight, and how many error codes, the page lists.
MAX_IN_FLIGHT = 50
MAX_CODES = 20

#: Outcome of a job from (state, provider status), for "jobs by outcome".
OUTCOMES: tuple[tuple[str, Any], ...] = (
    ("completed", gettext_lazy("completed")),
    ("expired", gettext_lazy("expired (partial results)")),
    ("cancelled", gettext_lazy("cancelled")),
    ("failed", gettext_lazy("failed at the provider")),
    ("submit_failed", gettext_lazy("submission failed")),
    ("in_flight", gettext_lazy("in flight")),
    ("draft", gettext_lazy("draft")),
)


def outcome_of(state: str, provider_status: str) -> str:
    if state in MOVING_STATES:
        return "in_flight"
    if state == JobState.FINISHED:
        ended: dict[str, str] = {
            BatchStatus.EXPIRED: "expired",
            BatchStatus.CANCELLED: "cancelled",
            BatchStatus.FAILED: "failed",
        }
        return ended.get(provider_status, "completed")
    if state == JobState.CANCELLED:
        return "cancelled"
    if state == JobState.SUBMIT_FAILED:
        return "submit_failed"
    return "draft"


@dataclass
class Spend:
    """Tokens and cost of a group of ingested jobs (a day, a model)."""

    jobs: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    batch_cost: Decimal = Decimal(0)
    #: Tokens of jobs whose model has no (valid) price: their cost is not in batch_cost.
    unpriced_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def sync_cost(self) -> Decimal:
        return self.batch_cost * SYNC_FACTOR

    @property
    def saved(self) -> Decimal:
        return self.sync_cost - self.batch_cost

    def add(self, other: Spend) -> None:
        self.jobs += other.jobs
        self.input_tokens += other.input_tokens
        self.cached_tokens += other.cached_tokens
        self.output_tokens += other.output_tokens
        self.reasoning_tokens += other.reasoning_tokens
        self.batch_cost += other.batch_cost
        self.unpriced_tokens += other.unpriced_tokens


@dataclass
class Figures:
    days: int
    since: datetime
    per_day: list[tuple[date, Spend]] = field(default_factory=list)
    per_model: list[tuple[str, Spend]] = field(default_factory=list)
    total: Spend = field(default_factory=Spend)
    outcomes: list[tuple[str, Any, int]] = field(default_factory=list)
    failures: list[tuple[str, int]] = field(default_factory=list)
    failed_total: int = 0
    in_flight: list[BatchJob] = field(default_factory=list)
    in_flight_total: int = 0


def failure_code() -> Coalesce:
    """The failure code of an item, as :attr:`Result.code` reads it, in SQL.

    The error object's code (a request that never ran), else the error body's code (a
    request the endpoint refused), else ``http_<status>``, else the item's state.
    """
    return Coalesce(
        NullIf(KT("error__code"), Value("")),
        NullIf(KT("error__type"), Value("")),
        NullIf(KT("response__error__code"), Value("")),
        NullIf(KT("response__error__type"), Value("")),
        # Concat reads NULL as "", so only an item with a status gets "http_<status>".
        Case(
            When(
                status_code__isnull=False,
                then=Concat(Value("http_"), Cast("status_code", CharField())),
            ),
            default=None,
            output_field=CharField(),
        ),
        F("state"),
        output_field=CharField(),
    )


def collect(days: int = PERIODS[0], now: datetime | None = None) -> Figures:
    """The dashboard's figures over the last ``days`` days, in six queries whatever the size."""
    now = now or timezone.now()
    today = timezone.localdate(now)
    start = today - timedelta(days=days - 1)
    since = timezone.make_aware(datetime.combine(start, datetime.min.time()))
    figures = Figures(days=days, since=since)
    prices = app_settings.PRICES if isinstance(app_settings.PRICES, dict) else {}

    # 1. Spend: one row per (day ingested, model), summed by the database.
    groups = (
        BatchJob.objects.filter(ingested_at__gte=since)
        .annotate(
            day=TruncDate("ingested_at"),
            model_key=Coalesce(NullIf("model", Value("")), "provider_model"),
        )
        .order_by()
        .values("day", "model_key")
        .annotate(
            jobs=Count("pk"),
            inp=Sum("input_tokens"),
            cached=Sum("cached_tokens"),
            out=Sum("output_tokens"),
            reasoning=Sum("reasoning_tokens"),
        )
    )
    by_day: dict[date, Spend] = {start + timedelta(days=i): Spend() for i in range(days)}
    by_model: dict[str, Spend] = {}
    for row in groups:
        usage = Usage(row["inp"] or 0, row["cached"] or 0, row["out"] or 0, row["reasoning"] or 0)
        cost = token_cost(prices.get(row["model_key"] or ""), usage)
        spend = Spend(
            jobs=row["jobs"],
            input_tokens=usage.input_tokens,
            cached_tokens=usage.cached_tokens,
            output_tokens=usage.output_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            batch_cost=cost or Decimal(0),
            unpriced_tokens=0 if cost is not None else usage.total_tokens,
        )
        by_day.setdefault(row["day"], Spend()).add(spend)
        by_model.setdefault(row["model_key"] or "", Spend()).add(spend)
        figures.total.add(spend)
    figures.per_day = sorted(by_day.items())
    figures.per_model = sorted(by_model.items(), key=lambda kv: (-kv[1].total_tokens, kv[0]))

    # 2. Jobs by outcome, over the jobs created in the period.
    counts: dict[str, int] = {}
    for outcome in (
        BatchJob.objects.filter(created_at__gte=since)
        .order_by()
        .values("state", "provider_status")
        .annotate(n=Count("pk"))
    ):
        key = outcome_of(outcome["state"], outcome["provider_status"])
        counts[key] = counts.get(key, 0) + outcome["n"]
    figures.outcomes = [(key, label, counts[key]) for key, label in OUTCOMES if counts.get(key)]

    # 3. Failed requests by error code, over the jobs ingested in the period.
    failed = RequestItem.objects.filter(
        job__ingested_at__gte=since, state__in=FAILED_ITEM_STATES
    ).order_by()
    codes = list(
        failed.annotate(code=failure_code())
        .values("code")
        .annotate(n=Count("pk"))
        .order_by("-n", "code")
    )
    figures.failed_total = sum(c["n"] for c in codes)
    figures.failures = [(c["code"], c["n"]) for c in codes[:MAX_CODES]]

    # 4. In flight: every moving job whatever its age, the oldest first.
    moving = BatchJob.objects.filter(state__in=MOVING_STATES)
    figures.in_flight_total = moving.count()
    # Annotated like the job list, so a progress bar costs no query of its own.
    figures.in_flight = list(
        moving.annotate(
            n_succeeded=count_items(state=ItemState.SUCCEEDED),
            n_failed=count_items(state__in=FAILED_ITEM_STATES),
        ).order_by("created_at", "pk")[:MAX_IN_FLIGHT]
    )
    return figures


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


__all__ = ["Figures", "Spend", "collect", "dashboard_view", "failure_code", "outcome_of"]
