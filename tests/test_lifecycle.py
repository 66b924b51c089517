"""The life of a batch against the emulator over HTTP: submit, refresh, ingest, announce.

Every outcome the provider can produce is driven through the real services: completed,
failed validation (with line numbers), expired and cancelled with partial results, all
requests failed; plus the exactly-once guarantees of the result signals.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import call_command
from django.db import transaction

from openai_batches import services, signals
from openai_batches.exceptions import InvalidStateError
from openai_batches.models import BatchJob, BatchStatus, ItemState, JobState, RequestItem
from openai_batches.testing import EmulatorHandle, running_emulator
from tests.lifecycle_helpers import chat_items, make_job, submitted_job
from tests.testapp.models import Article, ResultLog

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def emu() -> Iterator[EmulatorHandle]:
    with running_emulator() as handle:
        yield handle


def test_thousand_requests_go_from_draft_to_completed_with_one_signal_each(
    emu: EmulatorHandle,
) -> None:
    articles = Article.objects.bulk_create([Article(title=f"a{i}") for i in range(1000)])
    items = [
        {**item, "object": article}
        for item, article in zip(chat_items(1000), articles, strict=True)
    ]
    job = make_job(items=items)
    finished: list[dict[str, Any]] = []

    def on_finished(**kwargs: Any) -> None:
        finished.append(kwargs)

    signals.job_finished.connect(on_finished)
    try:
        services.request_submit(job)
        services.submit(job)
        job = services.refresh(job)
    finally:
        signals.job_finished.disconnect(on_finished)

    assert job.state == JobState.FINISHED
    assert job.provider_status == BatchStatus.COMPLETED
    assert job.ingested_at is not None
    assert job.items.filter(state=ItemState.SUCCEEDED).count() == 1000
    assert not job.items.filter(response__isnull=True).exists()
    item = job.items.get(custom_id="req-7")
    assert item.response["object"] == "chat.completion"
    assert item.status_code == 200 and item.provider_request_id and item.result_line_id
    assert item.input_tokens > 0 and item.completed_at is not None
    assert job.input_tokens == sum(job.items.values_list("input_tokens", flat=True))
    assert job.output_tokens > 0
    # exactly once: the receiver's table has a unique (job, custom_id) constraint
    assert ResultLog.objects.filter(job_id=job.pk).count() == 1000
    assert not job.items.filter(announced=False).exists()
    assert Article.objects.exclude(summary="").count() == 1000
    assert (
        len(finished) == 1
        and finished[0]["outcome"] == "completed"
        and finished[0]["succeeded"] == 1000
    )

    # Re-running refresh/ingest/announce changes nothing and sends nothing.
    assert services.ingest(job) == 0
    assert services.announce_pending() == 0
    assert ResultLog.objects.filter(job_id=job.pk).count() == 1000


def test_failed_request_in_error_file_is_failed_with_provider_body(emu: EmulatorHandle) -> None:
    items = chat_items(5)
    items[2]["body"]["emulator"] = {
        "status_code": 400,
        "code": "context_length_exceeded",
        "message": "too long",
    }
    job = submitted_job(items=items)
    job = services.refresh(job)
    bad = job.items.get(custom_id="req-2")
    assert bad.state == ItemState.FAILED
    assert bad.status_code == 400
    assert bad.response["error"]["code"] == "context_length_exceeded"
    assert bad.error is None
    assert job.items.filter(state=ItemState.SUCCEEDED).count() == 4
    assert ResultLog.objects.get(job_id=job.pk, custom_id="req-2").succeeded is False


def test_all_failed_batch_ends_with_every_item_failed(
    emu: EmulatorHandle, no_retries: None
) -> None:
    items = chat_items(6)
    for item in items:
        item["body"]["emulator"] = {
            "status_code": 429,
            "code": "rate_limit_exceeded",
            "message": "slow down",
        }
    job = submitted_job(items=items)
    job = services.refresh(job)
    assert job.provider_status == BatchStatus.COMPLETED
    assert job.output_file_id == "" and job.error_file_id
    assert job.items.filter(state=ItemState.FAILED).count() == 6
    assert all(i.response["error"]["code"] == "rate_limit_exceeded" for i in job.items.all())
    assert ResultLog.objects.filter(job_id=job.pk, succeeded=False).count() == 6


def test_expired_batch_keeps_partial_results_and_marks_the_rest_expired(
    emu: EmulatorHandle, no_retries: None
) -> None:
    emu.stall_request("req-3")
    emu.stall_request("req-4")
    job = submitted_job(8)
    job = services.refresh(job)
    assert job.provider_status == BatchStatus.IN_PROGRESS
    assert job.state == JobState.SUBMITTED
    emu.advance(86_400 + 60)
    job = services.refresh(job)
    assert job.provider_status == BatchStatus.EXPIRED and job.expired_at is not None
    assert job.state == JobState.FINISHED
    states = dict(job.items.values_list("custom_id", "state"))
    assert [k for k, v in states.items() if v == ItemState.EXPIRED] == ["req-3", "req-4"]
    assert sum(v == ItemState.SUCCEEDED for v in states.values()) == 6
    assert job.items.get(custom_id="req-3").error["code"] == "batch_expired"
    assert not job.items.filter(state__in=[ItemState.SUBMITTED, ItemState.PENDING]).exists()
    assert ResultLog.objects.filter(job_id=job.pk).count() == 8


def test_cancelled_batch_keeps_partial_results(emu: EmulatorHandle) -> None:
    emu.stall_request("req-0")
    job = submitted_job(5)
    job = services.refresh(job)
    job = services.cancel(job)
    assert job.provider_status == BatchStatus.CANCELLING
    with pytest.raises(InvalidStateError):
        services.cancel(job)
    emu.advance(3600)
    job = services.refresh(job)
    assert job.provider_status == BatchStatus.CANCELLED and job.state == JobState.FINISHED
    assert job.items.get(custom_id="req-0").state == ItemState.CANCELLED
    assert job.items.filter(state=ItemState.SUCCEEDED).count() == 4


def test_validation_failure_shows_provider_errors_with_line_numbers(emu: EmulatorHandle) -> None:
    job = make_job(4)
    # The app refuses a wrong url; write one behind its back to see the provider's report.
    RequestItem.objects.filter(job=job, custom_id="req-2").update(url="/v1/embeddings")
    services.request_submit(job)
    services.submit(job)
    job = services.refresh(job)
    assert job.provider_status == BatchStatus.FAILED and job.failed_at is not None
    assert job.state == JobState.FINISHED
    lines = [e.get("line") for e in job.provider_errors]
    assert 3 in lines, job.provider_errors
    assert job.items.filter(state=ItemState.FAILED).count() == 4
    assert job.items.get(custom_id="req-0").error["code"] == "batch_failed"


def test_token_limit_exceeded_is_reported_on_the_job(emu: EmulatorHandle, no_retries: None) -> None:
    emu.set_token_budget("gpt-4o-mini", 5)
    job = submitted_job(3)
    job = services.refresh(job)
    # The refused batch stays on record; its requests go back in line, in smaller parts,
    # and nothing else is in flight, so the head of the line is sent (tests/test_quota.py).
    refused = job.batches.get(part=1)
    assert refused.provider_status == BatchStatus.FAILED
    assert [e["code"] for e in refused.provider_errors] == ["token_limit_exceeded"]
    assert job.state == JobState.SUBMIT_REQUESTED
    assert job.items.filter(state=ItemState.PENDING).count() == 3


def test_submit_twice_creates_one_provider_batch(emu: EmulatorHandle) -> None:
    job = make_job(3)
    services.request_submit(job)
    first = services.submit(job)
    second = services.submit(job)
    assert first.provider_batch_id == second.provider_batch_id
    assert len(emu.list_batches()) == 1
    batch = emu.get_batch(first.provider_batch_id)
    assert batch["metadata"]["openai_batches_job"] == str(job.uuid)
    with pytest.raises(InvalidStateError):
        services.request_submit(job)


def test_refresh_never_moves_backwards(emu: EmulatorHandle) -> None:
    job = submitted_job(2)
    job = services.refresh(job, ingest=False)
    assert job.provider_status == BatchStatus.COMPLETED
    stale = dict(
        emu.get_batch(job.provider_batch_id),
        status="in_progress",
        request_counts={"total": 2, "completed": 1, "failed": 0},
    )
    job = services.apply_batch(job, stale)
    assert job.provider_status == BatchStatus.COMPLETED
    assert job.request_count_completed == 2


def test_polling_backs_off_and_resets_when_the_batch_moves(
    emu: EmulatorHandle, settings: Any
) -> None:
    settings.OPENAI_BATCHES = {
        **settings.OPENAI_BATCHES,
        "POLL_INTERVAL": 10,
        "POLL_MAX_INTERVAL": 40,
        "POLL_BACKOFF": 2,
    }
    emu.stall_request("req-1")
    job = submitted_job(3)
    job = services.refresh(job)  # validating -> in_progress: moved
    assert job.poll_interval == 10
    job = services.refresh(job)  # nothing moved
    assert job.poll_interval == 20
    job = services.refresh(job)
    assert job.poll_interval == 40
    job = services.refresh(job)
    assert job.poll_interval == 40  # capped
    assert (job.next_poll_at - job.last_polled_at).total_seconds() == pytest.approx(40)


def test_prefix_receivers_only_see_their_custom_ids(emu: EmulatorHandle) -> None:
    items = chat_items(3, prefix="summary:") + chat_items(2, prefix="label:")
    seen: list[str] = []

    def on_summary(*, custom_id: str, **kwargs: Any) -> None:
        seen.append(custom_id)

    signals.result_received.connect(on_summary, custom_id_prefix="summary:")
    try:
        job = submitted_job(items=items)
        services.refresh(job)
    finally:
        signals.result_received.disconnect(on_summary, custom_id_prefix="summary:")
    assert sorted(seen) == ["summary:0", "summary:1", "summary:2"]


def test_a_failing_receiver_rolls_back_only_its_item_and_is_retried(emu: EmulatorHandle) -> None:
    calls: list[str] = []
    broken = {"req-1"}

    def flaky(*, custom_id: str, **kwargs: Any) -> None:
        calls.append(custom_id)
        if custom_id in broken:
            raise RuntimeError("receiver bug")

    signals.result_received.connect(flaky, custom_id_prefix="req-")
    try:
        job = submitted_job(3)
        job = services.refresh(job)
        assert set(job.items.filter(announced=False).values_list("custom_id", flat=True)) == {
            "req-1"
        }
        # The log row written by the other receiver for req-1 was rolled back with it.
        assert not ResultLog.objects.filter(job_id=job.pk, custom_id="req-1").exists()
        job.refresh_from_db()
        assert "receiver bug" in job.last_error
        assert not BatchJob.objects.get(pk=job.pk).finish_announced  # waits for req-1
        broken.clear()
        assert services.announce_pending() == 1
        assert BatchJob.objects.get(pk=job.pk).finish_announced
    finally:
        signals.result_received.disconnect(flaky, custom_id_prefix="req-")
    assert ResultLog.objects.filter(job_id=job.pk).count() == 3
    assert not RequestItem.objects.filter(job=job, announced=False).exists()


def test_a_crash_between_storing_and_notifying_loses_no_signal(
    emu: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = submitted_job(4)
    finished: list[str] = []

    def on_finished(*, outcome: str, **kwargs: Any) -> None:
        finished.append(outcome)

    signals.job_finished.connect(on_finished)
    try:
        # The process "dies" right after the ingest commits: no on-commit announcement runs.
        monkeypatch.setattr(services.ingestion, "_after_ingest", lambda pk: None)
        job = services.refresh(job)
        assert job.state == JobState.FINISHED
        assert ResultLog.objects.count() == 0
        assert finished == []
        monkeypatch.undo()
        report = services.sync()
        assert report.announced == 4
        assert ResultLog.objects.filter(job_id=job.pk).count() == 4
        assert finished == ["completed"]  # the job's own outbox mark repairs it too
        services.sync()
        assert finished == ["completed"]  # and only once
    finally:
        signals.job_finished.disconnect(on_finished)
    job.refresh_from_db()
    assert job.finish_announced


def test_signals_wait_for_the_commit(emu: EmulatorHandle) -> None:
    job = submitted_job(2)
    with transaction.atomic():
        services.refresh(job)
        assert ResultLog.objects.count() == 0  # not yet: the ingest has not committed
    assert ResultLog.objects.count() == 2


def test_status_changed_signal_reports_each_move(emu: EmulatorHandle) -> None:
    moves: list[tuple[str, str, str, str]] = []

    def on_change(
        *, old_state: str, new_state: str, old_status: str, new_status: str, **kwargs: Any
    ) -> None:
        moves.append((old_state, new_state, old_status, new_status))

    signals.job_status_changed.connect(on_change)
    try:
        job = submitted_job(2)
        services.refresh(job)
    finally:
        signals.job_status_changed.disconnect(on_change)
    assert moves[0] == ("draft", "submit_requested", "", "")
    assert ("submitting", "submitted", "", "validating") in moves
    assert moves[-1][1] == "finished" and moves[-1][3] == "completed"


def test_cancel_before_submission_is_local(emu: EmulatorHandle) -> None:
    job = make_job(2)
    services.request_submit(job)
    job = services.cancel(job)
    assert job.state == JobState.CANCELLED
    assert emu.list_batches() == []
    with pytest.raises(InvalidStateError):
        services.request_submit(job)


def test_sync_batches_alone_carries_a_job_from_submitted_to_ingested(
    emu: EmulatorHandle, capsys: Any
) -> None:
    job = make_job(5)
    services.request_submit(job)
    call_command("sync_batches")
    job.refresh_from_db()
    assert job.state == JobState.FINISHED
    assert job.items.filter(state=ItemState.SUCCEEDED).count() == 5
    assert ResultLog.objects.filter(job_id=job.pk).count() == 5
    assert "submitted 1, refreshed 1, ingested 1" in capsys.readouterr().out


def test_sync_batches_stepwise_with_a_moving_batch(emu: EmulatorHandle, no_retries: None) -> None:
    emu.stall_request("req-0")
    job = make_job(3)
    services.request_submit(job)
    call_command("sync_batches", verbosity=0)
    job.refresh_from_db()
    assert job.state == JobState.SUBMITTED
    emu.advance(86_400 + 1)
    call_command("sync_batches", "--job", str(job.pk), verbosity=0)
    job.refresh_from_db()
    assert job.state == JobState.FINISHED and job.provider_status == BatchStatus.EXPIRED


def test_sync_batches_dry_run_changes_nothing(emu: EmulatorHandle, capsys: Any) -> None:
    job = make_job(2)
    services.request_submit(job)
    call_command("sync_batches", "--dry-run")
    job.refresh_from_db()
    assert job.state == JobState.SUBMIT_REQUESTED
    assert emu.list_batches() == []
    assert f"submit: job {job.pk}" in capsys.readouterr().out


def test_sync_batches_exits_non_zero_when_a_job_fails_to_sync(emu: EmulatorHandle) -> None:
    from django.core.management.base import CommandError

    job = submitted_job(2)
    emu.inject_fault("GET", "/v1/batches/*", "status", status=500, count=50)
    with pytest.raises(CommandError, match="1 job"):
        call_command("sync_batches", verbosity=0)
    job.refresh_from_db()
    assert job.provider_status == BatchStatus.VALIDATING and "500" in job.last_error


def test_sync_uses_one_list_call_per_hundred_batches(emu: EmulatorHandle) -> None:
    jobs = [submitted_job(1, items=chat_items(1, prefix=f"j{n}-")) for n in range(12)]
    report = services.sync()
    assert report.api_calls == 1, report
    assert sorted(report.refreshed) == sorted(j.pk for j in jobs)
    assert BatchJob.objects.filter(state=JobState.FINISHED).count() == 12


def test_results_stream_as_jsonl(emu: EmulatorHandle) -> None:
    import json

    job = services.refresh(submitted_job(3))
    lines = [json.loads(x) for x in services.iter_results_jsonl(job)]
    assert [line["custom_id"] for line in lines] == ["req-0", "req-1", "req-2"]
    assert all(
        line["state"] == "succeeded" and line["response"]["object"] == "chat.completion"
        for line in lines
    )
    assert [i.custom_id for i in services.iter_results(job, state="succeeded")] == [
        "req-0",
        "req-1",
        "req-2",
    ]
    output = b"".join(services.iter_provider_file(job, "output"))
    assert output.count(b"\n") == 3
    with pytest.raises(InvalidStateError):
        services.iter_provider_file(job, "error")  # raised on the call, before any streaming


def test_with_no_receiver_results_are_stored_already_announced(emu: EmulatorHandle) -> None:
    from tests.testapp.receivers import log_result

    signals.result_received.disconnect(dispatch_uid="tests.testapp.log_result")
    try:
        job = services.refresh(submitted_job(3))
        assert job.state == JobState.FINISHED
        assert job.items.filter(announced=True).count() == 3  # in the ingest's own write
    finally:
        signals.result_received.connect(log_result, dispatch_uid="tests.testapp.log_result")
    assert ResultLog.objects.count() == 0
    assert services.announce_pending() == 0  # nothing left over for a receiver added later
