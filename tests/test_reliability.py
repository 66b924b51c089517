"""The edges of the lifecycle's promise, each found broken from outside and pinned here.

Nothing lost, nothing run twice, nothing billed untracked, no job able to stop another:
a crash right after an upload, a receiver that raises among many, a create whose outcome
is unknown followed by a cancel, a slow upload that outlives its lease, result lines with
impossible numbers, receivers of every signal that raise, an ingest holding a job while
another process syncs, and a submission whose configuration is broken. Every test drives
the real services over HTTP against the emulator; the "crash" here is a ``BaseException``
raised at a named checkpoint (what a killed process leaves behind is the same rows and the
same provider state; tests/test_crashes.py does it with SIGKILL of a real process).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.test import override_settings
from django.utils import timezone

from openai_batches import jobs, services, signals
from openai_batches.conf import app_settings
from openai_batches.exceptions import ConfigurationError, ValidationError
from openai_batches.jsonl import METADATA_JOB_KEY
from openai_batches.models import BatchJob, BatchStatus, ItemState, JobState, RequestItem
from openai_batches.testing import EmulatorHandle
from tests.lifecycle_helpers import chat_items, make_job, submitted_job
from tests.test_submit_faults import Waits, batches, emu, files, reload, waits
from tests.testapp.models import ResultLog

__all__ = ["emu", "waits"]  # fixtures, imported for pytest

pytestmark = pytest.mark.django_db(transaction=True)


class Killed(BaseException):
    """Stands for SIGKILL: no ``except Exception`` handler of ours sees it."""


def crash_at(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    assert name in services.CHECKPOINTS

    def checkpoint(step: str) -> None:
        if step == name:
            raise Killed(step)

    monkeypatch.setattr(services._base, "_checkpoint", checkpoint)


def expire_lease(job: BatchJob) -> None:
    BatchJob.objects.filter(pk=job.pk).update(
        submit_attempt_at=timezone.now() - timedelta(seconds=app_settings.SUBMIT_LEASE + 1)
    )


def job_batches(emu: EmulatorHandle, job: BatchJob) -> list[dict[str, Any]]:
    return [b for b in batches(emu) if b["metadata"].get(METADATA_JOB_KEY) == str(job.uuid)]


# -- 1. a crash after the upload leaves no orphan file -----------------------------------


@pytest.mark.parametrize("step", ["submit.uploaded", "submit.upload_recorded", "submit.created"])
def test_a_submission_killed_mid_way_is_recovered_with_one_file_and_one_batch(
    emu: EmulatorHandle, waits: Waits, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    job = make_job(5)
    services.request_submit(job)
    crash_at(monkeypatch, step)
    with pytest.raises(Killed):
        services.submit(job)
    assert reload(job).state == JobState.SUBMITTING  # what a killed worker leaves
    assert reload(job).last_error_at is None  # and it said nothing
    monkeypatch.setattr(services._base, "_checkpoint", lambda step: None)
    expire_lease(job)
    report = services.sync()
    assert report.ok, report.errors
    job = reload(job)
    assert job.state == JobState.FINISHED  # the same pass submitted, refreshed, ingested
    (batch,) = job_batches(emu, job)
    assert files(emu) == [emu.emulator.get_file(batch["input_file_id"])]  # no orphan upload


# -- 2. a raising receiver does not make the others run twice ----------------------------


def test_one_failing_result_receiver_runs_no_other_receiver_twice(emu: EmulatorHandle) -> None:
    job = submitted_job(1000)
    calls: Counter[str] = Counter()

    def count(*, custom_id: str, **kwargs: Any) -> None:
        calls[custom_id] += 1  # an e-mail or an HTTP call: not rolled back by anything

    def fail_one(*, custom_id: str, **kwargs: Any) -> None:
        if custom_id == "req-500":
            raise RuntimeError("receiver down")

    signals.result_received.connect(count)
    signals.result_received.connect(fail_one)
    try:
        job = services.refresh(job)
        assert job.state == JobState.FINISHED
        assert calls["req-500"] == 1
        assert set(calls.values()) == {1} and len(calls) == 1000
        assert RequestItem.objects.pending_announcement().get().custom_id == "req-500"
        # The failed item alone is tried again on the next pass, with all its receivers.
        services.announce_pending()
        assert calls["req-500"] == 2 and calls["req-499"] == calls["req-501"] == 1
    finally:
        signals.result_received.disconnect(count)
        signals.result_received.disconnect(fail_one)
    # The database writes of the failing item's receivers were rolled back each time;
    # everyone else's were kept exactly once.
    assert ResultLog.objects.filter(job_id=job.pk).count() == 999
    assert not ResultLog.objects.filter(custom_id="req-500").exists()
    assert "receiver down" in reload(job).last_error
    services.announce_pending()  # receiver fixed: it goes out, once
    assert ResultLog.objects.filter(job_id=job.pk).count() == 1000
    assert BatchJob.objects.get(pk=job.pk).finish_announced


def test_a_receiver_whose_query_fails_rolls_back_its_own_item_only(emu: EmulatorHandle) -> None:
    """A receiver whose own write fails in the database (an IntegrityError marks the
    transaction for rollback) must not break the pass: Django refused the rollback to the
    item's savepoint until the mark was cleared first."""
    job = submitted_job(3)

    def duplicate(*, custom_id: str, **kwargs: Any) -> None:
        if custom_id == "req-1":
            ResultLog.objects.create(job_id=0, custom_id="dup", succeeded=True)
            ResultLog.objects.create(job_id=0, custom_id="dup", succeeded=True)

    signals.result_received.connect(duplicate)
    try:
        job = services.refresh(job)
    finally:
        signals.result_received.disconnect(duplicate)
    assert job.state == JobState.FINISHED
    assert RequestItem.objects.pending_announcement().get().custom_id == "req-1"
    assert set(ResultLog.objects.filter(job_id=job.pk).values_list("custom_id", flat=True)) == {
        "req-0",
        "req-2",
    }
    assert not ResultLog.objects.filter(job_id=0).exists()  # its writes were rolled back
    assert "IntegrityError" in reload(job).last_error
    services.announce_pending()
    assert ResultLog.objects.filter(job_id=job.pk).count() == 3


# -- 3. no paid batch without a job tracking it ------------------------------------------


def create_landing_late(emu: EmulatorHandle) -> BatchJob:
    """A job whose create timed out here, whose look-ups failed, and whose batch then
    landed at the provider: back in "submission requested", with nothing recorded."""
    job = make_job(3)
    services.request_submit(job)
    emu.inject_fault("POST", "/v1/batches", "slow", delay=0.6)
    emu.inject_fault("GET", "/v1/batches", "status", status=500, count=100)
    with override_settings(OPENAI_BATCHES={**app_settings.user_settings, "TIMEOUT": 0.3}):
        services.submit(job)
    job = reload(job)
    assert job.state == JobState.SUBMIT_REQUESTED and job.input_file_id
    deadline = time.monotonic() + 5
    while not batches(emu) and time.monotonic() < deadline:
        time.sleep(0.05)  # the timed-out create lands at the provider
    emu.emulator.clear_faults()
    return job


def create_refused_for_now(emu: EmulatorHandle) -> BatchJob:
    """A job whose creates all answered 503 (nothing made): back in "requested"."""
    job = make_job(3)
    services.request_submit(job)
    emu.inject_fault("POST", "/v1/batches", "status", status=503, count=10)
    services.submit(job)
    assert reload(job).state == JobState.SUBMIT_REQUESTED
    emu.emulator.clear_faults()
    return reload(job)


def test_cancel_after_an_unknown_create_cancels_the_batch_that_landed(
    emu: EmulatorHandle, waits: Waits
) -> None:
    emu.stall_request("req-1")  # the batch stays in progress until cancelled
    job = create_landing_late(emu)
    (landed,) = batches(emu)
    job = services.cancel(job)
    assert job.state == JobState.SUBMITTED  # tracked, so its partial results are kept
    assert job.provider_batch_id == landed["id"]
    assert emu.emulator.get_batch(landed["id"])["status"] in ("cancelling", "cancelled")
    with pytest.raises(Exception, match="cancel"):
        services.delete_job(job)  # still not deletable while the provider holds it


def test_cancel_after_an_unknown_create_with_no_batch_deletes_the_upload(
    emu: EmulatorHandle, waits: Waits
) -> None:
    job = services.cancel(create_refused_for_now(emu))
    assert job.state == JobState.CANCELLED
    assert files(emu) == [] and batches(emu) == []
    services.delete_job(job)


def test_cancel_refuses_when_the_provider_cannot_be_asked(
    emu: EmulatorHandle, waits: Waits
) -> None:
    job = create_refused_for_now(emu)
    emu.inject_fault("GET", "/v1/batches", "status", status=500, count=100)
    with pytest.raises(Exception, match="500"):
        services.cancel(job)
    job = reload(job)
    assert job.state == JobState.SUBMIT_REQUESTED  # unchanged: it can be tried again
    assert job.submit_attempt_at is None


def test_a_worker_whose_lease_ran_out_during_its_upload_creates_no_second_batch(
    emu: EmulatorHandle, waits: Waits, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = make_job(4)
    services.request_submit(job)
    taken_over = []

    def slow_upload(step: str) -> None:
        if step == "submit.upload_recorded" and not taken_over:
            # The first worker's upload outlived SUBMIT_LEASE: a second worker takes over
            # and finishes the submission before the first one gets to its create.
            taken_over.append(True)
            expire_lease(job)
            assert services.submit(job).state == JobState.SUBMITTED

    monkeypatch.setattr(services._base, "_checkpoint", slow_upload)
    services.submit(job)
    (batch,) = job_batches(emu, job)
    assert reload(job).provider_batch_id == batch["id"]
    assert len(files(emu)) == 1


def test_a_second_batch_for_a_job_is_cancelled_not_left_running(
    emu: EmulatorHandle, waits: Waits
) -> None:
    emu.stall_request("req-1")
    job = submitted_job(2)
    stray_file = emu.emulator.add_file(b"".join(services.iter_input_jsonl(job)))
    client = services.get_client(job.account)
    try:
        stray = client.create_batch(
            input_file_id=stray_file["id"],
            endpoint=job.endpoint,
            completion_window="24h",
            metadata={METADATA_JOB_KEY: str(job.uuid)},
        )
        taken = services.submission._adopt(reload(job), job.current_batch, stray, client)
    finally:
        client.close()
    assert taken is False
    assert reload(job).provider_batch_id == job.provider_batch_id != stray["id"]
    assert emu.emulator.get_batch(stray["id"])["status"] in ("cancelling", "cancelled")
    assert stray_file["id"] not in {f["id"] for f in files(emu)}


# -- 4. one bad job never stops the others -----------------------------------------------


def _rewrite_output(emu: EmulatorHandle, job: BatchJob, edit: Any) -> None:
    """Replace the output file of the job's (terminal) batch with edited lines."""
    file_id = emu.emulator.get_batch(job.provider_batch_id)["output_file_id"]
    path, _, _ = emu.emulator.open_content(file_id)
    with open(path, "rb") as fh:
        lines = [json.loads(raw) for raw in fh if raw.strip()]
    edit(lines)
    data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    with open(path, "wb") as fh:
        fh.write(data)
    emu.emulator._file(file_id).bytes = len(data)


@pytest.mark.parametrize(
    "bad",
    [-5, "many", 10**12, 1.5e300, None, True, [1]],
    ids=["negative", "text", "over-range", "huge-float", "null", "bool", "list"],
)
def test_impossible_token_counts_in_a_result_line_are_stored_safely(
    emu: EmulatorHandle, bad: Any
) -> None:
    job = submitted_job(3)
    job = services.refresh(job, ingest=False)
    assert job.is_terminal

    def edit(lines: list[dict[str, Any]]) -> None:
        usage = lines[0]["response"]["body"]["usage"]
        usage["prompt_tokens"] = bad
        usage["completion_tokens"] = bad
        usage["prompt_tokens_details"] = {"cached_tokens": bad}

    _rewrite_output(emu, job, edit)
    assert services.ingest(job) == 3
    job = reload(job)
    assert job.state == JobState.FINISHED
    assert job.items.filter(state=ItemState.SUCCEEDED).count() == 3
    for item in job.items.all():
        assert 0 <= item.input_tokens <= 2**31 - 1 and 0 <= item.output_tokens <= 2**31 - 1


def test_text_no_database_takes_is_repaired_not_fatal(emu: EmulatorHandle) -> None:
    job = services.refresh(submitted_job(3), ingest=False)

    def edit(lines: list[dict[str, Any]]) -> None:
        by_id = {line["custom_id"]: line for line in lines}
        by_id["req-0"]["response"]["body"]["choices"][0]["message"]["content"] = (
            "a\x00b \ud800 c 😀"
        )
        by_id["req-1"]["response"]["status_code"] = 99999
        by_id["req-2"]["response"]["request_id"] = "x" * 500

    _rewrite_output(emu, job, edit)
    assert services.ingest(job) == 3
    items = {i.custom_id: i for i in reload(job).items.all()}
    content = items["req-0"].response["choices"][0]["message"]["content"]
    assert content == "a\ufffdb \ufffd c 😀"
    assert items["req-1"].state == ItemState.FAILED
    assert items["req-1"].error["code"] == "invalid_status_code"
    assert (
        items["req-2"].state == ItemState.SUCCEEDED
        and len(items["req-2"].provider_request_id) == 64
    )


def test_a_job_that_cannot_be_ingested_does_not_stop_the_sync_pass(
    emu: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken, healthy = submitted_job(2), submitted_job(2, items=chat_items(2, prefix="ok-"))
    real = services.ingestion._ingest_locked

    def explode(job: BatchJob, *args: Any) -> int:
        if job.pk == broken.pk:
            raise TypeError("a bug in one job's data")
        return real(job, *args)

    monkeypatch.setattr(services.ingestion, "_ingest_locked", explode)
    report = services.sync()
    assert [pk for pk, _ in report.errors] == [broken.pk]
    assert "TypeError: a bug in one job's data" in report.errors[0][1]
    assert reload(healthy).state == JobState.FINISHED  # the pass went on
    assert "TypeError" in reload(broken).last_error  # and the failure is on the job
    monkeypatch.setattr(services.ingestion, "_ingest_locked", real)
    assert services.sync().ok
    assert reload(broken).state == JobState.FINISHED


def test_unknown_status_and_garbage_fields_from_the_provider_are_recorded(
    emu: EmulatorHandle,
) -> None:
    job = submitted_job(2)
    batch = {
        "id": job.provider_batch_id,
        "status": "paused_for_maintenance_window",
        "request_counts": {"total": "x", "completed": -1},
        "created_at": "yesterday",
    }
    updated = services.apply_batch(job, batch)
    assert updated.provider_status == reload(job).provider_status  # unchanged
    assert "unknown batch status" in reload(job).last_error
    weird = {
        "id": job.provider_batch_id,
        "status": "in_progress",
        "request_counts": {"total": 10**15, "completed": "2", "failed": None},
        "output_file_id": "f" * 300,
        "in_progress_at": 10**20,
        "errors": {"data": "not a list"},
        "usage": {"input_tokens": -3},
    }
    updated = services.apply_batch(job, weird)
    assert updated.provider_status == BatchStatus.IN_PROGRESS
    assert updated.request_count_total == 2**31 - 1 and updated.request_count_completed == 0
    assert updated.output_file_id == "" and updated.in_progress_at is None


def test_a_raising_job_finished_receiver_does_not_starve_other_jobs(emu: EmulatorHandle) -> None:
    first, second = submitted_job(2), submitted_job(2, items=chat_items(2, prefix="b-"))
    finished: list[int] = []

    def on_finished(*, job: BatchJob, **kwargs: Any) -> None:
        if job.pk == first.pk:
            raise RuntimeError("dashboard down")
        finished.append(job.pk)

    signals.job_finished.connect(on_finished)
    try:
        services.refresh(first)  # the receiver's error does not reach the caller
        services.refresh(second)
        services.announce_pending()  # a later pass: the first job's receiver fails again
        assert finished == [second.pk]
        assert not reload(first).finish_announced and reload(second).finish_announced
        assert "dashboard down" in reload(first).last_error
    finally:
        signals.job_finished.disconnect(on_finished)
    services.announce_pending()
    assert reload(first).finish_announced


# -- 5. status receivers cannot undo a committed change ----------------------------------


def test_a_raising_status_receiver_neither_reaches_the_caller_nor_drops_the_enqueue(
    emu: EmulatorHandle,
) -> None:
    seen: list[str] = []

    def broken(**kwargs: Any) -> None:
        raise RuntimeError("status receiver down")

    def working(*, new_state: str, **kwargs: Any) -> None:
        seen.append(new_state)

    job = make_job(2)
    signals.job_status_changed.connect(broken)
    signals.job_status_changed.connect(working)
    try:
        services.request_submit(job)  # must not raise: the change is committed
    finally:
        signals.job_status_changed.disconnect(broken)
        signals.job_status_changed.disconnect(working)
    assert reload(job).state == JobState.SUBMIT_REQUESTED
    assert seen == [JobState.SUBMIT_REQUESTED]  # the other receiver still ran
    assert jobs.get_queue().count == 1  # and the submit job was still enqueued


def test_hooks_queued_after_a_raising_status_receiver_still_run(emu: EmulatorHandle) -> None:
    ran: list[str] = []

    def broken(**kwargs: Any) -> None:
        raise RuntimeError("status receiver down")

    job = make_job(2)
    signals.job_status_changed.connect(broken)
    try:
        with transaction.atomic():
            services.request_submit(job)
            transaction.on_commit(lambda: ran.append("later hook"))
    finally:
        signals.job_status_changed.disconnect(broken)
    assert ran == ["later hook"]


# -- 6. an ingest does not hold the job while it downloads --------------------------------


@pytest.mark.postgres
def test_a_slow_download_holds_no_lock_and_a_sync_pass_skips_a_locked_job(
    emu: EmulatorHandle,
) -> None:
    slow, other = submitted_job(3), submitted_job(3, items=chat_items(3, prefix="o-"))
    slow = services.refresh(slow, ingest=False)
    content = f"/v1/files/{slow.output_file_id}/content"
    emu.inject_fault("GET", content, "slow", delay=1.5)
    done = threading.Event()

    def ingest_in_another_thread() -> None:
        try:
            services.ingest(slow.pk)
        finally:
            connection.close()
            done.set()

    thread = threading.Thread(target=ingest_in_another_thread)
    thread.start()
    time.sleep(0.3)  # the download is under way
    started = time.monotonic()
    with transaction.atomic():  # would raise "could not obtain lock" if the row were held
        BatchJob.objects.select_for_update(nowait=True).get(pk=slow.pk)
    report = services.sync(job_ids=[other.pk])
    elapsed = time.monotonic() - started
    assert report.ok and reload(other).state == JobState.FINISHED
    assert elapsed < 1.0, elapsed  # neither waited for the 1.5 s download
    thread.join(10)
    assert done.is_set() and reload(slow).state == JobState.FINISHED


# -- 7. a configuration failure is said at once ------------------------------------------


def test_a_submission_whose_account_is_gone_records_the_error_and_releases_the_lease(
    emu: EmulatorHandle,
) -> None:
    job = make_job(2)
    services.request_submit(job)
    BatchJob.objects.filter(pk=job.pk).update(account="renamed")  # settings changed since
    with pytest.raises(ConfigurationError):
        services.submit(job)
    job = reload(job)
    assert job.state == JobState.SUBMIT_REQUESTED
    assert job.submit_attempt_at is None  # not stuck in "submitting" for the lease
    assert "ConfigurationError" in job.last_error and "renamed" in job.last_error
    report = services.sync()  # every later pass says so too
    assert [pk for pk, _ in report.errors] == [job.pk]
    assert "renamed" in report.errors[0][1]
    BatchJob.objects.filter(pk=job.pk).update(account="default")  # fixed
    assert services.sync().ok
    assert reload(job).state == JobState.FINISHED


# -- 13. the services' own rough edges ---------------------------------------------------


def test_every_public_check_takes_a_job_or_its_pk(emu: EmulatorHandle) -> None:
    job = make_job(2)
    for check in (services.can_submit, services.can_cancel, services.can_refresh):
        assert check(job) == check(job.pk)
    assert services.can_delete(job.pk) == (True, "")
    assert services.job_cost(job.pk) == services.job_cost(job)


def test_sync_reports_the_results_it_announced(emu: EmulatorHandle) -> None:
    job = submitted_job(7)
    report = services.sync()
    assert report.ingested == [job.pk]
    assert report.announced == 7
    assert "announced 7 result(s)" in report.summary()


def test_sync_reports_announced_results_with_no_receiver_too(
    emu: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(signals.result_received, "receivers", [])
    monkeypatch.setattr(signals.result_received, "sender_receivers_cache", {})
    submitted_job(4)
    assert services.sync().announced == 4


def test_a_dry_run_says_what_it_would_do(emu: EmulatorHandle) -> None:
    job = make_job(2)
    services.request_submit(job)
    summary = services.sync(dry_run=True).summary()
    assert summary.startswith("would submit 1, would refresh 0")
    assert "refreshed" not in summary and "announced" not in summary
    assert reload(job).state == JobState.SUBMIT_REQUESTED


def test_an_unknown_account_is_refused_without_listing_the_configured_ones(
    emu: EmulatorHandle,
) -> None:
    accounts = {"secret-team": {"API_KEY": "sk-other", "BASE_URL": emu.base_url}}
    settings = {**app_settings.user_settings, "ACCOUNTS": accounts}
    with override_settings(OPENAI_BATCHES=settings), pytest.raises(ValidationError) as caught:
        services.create_job(account="nope", items=chat_items(1))
    assert "'nope' is not a configured account" in str(caught.value)
    assert "secret-team" not in str(caught.value) and "default" not in str(caught.value)


def test_a_job_name_no_database_takes_is_a_validation_error(emu: EmulatorHandle) -> None:
    for bad in ("\ud800", "x" * 201, "a\x00b", 5):
        with pytest.raises(ValidationError) as caught:
            services.create_job(name=bad, items=chat_items(1))  # type: ignore[arg-type]
        assert [p.field for p in caught.value.problems] == ["name"]
    assert not BatchJob.objects.exists()


def test_adding_to_a_submitted_job_names_it_by_uuid_for_the_api(emu: EmulatorHandle) -> None:
    from openai_batches.exceptions import InvalidStateError

    job = submitted_job(1)
    with pytest.raises(InvalidStateError) as caught:
        services.add_items(job, chat_items(1, prefix="late-"))
    assert caught.value.job_uuid == str(job.uuid)
    assert caught.value.action == "given more items" and "draft" in (caught.value.reason or "")


@pytest.mark.parametrize(
    "prices",
    [0.5, {"gpt-4o-mini": 0.15}, {"gpt-4o-mini": {"input": "x", "output": 1}}, {"gpt-4o-mini": {}}],
)
def test_a_malformed_price_table_shows_no_cost_instead_of_failing_pages(
    emu: EmulatorHandle, admin_client: Any, prices: Any
) -> None:
    job = submitted_job(2)
    with override_settings(OPENAI_BATCHES={**app_settings.user_settings, "PRICES": prices}):
        assert services.job_cost(job) is None
        assert admin_client.get("/admin/openai_batches/batchjob/").status_code == 200
        page = admin_client.get(f"/admin/openai_batches/batchjob/{job.pk}/change/")
        assert page.status_code == 200


@pytest.mark.parametrize("which", ["input", "output", "error"])
def test_a_file_the_provider_forgot_is_built_from_the_database(
    emu: EmulatorHandle, which: str
) -> None:
    emu.fail_request("req-1", status_code=400)
    job = services.refresh(submitted_job(3))
    assert job.state == JobState.FINISHED
    from_provider = b"".join(services.iter_provider_file(job, which))
    file_id = {"input": job.input_file_id, "output": job.output_file_id}.get(
        which, job.error_file_id
    )
    emu.emulator.delete_file(file_id)  # expired after its retention, or deleted
    rebuilt = b"".join(services.iter_provider_file(job, which))

    def lines(data: bytes) -> list[dict[str, Any]]:
        return sorted(
            (json.loads(line) for line in data.splitlines()), key=lambda x: x["custom_id"]
        )

    assert lines(rebuilt) == lines(from_provider)


def test_a_file_is_not_rebuilt_before_the_results_are_stored(emu: EmulatorHandle) -> None:
    from openai_batches.exceptions import NotFoundError

    emu.stall_request("req-0")
    job = services.refresh(submitted_job(2), ingest=False)
    emu.advance(86400 + 60)  # the batch expires with one result
    job = services.refresh(job, ingest=False)
    assert job.is_terminal and not job.ingested_at
    emu.emulator.delete_file(job.output_file_id)
    with pytest.raises(NotFoundError):
        b"".join(services.iter_provider_file(job, "output"))


def test_a_429_asking_for_a_long_wait_gives_the_submission_back_at_once(
    emu: EmulatorHandle, waits: Waits
) -> None:
    job = make_job(2)
    services.request_submit(job)
    emu.inject_fault("POST", "/v1/batches", "status", status=429, retry_after=600)
    services.submit(job)
    job = reload(job)
    assert job.state == JobState.SUBMIT_REQUESTED and job.submit_attempt_at is None
    assert "429" in job.last_error
    assert waits.service == []  # no ten-minute sleep holding a worker
    assert batches(emu) == []
    services.submit(job)  # not before the ten minutes: nothing is sent
    assert batches(emu) == []
    # Ten minutes later: the fault is used up, so it goes through.
    BatchJob.objects.filter(pk=job.pk).update(submit_not_before=timezone.now())
    services.submit(job)
    (batch,) = job_batches(emu, job)
    assert reload(job).provider_batch_id == batch["id"]


def test_a_failed_poll_waits_at_least_as_long_as_the_provider_asked(
    emu: EmulatorHandle,
) -> None:
    job = submitted_job(2)
    emu.inject_fault(
        "GET", f"/v1/batches/{job.provider_batch_id}", "status", status=429, retry_after=500
    )
    with pytest.raises(Exception, match="429"):
        services.refresh(job)
    job = reload(job)
    assert job.poll_interval >= 500
    assert job.next_poll_at >= timezone.now() + timedelta(seconds=490)


def test_a_cancel_that_finds_an_already_finished_batch_keeps_tracking_it(
    emu: EmulatorHandle, waits: Waits
) -> None:
    job = create_landing_late(emu)
    with pytest.raises(Exception, match="Cannot cancel"):
        services.cancel(job)  # instant timing: the batch already completed
    job = reload(job)
    assert job.state == JobState.SUBMITTED and job.provider_batch_id  # not back to "requested"
    assert "Cannot cancel" in job.last_error
    assert services.refresh(job).state == JobState.FINISHED
