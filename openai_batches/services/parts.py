"""Parts: cutting a job's items into provider batches, and deriving the job's state and
totals from its parts and items."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db import models
from django.db.models import Count, Q, Sum
from django.utils import timezone

from .. import quota
from ..conf import app_settings
from ..jsonl import METADATA_JOB_KEY, dumps_line
from ..models import (
    STATUS_RANK,
    BatchJob,
    BatchReason,
    Endpoint,
    ItemState,
    JobState,
    ProviderBatch,
    RequestItem,
)
from ._base import _OPEN_STATES


def _open_parts(job: BatchJob) -> list[str]:
    """The states of the job's parts that still involve the provider or a submit; a planned
    part in line for its model's token budget counts as ``waiting_quota``."""
    rows = (
        job.batches.filter(state__in=(JobState.SUBMIT_REQUESTED, JobState.SUBMITTED))
        .order_by()
        .values_list("state", "waiting_since", "admitted_at")
    )
    return [
        JobState.WAITING_QUOTA
        if state == JobState.SUBMIT_REQUESTED and waiting is not None and admitted is None
        else state
        for state, waiting, admitted in rows
    ]


def _plan(job: BatchJob, reason: str, *, max_tokens: int | None = None) -> list[ProviderBatch]:
    """Under the job's row lock: cut the job's unplanned pending items into new parts.

    Items are taken in pk order and a part is closed when the next item would take it over
    a limit, so every part is a contiguous pk range of the items planned now; one UPDATE
    per part links them. Returns the parts created (none when nothing is left to send).
    Besides the provider's limits per batch, each part's estimated input tokens stay within
    the model's enqueued-token limit (or ``max_tokens`` when given), so a job larger than
    the whole budget becomes parts that each fit.
    """
    if max_tokens is None:
        max_tokens = quota.model_limit(job.account, job.model)
    # An int compare in the loop, whether or not there is a limit.
    max_tokens = 2**62 if max_tokens is None else max(int(max_tokens), 1)
    max_requests = int(app_settings.MAX_REQUESTS_PER_BATCH)
    max_bytes = int(app_settings.MAX_FILE_BYTES)
    max_inputs = int(app_settings.MAX_EMBEDDING_INPUTS_PER_BATCH)
    embeddings = job.endpoint == Endpoint.EMBEDDINGS
    unplanned = RequestItem.objects.filter(
        job=job, state=ItemState.PENDING, batch__isnull=True
    ).order_by("pk")
    # Items added before sizes were stored (nbytes = 0), and embeddings (whose inputs are
    # counted), need their bodies; everything else plans from two integers per row.
    need_body = embeddings or unplanned.filter(nbytes=0).exists()
    columns: tuple[str, ...] = ("pk", "nbytes")
    if need_body:
        columns += ("custom_id", "url", "body")
    columns += ("estimated_tokens",)
    last = job.batches.order_by("-part").values_list("part", flat=True).first() or 0
    parts: list[ProviderBatch] = []
    lo = hi = count = nbytes = inputs = tokens = 0

    def close() -> None:
        nonlocal count, nbytes, inputs, tokens
        if not count:
            return
        number = last + len(parts) + 1
        # The job's first batch is its first part whatever asked for it; after that a
        # retry (or back-in-line) plan makes parts of its kind and any other split parts.
        part_reason: str
        if number == 1:
            part_reason = BatchReason.FIRST
        elif reason in (BatchReason.RETRY, BatchReason.QUOTA):
            part_reason = reason
        else:
            part_reason = BatchReason.SPLIT
        part = ProviderBatch.objects.create(
            job=job,
            part=number,
            reason=part_reason,
            account=job.account,
            item_count=count,
            input_bytes=nbytes,
            estimated_tokens=tokens,
        )
        unplanned.filter(pk__gte=lo, pk__lte=hi).update(batch=part)
        parts.append(part)
        count = nbytes = inputs = tokens = 0

    for row in unplanned.values_list(*columns).iterator(chunk_size=5000):
        pk, size, n_tokens = row[0], row[1], row[-1]
        n_inputs = 1
        if need_body:
            line = {"custom_id": row[2], "method": "POST", "url": row[3], "body": row[4]}
            size = size or len(dumps_line(line).encode("utf-8")) + 1
            if embeddings:
                n_inputs = _embedding_inputs(row[4])
        if count and (
            count + 1 > max_requests
            or nbytes + size > max_bytes
            or inputs + n_inputs > max_inputs
            or tokens + n_tokens > max_tokens
        ):
            close()
        if not count:
            lo = pk
        hi = pk
        count += 1
        nbytes += size
        inputs += n_inputs
        tokens += n_tokens
    close()
    return parts


def _embedding_inputs(body: Any) -> int:
    """How many inputs one embeddings request carries (a list counts each element)."""
    value = body.get("input") if isinstance(body, dict) else None
    return len(value) if isinstance(value, list) and value else 1


def _part_key(job: BatchJob, part: int) -> str:
    """The metadata value naming the job (and the part, after the first) on its batches.

    One key for both keeps a slot of the provider's 16 free for the host's own metadata;
    part 1 carries the bare UUID, as every batch did before jobs were split.
    """
    return str(job.uuid) if part == 1 else f"{job.uuid}/{part}"


def _batch_part(job: BatchJob, batch: Mapping[str, Any]) -> int | None:
    """The part number a provider batch carries for ``job``, or None if it is not the job's."""
    value = (batch.get("metadata") or {}).get(METADATA_JOB_KEY)
    if not isinstance(value, str):
        return None
    uuid, _, part = value.partition("/")
    if uuid != str(job.uuid):
        return None
    if not part:
        return 1
    return int(part) if part.isdigit() else None


def _unplan(job: BatchJob) -> None:
    """Drop the job's parts that never reached the provider (planned, or refused), and
    unlink their pending items so the next submit plans them anew. They leave no trace at
    the provider, so there is nothing to keep: the job's ``last_error`` says why."""
    never_sent = job.batches.filter(
        provider_batch_id="", state__in=(JobState.SUBMIT_REQUESTED, JobState.SUBMIT_FAILED)
    )
    RequestItem.objects.filter(batch__in=never_sent.values("pk"), state=ItemState.PENDING).update(
        batch=None
    )
    never_sent.delete()


def _settle(job: BatchJob, *, release: bool = False) -> None:
    """Under the job's row lock: derive the job's state and totals from its parts and items.

    A job waits for a submit while any part is planned (for quota, while every planned part
    is in line for its budget), is submitted while any part is at the provider, and is finished once every item is final; items left pending with no
    part (their part was refused) make it a failed submission. A submitter's lease is kept
    unless ``release`` (the submitter is done). The caller saves the job.
    """
    _summarize(job)
    parts = _open_parts(job)
    if job.state == JobState.SUBMITTING and not release:
        return
    job.submit_attempt_at = None
    if JobState.SUBMIT_REQUESTED in parts:
        job.state = JobState.SUBMIT_REQUESTED
        return
    if JobState.WAITING_QUOTA in parts:
        # Every part still to send is in line for its model's budget: the line moves it.
        job.state = JobState.WAITING_QUOTA
        return
    if JobState.SUBMITTED in parts:
        job.state = JobState.SUBMITTED
        return
    job.next_poll_at = None
    if job.items.filter(state__in=_OPEN_STATES).exists():
        job.state = JobState.SUBMIT_FAILED
        return
    job.state = JobState.FINISHED
    job.ingested_at = timezone.now()


def _summarize(job: BatchJob) -> None:
    """The job's provider status, counts, usage and cost, derived from its parts.

    Status: the least advanced of the parts still at the provider, else the latest part's.
    Counts, tokens and cost: sums over every part (a request sent twice counts twice: both
    sends are billed).
    """
    parts = job.batches.exclude(provider_batch_id="")
    sums = parts.aggregate(
        total=Sum("request_count_total"),
        completed=Sum("request_count_completed"),
        failed=Sum("request_count_failed"),
        input_tokens=Sum("input_tokens"),
        cached_tokens=Sum("cached_tokens"),
        output_tokens=Sum("output_tokens"),
        reasoning_tokens=Sum("reasoning_tokens"),
        cost_sum=Sum("cost"),
        priced=Count("pk", filter=Q(cost__isnull=False)),
        ingested=Count("pk", filter=Q(ingested_at__isnull=False)),
    )
    job.request_count_total = sums["total"] or 0
    job.request_count_completed = sums["completed"] or 0
    job.request_count_failed = sums["failed"] or 0
    for key in ("input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens"):
        setattr(job, key, sums[key] or 0)
    # A cost only when every ingested part has one: a partial sum would understate it.
    job.cost = sums["cost_sum"] if sums["ingested"] and sums["priced"] == sums["ingested"] else None
    statuses = list(parts.values_list("state", "provider_status", "provider_model", "part"))
    if not statuses:
        return
    running = [s for s in statuses if s[0] == JobState.SUBMITTED and s[1] in STATUS_RANK]
    if running:
        chosen = min(running, key=lambda s: (STATUS_RANK[s[1]], s[3]))
    else:
        chosen = max(statuses, key=lambda s: s[3])
    job.provider_status = chosen[1]
    job.provider_model = next((s[2] for s in sorted(statuses, key=lambda s: -s[3]) if s[2]), "")


#: What :func:`retry` takes: which final item states each kind sends again.
RETRY_KINDS: dict[str, tuple[str, ...]] = {
    "failed": (ItemState.FAILED, ItemState.MISSING),
    "expired": (ItemState.EXPIRED, ItemState.CANCELLED),
}


def _retry_candidates(job: BatchJob, which: str) -> models.QuerySet[RequestItem]:
    limit = int(app_settings.retry_policy()["MAX_ATTEMPTS"])
    return RequestItem.objects.filter(
        job=job, state__in=RETRY_KINDS[which], attempt_count__lt=limit
    )


def _reset_for_retry(items: models.QuerySet[RequestItem]) -> int:
    """Put ``items`` back to pending with no result and no part: the next plan takes them.
    Their attempts keep what came back."""
    return items.update(
        state=ItemState.PENDING,
        batch=None,
        status_code=None,
        response=None,
        error=None,
        provider_request_id="",
        result_line_id="",
        input_tokens=0,
        cached_tokens=0,
        output_tokens=0,
        reasoning_tokens=0,
        completed_at=None,
        announced=False,
        parsed=None,
        parse_error="",
    )
