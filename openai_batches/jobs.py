"""RQ jobs (they take primary keys, re-read rows and lock them) and their enqueue helpers.

Every enqueue happens after the surrounding transaction commits, whatever the host's
``RQ['COMMIT_MODE']``: we register our own ``on_commit`` hook and hand RQ a queue in
``auto`` mode, so a worker never looks for a row that is not committed yet, and a
``request_finished`` commit mode (which never fires inside a worker) cannot swallow a job.
If Redis is unreachable the intent is still in the database and ``sync_batches`` picks it up.

Polls are scheduled with ``enqueue_at`` (run workers with ``--with-scheduler``). Duplicate
poll chains collapse: a poll claims the job's ``next_poll_at`` with a compare-and-set, and a
poll that loses the race does nothing and schedules nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from .conf import app_settings
from .exceptions import ProviderError

logger = logging.getLogger(__name__)


def get_queue() -> Any:
    """The app's RQ queue (``OPENAI_BATCHES['QUEUE']``) in ``auto`` commit mode."""
    import django_rq

    return django_rq.get_queue(app_settings.QUEUE, commit_mode="auto")


def _enqueue(
    func: Callable[..., Any], *args: Any, at: datetime | None = None, **kwargs: Any
) -> None:
    if not app_settings.USE_RQ:
        return  # a cron-only deployment: sync_batches acts on the intent in the database

    def send() -> None:
        try:
            queue = get_queue()
            if at is not None and at > timezone.now():
                queue.enqueue_at(at, func, *args, **kwargs)
            else:
                queue.enqueue(func, *args, **kwargs)
        except Exception:
            # The database already holds the intent; cron's sync_batches will act on it.
            logger.exception(
                "could not enqueue %s%s; sync_batches will pick it up", func.__name__, args
            )

    transaction.on_commit(send)


def enqueue_submit(job_id: int, *, at: datetime | None = None) -> None:
    _enqueue(submit_job, job_id, at=at)


def enqueue_poll(job_id: int, *, at: datetime | None = None, force: bool = False) -> None:
    _enqueue(poll_job, job_id, at=at, force=force)


def enqueue_ingest(job_id: int) -> None:
    _enqueue(ingest_job, job_id)


def submit_job(job_id: int) -> str:
    """Upload and create the batch; then start polling (or try again later)."""
    from . import services
    from .models import JobState

    job = services.submit(job_id)
    if job.state == JobState.SUBMITTED:
        enqueue_poll(job.pk, at=job.next_poll_at)
    elif job.state == JobState.SUBMIT_REQUESTED:
        # Unknown outcome: the next attempt looks the batch up by metadata first.
        enqueue_submit(
            job.pk, at=timezone.now() + timedelta(seconds=float(app_settings.POLL_INTERVAL))
        )
    return job.state


def poll_job(job_id: int, force: bool = False) -> str:
    """Refresh one batch (ingesting when it is terminal) and schedule the next poll."""
    from . import services
    from .models import BatchJob, JobState

    job = BatchJob.objects.filter(pk=job_id).first()
    if job is None or job.state != JobState.SUBMITTED:
        return "skipped"
    now = timezone.now()
    if not force and job.next_poll_at and job.next_poll_at > now + timedelta(seconds=1):
        return "not due"
    # Claim this poll: only one of several concurrent chains wins the compare-and-set.
    claim = now + timedelta(seconds=float(app_settings.POLL_MAX_INTERVAL))
    if not BatchJob.objects.filter(pk=job_id, next_poll_at=job.next_poll_at).update(
        next_poll_at=claim
    ):
        return "claimed elsewhere"
    try:
        job = services.refresh(job)
    except ProviderError:
        job.refresh_from_db()  # the error and the backoff are recorded on the row
    if job.state == JobState.SUBMITTED:
        enqueue_poll(job.pk, at=job.next_poll_at)
    return job.state


def ingest_job(job_id: int) -> int:
    """Ingest a terminal batch's results (a no-op when already done or in progress)."""
    from . import services

    return services.ingest(job_id)
