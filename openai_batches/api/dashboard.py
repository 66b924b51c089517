"""``GET dashboard/``: the operator dashboard's figures as JSON, for people who graph elsewhere.

The figures are the admin dashboard's, built once by :func:`openai_batches.dashboard.collect`;
this module only decides whose jobs they count and shapes them. The rule is the rest of the
API's (see :mod:`openai_batches.api.permissions`): a user holding ``view_batchjob`` or
``change_batchjob`` sees figures over every job, as the admin dashboard shows them; any other
user who reaches the API sees the same figures over their own jobs only (``scope`` says
which). Read-only, and a constant number of queries however many jobs there are.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils import timezone
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from ..dashboard import (
    MAX_CODES,
    MAX_IN_FLIGHT,
    OUTCOMES,
    PERIODS,
    Figures,
    Spend,
    collect,
    price_table,
)
from ..models import BatchJob, BatchStatus, JobState
from .permissions import has_job_permission, visible_jobs
from .schema import api_schema
from .serializers import FormSerializer, RFC3339DateTimeField
from .views import BatchesViewSet, _errors

#: The longest period the endpoint answers for, in days.
MAX_DAYS = 366


def money(help_text: str) -> serializers.DecimalField:
    """An amount in USD as a decimal string, to the micro-dollar (prices are per 1M tokens)."""
    return serializers.DecimalField(
        max_digits=24, decimal_places=6, coerce_to_string=True, help_text=help_text
    )


class DashboardQuerySerializer(FormSerializer):
    days = serializers.IntegerField(
        required=False,
        default=PERIODS[0],
        min_value=1,
        max_value=MAX_DAYS,
        help_text=(
            "The period: today and the days before it, in the server's time zone "
            f"(the admin offers {', '.join(map(str, sorted(PERIODS)))})."
        ),
    )


class SpendSerializer(serializers.Serializer):
    """Tokens and cost of a group of ingested jobs."""

    jobs = serializers.IntegerField(help_text="Jobs whose results were stored in the group.")
    input_tokens = serializers.IntegerField()
    cached_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    reasoning_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField(help_text="input_tokens + output_tokens.")
    batch_cost = money("USD at the batch prices of OPENAI_BATCHES['PRICES'].")
    sync_cost = money("What the same tokens would cost synchronously: twice batch_cost.")
    saved = money("sync_cost - batch_cost.")
    unpriced_tokens = serializers.IntegerField(
        help_text="Tokens of models without a (valid) price: not in the costs."
    )


class DaySpendSerializer(SpendSerializer):
    day = serializers.DateField(help_text="The day the results were stored (server time zone).")


class ModelSpendSerializer(SpendSerializer):
    model = serializers.CharField(help_text="The model the jobs named ('' when none).")


class OutcomeSerializer(serializers.Serializer):
    outcome = serializers.ChoiceField(choices=[key for key, _label in OUTCOMES])
    name = serializers.CharField(help_text="The outcome for people.")
    jobs = serializers.IntegerField(help_text="Jobs created in the period with this outcome.")


class FailureSerializer(serializers.Serializer):
    code = serializers.CharField(
        help_text="The error code, else http_<status>, else the item's state."
    )
    requests = serializers.IntegerField()


class InFlightSerializer(serializers.Serializer):
    uuid = serializers.UUIDField()
    name = serializers.CharField()
    model = serializers.CharField()
    state = serializers.ChoiceField(choices=JobState.choices)
    provider_status = serializers.ChoiceField(
        choices=[("", "not at the provider yet"), *BatchStatus.choices],
        help_text="The provider's raw status; empty before it knows the batch.",
    )
    items = serializers.IntegerField(help_text="Requests in the job.")
    provider_total = serializers.IntegerField(help_text="request_counts.total from the provider.")
    provider_completed = serializers.IntegerField(
        help_text="request_counts.completed from the provider."
    )
    provider_failed = serializers.IntegerField(help_text="request_counts.failed from the provider.")
    created_at = RFC3339DateTimeField()
    submitted_at = RFC3339DateTimeField(allow_null=True)
    age_seconds = serializers.IntegerField(
        help_text="Seconds since it was submitted (or created, before that)."
    )


class DashboardSerializer(serializers.Serializer):
    """The dashboard's figures over one period."""

    scope = serializers.ChoiceField(
        choices=[("all", "every job"), ("own", "the user's own jobs")],
        help_text="Whose jobs are counted: every job (view_batchjob or change_batchjob), "
        "else the user's own.",
    )
    days = serializers.IntegerField()
    since = RFC3339DateTimeField(help_text="Start of the period (midnight, server time zone).")
    currency = serializers.CharField(help_text="Always USD.")
    prices_configured = serializers.BooleanField(
        help_text="False when OPENAI_BATCHES['PRICES'] is empty: every cost is 0."
    )
    total = SpendSerializer()
    per_day = DaySpendSerializer(many=True, help_text="Every day of the period, oldest first.")
    per_model = ModelSpendSerializer(many=True, help_text="The most tokens first.")
    outcomes = OutcomeSerializer(many=True, help_text="Jobs created in the period, by outcome.")
    failures = FailureSerializer(
        many=True,
        help_text=f"Failed requests of jobs ingested in the period, by code (at most {MAX_CODES}).",
    )
    failed_total = serializers.IntegerField()
    in_flight = InFlightSerializer(
        many=True, help_text=f"The oldest {MAX_IN_FLIGHT} jobs in flight, whatever their age."
    )
    in_flight_total = serializers.IntegerField()


def _spend(spend: Spend, **extra: Any) -> dict[str, Any]:
    return {
        **extra,
        "jobs": spend.jobs,
        "input_tokens": spend.input_tokens,
        "cached_tokens": spend.cached_tokens,
        "output_tokens": spend.output_tokens,
        "reasoning_tokens": spend.reasoning_tokens,
        "total_tokens": spend.total_tokens,
        "batch_cost": spend.batch_cost,
        "sync_cost": spend.sync_cost,
        "saved": spend.saved,
        "unpriced_tokens": spend.unpriced_tokens,
    }


def figures_data(figures: Figures, scope: str, now: datetime | None = None) -> dict[str, Any]:
    """The figures as :class:`DashboardSerializer` reads them."""
    now = now or timezone.now()
    return {
        "scope": scope,
        "days": figures.days,
        "since": figures.since,
        "currency": "USD",
        "prices_configured": bool(price_table()),
        "total": _spend(figures.total),
        "per_day": [_spend(s, day=day) for day, s in figures.per_day],
        "per_model": [_spend(s, model=model) for model, s in figures.per_model],
        "outcomes": [
            {"outcome": key, "name": str(label), "jobs": n} for key, label, n in figures.outcomes
        ],
        "failures": [{"code": code, "requests": n} for code, n in figures.failures],
        "failed_total": figures.failed_total,
        "in_flight": [_in_flight(job, now) for job in figures.in_flight],
        "in_flight_total": figures.in_flight_total,
    }


def _in_flight(job: BatchJob, now: datetime) -> dict[str, Any]:
    started = job.submitted_at or job.created_at
    return {
        "uuid": job.uuid,
        "name": job.name,
        "model": job.model or job.provider_model,
        "state": job.state,
        "provider_status": job.provider_status,
        "items": job.item_count,
        "provider_total": job.request_count_total,
        "provider_completed": job.request_count_completed,
        "provider_failed": job.request_count_failed,
        "created_at": job.created_at,
        "submitted_at": job.submitted_at,
        "age_seconds": max(int((now - started).total_seconds()), 0),
    }


class DashboardViewSet(BatchesViewSet):
    """The dashboard's figures, read-only."""

    queryset = BatchJob.objects.none()  # the real one is per user: visible_jobs
    serializer_class = DashboardSerializer
    pagination_class = None

    @api_schema(
        summary="The dashboard's figures",
        description=(
            "Spend per day and per model at batch prices next to the synchronous price (the "
            "saving), tokens, jobs by outcome, failed requests by error code, and the jobs in "
            "flight: the admin dashboard's figures. A user with `view_batchjob` or "
            "`change_batchjob` gets them over every job (`scope` `all`); any other user over "
            "their own jobs (`scope` `own`). Amounts are decimal strings in USD."
        ),
        parameters=[DashboardQuerySerializer],
        responses={200: DashboardSerializer, **_errors(400)},
    )
    def retrieve(self, request: Request) -> Response:
        params = DashboardQuerySerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        every = has_job_permission(request.user, "view")
        # Every job needs no scope at all (and so no subquery on the items' jobs).
        scope = None if every else visible_jobs(request.user)
        figures = collect(params.validated_data["days"], jobs=scope)
        data = figures_data(figures, "all" if every else "own")
        return Response(DashboardSerializer(data).data)


__all__ = ["DashboardSerializer", "DashboardViewSet", "figures_data"]
