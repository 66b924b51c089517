"""One job of any size: splitting into provider batches, retries with history.

Everything here runs against the emulator over HTTP through the real services: a job
larger than one batch is cut into parts, each its own provider batch, carried to
completion as one job; requests that failed for a transient reason are sent again in a
follow-up batch (never the ones that succeeded, never the ones the model refused); every
request's history is kept as attempts, and each result is announced once, when final.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from openai_batches import services, signals
from openai_batches.exceptions import InvalidStateError, LimitExceeded, ValidationError
from openai_batches.models import (
    BatchJob,
    BatchReason,
    BatchStatus,
    ItemState,
    JobState,
    ProviderBatch,
    RequestAttempt,
    RequestItem,
)
from openai_batches.testing import EmulatorHandle, running_emulator
from tests.lifecycle_helpers import chat_items, make_job

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def emu() -> Iterator[EmulatorHandle]:
    with running_emulator() as handle:
        yield handle


@pytest.fixture
def announced() -> Iterator[Counter[str]]:
    """custom_id -> how many times result_received fired for it."""
    seen: Counter[str] = Counter()

    def receiver(custom_id: str, **kwargs: Any) -> None:
        seen[custom_id] += 1

    signals.result_received.connect(receiver)
    yield seen
    signals.result_received.disconnect(receiver)


@pytest.fixture
def finished() -> Iterator[list[dict[str, Any]]]:
    calls: list[dict[str, Any]] = []

    def receiver(**kwargs: Any) -> None:
        calls.append(kwargs)

    signals.job_finished.connect(receiver)
    yield calls
    signals.job_finished.disconnect(receiver)


def limits(settings: Any, **values: Any) -> None:
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, **values}


def run_to_end(job: Any, emu: EmulatorHandle, *, rounds: int = 6) -> Any:
    """Submit and refresh until the job is finished (each retry is a new round)."""
    for _ in range(rounds):
        job.refresh_from_db()
        if job.state == JobState.FINISHED:
            return job
        if job.state == JobState.SUBMIT_REQUESTED:
            services.submit(job)
        emu.emulator.advance(86_400 + 60)
        job.refresh_from_db()
        if job.batches.active().exists():
            services.refresh(job)
    job.refresh_from_db()
    return job


def input_ids(emu: EmulatorHandle, part: ProviderBatch) -> list[str]:
    content = emu.emulator.file_content(part.input_file_id)
    return [json.loads(line)["custom_id"] for line in content.splitlines()]


def test_a_job_larger_than_one_batch_is_split_and_carried_to_completion(
    emu: EmulatorHandle, settings: Any, announced: Counter[str], finished: list[dict[str, Any]]
) -> None:
    limits(settings, MAX_REQUESTS_PER_BATCH=5_000)
    job = make_job(items=chat_items(12_000))
    services.request_submit(job)
    parts = list(job.batches.order_by("part"))
    assert [(p.part, p.item_count, p.reason) for p in parts] == [
        (1, 5_000, BatchReason.FIRST),
        (2, 5_000, BatchReason.SPLIT),
        (3, 2_000, BatchReason.SPLIT),
    ]
    job = services.submit(job)
    assert job.state == JobState.SUBMITTED
    parts = list(job.batches.order_by("part"))
    assert len({p.provider_batch_id for p in parts}) == 3
    assert len(emu.emulator.list_batches()) == 3
    # Each batch names its job and part, so a crashed submit finds each one again.
    metadata = sorted(b["metadata"]["openai_batches_job"] for b in emu.emulator.list_batches())
    assert metadata == sorted([str(job.uuid), f"{job.uuid}/2", f"{job.uuid}/3"])
    # Each part's input holds its own requests, each request in exactly one part.
    seen = [cid for p in parts for cid in input_ids(emu, p)]
    assert len(seen) == len(set(seen)) == 12_000

    job = services.refresh(job)
    assert job.state == JobState.FINISHED
    assert job.provider_status == BatchStatus.COMPLETED
    assert job.items.filter(state=ItemState.SUCCEEDED).count() == 12_000
    assert len(announced) == 12_000 and set(announced.values()) == {1}
    assert len(finished) == 1
    assert job.request_count_total == 12_000
    assert job.input_tokens == sum(p.input_tokens for p in job.batches.all()) > 0
    assert RequestAttempt.objects.filter(item__job=job).count() == 12_000


def test_split_respects_bytes_as_well_as_counts(emu: EmulatorHandle, settings: Any) -> None:
    job = make_job(items=chat_items(10))
    one = job.items.first()
    assert one is not None and one.nbytes > 0
    limits(settings, MAX_FILE_BYTES=one.nbytes * 4)
    services.request_submit(job)
    sizes = list(job.batches.order_by("part").values_list("item_count", "input_bytes"))
    assert [count for count, _ in sizes] == [4, 4, 2]
    assert all(nbytes <= one.nbytes * 4 for _, nbytes in sizes)
    job = services.submit(job)
    # The provider received exactly the bytes each part was planned with.
    for part in job.batches.all():
        assert len(emu.emulator.file_content(part.input_file_id)) == part.input_bytes


def test_embeddings_are_split_by_their_inputs(emu: EmulatorHandle, settings: Any) -> None:
    limits(settings, MAX_EMBEDDING_INPUTS_PER_BATCH=10)
    items = [
        {"custom_id": f"e{i}", "body": {"model": "text-embedding-3-small", "input": ["a"] * 4}}
        for i in range(5)
    ]
    job = services.create_job(endpoint="/v1/embeddings", items=items)
    services.request_submit(job)
    assert list(job.batches.order_by("part").values_list("item_count", flat=True)) == [2, 2, 1]


def test_a_job_no_longer_stops_at_one_batchs_request_limit(settings: Any) -> None:
    limits(settings, MAX_REQUESTS_PER_BATCH=3, MAX_REQUESTS_PER_JOB=5)
    job = make_job(items=chat_items(5))
    assert job.item_count == 5
    with pytest.raises(LimitExceeded, match="5 requests, the most one job takes"):
        services.add_items(job, chat_items(1, prefix="more-"))


def test_one_request_larger_than_a_batch_is_refused_naming_its_line(settings: Any) -> None:
    limits(settings, MAX_FILE_BYTES=200)
    big = {
        "custom_id": "big",
        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 300}]},
    }
    with pytest.raises(ValidationError, match="one batch takes at most 200") as caught:
        make_job(items=[*chat_items(1), big])
    assert [p.index for p in caught.value.problems] == [1]


def test_expired_requests_are_completed_by_a_follow_up_batch_without_resending_the_rest(
    emu: EmulatorHandle, announced: Counter[str], finished: list[dict[str, Any]]
) -> None:
    emu.emulator.stall_request("req-3", times=1)
    emu.emulator.stall_request("req-4", times=1)
    job = make_job(items=chat_items(10))
    services.request_submit(job)
    job = services.submit(job)
    emu.emulator.advance(86_400 + 60)
    job = services.refresh(job)
    # Part 1 expired with 8 results; the 2 that never ran wait for a follow-up batch.
    assert job.state == JobState.SUBMIT_REQUESTED
    retry = job.batches.get(part=2)
    assert retry.reason == BatchReason.RETRY and retry.item_count == 2
    assert set(announced) == {f"req-{i}" for i in range(10)} - {"req-3", "req-4"}
    assert not finished

    job = services.submit(job)
    assert input_ids(emu, job.batches.get(part=2)) == ["req-3", "req-4"]
    job = services.refresh(job)
    assert job.state == JobState.FINISHED
    assert job.items.filter(state=ItemState.SUCCEEDED).count() == 10
    assert set(announced.values()) == {1} and len(announced) == 10
    assert len(finished) == 1
    item = job.items.get(custom_id="req-3")
    assert item.attempt_count == 2
    history = list(item.attempts.order_by("number").values_list("number", "state", "retried"))
    assert history == [(1, ItemState.EXPIRED, True), (2, ItemState.SUCCEEDED, False)]
    assert job.items.get(custom_id="req-0").attempts.count() == 1


def test_a_5xx_line_is_retried_and_succeeds_announcing_only_the_success(
    emu: EmulatorHandle, announced: Counter[str]
) -> None:
    outcomes: list[tuple[str, bool]] = []

    def receiver(custom_id: str, succeeded: bool, **kwargs: Any) -> None:
        outcomes.append((custom_id, succeeded))

    emu.emulator.fail_request("req-1", 500, "server_error", "boom", times=1)
    job = make_job(items=chat_items(3))
    services.request_submit(job)
    signals.result_received.connect(receiver)
    try:
        job = run_to_end(job, emu)
    finally:
        signals.result_received.disconnect(receiver)
    assert job.state == JobState.FINISHED
    assert sorted(outcomes) == [("req-0", True), ("req-1", True), ("req-2", True)]
    item = job.items.get(custom_id="req-1")
    attempts = list(item.attempts.order_by("number"))
    assert [(a.state, a.status_code, a.retried) for a in attempts] == [
        (ItemState.FAILED, 500, True),
        (ItemState.SUCCEEDED, 200, False),
    ]
    assert attempts[0].error["error"]["message"] == "boom"
    assert attempts[0].batch.part == 1 and attempts[1].batch.part == 2


def test_context_length_exceeded_is_not_retried(emu: EmulatorHandle) -> None:
    emu.emulator.fail_request("req-0", 400, "context_length_exceeded")
    job = make_job(items=chat_items(2))
    services.request_submit(job)
    services.submit(job)
    job = services.refresh(job)
    assert job.state == JobState.FINISHED
    assert job.batches.count() == 1
    item = job.items.get(custom_id="req-0")
    assert (item.state, item.status_code, item.attempt_count) == (ItemState.FAILED, 400, 1)
    assert item.attempts.get().retried is False


def test_retries_stop_at_max_attempts(emu: EmulatorHandle, settings: Any) -> None:
    limits(settings, RETRY={"MAX_ATTEMPTS": 2})
    emu.emulator.fail_request("req-0", 503, "server_error", "still down")
    job = make_job(items=chat_items(2))
    services.request_submit(job)
    job = run_to_end(job, emu)
    assert job.state == JobState.FINISHED
    assert job.batches.count() == 2
    item = job.items.get(custom_id="req-0")
    assert (item.state, item.status_code, item.attempt_count) == (ItemState.FAILED, 503, 2)
    assert list(item.attempts.values_list("retried", flat=True).order_by("number")) == [
        True,
        False,
    ]


def test_no_retry_after_the_deadline(emu: EmulatorHandle, settings: Any) -> None:
    limits(settings, RETRY={"DEADLINE": 0})
    emu.emulator.fail_request("req-0", 500, "server_error", times=1)
    job = make_job(items=chat_items(1))
    services.request_submit(job)
    services.submit(job)
    job = services.refresh(job)
    assert job.state == JobState.FINISHED
    assert job.items.get().state == ItemState.FAILED


def test_a_cancelled_job_sends_nothing_again(emu: EmulatorHandle) -> None:
    emu.emulator.stall_request("req-0")
    job = make_job(items=chat_items(3))
    services.request_submit(job)
    job = services.submit(job)
    services.cancel(job)
    emu.emulator.advance(3600)
    job = services.refresh(job)
    assert job.state == JobState.FINISHED
    assert job.batches.count() == 1
    assert job.items.get(custom_id="req-0").state == ItemState.CANCELLED


def test_retry_on_demand_sends_failed_requests_again(
    emu: EmulatorHandle, finished: list[dict[str, Any]]
) -> None:
    emu.emulator.fail_request("req-1", 400, "invalid_prompt", "bad", times=1)
    job = make_job(items=chat_items(3))
    services.request_submit(job)
    services.submit(job)
    job = services.refresh(job)
    assert job.state == JobState.FINISHED and len(finished) == 1
    assert services.can_retry(job, "expired") == (
        False,
        "it has no expired request sent fewer than 3 time(s)",
    )
    job = services.retry(job, "failed")
    assert job.state == JobState.SUBMIT_REQUESTED
    assert job.items.get(custom_id="req-1").attempts.get().retried is True
    assert job.batches.get(part=2).item_count == 1
    job = run_to_end(job, emu)
    assert job.items.get(custom_id="req-1").state == ItemState.SUCCEEDED
    assert len(finished) == 2  # job_finished again, for the new outcome


def test_retry_on_demand_is_refused_while_the_job_runs(emu: EmulatorHandle) -> None:
    job = make_job(items=chat_items(1))
    services.request_submit(job)
    with pytest.raises(InvalidStateError, match="only a finished job is retried"):
        services.retry(job, "failed")


def test_sync_carries_a_split_job_with_one_list_pass(emu: EmulatorHandle, settings: Any) -> None:
    limits(settings, MAX_REQUESTS_PER_BATCH=2)
    job = make_job(items=chat_items(5))
    services.request_submit(job)
    report = services.sync()
    assert report.submitted == [job.pk]
    job.refresh_from_db()
    assert job.state == JobState.FINISHED  # instant timing: the same pass ingests all parts
    assert job.batches.filter(state=JobState.FINISHED).count() == 3
    assert job.items.filter(state=ItemState.SUCCEEDED).count() == 5


def test_one_refused_part_fails_the_submission_and_a_resubmit_plans_the_rest(
    emu: EmulatorHandle, settings: Any
) -> None:
    limits(settings, MAX_REQUESTS_PER_BATCH=2)
    job = make_job(items=chat_items(4))
    services.request_submit(job)
    emu.emulator.inject_fault("POST", "/v1/batches", "status", count=1, status=400)
    job = services.submit(job)
    assert job.state == JobState.SUBMIT_FAILED
    assert RequestItem.objects.filter(job=job, batch__isnull=True).count() == 4
    assert not ProviderBatch.objects.filter(job=job).exclude(provider_batch_id="").exists()
    services.request_submit(job)
    job = services.submit(job)
    assert job.state == JobState.SUBMITTED
    assert job.batches.active().count() == 2


@pytest.mark.slow
def test_a_120000_request_job_is_split_at_the_providers_limit_and_announced_once(
    emu: EmulatorHandle, announced: Counter[str], finished: list[dict[str, Any]]
) -> None:
    """The issue's case at full size, with the provider's own limits (50,000 per batch)."""
    job = make_job(items=chat_items(120_000))
    services.request_submit(job)
    assert list(job.batches.order_by("part").values_list("item_count", flat=True)) == [
        50_000,
        50_000,
        20_000,
    ]
    report = services.sync()
    assert report.ok, report.errors
    job.refresh_from_db()
    assert job.state == JobState.FINISHED
    assert job.batches.filter(state=JobState.FINISHED).count() == 3
    assert len(emu.emulator.list_batches()) == 3
    assert job.items.filter(state=ItemState.SUCCEEDED).count() == 120_000
    assert len(announced) == 120_000 and set(announced.values()) == {1}
    assert len(finished) == 1


def test_a_job_waiting_to_submit_with_no_parts_planned_gets_them_at_submit(
    emu: EmulatorHandle,
) -> None:
    """A job a version without parts left in "submission requested" (the migration gives it
    no part: it never uploaded) is planned by the submit that picks it up."""
    job = make_job(items=chat_items(3))
    BatchJob.objects.filter(pk=job.pk).update(state=JobState.SUBMIT_REQUESTED)
    job = services.submit(job)
    assert job.state == JobState.SUBMITTED
    part = job.batches.get()
    assert (part.part, part.reason, part.item_count) == (1, BatchReason.FIRST, 3)


def test_cost_is_stored_once_per_batch_and_a_retry_adds_only_its_own(
    emu: EmulatorHandle, settings: Any
) -> None:
    prices = {"gpt-4o-mini": {"input": 0.15, "cached_input": 0.075, "output": 0.6}}
    limits(settings, PRICES=prices)
    emu.emulator.fail_request("req-1", 500, "server_error", "boom", times=1)
    job = make_job(items=chat_items(4))
    services.request_submit(job)
    job = run_to_end(job, emu)
    first, retry = job.batches.order_by("part")
    assert first.cost is not None and retry.cost is not None and retry.cost > 0
    # Each batch's cost is what its own attempts used, priced once.
    for part in (first, retry):
        usage = RequestAttempt.objects.filter(batch=part)
        inp = sum(usage.values_list("input_tokens", flat=True))
        out = sum(usage.values_list("output_tokens", flat=True))
        assert part.cost == (Decimal(inp) * Decimal("0.15") + Decimal(out) * Decimal("0.6")) / 10**6
    assert job.cost == first.cost + retry.cost == services.job_cost(job)
    # Ingesting again (a second worker, a crash recovery) counts nothing twice.
    assert services.ingest(job) == 0
    job.refresh_from_db()
    assert job.cost == first.cost + retry.cost
    assert job.input_tokens == first.input_tokens + retry.input_tokens


def test_cancelling_a_split_job_asks_for_every_running_part_even_if_one_refuses(
    emu: EmulatorHandle, settings: Any
) -> None:
    limits(settings, MAX_REQUESTS_PER_BATCH=2)
    for i in range(4):
        emu.emulator.stall_request(f"req-{i}")
    job = make_job(items=chat_items(4))
    services.request_submit(job)
    job = services.submit(job)
    first, second = job.batches.order_by("part")
    emu.emulator.inject_fault(
        "POST", f"/v1/batches/{first.provider_batch_id}/cancel", "status", status=500, count=10
    )
    with pytest.raises(Exception, match="500"):
        services.cancel(job)
    # The refusal of part 1 did not keep part 2 running.
    assert emu.emulator.get_batch(second.provider_batch_id)["status"] in ("cancelling", "cancelled")
