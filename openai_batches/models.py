"""Models: a ``BatchJob`` (one logical job) and its ``RequestItem`` rows.

Only :mod:`openai_batches.services` changes state on these rows; the QuerySet methods here
are read helpers everyone needs (``active()``, ``due_for_poll()``, ``pending_announcement()``).

The provider's facts about a batch (its id, raw status, files, counts, usage, timestamps)
are grouped in :class:`ProviderBatchFields` so that a later release can move them to a model
of their own when one job spans several provider batches, without touching the rest.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .results import Result


class Endpoint(models.TextChoices):
    """The endpoints OpenAI's Batch API accepts."""

    RESPONSES = "/v1/responses", "Responses"
    CHAT_COMPLETIONS = "/v1/chat/completions", "Chat completions"
    EMBEDDINGS = "/v1/embeddings", "Embeddings"
    COMPLETIONS = "/v1/completions", "Completions"
    MODERATIONS = "/v1/moderations", "Moderations"
    IMAGES_GENERATIONS = "/v1/images/generations", "Image generations"
    IMAGES_EDITS = "/v1/images/edits", "Image edits"
    VIDEOS = "/v1/videos", "Videos"


class CompletionWindow(models.TextChoices):
    HOURS_24 = "24h", "24 hours"


class JobState(models.TextChoices):
    """Where the job is on *our* side. The provider's own word is ``provider_status``."""

    DRAFT = "draft", _("Draft")  # accepts items
    SUBMIT_REQUESTED = "submit_requested", _("Submission requested")  # intent recorded, no I/O yet
    SUBMITTING = "submitting", _("Submitting")  # upload / create under way
    SUBMITTED = "submitted", _("Submitted")  # the provider knows the batch; track it
    FINISHED = "finished", _("Finished")  # terminal at the provider and results ingested
    SUBMIT_FAILED = "submit_failed", _("Submission failed")  # the provider never accepted it
    CANCELLED = "cancelled", _("Cancelled before submission")


class BatchStatus(models.TextChoices):
    """The provider's raw batch status, mirrored exactly."""

    VALIDATING = "validating", _("Validating")
    FAILED = "failed", _("Failed")
    IN_PROGRESS = "in_progress", _("In progress")
    FINALIZING = "finalizing", _("Finalizing")
    COMPLETED = "completed", _("Completed")
    EXPIRED = "expired", _("Expired")
    CANCELLING = "cancelling", _("Cancelling")
    CANCELLED = "cancelled", _("Cancelled")


TERMINAL_STATUSES = frozenset(
    {BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.EXPIRED, BatchStatus.CANCELLED}
)

#: How far along the provider's lifecycle each status is; a refresh never moves backwards.
STATUS_RANK: dict[str, int] = {
    BatchStatus.VALIDATING: 0,
    BatchStatus.IN_PROGRESS: 1,
    BatchStatus.FINALIZING: 2,
    BatchStatus.CANCELLING: 2,
    BatchStatus.COMPLETED: 3,
    BatchStatus.FAILED: 3,
    BatchStatus.EXPIRED: 3,
    BatchStatus.CANCELLED: 3,
}


class ItemState(models.TextChoices):
    PENDING = "pending", _("Pending")  # not yet sent to the provider
    SUBMITTED = "submitted", _("Submitted")  # in a provider batch, no result yet
    SUCCEEDED = "succeeded", _("Succeeded")
    FAILED = "failed", _("Failed")  # ran and got a 4xx/5xx, or was refused with an error object
    EXPIRED = "expired", _("Expired")  # never ran: the 24 h window passed
    CANCELLED = "cancelled", _("Cancelled")  # never ran: the batch was cancelled
    MISSING = "missing", _("Missing")  # the batch ended but no result line named it


FINAL_ITEM_STATES = frozenset(
    {
        ItemState.SUCCEEDED,
        ItemState.FAILED,
        ItemState.EXPIRED,
        ItemState.CANCELLED,
        ItemState.MISSING,
    }
)


class BatchJobQuerySet(models.QuerySet["BatchJob"]):
    def active(self) -> BatchJobQuerySet:
        """Jobs the provider knows and whose results are not ingested yet."""
        return self.filter(state=JobState.SUBMITTED)

    def due_for_poll(self, now: Any = None) -> BatchJobQuerySet:
        now = now or timezone.now()
        return self.active().filter(Q(next_poll_at__isnull=True) | Q(next_poll_at__lte=now))

    def submit_requested(self) -> BatchJobQuerySet:
        return self.filter(state=JobState.SUBMIT_REQUESTED)

    def for_user(self, user: Any) -> BatchJobQuerySet:
        """Jobs ``user`` may see: every job with Django's view (or change) permission on
        jobs, their own otherwise. ``is_staff`` alone grants nothing, as in the admin."""
        if not getattr(user, "is_authenticated", False) or not getattr(user, "is_active", True):
            return self.none()
        label, name = self.model._meta.app_label, self.model._meta.model_name
        if user.has_perm(f"{label}.view_{name}") or user.has_perm(f"{label}.change_{name}"):
            return self
        return self.filter(owner=user)


class RequestItemQuerySet(models.QuerySet["RequestItem"]):
    def final(self) -> RequestItemQuerySet:
        return self.filter(state__in=FINAL_ITEM_STATES)

    def pending_announcement(self) -> RequestItemQuerySet:
        """The outbox: results stored but whose signal has not gone out yet."""
        return self.filter(announced=False, state__in=FINAL_ITEM_STATES)


class ProviderBatchFields(models.Model):
    """The provider's facts about one batch, kept together (see the module docstring)."""

    provider_batch_id = models.CharField(
        _("provider batch id"),
        max_length=64,
        blank=True,
        default="",
        db_index=True,
        help_text=_("The batch id the provider gave (batch_...)."),
    )
    provider_status = models.CharField(
        _("provider status"),
        max_length=16,
        choices=BatchStatus.choices,
        blank=True,
        default="",
        help_text=_("The provider's raw status, exactly as last seen."),
    )
    input_file_id = models.CharField(
        _("input file id"),
        max_length=64,
        blank=True,
        default="",
        help_text=_("The uploaded JSONL file (file-...)."),
    )
    output_file_id = models.CharField(
        _("output file id"),
        max_length=64,
        blank=True,
        default="",
        help_text=_("The provider's file of successful results, when there is one."),
    )
    error_file_id = models.CharField(
        _("error file id"),
        max_length=64,
        blank=True,
        default="",
        help_text=_("The provider's file of failed or never-run requests, when there is one."),
    )
    provider_model = models.CharField(
        _("provider model"),
        max_length=128,
        blank=True,
        default="",
        help_text=_("The model snapshot the provider reports for the batch."),
    )
    request_count_total = models.PositiveIntegerField(
        _("requests (provider)"),
        default=0,
        help_text=_("request_counts.total as reported by the provider."),
    )
    request_count_completed = models.PositiveIntegerField(
        _("completed (provider)"),
        default=0,
        help_text=_("request_counts.completed as reported by the provider."),
    )
    request_count_failed = models.PositiveIntegerField(
        _("failed (provider)"),
        default=0,
        help_text=_("request_counts.failed as reported by the provider."),
    )
    provider_errors = models.JSONField(
        _("provider errors"),
        default=list,
        blank=True,
        help_text=_("errors.data from the provider: validation problems with their line numbers."),
    )
    input_tokens = models.BigIntegerField(
        _("input tokens"), default=0, help_text=_("Input tokens used by the job's requests.")
    )
    cached_tokens = models.BigIntegerField(
        _("cached tokens"), default=0, help_text=_("Input tokens served from the prompt cache.")
    )
    output_tokens = models.BigIntegerField(
        _("output tokens"), default=0, help_text=_("Output tokens produced by the job's requests.")
    )
    reasoning_tokens = models.BigIntegerField(
        _("reasoning tokens"), default=0, help_text=_("Output tokens spent on reasoning.")
    )
    provider_created_at = models.DateTimeField(
        _("created at (provider)"),
        null=True,
        blank=True,
        help_text=_("When the provider created the batch."),
    )
    in_progress_at = models.DateTimeField(
        _("in progress at"),
        null=True,
        blank=True,
        help_text=_("When the provider started running requests."),
    )
    expires_at = models.DateTimeField(
        _("expires at"),
        null=True,
        blank=True,
        help_text=_("When the 24 h completion window closes."),
    )
    finalizing_at = models.DateTimeField(
        _("finalizing at"),
        null=True,
        blank=True,
        help_text=_("When the provider started writing result files."),
    )
    completed_at = models.DateTimeField(
        _("completed at"),
        null=True,
        blank=True,
        help_text=_("When the provider completed the batch."),
    )
    failed_at = models.DateTimeField(
        _("failed at"),
        null=True,
        blank=True,
        help_text=_("When the provider failed the batch (validation)."),
    )
    expired_at = models.DateTimeField(
        _("expired at"), null=True, blank=True, help_text=_("When the batch expired.")
    )
    cancelling_at = models.DateTimeField(
        _("cancelling at"),
        null=True,
        blank=True,
        help_text=_("When cancellation was requested at the provider."),
    )
    cancelled_at = models.DateTimeField(
        _("cancelled at"), null=True, blank=True, help_text=_("When the cancellation finished.")
    )

    class Meta:
        abstract = True

    @property
    def is_terminal(self) -> bool:
        return self.provider_status in TERMINAL_STATUSES

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


PROVIDER_TIMESTAMPS = (
    ("created_at", "provider_created_at"),
    ("in_progress_at", "in_progress_at"),
    ("expires_at", "expires_at"),
    ("finalizing_at", "finalizing_at"),
    ("completed_at", "completed_at"),
    ("failed_at", "failed_at"),
    ("expired_at", "expired_at"),
    ("cancelling_at", "cancelling_at"),
    ("cancelled_at", "cancelled_at"),
)


class BatchJob(ProviderBatchFields):
    """One logical batch of requests to one endpoint and model."""

    uuid = models.UUIDField(
        _("UUID"),
        default=uuid.uuid4,
        unique=True,
        editable=False,
        help_text=_(
            "Public id; also sent to the provider in the batch metadata to find it after a crash."
        ),
    )
    name = models.CharField(
        _("name"), max_length=200, blank=True, default="", help_text=_("A label for people.")
    )
    endpoint = models.CharField(
        _("endpoint"),
        max_length=32,
        choices=Endpoint.choices,
        default=Endpoint.CHAT_COMPLETIONS,
        help_text=_("The endpoint every request of the job calls."),
    )
    completion_window = models.CharField(
        _("completion window"),
        max_length=8,
        choices=CompletionWindow.choices,
        default=CompletionWindow.HOURS_24,
        help_text=_("How long the provider may take."),
    )
    metadata = models.JSONField(
        _("metadata"),
        default=dict,
        blank=True,
        help_text=_("Up to 16 string pairs sent with the batch (keys <= 64, values <= 512 chars)."),
    )
    account = models.CharField(
        _("account"),
        max_length=64,
        default="default",
        help_text=_("The OPENAI_BATCHES account the job runs under."),
    )
    model = models.CharField(
        _("model"),
        max_length=128,
        blank=True,
        default="",
        help_text=_("The model every request names (one model per batch)."),
    )
    item_count = models.PositiveIntegerField(
        _("items"), default=0, help_text=_("How many requests the job holds.")
    )
    input_bytes = models.BigIntegerField(
        _("input bytes"),
        default=0,
        help_text=_("Size of the job's JSONL input, checked against the provider's limit."),
    )
    state = models.CharField(
        _("state"),
        max_length=20,
        choices=JobState.choices,
        default=JobState.DRAFT,
        help_text=_("Where the job is on this side."),
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("owner"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="openai_batch_jobs",
        help_text=_("Who created the job; non-staff API users see only their own."),
    )
    created_at = models.DateTimeField(
        _("created"), default=timezone.now, help_text=_("When the job was created here.")
    )
    updated_at = models.DateTimeField(
        _("updated"), auto_now=True, help_text=_("When the row last changed.")
    )
    submit_requested_at = models.DateTimeField(
        _("submission requested"),
        null=True,
        blank=True,
        help_text=_("When someone asked to submit the job."),
    )
    submit_attempt_at = models.DateTimeField(
        _("submission attempt started"),
        null=True,
        blank=True,
        help_text=_(
            "When a worker last started uploading/creating; a lease against double submits."
        ),
    )
    submitted_at = models.DateTimeField(
        _("submitted"), null=True, blank=True, help_text=_("When the provider accepted the batch.")
    )
    last_polled_at = models.DateTimeField(
        _("last polled"),
        null=True,
        blank=True,
        help_text=_("When the provider was last asked about the batch."),
    )
    next_poll_at = models.DateTimeField(
        _("next poll due"),
        null=True,
        blank=True,
        help_text=_("When the batch should next be polled."),
    )
    poll_interval = models.FloatField(
        _("poll interval"),
        default=0,
        help_text=_("Current polling interval in seconds (grows while nothing changes)."),
    )
    ingested_at = models.DateTimeField(
        _("results ingested"),
        null=True,
        blank=True,
        help_text=_("When the result files were stored on the items."),
    )
    finish_announced = models.BooleanField(
        _("finish announced"),
        default=False,
        help_text=_("Whether job_finished has been sent (the job's outbox mark)."),
    )
    last_error = models.TextField(
        _("last error"),
        blank=True,
        default="",
        help_text=_(
            "The last local error (upload, poll, download); never overwrites provider facts."
        ),
    )
    last_error_at = models.DateTimeField(
        _("last error at"),
        null=True,
        blank=True,
        help_text=_("When the last local error happened."),
    )
    output_schema = models.CharField(
        _("structured output model"),
        max_length=255,
        blank=True,
        default="",
        help_text=_(
            "Import path of the Pydantic model every result is parsed into "
            "(see openai_batches.structured); empty for plain answers."
        ),
    )

    objects = BatchJobQuerySet.as_manager()

    class Meta:
        verbose_name = _("batch job")
        verbose_name_plural = _("batch jobs")
        ordering = ("-created_at", "-pk")
        indexes = [
            models.Index(fields=["state", "next_poll_at"], name="openai_batches_job_poll_idx"),
            models.Index(fields=["owner", "-created_at"], name="openai_batches_job_owner_idx"),
            models.Index(fields=["-created_at"], name="openai_batches_job_created_idx"),
        ]

    def __str__(self) -> str:
        return self.name or f"Batch job {self.uuid}"

    @property
    def is_draft(self) -> bool:
        return self.state == JobState.DRAFT


class RequestItem(models.Model):
    """One request of a job, and once it has run, its result."""

    job = models.ForeignKey(
        BatchJob,
        verbose_name=_("job"),
        on_delete=models.CASCADE,
        related_name="items",
        help_text=_("The job this request belongs to."),
    )
    custom_id = models.CharField(
        _("custom id"),
        max_length=255,
        help_text=_("Your key for the request, unique within the job; results come back under it."),
    )
    method = models.CharField(
        _("method"),
        max_length=8,
        default="POST",
        help_text=_("HTTP method; the Batch API takes POST only."),
    )
    url = models.CharField(
        _("url"),
        max_length=32,
        choices=Endpoint.choices,
        help_text=_("The request's endpoint; equals the job's endpoint."),
    )
    body = models.JSONField(_("body"), help_text=_("The request body, with its model."))
    content_type = models.ForeignKey(
        ContentType,
        verbose_name=_("linked object type"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        help_text=_("Type of the host project's row this request is about."),
    )
    object_id = models.CharField(
        _("linked object id"),
        max_length=64,
        blank=True,
        default="",
        help_text=_("Primary key of the host project's row this request is about."),
    )
    content_object = GenericForeignKey("content_type", "object_id")
    state = models.CharField(
        _("state"),
        max_length=16,
        choices=ItemState.choices,
        default=ItemState.PENDING,
        help_text=_("Where the request is."),
    )
    status_code = models.PositiveSmallIntegerField(
        _("status code"),
        null=True,
        blank=True,
        help_text=_("HTTP status the provider's endpoint answered the request with."),
    )
    response = models.JSONField(
        _("response body"),
        null=True,
        blank=True,
        help_text=_("The endpoint's response body (a success, or a 4xx/5xx error body)."),
    )
    error = models.JSONField(
        _("error"),
        null=True,
        blank=True,
        help_text=_("The error object of a request that never ran (for example batch_expired)."),
    )
    provider_request_id = models.CharField(
        _("provider request id"),
        max_length=64,
        blank=True,
        default="",
        help_text=_("response.request_id from the result line."),
    )
    result_line_id = models.CharField(
        _("result line id"),
        max_length=64,
        blank=True,
        default="",
        help_text=_("The result line's own id (batch_req_...)."),
    )
    input_tokens = models.PositiveIntegerField(
        _("input tokens"), default=0, help_text=_("Input tokens this request used.")
    )
    cached_tokens = models.PositiveIntegerField(
        _("cached tokens"), default=0, help_text=_("Input tokens served from the cache.")
    )
    output_tokens = models.PositiveIntegerField(
        _("output tokens"), default=0, help_text=_("Output tokens this request produced.")
    )
    reasoning_tokens = models.PositiveIntegerField(
        _("reasoning tokens"), default=0, help_text=_("Output tokens spent on reasoning.")
    )
    completed_at = models.DateTimeField(
        _("completed"), null=True, blank=True, help_text=_("When the result was stored here.")
    )
    announced = models.BooleanField(
        _("announced"),
        default=False,
        help_text=_("Whether the result signal has been sent (the outbox mark)."),
    )
    output_schema = models.CharField(
        _("structured output model"),
        max_length=255,
        blank=True,
        default="",
        help_text=_(
            "Import path of this request's Pydantic model, when it differs from the job's."
        ),
    )
    parsed = models.JSONField(
        _("parsed output"),
        null=True,
        blank=True,
        help_text=_("The structured output, validated against its model, as JSON."),
    )
    parse_error = models.TextField(
        _("parse error"),
        blank=True,
        default="",
        help_text=_("Why the structured output did not validate against its model."),
    )

    objects = RequestItemQuerySet.as_manager()

    class Meta:
        verbose_name = _("request item")
        verbose_name_plural = _("request items")
        ordering = ("job", "pk")
        constraints = [
            models.UniqueConstraint(
                fields=["job", "custom_id"], name="openai_batches_item_custom_id_uniq"
            ),
        ]
        indexes = [
            models.Index(fields=["job", "state"], name="openai_batches_item_state_idx"),
            models.Index(fields=["content_type", "object_id"], name="openai_batches_item_obj_idx"),
            models.Index(
                fields=["job", "id"],
                name="openai_batches_item_outbox_idx",
                condition=Q(announced=False) & ~Q(state__in=["pending", "submitted"]),
            ),
        ]

    def __str__(self) -> str:
        return self.custom_id

    @property
    def succeeded(self) -> bool:
        return self.state == ItemState.SUCCEEDED

    @property
    def output_schema_path(self) -> str:
        """The Pydantic model this request's answer is parsed into: its own, else the job's."""
        return self.output_schema or self.job.output_schema

    @property
    def result(self) -> Result:
        """The answer, typed, whatever the endpoint (see :mod:`openai_batches.results`)."""
        return Result.from_item(self)

    def as_input_line(self) -> dict[str, Any]:
        """The JSONL line the provider receives for this request."""
        return {
            "custom_id": self.custom_id,
            "method": self.method,
            "url": self.url,
            "body": self.body,
        }


class WebhookDelivery(models.Model):
    """A webhook delivery already acted on, remembered by its ``webhook-id``.

    The unique id makes a replayed (or concurrently duplicated) delivery a no-op: of two
    inserts of one id, the database lets exactly one through. Rows are pruned once a replay
    of the delivery would be refused as stale anyway (``expires_at``).
    """

    webhook_id = models.CharField(
        _("webhook id"),
        max_length=255,
        unique=True,
        help_text=_("The delivery's webhook-id header (the same on OpenAI's retries)."),
    )
    received_at = models.DateTimeField(
        _("received"), default=timezone.now, help_text=_("When the delivery was first accepted.")
    )
    expires_at = models.DateTimeField(
        _("remembered until"),
        help_text=_("After this, any replay of the delivery fails the timestamp check."),
    )

    class Meta:
        verbose_name = _("webhook delivery")
        verbose_name_plural = _("webhook deliveries")
        indexes = [models.Index(fields=["expires_at"], name="openai_batches_wh_expiry_idx")]

    def __str__(self) -> str:
        return self.webhook_id
