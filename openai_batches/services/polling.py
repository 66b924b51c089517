"""Refreshing: asking the provider about running batches and applying what it says."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from ..client import BatchProvider
from ..conf import app_settings
from ..exceptions import (
    APIError,
)
from ..models import (
    PROVIDER_TIMESTAMPS,
    STATUS_RANK,
    BatchJob,
    ItemState,
    JobState,
    ProviderBatch,
    RequestItem,
)
from . import _base
from . import quota as quota_services
from ._base import (
    Progress,
    _clean,
    _count,
    _dict,
    _field,
    _get,
    _record_error,
    _require,
    _status_signal,
    _ts,
    logger,
)
from .ingestion import ingest
from .parts import _batch_part, _settle, _summarize


def can_refresh(job: BatchJob | int) -> tuple[bool, str]:
    job = _get(job) if not isinstance(job, BatchJob) else job
    if not job.batches.active().exists():
        if job.state == JobState.FINISHED:
            return False, "its results are already ingested"
        return False, "the provider does not know it yet"
    return True, ""


def _apply_fields(part: ProviderBatch, batch: Mapping[str, Any]) -> bool:
    """Copy the provider's facts onto ``part`` (unsaved); never move backwards.

    Returns whether anything the provider reports as progress changed.
    """
    status = batch.get("status")
    if status not in STATUS_RANK:
        # A status this version does not know: keep what we knew, and say so rather than
        # store a value the state machine cannot reason about.
        part.last_error = f"The provider reported an unknown batch status {str(status)[:40]!r}."
        logger.warning("job %s part %s: %s", part.job_id, part.part, part.last_error)
        return False
    old_rank = STATUS_RANK.get(part.provider_status, -1)
    if part.is_terminal or STATUS_RANK[status] < old_rank:
        # A stale answer (list caches, retries) must not undo what we already saw.
        return False
    counts = _dict(batch.get("request_counts"))
    before = (part.provider_status, part.request_count_completed, part.request_count_failed)
    part.provider_status = status
    part.request_count_total = _count(counts.get("total")) or part.request_count_total
    part.request_count_completed = max(
        _count(counts.get("completed")), part.request_count_completed
    )
    part.request_count_failed = max(_count(counts.get("failed")), part.request_count_failed)
    part.provider_model = _field(batch.get("model"), part.provider_model, 128)
    part.output_file_id = _field(batch.get("output_file_id"), part.output_file_id, 64)
    part.error_file_id = _field(batch.get("error_file_id"), part.error_file_id, 64)
    errors = _dict(batch.get("errors"))
    if isinstance(errors.get("data"), list) and errors["data"]:
        part.provider_errors = _clean(errors["data"][:1000])
    usage = _dict(batch.get("usage"))
    if usage and not part.ingested_at:
        part.input_tokens = _count(usage.get("input_tokens"))
        part.cached_tokens = _count(_dict(usage.get("input_tokens_details")).get("cached_tokens"))
        part.output_tokens = _count(usage.get("output_tokens"))
        part.reasoning_tokens = _count(
            _dict(usage.get("output_tokens_details")).get("reasoning_tokens")
        )
    for key, attr in PROVIDER_TIMESTAMPS:
        value = _ts(batch.get(key))
        if value is not None and getattr(part, attr) is None:
            setattr(part, attr, value)
    return before != (part.provider_status, part.request_count_completed, part.request_count_failed)


def unchanged(part: ProviderBatch, batch: Mapping[str, Any]) -> bool:
    """Whether applying ``batch`` to ``part`` (as the caller just read it) would change
    nothing but the poll schedule: the same status, counts, files and usage, the part still
    running and its job already submitted. Runs no query."""
    if (
        part.state != JobState.SUBMITTED
        or part.is_terminal
        or batch.get("id") != part.provider_batch_id
        or batch.get("status") not in STATUS_RANK
        or part.job.state != JobState.SUBMITTED
    ):
        return False
    probe = copy.copy(part)  # _apply_fields writes onto what it is given
    _apply_fields(probe, batch)
    return all(
        getattr(probe, f.attname) == getattr(part, f.attname) for f in part._meta.concrete_fields
    )


def apply_batch(
    job: BatchJob | int, batch: Mapping[str, Any], *, known: ProviderBatch | None = None
) -> BatchJob:
    """Apply one provider batch object to its part and schedule the job's next poll (backoff).

    If another process holds the job's row (an ingest writing its results, a submitter
    recording a batch) the job is returned as it is instead of waiting: that process is
    already moving it, and a sync pass must not queue behind one job.

    ``known`` is the part as the caller just read it (``sync`` reads every active part in
    one query): when the provider reports nothing new about it (see :func:`unchanged`) the
    job is returned with no query at all, and scheduling its next poll is left to the
    caller (``sync`` does it for every such job in one statement).
    """
    if known is not None and isinstance(job, BatchJob) and unchanged(known, batch):
        return job
    pk = _get(job).pk
    refusal: tuple[ProviderBatch, int, int] | None = None
    with transaction.atomic():
        locked = BatchJob.objects.select_for_update(skip_locked=True).filter(pk=pk).first()
        if locked is None:
            return _get(pk)
        part = _part_for(locked, batch)
        if part is None:
            return locked
        old = (locked.state, locked.provider_status)
        was_terminal = part.is_terminal
        moved = _apply_fields(part, batch)
        part.save()
        if not was_terminal and part.is_terminal:
            refusal = _refused_for_quota(locked, part)
        if batch.get("status") not in STATUS_RANK:
            locked.last_error, locked.last_error_at = part.last_error, timezone.now()
        now = timezone.now()
        base = float(app_settings.POLL_INTERVAL)
        if moved or not locked.poll_interval:
            locked.poll_interval = base
        else:
            locked.poll_interval = min(
                locked.poll_interval * float(app_settings.POLL_BACKOFF),
                float(app_settings.POLL_MAX_INTERVAL),
            )
        locked.last_polled_at = now
        locked.next_poll_at = now + timedelta(seconds=locked.poll_interval)
        if locked.state in (JobState.SUBMITTING, JobState.SUBMIT_REQUESTED) and not (
            locked.batches.planned().exists()
        ):
            locked.state = JobState.SUBMITTED  # found by a refresh before the submitter was done
        _summarize(locked)
        locked.save()
        _status_signal(locked, *old)
    if refusal is not None:
        refused, limit, flying = refusal
        message = "; ".join(str(e.get("message")) for e in refused.provider_errors)
        quota_services.learn(locked, refused, limit, flying, message)
    elif not was_terminal and part.is_terminal and part.reserved_tokens:
        # Its batch ended: the room it held is free, and the line may move. (After our
        # commit: a budget's lock is never taken while holding a job's.)
        quota_services.admit_waiting(locked.account, locked.model)
    return locked


def _refused_for_quota(job: BatchJob, part: ProviderBatch) -> tuple[ProviderBatch, int, int] | None:
    """Under the job's lock: a batch the provider failed for the enqueued-token limit does
    not fail the job: its requests go back in line, in parts that fit what was in flight
    (the limit the budget learns after commit). Returns (part, limit, in flight), or None
    when the batch failed for another reason or one request alone is over the limit."""
    if not quota_services.refused_for_quota(part):
        return None
    flying = quota_services.in_flight(job.account, job.model, exclude=part.pk)
    if not flying and part.item_count <= 1:
        return None  # ingested as a failure like any other; the RETRY policy decides
    limit = quota_services.learned_limit_after_refusal(part, flying)
    quota_services.requeue(job, part, limit, sent=True)
    _settle(job)
    return part, limit, flying


def _part_for(job: BatchJob, batch: Mapping[str, Any]) -> ProviderBatch | None:
    """Under the job's lock: the part ``batch`` belongs to, recording it on a planned part
    that a refresh found before its submitter recorded it (the crash-safe path)."""
    batch_id = str(batch.get("id") or "")
    part = ProviderBatch.objects.select_for_update().filter(job=job, provider_batch_id=batch_id)
    found = part.first()
    if found is not None or not batch_id:
        return found
    number = _batch_part(job, batch)
    if number is None:
        return None
    planned = (
        ProviderBatch.objects.select_for_update()
        .filter(job=job, part=number, provider_batch_id="", state=JobState.SUBMIT_REQUESTED)
        .first()
    )
    if planned is None:
        return None
    planned.provider_batch_id = batch_id
    planned.input_file_id = str(batch.get("input_file_id") or planned.input_file_id)
    planned.state = JobState.SUBMITTED
    planned.submitted_at = timezone.now()
    RequestItem.objects.filter(batch=planned, state=ItemState.PENDING).update(
        state=ItemState.SUBMITTED
    )
    job.submitted_at = job.submitted_at or planned.submitted_at
    return planned


def refresh(
    job: BatchJob | int, *, ingest: bool = True, progress: Progress | None = None
) -> BatchJob:
    """Ask the provider about the job's running batches now; ingest and announce each one
    that is terminal.

    A poll error is recorded on the job (``last_error``) and re-raised; the provider's facts
    stay as they were.
    """
    current = _require(_get(job), can_refresh, "refreshed")
    batches = []
    with _provider(current, on_error=_poll_failed) as client:
        for part in current.batches.active().order_by("part"):
            batches.append(client.retrieve_batch(part.provider_batch_id))
    _base._checkpoint("refresh.fetched")
    updated = current
    try:
        for batch in batches:
            updated = apply_batch(current, batch)
    except Exception as err:
        _poll_failed(current, err)
        raise
    if ingest:
        _ingest(updated, progress=progress)
        updated.refresh_from_db()
    return updated


@contextmanager
def _provider(
    job: BatchJob, *, on_error: Callable[[BatchJob, BaseException], None]
) -> Iterator[BatchProvider]:
    """A client for the job's account; any error (the provider's, or a configuration
    problem such as a missing key) is recorded on the job, then re-raised."""
    try:
        client = _base.get_client(job.account)
    except Exception as err:
        on_error(job, err)
        raise
    try:
        yield client
    except Exception as err:
        on_error(job, err)
        raise
    finally:
        client.close()


def _poll_failed(job: BatchJob, err: BaseException) -> None:
    """Record a poll error and back off; the provider's state is left untouched."""
    interval = min(
        max(job.poll_interval, float(app_settings.POLL_INTERVAL))
        * float(app_settings.POLL_BACKOFF),
        float(app_settings.POLL_MAX_INTERVAL),
    )
    if isinstance(err, APIError) and err.retry_after is not None:
        interval = max(interval, err.retry_after)  # the provider said when to come back
    now = timezone.now()
    _record_error(
        job,
        err,
        last_polled_at=now,
        poll_interval=interval,
        next_poll_at=now + timedelta(seconds=interval),
    )


def request_refresh(job: BatchJob | int) -> None:
    """Enqueue an immediate poll of the job (webhooks and UIs use this)."""
    from .. import jobs

    jobs.enqueue_poll(_get(job).pk, force=True)


_ingest = ingest  # ``refresh(ingest=...)`` takes a flag named like the function
