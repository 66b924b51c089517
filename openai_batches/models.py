"""Models: a ``BatchJob`` (one logical job), the ``ProviderBatch`` rows that carry it, its
``RequestItem`` rows and each item's ``RequestAttempt`` history.

A job is one logical piece of work; the provider sees it as one or more provider batches
(parts): a job larger than one batch takes is split into parts when it is submitted, and
requests that failed for a transient reason are sent again in a follow-up part. Each
``ProviderBatch`` holds the provider's facts about one batch (id, raw status, files, counts,
usage, timestamps); the job keeps the logical facts and totals derived from its parts.

Only :mod:`openai_batches.services` changes state on these rows; the QuerySet methods here
are read helpers everyone needs (``active()``, ``due_for_poll()``, ``pending_announcement()``).
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
    # A part does not fit its model's enqueued-token budget: it is in line (services.quota)
    WAITING_QUOTA = "waiting_quota", _("Waiting for quota")
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
        """Jobs with a provider batch whose results are not ingested yet (whatever else
        the job waits for: a follow-up part may be waiting to be submitted meanwhile)."""
        return self.filter(
            pk__in=ProviderBatch.objects.filter(state=JobState.SUBMITTED).values("job_id")
        )

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


class BatchTotals(models.Model):
    """The provider's status, model, request counts and token usage: one provider batch's
    own on :class:`ProviderBatch`, summed over its parts on :class:`BatchJob`."""

    provider_status = models.CharField(
        _("provider status"),
        max_length=16,
        choices=BatchStatus.choices,
        blank=True,
        default="",
        help_text=_(
            "The provider's raw status, exactly as last seen (on a job: its least advanced "
            "part still running, else its latest part)."
        ),
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
    input_tokens = models.BigIntegerField(
        _("input tokens"), default=0, help_text=_("Input tokens used by the requests.")
    )
    cached_tokens = models.BigIntegerField(
        _("cached tokens"), default=0, help_text=_("Input tokens served from the prompt cache.")
    )
    output_tokens = models.BigIntegerField(
        _("output tokens"), default=0, help_text=_("Output tokens produced by the requests.")
    )
    reasoning_tokens = models.BigIntegerField(
        _("reasoning tokens"), default=0, help_text=_("Output tokens spent on reasoning.")
    )
    cost = models.DecimalField(
        _("cost (USD)"),
        max_digits=16,
        decimal_places=6,
        null=True,
        blank=True,
        help_text=_(
            "What the ingested results cost at the PRICES in force when they were stored; "
            "empty when the model has no price. Stored once per provider batch."
        ),
    )

    class Meta:
        abstract = True

    @property
    def is_terminal(self) -> bool:
        return self.provider_status in TERMINAL_STATUSES

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class ProviderBatchFields(BatchTotals):
    """The provider's facts about one batch, kept together (see the module docstring)."""

    provider_batch_id = models.CharField(
        _("provider batch id"),
        max_length=64,
        blank=True,
        default="",
        db_index=True,
        help_text=_("The batch id the provider gave (batch_...)."),
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
    provider_errors = models.JSONField(
        _("provider errors"),
        default=list,
        blank=True,
        help_text=_("errors.data from the provider: validation problems with their line numbers."),
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


class BatchJob(BatchTotals):
    """One logical batch of requests to one endpoint and model, carried to completion over
    as many provider batches (:class:`ProviderBatch`) as it takes."""

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
        # No choices: the windows a job may ask for are its provider's (OpenAI and Azure
        # take "24h", Groq "24h" to "7d"), checked by services.create_job.
        default=CompletionWindow.HOURS_24,
        help_text=_("How long the provider may take: '24h', or what the account's provider takes."),
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
    submit_not_before = models.DateTimeField(
        _("next submission attempt not before"),
        null=True,
        blank=True,
        help_text=_(
            "Set when the provider refused a create and asked to come back later "
            "(a retry-after too long to wait in the call): no attempt is made before it."
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
    cancel_requested_at = models.DateTimeField(
        _("cancellation requested"),
        null=True,
        blank=True,
        help_text=_("When someone cancelled the job; nothing of it is sent again after this."),
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
    # -- quota (services.quota) ----------------------------------------------------------
    estimated_tokens = models.BigIntegerField(
        _("estimated input tokens"),
        default=0,
        help_text=_("The input-token estimate of all the job's requests (TOKEN_ESTIMATOR)."),
    )
    # -- item counts per final state, kept where item states change (lists read them) --
    succeeded_count = models.PositiveIntegerField(
        _("succeeded items"),
        default=0,
        help_text=_("Items whose stored result succeeded (kept up to date by the services)."),
    )
    failed_count = models.PositiveIntegerField(
        _("failed items"),
        default=0,
        help_text=_("Items that ended without an answer: failed, expired, cancelled or missing."),
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

    # -- the latest part, for code written when a job was one provider batch --------------

    @property
    def current_batch(self) -> ProviderBatch | None:
        """The job's latest provider batch (highest part number), or None before submit.

        Read once per instance (``refresh_from_db`` reads it again); the per-batch
        properties below (``provider_batch_id``, ``input_file_id``, ``expires_at``, ...)
        describe this part. A job of several parts has the rest in ``job.batches``.
        """
        if "_current_batch" not in self.__dict__:
            prefetched = getattr(self, "_prefetched_objects_cache", {}).get("batches")
            if prefetched is not None:  # a list page read every row's parts in one query
                latest = max(prefetched, key=lambda b: b.part, default=None)
            else:
                latest = self.batches.order_by("-part").first() if self.pk else None
            self.__dict__["_current_batch"] = latest
        return self.__dict__["_current_batch"]

    def refresh_from_db(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__.pop("_current_batch", None)
        super().refresh_from_db(*args, **kwargs)

    def _latest(self, attr: str, default: Any) -> Any:
        batch = self.current_batch
        return getattr(batch, attr) if batch is not None else default

    provider_batch_id = property(lambda self: self._latest("provider_batch_id", ""))
    input_file_id = property(lambda self: self._latest("input_file_id", ""))
    output_file_id = property(lambda self: self._latest("output_file_id", ""))
    error_file_id = property(lambda self: self._latest("error_file_id", ""))
    provider_errors = property(lambda self: self._latest("provider_errors", []))
    provider_created_at = property(lambda self: self._latest("provider_created_at", None))
    in_progress_at = property(lambda self: self._latest("in_progress_at", None))
    expires_at = property(lambda self: self._latest("expires_at", None))
    finalizing_at = property(lambda self: self._latest("finalizing_at", None))
    completed_at = property(lambda self: self._latest("completed_at", None))
    failed_at = property(lambda self: self._latest("failed_at", None))
    expired_at = property(lambda self: self._latest("expired_at", None))
    cancelling_at = property(lambda self: self._latest("cancelling_at", None))
    cancelled_at = property(lambda self: self._latest("cancelled_at", None))


class BatchReason(models.TextChoices):
    """Why a provider batch was created."""

    FIRST = "first", _("First part")  # the job's first batch
    SPLIT = "split", _("Split part")  # a further part of a job larger than one batch takes
    RETRY = "retry", _("Retry")  # requests sent again after a transient failure
    QUOTA = "quota", _("Back in line")  # requests put back after token_limit_exceeded


class ProviderBatchQuerySet(models.QuerySet["ProviderBatch"]):
    def active(self) -> ProviderBatchQuerySet:
        """Batches the provider knows whose results are not ingested yet."""
        return self.filter(state=JobState.SUBMITTED)

    def planned(self) -> ProviderBatchQuerySet:
        """Parts waiting to be uploaded and created."""
        return self.filter(state=JobState.SUBMIT_REQUESTED)


class ProviderBatch(ProviderBatchFields):
    """One provider batch carrying part of a job (or all of it).

    ``state`` uses the job's words for this one batch: ``submit_requested`` (planned: its
    items are chosen, nothing sent yet), ``submitted`` (the provider has it; tracked),
    ``finished`` (terminal at the provider and its results ingested), ``submit_failed`` (the
    provider refused it) or ``cancelled`` (dropped before it was sent). The lease against
    double submits is the job's: one worker submits all of a job's planned parts.
    """

    job = models.ForeignKey(
        BatchJob,
        verbose_name=_("job"),
        on_delete=models.CASCADE,
        related_name="batches",
        help_text=_("The job this batch carries (part of)."),
    )
    part = models.PositiveIntegerField(
        _("part"),
        help_text=_("1 for the job's first batch, then 2, 3, ... in the order they were planned."),
    )
    reason = models.CharField(
        _("reason"),
        max_length=8,
        choices=BatchReason.choices,
        default=BatchReason.FIRST,
        help_text=_("Why this batch was created."),
    )
    account = models.CharField(
        _("account"),
        max_length=64,
        default="default",
        help_text=_("The OPENAI_BATCHES account the batch runs under."),
    )
    state = models.CharField(
        _("state"),
        max_length=20,
        choices=JobState.choices,
        default=JobState.SUBMIT_REQUESTED,
        help_text=_("Where this batch is on this side."),
    )
    item_count = models.PositiveIntegerField(
        _("items"), default=0, help_text=_("How many requests this batch carries.")
    )
    input_bytes = models.BigIntegerField(
        _("input bytes"), default=0, help_text=_("Size of this batch's JSONL input.")
    )
    created_at = models.DateTimeField(
        _("planned"), default=timezone.now, help_text=_("When this part was planned here.")
    )
    submitted_at = models.DateTimeField(
        _("submitted"), null=True, blank=True, help_text=_("When the provider accepted it.")
    )
    ingested_at = models.DateTimeField(
        _("results ingested"),
        null=True,
        blank=True,
        help_text=_("When its result files were stored on the items."),
    )
    last_error = models.TextField(
        _("last error"),
        blank=True,
        default="",
        help_text=_("The last local error about this batch (upload, create, download)."),
    )
    # -- quota (services.quota) ----------------------------------------------------------
    estimated_tokens = models.BigIntegerField(
        _("estimated input tokens"),
        default=0,
        help_text=_("The input-token estimate of the requests this batch carries."),
    )
    waiting_since = models.DateTimeField(
        _("in line since"),
        null=True,
        blank=True,
        help_text=_(
            "When the part joined the line for its model's enqueued-token budget; empty "
            "once it is admitted (or for parts planned before budgets existed)."
        ),
    )
    admitted_at = models.DateTimeField(
        _("admitted"),
        null=True,
        blank=True,
        help_text=_("When the part got room in its model's budget and could be sent."),
    )
    reserved_tokens = models.BigIntegerField(
        _("reserved tokens"),
        default=0,
        help_text=_(
            "Tokens this part holds in its model's enqueued-token budget; 0 before it is "
            "admitted and once its batch has ended."
        ),
    )
    # -- item counts per final state, kept where item states change (lists read them) --
    succeeded_count = models.PositiveIntegerField(
        _("succeeded items"),
        default=0,
        help_text=_("Items whose final result came from this batch and succeeded."),
    )
    failed_count = models.PositiveIntegerField(
        _("failed items"),
        default=0,
        help_text=_(
            "Items whose final result came from this batch and is a failure: failed, "
            "expired, cancelled or missing."
        ),
    )

    objects = ProviderBatchQuerySet.as_manager()

    class Meta:
        verbose_name = _("provider batch")
        verbose_name_plural = _("provider batches")
        ordering = ("job", "part")
        constraints = [
            models.UniqueConstraint(fields=["job", "part"], name="openai_batches_batch_part_uniq"),
        ]
        indexes = [
            models.Index(fields=["state", "job"], name="openai_batches_batch_state_idx"),
            models.Index(
                fields=["account", "waiting_since"],
                name="openai_batches_batch_line_idx",
                condition=Q(waiting_since__isnull=False),
            ),
            models.Index(
                fields=["account"],
                name="openai_batches_batch_resv_idx",
                condition=Q(reserved_tokens__gt=0),
            ),
        ]

    def __str__(self) -> str:
        return self.provider_batch_id or f"part {self.part} of job {self.job_id}"


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
    batch = models.ForeignKey(
        ProviderBatch,
        verbose_name=_("provider batch"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="items",
        help_text=_(
            "The provider batch the request is (or was last) sent in; empty until planned."
        ),
    )
    attempt_count = models.PositiveSmallIntegerField(
        _("attempts"),
        default=0,
        help_text=_("How many times a result came back for this request (see its attempts)."),
    )
    nbytes = models.PositiveIntegerField(
        _("input bytes"),
        default=0,
        help_text=_("Size of the request's JSONL line, newline included (for splitting)."),
    )
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
    # -- quota (services.quota) ----------------------------------------------------------
    estimated_tokens = models.PositiveIntegerField(
        _("estimated input tokens"),
        default=0,
        help_text=_("The request's input-token estimate (TOKEN_ESTIMATOR), made when added."),
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


class RequestAttempt(models.Model):
    """One result of one request from one provider batch: the request's history.

    Written in bulk when a batch is ingested, one row per request the batch carried. The
    item itself keeps its final result; an attempt whose request was sent again has
    ``retried`` set (its result was never announced).
    """

    item = models.ForeignKey(
        RequestItem,
        verbose_name=_("item"),
        on_delete=models.CASCADE,
        related_name="attempts",
        help_text=_("The request this attempt is of."),
    )
    batch = models.ForeignKey(
        ProviderBatch,
        verbose_name=_("provider batch"),
        on_delete=models.CASCADE,
        related_name="attempts",
        help_text=_("The provider batch that carried it."),
    )
    number = models.PositiveSmallIntegerField(
        _("attempt"), help_text=_("1 for the first time the request was sent, then 2, 3, ...")
    )
    state = models.CharField(
        _("outcome"), max_length=16, choices=ItemState.choices, help_text=_("What came back.")
    )
    status_code = models.PositiveSmallIntegerField(
        _("status code"), null=True, blank=True, help_text=_("The endpoint's HTTP status.")
    )
    error = models.JSONField(
        _("error"),
        null=True,
        blank=True,
        help_text=_("The error object or the failed response's body; empty on success."),
    )
    input_tokens = models.PositiveIntegerField(_("input tokens"), default=0)
    cached_tokens = models.PositiveIntegerField(_("cached tokens"), default=0)
    output_tokens = models.PositiveIntegerField(_("output tokens"), default=0)
    reasoning_tokens = models.PositiveIntegerField(_("reasoning tokens"), default=0)
    retried = models.BooleanField(
        _("retried"), default=False, help_text=_("Whether the request was sent again after it.")
    )
    created_at = models.DateTimeField(
        _("recorded"), default=timezone.now, help_text=_("When the result was ingested.")
    )

    class Meta:
        verbose_name = _("request attempt")
        verbose_name_plural = _("request attempts")
        ordering = ("item", "number")
        constraints = [
            models.UniqueConstraint(
                fields=["item", "batch"], name="openai_batches_attempt_batch_uniq"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.item_id} #{self.number}"


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


class TokenBudget(models.Model):
    """One account's enqueued-token budget for one model: the row every worker locks.

    A part reserves its estimate here (under ``select_for_update``) before anything of it is
    uploaded, so every worker process on every machine sees one budget. The configured
    limit is ``ENQUEUED_TOKEN_LIMITS``; ``learned_limit`` is what the provider taught us by
    refusing a batch with ``token_limit_exceeded`` (the lower of the two applies). What is
    reserved is not a counter here but the sum of the parts' ``reserved_tokens``, written
    under this row's lock, so it cannot drift from the parts that hold it.
    """

    account = models.CharField(
        _("account"), max_length=64, help_text=_("The OPENAI_BATCHES account.")
    )
    model = models.CharField(_("model"), max_length=128, help_text=_("The model, as jobs name it."))
    learned_limit = models.BigIntegerField(
        _("learned limit"),
        null=True,
        blank=True,
        help_text=_(
            "The enqueued tokens the provider allowed, learned from token_limit_exceeded; "
            "empty until it refused one (an operator can reset it)."
        ),
    )
    learned_at = models.DateTimeField(
        _("learned at"), null=True, blank=True, help_text=_("When the limit was last learned.")
    )
    estimated_tokens_seen = models.BigIntegerField(
        _("estimated tokens (ended batches)"),
        default=0,
        help_text=_(
            "Estimates of the batches that ran, to compare with what the provider counted."
        ),
    )
    input_tokens_seen = models.BigIntegerField(
        _("input tokens (ended batches)"),
        default=0,
        help_text=_("Input tokens the provider reported for those batches."),
    )
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("token budget")
        verbose_name_plural = _("token budgets")
        ordering = ("account", "model")
        constraints = [
            models.UniqueConstraint(
                fields=["account", "model"], name="openai_batches_budget_model_uniq"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model} ({self.account})"


class QuotaEventKind(models.TextChoices):
    REFUSED = "refused", _("Refused by the provider")  # token_limit_exceeded
    LEARNED = "learned", _("Limit lowered")
    RESET = "reset", _("Learned limit reset")


class QuotaEvent(models.Model):
    """Something that changed a model's budget: a refusal, a lowered limit, a reset."""

    account = models.CharField(_("account"), max_length=64)
    model = models.CharField(_("model"), max_length=128)
    kind = models.CharField(_("kind"), max_length=16, choices=QuotaEventKind.choices)
    job = models.ForeignKey(
        BatchJob,
        verbose_name=_("job"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text=_("The job whose batch was refused, when there is one."),
    )
    batch = models.ForeignKey(
        ProviderBatch,
        verbose_name=_("provider batch"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text=_("The refused batch, when there is one."),
    )
    limit_before = models.BigIntegerField(_("limit before"), null=True, blank=True)
    limit_after = models.BigIntegerField(_("limit after"), null=True, blank=True)
    in_flight = models.BigIntegerField(
        _("in flight"), default=0, help_text=_("Tokens of this model's batches at the provider.")
    )
    message = models.TextField(_("message"), blank=True, default="")
    created_at = models.DateTimeField(_("when"), default=timezone.now)

    class Meta:
        verbose_name = _("quota event")
        verbose_name_plural = _("quota events")
        ordering = ("-created_at", "-pk")
        indexes = [
            models.Index(
                fields=["account", "model", "-created_at"], name="openai_batches_qevent_idx"
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.model} ({self.account})"
