"""RQ job functions and enqueueing: on commit whatever the host's COMMIT_MODE, poll chains
that collapse, and submit/poll jobs that carry a batch to the end when run inline."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

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


def test_unreachable_redis_logs_one_warning_line_without_traceback(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The README calls a cron-backed deployment with Redis down normal: say why, no traceback.
    def broken() -> Any:
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(jobs, "get_queue", broken)
    caplog.set_level(logging.DEBUG, logger="openai_batches.jobs")
    job = services.request_submit(make_job(2))
    records = [r for r in caplog.records if r.name == "openai_batches.jobs"]
    assert len(records) == 1, [r.getMessage() for r in records]
    (record,) = records
    assert record.levelno == logging.WARNING
    assert record.exc_info is None and record.exc_text is None
    message = record.getMessage()
    assert "\n" not in message
    assert "Connection refused" in message and "sync_batches" in message
    assert str(job.pk) in message


def test_poll_chain_survives_any_exception_from_services(
    emu: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = jobs.get_queue()
    job = submitted_job(2)
    queue.empty()
    for job_id in queue.scheduled_job_registry.get_job_ids():
        queue.scheduled_job_registry.remove(job_id)

    def broken_refresh(*args: Any, **kwargs: Any) -> Any:
        raise TypeError("'<' not supported between instances of 'str' and 'int'")

    monkeypatch.setattr(services, "refresh", broken_refresh)
    before = timezone.now()
    assert jobs.poll_job(job.pk, force=True) == JobState.SUBMITTED  # nothing re-raised
    registry = queue.scheduled_job_registry
    (next_poll,) = [queue.fetch_job(i) for i in registry.get_job_ids()]
    assert next_poll.func_name == "openai_batches.jobs.poll_job"
    assert next_poll.args == (job.pk,)
    # Backed off: not straight away, and not later than the longest poll interval.
    at = registry.get_scheduled_time(next_poll)
    assert before + timedelta(seconds=5) < at <= timezone.now() + timedelta(seconds=11)


def test_submit_chain_survives_any_exception_from_services_with_backoff(
    monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    settings.OPENAI_BATCHES = {
        **settings.OPENAI_BATCHES,
        "POLL_INTERVAL": 10,
        "POLL_MAX_INTERVAL": 600,
        "POLL_BACKOFF": 2,
    }
    queue = jobs.get_queue()
    job = services.request_submit(make_job(2))
    queue.empty()

    def broken_submit(*args: Any, **kwargs: Any) -> Any:
        raise TypeError("unsupported operand type(s) for +: 'int' and 'NoneType'")

    monkeypatch.setattr(services, "submit", broken_submit)
    registry = queue.scheduled_job_registry
    delays = []
    for attempt in range(3):
        for job_id in registry.get_job_ids():
            registry.remove(job_id)
        start = timezone.now()
        assert jobs.submit_job(job.pk, attempt=attempt) == JobState.SUBMIT_REQUESTED
        (retry,) = [queue.fetch_job(i) for i in registry.get_job_ids()]
        assert retry.func_name == "openai_batches.jobs.submit_job"
        assert retry.args == (job.pk,) and retry.kwargs == {"attempt": attempt + 1}
        delays.append((registry.get_scheduled_time(retry) - start).total_seconds())
    assert 9 <= delays[0] <= 11 and 19 <= delays[1] <= 21 and 39 <= delays[2] <= 41


def test_submit_crash_inside_a_lease_retries_when_the_lease_ends(
    monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "SUBMIT_LEASE": 120}
    queue = jobs.get_queue()
    job = services.request_submit(make_job(2))
    queue.empty()
    claimed_at = timezone.now()

    def crash_after_claim(job_id: int) -> Any:
        BatchJob.objects.filter(pk=job_id).update(
            state=JobState.SUBMITTING, submit_attempt_at=claimed_at
        )
        raise TypeError("boom after the lease was taken")

    monkeypatch.setattr(services, "submit", crash_after_claim)
    assert jobs.submit_job(job.pk) == JobState.SUBMITTING
    registry = queue.scheduled_job_registry
    (retry,) = [queue.fetch_job(i) for i in registry.get_job_ids()]
    # A retry inside the lease would find it held and give up; after it, it takes over.
    at = registry.get_scheduled_time(retry)
    assert claimed_at + timedelta(seconds=120) <= at <= claimed_at + timedelta(seconds=125)
