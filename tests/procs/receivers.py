"""Receivers the crash and race suites connect in the test process and in every child.

``result_received`` already has the test app's receiver (a ``ResultLog`` row per call,
unique per job and custom_id). This adds the same for ``job_finished``: a ``ResultLog`` row
with custom_id :data:`FINISHED_MARK`, so a second delivery that commits is a unique-constraint
error recorded on the job, never a silent duplicate. Every call of either signal, committed
or not, is also appended to ``$PROC_CALLS_FILE``: the count of side effects a receiver that
sends an email or calls a URL (which no rollback undoes) would have made.
"""

from __future__ import annotations

import os
from typing import Any

from openai_batches.signals import job_finished, result_received

FINISHED_MARK = "<job_finished>"


def _note(kind: str, job_id: int, key: str) -> None:
    path = os.environ.get("PROC_CALLS_FILE")
    if not path:
        return
    # One short O_APPEND write per call is atomic between processes on Linux.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{os.getpid()} {kind} {job_id} {key}\n".encode())
    finally:
        os.close(fd)


def on_finished(*, job: Any, **kwargs: Any) -> None:
    from tests.testapp.models import ResultLog

    _note("finished", job.pk, FINISHED_MARK)
    ResultLog.objects.create(job_id=job.pk, custom_id=FINISHED_MARK, succeeded=True)


def on_result(*, job: Any, custom_id: str, **kwargs: Any) -> None:
    _note("result", job.pk, custom_id)


def connect() -> None:
    job_finished.connect(on_finished, dispatch_uid="tests.procs.on_finished")
    result_received.connect(on_result, dispatch_uid="tests.procs.on_result")


def disconnect() -> None:
    job_finished.disconnect(dispatch_uid="tests.procs.on_finished")
    result_received.disconnect(dispatch_uid="tests.procs.on_result")
