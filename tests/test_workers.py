"""The lifecycle on real RQ worker processes, PostgreSQL and Redis (CI runs these).

Two ``rqworker --with-scheduler`` processes work the app's queue against the emulator over
HTTP; a burst worker whose work-horses SIGKILL themselves at a checkpoint shows what RQ and
cron make of a worker lost mid-job. These tests need ``DATABASE_URL`` (PostgreSQL) and ``REDIS_URL``: off CI they are
skipped without them; in CI a missing service fails the run (see ``conftest.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from openai_batches import jobs, services
from openai_batches.models import BatchJob, ItemState, JobState
from openai_batches.testing import EmulatorHandle, running_emulator
from tests.lifecycle_helpers import make_job, submitted_job
from tests.testapp.models import ResultLog
from tests.worker_helpers import rq_workers

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def emu() -> Iterator[EmulatorHandle]:
    with running_emulator() as handle:
        yield handle


def _env(emu: EmulatorHandle) -> dict[str, str]:
    db = connection.settings_dict
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        # The workers must use the test database pytest-django created, not the dev one.
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "OPENAI_BASE_URL": emu.base_url,
        "PYTHONPATH": str(REPO),
    }


@pytest.fixture
def workers(emu: EmulatorHandle, tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    env = _env(emu)
    with rq_workers(env, tmp_path, "test") as procs:
        yield procs


def wait_for(predicate: Callable[[], bool], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError("timed out waiting")


def test_a_thousand_requests_through_real_workers(
    emu: EmulatorHandle, workers: list[subprocess.Popen[bytes]]
) -> None:
    job = make_job(1000)
    services.request_submit(job)  # enqueues submit_job after commit
    wait_for(lambda: BatchJob.objects.get(pk=job.pk).state == JobState.FINISHED)
    job.refresh_from_db()
    assert job.items.filter(state=ItemState.SUCCEEDED).count() == 1000
    wait_for(lambda: not job.items.filter(announced=False).exists(), timeout=30)
    assert ResultLog.objects.filter(job_id=job.pk).count() == 1000
    assert job.last_error == ""


def test_concurrent_submits_from_two_workers_create_one_batch(
    emu: EmulatorHandle, workers: list[subprocess.Popen[bytes]]
) -> None:
    # A slow upload keeps the first worker busy while the second one arrives.
    emu.inject_fault("POST", "/v1/files", "slow", delay=2.0, count=5)
    job = make_job(20)
    queue = jobs.get_queue()
    services.request_submit(job)
    queue.enqueue(jobs.submit_job, job.pk)
    queue.enqueue(jobs.submit_job, job.pk)
    wait_for(lambda: BatchJob.objects.get(pk=job.pk).state == JobState.FINISHED)
    assert len(emu.list_batches()) == 1
    assert len(emu.list_files(purpose="batch")["data"]) == 1
    wait_for(lambda: not job.items.filter(announced=False).exists(), timeout=30)
    assert ResultLog.objects.filter(job_id=job.pk).count() == 20


def test_worker_command_and_webhook_refresh_race_without_double_signals(
    emu: EmulatorHandle, workers: list[subprocess.Popen[bytes]]
) -> None:
    job = submitted_job(3000)
    env = _env(emu)
    # A webhook-triggered refresh, a scheduled poll and cron's command all at once.
    services.request_refresh(job)
    jobs.enqueue_poll(job.pk, force=True)
    cron = subprocess.run(
        [sys.executable, "-m", "django", "sync_batches", "--no-submit", "-v", "0"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert cron.returncode == 0, cron.stderr
    wait_for(lambda: BatchJob.objects.get(pk=job.pk).state == JobState.FINISHED)
    wait_for(lambda: not job.items.filter(announced=False).exists(), timeout=60)
    job.refresh_from_db()
    # A second delivery would have hit the unique constraint and been recorded as an error.
    assert job.last_error == ""
    assert ResultLog.objects.filter(job_id=job.pk).count() == 3000


@pytest.mark.parametrize("checkpoint", ["submit.uploaded", "ingest.before_commit"])
def test_a_work_horse_killed_mid_job_is_recovered_by_cron(
    emu: EmulatorHandle, tmp_path: Path, checkpoint: str
) -> None:
    """An RQ work-horse SIGKILLed in the middle of submit_job (or of the poll that ingests):
    RQ records the job as failed, the worker survives, and cron's next pass finishes the
    work with one batch, one upload and every result announced once."""
    from rq.registry import FailedJobRegistry

    from tests.procs.helpers import assert_invariants, recover
    from tests.procs.receivers import connect, disconnect

    queue = jobs.get_queue()
    if checkpoint.startswith("submit."):
        job = make_job(12)
        services.request_submit(job)  # enqueues submit_job on commit
    else:
        job = submitted_job(12)
        queue.empty()  # the submit_job request_submit enqueued: submitted_job already ran it
        jobs.enqueue_poll(job.pk, force=True)  # what a webhook's request_refresh enqueues
    assert queue.count == 1
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.run(
            [sys.executable, "-m", "tests.procs.worker", queue.name, "--crash-at", checkpoint],
            env=_env(emu),
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=120,
            check=False,
        )
    text = log.read_text(errors="replace")
    assert worker.returncode == 0, text[-4000:]  # the worker itself survives its horse
    assert len(FailedJobRegistry(queue=queue)) == 1, text[-4000:]  # RQ saw the horse die
    connect()
    try:
        recover(emu, [job.pk])
        assert_invariants(emu, job.pk)
    finally:
        disconnect()
