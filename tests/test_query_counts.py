"""Query counts that must not grow with the page or the job (issue 13), and the per-outcome
item counts the job lists read instead of counting items.

Each test measures the same page or pass at two sizes and asserts the same number of
queries: a query per row (or per job, or per result) shows up as a difference. Work runs
against the bundled emulator over HTTP, as everywhere else.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.test import APIClient

from openai_batches import services, signals
from openai_batches.models import BatchJob, ItemState, JobState, ProviderBatch, RequestItem
from openai_batches.testing import EmulatorHandle, running_emulator
from tests.lifecycle_helpers import make_job, submitted_job
from tests.testapp.models import ResultLog
from tests.testapp.receivers import log_result

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def no_host_receiver() -> Iterator[None]:
    """Without the test project's own receiver (one INSERT per result): these tests count
    the app's queries, not what a receiver chooses to run."""
    uid = "tests.testapp.log_result"
    signals.result_received.disconnect(dispatch_uid=uid)
    try:
        yield
    finally:
        signals.result_received.connect(log_result, dispatch_uid=uid)


CHANGELIST = "admin:openai_batches_batchjob_changelist"


@pytest.fixture
def emu() -> Iterator[EmulatorHandle]:
    with running_emulator() as handle:
        yield handle


def queries(action: Callable[[], Any]) -> list[str]:
    with CaptureQueriesContext(connection) as ctx:
        action()
    return [q["sql"] for q in ctx.captured_queries]


def finished_jobs(n: int, owner: User | None = None, items: int = 2) -> None:
    """``n`` jobs that ran and were ingested (one part each), through the services."""
    for _ in range(n):
        services.refresh(submitted_job(items, owner=owner))


# -- the job lists --------------------------------------------------------------------


def test_admin_job_list_queries_do_not_grow_with_rows_and_never_read_items(
    emu: EmulatorHandle, admin_user: User
) -> None:
    client = Client()
    client.force_login(admin_user)

    def page() -> None:
        response = client.get(reverse(CHANGELIST))
        assert response.status_code == 200

    finished_jobs(2)
    page()  # warm-up: the user's permissions are cached after the first request
    few = queries(page)
    finished_jobs(10)
    make_job(2)  # a draft: no part at all
    many = queries(page)
    assert BatchJob.objects.count() == 13
    assert len(few) == len(many), (few, many)
    items = RequestItem._meta.db_table
    assert not [q for q in many if items in q], "the job list read the item table"


def test_admin_job_list_shows_the_counts_the_services_keep(
    emu: EmulatorHandle, admin_user: User
) -> None:
    emu.emulator.fail_request("req-1", 400)
    job = services.refresh(submitted_job(3))
    client = Client()
    client.force_login(admin_user)
    html = client.get(reverse(CHANGELIST)).content.decode()
    assert 'data-completed="2" data-failed="1" data-total="3"' in html
    assert (job.succeeded_count, job.failed_count) == (2, 1)


def test_api_job_list_queries_do_not_grow_with_the_page(emu: EmulatorHandle) -> None:
    alice = User.objects.create_user("alice", password="pw")
    api = APIClient()
    api.force_authenticate(alice)

    def page() -> None:
        response = api.get("/api/batches/jobs/", {"page_size": 100})
        assert response.status_code == 200, response.content

    finished_jobs(2, owner=alice)
    page()  # warm-up: the user's permissions are cached after the first request
    few = queries(page)
    finished_jobs(10, owner=alice)
    make_job(2, owner=alice)
    many = queries(page)
    assert len(few) == len(many), (few, many)
    assert len(api.get("/api/batches/jobs/", {"page_size": 100}).json()["results"]) == 13


def test_api_results_stream_queries_do_not_grow_with_the_job_and_lines_hold_the_stored_values(
    emu: EmulatorHandle,
) -> None:
    alice = User.objects.create_user("alice", password="pw")
    api = APIClient()
    api.force_authenticate(alice)

    def stream(job: BatchJob) -> list[dict[str, Any]]:
        response = api.get(f"/api/batches/jobs/{job.uuid}/results/")
        assert response.status_code == 200
        return [json.loads(line) for line in b"".join(response.streaming_content).splitlines()]

    emu.emulator.fail_request("req-2", 400)
    small = services.refresh(submitted_job(3, owner=alice))
    big = services.refresh(submitted_job(30, owner=alice))
    # An answer with what JSON escapes: quotes, newlines, non-ASCII, a backslash.
    odd = {"text": 'un "café"\n\\ 日本', "n": [1, 2.5, None, True], "nested": {"k": {}}}
    RequestItem.objects.filter(job=big, custom_id="req-5").update(response=odd)
    stream(small)  # warm-up: the user's permissions are cached after the first request
    assert len(queries(lambda: stream(small))) == len(queries(lambda: stream(big)))
    lines = stream(big)
    stored = {i.custom_id: i for i in RequestItem.objects.filter(job=big).order_by("pk")}
    assert [line["custom_id"] for line in lines] == list(stored)
    for line in lines:
        item = stored[line["custom_id"]]
        assert line == {
            "custom_id": item.custom_id,
            "state": item.state,
            "status_code": item.status_code,
            "response": item.response,
            "error": item.error,
        }
    assert lines[5]["response"] == odd
    assert [line["state"] for line in stream(small)] == ["succeeded", "succeeded", "failed"]


# -- sync_batches ---------------------------------------------------------------------


def test_sync_pass_over_unchanged_jobs_runs_the_same_queries_for_3_and_12_jobs() -> None:
    # A clock that never moves: every batch stays "validating", nothing changes.
    with running_emulator(timing="realistic", clock="manual"):
        jobs = [submitted_job(1) for _ in range(3)]
        services.sync()  # the first pass records what the provider says
        few = queries(services.sync)
        jobs += [submitted_job(1) for _ in range(9)]
        services.sync()
        # Jobs polled a different number of times back off from different intervals.
        BatchJob.objects.filter(pk=jobs[5].pk).update(poll_interval=0)
        before = {j.pk: (j.last_polled_at, j.poll_interval) for j in BatchJob.objects.all()}
        many = queries(services.sync)
        report = services.sync()
    assert len(few) == len(many), (few, many)
    assert sorted(report.refreshed) == sorted(j.pk for j in jobs) and report.ok
    writes = [q for q in many if q.startswith(("INSERT", "UPDATE", "DELETE"))]
    assert len(writes) == 1, writes  # the next polls of every job, in one statement
    after = BatchJob.objects.all()
    assert all(j.last_polled_at > before[j.pk][0] for j in after)  # polled: backed off
    assert len({interval for _, interval in before.values()}) == 3
    assert all(j.poll_interval > before[j.pk][1] for j in after)
    assert all(
        abs((j.next_poll_at - j.last_polled_at).total_seconds() - j.poll_interval) < 1e-3
        for j in after
    )
    assert all(j.state == JobState.SUBMITTED for j in after)
    assert set(ProviderBatch.objects.values_list("provider_status", flat=True)) == {"validating"}


def test_sync_applies_a_change_among_unchanged_jobs() -> None:
    with running_emulator(timing="realistic", clock="manual") as emu:
        jobs = [submitted_job(1) for _ in range(8)]
        services.sync()
        moved = jobs[3].batches.get()
        emu.emulator.cancel_batch(moved.provider_batch_id)  # cancelled on the dashboard
        report = services.sync()
    assert report.ok and sorted(report.refreshed) == sorted(j.pk for j in jobs)
    statuses = dict(ProviderBatch.objects.values_list("pk", "provider_status"))
    assert statuses.pop(moved.pk) in ("cancelling", "cancelled")
    assert set(statuses.values()) == {"validating"}


# -- ingest and announce --------------------------------------------------------------


def test_ingest_and_announce_queries_do_not_grow_with_the_job(
    emu: EmulatorHandle, no_host_receiver: None
) -> None:
    calls: list[str] = []

    def receiver(*, custom_id: str, **kwargs: Any) -> None:
        calls.append(custom_id)

    signals.result_received.connect(receiver)
    try:
        small, big = submitted_job(10), submitted_job(100)
        few = queries(lambda: services.ingest(services.refresh(small, ingest=False)))
        many = queries(lambda: services.ingest(services.refresh(big, ingest=False)))
    finally:
        signals.result_received.disconnect(receiver)
    assert len(few) == len(many), (few, many)
    assert len(calls) == 110 and len(set(calls)) == 100  # req-0..9 in both jobs
    assert not RequestItem.objects.pending_announcement().exists()


def test_a_receiver_that_runs_no_query_costs_no_savepoint(
    emu: EmulatorHandle, no_host_receiver: None
) -> None:
    seen: list[str] = []

    def counting(*, custom_id: str, **kwargs: Any) -> None:
        seen.append(custom_id)

    job = services.refresh(submitted_job(20), ingest=False)
    signals.result_received.connect(counting)
    try:
        sql = queries(lambda: services.ingest(job))
    finally:
        signals.result_received.disconnect(counting)
    assert len(seen) == 20
    assert sum(q.startswith("SAVEPOINT") for q in sql) < 5  # the atomic blocks' own, not 20


def test_a_failing_receiver_without_a_query_drops_its_on_commit_callbacks(
    emu: EmulatorHandle, no_host_receiver: None
) -> None:
    job = services.refresh(submitted_job(3), ingest=False)
    ran: list[str] = []

    def receiver(*, custom_id: str, **kwargs: Any) -> None:
        transaction.on_commit(lambda: ran.append(custom_id))
        if custom_id == "req-1":
            raise RuntimeError("after on_commit")
        ResultLog.objects.create(job_id=job.pk, custom_id=custom_id, succeeded=True)

    signals.result_received.connect(receiver)
    try:
        services.ingest(job)
    finally:
        signals.result_received.disconnect(receiver)
    assert sorted(ran) == ["req-0", "req-2"]
    assert RequestItem.objects.pending_announcement().get().custom_id == "req-1"
    assert sorted(ResultLog.objects.values_list("custom_id", flat=True)) == ["req-0", "req-2"]


# -- the counts the lists read --------------------------------------------------------


def test_item_counts_follow_ingest_retry_and_the_retried_results(emu: EmulatorHandle) -> None:
    emu.emulator.fail_request("req-1", 400, times=1)
    emu.emulator.fail_request("req-3", 400, times=1)
    job = services.refresh(submitted_job(4))
    part = job.batches.get()
    assert (job.succeeded_count, job.failed_count) == (2, 2)
    assert (part.succeeded_count, part.failed_count) == (2, 2)
    job = services.retry(job, "failed")
    assert (job.succeeded_count, job.failed_count) == (2, 0)
    assert BatchJob.objects.filter(pk=job.pk, succeeded_count=2, failed_count=0).exists()
    assert ProviderBatch.objects.get(pk=part.pk).failed_count == 0  # its failures went again
    job = services.submit(job)
    job = services.refresh(job)
    assert job.state == JobState.FINISHED
    assert (job.succeeded_count, job.failed_count) == (4, 0)
    second = job.batches.get(part=2)
    assert (second.succeeded_count, second.failed_count) == (2, 0)
    assert job.items.filter(state=ItemState.SUCCEEDED).count() == job.succeeded_count


def test_announce_on_a_database_without_returning_claims_and_marks_the_same(
    emu: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite before 3.35 has no UPDATE ... RETURNING: the chunk is read, then marked."""
    monkeypatch.setattr(services.announcing, "_update_returns_rows", lambda: False)
    seen: list[tuple[str, bool]] = []

    def receiver(*, item: RequestItem, custom_id: str, **kwargs: Any) -> None:
        seen.append((custom_id, item.announced))
        if custom_id == "req-2":
            raise RuntimeError("down")

    signals.result_received.connect(receiver)
    try:
        job = services.refresh(submitted_job(4))
    finally:
        signals.result_received.disconnect(receiver)
    assert sorted(seen) == [(f"req-{i}", True) for i in range(4)]
    assert RequestItem.objects.pending_announcement().get().custom_id == "req-2"
    assert ResultLog.objects.filter(job_id=job.pk).count() == 3  # req-2's rolled back
