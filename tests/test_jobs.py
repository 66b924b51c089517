"""RQ job functions and enqueueing: on commit whatever the host's COMMIT_MODE, poll chains
that collapse, and submit/poll jobs that carry a batch to the end when run inline."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import transaction
from django.test import override_settings

from openai_batches import jobs, services
from openai_batches.models import BatchJob, JobState
from openai_batches.testing import EmulatorHandle, running_emulator
from tests.lifecycle_helpers import make_job, submitted_job

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def emu() -> Iterator[EmulatorHandle]:
    with running_emulator() as handle:
        yield handle


@pytest.mark.parametrize("mode", ["auto", "on_db_commit", "request_finished"])
def test_submit_is_enqueued_only_after_commit_whatever_the_commit_mode(mode: str) -> None:
    with override_settings(RQ={"COMMIT_MODE": mode}):
        queue = jobs.get_queue()
        queue.empty()
        job = make_job(2)
        with transaction.atomic():
            services.request_submit(job)
            assert queue.count == 0  # not before the intent is committed
        assert [(j.func_name, j.args) for j in queue.jobs] == [
            ("openai_batches.jobs.submit_job", (job.pk,))
        ]


def test_rolled_back_intent_enqueues_nothing() -> None:
    queue = jobs.get_queue()
    queue.empty()
    job = make_job(2)
    with pytest.raises(RuntimeError), transaction.atomic():
        services.request_submit(job)
        raise RuntimeError("the view failed after asking to submit")
    assert queue.count == 0
    job.refresh_from_db()
    assert job.state == JobState.DRAFT


def test_unreachable_redis_does_not_lose_the_intent(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> Any:
        raise ConnectionError("redis is down")

    monkeypatch.setattr(jobs, "get_queue", broken)
    job = services.request_submit(make_job(2))
    assert (
        BatchJob.objects.get(pk=job.pk).state == JobState.SUBMIT_REQUESTED
    )  # sync_batches picks it up


def test_submit_job_then_poll_job_finish_the_batch(emu: EmulatorHandle) -> None:
    queue = jobs.get_queue()
    queue.empty()
    job = services.request_submit(make_job(3))
    assert jobs.submit_job(job.pk) == JobState.SUBMITTED
    scheduled = queue.scheduled_job_registry.get_job_ids()
    assert len(scheduled) == 1  # the first poll, at next_poll_at
    assert jobs.poll_job(job.pk, force=True) == JobState.FINISHED
    assert BatchJob.objects.get(pk=job.pk).items.filter(state="succeeded").count() == 3


def test_duplicate_poll_chains_collapse(emu: EmulatorHandle, settings: Any) -> None:
    settings.OPENAI_BATCHES = {
        **settings.OPENAI_BATCHES,
        "POLL_INTERVAL": 60,
        "POLL_MAX_INTERVAL": 600,
    }
    emu.stall_request("req-0")
    job = submitted_job(2)
    BatchJob.objects.filter(pk=job.pk).update(next_poll_at=None)
    assert jobs.poll_job(job.pk) == JobState.SUBMITTED  # due: it polls and reschedules
    assert jobs.poll_job(job.pk) == "not due"  # a second chain waking now does nothing


def test_poll_job_skips_jobs_that_are_not_active() -> None:
    job = make_job(1)
    assert jobs.poll_job(job.pk) == "skipped"
    assert jobs.poll_job(999_999) == "skipped"


def test_cron_only_deployments_enqueue_nothing(settings: Any) -> None:
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "USE_RQ": False}
    queue = jobs.get_queue()
    queue.empty()
    job = services.request_submit(make_job(1))
    assert queue.count == 0
    assert BatchJob.objects.get(pk=job.pk).state == JobState.SUBMIT_REQUESTED
