"""The one place that changes job and item state.

Admin actions, API views, RQ jobs and the ``sync_batches`` command are thin callers of the
functions here; none of them writes a ``BatchJob`` or ``RequestItem`` field itself.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from django.contrib.contenttypes.models import ContentType
from django.db import connection, models, transaction
from django.db.models import Count, Q, Sum
from django.utils import timezone

from . import budgets, signals, structured
from .client import MAX_RETRY_AFTER, BatchProvider, get_client, retry_delay
from .conf import app_settings
from .exceptions import (
    APIConnectionError,
    APIError,
    ConfigurationError,
    InvalidStateError,
    LimitExceeded,
    NotFoundError,
    Problem,
    ProviderError,
    ValidationError,
)

# Re-exported: ``services.export_results`` is the scripts' entry point (see export.py).
from .export import export_results as export_results
from .jsonl import METADATA_JOB_KEY, ItemValidator, dumps_line, iter_jsonl, validate_metadata
from .models import (
    PROVIDER_TIMESTAMPS,
    STATUS_RANK,
    BatchJob,
    BatchStatus,
    CompletionWindow,
    Endpoint,
    ItemState,
    JobState,
    RequestItem,
)
from .results import Usage, token_cost
from .retention import PurgeReport as PurgeReport
from .retention import purge as purge
from .retention import purgeable_jobs as purgeable_jobs

#: Rows per INSERT when adding items.
_INSERT_CHUNK = 2000


def create_job(
    *,
    endpoint: str = Endpoint.CHAT_COMPLETIONS,
    name: str = "",
    metadata: Mapping[str, str] | None = None,
    account: str = "default",
    owner: Any = None,
    completion_window: str = CompletionWindow.HOURS_24,
    items: Iterable[Mapping[str, Any]] | None = None,
    jsonl: IO[bytes] | IO[str] | Iterable[bytes] | Iterable[str] | None = None,
) -> BatchJob:
    """Create a draft job, with its items (``items`` mappings and/or ``jsonl`` lines in
    OpenAI's input format): all or nothing, no job is left behind when an item is wrong."""
    problems: list[Problem] = []
    if endpoint not in Endpoint.values:
        problems.append(
            Problem(None, "endpoint", f"{endpoint!r} is not one of {', '.join(Endpoint.values)}")
        )
    if completion_window not in CompletionWindow.values:
        problems.append(
            Problem(
                None,
                "completion_window",
                f"{completion_window!r} is not one of {', '.join(CompletionWindow.values)}",
            )
        )
    problems += validate_metadata(metadata)
    if not isinstance(name, str) or len(name) > 200 or _clean_text(name) != name:
        problems.append(
            Problem(
                None,
                "name",
                "must be text of at most 200 characters, without NUL or lone surrogates",
            )
        )
    if account not in app_settings.account_names():
        problems.append(
            Problem(
                None,
                "account",
                # The configured names are not listed: this reaches API users, and which
                # accounts exist is the operator's business.
                f"{account!r} is not a configured account",
            )
        )
    if problems:
        raise ValidationError(problems)
    with transaction.atomic():
        job = BatchJob.objects.create(
            endpoint=endpoint,
            name=name,
            metadata=dict(metadata or {}),
            account=account,
            owner=owner if getattr(owner, "pk", None) else None,
            completion_window=completion_window,
        )
        if items is not None:
            add_items(job, items)
        if jsonl is not None:
            add_items_from_jsonl(job, jsonl)
    return job


def _link(item: Mapping[str, Any]) -> tuple[ContentType | None, str]:
    obj = item.get("object")
    if obj is None:
        return None, ""
    if not isinstance(obj, models.Model) or obj.pk is None:
        raise TypeError("'object' must be a saved model instance")
    return ContentType.objects.get_for_model(obj), str(obj.pk)


def add_items(job: BatchJob, items: Iterable[Mapping[str, Any]]) -> int:
    """Validate and add request items to a draft job; all or nothing.

    Each item is a mapping with ``custom_id`` and ``body`` (which names the ``model``), and
    optionally ``method`` (POST), ``url`` (the job's endpoint) and ``object`` (any saved model
    instance of the host project, reachable later as ``item.content_object``).

    Rows are inserted in chunks while validating, inside one transaction that is rolled back
    when any item is wrong, so memory stays flat on 50,000 items and nothing is half-saved.
    Raises :class:`~openai_batches.exceptions.ValidationError` listing every problem (index
    and field), or :class:`InvalidStateError` if the job no longer accepts items.
    """
    return _add(job, ((i, item, None) for i, item in enumerate(items)))


def add_items_from_jsonl(
    job: BatchJob, stream: IO[bytes] | IO[str] | Iterable[bytes] | Iterable[str]
) -> int:
    """Like :func:`add_items`, reading OpenAI's JSONL input format; problems name the line."""

    # Index = line number - 1, so each problem's ``line`` is the editor's line number.
    return _add(job, ((line_no - 1, obj, error) for line_no, obj, error in iter_jsonl(stream)))


def _add(job: BatchJob, rows: Iterable[tuple[int, Any, str | None]]) -> int:
    with transaction.atomic():
        locked = BatchJob.objects.select_for_update().get(pk=job.pk)
        if locked.state != JobState.DRAFT:
            state = locked.get_state_display().lower()
            raise _refusal(locked, "given more items", f"it is {state}; only a draft takes items")
        validator = ItemValidator(
            endpoint=locked.endpoint,
            model=locked.model,
            max_requests=int(app_settings.MAX_REQUESTS_PER_BATCH),
            max_bytes=int(app_settings.MAX_FILE_BYTES),
            existing_count=locked.item_count,
            existing_bytes=locked.input_bytes,
        )
        buffer: list[RequestItem] = []
        # custom_ids of valid items still to be checked against items stored earlier; kept
        # even after a problem so one error lists every clash too.
        unchecked: list[tuple[int, str]] = []
        for index, obj, parse_error in rows:
            if parse_error is not None:
                validator.count += 1
                validator.add_problem(index, None, parse_error)
                continue
            line = validator.check(index, obj)
            if line is None:
                continue
            if locked.item_count:
                unchecked.append((index, line["custom_id"]))
            try:
                content_type, object_id = _link(obj)
            except TypeError as err:
                validator.add_problem(index, "object", str(err))
                continue
            if not validator.problems:  # once anything is wrong we only keep validating
                buffer.append(
                    RequestItem(
                        job=locked,
                        custom_id=line["custom_id"],
                        method="POST",
                        url=line["url"],
                        body=line["body"],
                        content_type=content_type,
                        object_id=object_id,
                    )
                )
            if len(buffer) >= _INSERT_CHUNK or len(unchecked) >= _INSERT_CHUNK:
                _flush(buffer, unchecked, validator, locked)
        _flush(buffer, unchecked, validator, locked)
        if validator.problems:
            transaction.set_rollback(True)
            limit = any(
                p.field is None and "the most one batch takes" in p.message
                for p in validator.problems
            )
            error_class = LimitExceeded if limit else ValidationError
            raise error_class(validator.problems, truncated=validator.truncated)
        BatchJob.objects.filter(pk=locked.pk).update(
            item_count=locked.item_count + validator.count,
            input_bytes=locked.input_bytes + validator.nbytes,
            model=validator.model,
        )
    job.item_count = locked.item_count + validator.count
    job.input_bytes = locked.input_bytes + validator.nbytes
    job.model = validator.model
    return validator.count


def _flush(
    buffer: list[RequestItem],
    unchecked: list[tuple[int, str]],
    validator: ItemValidator,
    job: BatchJob,
) -> None:
    """Report custom_ids already stored in the job, then insert the buffer if all is well."""
    if unchecked:
        ids = [custom_id for _, custom_id in unchecked]
        taken = set(
            RequestItem.objects.filter(job=job, custom_id__in=ids).values_list(
                "custom_id", flat=True
            )
        )
        for index, custom_id in unchecked:
            if custom_id in taken:
                validator.add_problem(index, "custom_id", f"{custom_id!r} is already in the job")
        unchecked.clear()
    if buffer and not validator.problems:
        RequestItem.objects.bulk_create(buffer, batch_size=_INSERT_CHUNK)
    buffer.clear()


# ---------------------------------------------------------------------------------------
# The life of a batch: submit, refresh, ingest, announce, cancel.
# ---------------------------------------------------------------------------------------

logger = logging.getLogger(__name__)

#: Seconds to wait between create attempts when the outcome is known not to have created a
#: batch (429, or the "Cannot find file" race right after an upload).
_CREATE_ATTEMPTS = 4
#: A batch found by metadata must have been created after the intent, less this slack (s).
_LOOKUP_SLACK = 600
#: Above this many active batches per account, one list call per 100 beats one GET each.
LIST_REFRESH_THRESHOLD = 5
#: Items announced per transaction.
_ANNOUNCE_CHUNK = 500

_sleep = time.sleep  # patched in tests that must not wait

#: The named steps of the lifecycle where :func:`_checkpoint` is called. Crash and race
#: tests replace ``_checkpoint`` in a child process to SIGKILL it, or make it wait, at one
#: exact step; the names are a contract with those tests.
CHECKPOINTS = (
    "submit.claimed",  # the SUBMITTING lease is committed; no I/O yet
    "submit.uploaded",  # the provider has the input file; its id is not recorded yet
    "submit.upload_recorded",  # input_file_id is committed; no create yet
    "submit.created",  # the provider created the batch; it is not recorded yet
    "submit.adopted",  # the batch is recorded on the job
    "refresh.fetched",  # the provider's batch object is read; not applied yet
    "ingest.rows_written",  # part of the results are written (uncommitted)
    "ingest.before_commit",  # every result and the job's totals written, not committed
    "ingest.committed",  # results committed; announcing not started
    "announce.chunk_sent",  # a chunk's receivers ran; its marks are not committed yet
    "announce.finished_sent",  # job_finished's receivers ran; its mark is not committed yet
)


def _checkpoint(name: str) -> None:
    """A no-op marking the lifecycle step ``name`` (one of :data:`CHECKPOINTS`)."""


def _get(job: BatchJob | int) -> BatchJob:
    return BatchJob.objects.get(pk=job.pk if isinstance(job, BatchJob) else job)


def _ts(value: Any) -> datetime | None:
    """A provider Unix timestamp as a datetime; None for anything that is not one."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return datetime.fromtimestamp(int(value), tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _field(value: Any, current: str, max_length: int) -> str:
    """A provider string for a CharField: kept only if it is a string that fits."""
    if isinstance(value, str) and value and len(value) <= max_length:
        return _clean_text(value)
    return current


def _status_signal(job: BatchJob, old_state: str, old_status: str) -> None:
    """Send ``job_status_changed`` after commit when the state or status moved."""
    if (old_state, old_status) == (job.state, job.provider_status):
        return
    new_state, new_status = job.state, job.provider_status

    def send() -> None:
        # The change is committed: a receiver's error must neither reach the caller (who
        # would report a saved change as failed) nor stop the other receivers or the hooks
        # queued after this one (the RQ enqueue among them).
        responses = signals.job_status_changed.send_robust(
            sender=BatchJob,
            job=job,
            old_state=old_state,
            new_state=new_state,
            old_status=old_status,
            new_status=new_status,
        )
        _log_receiver_errors("job_status_changed", job.pk, responses)

    transaction.on_commit(send, robust=True)


def _log_receiver_errors(signal: str, job_pk: int, responses: list[tuple[Any, Any]]) -> None:
    for receiver, response in responses:
        if isinstance(response, Exception):
            logger.error(
                "a %s receiver (%s) failed for job %s",
                signal,
                getattr(receiver, "__qualname__", receiver),
                job_pk,
                exc_info=response,
            )


def _record_error(job: BatchJob, err: BaseException, **extra: Any) -> None:
    """Store a local error on the job without touching any provider field."""
    now = timezone.now()
    message = f"{type(err).__name__}: {err}"[:4000]
    BatchJob.objects.filter(pk=job.pk).update(last_error=message, last_error_at=now, **extra)
    job.last_error, job.last_error_at = message, now
    for key, value in extra.items():
        setattr(job, key, value)
    logger.warning("openai_batches job %s: %s", job.pk, message)


def _record_error_quietly(job: BatchJob | int, err: BaseException) -> None:
    """:func:`_record_error` for a job that may be gone; never raises (it runs in handlers)."""
    try:
        found = BatchJob.objects.filter(pk=job.pk if isinstance(job, BatchJob) else job).first()
        if found is not None:
            _record_error(found, err)
    except Exception:
        logger.exception("could not record an error on job %s", job)


#: Results announced during the current :func:`sync` pass (None outside one). A context
#: variable because results are announced from on-commit hooks deep inside ingest.
_announced_in_pass: ContextVar[list[int] | None] = ContextVar("_announced_in_pass", default=None)


def _count_announced(n: int) -> None:
    counter = _announced_in_pass.get()
    if counter is not None:
        counter[0] += n


def _lock(job: BatchJob | int) -> BatchJob:
    """Re-read the job with its row locked (inside a transaction)."""
    return BatchJob.objects.select_for_update().get(pk=job.pk if isinstance(job, BatchJob) else job)


def _require(job: BatchJob, check: Callable[[BatchJob], tuple[bool, str]], action: str) -> BatchJob:
    """``job`` if ``check`` allows the action, else :class:`InvalidStateError` saying why."""
    allowed, reason = check(job)
    if not allowed:
        raise _refusal(job, action, reason)
    return job


def _refusal(job: BatchJob, action: str, reason: str) -> InvalidStateError:
    """The error saying ``job`` cannot be ``action`` (e.g. "submitted") because ``reason``."""
    return InvalidStateError(
        f"Job {job.pk} cannot be {action}: {reason}.",
        job_id=job.pk,
        state=job.state,
        job_uuid=str(job.uuid),
        action=action,
        reason=reason,
    )


def can_submit(job: BatchJob | int) -> tuple[bool, str]:
    job = _get(job) if not isinstance(job, BatchJob) else job
    if job.state not in (JobState.DRAFT, JobState.SUBMIT_FAILED):
        return (
            False,
            f"it is {job.get_state_display().lower()}; only a draft (or a failed submission) can be submitted",
        )
    if job.item_count == 0:
        return False, "it has no items"
    if reason := budgets.refusal(job):
        return False, reason
    return True, ""


def can_cancel(job: BatchJob | int) -> tuple[bool, str]:
    job = _get(job) if not isinstance(job, BatchJob) else job
    if job.state in (JobState.DRAFT, JobState.SUBMIT_REQUESTED, JobState.SUBMIT_FAILED):
        return True, ""
    if (
        job.state == JobState.SUBMITTED
        and not job.is_terminal
        and job.provider_status != BatchStatus.CANCELLING
    ):
        return True, ""
    if job.state == JobState.SUBMITTING:
        return False, "its submission is under way; try again in a moment"
    return (
        False,
        f"it is {job.get_state_display().lower()} ({job.provider_status or 'not at the provider'})",
    )


def can_refresh(job: BatchJob | int) -> tuple[bool, str]:
    job = _get(job) if not isinstance(job, BatchJob) else job
    if not job.provider_batch_id:
        return False, "the provider does not know it yet"
    if job.state == JobState.FINISHED:
        return False, "its results are already ingested"
    return True, ""


def can_delete(job: BatchJob | int) -> tuple[bool, str]:
    job = _get(job) if not isinstance(job, BatchJob) else job
    if job.state in (JobState.SUBMIT_REQUESTED, JobState.SUBMITTING, JobState.SUBMITTED):
        # The provider is (or may be about to be) running it: deleting would orphan a paid
        # batch and lose its results. Cancel it first.
        return False, f"it is {job.get_state_display().lower()}; cancel it first"
    return True, ""


def delete_job(job: BatchJob | int) -> None:
    """Delete a job and its items, unless the provider is (or may be) running it."""
    with transaction.atomic():
        _require(_lock(job), can_delete, "deleted").delete()


def request_submit(job: BatchJob | int) -> BatchJob:
    """Record the intent to submit (before any I/O) and enqueue the submit job on commit."""
    from . import jobs

    with transaction.atomic():
        locked = _require(_lock(job), can_submit, "submitted")
        old = (locked.state, locked.provider_status)
        locked.state = JobState.SUBMIT_REQUESTED
        locked.submit_requested_at = timezone.now()
        locked.save(update_fields=["state", "submit_requested_at", "updated_at"])
        _status_signal(locked, *old)
        jobs.enqueue_submit(locked.pk)
    return locked


def submit(job: BatchJob | int) -> BatchJob:
    """Upload the job's items and create the provider batch, exactly once.

    Safe to call from several workers at once: the row lock plus the ``SUBMITTING`` lease let
    one of them do the I/O; the others return at once. An attempt whose outcome is unknown
    (timeout, reset, 5xx on create) looks the batch up by its metadata before creating again.
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
        recovering = locked.state == JobState.SUBMITTING
        old = (locked.state, locked.provider_status)
        locked.state = JobState.SUBMITTING
        locked.submit_attempt_at = now
        locked.save(update_fields=["state", "submit_attempt_at", "updated_at"])
        _status_signal(locked, *old)
    _checkpoint("submit.claimed")
    try:
        client = get_client(locked.account)
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
    if recovering or job.input_file_id:
        # A previous attempt may have created the batch without recording it.
        try:
            found = _find_batch(client, job)
        except ProviderError as err:
            return _submit_unknown(job, err)
        if found is not None:
            return _adopt(job, found, client)
    if not job.input_file_id:
        try:
            # After any earlier attempt (one that failed, or one killed without a word) an
            # upload may have landed unrecorded: reuse it rather than leave an orphan.
            earlier = recovering or job.last_error_at is not None
            uploaded = (_find_upload(client, job) if earlier else None) or _upload(job, client)
        except APIError as err:
            if err.retryable:
                return _submit_unknown(job, err)
            return _submit_failed(job, client, err)
        except ProviderError as err:
            return _submit_unknown(job, err)
        _checkpoint("submit.uploaded")
        recorded = BatchJob.objects.filter(
            pk=job.pk, state=JobState.SUBMITTING, provider_batch_id="", input_file_id=""
        ).update(input_file_id=uploaded["id"])
        if not recorded:
            # Our lease ran out during a slow upload and another worker took over: unless
            # that worker found and recorded this very upload, it will never be a batch.
            current = _get(job)
            if current.input_file_id != uploaded["id"]:
                _delete_upload(client, uploaded["id"])
            return current
        job.input_file_id = uploaded["id"]
        _checkpoint("submit.upload_recorded")
    metadata = {**job.metadata, METADATA_JOB_KEY: str(job.uuid)}
    unknown: ProviderError | None = None
    for attempt in range(_CREATE_ATTEMPTS):
        last = attempt == _CREATE_ATTEMPTS - 1
        if not _still_ours(job):
            # Our lease ran out (a slow upload) and another worker took the submission
            # over: creating now would make a second batch for the job.
            return _get(job)
        try:
            batch = client.create_batch(
                input_file_id=job.input_file_id,
                endpoint=job.endpoint,
                completion_window=job.completion_window,
                metadata=metadata,
                output_expires_after=app_settings.OUTPUT_EXPIRES_AFTER,
            )
            _checkpoint("submit.created")
            adopted = _adopt(job, batch, client)
            _checkpoint("submit.adopted")
            return adopted
        except APIError as err:
            file_race = err.status_code == 400 and err.param == "file_id"
            if err.retry_after is not None and err.retry_after > MAX_RETRY_AFTER:
                # Refused, and told to come back much later: give the lease back now; the
                # next attempt (a later poll of the queue, or sync_batches) tries again.
                return _submit_unknown(job, err)
            if (file_race or err.status_code == 429) and not last:
                # Nothing was created: a 400/429 is a refusal, so creating again is safe.
                _sleep(err.retry_after if err.retry_after is not None else retry_delay(attempt))
                continue
            if not err.retryable:
                return _submit_failed(job, client, err)
            unknown = err
        except APIConnectionError as err:
            unknown = err
        # Unknown outcome: the batch may exist, or still be on its way (a create that timed
        # out here can land at the provider a moment later). Wait, then look before creating.
        _sleep(retry_delay(attempt + 1))
        try:
            found = _find_batch(client, job)
        except ProviderError as err:
            return _submit_unknown(job, err)
        if found is not None:
            return _adopt(job, found, client)
    assert unknown is not None
    return _submit_unknown(job, unknown)


def _still_ours(job: BatchJob) -> bool:
    """Whether this attempt still holds the job's submit lease (nobody re-claimed it)."""
    return BatchJob.objects.filter(
        pk=job.pk,
        state=JobState.SUBMITTING,
        submit_attempt_at=job.submit_attempt_at,
        provider_batch_id="",
    ).exists()


def _upload_name(job: BatchJob) -> str:
    return f"openai_batches-{job.uuid}.jsonl"


def _upload(job: BatchJob, client: BatchProvider) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(prefix="openai_batches-", suffix=".jsonl") as tmp:
        for chunk in iter_input_jsonl(job):
            tmp.write(chunk)
        tmp.flush()
        return client.upload_file(
            Path(tmp.name),
            filename=_upload_name(job),
            expires_after=app_settings.FILE_EXPIRES_AFTER,
        )


def _find_upload(client: BatchProvider, job: BatchJob) -> dict[str, Any] | None:
    """An earlier upload of this job's input (found by its file name), if one landed."""
    expected = job.input_bytes
    for file in client.list_files(purpose="batch"):
        if file.get("filename") == _upload_name(job) and (
            not expected or file.get("bytes") == expected
        ):
            return dict(file)
    return None


def _find_batch(client: BatchProvider, job: BatchJob) -> dict[str, Any] | None:
    """The provider batch carrying this job's UUID in its metadata, if one exists.

    Batches come newest first, so the scan stops at the first one created well before the
    submission was requested. If a lost create produced duplicates, the oldest is kept and
    the others are cancelled so they are not billed twice.
    """
    since = (job.submit_requested_at or job.created_at).timestamp() - _LOOKUP_SLACK
    matches: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        page = client.list_batches(after=after, limit=100)
        data = page.get("data") or []
        matches += [
            dict(b)
            for b in data
            if (b.get("metadata") or {}).get(METADATA_JOB_KEY) == str(job.uuid)
        ]
        if not page.get("has_more") or not data or (data[-1].get("created_at") or 0) < since:
            break
        after = data[-1]["id"]
    if not matches:
        return None
    matches.sort(key=lambda b: (b.get("created_at") or 0, b["id"]))
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


def _adopt(job: BatchJob, batch: Mapping[str, Any], client: BatchProvider) -> BatchJob:
    """Record the provider batch on the job: it is submitted from now on.

    A batch the job cannot take (it already has another one, because a worker whose lease
    ran out created a second; or the job was cancelled meanwhile) is cancelled at once and
    its upload deleted: no paid batch may run without a job tracking it.
    """
    with transaction.atomic():
        locked = BatchJob.objects.select_for_update().get(pk=job.pk)
        other = locked.provider_batch_id and locked.provider_batch_id != batch["id"]
        closed = locked.state not in (
            JobState.SUBMIT_REQUESTED,
            JobState.SUBMITTING,
            JobState.SUBMITTED,
        )
        if not (other or closed):
            return _record_batch(locked, batch)
    logger.warning(
        "job %s cannot take batch %s (%s); cancelling it",
        locked.pk,
        batch["id"],
        f"it has {locked.provider_batch_id}" if other else f"it is {locked.state}",
    )
    try:
        client.cancel_batch(batch["id"])
    except ProviderError as err:
        # Already finished (a 400), or the provider cannot be reached: either way the
        # operator must know a batch of this job ran outside it.
        _record_error(locked, ProviderError(f"could not cancel stray batch {batch['id']}: {err}"))
    input_file = batch.get("input_file_id")
    if input_file and input_file != locked.input_file_id:
        _delete_upload(client, input_file)
    return locked


def _record_batch(locked: BatchJob, batch: Mapping[str, Any]) -> BatchJob:
    """Under the job's row lock: record ``batch`` as the job's provider batch."""
    old = (locked.state, locked.provider_status)
    now = timezone.now()
    locked.provider_batch_id = batch["id"]
    locked.input_file_id = batch.get("input_file_id") or locked.input_file_id
    locked.state = JobState.SUBMITTED
    locked.submitted_at = locked.submitted_at or now
    locked.poll_interval = float(app_settings.POLL_INTERVAL)
    locked.next_poll_at = now + timedelta(seconds=locked.poll_interval)
    _apply_fields(locked, batch)
    locked.save()
    RequestItem.objects.filter(job=locked, state=ItemState.PENDING).update(
        state=ItemState.SUBMITTED
    )
    _status_signal(locked, *old)
    return locked


def _submit_failed(job: BatchJob, client: BatchProvider, err: APIError) -> BatchJob:
    """The provider refused the upload or the batch: record why, delete the orphan upload."""
    if job.input_file_id:
        _delete_upload(client, job.input_file_id)
    with transaction.atomic():
        locked = BatchJob.objects.select_for_update().get(pk=job.pk)
        old = (locked.state, locked.provider_status)
        locked.state = JobState.SUBMIT_FAILED
        locked.input_file_id = ""
        locked.last_error = f"{type(err).__name__}: {err}"[:4000]
        locked.last_error_at = timezone.now()
        locked.save(
            update_fields=["state", "input_file_id", "last_error", "last_error_at", "updated_at"]
        )
        _status_signal(locked, *old)
    return locked


def _submit_unknown(job: BatchJob, err: BaseException) -> BatchJob:
    """The outcome is unknown: go back to 'requested' so the next attempt reconciles first."""
    with transaction.atomic():
        locked = BatchJob.objects.select_for_update().get(pk=job.pk)
        old = (locked.state, locked.provider_status)
        locked.state = JobState.SUBMIT_REQUESTED
        locked.submit_attempt_at = None
        locked.save(update_fields=["state", "submit_attempt_at", "updated_at"])
        _record_error(locked, err)
        _status_signal(locked, *old)
    return locked


def _apply_fields(job: BatchJob, batch: Mapping[str, Any]) -> bool:
    """Copy the provider's facts onto ``job`` (unsaved); never move backwards.

    Returns whether anything the provider reports as progress changed.
    """
    status = batch.get("status")
    if status not in STATUS_RANK:
        # A status this version does not know: keep what we knew, and say so on the job
        # rather than store a value the state machine cannot reason about.
        job.last_error = f"The provider reported an unknown batch status {str(status)[:40]!r}."
        job.last_error_at = timezone.now()
        logger.warning("job %s: %s", job.pk, job.last_error)
        return False
    old_rank = STATUS_RANK.get(job.provider_status, -1)
    if job.is_terminal or STATUS_RANK[status] < old_rank:
        # A stale answer (list caches, retries) must not undo what we already saw.
        return False
    counts = _dict(batch.get("request_counts"))
    before = (job.provider_status, job.request_count_completed, job.request_count_failed)
    job.provider_status = status
    job.request_count_total = _count(counts.get("total")) or job.request_count_total
    job.request_count_completed = max(_count(counts.get("completed")), job.request_count_completed)
    job.request_count_failed = max(_count(counts.get("failed")), job.request_count_failed)
    job.provider_model = _field(batch.get("model"), job.provider_model, 128)
    job.output_file_id = _field(batch.get("output_file_id"), job.output_file_id, 64)
    job.error_file_id = _field(batch.get("error_file_id"), job.error_file_id, 64)
    errors = _dict(batch.get("errors"))
    if isinstance(errors.get("data"), list) and errors["data"]:
        job.provider_errors = _clean(errors["data"][:1000])
    usage = _dict(batch.get("usage"))
    if usage and not job.ingested_at:
        job.input_tokens = _count(usage.get("input_tokens"))
        job.cached_tokens = _count(_dict(usage.get("input_tokens_details")).get("cached_tokens"))
        job.output_tokens = _count(usage.get("output_tokens"))
        job.reasoning_tokens = _count(
            _dict(usage.get("output_tokens_details")).get("reasoning_tokens")
        )
    for key, attr in PROVIDER_TIMESTAMPS:
        value = _ts(batch.get(key))
        if value is not None and getattr(job, attr) is None:
            setattr(job, attr, value)
    return before != (job.provider_status, job.request_count_completed, job.request_count_failed)


def apply_batch(job: BatchJob | int, batch: Mapping[str, Any]) -> BatchJob:
    """Apply one provider batch object to its job and schedule the next poll (backoff).

    If another process holds the job's row (an ingest writing its results, a submitter
    recording its batch) the job is returned as it is instead of waiting: that process is
    already moving it, and a sync pass must not queue behind one job.
    """
    pk = _get(job).pk
    with transaction.atomic():
        locked = BatchJob.objects.select_for_update(skip_locked=True).filter(pk=pk).first()
        if locked is None:
            return _get(pk)
        old = (locked.state, locked.provider_status)
        if locked.state in (JobState.SUBMITTING, JobState.SUBMIT_REQUESTED):
            locked.state = JobState.SUBMITTED  # found by a refresh before the submitter recorded it
            locked.provider_batch_id = locked.provider_batch_id or str(batch.get("id") or "")
        moved = _apply_fields(locked, batch)
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
        locked.save()
        _status_signal(locked, *old)
    return locked


def refresh(
    job: BatchJob | int, *, ingest: bool = True, progress: Progress | None = None
) -> BatchJob:
    """Ask the provider about the batch now; ingest and announce when it is terminal.

    A poll error is recorded on the job (``last_error``) and re-raised; the provider's facts
    stay as they were.
    """
    current = _require(_get(job), can_refresh, "refreshed")
    with _provider(current, on_error=_poll_failed) as client:
        batch = client.retrieve_batch(current.provider_batch_id)
    _checkpoint("refresh.fetched")
    try:
        updated = apply_batch(current, batch)
    except Exception as err:
        _poll_failed(current, err)
        raise
    if ingest and updated.is_terminal and not updated.ingested_at:
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
        client = get_client(job.account)
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
    from . import jobs

    jobs.enqueue_poll(_get(job).pk, force=True)


def _may_have_batch(job: BatchJob) -> bool:
    """Whether an earlier submission attempt may have created a batch we never recorded
    (it uploaded, or it ended with an error whose outcome was unknown)."""
    return job.state == JobState.SUBMIT_REQUESTED and bool(job.input_file_id or job.last_error_at)


def cancel(job: BatchJob | int) -> BatchJob:
    """Cancel a job: locally before submission, at the provider afterwards.

    A job waiting to be submitted again after an attempt whose outcome was unknown may
    already have a batch at the provider: it is looked up first, and cancelled there if it
    exists, so cancelling (and then deleting) a job never leaves a paid batch untracked.
    """
    with transaction.atomic():
        locked = _require(_lock(job), can_cancel, "cancelled")
        if locked.state != JobState.SUBMITTED and not _may_have_batch(locked):
            _cancel_locally(locked)
            return locked
        if locked.state != JobState.SUBMITTED:
            # Hold the submit lease while we look, so no worker creates a batch meanwhile.
            locked.state = JobState.SUBMITTING
            locked.submit_attempt_at = timezone.now()
            locked.save(update_fields=["state", "submit_attempt_at", "updated_at"])
    if locked.state == JobState.SUBMITTING:
        return _cancel_unrecorded(locked)
    with _provider(locked, on_error=_record_error) as client:
        batch = client.cancel_batch(locked.provider_batch_id)
    return apply_batch(locked, batch)


def _cancel_locally(locked: BatchJob) -> None:
    old = (locked.state, locked.provider_status)
    locked.state = JobState.CANCELLED
    locked.save(update_fields=["state", "updated_at"])
    _status_signal(locked, *old)


def _cancel_unrecorded(job: BatchJob) -> BatchJob:
    """Cancel a job whose batch may exist unrecorded; we hold its submit lease."""
    try:
        client = get_client(job.account)
    except Exception as err:
        _submit_unknown(job, err)
        raise
    try:
        try:
            found = _find_batch(client, job)
        except Exception as err:
            # We could not make sure: the job stays submittable (and cancellable) as it was.
            _submit_unknown(job, err)
            raise
        if found is not None:
            # Tracked from here on, whatever the cancel says (a batch that already ended
            # cannot be cancelled: then its results are ingested like any other's).
            adopted = _adopt(job, found, client)
            try:
                batch = client.cancel_batch(adopted.provider_batch_id)
            except ProviderError as err:
                _record_error(adopted, err)
                raise
            return apply_batch(adopted, batch)
        if job.input_file_id:
            # A create still in flight would now fail for want of its file.
            _delete_upload(client, job.input_file_id)
    finally:
        client.close()
    with transaction.atomic():
        locked = _lock(job)
        locked.submit_attempt_at = None
        locked.input_file_id = ""
        locked.save(update_fields=["submit_attempt_at", "input_file_id", "updated_at"])
        locked.state = JobState.SUBMIT_REQUESTED  # what the status signal reports as "old"
        _cancel_locally(locked)
    return locked


# -- ingest ------------------------------------------------------------------------------

Progress = Callable[[int, int], None]
_OPEN_STATES = (ItemState.PENDING, ItemState.SUBMITTED)
_RESULT_COLUMNS = (
    "state",
    "status_code",
    "response",
    "error",
    "provider_request_id",
    "result_line_id",
    "input_tokens",
    "cached_tokens",
    "output_tokens",
    "reasoning_tokens",
)


#: The largest count a PositiveIntegerField holds on every database.
_MAX_COUNT = 2**31 - 1


def _count(value: Any) -> int:
    """A token or request count from the provider, clamped into the column's range.

    A negative, non-numeric or absurd number in one result line must not fail the whole
    ingest (or, on PostgreSQL, the whole transaction): it is stored as 0 (or the maximum).
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    if value != value or value in (float("inf"), float("-inf")):  # NaN, infinities
        return 0
    return min(max(int(value), 0), _MAX_COUNT)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _usage(body: Any) -> tuple[int, int, int, int]:
    usage = _dict(body.get("usage") if isinstance(body, dict) else None)
    if not usage:
        return 0, 0, 0, 0
    inp = usage.get("input_tokens", usage.get("prompt_tokens"))
    out = usage.get("output_tokens", usage.get("completion_tokens"))
    in_details = _dict(usage.get("input_tokens_details") or usage.get("prompt_tokens_details"))
    out_details = _dict(
        usage.get("output_tokens_details") or usage.get("completion_tokens_details")
    )
    return (
        _count(inp),
        _count(in_details.get("cached_tokens")),
        _count(out),
        _count(out_details.get("reasoning_tokens")),
    )


_SURROGATE = re.compile("[\ud800-\udfff]")


def _clean_text(value: str) -> str:
    """``value`` without what no database text column takes: NULs and lone surrogates."""
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # Decoded JSON pairs surrogates into one character, so any left are unpaired.
        value = _SURROGATE.sub("\ufffd", value)
    return value


def _clean(obj: Any) -> Any:
    if isinstance(obj, str):
        return _clean_text(obj)
    if isinstance(obj, dict):
        return {_clean_text(str(k)): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def _json_text(obj: Any) -> str:
    """JSON text a jsonb column accepts.

    PostgreSQL refuses ``\\u0000`` and unpaired surrogate escapes in jsonb, so one odd
    character in one answer would fail the whole ingest. The check is a substring test on
    the encoded text; only the rare line that has one is walked and repaired (U+FFFD).
    """
    text = json.dumps(obj)
    if "\\u0000" in text or "\\ud" in text:
        cleaned = _clean(obj)
        if cleaned != obj or "\\u0000" in text:
            return json.dumps(cleaned)
    return text


def _short(value: Any) -> str:
    return _clean_text(str(value or ""))[:64]


_NEVER_RAN = {"batch_expired": ItemState.EXPIRED, "batch_cancelled": ItemState.CANCELLED}


def result_row(line: Mapping[str, Any]) -> tuple[str, tuple[Any, ...]] | None:
    """``(custom_id, values in _RESULT_COLUMNS order)`` for one result line, or None if unusable.

    A 4xx/5xx with ``error: null`` is a request that ran and failed (the provider's error body
    is kept as the response); ``response: null`` with an ``error`` object never ran.
    """
    custom_id = line.get("custom_id")
    if not isinstance(custom_id, str) or _clean_text(custom_id) != custom_id:
        return None  # no item of ours has such an id: input validation refuses them
    response = line.get("response")
    error = line.get("error")
    if isinstance(response, dict):
        raw_status = response.get("status_code")
        status = _count(raw_status)
        if not 100 <= status <= 599:
            status = 0  # not an HTTP status: the line cannot say the request succeeded
        body = response.get("body")
        ok = 200 <= status < 300 and not error
        state = ItemState.SUCCEEDED if ok else ItemState.FAILED
        usage = _usage(body) if ok else (0, 0, 0, 0)
        if not status and not error:
            error = {
                "code": "invalid_status_code",
                "message": f"The result line's status_code was {str(raw_status)[:40]!r}.",
            }
        return custom_id, (
            state,
            status or None,
            _json_text(body),
            _json_text(error) if error else None,
            _short(response.get("request_id")),
            _short(line.get("id")),
            *usage,
        )
    code = error.get("code") if isinstance(error, dict) else None
    state = _NEVER_RAN.get(str(code), ItemState.FAILED)
    return custom_id, (
        state,
        None,
        None,
        _json_text(
            error
            if error is not None
            else {
                "code": "no_response",
                "message": "The result line had neither a response nor an error.",
            }
        ),
        "",
        _short(line.get("id")),
        0,
        0,
        0,
        0,
    )


class _ResultWriter:
    """Writes result rows onto their items in bulk: COPY + UPDATE ... FROM on PostgreSQL,
    chunked ``executemany`` elsewhere. Only items still open are touched, so re-running an
    ingest changes nothing."""

    def __init__(self, job: BatchJob, now: datetime, *, announced: bool) -> None:
        self.job = job
        self.now = now
        self.announced = announced
        self.chunk = int(app_settings.INGEST_CHUNK_SIZE)
        self.rows: list[tuple[Any, ...]] = []
        self.postgres = connection.vendor == "postgresql"
        self.table = connection.ops.quote_name(RequestItem._meta.db_table)
        self._copy_ready = False

    def add(self, custom_id: str, values: tuple[Any, ...]) -> None:
        self.rows.append((custom_id, *values))
        if len(self.rows) >= self.chunk:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        if self.postgres:
            self._copy(self.rows)
        else:
            self._executemany(self.rows)
        self.rows = []

    def _executemany(self, rows: list[tuple[Any, ...]]) -> None:
        sets = ", ".join(f"{connection.ops.quote_name(c)} = %s" for c in _RESULT_COLUMNS)
        # Identifiers come from the model's metadata and a constant column list, never input.
        where = "WHERE job_id = %s AND custom_id = %s AND state IN (%s, %s)"
        sql = f"UPDATE {self.table} SET {sets}, completed_at = %s, announced = %s {where}"  # noqa: S608
        params = [
            (*r[1:], self.now, self.announced, self.job.pk, r[0], *_OPEN_STATES) for r in rows
        ]
        with connection.cursor() as cursor:
            cursor.executemany(sql, params)

    def _copy(self, rows: list[tuple[Any, ...]]) -> None:
        with connection.cursor() as cursor:
            if not self._copy_ready:
                cursor.execute(
                    "CREATE TEMP TABLE IF NOT EXISTS openai_batches_ingest ("
                    "custom_id text, state text, status_code int, response jsonb, error jsonb, "
                    "provider_request_id text, result_line_id text, input_tokens int, cached_tokens int, "
                    "output_tokens int, reasoning_tokens int) ON COMMIT DROP"
                )
                self._copy_ready = True
            raw = cursor.cursor
            with raw.copy("COPY openai_batches_ingest FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)

    def finish(self) -> None:
        self.flush()
        if not (self.postgres and self._copy_ready):
            return
        sets = ", ".join(f"{c} = t.{c}" for c in _RESULT_COLUMNS)
        with connection.cursor() as cursor:
            # Identifiers come from the model's metadata and a constant column list, never input.
            where = "WHERE i.job_id = %s AND i.custom_id = t.custom_id AND i.state IN (%s, %s)"
            sql = f"UPDATE {self.table} AS i SET {sets}, completed_at = %s, announced = %s FROM openai_batches_ingest AS t {where}"  # noqa: S608
            cursor.execute(sql, [self.now, self.announced, self.job.pk, *_OPEN_STATES])
            cursor.execute("DROP TABLE openai_batches_ingest")


def ingest(job: BatchJob | int, *, progress: Progress | None = None) -> int:
    """Store the results of a terminal batch on its items, in bulk; idempotent.

    Streams the output and error files to temporary files (retrying downloads) BEFORE taking
    the job's row lock, so a slow download never holds up a refresh, a sync pass or a user's
    action; then, under the lock (skipped if another process holds it), writes every result
    in bulk, marks the items that have no line (expired, cancelled, failed batch, or
    missing), sums usage onto the job and, after commit, announces the results. Returns the
    number of result lines read. Any error (a download, a database refusal) is recorded on
    the job and re-raised: the transaction rolls back, so the next poll starts afresh.
    """
    pk = _get(job).pk
    try:
        current = BatchJob.objects.get(pk=pk)
        if current.ingested_at or not current.is_terminal:
            return 0
        with _downloaded(current) as files, transaction.atomic():
            locked = BatchJob.objects.select_for_update(skip_locked=True).filter(pk=pk).first()
            if locked is None or locked.ingested_at or not locked.is_terminal:
                return 0  # another process is ingesting it, or there is nothing to do
            if (locked.output_file_id, locked.error_file_id) != (
                current.output_file_id,
                current.error_file_id,
            ):
                return 0  # changed under us; the next poll downloads what is current
            lines = _ingest_locked(locked, _rows(locked, files), progress)
    except Exception as err:
        _record_error(_get(pk), err)
        raise
    return lines


@contextmanager
def _downloaded(job: BatchJob) -> Iterator[list[tuple[str, IO[bytes]]]]:
    """The job's output and error files, each streamed whole to a temporary file.

    Downloads are retried from the start; a truncated one is an error, never a short file.
    """
    with ExitStack() as stack:
        files: list[tuple[str, IO[bytes]]] = []
        client = get_client(job.account)
        try:
            for file_id in (job.output_file_id, job.error_file_id):
                if not file_id:
                    continue
                tmp = stack.enter_context(tempfile.TemporaryFile())
                client.download_file(file_id, tmp)
                tmp.seek(0)
                files.append((file_id, tmp))
        finally:
            client.close()
        yield files


def _rows(
    job: BatchJob, files: list[tuple[str, IO[bytes]]]
) -> Iterator[tuple[str, tuple[Any, ...]]]:
    for file_id, tmp in files:
        for line_no, obj, error in iter_jsonl(tmp):
            row = result_row(obj) if isinstance(obj, dict) else None
            if row is None:
                logger.warning(
                    "job %s: unusable line %s in %s (%s)", job.pk, line_no, file_id, error
                )
                continue
            yield row


def iter_result_rows(job: BatchJob) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """Every usable line of the job's output and error files as a :func:`result_row`.

    Each file is streamed to a temporary file first, then read one line at a time.
    """
    with _downloaded(job) as files:
        yield from _rows(job, files)


def _ingest_locked(
    job: BatchJob, rows: Iterable[tuple[str, tuple[Any, ...]]], progress: Progress | None
) -> int:
    now = timezone.now()
    # With no receiver connected there is nothing to send: store the results as announced
    # in the same write instead of a second pass over every row after commit.
    announced = not signals.result_received.has_listeners(RequestItem)
    if announced:
        _count_announced(
            RequestItem.objects.filter(job=job, state__in=_OPEN_STATES).order_by().count()
        )
    writer = _ResultWriter(job, now, announced=announced)
    total = job.request_count_total or job.item_count
    lines = 0
    for custom_id, values in rows:
        writer.add(custom_id, values)
        lines += 1
        if lines % writer.chunk == 0:
            _checkpoint("ingest.rows_written")
        if progress and lines % 1000 == 0:
            progress(lines, total)
    writer.finish()
    # Structured outputs are parsed once, in bulk, in this transaction, so receivers and
    # the export read stored JSON instead of each parsing (and saving) on first access.
    structured.store_parsed(job)
    leftover = _leftover(job)
    RequestItem.objects.filter(job=job, state__in=_OPEN_STATES).update(
        state=leftover[0], error=leftover[1], completed_at=now, announced=announced
    )
    sums = RequestItem.objects.filter(job=job).aggregate(
        input_tokens=Sum("input_tokens"),
        cached_tokens=Sum("cached_tokens"),
        output_tokens=Sum("output_tokens"),
        reasoning_tokens=Sum("reasoning_tokens"),
    )
    old = (job.state, job.provider_status)
    for key, value in sums.items():
        setattr(job, key, value or 0)
    job.state = JobState.FINISHED
    job.ingested_at = now
    job.next_poll_at = None
    job.save()
    _status_signal(job, *old)
    if progress:
        progress(lines, total)
    _checkpoint("ingest.before_commit")
    transaction.on_commit(lambda: _after_ingest(job.pk), robust=True)
    return lines


def _leftover(job: BatchJob) -> tuple[str, dict[str, Any]]:
    """State and error for items the result files did not mention."""
    status = job.provider_status
    if status == BatchStatus.EXPIRED:
        return ItemState.EXPIRED, {
            "code": "batch_expired",
            "message": "The batch expired before this request ran.",
        }
    if status == BatchStatus.CANCELLED:
        return ItemState.CANCELLED, {
            "code": "batch_cancelled",
            "message": "The batch was cancelled before this request ran.",
        }
    if status == BatchStatus.FAILED:
        first = (job.provider_errors or [{}])[0]
        return ItemState.FAILED, {
            "code": "batch_failed",
            "message": f"The batch failed validation: {first.get('message', 'see the job')}",
        }
    return ItemState.MISSING, {
        "code": "missing_result",
        "message": "The batch ended without a result line for this request.",
    }


def _after_ingest(job_pk: int) -> None:
    _checkpoint("ingest.committed")
    try:
        announce_pending(job_pk)
    except Exception:
        # The results are committed and still marked pending: the next pass sends them.
        logger.exception("announcing the results of job %s failed; the next pass retries", job_pk)


def _announce_finished(job_id: int) -> bool:
    """Send ``job_finished`` once, after every result of the job has been announced.

    Like the results, the job carries its own outbox mark (``finish_announced``) set in the
    transaction the receivers run in, so a crash before it is sent is repaired by the next
    ``announce_pending`` (every ``sync_batches`` pass runs one).
    """
    if RequestItem.objects.pending_announcement().filter(job_id=job_id).exists():
        return False  # a result is still unannounced (e.g. its receiver failed): wait for it
    try:
        return _send_finished(job_id)
    except Exception as err:
        # Rolled back: the mark stays unset and the next pass sends it again. One job's
        # failing receiver must not keep job_finished from any other job.
        logger.exception("a job_finished receiver failed for job %s", job_id)
        _record_error(_get(job_id), err)
        return False


def _send_finished(job_id: int) -> bool:
    with transaction.atomic():
        job = (
            BatchJob.objects.select_for_update(skip_locked=True)
            .filter(pk=job_id, state=JobState.FINISHED, finish_announced=False)
            .first()
        )
        if job is None:
            return False
        counts = dict(job.items.values_list("state").annotate(n=Count("pk")).order_by())
        signals.job_finished.send(
            sender=BatchJob,
            job=job,
            outcome=job.provider_status,
            succeeded=counts.get(ItemState.SUCCEEDED, 0),
            failed=sum(n for s, n in counts.items() if s != ItemState.SUCCEEDED),
        )
        _checkpoint("announce.finished_sent")
        BatchJob.objects.filter(pk=job.pk).update(finish_announced=True)
        job.finish_announced = True
    return True


# -- announce ----------------------------------------------------------------------------


def _send_result(item: RequestItem) -> None:
    signals.result_received.send(
        sender=RequestItem,
        job=item.job,
        item=item,
        custom_id=item.custom_id,
        succeeded=item.state == ItemState.SUCCEEDED,
        response=item.response,
        error=item.error,
    )


def announce_pending(job: BatchJob | int | None = None) -> int:
    """Send ``result_received`` for every stored result not yet announced, then
    ``job_finished`` for each job whose results are all out; exactly once each.

    Rows are claimed with ``SELECT ... FOR UPDATE SKIP LOCKED`` in pk-ordered chunks (the
    partial outbox index makes each chunk an index range, not a scan of the job); receivers
    run in the same transaction that sets ``announced``, so their writes and the mark commit
    together. A receiver that raises rolls back its own item only (a savepoint), which stays
    pending, is logged, and is retried on the next call. With no receiver connected the
    marks are set in one statement.
    """
    if job is not None:
        job_id = job.pk if isinstance(job, BatchJob) else job
        sent = _announce_job(job_id)
        _announce_finished(job_id)
        return sent
    job_ids = (
        RequestItem.objects.pending_announcement()
        .order_by()
        .values_list("job_id", flat=True)
        .distinct()
    )
    sent = 0
    for job_id in list(job_ids):
        try:
            sent += _announce_job(job_id)
        except Exception as err:
            # One job's trouble (a database error, a deleted row) must not stop the rest.
            logger.exception("announcing results of job %s failed", job_id)
            _record_error_quietly(job_id, err)
    unfinished = BatchJob.objects.filter(state=JobState.FINISHED, finish_announced=False)
    for job_id in list(unfinished.values_list("pk", flat=True)):
        _announce_finished(job_id)
    return sent


def _announce_job(job_id: int) -> int:
    pending = RequestItem.objects.pending_announcement().filter(job_id=job_id)
    if not signals.result_received.has_listeners(RequestItem):
        marked = pending.update(announced=True)
        _count_announced(marked)
        return marked
    job = BatchJob.objects.get(pk=job_id)
    sent = last_pk = 0
    while True:
        with transaction.atomic():
            chunk = list(
                pending.filter(pk__gt=last_pk)
                .select_for_update(skip_locked=True)
                .order_by("pk")[:_ANNOUNCE_CHUNK]
            )
            if not chunk:
                return sent
            last_pk = chunk[-1].pk
            for item in chunk:
                item.job = job  # one job object for all, not one query (or join) per item
            done = _send_chunk(chunk)
            _checkpoint("announce.chunk_sent")
            RequestItem.objects.filter(pk__in=done).update(announced=True)
            sent += len(done)
            _count_announced(len(done))


def _send_chunk(chunk: list[RequestItem]) -> list[int]:
    """Send each item's signal once; return the pks whose receivers all succeeded.

    Each item gets its own savepoint, so a receiver that raises rolls back that item's
    writes alone; the items before and after it are not sent again (a receiver that emails
    or calls out must not do it twice). Savepoints are not released one by one: that would
    double the round trips, and committing the chunk releases them all.
    """
    done: list[int] = []
    failure: BaseException | None = None
    for item in chunk:
        sid = transaction.savepoint()
        try:
            _send_result(item)
        except Exception as err:
            transaction.savepoint_rollback(sid)
            # A receiver's failed query inside a savepoint-less atomic marks the whole
            # transaction for rollback; the savepoint above already undid it.
            transaction.set_rollback(False)
            logger.exception("a result_received receiver failed for %s", item.custom_id)
            failure = err
            continue
        done.append(item.pk)
    if failure is not None:
        _record_error(chunk[0].job, failure)
    return done


# -- reading -----------------------------------------------------------------------------


def iter_results(job: BatchJob | int, *, state: str | None = None) -> Iterator[RequestItem]:
    """The job's items with their results, streamed from the database in pk order."""
    qs = RequestItem.objects.filter(job_id=_get(job).pk)
    if state:
        qs = qs.filter(state=state)
    return qs.order_by("pk").iterator(chunk_size=2000)


def iter_results_jsonl(job: BatchJob | int) -> Iterator[bytes]:
    """One JSON line per item: custom_id, state, status_code, response, error."""
    rows = (
        RequestItem.objects.filter(job_id=_get(job).pk)
        .order_by("pk")
        .values_list("custom_id", "state", "status_code", "response", "error")
        .iterator(chunk_size=2000)
    )
    for custom_id, state, status_code, response, error in rows:
        line = {
            "custom_id": custom_id,
            "state": state,
            "status_code": status_code,
            "response": response,
            "error": error,
        }
        yield dumps_line(line).encode("utf-8") + b"\n"


def iter_input_jsonl(job: BatchJob | int) -> Iterator[bytes]:
    """The job's JSONL input exactly as it is (or was) uploaded."""
    rows = (
        RequestItem.objects.filter(job_id=_get(job).pk)
        .order_by("pk")
        .values_list("custom_id", "method", "url", "body")
        .iterator(chunk_size=2000)
    )
    for custom_id, method, url, body in rows:
        yield (
            dumps_line({"custom_id": custom_id, "method": method, "url": url, "body": body}).encode(
                "utf-8"
            )
            + b"\n"
        )


def iter_provider_file(job: BatchJob | int, which: str) -> Iterator[bytes]:
    """Stream one of the job's provider files: ``input``, ``output`` or ``error``.

    The checks run on the call (a missing file raises :class:`InvalidStateError` before any
    response starts); the download itself streams as the iterator is consumed. When the
    provider no longer has the file (deleted, expired after its retention, or an emulator
    that is gone) and nothing has been sent yet, the same lines are built from what the
    database holds: the items for the input, the ingested results for output and errors.
    """
    current = _get(job)
    if which not in ("input", "output", "error"):
        raise ValueError(f"which must be input, output or error, not {which!r}")
    file_id = {
        "input": current.input_file_id,
        "output": current.output_file_id,
        "error": current.error_file_id,
    }[which]
    if not file_id:
        raise _refusal(current, "downloaded", f"it has no {which} file")
    rebuildable = which == "input" or current.ingested_at is not None
    try:
        client = get_client(current.account)
    except ConfigurationError:
        if not rebuildable:
            raise
        return _stored_file(current, which)

    def chunks() -> Iterator[bytes]:
        sent = False
        try:
            for chunk in client.iter_file_chunks(file_id):
                sent = True
                yield chunk
        except (NotFoundError, APIConnectionError) as err:
            if sent or not rebuildable:
                raise
            logger.info(
                "job %s: %s file unavailable (%s); built from the database", current.pk, which, err
            )
            yield from _stored_file(current, which)
        finally:
            client.close()

    return chunks()


def _stored_file(job: BatchJob, which: str) -> Iterator[bytes]:
    """The job's ``which`` file as the provider wrote it, rebuilt from the database.

    Output: every succeeded item. Errors: every request that ran and failed (its status and
    error body) and every one that never ran (its error object); the app's own
    ``missing`` marks are not provider lines and are left out.
    """
    if which == "input":
        yield from iter_input_jsonl(job)
        return
    states = (
        [ItemState.SUCCEEDED]
        if which == "output"
        else [ItemState.FAILED, ItemState.EXPIRED, ItemState.CANCELLED]
    )
    rows = (
        RequestItem.objects.filter(job_id=job.pk, state__in=states)
        .order_by("pk")
        .values_list(
            "custom_id", "status_code", "response", "error", "provider_request_id", "result_line_id"
        )
        .iterator(chunk_size=2000)
    )
    for custom_id, status_code, response, error, request_id, line_id in rows:
        ran = status_code is not None
        line = {
            "id": line_id or None,
            "custom_id": custom_id,
            "response": (
                {"status_code": status_code, "request_id": request_id or None, "body": response}
                if ran
                else None
            ),
            "error": None if ran else error,
        }
        yield dumps_line(line).encode("utf-8") + b"\n"


def job_cost(job: BatchJob | int) -> Decimal | None:
    """Cost in USD from ``OPENAI_BATCHES["PRICES"]`` (per 1M tokens, batch rates), if known."""
    job = _get(job) if not isinstance(job, BatchJob) else job
    table = app_settings.PRICES
    prices = table.get(job.model or job.provider_model) if isinstance(table, dict) else None
    usage = Usage(job.input_tokens, job.cached_tokens, job.output_tokens, job.reasoning_tokens)
    return token_cost(prices, usage)  # one formula for jobs, items and the export


# -- sync (what sync_batches runs) -------------------------------------------------------


@dataclass
class SyncReport:
    """What one sync pass did; ``errors`` holds ``(job_id, message)`` pairs."""

    submitted: list[int] = field(default_factory=list)
    refreshed: list[int] = field(default_factory=list)
    ingested: list[int] = field(default_factory=list)
    announced: int = 0
    api_calls: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        if self.dry_run:
            return (
                f"would submit {len(self.submitted)}, would refresh {len(self.refreshed)}; "
                "nothing was called or changed"
            )
        return (
            f"submitted {len(self.submitted)}, refreshed {len(self.refreshed)}, ingested {len(self.ingested)}, "
            f"announced {self.announced} result(s), {self.api_calls} API call(s), {len(self.errors)} error(s)"
        )


def sync(
    *,
    job_ids: Iterable[int] | None = None,
    submit: bool = True,
    dry_run: bool = False,
    progress: Callable[[BatchJob, int, int], None] | None = None,
) -> SyncReport:
    """One pass: submit requested jobs, refresh active ones, ingest and announce finished ones.

    Needs no RQ worker: this is what cron's ``sync_batches`` runs. Active batches of one
    account are fetched with the list endpoint (one call per 100) when there are many.
    """
    report = SyncReport(dry_run=dry_run)
    counter = [0]
    token = _announced_in_pass.set(counter)
    try:
        _sync(report, job_ids=job_ids, submit=submit, dry_run=dry_run, progress=progress)
    finally:
        _announced_in_pass.reset(token)
    report.announced = counter[0]
    return report


def _sync(
    report: SyncReport,
    *,
    job_ids: Iterable[int] | None,
    submit: bool,
    dry_run: bool,
    progress: Callable[[BatchJob, int, int], None] | None,
) -> None:
    """:func:`sync`'s pass. Every job is handled on its own: whatever goes wrong with one
    (a provider error, a configuration problem, a bug, a database refusal) is recorded on
    it and reported, and the pass goes on with the others."""
    jobs_qs = BatchJob.objects.all()
    if job_ids is not None:
        jobs_qs = jobs_qs.filter(pk__in=list(job_ids))
    if submit:
        stale = timezone.now() - timedelta(seconds=float(app_settings.SUBMIT_LEASE))
        to_submit = jobs_qs.filter(
            Q(state=JobState.SUBMIT_REQUESTED)
            | Q(state=JobState.SUBMITTING, submit_attempt_at__lt=stale)
        ).order_by("pk")
        for job in to_submit:
            if dry_run:
                report.submitted.append(job.pk)
                continue
            try:
                result = _submit(job)
            except Exception as err:
                report.errors.append((job.pk, _describe(err)))
                continue
            if result.state == JobState.SUBMITTED:
                report.submitted.append(job.pk)
            elif result.state in (JobState.SUBMIT_FAILED, JobState.SUBMIT_REQUESTED):
                report.errors.append((job.pk, result.last_error))
    active = list(
        jobs_qs.filter(state=JobState.SUBMITTED).exclude(provider_batch_id="").order_by("pk")
    )
    by_account: dict[str, list[BatchJob]] = {}
    for job in active:
        by_account.setdefault(job.account, []).append(job)
    for account, group in by_account.items():
        if dry_run:
            report.refreshed += [j.pk for j in group]
            continue
        try:
            batches = _fetch_batches(account, group, report)
        except Exception as err:
            for job in group:
                _poll_failed(job, err)
                report.errors.append((job.pk, _describe(err)))
            continue
        for job in group:
            batch = batches.get(job.provider_batch_id)
            if batch is None:
                report.errors.append(
                    (job.pk, f"batch {job.provider_batch_id} was not found at the provider")
                )
                continue
            try:
                _sync_one(job, batch, report, progress)
            except Exception as err:
                _record_error_quietly(job, err)
                report.errors.append((job.pk, _describe(err)))
    if not dry_run:
        announce_pending(None)


def _sync_one(
    job: BatchJob,
    batch: Mapping[str, Any],
    report: SyncReport,
    progress: Callable[[BatchJob, int, int], None] | None,
) -> None:
    updated = apply_batch(job, batch)
    report.refreshed.append(job.pk)
    if updated.is_terminal and not updated.ingested_at:
        callback = (lambda done, total: progress(updated, done, total)) if progress else None
        if ingest(updated, progress=callback) or _get(job).ingested_at:
            report.ingested.append(job.pk)


def _describe(err: BaseException) -> str:
    """An error as one line for reports: provider errors speak for themselves."""
    if isinstance(err, ProviderError | ConfigurationError):
        return str(err)
    return f"{type(err).__name__}: {err}"


def _fetch_batches(
    account: str, group: list[BatchJob], report: SyncReport
) -> dict[str, dict[str, Any]]:
    client = get_client(account)
    found: dict[str, dict[str, Any]] = {}
    try:
        wanted = {job.provider_batch_id for job in group}
        if len(group) > LIST_REFRESH_THRESHOLD:
            oldest = min((j.provider_created_at or j.created_at) for j in group).timestamp()
            after: str | None = None
            while wanted - set(found):
                page = client.list_batches(after=after, limit=100)
                report.api_calls += 1
                data = page.get("data") or []
                for batch in data:
                    if batch.get("id") in wanted:
                        found[batch["id"]] = batch
                if (
                    not page.get("has_more")
                    or not data
                    or (data[-1].get("created_at") or 0) < oldest - 1
                ):
                    break
                after = data[-1]["id"]
        for batch_id in sorted(wanted - set(found)):
            try:
                found[batch_id] = client.retrieve_batch(batch_id)
            except NotFoundError:
                continue
            finally:
                report.api_calls += 1
    finally:
        client.close()
    return found


# ``refresh(ingest=...)`` and ``sync(submit=...)`` take flags named like these functions.
_ingest = ingest
_submit = submit
