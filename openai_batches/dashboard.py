"""The operator dashboard's figures: spend and savings, tokens, outcomes, failures, work in flight.

One place builds them; the admin page (:mod:`openai_batches.admin.dashboard`) and the API
endpoint (:mod:`openai_batches.api.dashboard`) only render what :func:`collect` returns.

Every figure is aggregated by the database (GROUP BY over stored fields), so :func:`collect`
runs the same handful of queries for ten jobs or ten thousand. Costs are priced per group
with :func:`openai_batches.results.token_cost` and ``OPENAI_BATCHES["PRICES"]`` (batch rates
per 1M tokens); cost is linear in tokens, so pricing a group's sums equals summing its jobs'
costs. What the same tokens would have cost synchronously is twice the batch price: OpenAI's
Batch API is billed at half the synchronous rate.

Whose jobs are counted is the caller's decision: :func:`collect` takes the jobs to count as
a queryset (``None`` for all of them), so each entry point applies its own access rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import (
    Case,
    CharField,
    Count,
    F,
    QuerySet,
    Sum,
    Value,
    When,
)
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Coalesce, Concat, NullIf, TruncDate
from django.utils import timezone
from django.utils.translation import gettext_lazy

from .conf import app_settings
from .models import FINAL_ITEM_STATES, BatchJob, BatchStatus, ItemState, JobState, RequestItem
from .results import Usage, token_cost

#: The periods offered, in days; the first is the default.
PERIODS = (30, 7, 90, 365)

#: Synchronous price / batch price (OpenAI bills batches at half the synchronous rate).
SYNC_FACTOR = Decimal(2)

#: How many jobs in flight, and how many error codes, are listed.
MAX_IN_FLIGHT = 50
MAX_CODES = 20

#: Item states counted as failed (a request that never ran did not succeed either).
FAILED_ITEM_STATES = sorted(FINAL_ITEM_STATES - {ItemState.SUCCEEDED})

#: Job states in which the job moves without anyone pressing a button: "in flight".
MOVING_STATES = frozenset(
    {
        JobState.SUBMIT_REQUESTED,
        JobState.WAITING_QUOTA,  # the line moves it when room frees up
        JobState.SUBMITTING,
        JobState.SUBMITTED,
    }
)

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
    """The outcome key (see :data:`OUTCOMES`) of a job in ``state`` with ``provider_status``."""
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
    """Everything the dashboard shows for one period."""

    days: int
    since: datetime
    per_day: list[tuple[date, Spend]] = field(default_factory=list)
    per_model: list[tuple[str, Spend]] = field(default_factory=list)
    total: Spend = field(default_factory=Spend)
    #: (key, label, jobs) per outcome, in the order of :data:`OUTCOMES`; empty ones left out.
    outcomes: list[tuple[str, Any, int]] = field(default_factory=list)
    #: (code, requests), the most frequent first, at most :data:`MAX_CODES`.
    failures: list[tuple[str, int]] = field(default_factory=list)
    failed_total: int = 0
    #: The oldest :data:`MAX_IN_FLIGHT` moving jobs, whose progress bars read the job's kept counts.
    in_flight: list[BatchJob] = field(default_factory=list)
    in_flight_total: int = 0


def model_key() -> Coalesce:
    """The model a job is priced at, in SQL: the one its requests name, else the provider's."""
    return Coalesce(NullIf("model", Value("")), "provider_model")


def priced(row: Mapping[str, Any], prices: Mapping[str, Any]) -> Spend:
    """A :class:`Spend` from one aggregated row (``jobs``, ``inp``, ``cached``, ``out``,
    ``reasoning``, ``model_key``), priced at ``prices``."""
    usage = Usage(row["inp"] or 0, row["cached"] or 0, row["out"] or 0, row["reasoning"] or 0)
    cost = token_cost(prices.get(row["model_key"] or ""), usage)
    return Spend(
        jobs=row["jobs"],
        input_tokens=usage.input_tokens,
        cached_tokens=usage.cached_tokens,
        output_tokens=usage.output_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        batch_cost=cost or Decimal(0),
        unpriced_tokens=0 if cost is not None else usage.total_tokens,
    )


#: The sums every spend query asks the database for, named as :func:`priced` reads them.
USAGE_SUMS: dict[str, Any] = {
    "jobs": Count("pk"),
    "inp": Sum("input_tokens"),
    "cached": Sum("cached_tokens"),
    "out": Sum("output_tokens"),
    "reasoning": Sum("reasoning_tokens"),
}


def price_table() -> dict[str, Any]:
    """``PRICES`` when it is a dict (a malformed one is reported by check E008), else ``{}``."""
    prices = app_settings.PRICES
    return prices if isinstance(prices, dict) else {}


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


def period_start(days: int, now: datetime | None = None) -> datetime:
    """Midnight (in the current time zone) at the start of the last ``days`` days."""
    today = timezone.localdate(now or timezone.now())
    start = today - timedelta(days=days - 1)
    return timezone.make_aware(datetime.combine(start, datetime.min.time()))


def collect(
    days: int = PERIODS[0],
    now: datetime | None = None,
    jobs: QuerySet[BatchJob] | None = None,
) -> Figures:
    """The dashboard's figures over the last ``days`` days, in six queries whatever the size.

    ``jobs`` limits every figure to those jobs (and their items): an entry point passes the
    jobs its user may see. ``None`` counts every job.
    """
    since = period_start(days, now)
    start = timezone.localdate(since)
    figures = Figures(days=days, since=since)
    prices = price_table()
    scoped = jobs if jobs is not None else BatchJob.objects.all()

    # 1. Spend: one row per (day ingested, model), summed by the database.
    groups = (
        scoped.filter(ingested_at__gte=since)
        .annotate(day=TruncDate("ingested_at"), model_key=model_key())
        .order_by()
        .values("day", "model_key")
        .annotate(**USAGE_SUMS)
    )
    by_day: dict[date, Spend] = {start + timedelta(days=i): Spend() for i in range(days)}
    by_model: dict[str, Spend] = {}
    for row in groups:
        spend = priced(row, prices)
        by_day.setdefault(row["day"], Spend()).add(spend)
        by_model.setdefault(row["model_key"] or "", Spend()).add(spend)
        figures.total.add(spend)
    figures.per_day = sorted(by_day.items())
    figures.per_model = sorted(by_model.items(), key=lambda kv: (-kv[1].total_tokens, kv[0]))

    # 2. Jobs by outcome, over the jobs created in the period.
    counts: dict[str, int] = {}
    for outcome in (
        scoped.filter(created_at__gte=since)
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
    if jobs is not None:
        # A subquery, so this stays one query however many jobs the scope holds.
        failed = failed.filter(job__in=jobs.order_by().values("pk"))
    codes = list(
        failed.annotate(code=failure_code())
        .values("code")
        .annotate(n=Count("pk"))
        .order_by("-n", "code")
    )
    figures.failed_total = sum(c["n"] for c in codes)
    figures.failures = [(c["code"], c["n"]) for c in codes[:MAX_CODES]]

    # 4. In flight: every moving job whatever its age, the oldest first.
    moving = scoped.filter(state__in=MOVING_STATES)
    figures.in_flight_total = moving.count()
    # A progress bar reads the counts kept on the job: no query of its own, no item counted.
    figures.in_flight = list(moving.order_by("created_at", "pk")[:MAX_IN_FLIGHT])
    return figures


__all__ = [
    "FAILED_ITEM_STATES",
    "MAX_CODES",
    "MAX_IN_FLIGHT",
    "MOVING_STATES",
    "OUTCOMES",
    "PERIODS",
    "SYNC_FACTOR",
    "Figures",
    "Spend",
    "collect",
    "failure_code",
    "model_key",
    "outcome_of",
    "period_start",
    "price_table",
    "priced",
]
