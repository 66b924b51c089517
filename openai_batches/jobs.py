"""Background work: the job functions (they take primary keys, re-read rows and lock them)
and the enqueue helpers that hand them to the configured runner.

``OPENAI_BATCHES['RUNNER']`` chooses where background work runs: ``"rq"`` (django-rq, the
default), ``"tasks"`` (Django's Tasks framework, see :mod:`openai_batches.tasks`) or
``"none"`` (nothing is enqueued; cron's ``sync_batches`` does everything). The deprecated
``USE_RQ`` still works when ``RUNNER`` is not set, with a ``DeprecationWarning``.

Every enqueue happens after the surrounding transaction commits, whatever the runner and
whatever the host's ``RQ['COMMIT_MODE']``: we register our own ``on_commit`` hook (and hand
RQ a queue in ``auto`` mode), so a worker never looks for a row that is not committed yet,
and a ``request_finished`` commit mode (which never fires inside a worker) cannot swallow a
job. If the queue is unreachable the intent is still in the database and ``sync_batches``
picks it up.

Polls are scheduled for later (RQ's ``enqueue_at``, so run RQ workers with
``--with-scheduler``; a Task's ``run_after``). Duplicate poll chains collapse: a poll claims
the job's ``next_poll_at`` with a compare-and-set, and a poll that loses the race does
nothing and schedules nothing. No exception from ``services`` ends a chain: the job
functions log it, and schedule the next poll or submission attempt with backoff.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from collections.abc import Callable
from datetime import datetime, timedelta
from types import ModuleType
from typing import Any, Literal

from django.db import transaction
from django.utils import timezone

from .conf import SETTING_NAME, app_settings
from .exceptions import ConfigurationError, ProviderError

logger = logging.getLogger(__name__)

Runner = Literal["rq", "tasks", "none"]
RUNNERS: tuple[Runner, ...] = ("rq", "tasks", "none")


def runner() -> Runner:
    """The runner background work goes to: ``RUNNER``, else the deprecated ``USE_RQ``.

    Raises :class:`~openai_batches.exceptions.ConfigurationError` for an unknown value.
    """
    value = app_settings.RUNNER
    if value is None:
        # USE_RQ predates RUNNER; False meant what RUNNER "none" means now.
        resolved: Runner = "rq" if app_settings.USE_RQ else "none"
        if "USE_RQ" in app_settings.user_settings:
            warnings.warn(
                f"{SETTING_NAME}['USE_RQ'] is deprecated: replace it with "
                f'"RUNNER": "{resolved}" (or "tasks" for Django\'s Tasks framework).',
                DeprecationWarning,
                stacklevel=2,
            )
        return resolved
    for known in RUNNERS:
        if value == known:
            return known
    raise ConfigurationError(
        f"{SETTING_NAME}['RUNNER'] is {value!r}; use one of: "
        + ", ".join(repr(r) for r in RUNNERS)
        + "."
    )


def tasks_framework() -> ModuleType:
    """``django.tasks`` (Django 6+) or the ``django_tasks`` backport (Django 5.2).

    Importing it defines no task, so checks can look at the backend without the task
    definitions (:mod:`openai_batches.tasks`) being validated against it.
    """
    for name in ("django.tasks", "django_tasks"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ConfigurationError(
        f"{SETTING_NAME}['RUNNER'] is 'tasks' but Django's Tasks framework is not available: "
        "use Django 6+, or install the django-tasks backport on Django 5.2."
    )


def get_queue() -> Any:
    """The app's RQ queue (``OPENAI_BATCHES['QUEUE']``) in ``auto`` commit mode."""
    import django_rq

    return django_rq.get_queue(app_settings.QUEUE, commit_mode="auto")


def _enqueue(
    func: Callable[..., Any], *args: Any, at: datetime | None = None, **kwargs: Any
) -> None:
    kind = runner()
    if kind == "none":
        return  # a cron-only deployment: sync_batches acts on the intent in the database

    def send() -> None:
        when = at if at is not None and at > timezone.now() else None
        try:
            if kind == "tasks":
                from .tasks import enqueue as enqueue_task

                enqueue_task(func.__name__, args, kwargs, run_after=when)
            else:
                queue = get_queue()
                if when is not None:
                    queue.enqueue_at(when, func, *args, **kwargs)
                else:
                    queue.enqueue(func, *args, **kwargs)
        except Exception as err:
            # Normal for a deployment whose queue is down: the database already holds the
            # intent and cron's sync_batches acts on it, so one line, not a traceback.
            logger.warning(
                "could not enqueue %s for job %s on %s (%s: %s); sync_batches will pick it up",
                func.__name__,
                args[0] if args else "?",
                kind,
                type(err).__name__,
                str(err).replace("\n", " "),
            )

    transaction.on_commit(send)


def enqueue_submit(job_id: int, *, at: datetime | None = None, attempt: int = 0) -> None:
    if attempt:
        _enqueue(submit_job, job_id, at=at, attempt=attempt)
    else:
        _enqueue(submit_job, job_id, at=at)


def enqueue_poll(job_id: int, *, at: datetime | None = None, force: bool = False) -> None:
    _enqueue(poll_job, job_id, at=at, force=force)


def enqueue_admit(job_id: int, *, at: datetime | None = None, attempt: int = 0) -> None:
    _enqueue(admit_job, job_id, at=at, attempt=attempt)


def enqueue_ingest(job_id: int) -> None:
    _enqueue(ingest_job, job_id)


def _retry_delay(attempt: int) -> timedelta:
    """``POLL_INTERVAL`` growing by ``POLL_BACKOFF`` per attempt, capped at the maximum."""
    first = float(app_settings.POLL_INTERVAL)
    seconds = min(
        first * float(app_settings.POLL_BACKOFF) ** attempt,
        float(app_settings.POLL_MAX_INTERVAL),
    )
    return timedelta(seconds=max(seconds, first))


def submit_job(job_id: int, attempt: int = 0) -> str:
    """Upload and create the batch; then start polling (or try again later).

    ``attempt`` counts the retries of an unknown outcome or an unexpected error, for the
    backoff. Never raises: a failure is logged and the next attempt scheduled.
    """
    from . import services
    from .models import BatchJob, JobState

    crashed = False
    try:
        job = services.submit(job_id)
    except Exception:
        # Whatever broke (a bug, a bad row), the chain must go on: an RQ or Tasks failure
        # would hide the job, and sync_batches would be the only way out.
        logger.exception("submitting job %s failed; retrying with backoff", job_id)
        crashed = True
        found = BatchJob.objects.filter(pk=job_id).first()
        if found is None:
            return "skipped"
        job = found
    if job.state == JobState.SUBMITTED or job.batches.active().exists():
        # Parts at the provider are polled whatever else the job waits for.
        enqueue_poll(job.pk, at=job.next_poll_at)
    if job.state == JobState.SUBMIT_REQUESTED:
        # Unknown outcome: the next attempt looks the batch up by metadata first. A provider
        # that asked for a long wait (``submit_not_before``) is not asked again before it.
        at = timezone.now() + _retry_delay(attempt)
        if job.submit_not_before is not None:
            at = max(at, job.submit_not_before)
        enqueue_submit(job.pk, at=at, attempt=attempt + 1)
    elif job.state == JobState.WAITING_QUOTA:
        # In line for its model's token budget: a batch that ends moves the line (the poll
        # that sees it end). This later look is the safety net for room that comes from
        # elsewhere (a limit raised in settings).
        enqueue_admit(job.pk, at=timezone.now() + _retry_delay(attempt + 1))
    elif job.state == JobState.SUBMITTING and crashed and job.submit_attempt_at is not None:
        # Our attempt died holding the lease: a retry inside it would find the job held and
        # give up, so come back once it has run out. (Without a crash, another worker holds
        # the lease and carries the job on.)
        lease = timedelta(seconds=float(app_settings.SUBMIT_LEASE) + 1)
        enqueue_submit(job.pk, at=job.submit_attempt_at + lease, attempt=attempt + 1)
    return job.state


def poll_job(job_id: int, force: bool = False) -> str:
    """Refresh one batch (ingesting when it is terminal) and schedule the next poll.

    Never raises for a failed poll: the error is logged (and recorded on the job by
    ``services``) and the next poll is scheduled, at the claimed ``next_poll_at`` at the
    latest, so the chain goes on.
    """
    from . import services
    from .models import BatchJob

    job = BatchJob.objects.filter(pk=job_id).first()
    if job is None or not job.batches.active().exists():
        # Nothing at the provider to ask about (not submitted yet, or every part ingested;
        # a part planned meanwhile starts its own chain when it is submitted).
        return "skipped"
    now = timezone.now()
    if not force and job.next_poll_at and job.next_poll_at > now + timedelta(seconds=1):
        return "not due"
    # Claim this poll: only one of several concurrent chains wins the compare-and-set. The
    # claim is also the backoff when the poll fails without recording one.
    claim = now + timedelta(seconds=float(app_settings.POLL_MAX_INTERVAL))
    if not BatchJob.objects.filter(pk=job_id, next_poll_at=job.next_poll_at).update(
        next_poll_at=claim
    ):
        return "claimed elsewhere"
    try:
        job = services.refresh(job)
    except Exception as err:
        if not isinstance(err, ProviderError):  # a provider error is recorded on the row
            logger.exception("polling job %s failed; the next poll is scheduled", job_id)
        found = BatchJob.objects.filter(pk=job_id).first()
        if found is None:
            return "skipped"  # deleted meanwhile: nothing left to poll
        job = found
    if job.batches.active().exists():
        enqueue_poll(job.pk, at=job.next_poll_at)
    return job.state


def admit_job(job_id: int, attempt: int = 0) -> str:
    """Move the line of a waiting job's budget (admitted jobs get their submit enqueued);
    look again later, backing off, while the job still waits."""
    from . import services
    from .models import BatchJob, JobState

    job = BatchJob.objects.filter(pk=job_id).first()
    if job is None or job.state != JobState.WAITING_QUOTA:
        return "skipped"
    services.admit_waiting(job.account, job.model)
    job.refresh_from_db()
    if job.state == JobState.WAITING_QUOTA:
        enqueue_admit(job.pk, at=timezone.now() + _retry_delay(attempt + 1), attempt=attempt + 1)
    return job.state


def ingest_job(job_id: int) -> int:
    """Ingest a terminal batch's results (a no-op when already done or in progress)."""
    from . import services

    return services.ingest(job_id)
