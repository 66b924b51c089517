"""The app's background work as Django Tasks (``OPENAI_BATCHES['RUNNER'] = "tasks"``).

Django 6 ships the Tasks framework as ``django.tasks``; on Django 5.2 the ``django-tasks``
backport provides the same API. Either way the host configures ``TASKS`` with a backend
that has real workers and supports ``run_after`` (scheduled polls), such as
``django-tasks-db``'s ``DatabaseBackend`` with ``manage.py db_worker``.

Each task is a thin wrapper over the job functions in :mod:`openai_batches.jobs`, which do
the work and enqueue what comes next through the same runner. This module is imported only
when the runner is ``"tasks"``; it reads ``QUEUE`` when it is imported, because the Tasks
framework checks a task's queue against the backend's ``QUEUES`` when it is defined.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from .conf import app_settings
from .jobs import tasks_framework

_task = tasks_framework().task


@_task(queue_name=app_settings.QUEUE)
def submit_job(job_id: int, attempt: int = 0) -> str:
    """:func:`openai_batches.jobs.submit_job` as a Task."""
    from . import jobs

    return jobs.submit_job(job_id, attempt=attempt)


@_task(queue_name=app_settings.QUEUE)
def poll_job(job_id: int, force: bool = False) -> str:
    """:func:`openai_batches.jobs.poll_job` as a Task."""
    from . import jobs

    return jobs.poll_job(job_id, force=force)


@_task(queue_name=app_settings.QUEUE)
def ingest_job(job_id: int) -> int:
    """:func:`openai_batches.jobs.ingest_job` as a Task."""
    from . import jobs

    return jobs.ingest_job(job_id)


@_task(queue_name=app_settings.QUEUE)
def admit_job(job_id: int, attempt: int = 0) -> str:
    """:func:`openai_batches.jobs.admit_job` as a Task."""
    from . import jobs

    return jobs.admit_job(job_id, attempt=attempt)


TASKS: dict[str, Any] = {
    "submit_job": submit_job,
    "poll_job": poll_job,
    "ingest_job": ingest_job,
    "admit_job": admit_job,
}


def enqueue(
    name: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    *,
    run_after: datetime | None = None,
) -> Any:
    """Enqueue the task ``name`` now (or at ``run_after``) on the app's queue.

    Called by :mod:`openai_batches.jobs` from its ``on_commit`` hook, never directly inside a
    transaction that might roll back. Returns the backend's ``TaskResult``.
    """
    task = TASKS[name].using(queue_name=app_settings.QUEUE, run_after=run_after)
    return task.enqueue(*args, **kwargs)
