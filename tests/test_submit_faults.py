"""services.submit / refresh / ingest against the emulator when the provider misbehaves.

Every call goes over real HTTP to an emulator (manual clock, instant timings). Waits are
recorded, not slept: ``services._base._sleep`` (between create attempts) and the client's own
``sleep`` (between HTTP retries, via a ``get_client`` that passes ``sleep=``). The one
thing the emulator cannot do by itself, creating a batch and *then* failing the call, is
a thin wrapper around its ``create_batch``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone

from openai_batches import services
from openai_batches.client import OpenAIClient
from openai_batches.conf import app_settings
from openai_batches.emulator import ApiError, DropConnection
from openai_batches.exceptions import (
    APIConnectionError,
    APIError,
    InvalidStateError,
    ProviderError,
)
from openai_batches.jsonl import METADATA_JOB_KEY
from openai_batches.models import BatchJob, BatchStatus, ItemState, JobState
from openai_batches.testing import EmulatorHandle, running_emulator

pytestmark = pytest.mark.django_db(transaction=True)

RETRIES = 2  # tests/settings.py: MAX_RETRIES


@dataclass
class Waits:
    """Delays the code asked for: between create attempts, and between HTTP retries."""

    service: list[float] = field(default_factory=list)
    http: list[float] = field(default_factory=list)


@pytest.fixture
def emu() -> Iterator[EmulatorHandle]:
    with running_emulator() as handle:
        yield handle


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> Waits:
    recorded = Waits()

    def get_client(account: str = "default") -> OpenAIClient:
        return OpenAIClient(app_settings.account(account), sleep=recorded.http.append)

    monkeypatch.setattr(services._base, "_sleep", recorded.service.append)
    monkeypatch.setattr(services._base, "get_client", get_client)
    return recorded


def make_job(n: int = 3) -> BatchJob:
    """A job with ``n`` chat requests whose submission was requested (intent recorded)."""
    job = services.create_job(
        name="faults",
        metadata={"purpose": "tests"},
        items=[
            {
                "custom_id": f"r{i}",
                "body": {
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": f"question {i}"}],
                },
            }
            for i in range(n)
        ],
    )
    return services.request_submit(job)


def reload(job: BatchJob) -> BatchJob:
    return BatchJob.objects.get(pk=job.pk)


def batches(emu: EmulatorHandle) -> list[dict[str, Any]]:
    return emu.emulator.list_batches()


def files(emu: EmulatorHandle) -> list[dict[str, Any]]:
    """Files we uploaded (purpose "batch"), not the batches' output and error files."""
    return [f for f in emu.emulator.state()["files"] if f["purpose"] == "batch"]


def assert_submitted_once(emu: EmulatorHandle, job: BatchJob) -> dict[str, Any]:
    """The job is submitted and the emulator holds exactly one batch: the job's."""
    job = reload(job)
    assert job.state == JobState.SUBMITTED, job.last_error
    (batch,) = batches(emu)
    assert job.provider_batch_id == batch["id"]
    assert job.input_file_id == batch["input_file_id"]
    assert batch["metadata"][METADATA_JOB_KEY] == str(job.uuid)
    assert batch["metadata"]["purpose"] == "tests"
    assert set(job.items.values_list("state", flat=True)) == {ItemState.SUBMITTED}
    return batch


# -- unknown outcomes of POST /v1/batches ------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(
            lambda: ApiError(500, "The server had an error.", type="server_error"), id="500"
        ),
        pytest.param(DropConnection, id="dropped"),
    ],
)
def test_create_that_failed_after_creating_adopts_the_existing_batch(
    emu: EmulatorHandle, waits: Waits, monkeypatch: pytest.MonkeyPatch, failure: Any
) -> None:
    real_create = emu.emulator.create_batch
    creates: list[str] = []

    def create_then_fail(payload: Any) -> dict[str, Any]:
        batch = real_create(payload)
        creates.append(batch["id"])
        if len(creates) == 1:
            raise failure()
        return batch

    monkeypatch.setattr(emu.emulator, "create_batch", create_then_fail)
    job = make_job()
    services.submit(job)
    batch = assert_submitted_once(emu, job)
    assert creates == [batch["id"]]  # found by metadata, never created again
    assert files(emu) == [emu.emulator.get_file(batch["input_file_id"])]


def test_create_timeout_whose_batch_landed_is_adopted(emu: EmulatorHandle, waits: Waits) -> None:
    """The create outlives the client's timeout; the batch exists by the time the lookup
    by metadata is answered (the list call is slow too)."""
    job = make_job()
    emu.inject_fault("POST", "/v1/batches", "slow", delay=0.7)
    emu.inject_fault("GET", "/v1/batches", "slow", delay=0.45)
    with override_settings(OPENAI_BATCHES={**app_settings.user_settings, "TIMEOUT": 0.5}):
        services.submit(job)
    assert_submitted_once(emu, job)


def test_create_timeout_whose_batch_lands_during_the_backoff_is_not_created_twice(
    emu: EmulatorHandle, waits: Waits, monkeypatch: pytest.MonkeyPatch
) -> None:
    """POST /v1/batches times out on our side at 0.4 s; the provider commits the batch at
    0.75 s, within the 0.375-0.5 s backoff the service waits before its next create. The
    service must look the batch up after that wait, not only before it, or the provider
    ends up with two batches for one job (both of them run and billed)."""

    def backoff(seconds: float) -> None:
        waits.service.append(seconds)
        deadline = time.monotonic() + 3
        # Time passes as it would in the real backoff: the in-flight create lands.
        while not batches(emu) and time.monotonic() < deadline:
            time.sleep(0.02)

    monkeypatch.setattr(services._base, "_sleep", backoff)
    job = make_job()
    emu.inject_fault("POST", "/v1/batches", "slow", delay=0.75)
    with override_settings(OPENAI_BATCHES={**app_settings.user_settings, "TIMEOUT": 0.4}):
        services.submit(job)
    assert len(batches(emu)) == 1, [b["id"] for b in batches(emu)]
    assert_submitted_once(emu, job)


@pytest.mark.parametrize("kind", ["status", "drop"])
def test_create_failure_that_created_nothing_is_tried_again(
    emu: EmulatorHandle, waits: Waits, kind: str
) -> None:
    job = make_job()
    emu.inject_fault("POST", "/v1/batches", kind, status=500)
    services.submit(job)
    assert_submitted_once(emu, job)
    assert len(waits.service) == 1  # one backoff before the second create
    assert waits.http == []
    assert len(files(emu)) == 1


def test_create_failing_every_time_goes_back_to_requested(
    emu: EmulatorHandle, waits: Waits
) -> None:
    job = make_job()
    emu.inject_fault("POST", "/v1/batches", "status", status=503, count=10)
    services.submit(job)
    (fault,) = emu.emulator.state()["faults"]
    assert 10 - fault["count"] == services.submission._CREATE_ATTEMPTS  # then it gives up for now
    job = reload(job)
    assert job.state == JobState.SUBMIT_REQUESTED
    assert job.submit_attempt_at is None
    assert "503" in job.last_error
    assert job.input_file_id  # kept: the next attempt reconciles before uploading again
    assert batches(emu) == []
    assert len(waits.service) >= services.submission._CREATE_ATTEMPTS - 1  # backoff between creates
    assert waits.http == []  # POST /batches is never retried by the client
    # The fault is gone: the next attempt looks first, then creates, reusing the upload.
    emu.emulator.clear_faults()
    services.submit(job)
    batch = assert_submitted_once(emu, job)
    assert batch["input_file_id"] == job.input_file_id
    assert len(files(emu)) == 1


def test_cannot_find_file_right_after_upload_is_retried(emu: EmulatorHandle, waits: Waits) -> None:
    job = make_job()
    emu.inject_fault("POST", "/v1/batches", "file_not_found", count=2)
    services.submit(job)
    assert_submitted_once(emu, job)
    assert len(waits.service) == 2
    assert len(files(emu)) == 1


def test_429_on_create_waits_as_long_as_the_provider_asks(
    emu: EmulatorHandle, waits: Waits
) -> None:
    """Nothing was created, so creating again is safe, but not before ``retry-after``."""
    job = make_job()
    emu.inject_fault("POST", "/v1/batches", "status", status=429, retry_after=3)
    services.submit(job)
    assert_submitted_once(emu, job)
    assert waits.service == [3.0]


def test_a_retry_after_too_long_to_wait_holds_every_attempt_until_it_has_passed(
    emu: EmulatorHandle, waits: Waits, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 429 asking for an hour is not waited out in the call, and neither the queue,
    sync_batches nor a direct call asks again before the hour is up."""
    from openai_batches import jobs

    job = make_job()
    emu.inject_fault("POST", "/v1/batches", "status", status=429, retry_after=3600)
    before = timezone.now()
    job = services.submit(job)
    assert job.state == JobState.SUBMIT_REQUESTED
    assert job.submit_not_before is not None
    assert job.submit_not_before >= before + timedelta(seconds=3600)
    assert waits.service == []  # not slept on in the call
    # The fault is spent: any attempt now would create the batch. None is made.
    assert services.submit(job).submit_attempt_at is None
    report = services.sync()
    assert report.errors == [] and report.submitted == []
    scheduled: list[Any] = []
    monkeypatch.setattr(jobs, "enqueue_submit", lambda pk, at=None, attempt=0: scheduled.append(at))
    jobs.submit_job(job.pk)
    assert scheduled and scheduled[0] >= job.submit_not_before
    assert batches(emu) == []
    # Once the hour has passed, the next attempt goes through, once.
    BatchJob.objects.filter(pk=job.pk).update(submit_not_before=timezone.now())
    services.submit(job)
    assert reload(job).submit_not_before is None
    assert_submitted_once(emu, job)


def test_a_refused_create_fails_the_submission_and_deletes_the_upload(
    emu: EmulatorHandle, waits: Waits
) -> None:
    job = make_job()
    emu.inject_fault("POST", "/v1/batches", "status", status=400)
    services.submit(job)
    job = reload(job)
    assert job.state == JobState.SUBMIT_FAILED
    assert job.last_error.startswith("APIError: POST /batches answered 400")
    assert "Emulated error 400" in job.last_error
    assert job.last_error_at is not None
    assert job.input_file_id == ""
    assert job.provider_batch_id == ""
    assert batches(emu) == []
    assert files(emu) == []  # the orphan upload was deleted at the provider
    assert waits.service == []
    # A failed submission can be requested again, and then goes through.
    services.request_submit(job)
    services.submit(job)
    assert_submitted_once(emu, job)


def test_an_upload_failing_with_5xx_goes_back_to_requested(
    emu: EmulatorHandle, waits: Waits
) -> None:
    job = make_job()
    emu.inject_fault("POST", "/v1/files", "status", status=502, count=RETRIES + 1)
    services.submit(job)
    job = reload(job)
    assert job.state == JobState.SUBMIT_REQUESTED
    assert job.submit_attempt_at is None
    assert "502" in job.last_error
    assert job.input_file_id == ""
    assert job.provider_batch_id == ""
    assert batches(emu) == []
    assert files(emu) == []
    assert len(waits.http) == RETRIES
    assert set(job.items.values_list("state", flat=True)) == {ItemState.PENDING}
    services.submit(job)
    assert_submitted_once(emu, job)


def test_submit_twice_in_a_row_creates_one_batch(emu: EmulatorHandle, waits: Waits) -> None:
    job = make_job()
    first = services.submit(job)
    second = services.submit(job)
    assert first.provider_batch_id == second.provider_batch_id
    assert_submitted_once(emu, job)
    assert len(files(emu)) == 1
    with pytest.raises(InvalidStateError):
        services.request_submit(job)


# -- refresh and ingest ------------------------------------------------------------------


def test_a_poll_error_is_recorded_and_backs_off_without_touching_provider_state(
    emu: EmulatorHandle, waits: Waits
) -> None:
    job = services.submit(make_job())
    before = reload(job)
    assert before.provider_status == BatchStatus.VALIDATING
    provider_fields = (
        "provider_status",
        "request_count_total",
        "request_count_completed",
        "request_count_failed",
        "output_file_id",
        "ingested_at",
        "state",
    )
    emu.inject_fault("GET", "/v1/batches/*", "status", status=500, count=2 * (RETRIES + 1))
    intervals = []
    for _ in range(2):
        started = timezone.now()
        with pytest.raises(ProviderError) as info:
            services.refresh(job)
        assert isinstance(info.value, APIError) and info.value.status_code == 500
        after = reload(job)
        assert "500" in after.last_error
        assert after.last_error_at is not None and after.last_error_at >= started
        assert after.last_polled_at is not None and after.last_polled_at >= started
        for name in provider_fields:
            assert getattr(after, name) == getattr(before, name), name
        assert after.next_poll_at is not None
        assert after.next_poll_at >= started + timedelta(seconds=after.poll_interval)
        intervals.append(after.poll_interval)
    base = float(app_settings.POLL_INTERVAL)
    backoff = float(app_settings.POLL_BACKOFF)
    assert intervals == [base * backoff, base * backoff * backoff]
    assert len(waits.http) == 2 * RETRIES
    # The provider answers again: the job moves on and is ingested.
    done = services.refresh(job)
    assert done.state == JobState.FINISHED
    assert done.provider_status == BatchStatus.COMPLETED


def test_a_truncated_output_download_leaves_the_job_uningested_until_the_next_refresh(
    emu: EmulatorHandle, waits: Waits
) -> None:
    job = services.submit(make_job(n=40))
    emu.inject_fault("GET", "/v1/files/*/content", "truncate", count=RETRIES + 1)
    with pytest.raises(APIConnectionError):
        services.refresh(job)
    broken = reload(job)
    assert broken.provider_status == BatchStatus.COMPLETED
    assert broken.state == JobState.SUBMITTED
    assert broken.ingested_at is None
    assert broken.last_error.startswith("APIConnectionError:")
    assert "content" in broken.last_error
    assert set(broken.items.values_list("state", flat=True)) == {ItemState.SUBMITTED}
    assert not broken.items.exclude(response=None).exists()
    assert len(waits.http) == RETRIES

    done = services.refresh(job)
    assert done.state == JobState.FINISHED
    assert done.ingested_at is not None
    items = list(done.items.order_by("custom_id"))
    assert len(items) == 40
    assert {item.state for item in items} == {ItemState.SUCCEEDED}
    assert all(item.response and item.status_code == 200 for item in items)
    assert done.input_tokens == sum(item.input_tokens for item in items) > 0
