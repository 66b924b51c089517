"""Retention: ``retention.purge`` and ``manage.py purge_batches`` against the emulator over
HTTP (provider files deleted, jobs and items gone in bounded chunks, active work untouched,
provider errors keeping their job), and the two expiry settings."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from openai_batches import retention, services
from openai_batches.checks import check_settings
from openai_batches.emulator.core import ApiError
from openai_batches.exceptions import InvalidStateError
from openai_batches.management.commands.purge_batches import parse_age
from openai_batches.models import BatchJob, ItemState, JobState, ProviderBatch, RequestItem
from openai_batches.testing import EmulatorHandle, running_emulator
from tests.lifecycle_helpers import chat_items, make_job, submitted_job

pytestmark = pytest.mark.django_db(transaction=True)

DAY = timedelta(days=1)


@pytest.fixture
def emu() -> Iterator[EmulatorHandle]:
    with running_emulator() as handle:
        yield handle


def finished_job(n: int = 3, *, age: timedelta = 40 * DAY, fail: int = 0) -> BatchJob:
    """A job run to the end at the emulator (input, output and, with ``fail``, error file),
    its finish time moved ``age`` into the past."""
    items = chat_items(n)
    for item in items[:fail]:
        item["body"]["emulator"] = {"status_code": 400}
    job = submitted_job(items=items)
    job = services.refresh(job)
    assert job.state == JobState.FINISHED and job.input_file_id and job.output_file_id
    assert bool(job.error_file_id) == bool(fail)
    assert not job.items.filter(announced=False).exists() and job.finish_announced
    BatchJob.objects.filter(pk=job.pk).update(ingested_at=timezone.now() - age)
    return BatchJob.objects.get(pk=job.pk)


def aged(job: BatchJob, state: str, age: timedelta = 40 * DAY) -> BatchJob:
    """``job`` put in ``state``, last changed ``age`` ago."""
    BatchJob.objects.filter(pk=job.pk).update(state=state, updated_at=timezone.now() - age)
    return BatchJob.objects.get(pk=job.pk)


def files_of(job: BatchJob) -> list[str]:
    return [f for f in (job.input_file_id, job.output_file_id, job.error_file_id) if f]


def at_provider(emu: EmulatorHandle, file_id: str) -> bool:
    try:
        emu.get_file(file_id)
    except ApiError as err:
        if err.status != 404:
            raise
        return False
    return True


def test_purge_deletes_old_jobs_their_items_and_provider_files_and_nothing_else(
    emu: EmulatorHandle,
) -> None:
    old = finished_job(4, fail=1)
    old_files = files_of(old)
    assert len(old_files) == 3 and all(at_provider(emu, f) for f in old_files)
    recent = finished_job(2, age=10 * DAY)
    running = aged(submitted_job(2), JobState.SUBMITTED)  # the provider is running it
    requested = aged(make_job(2), JobState.SUBMIT_REQUESTED)
    submitting = aged(make_job(2), JobState.SUBMITTING)
    draft = aged(make_job(2), JobState.DRAFT)
    failed = aged(make_job(2), JobState.SUBMIT_FAILED)
    cancelled = aged(make_job(2), JobState.CANCELLED)

    report = retention.purge(older_than=30 * DAY)

    assert report.ok and not report.dry_run
    assert (report.jobs, report.items, report.files, report.files_gone) == (3, 8, 3, 0)
    assert not any(at_provider(emu, f) for f in old_files)
    gone = [old.pk, failed.pk, cancelled.pk]
    assert not BatchJob.objects.filter(pk__in=gone).exists()
    assert not RequestItem.objects.filter(job_id__in=gone).exists()
    kept = [recent, running, requested, submitting, draft]
    for job in kept:
        fresh = BatchJob.objects.get(pk=job.pk)
        assert fresh.state == job.state and fresh.item_count == 2
        assert fresh.items.count() == 2
        assert all(at_provider(emu, f) for f in files_of(fresh))
    assert running.input_file_id and at_provider(emu, running.input_file_id)
    assert "3 job(s), 8 item(s)" in report.summary()


def test_the_finish_time_is_ingested_at_else_updated_at(emu: EmulatorHandle) -> None:
    # Finished 40 days ago but touched yesterday (e.g. renamed): ingested_at decides.
    finished = finished_job(1)
    BatchJob.objects.filter(pk=finished.pk).update(updated_at=timezone.now() - DAY)
    young_failure = aged(make_job(1), JobState.SUBMIT_FAILED, age=29 * DAY)
    report = retention.purge(older_than=30 * DAY)
    assert report.jobs == 1
    assert not BatchJob.objects.filter(pk=finished.pk).exists()
    assert BatchJob.objects.filter(pk=young_failure.pk, state=JobState.SUBMIT_FAILED).exists()


def test_dry_run_counts_and_calls_and_changes_nothing(
    emu: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = finished_job(3, fail=1)
    aged(make_job(2), JobState.SUBMIT_FAILED)

    def no_provider(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a dry run called the provider")

    monkeypatch.setattr(retention, "get_client", no_provider)
    before = list(BatchJob.objects.order_by("pk").values())
    report = retention.purge(older_than=30 * DAY, dry_run=True)
    assert report.dry_run and report.ok
    assert (report.jobs, report.items, report.files) == (2, 5, 3)
    assert list(BatchJob.objects.order_by("pk").values()) == before
    assert RequestItem.objects.count() == 5
    assert all(at_provider(emu, f) for f in files_of(old))
    assert "would delete 2 job(s), 5 item(s) and 3 provider file(s)" in report.summary()
    assert retention.purge(older_than=30 * DAY, dry_run=True, keep_files=True).files == 0


def test_keep_files_deletes_rows_and_leaves_the_files_at_the_provider(
    emu: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = finished_job(2)
    monkeypatch.setattr(retention, "get_client", None)  # calling it would fail the test
    report = retention.purge(older_than=30 * DAY, keep_files=True)
    assert (report.jobs, report.items, report.files) == (1, 2, 0)
    assert not BatchJob.objects.filter(pk=old.pk).exists()
    assert all(at_provider(emu, f) for f in files_of(old))


def test_a_provider_error_on_one_file_keeps_that_job_for_the_next_run(
    emu: EmulatorHandle,
) -> None:
    broken = finished_job(2, fail=1)
    fine = finished_job(2)
    emu.inject_fault(
        "DELETE",
        f"/v1/files/{broken.output_file_id}",
        "status",
        status=500,
        retry_after=0,
        count=10,
    )
    report = retention.purge(older_than=30 * DAY)

    assert not report.ok
    assert [pk for pk, _ in report.errors] == [broken.pk]
    assert broken.output_file_id in report.errors[0][1] and "500" in report.errors[0][1]
    assert not BatchJob.objects.filter(pk=fine.pk).exists()
    assert not any(at_provider(emu, f) for f in files_of(fine))
    kept = BatchJob.objects.get(pk=broken.pk)
    assert kept.items.count() == 2
    # The input file went before the failure: its id is cleared, the failed one stays.
    assert kept.input_file_id == "" and not at_provider(emu, broken.input_file_id)
    assert kept.output_file_id == broken.output_file_id and at_provider(emu, kept.output_file_id)
    assert kept.error_file_id == broken.error_file_id

    emu.clear_faults()
    again = retention.purge(older_than=30 * DAY)
    assert again.ok and (again.jobs, again.items, again.files) == (1, 2, 2)
    assert not BatchJob.objects.filter(pk=broken.pk).exists()
    assert not at_provider(emu, broken.output_file_id)


def test_files_expired_at_the_provider_count_as_already_gone(emu: EmulatorHandle) -> None:
    old = finished_job(2, fail=1)
    emu.advance(31 * 86400)  # the provider's 30-day retention has deleted every file
    assert not any(at_provider(emu, f) for f in files_of(old))
    report = retention.purge(older_than=30 * DAY)
    assert report.ok
    assert (report.jobs, report.items, report.files, report.files_gone) == (1, 2, 3, 3)
    assert not BatchJob.objects.filter(pk=old.pk).exists()


def test_finished_jobs_with_unannounced_results_are_kept(emu: EmulatorHandle) -> None:
    unsent = finished_job(2)
    RequestItem.objects.filter(job=unsent, custom_id="req-0").update(announced=False)
    no_finish_signal = finished_job(2)
    BatchJob.objects.filter(pk=no_finish_signal.pk).update(finish_announced=False)
    report = retention.purge(older_than=30 * DAY)
    assert report.jobs == 0 and report.skipped_unannounced == 2
    assert BatchJob.objects.filter(pk__in=[unsent.pk, no_finish_signal.pk]).count() == 2
    assert all(at_provider(emu, f) for f in files_of(unsent))
    assert "2 job(s) skipped: results not yet announced" in report.summary()


def test_a_failed_submission_being_purged_cannot_be_submitted_again_half_deleted() -> None:
    job = aged(make_job(30), JobState.SUBMIT_FAILED)
    attempts: list[str] = []

    def resubmit(done: int, total: int) -> None:
        if done == 10:  # between two chunks: a third of the items are already gone
            try:
                services.request_submit(job.pk)
            except InvalidStateError as err:
                attempts.append(str(err))

    report = retention.purge(older_than=30 * DAY, chunk=10, progress=resubmit, keep_files=True)
    assert report.jobs == 1 and report.items == 30 and report.chunks == 3
    assert len(attempts) == 1 and "cannot be submitted" in attempts[0]
    assert not BatchJob.objects.filter(pk=job.pk).exists()


def test_a_purge_killed_between_chunks_is_finished_by_the_next_run() -> None:
    job = aged(make_job(25), JobState.SUBMIT_FAILED)

    def crash(done: int, total: int) -> None:
        raise KeyboardInterrupt  # the process dies after the first chunk committed

    with pytest.raises(KeyboardInterrupt):
        retention.purge(older_than=30 * DAY, chunk=10, progress=crash, keep_files=True)
    half = BatchJob.objects.get(pk=job.pk)
    # Claimed: it can no longer be submitted with a third of its items gone.
    assert half.state == JobState.CANCELLED and half.items.count() == 15
    report = retention.purge(older_than=30 * DAY, chunk=10, keep_files=True)
    assert (report.jobs, report.items) == (1, 15)
    assert not BatchJob.objects.filter(pk=job.pk).exists()


def test_a_job_of_an_account_no_longer_configured_is_kept_and_reported(
    emu: EmulatorHandle,
) -> None:
    job = finished_job(1)
    BatchJob.objects.filter(pk=job.pk).update(account="removed")
    ProviderBatch.objects.filter(job=job).update(account="removed")
    report = retention.purge(older_than=30 * DAY)
    assert [pk for pk, _ in report.errors] == [job.pk]
    assert "Unknown account 'removed'" in report.errors[0][1]
    assert ProviderBatch.objects.filter(job=job, input_file_id=job.input_file_id).exists()
    assert at_provider(emu, job.input_file_id)


def test_items_go_in_chunks_each_its_own_transaction() -> None:
    n, chunk = 20_000, 1000
    job = make_job(items=chat_items(n))
    other = make_job(items=chat_items(5, prefix="keep-"))  # a draft: its items stay
    BatchJob.objects.filter(pk=job.pk).update(
        state=JobState.FINISHED,
        finish_announced=True,
        ingested_at=timezone.now() - 40 * DAY,
    )
    events: list[tuple[str, bool]] = []

    def record(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        events.append((sql, connection.in_atomic_block))
        return execute(sql, params, many, context)

    commit = connection.commit

    def counting_commit() -> None:
        events.append(("COMMIT", False))
        commit()

    seen: list[tuple[int, int]] = []
    item_table = RequestItem._meta.db_table
    with connection.execute_wrapper(record):
        connection.commit = counting_commit  # type: ignore[method-assign]
        try:
            report = retention.purge(
                older_than=30 * DAY,
                chunk=chunk,
                keep_files=True,
                progress=lambda done, total: seen.append((done, total)),
            )
        finally:
            del connection.commit
    assert (report.jobs, report.items, report.chunks) == (1, n, n // chunk)
    deletes = [
        i
        for i, (sql, _) in enumerate(events)
        if sql.startswith("DELETE") and f'"{item_table}"' in sql.split("WHERE")[0]
    ]
    # One bounded DELETE per chunk (the job row's cascade finds no item left to delete),
    # each inside a transaction that commits before the next starts.
    assert len(deletes) == n // chunk
    for i in deletes:
        assert events[i][1], "a DELETE ran outside a transaction"
    for a, b in itertools.pairwise(deletes):
        assert any(sql == "COMMIT" for sql, _ in events[a:b]), "two chunks shared a transaction"
    # Nothing but one pk per chunk was read: no item row was loaded to be deleted.
    assert not [sql for sql, _ in events if sql.startswith("SELECT") and '"body"' in sql]
    assert seen == [(chunk * (i + 1), n) for i in range(n // chunk)]
    assert not RequestItem.objects.filter(job_id=job.pk).exists()
    assert RequestItem.objects.filter(job=other).count() == 5


def test_purge_batches_command(emu: EmulatorHandle) -> None:
    old = finished_job(2)
    out = StringIO()
    call_command("purge_batches", "--older-than", "30d", "--dry-run", stdout=out)
    assert "dry run: would delete 1 job(s), 2 item(s) and 2 provider file(s)" in out.getvalue()
    assert BatchJob.objects.filter(pk=old.pk).exists()

    out = StringIO()
    call_command("purge_batches", "--older-than", "720h", "--chunk", "1", stdout=out)
    assert "deleted 1 job(s), 2 item(s) in 2 chunk(s), 2 provider file(s)" in out.getvalue()
    assert not BatchJob.objects.filter(pk=old.pk).exists()
    assert not any(at_provider(emu, f) for f in files_of(old))


def test_purge_batches_exits_non_zero_when_a_file_could_not_be_deleted(
    emu: EmulatorHandle,
) -> None:
    job = finished_job(1)
    emu.inject_fault("DELETE", "/v1/files/*", "status", status=400)
    err = StringIO()
    with pytest.raises(CommandError, match="1 job\\(s\\) kept"):
        call_command("purge_batches", "--older-than", "30d", stdout=StringIO(), stderr=err)
    assert f"job {job.pk} kept" in err.getvalue()
    assert BatchJob.objects.filter(pk=job.pk).exists()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("45s", 45), ("3600", 3600)],
)
def test_ages(text: str, seconds: int) -> None:
    assert parse_age(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "30 days", "-1d", "1.5h", "d", "30w"])
def test_bad_ages_are_refused(text: str) -> None:
    with pytest.raises(CommandError, match="--older-than"):
        call_command("purge_batches", "--older-than", text, stdout=StringIO())


@pytest.mark.parametrize("key", ["FILE_EXPIRES_AFTER", "OUTPUT_EXPIRES_AFTER"])
@pytest.mark.parametrize(
    ("value", "ok"),
    [(None, True), (3600, True), (2592000, True), (3599, False), (2592001, False), ("1h", False)],
)
def test_expiry_settings_are_range_checked(key: str, value: Any, ok: bool) -> None:
    with override_settings(
        OPENAI_BATCHES={"API_KEY": "sk-x", "QUEUE": "openai_batches", key: value}
    ):
        messages = [m for m in check_settings() if key in m.msg]
    assert (messages == []) == ok, messages
    if not ok:
        assert messages[0].id == "openai_batches.E002" and messages[0].hint


# The expiry settings reach the provider through services.submission (_upload, _submit_part).
def test_file_expires_after_reaches_the_upload(emu: EmulatorHandle) -> None:
    with override_settings(OPENAI_BATCHES={**emu_settings(emu), "FILE_EXPIRES_AFTER": 7200}):
        job = submitted_job(2)
    f = emu.get_file(job.input_file_id)
    assert f["expires_at"] == f["created_at"] + 7200


def test_output_expires_after_reaches_the_batch(emu: EmulatorHandle) -> None:
    with override_settings(OPENAI_BATCHES={**emu_settings(emu), "OUTPUT_EXPIRES_AFTER": 3600}):
        job = services.refresh(submitted_job(2))
    assert (
        job.state == JobState.FINISHED and job.items.filter(state=ItemState.SUCCEEDED).count() == 2
    )
    f = emu.get_file(job.output_file_id)
    assert f["expires_at"] == f["created_at"] + 3600
    emu.advance(3600)
    assert not at_provider(emu, job.output_file_id)


def test_without_the_settings_the_provider_default_applies(emu: EmulatorHandle) -> None:
    job = services.refresh(submitted_job(1))
    for file_id in files_of(job):
        f = emu.get_file(file_id)
        assert f["expires_at"] == f["created_at"] + 2592000


def emu_settings(emu: EmulatorHandle) -> dict[str, Any]:
    from django.conf import settings

    return {**settings.OPENAI_BATCHES, "BASE_URL": emu.base_url, "API_KEY": emu.api_key}
