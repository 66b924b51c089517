"""``GET quota/``: the enqueued-token budgets per account and model and the line of waiting
parts, read-only: the admin's quota page as JSON.

The figures are :func:`openai_batches.quota.overview` and :func:`openai_batches.quota.waiting`
(the one read-only contract); this module only decides who may read them and shapes them.
The line names every owner's jobs and the budgets are the deployment's, so it needs the
``openai_batches.view_batchjob`` (or ``change_batchjob``) permission, the one that shows
every job: any other user gets a 403 naming it.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from rest_framework import serializers
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response

from .. import quota
from ..models import BatchJob, ProviderBatch
from .permissions import has_job_permission
from .schema import api_schema
from .serializers import FormSerializer, RFC3339DateTimeField
from .views import BatchesViewSet, _errors

#: Parts of the line the answer lists, oldest first (``waiting_total`` counts them all).
MAX_WAITING = 100

LIMIT_HELP = "Input tokens; null: unlimited."


class QuotaQuerySerializer(FormSerializer):
    account = serializers.CharField(
        required=False, max_length=64, help_text="Only this account's budgets and line."
    )


class ModelQuotaSerializer(serializers.Serializer):
    """One account's enqueued-token budget for one model."""

    account = serializers.CharField()
    model = serializers.CharField()
    limit = serializers.IntegerField(
        allow_null=True, help_text=f"Configured (ENQUEUED_TOKEN_LIMITS). {LIMIT_HELP}"
    )
    learned_limit = serializers.IntegerField(
        allow_null=True,
        help_text="Lowered after the provider refused a batch with token_limit_exceeded; "
        "null: nothing learned (or reset by an operator).",
    )
    effective_limit = serializers.IntegerField(
        allow_null=True, help_text=f"The lower of the two, the one that applies. {LIMIT_HELP}"
    )
    reserved = serializers.IntegerField(
        help_text="Tokens held by parts admitted (being submitted) or in flight."
    )
    in_flight = serializers.IntegerField(
        help_text="Tokens of parts the provider has and that have not ended."
    )
    waiting_parts = serializers.IntegerField(help_text="Parts in line for this budget.")
    waiting_tokens = serializers.IntegerField(help_text="Estimated tokens of those parts.")
    updated_at = RFC3339DateTimeField(
        allow_null=True, help_text="When the budget row last changed; null: no row yet."
    )


class WaitingPartSerializer(serializers.Serializer):
    """A part waiting for room in its budget."""

    job = serializers.UUIDField(help_text="The job's public UUID.")
    job_name = serializers.CharField()
    part = serializers.IntegerField(help_text="The part's number within its job.")
    account = serializers.CharField()
    model = serializers.CharField()
    estimated_tokens = serializers.IntegerField(help_text="The input tokens it needs.")
    waiting_since = RFC3339DateTimeField()
    owner = serializers.IntegerField(allow_null=True, help_text="The job owner's user id.")


class QuotaSerializer(serializers.Serializer):
    models = ModelQuotaSerializer(many=True, help_text="Per account and model.")
    waiting = WaitingPartSerializer(
        many=True, help_text=f"The line, oldest first: at most {MAX_WAITING} parts."
    )
    waiting_total = serializers.IntegerField(help_text="Parts in line in all.")


def _waiting(part: ProviderBatch) -> dict[str, Any]:
    job: BatchJob = part.job
    return {
        "job": job.uuid,
        "job_name": job.name,
        "part": part.part,
        "account": part.account,
        "model": job.model,
        "estimated_tokens": part.estimated_tokens,
        "waiting_since": part.waiting_since,
        "owner": job.owner_id,
    }


class QuotaViewSet(BatchesViewSet):
    """The budgets and the line, read-only."""

    queryset = BatchJob.objects.none()  # not a list of jobs
    serializer_class = QuotaSerializer
    pagination_class = None

    @api_schema(
        summary="Enqueued-token budgets and the line of waiting parts",
        description=(
            "Per account and model: the configured and learned enqueued-token limits, the "
            "one that applies, what is reserved and in flight, and what waits; then the "
            f"parts waiting for room, oldest first (at most {MAX_WAITING}). What the admin's "
            "quota page shows. Needs `openai_batches.view_batchjob` (or `change_batchjob`): "
            "the line names every owner's jobs. Read-only; an operator resets a learned "
            "limit in the admin."
        ),
        parameters=[QuotaQuerySerializer],
        responses={200: QuotaSerializer, **_errors(400)},
    )
    def retrieve(self, request: Request) -> Response:
        if not has_job_permission(request.user, "view"):
            raise PermissionDenied(
                "The quota needs the openai_batches.view_batchjob permission: it shows every "
                "owner's jobs."
            )
        params = QuotaQuerySerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        account = params.validated_data.get("account")
        line = quota.waiting(account)
        data = {
            "models": [asdict(row) for row in quota.overview(account)],
            "waiting": [_waiting(part) for part in line[:MAX_WAITING]],
            "waiting_total": line.count(),
        }
        return Response(QuotaSerializer(data).data)


__all__ = ["QuotaSerializer", "QuotaViewSet"]
