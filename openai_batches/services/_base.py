"""What every stage shares: the lifecycle checkpoints, row locks, error recording, the
status signal, and the cleaning of provider text for the database."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from .. import signals
from ..client import get_client as get_client  # the one seam every stage gets a client through
from ..exceptions import (
    InvalidStateError,
)
from ..models import (
    BatchJob,
    ItemState,
)

#: Rows per INSERT when adding items.
_INSERT_CHUNK = 2000


logger = logging.getLogger(__name__)


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


Progress = Callable[[int, int], None]


_OPEN_STATES = (ItemState.PENDING, ItemState.SUBMITTED)


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
