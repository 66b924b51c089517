"""Serializers: the API's request and response shapes (and, through them, the OpenAPI schema).

Input serializers check types only. What makes an item or a job valid (custom_id rules, one
model per batch, metadata limits, the provider's size limits) is checked once, in
:mod:`openai_batches.services`, which reports every problem at once; checking it here as well
would split one input's problems over two answers and let the two rule sets drift apart.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from django.db import models
from django.db.models import Count
from django.urls import NoReverseMatch
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.reverse import reverse
from rest_framework.utils import html

from .. import budgets, services
from ..jsonl import MAX_CUSTOM_ID_LENGTH, MAX_METADATA_PAIRS, MAX_METADATA_VALUE_LENGTH
from ..models import (
    PROVIDER_TIMESTAMPS,
    BatchJob,
    BatchReason,
    BatchStatus,
    CompletionWindow,
    Endpoint,
    ItemState,
    JobState,
    ProviderBatch,
    RequestAttempt,
)
from ..results import Result

# --------------------------------------------------------------------------------------------
# Fields


def _enum_field(
    choices: type[models.TextChoices], component: str, description: str, *, blank: bool = False
) -> type[serializers.ChoiceField]:
    """A ChoiceField whose choices are one named schema component.

    Without it drf-spectacular names enums after field names, and ``state`` (a job's) and
    ``state`` (an item's) would collide into hash-suffixed names.
    """
    field_class = type(f"{component}Field", (serializers.ChoiceField,), {})
    values = [*choices.values, ""] if blank else list(choices.values)
    schema = {"type": "string", "enum": values, "description": description}
    return extend_schema_field(schema, component_name=component)(field_class)


JobStateField = _enum_field(JobState, "BatchJobState", "Where the job is on this side.")
ItemStateField = _enum_field(ItemState, "BatchItemState", "Where the request is.")
ProviderStatusField = _enum_field(BatchStatus, "BatchProviderStatus", "The provider's raw status.")
ProviderStatusOrEmptyField = _enum_field(
    BatchStatus,
    "BatchProviderStatusOrEmpty",
    "The provider's raw status; empty until the provider knows the batch.",
    blank=True,
)
EndpointField = _enum_field(Endpoint, "BatchEndpoint", "An endpoint the Batch API accepts.")
BatchReasonField = _enum_field(
    BatchReason,
    "BatchReason",
    "Why the provider batch was created: the job's first part, a further part of a job "
    "larger than one batch takes, or a retry of requests that did not succeed.",
)


#: The provider's timestamps of a batch (a job shows its latest part's), in lifecycle order.
PROVIDER_TIMESTAMP_FIELDS = [attr for _key, attr in PROVIDER_TIMESTAMPS]


@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": {"type": "string", "maxLength": MAX_METADATA_VALUE_LENGTH},
        "maxProperties": MAX_METADATA_PAIRS,
        "description": "Up to 16 string pairs sent with the batch (keys <= 64, values <= 512 characters).",
    }
)
class MetadataField(serializers.Field):
    """A JSON object; in a multipart form, the object's JSON text."""

    default_error_messages = {"invalid": "Must be a JSON object of string keys and values."}

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        # Forms cannot carry objects, so multipart clients send the JSON text; a JSON body
        # must send a real object (a string there is a client bug worth reporting).
        if isinstance(data, str) and html.is_html_input(getattr(self.parent, "initial_data", None)):
            try:
                data = json.loads(data) if data.strip() else {}
            except ValueError:
                self.fail("invalid")
        if not isinstance(data, dict):
            self.fail("invalid")
        return data

    def to_representation(self, value: Any) -> Any:
        return value


class StrictCharField(serializers.CharField):
    """A string that must be a string: DRF would turn ``0`` into ``"0"``, the schema says no."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


@extend_schema_field({"type": "string", "format": "binary"})
class UploadField(serializers.FileField):
    """An uploaded file (``format: binary``); may be empty, which adds no items."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("allow_empty_file", True)
        super().__init__(**kwargs)


@extend_schema_field(
    {
        "type": "object",
        "properties": {"model": {"type": "string", "minLength": 1}},
        "additionalProperties": True,
        "description": "The request body as the endpoint takes it. `model` is the same for "
        "every item of a job; it is required except on /v1/moderations, where the API "
        "defaults it (omni-moderation-latest).",
    }
)
class RequestBodyField(serializers.DictField):
    """A request body (documentation only: the services check it)."""


class RequestItemInputSerializer(serializers.Serializer):
    """One request to add (documentation of ``items[]``; validated by the services)."""

    custom_id = serializers.RegexField(
        r"\S",
        max_length=MAX_CUSTOM_ID_LENGTH,
        help_text="Your key for the request, unique within the job; results come back under it.",
    )
    method = serializers.ChoiceField(
        choices=["POST"], required=False, help_text="HTTP method; only POST (the default)."
    )
    url = EndpointField(
        choices=Endpoint.choices,
        required=False,
        help_text="The request's endpoint; must equal the job's (the default).",
    )
    body = RequestBodyField(help_text="The request body, naming its `model` (one model per job).")


@extend_schema_field(RequestItemInputSerializer(many=True))
class ItemsField(serializers.ListField):
    """A list of request items; every item is checked by the services, which name its index."""

    # null too: the services report it like any other non-object item (index, "must be an
    # object"), where DRF would name the list, "items", instead of the item.
    child = serializers.JSONField(allow_null=True)


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


class RFC3339DateTimeField(serializers.DateTimeField):
    """A date-time exactly as OpenAPI's ``date-time`` format says (RFC 3339, with an offset).

    DRF alone also takes dates and naive times; accepting what the schema does not promise
    would make the documented contract and the real one differ.
    """

    default_error_messages = {
        "rfc3339": "Must be an RFC 3339 date-time with a time zone, e.g. 2025-01-31T00:00:00Z."
    }

    def to_internal_value(self, value: Any) -> datetime:
        match = _RFC3339.match(value) if isinstance(value, str) else None
        if match is None:
            self.fail("rfc3339")
        if match.group(1) == "60":  # a leap second: valid RFC 3339, unknown to datetime
            value = value[: match.start(1)] + "59" + value[match.end(1) :]
        try:
            parsed = datetime.fromisoformat(value.upper())
        except ValueError:  # the right shape but no such date or time (month 13, hour 25)
            self.fail("rfc3339")
        try:
            return parsed.astimezone(UTC)
        except OverflowError:  # 0001-01-01T00:00:00+01:00 is before datetime.min in UTC
            return (datetime.min if parsed.year == 1 else datetime.max).replace(tzinfo=UTC)


class FormSerializer(serializers.Serializer):
    """Query parameters or a form, where ``name=`` is an error rather than DRF's "not given".

    An empty value is not a valid date-time, owner id, endpoint or ordering; ignoring it
    would hide a client's bug (an unset variable in a URL template) behind a default.
    Fields that take a blank string (a job's name) keep taking it.
    """

    def to_internal_value(self, data: Any) -> Any:
        empty = {
            name: ["May not be empty."]
            for name, field in self.fields.items()
            if html.is_html_input(data)
            and name in data
            and data.get(name) == ""
            and not getattr(field, "allow_blank", False)
        }
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            detail = exc.detail if isinstance(exc.detail, dict) else {}
            raise serializers.ValidationError({**detail, **empty}) from exc
        if empty:
            raise serializers.ValidationError(empty)
        return value


# --------------------------------------------------------------------------------------------
# Jobs: output


class ProviderErrorSerializer(serializers.Serializer):
    """One entry of the provider's ``errors.data`` (a validation problem of the input file)."""

    code = serializers.CharField(allow_null=True, read_only=True)
    message = serializers.CharField(allow_null=True, read_only=True)
    param = serializers.CharField(allow_null=True, read_only=True)
    line = serializers.IntegerField(allow_null=True, read_only=True)


class JobCountsSerializer(serializers.Serializer):
    items = serializers.IntegerField(source="item_count", help_text="Requests in the job.")
    input_bytes = serializers.IntegerField(help_text="Size of the job's JSONL input in bytes.")
    provider_total = serializers.IntegerField(
        source="request_count_total", help_text="request_counts.total from the provider."
    )
    provider_completed = serializers.IntegerField(
        source="request_count_completed", help_text="request_counts.completed from the provider."
    )
    provider_failed = serializers.IntegerField(
        source="request_count_failed", help_text="request_counts.failed from the provider."
    )


class UsageSerializer(serializers.Serializer):
    input_tokens = serializers.IntegerField()
    cached_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    reasoning_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()


class JobLinksSerializer(serializers.Serializer):
    self = serializers.URLField(help_text="This job.")
    items = serializers.URLField(help_text="The job's items.")
    results = serializers.URLField(help_text="The job's results as JSONL.")


def _cost_text(value: Any) -> str | None:
    return None if value is None else str(value)


#: A money amount as the API writes it: a decimal string, null when unknown.
COST_SCHEMA = {
    "type": "string",
    "format": "decimal",
    "nullable": True,
    "pattern": r"^-?\d+(\.\d+)?$",
}


def latest_part(job: BatchJob) -> ProviderBatch | None:
    """The job's latest provider batch: from ``prefetch_related("batches")`` when the view
    prefetched them (a page of jobs costs one query for all their batches), else one query."""
    cache = getattr(job, "_prefetched_objects_cache", {})
    if "batches" in cache:
        parts = list(cache["batches"])
        return max(parts, key=lambda p: p.part) if parts else None
    return job.current_batch


_LATEST = "Of the job's latest provider batch (every part is in the job detail's `batches`)."


class LatestPartCharField(serializers.CharField):
    """A provider id of the job's latest part; empty before the job has one."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(read_only=True, **kwargs)

    def get_attribute(self, instance: BatchJob) -> str:
        part = latest_part(instance)
        return str(getattr(part, str(self.source))) if part is not None else ""


class LatestPartDateTimeField(serializers.DateTimeField):
    """A provider timestamp of the job's latest part; null until the provider reports it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(read_only=True, allow_null=True, **kwargs)

    def get_attribute(self, instance: BatchJob) -> datetime | None:
        part = latest_part(instance)
        value: datetime | None = getattr(part, str(self.source)) if part is not None else None
        return value


class BatchJobSerializer(serializers.ModelSerializer):
    """A batch job: what was asked, where it is, what it used and cost.

    ``provider_batch_id``, the file ids, ``provider_errors`` and the provider's timestamps
    describe the job's latest provider batch, as when a job was one batch; a job of several
    parts lists each in its detail's ``batches``.
    """

    endpoint = EndpointField(choices=Endpoint.choices, read_only=True)
    state = JobStateField(choices=JobState.choices, read_only=True)
    provider_status = ProviderStatusOrEmptyField(
        choices=BatchStatus.choices, allow_blank=True, read_only=True
    )
    counts = JobCountsSerializer(source="*", read_only=True)
    usage = UsageSerializer(source="*", read_only=True)
    cost = serializers.SerializerMethodField(
        help_text="Estimated cost in USD from OPENAI_BATCHES['PRICES'] (batch rates); null when the model has no price."
    )
    provider_errors = serializers.SerializerMethodField(help_text=_LATEST)
    provider_batch_id = LatestPartCharField(help_text=_LATEST)
    input_file_id = LatestPartCharField(help_text=_LATEST)
    output_file_id = LatestPartCharField(help_text=_LATEST)
    error_file_id = LatestPartCharField(help_text=_LATEST)
    provider_created_at = LatestPartDateTimeField(help_text=_LATEST)
    in_progress_at = LatestPartDateTimeField(help_text=_LATEST)
    expires_at = LatestPartDateTimeField(help_text=_LATEST)
    finalizing_at = LatestPartDateTimeField(help_text=_LATEST)
    completed_at = LatestPartDateTimeField(help_text=_LATEST)
    failed_at = LatestPartDateTimeField(help_text=_LATEST)
    expired_at = LatestPartDateTimeField(help_text=_LATEST)
    cancelling_at = LatestPartDateTimeField(help_text=_LATEST)
    cancelled_at = LatestPartDateTimeField(help_text=_LATEST)
    links = serializers.SerializerMethodField()

    class Meta:
        model = BatchJob
        fields = [
            "uuid",
            "name",
            "endpoint",
            "completion_window",
            "metadata",
            "account",
            "model",
            "owner",
            "state",
            "provider_status",
            "provider_batch_id",
            "input_file_id",
            "output_file_id",
            "error_file_id",
            "provider_model",
            "counts",
            "usage",
            "estimated_tokens",
            "cost",
            "provider_errors",
            "last_error",
            "last_error_at",
            "created_at",
            "updated_at",
            "submit_requested_at",
            "submitted_at",
            "last_polled_at",
            "next_poll_at",
            "ingested_at",
            *PROVIDER_TIMESTAMP_FIELDS,
            "links",
        ]
        read_only_fields = fields

    @extend_schema_field(COST_SCHEMA)
    def get_cost(self, job: BatchJob) -> str | None:
        return _cost_text(services.job_cost(job))

    @extend_schema_field(ProviderErrorSerializer(many=True))
    def get_provider_errors(self, job: BatchJob) -> list[dict[str, Any]]:
        part = latest_part(job)
        errors = part.provider_errors if part is not None else []
        return list(
            ProviderErrorSerializer(
                [e for e in errors or [] if isinstance(e, dict)], many=True
            ).data
        )

    @extend_schema_field(JobLinksSerializer)
    def get_links(self, job: BatchJob) -> dict[str, str] | None:
        request = self.context.get("request")
        match = getattr(request, "resolver_match", None)
        namespace = f"{match.namespace}:" if match and match.namespace else ""
        kwargs = {"uuid": str(job.uuid)}
        try:
            return {
                "self": reverse(f"{namespace}job-detail", kwargs=kwargs, request=request),
                "items": reverse(
                    f"{namespace}job-item-list", kwargs={"job_uuid": str(job.uuid)}, request=request
                ),
                "results": reverse(f"{namespace}job-results", kwargs=kwargs, request=request),
            }
        except NoReverseMatch:  # serialized outside the API's URLconf (a script, a test)
            return None


def _item_state_counts_serializer() -> type[serializers.Serializer]:
    fields = {
        state.value: serializers.IntegerField(help_text=f"Items {state.label.lower()}.")
        for state in ItemState
    }
    return type("BatchItemStateCountsSerializer", (serializers.Serializer,), fields)


ItemStateCountsSerializer = _item_state_counts_serializer()


class ProviderBatchSerializer(serializers.ModelSerializer):
    """One provider batch carrying part of a job (or all of it)."""

    reason = BatchReasonField(choices=BatchReason.choices, read_only=True)
    state = JobStateField(
        choices=JobState.choices,
        read_only=True,
        help_text="Where this batch is on this side, in the job's words: submit_requested "
        "(planned; `waiting_since` set while it waits for enqueued-token quota), submitted "
        "(at the provider), finished (results stored), submit_failed, cancelled (dropped "
        "before it was sent).",
    )
    provider_status = ProviderStatusOrEmptyField(
        choices=BatchStatus.choices, allow_blank=True, read_only=True
    )
    counts = JobCountsSerializer(source="*", read_only=True)
    usage = UsageSerializer(source="*", read_only=True)
    cost = serializers.SerializerMethodField(
        help_text="What this batch's results cost in USD, stored when they were ingested; "
        "null before that or when the model has no price."
    )
    provider_errors = serializers.SerializerMethodField()

    class Meta:
        model = ProviderBatch
        fields = [
            "part",
            "reason",
            "state",
            "provider_status",
            "provider_batch_id",
            "input_file_id",
            "output_file_id",
            "error_file_id",
            "provider_model",
            "counts",
            "usage",
            "cost",
            "provider_errors",
            "last_error",
            "estimated_tokens",
            "reserved_tokens",
            "waiting_since",
            "admitted_at",
            "created_at",
            "submitted_at",
            "ingested_at",
            *PROVIDER_TIMESTAMP_FIELDS,
        ]
        read_only_fields = fields

    @extend_schema_field(COST_SCHEMA)
    def get_cost(self, batch: ProviderBatch) -> str | None:
        return _cost_text(batch.cost)

    @extend_schema_field(ProviderErrorSerializer(many=True))
    def get_provider_errors(self, batch: ProviderBatch) -> list[dict[str, Any]]:
        errors = [e for e in batch.provider_errors or [] if isinstance(e, dict)]
        return list(ProviderErrorSerializer(errors, many=True).data)


class ActionCheckSerializer(serializers.Serializer):
    allowed = serializers.BooleanField()
    reason = serializers.CharField(help_text="Why not, when not allowed (empty otherwise).")


class JobActionsSerializer(serializers.Serializer):
    submit = ActionCheckSerializer()
    refresh = ActionCheckSerializer()
    cancel = ActionCheckSerializer()
    retry_failed = ActionCheckSerializer(help_text='`POST retry/` with `{"which": "failed"}`.')
    retry_expired = ActionCheckSerializer(help_text='`POST retry/` with `{"which": "expired"}`.')


class BatchJobDetailSerializer(BatchJobSerializer):
    """A job with its provider batches, per-state item counts and which actions are
    possible now."""

    batches = serializers.SerializerMethodField()
    item_states = serializers.SerializerMethodField()
    actions = serializers.SerializerMethodField()

    class Meta(BatchJobSerializer.Meta):
        fields = [*BatchJobSerializer.Meta.fields, "batches", "item_states", "actions"]
        read_only_fields = fields

    @extend_schema_field(ProviderBatchSerializer(many=True))
    def get_batches(self, job: BatchJob) -> list[dict[str, Any]]:
        """Every provider batch of the job, in part order (one query)."""
        return list(ProviderBatchSerializer(job.batches.order_by("part"), many=True).data)

    @extend_schema_field(ItemStateCountsSerializer)
    def get_item_states(self, job: BatchJob) -> dict[str, int]:
        counts = dict.fromkeys(ItemState.values, 0)
        rows = job.items.order_by().values_list("state").annotate(n=Count("pk"))
        for state, n in rows:
            counts[state] = n
        return counts

    @extend_schema_field(JobActionsSerializer)
    def get_actions(self, job: BatchJob) -> dict[str, dict[str, Any]]:
        checks = {
            "submit": services.can_submit,
            "refresh": services.can_refresh,
            "cancel": services.can_cancel,
            "retry_failed": lambda j: services.can_retry(j, "failed"),
            "retry_expired": lambda j: services.can_retry(j, "expired"),
        }
        result = {}
        for name, check in checks.items():
            allowed, reason = check(job)
            result[name] = {"allowed": allowed, "reason": "" if allowed else reason}
        return result


@extend_schema_field(COST_SCHEMA)
class CostField(serializers.CharField):
    """An amount in USD as a decimal string, null when unknown."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(read_only=True, allow_null=True, **kwargs)


class JobEstimateSerializer(serializers.Serializer):
    """What a job will use and cost, estimated from its requests before it runs."""

    requests = serializers.IntegerField(help_text="Requests in the job.")
    model = serializers.CharField(help_text="The model the requests name ('' when none yet).")
    input_tokens = serializers.IntegerField(
        help_text="Input tokens, estimated by OPENAI_BATCHES['TOKEN_ESTIMATOR'] (the built-in "
        "heuristic by default)."
    )
    max_output_tokens = serializers.IntegerField(
        help_text="The most output tokens the requests allow: each body's limit "
        "(max_completion_tokens, max_tokens, max_output_tokens), else "
        "BUDGETS['DEFAULT_OUTPUT_TOKENS'] (1024)."
    )
    currency = serializers.CharField(help_text="Always USD.")
    cost = CostField(
        help_text="Those tokens (input, and output at most) at the batch prices of "
        "OPENAI_BATCHES['PRICES']; null when the model has no price."
    )
    cost_note = serializers.CharField(
        help_text="Why `cost` is null (`no price for <model>`, `no requests yet`); empty "
        "when it is not."
    )


def estimate_data(job: BatchJob) -> dict[str, Any]:
    """The job's estimate (:func:`openai_batches.budgets.estimate_job`) as the API answers it."""
    estimate = budgets.estimate_job(job)
    return {
        "requests": estimate.requests,
        "model": job.model or job.provider_model,
        "input_tokens": estimate.input_tokens,
        "max_output_tokens": estimate.output_tokens,
        "currency": "USD",
        "cost": _cost_text(estimate.cost),
        "cost_note": budgets.unpriced_note(job, estimate),
    }


# --------------------------------------------------------------------------------------------
# Jobs: input


class BatchJobCreateSerializer(FormSerializer):
    """Create a draft job, optionally with its items (all or nothing)."""

    name = StrictCharField(
        max_length=200,
        required=False,
        allow_blank=True,
        default="",
        help_text="A label for people.",
    )
    endpoint = EndpointField(
        choices=Endpoint.choices,
        default=Endpoint.CHAT_COMPLETIONS.value,
        help_text="The endpoint every request calls.",
    )
    completion_window = StrictCharField(
        max_length=8,
        default=CompletionWindow.HOURS_24.value,
        help_text="How long the provider may take: `24h` (OpenAI, Azure, Anthropic); a "
        "provider with other windows takes those (Groq: `24h` to `7d`). A window the "
        "account's provider does not take is a 400 naming `completion_window`.",
    )
    metadata = MetadataField(required=False, default=dict)
    account = StrictCharField(
        max_length=64,
        default="default",
        help_text="A configured OPENAI_BATCHES account you may use (OPENAI_BATCHES"
        "['ACCOUNT_ACCESS']: by default `default` is open to everyone, other accounts to "
        "superusers). An unknown account and one you may not use are the same 400 naming "
        "the field `account`.",
    )
    items = ItemsField(
        required=False,
        help_text="Requests to add now; every problem is reported with its index and nothing is saved.",
    )


class BatchJobUploadSerializer(BatchJobCreateSerializer):
    """Create a draft job from a JSONL file in OpenAI's batch input format."""

    items = None  # type: ignore[assignment]  # a form carries the items as a file instead
    file = UploadField(
        required=False,
        help_text="JSONL in OpenAI's batch input format; problems name the line.",
    )


class ItemsAddSerializer(serializers.Serializer):
    """Add items to a draft job (all or nothing)."""

    items = ItemsField(help_text="Requests to add; every problem is reported with its index.")


class ItemsUploadSerializer(FormSerializer):
    """Add items to a draft job from a JSONL file (all or nothing)."""

    file = UploadField(help_text="JSONL in OpenAI's batch input format; problems name the line.")


class ItemsAddedSerializer(serializers.Serializer):
    added = serializers.IntegerField(help_text="Items added by this call.")
    item_count = serializers.IntegerField(help_text="Items in the job now.")


# --------------------------------------------------------------------------------------------
# Items and results


class LinkedObjectSerializer(serializers.Serializer):
    type = serializers.CharField(help_text="app_label.model of the linked row.")
    id = serializers.CharField(help_text="Primary key of the linked row.")


class AnswerSerializer(serializers.Serializer):
    """An item's answer, read through :attr:`RequestItem.result`."""

    text = serializers.CharField(allow_null=True)
    refusal = serializers.CharField(allow_null=True)
    finish_reason = serializers.CharField(allow_null=True)
    parsed = serializers.JSONField(allow_null=True)
    code = serializers.CharField(help_text='"" for a usable answer.')
    reason = serializers.CharField(help_text='"" for a usable answer.')


class RequestAttemptSerializer(serializers.Serializer):
    """One time a request was sent, and what came back."""

    number = serializers.IntegerField(help_text="1 for the first send, then 2, 3, ...")
    part = serializers.IntegerField(
        source="batch.part", help_text="The job's part that carried it."
    )
    provider_batch_id = serializers.CharField(
        source="batch.provider_batch_id", help_text="The provider batch that carried it."
    )
    state = ItemStateField(choices=ItemState.choices, help_text="The outcome of this attempt.")
    status_code = serializers.IntegerField(
        allow_null=True, help_text="The endpoint's HTTP status; null when it never ran."
    )
    error = serializers.JSONField(
        allow_null=True,
        help_text="The error object (never ran) or the failed response's body; null on success.",
    )
    input_tokens = serializers.IntegerField()
    cached_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    reasoning_tokens = serializers.IntegerField()
    retried = serializers.BooleanField(
        help_text="Whether the request was sent again after this attempt (its result was "
        "never announced)."
    )
    created_at = serializers.DateTimeField(help_text="When this result was stored.")


class RequestItemSerializer(serializers.Serializer):
    """One request of a job and, once it ran, its result."""

    custom_id = serializers.CharField()
    state = ItemStateField(choices=ItemState.choices)
    method = serializers.CharField()
    url = EndpointField(choices=Endpoint.choices)
    body = serializers.DictField()
    status_code = serializers.IntegerField(
        allow_null=True, help_text="The HTTP status the request got."
    )
    response = serializers.JSONField(
        allow_null=True, help_text="The endpoint's response body (success or error body)."
    )
    error = serializers.JSONField(
        allow_null=True, help_text="The error of a request that never ran."
    )
    provider_request_id = serializers.CharField()
    result_line_id = serializers.CharField()
    input_tokens = serializers.IntegerField()
    cached_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    reasoning_tokens = serializers.IntegerField()
    completed_at = serializers.DateTimeField(allow_null=True)
    attempt_count = serializers.IntegerField(
        help_text="How many times a result came back for this request (its `attempts` are "
        "in the item's own answer)."
    )
    linked_object = serializers.SerializerMethodField()
    answer = serializers.SerializerMethodField(
        help_text="The answer without the wire format (see openai_batches.results): text, "
        "refusal, finish reason, the structured output when the job asked for one, and for "
        "an unusable result a short code and a one-line reason."
    )

    @extend_schema_field(AnswerSerializer())
    def get_answer(self, item: Any) -> dict[str, Any]:
        # store=False: a GET never writes; ingest already stored parsed outputs in bulk.
        result = Result.from_item(item, store=False)
        return {
            "text": result.text,
            "refusal": result.refusal,
            "finish_reason": result.finish_reason,
            "parsed": result.parsed_json,
            "code": result.code,
            "reason": result.reason,
        }

    @extend_schema_field(LinkedObjectSerializer(allow_null=True))
    def get_linked_object(self, item: Any) -> dict[str, str] | None:
        if item.content_type_id is None:
            return None
        ct = item.content_type
        return {"type": f"{ct.app_label}.{ct.model}", "id": item.object_id}


class RequestItemDetailSerializer(RequestItemSerializer):
    """One request, its result, and every attempt that brought a result back."""

    attempts = serializers.SerializerMethodField()

    @extend_schema_field(RequestAttemptSerializer(many=True))
    def get_attempts(self, item: Any) -> list[dict[str, Any]]:
        attempts = RequestAttempt.objects.filter(item=item).select_related("batch")
        return list(RequestAttemptSerializer(attempts.order_by("number"), many=True).data)


class RetrySerializer(serializers.Serializer):
    """Which of a finished job's requests to send again."""

    which = serializers.ChoiceField(
        choices=list(services.RETRY_KINDS),
        help_text="failed: requests that failed or had no result line; expired: requests "
        "that never ran because their batch expired or was cancelled.",
    )


class ResultLineSerializer(serializers.Serializer):
    """One line of the results JSONL."""

    custom_id = serializers.CharField()
    state = ItemStateField(choices=ItemState.choices)
    status_code = serializers.IntegerField(allow_null=True)
    response = serializers.JSONField(allow_null=True)
    error = serializers.JSONField(allow_null=True)


# --------------------------------------------------------------------------------------------
# Filters (query parameters)

ORDERINGS = [
    "created_at",
    "-created_at",
    "updated_at",
    "-updated_at",
    "submitted_at",
    "-submitted_at",
    "name",
    "-name",
    "state",
    "-state",
    "item_count",
    "-item_count",
]


class JobFilterSerializer(FormSerializer):
    state = serializers.ListField(
        child=JobStateField(choices=JobState.choices),
        required=False,
        help_text="Only jobs in these states (repeat the parameter for several).",
    )
    provider_status = serializers.ListField(
        child=ProviderStatusField(choices=BatchStatus.choices),
        required=False,
        help_text="Only jobs whose provider status is one of these.",
    )
    endpoint = serializers.ListField(
        child=EndpointField(choices=Endpoint.choices),
        required=False,
        help_text="Only jobs calling these endpoints.",
    )
    owner = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=2**63 - 1,  # the largest primary key a database holds
        help_text="Only jobs of this user id.",
    )
    created_after = RFC3339DateTimeField(required=False, help_text="Created at or after.")
    created_before = RFC3339DateTimeField(required=False, help_text="Created before.")
    submitted_after = RFC3339DateTimeField(required=False, help_text="Submitted at or after.")
    submitted_before = RFC3339DateTimeField(required=False, help_text="Submitted before.")
    ordering = serializers.ChoiceField(
        choices=ORDERINGS, required=False, default="-created_at", help_text="Sort order."
    )


class ItemFilterSerializer(FormSerializer):
    state = serializers.ListField(
        child=ItemStateField(choices=ItemState.choices),
        required=False,
        help_text="Only items in these states (repeat the parameter for several).",
    )
    custom_id_prefix = serializers.RegexField(
        r"^[^\x00]+$",  # a database text column cannot hold NUL, so no custom_id does
        required=False,
        max_length=MAX_CUSTOM_ID_LENGTH,
        help_text="Only items whose custom_id starts with this.",
    )


# --------------------------------------------------------------------------------------------
# Errors (documentation of the one error shape; see api/exceptions.py)


class ProblemSerializer(serializers.Serializer):
    index = serializers.IntegerField(
        allow_null=True, help_text="0-based index of the item (or line - 1)."
    )
    line = serializers.IntegerField(allow_null=True, help_text="1-based line in a JSONL upload.")
    field = serializers.CharField(allow_null=True, help_text="The field at fault, dotted.")
    message = serializers.CharField()


class ErrorDetailSerializer(serializers.Serializer):
    type = serializers.CharField(
        help_text="invalid_request, payload_too_large, invalid_state, not_found, not_authenticated, permission_denied, throttled, provider_error, ..."
    )
    message = serializers.CharField()
    problems = ProblemSerializer(many=True)
    truncated = serializers.BooleanField(
        required=False, help_text="Validation stopped early: too many problems."
    )
    state = serializers.CharField(
        required=False, allow_null=True, help_text="The job's state, on a 409."
    )


class BatchErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()
