"""Submitting: planning parts, then uploading each part's input and creating its batch,
exactly once, under the job's lease; finding a batch again after a crash."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.db import transaction
from django.utils import timezone

from .. import access, budgets
from ..client import MAX_RETRY_AFTER, BatchLookup, BatchProvider, retry_delay
from ..conf import app_settings
from ..exceptions import (
    APIConnectionError,
    APIError,
    ProviderError,
)
from ..jsonl import METADATA_JOB_KEY
from ..models import (
    BatchJob,
    BatchReason,
    ItemState,
    JobState,
    ProviderBatch,
    RequestItem,
)
from . import _base
from . import quota as quota_services
from ._base import _get, _lock, _record_error, _require, _status_signal, logger
from .parts import _part_key, _plan, _settle, _summarize, _unplan
from .polling import _apply_fields
from .reading import _iter_input

#: Seconds to wait between create attempts when the outcome is known not to have created a
#: batch (429, or the "Cannot find file" race right after an upload).
_CREATE_ATTEMPTS = 4


#: A batch found by metadata must have been created after the intent, less this slack (s).
_LOOKUP_SLACK = 600


def can_submit(job: BatchJob | int) -> tuple[bool, str]:
    job = _get(job) if not isinstance(job, BatchJob) else job
    if job.state not in (JobState.DRAFT, JobState.SUBMIT_FAILED):
        return (
            False,
            f"it is {job.get_state_display().lower()}; only a draft (or a failed submission) can be submitted",
        )
    if job.item_count == 0:
        return False, "it has no items"
    if reason := access.owner_refusal(job):
        return False, reason
    if reason := budgets.refusal(job):
        return False, reason
    return True, ""


def request_submit(job: BatchJob | int) -> BatchJob:
    """Record the intent to submit (before any I/O) and enqueue the submit job on commit.

    The job's items are cut into parts here, in the same transaction: one provider batch
    per part, each within ``MAX_REQUESTS_PER_BATCH``, ``MAX_FILE_BYTES`` and (embeddings)
    ``MAX_EMBEDDING_INPUTS_PER_BATCH``.
    """
    from .. import jobs

    with transaction.atomic():
        locked = _require(_lock(job), can_submit, "submitted")
        old = (locked.state, locked.provider_status)
        _plan(locked, BatchReason.FIRST)
        locked.state = JobState.SUBMIT_REQUESTED
        locked.submit_requested_at = timezone.now()
        locked.cancel_requested_at = None
        locked.save(
            update_fields=["state", "submit_requested_at", "cancel_requested_at", "updated_at"]
        )
        _status_signal(locked, *old)
        jobs.enqueue_submit(locked.pk)
    return locked


def submit(job: BatchJob | int) -> BatchJob:
    """Upload the job's planned parts and create their provider batches, exactly once each.

    Safe to call from several workers at once: the job's row lock plus the ``SUBMITTING``
    lease let one of them do the I/O; the others return at once. An attempt whose outcome is
    unknown (timeout, reset, 5xx on create) looks the part's batch up by its metadata (the
    job's UUID and the part number) before creating again.
    """
    pk = _get(job).pk
    now = timezone.now()
    lease = timedelta(seconds=float(app_settings.SUBMIT_LEASE))
    with transaction.atomic():
        locked = BatchJob.objects.select_for_update(skip_locked=True).filter(pk=pk).first()
        if locked is None:  # another worker holds the row right now
            return BatchJob.objects.get(pk=pk)
        fresh_attempt = (
            locked.submit_attempt_at is not None and now - locked.submit_attempt_at < lease
        )
        if locked.state == JobState.SUBMITTING and fresh_attempt:
            return locked
        if locked.state not in (JobState.SUBMIT_REQUESTED, JobState.SUBMITTING):
            return locked
        if locked.submit_not_before is not None and now < locked.submit_not_before:
            # The provider asked us to come back later: an attempt now would be refused
            # again (and count against the rate limit that refused it).
            return locked
        recovering = locked.state == JobState.SUBMITTING
        if not locked.batches.planned().exists():
            # Asked to submit before any part was planned (a job left waiting by a version
            # without parts): plan its pending items now, under the lock.
            _plan(locked, BatchReason.SPLIT)
        old = (locked.state, locked.provider_status)
        locked.state = JobState.SUBMITTING
        locked.submit_attempt_at = now
        locked.submit_not_before = None
        locked.save(update_fields=["state", "submit_attempt_at", "submit_not_before", "updated_at"])
        _status_signal(locked, *old)
    _base._checkpoint("submit.claimed")
    try:
        client = _base.get_client(locked.account)
    except Exception as err:
        # A configuration problem (no key, an account renamed): nothing was sent. Release
        # the lease and say why now, not when the lease runs out 15 minutes later.
        _submit_unknown(locked, err)
        raise
    try:
        return _submit_io(locked, client, recovering=recovering)
    except Exception as err:
        # Not a provider answer (those are handled inside): a bug or a database error. The
        # outcome is unknown, so go back to "requested"; the next attempt looks first.
        _submit_unknown(locked, err)
        raise
    finally:
        client.close()


def _submit_io(job: BatchJob, client: BatchProvider, *, recovering: bool) -> BatchJob:
    """Submit every planned part in order; stop at the first one that does not get through,
    or that must wait in line for room in its model's enqueued-token budget."""
    for part in list(job.batches.planned().order_by("part")):
        if not quota_services.admit(job, part):
            return _wait_in_line(job)
        outcome = _submit_part(job, part, client, recovering=recovering)
        if outcome is not None:
            return outcome
    return _submitted(job)


def _wait_in_line(job: BatchJob) -> BatchJob:
    """A part did not fit its budget: the job's parts still to send wait in line (the
    job is ``waiting_quota``) and the lease is given back; the line moves them later."""
    with transaction.atomic():
        locked = _lock(job)
        if locked.state != JobState.SUBMITTING or locked.submit_attempt_at != job.submit_attempt_at:
            return locked  # taken over meanwhile: the new holder carries the job on
        locked.batches.planned().filter(admitted_at=None, waiting_since=None).update(
            waiting_since=timezone.now()
        )
        old = (locked.state, locked.provider_status)
        _settle(locked, release=True)
        locked.save()
        _status_signal(locked, *old)
        if locked.state == JobState.SUBMIT_REQUESTED:
            # The line moved between our asking and now, and admitted the part: go on.
            from .. import jobs

            jobs.enqueue_submit(locked.pk)
    return locked


def _submit_part(
    job: BatchJob, part: ProviderBatch, client: BatchProvider, *, recovering: bool
) -> BatchJob | None:
    """Upload and create one part. None when it is submitted (go on with the next part);
    else the job as the attempt leaves it (refused, unknown outcome, or taken over)."""
    if recovering or part.input_file_id or part.last_error:
        # A previous attempt may have created the batch without recording it.
        try:
            found = _find_batch(client, job, part)
        except ProviderError as err:
            return _submit_unknown(job, err, part)
        if found is not None:
            return _adopted_or_stop(job, part, found, client)
    if not part.input_file_id:
        try:
            # After any earlier attempt (one that failed, or one killed without a word) an
            # upload may have landed unrecorded: reuse it rather than leave an orphan.
            earlier = recovering or job.last_error_at is not None or bool(part.last_error)
            uploaded = (_find_upload(client, job, part) if earlier else None) or _upload(
                job, part, client
            )
        except APIError as err:
            if err.retryable:
                return _submit_unknown(job, err, part)
            return _submit_failed(job, part, client, err)
        except ProviderError as err:
            return _submit_unknown(job, err, part)
        _base._checkpoint("submit.uploaded")
        if not _still_ours(job):
            # Our lease ran out during a slow upload and another worker took over: unless
            # that worker found and recorded this very upload, it will never be a batch.
            current = ProviderBatch.objects.get(pk=part.pk)
            if current.input_file_id != uploaded["id"]:
                _delete_upload(client, uploaded["id"])
            return _get(job)
        ProviderBatch.objects.filter(pk=part.pk, provider_batch_id="", input_file_id="").update(
            input_file_id=uploaded["id"]
        )
        part.input_file_id = uploaded["id"]
        _base._checkpoint("submit.upload_recorded")
    metadata = {**job.metadata, METADATA_JOB_KEY: _part_key(job, part.part)}
    unknown: ProviderError | None = None
    for attempt in range(_CREATE_ATTEMPTS):
        last = attempt == _CREATE_ATTEMPTS - 1
        if not _still_ours(job):
            # Our lease ran out (a slow upload) and another worker took the submission
            # over: creating now would make a second batch for the part.
            return _get(job)
        try:
            batch = client.create_batch(
                input_file_id=part.input_file_id,
                endpoint=job.endpoint,
                completion_window=job.completion_window,
                metadata=metadata,
                output_expires_after=app_settings.OUTPUT_EXPIRES_AFTER,
            )
            _base._checkpoint("submit.created")
            outcome = _adopted_or_stop(job, part, batch, client)
            _base._checkpoint("submit.adopted")
            return outcome
        except APIError as err:
            if err.code == quota_services.TOKEN_LIMIT_CODE:
                # Refused at create (Azure does this): nothing was created.
                refused = _refused_for_quota(job, part, client, err)
                if refused is not None:
                    return refused
            file_race = err.status_code == 400 and err.param == "file_id"
            if err.retry_after is not None and err.retry_after > MAX_RETRY_AFTER:
                # Refused, and told to come back much later: give the lease back now; the
                # next attempt (a later poll of the queue, or sync_batches) tries again.
                return _submit_unknown(job, err, part)
            if (file_race or err.status_code == 429) and not last:
                # Nothing was created: a 400/429 is a refusal, so creating again is safe.
                _base._sleep(
                    err.retry_after if err.retry_after is not None else retry_delay(attempt)
                )
                continue
            if not err.retryable:
                return _submit_failed(job, part, client, err)
            unknown = err
        except APIConnectionError as err:
            unknown = err
        # Unknown outcome: the batch may exist, or still be on its way (a create that timed
        # out here can land at the provider a moment later). Wait, then look before creating.
        _base._sleep(retry_delay(attempt + 1))
        try:
            found = _find_batch(client, job, part)
        except ProviderError as err:
            return _submit_unknown(job, err, part)
        if found is not None:
            return _adopted_or_stop(job, part, found, client)
    assert unknown is not None
    return _submit_unknown(job, unknown, part)


def _still_ours(job: BatchJob) -> bool:
    """Whether this attempt still holds the job's submit lease (nobody re-claimed it)."""
    return BatchJob.objects.filter(
        pk=job.pk, state=JobState.SUBMITTING, submit_attempt_at=job.submit_attempt_at
    ).exists()


def _upload_name(job: BatchJob, part: ProviderBatch) -> str:
    suffix = "" if part.part == 1 else f"-{part.part}"
    return f"openai_batches-{job.uuid}{suffix}.jsonl"


def _upload(job: BatchJob, part: ProviderBatch, client: BatchProvider) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(prefix="openai_batches-", suffix=".jsonl") as tmp:
        for chunk in _iter_input(RequestItem.objects.filter(job_id=job.pk, batch_id=part.pk)):
            tmp.write(chunk)
        tmp.flush()
        return client.upload_file(
            Path(tmp.name),
            filename=_upload_name(job, part),
            expires_after=app_settings.FILE_EXPIRES_AFTER,
        )


def _find_upload(
    client: BatchProvider, job: BatchJob, part: ProviderBatch
) -> dict[str, Any] | None:
    """An earlier upload of this part's input (found by its file name), if one landed."""
    expected = part.input_bytes
    for file in client.list_files(purpose="batch"):
        if file.get("filename") == _upload_name(job, part) and (
            not expected or file.get("bytes") == expected
        ):
            return dict(file)
    return None


def _find_batch(client: BatchProvider, job: BatchJob, part: ProviderBatch) -> dict[str, Any] | None:
    """The provider batch of this part, if one exists unrecorded.

    The provider's adapter looks (``find_batches``): by the metadata carrying the job's
    UUID and the part's number where the provider keeps metadata, else by what it can
    verify (Anthropic: request count, creation time, the part's custom_ids). If a lost
    create produced duplicates, the oldest is kept and the others are cancelled so they are
    not billed twice.
    """
    since = min(part.created_at, job.submit_requested_at or job.created_at).timestamp()
    items = RequestItem.objects.filter(batch_id=part.pk).order_by()
    matches = client.find_batches(
        BatchLookup(
            key=_part_key(job, part.part),
            since=since - _LOOKUP_SLACK,
            count=part.item_count,
            custom_ids=lambda: items.values_list("custom_id", flat=True).iterator(5000),
            tracked=lambda ids: set(
                ProviderBatch.objects.filter(provider_batch_id__in=list(ids)).values_list(
                    "provider_batch_id", flat=True
                )
            ),
        )
    )
    if not matches:
        return None
    for duplicate in matches[1:]:
        logger.warning("job %s: cancelling duplicate batch %s", job.pk, duplicate["id"])
        try:
            client.cancel_batch(duplicate["id"])
        except ProviderError as err:
            logger.warning("could not cancel duplicate batch %s: %s", duplicate["id"], err)
    return matches[0]


def _delete_upload(client: BatchProvider, file_id: str) -> None:
    try:
        client.delete_file(file_id)
    except ProviderError as err:
        logger.warning("could not delete unused upload %s: %s", file_id, err)


def _adopted_or_stop(
    job: BatchJob, part: ProviderBatch, batch: Mapping[str, Any], client: BatchProvider
) -> BatchJob | None:
    """:func:`_adopt`, as :func:`_submit_part` reports it: None when the part is now
    tracked and submitting may go on, else the job (the batch could not be taken)."""
    adopted = _adopt(job, part, batch, client)
    return None if adopted else _get(job)


def _adopt(
    job: BatchJob, part: ProviderBatch, batch: Mapping[str, Any], client: BatchProvider
) -> bool:
    """Record the provider batch on its part: the part is submitted from now on.

    A batch the part cannot take (it already has another one, because a worker whose
    lease ran out created a second; or the job was cancelled meanwhile) is cancelled at
    once and its upload deleted: no paid batch may run without a part tracking it.
    Returns whether the batch was recorded.
    """
    with transaction.atomic():
        locked = _lock(job)
        current = ProviderBatch.objects.select_for_update().get(pk=part.pk)
        other = current.provider_batch_id and current.provider_batch_id != batch["id"]
        closed = current.state not in (JobState.SUBMIT_REQUESTED, JobState.SUBMITTED) or (
            locked.cancel_requested_at is not None and not current.provider_batch_id
        )
        if not (other or closed):
            _record_batch(locked, current, batch)
            return True
    logger.warning(
        "job %s cannot take batch %s (%s); cancelling it",
        locked.pk,
        batch["id"],
        f"part {current.part} has {current.provider_batch_id}"
        if other
        else f"part {current.part} is {current.state}",
    )
    try:
        client.cancel_batch(batch["id"])
    except ProviderError as err:
        # Already finished (a 400), or the provider cannot be reached: either way the
        # operator must know a batch of this job ran outside it.
        _record_error(locked, ProviderError(f"could not cancel stray batch {batch['id']}: {err}"))
    input_file = batch.get("input_file_id")
    if input_file and input_file != current.input_file_id:
        _delete_upload(client, input_file)
    return False


def _record_batch(job: BatchJob, part: ProviderBatch, batch: Mapping[str, Any]) -> None:
    """Under the job's row lock: record ``batch`` as ``part``'s provider batch."""
    now = timezone.now()
    part.provider_batch_id = batch["id"]
    part.input_file_id = batch.get("input_file_id") or part.input_file_id
    part.state = JobState.SUBMITTED
    part.submitted_at = part.submitted_at or now
    part.last_error = ""
    _apply_fields(part, batch)
    part.save()
    RequestItem.objects.filter(batch=part, state=ItemState.PENDING).update(
        state=ItemState.SUBMITTED
    )
    old = (job.state, job.provider_status)
    job.submitted_at = job.submitted_at or now
    submitting = (JobState.SUBMITTING, JobState.SUBMIT_REQUESTED)
    if job.state in submitting and not job.batches.planned().exclude(pk=part.pk).exists():
        job.state = JobState.SUBMITTED  # the last planned part: the job is at the provider
    if job.next_poll_at is None:
        job.poll_interval = float(app_settings.POLL_INTERVAL)
        job.next_poll_at = now + timedelta(seconds=job.poll_interval)
    _summarize(job)
    job.save()
    _status_signal(job, *old)


def _submitted(job: BatchJob) -> BatchJob:
    """Every planned part went through: the job is submitted (tracked until it ends)."""
    with transaction.atomic():
        locked = _lock(job)
        if locked.state != JobState.SUBMITTING:
            return locked
        old = (locked.state, locked.provider_status)
        _settle(locked, release=True)
        locked.save()
        _status_signal(locked, *old)
    return locked


def _refused_for_quota(
    job: BatchJob, part: ProviderBatch, client: BatchProvider, err: APIError
) -> BatchJob | None:
    """The provider refused to create a part's batch for the enqueued-token limit: the
    part goes back in line (cut smaller if it alone was too big) and the model's budget
    learns; None when the part cannot be helped (one request alone over the limit)."""
    with transaction.atomic():
        locked = _lock(job)
        if locked.state != JobState.SUBMITTING or locked.submit_attempt_at != job.submit_attempt_at:
            return locked
        current = ProviderBatch.objects.select_for_update().get(pk=part.pk)
        flying = quota_services.in_flight(locked.account, locked.model, exclude=current.pk)
        if not flying and current.item_count <= 1:
            return None
        limit = quota_services.learned_limit_after_refusal(current, flying)
        old = (locked.state, locked.provider_status)
        quota_services.requeue(locked, current, limit, sent=False)
        _settle(locked, release=True)
        locked.save()
        _status_signal(locked, *old)
    if part.input_file_id:
        _delete_upload(client, part.input_file_id)
    # The part was dropped (it never reached the provider): the event names the job.
    quota_services.learn(locked, None, limit, flying, f"{type(err).__name__}: {err}")
    return _get(locked)


def _submit_failed(
    job: BatchJob, part: ProviderBatch, client: BatchProvider, err: APIError
) -> BatchJob:
    """The provider refused a part's upload or batch: record why, delete the orphan upload.

    The part and the parts not submitted yet are dropped (they would meet the same
    refusal); their items stay pending, so submitting the job again (after a fix) plans
    them anew. Parts already running go on and are ingested as usual.
    """
    if part.input_file_id:
        _delete_upload(client, part.input_file_id)
    message = f"{type(err).__name__}: {err}"[:4000]
    with transaction.atomic():
        locked = _lock(job)
        old = (locked.state, locked.provider_status)
        ProviderBatch.objects.filter(pk=part.pk).update(state=JobState.SUBMIT_FAILED)
        _unplan(locked)
        locked.last_error = message
        locked.last_error_at = timezone.now()
        _settle(locked, release=True)
        locked.save()
        _status_signal(locked, *old)
    # The refused part's reservation is free again: the line may move.
    quota_services.admit_waiting(locked.account, locked.model)
    return locked


def _submit_unknown(
    job: BatchJob, err: BaseException, part: ProviderBatch | None = None
) -> BatchJob:
    """The outcome is unknown: go back to 'requested' so the next attempt reconciles first."""
    with transaction.atomic():
        locked = _lock(job)
        old = (locked.state, locked.provider_status)
        locked.state = JobState.SUBMIT_REQUESTED
        locked.submit_attempt_at = None
        wait = getattr(err, "retry_after", None)
        if wait is not None and wait > MAX_RETRY_AFTER:
            # Told to come back much later: no attempt (queue, sync_batches) before then.
            locked.submit_not_before = timezone.now() + timedelta(seconds=wait)
        locked.save(update_fields=["state", "submit_attempt_at", "submit_not_before", "updated_at"])
        if part is not None:
            ProviderBatch.objects.filter(pk=part.pk).update(
                last_error=f"{type(err).__name__}: {err}"[:4000]
            )
        _record_error(locked, err)
        _status_signal(locked, *old)
    return locked
