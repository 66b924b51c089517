"""What people do to a job: cancel it, retry its failed or expired requests, delete it,
and the ``can_*`` checks the admin and the API show before offering an action."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from .. import access, signals
from ..conf import app_settings
from ..exceptions import (
    ProviderError,
)
from ..models import (
    TERMINAL_STATUSES,
    BatchJob,
    BatchReason,
    BatchStatus,
    ItemState,
    JobState,
    ProviderBatch,
    RequestAttempt,
    RequestItem,
)
from . import _base
from ._base import _get, _lock, _record_error, _require, _status_signal
from .ingestion import _store_item_counts
from .parts import RETRY_KINDS, _plan, _reset_for_retry, _retry_candidates, _settle, _unplan
from .polling import _provider, apply_batch
from .submission import _delete_upload, _find_batch, _record_batch, _submit_unknown


def can_cancel(job: BatchJob | int) -> tuple[bool, str]:
    job = _get(job) if not isinstance(job, BatchJob) else job
    if job.state in (
        JobState.DRAFT,
        JobState.SUBMIT_REQUESTED,
        JobState.WAITING_QUOTA,
        JobState.SUBMIT_FAILED,
    ):
        return True, ""
    if job.state == JobState.SUBMITTING:
        return False, "its submission is under way; try again in a moment"
    # Asked again after a cancel the provider did not take (an error, an account
    # removed): allowed, while a part still runs that is not already being cancelled.
    if job.state == JobState.SUBMITTED:
        running = job.batches.active().exclude(
            provider_status__in=[*TERMINAL_STATUSES, BatchStatus.CANCELLING]
        )
        if running.exists():
            return True, ""
    return (
        False,
        f"it is {job.get_state_display().lower()} ({job.provider_status or 'not at the provider'})",
    )


def can_retry(job: BatchJob | int, which: str) -> tuple[bool, str]:
    """Whether :func:`retry` may send ``which`` ("failed" or "expired") requests again."""
    job = _get(job) if not isinstance(job, BatchJob) else job
    if which not in RETRY_KINDS:
        raise ValueError(f"which must be one of {', '.join(RETRY_KINDS)}, not {which!r}")
    if job.state != JobState.FINISHED:
        return False, f"it is {job.get_state_display().lower()}; only a finished job is retried"
    if reason := access.owner_refusal(job):
        return False, reason
    if not _retry_candidates(job, which).exists():
        limit = int(app_settings.retry_policy()["MAX_ATTEMPTS"])
        return False, f"it has no {which} request sent fewer than {limit} time(s)"
    return True, ""


def can_delete(job: BatchJob | int) -> tuple[bool, str]:
    job = _get(job) if not isinstance(job, BatchJob) else job
    if job.state in (
        JobState.SUBMIT_REQUESTED,
        JobState.WAITING_QUOTA,
        JobState.SUBMITTING,
        JobState.SUBMITTED,
    ):
        # The provider is (or may be about to be) running it: deleting would orphan a paid
        # batch and lose its results. Cancel it first.
        return False, f"it is {job.get_state_display().lower()}; cancel it first"
    return True, ""


def delete_job(job: BatchJob | int) -> None:
    """Delete a job and its items, unless the provider is (or may be) running it."""
    with transaction.atomic():
        _require(_lock(job), can_delete, "deleted").delete()


def _may_have_batch(job: BatchJob) -> bool:
    """Whether an earlier submission attempt may have created a batch we never recorded
    (a planned part uploaded, or an attempt ended with an error whose outcome was unknown)."""
    if job.state != JobState.SUBMIT_REQUESTED:
        return False
    planned = job.batches.planned()
    return planned.exclude(input_file_id="", last_error="").exists() or (
        job.last_error_at is not None and planned.exists()
    )


def cancel(job: BatchJob | int) -> BatchJob:
    """Cancel a job: its planned parts locally, its running batches at the provider.

    Nothing of a cancelled job is sent again (no retries). A job waiting to be submitted
    again after an attempt whose outcome was unknown may already have a batch at the
    provider: it is looked up first, and cancelled there if it exists, so cancelling (and
    then deleting) a job never leaves a paid batch untracked.
    """
    with transaction.atomic():
        locked = _require(_lock(job), can_cancel, "cancelled")
        running = locked.batches.active().exists()
        if not running or locked.batches.planned().exists():
            # Decided here, with no provider call: marked now. A job with running parts
            # only is marked once the provider takes a cancel (see _cancel_running), so a
            # call that fails leaves it as it was, to be cancelled again.
            locked.cancel_requested_at = timezone.now()
            locked.save(update_fields=["cancel_requested_at", "updated_at"])
        if _may_have_batch(locked):
            # Hold the submit lease while we look, so no worker creates a batch meanwhile.
            locked.state = JobState.SUBMITTING
            locked.submit_attempt_at = timezone.now()
            locked.save(update_fields=["state", "submit_attempt_at", "updated_at"])
        elif not running:
            _cancel_locally(locked)
            return locked
        else:
            _drop_planned(locked)
    if locked.state == JobState.SUBMITTING:
        return _cancel_unrecorded(locked)
    return _cancel_running(locked)


def _cancel_running(job: BatchJob) -> BatchJob:
    """Ask the provider to cancel each of the job's running batches.

    One part the provider will not cancel (it just ended, or the call failed) does not
    keep the others running: every part is asked, then the first error is raised (and
    recorded on the job)."""
    updated = job
    failure: ProviderError | None = None
    with _provider(job, on_error=_record_error) as client:
        for part in job.batches.active().exclude(provider_status__in=TERMINAL_STATUSES):
            try:
                batch = client.cancel_batch(part.provider_batch_id)
            except ProviderError as err:
                failure = failure or err
                continue
            # The provider took it: from now on nothing of the job is sent again.
            BatchJob.objects.filter(pk=job.pk, cancel_requested_at__isnull=True).update(
                cancel_requested_at=timezone.now()
            )
            updated = apply_batch(job, batch)
        if failure is not None:
            raise failure
    return updated


def _drop_planned(job: BatchJob) -> None:
    """Under the job's lock, on cancel: planned parts are never sent; their requests end as
    cancelled (final, announced like any result) while the running parts finish."""
    now = timezone.now()
    planned = job.batches.planned()
    RequestItem.objects.filter(batch__in=planned.values("pk"), state=ItemState.PENDING).update(
        state=ItemState.CANCELLED,
        error=_CANCELLED_BEFORE_SENT,
        completed_at=now,
        announced=not signals.result_received.has_listeners(RequestItem),
    )
    planned.update(state=JobState.CANCELLED)
    _store_item_counts(job)


_CANCELLED_BEFORE_SENT = {
    "code": "batch_cancelled",
    "message": "The job was cancelled before this request was sent.",
}


def _cancel_locally(locked: BatchJob) -> None:
    old = (locked.state, locked.provider_status)
    _unplan(locked)
    locked.state = JobState.CANCELLED
    locked.submit_attempt_at = None
    locked.save(update_fields=["state", "submit_attempt_at", "updated_at"])
    _status_signal(locked, *old)


def _cancel_unrecorded(job: BatchJob) -> BatchJob:
    """Cancel a job whose planned parts may have batches we never recorded; we hold its
    submit lease."""
    try:
        client = _base.get_client(job.account)
    except Exception as err:
        _submit_unknown(job, err)
        raise
    adopted_any = False
    try:
        for part in list(job.batches.planned().order_by("part")):
            try:
                found = _find_batch(client, job, part)
            except Exception as err:
                # We could not make sure: the job stays submittable (and cancellable).
                _submit_unknown(job, err)
                raise
            if found is not None:
                # Tracked from here on, whatever the cancel says (a batch that already
                # ended cannot be cancelled: then its results are ingested like any other's).
                with transaction.atomic():
                    locked = _lock(job)
                    current = ProviderBatch.objects.select_for_update().get(pk=part.pk)
                    _record_batch(locked, current, found)
                adopted_any = True
                try:
                    batch = client.cancel_batch(found["id"])
                except ProviderError as err:
                    _record_error(job, err)
                    raise
                apply_batch(job, batch)
            elif part.input_file_id:
                # A create still in flight would now fail for want of its file.
                _delete_upload(client, part.input_file_id)
                ProviderBatch.objects.filter(pk=part.pk).update(input_file_id="")
    finally:
        client.close()
    with transaction.atomic():
        locked = _lock(job)
        locked.submit_attempt_at = None
        if adopted_any or locked.batches.active().exists():
            old = (locked.state, locked.provider_status)
            _drop_planned(locked)
            _settle(locked, release=True)
            locked.save()
            _status_signal(locked, *old)
            return locked
        locked.state = JobState.SUBMIT_REQUESTED  # what the status signal reports as "old"
        _cancel_locally(locked)
    return locked


def retry(job: BatchJob | int, which: str) -> BatchJob:
    """Send a finished job's ``which`` requests again: "failed" (failed, or missing from
    the results) or "expired" (expired, or cancelled before they ran).

    Only requests sent fewer than ``RETRY["MAX_ATTEMPTS"]`` times are taken; requests that
    succeeded never are. The job goes back to "submission requested" with the requests in
    new parts; their new results are announced when they land (a second
    ``result_received`` for those ``custom_id``s) and ``job_finished`` is sent again.
    """
    from .. import jobs

    with transaction.atomic():
        locked = _lock(job)
        _require(locked, lambda j: can_retry(j, which), f"retried ({which})")
        old = (locked.state, locked.provider_status)
        chosen = _retry_candidates(locked, which).values("pk")
        # Their last attempt is now one that was sent again, like the earlier ones.
        RequestAttempt.objects.filter(item__in=chosen).update(retried=True)
        _reset_for_retry(RequestItem.objects.filter(pk__in=chosen))
        _store_item_counts(locked)
        _plan(locked, BatchReason.RETRY)
        locked.state = JobState.SUBMIT_REQUESTED
        locked.cancel_requested_at = None
        locked.ingested_at = None
        locked.finish_announced = False
        locked.save()
        _status_signal(locked, *old)
        jobs.enqueue_submit(locked.pk)
    return locked
