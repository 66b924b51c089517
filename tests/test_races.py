"""The race suite: real processes on PostgreSQL, with the interleaving forced, not hoped for.

One child waits at an exact lifecycle step (``--wait-at``: it creates ``reached-<step>`` and
polls for a ``release`` file this test creates) while other real processes act on the same
job or on others: a second submitter, a second ``sync_batches`` pass, the poll a webhook
triggers (``jobs.poll_job``, what the RQ worker runs for ``request_refresh``), and admin
actions posted through the real admin. Then the same invariants as the crash suite.

Needs PostgreSQL (skipped without ``DATABASE_URL`` off CI, a failure in CI).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from openai_batches import services
from openai_batches.models import BatchJob, JobState
from openai_batches.testing import EmulatorHandle, running_emulator
from tests.lifecycle_helpers import chat_items, make_job, submitted_job
from tests.procs.helpers import Child, assert_invariants, recover, spawn
from tests.procs.receivers import connect, disconnect

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ITEMS = 12
ADMIN = "race-admin"
#: How long another process may take while one is paused. A sync pass over a few small
#: jobs takes well under a second here; the bound is generous for a loaded CI machine, and
#: far below "until the paused process is released" (never, in these tests).
BOUND = 20.0


@pytest.fixture
def emu() -> Iterator[EmulatorHandle]:
    with running_emulator() as handle:
        yield handle


@pytest.fixture(autouse=True)
def _receivers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("PROC_CALLS_FILE", str(tmp_path / "calls.log"))
    connect()
    yield
    disconnect()


@pytest.fixture
def children() -> Iterator[list[Child]]:
    """Every child a test starts; killed at the end so none holds a lock past the test."""
    started: list[Child] = []
    yield started
    for child in started:
        child.release()
        child.stop()


def start(children: list[Child], *args: Any, **kwargs: Any) -> Child:
    child = spawn(*args, **kwargs)
    children.append(child)
    return child


def finish_ok(child: Child, timeout: float = 120.0) -> Any:
    code = child.finish(timeout)
    assert code == 0, child.output()
    return child.result()["result"]


def finish_within(child: Child, bound: float, paused: Child) -> float:
    """Wait for ``child`` while ``paused`` stays paused; its own elapsed time."""
    deadline = time.monotonic() + bound
    while child.proc.poll() is None:
        assert time.monotonic() < deadline, (
            f"still running after {bound}s while another process is paused: {child.output()}"
        )
        time.sleep(0.05)
    assert paused.proc.poll() is None, "the paused process finished first: nothing was tested"
    assert child.proc.returncode == 0, child.output()
    elapsed: float = child.result()["elapsed"]
    print(f"{child.log.stem} finished in {elapsed:.2f}s while another process was paused")
    return elapsed


# --- two submitters ---------------------------------------------------------------------------


@pytest.mark.parametrize("step", ["submit.claimed", "submit.uploaded", "submit.created"])
def test_two_submitters_one_batch(
    emu: EmulatorHandle, tmp_path: Path, children: list[Child], step: str
) -> None:
    """A second worker arriving while the first is at ``step`` does nothing."""
    job = make_job(ITEMS)
    services.request_submit(job)
    first = start(children, emu, tmp_path, "submit", job.pk, wait_at=step, name="first")
    first.wait_reached(step)
    second = start(children, emu, tmp_path, "submit", job.pk, name="second")
    assert finish_within(second, BOUND, paused=first) < BOUND
    assert BatchJob.objects.get(pk=job.pk).state == JobState.SUBMITTING
    first.release()
    assert finish_ok(first) == JobState.SUBMITTED
    recover(emu, [job.pk])
    assert_invariants(emu, job.pk)


def test_submitter_outliving_its_lease_leaves_no_second_billed_batch(
    emu: EmulatorHandle, tmp_path: Path, children: list[Child]
) -> None:
    """A slow upload outlives SUBMIT_LEASE; a second worker takes over and creates the batch.
    When the first wakes up and creates another, that one must be cancelled, not billed
    untracked (issue 10 item 3), and no upload may be left over."""
    job = make_job(ITEMS)
    services.request_submit(job)
    slow = start(children, emu, tmp_path, "submit", job.pk, wait_at="submit.uploaded", name="slow")
    slow.wait_reached("submit.uploaded")
    BatchJob.objects.filter(pk=job.pk).update(submit_attempt_at=timezone.now() - timedelta(days=1))
    takeover = start(children, emu, tmp_path, "submit", job.pk, name="takeover")
    finish_within(takeover, BOUND, paused=slow)
    assert BatchJob.objects.get(pk=job.pk).state == JobState.SUBMITTED
    slow.release()
    slow.finish()
    recover(emu, [job.pk])
    assert_invariants(emu, job.pk, cancelled_duplicates=True)


# --- two sync_batches passes ----------------------------------------------------------------


def test_two_sync_passes_at_once(
    emu: EmulatorHandle, tmp_path: Path, children: list[Child]
) -> None:
    """Pass A is paused after uploading job X; pass B runs meanwhile over X (requested) and Y
    (submitted): B leaves X to A, and finishes Y."""
    x = make_job(ITEMS, name="x")
    services.request_submit(x)
    y = submitted_job(ITEMS, name="y")
    a = start(children, emu, tmp_path, "sync", x.pk, wait_at="submit.uploaded", name="a")
    a.wait_reached("submit.uploaded")
    b = start(children, emu, tmp_path, "sync", x.pk, name="b")
    finish_within(b, BOUND, paused=a)
    assert BatchJob.objects.get(pk=y.pk).state == JobState.FINISHED
    a.release()
    finish_ok(a)
    recover(emu, [x.pk, y.pk])
    assert_invariants(emu, x.pk)
    assert_invariants(emu, y.pk)


def test_two_sync_passes_ingesting_the_same_job(
    emu: EmulatorHandle, tmp_path: Path, children: list[Child]
) -> None:
    job = submitted_job(ITEMS)
    a = start(children, emu, tmp_path, "sync", job.pk, wait_at="ingest.before_commit", name="a")
    a.wait_reached("ingest.before_commit")
    b = start(children, emu, tmp_path, "sync", job.pk, name="b")
    time.sleep(1.0)  # B skips the locked job or waits for it: either way, no second ingest
    a.release()
    finish_ok(a)
    finish_ok(b)
    assert_invariants(emu, job.pk)


# --- sync + webhook poll + admin action on one job ------------------------------------------


@pytest.fixture
def admin_user() -> str:
    get_user_model().objects.create_superuser(ADMIN, "admin@example.com", "pw")
    return ADMIN


@pytest.mark.parametrize("step", ["refresh.fetched", "ingest.rows_written", "announce.chunk_sent"])
def test_sync_webhook_poll_and_admin_refresh_race(
    emu: EmulatorHandle, tmp_path: Path, children: list[Child], admin_user: str, step: str
) -> None:
    """Cron's sync pauses at ``step`` on a finished batch; a webhook-triggered poll and an
    admin's "Refresh now" hit the same job; then everything runs on. Results once each,
    job_finished once, nothing stuck."""
    job = submitted_job(ITEMS)
    action = "poll" if step == "refresh.fetched" else "sync"
    a = start(
        children, emu, tmp_path, action, job.pk, wait_at=step, name="a", PROC_ANNOUNCE_CHUNK="5"
    )
    a.wait_reached(step)
    webhook = start(children, emu, tmp_path, "poll", job.pk, name="webhook")
    admin = start(
        children, emu, tmp_path, "admin-refresh", job.pk, name="admin", PROC_ADMIN_USER=admin_user
    )
    time.sleep(1.0)  # let both reach (or pass) the job's row lock while A holds it
    a.release()
    for child in (a, webhook, admin):
        finish_ok(child)
    assert admin.result()["result"]["status"] == 200
    recover(emu, [job.pk])
    assert_invariants(emu, job.pk)


def test_admin_cancel_during_submission_is_refused_and_nothing_is_lost(
    emu: EmulatorHandle, tmp_path: Path, children: list[Child], admin_user: str
) -> None:
    job = make_job(ITEMS)
    services.request_submit(job)
    submitter = start(children, emu, tmp_path, "submit", job.pk, wait_at="submit.created", name="s")
    submitter.wait_reached("submit.created")  # the provider has the batch; the job does not
    admin = start(
        children, emu, tmp_path, "admin-cancel", job.pk, name="admin", PROC_ADMIN_USER=admin_user
    )
    messages = (
        finish_within(admin, BOUND, paused=submitter) and admin.result()["result"]["messages"]
    )
    assert any("under way" in m for m in messages), messages
    submitter.release()
    assert finish_ok(submitter) == JobState.SUBMITTED
    recover(emu, [job.pk])
    assert_invariants(emu, job.pk)


# --- a paused ingest must not hold up other jobs (issue 10 item 6) ----------------------------


def test_paused_ingest_does_not_delay_a_sync_pass_over_other_jobs(
    emu: EmulatorHandle, tmp_path: Path, children: list[Child]
) -> None:
    """One process is stuck in the middle of job X's download (its row lock held); cron's
    next pass must still refresh, ingest and announce every other job, promptly."""
    x = submitted_job(ITEMS, name="x")
    others = [submitted_job(ITEMS, name=f"other {n}") for n in range(3)]
    paused = start(
        children, emu, tmp_path, "refresh", x.pk, wait_at="ingest.rows_written", name="paused"
    )
    paused.wait_reached("ingest.rows_written")
    cron = start(children, emu, tmp_path, "sync", x.pk, name="cron")
    elapsed = finish_within(cron, BOUND, paused=paused)
    assert elapsed < BOUND / 2, elapsed
    for job in others:
        assert BatchJob.objects.get(pk=job.pk).state == JobState.FINISHED
    paused.release()
    finish_ok(paused)
    recover(emu, [x.pk, *[j.pk for j in others]])
    for pk in (x.pk, *[j.pk for j in others]):
        assert_invariants(emu, pk)


@pytest.mark.parametrize("how", ["cancel", "admin-cancel"])
def test_paused_ingest_does_not_delay_a_users_cancel_of_another_job(
    emu: EmulatorHandle, tmp_path: Path, children: list[Child], admin_user: str, how: str
) -> None:
    x = submitted_job(ITEMS, name="x")
    # A batch that never finishes by itself, so there is something to cancel.
    running = submitted_job(items=chat_items(4, emulator={"stall": True}), name="running")
    paused = start(
        children, emu, tmp_path, "refresh", x.pk, wait_at="ingest.rows_written", name="paused"
    )
    paused.wait_reached("ingest.rows_written")
    user = start(children, emu, tmp_path, how, running.pk, name="user", PROC_ADMIN_USER=admin_user)
    elapsed = finish_within(user, BOUND, paused=paused)
    assert elapsed < BOUND / 2, elapsed
    assert emu.get_batch(running.provider_batch_id)["status"] in ("cancelling", "cancelled")
    paused.release()
    finish_ok(paused)
    recover(emu, [x.pk, running.pk])
    assert_invariants(emu, x.pk)
    assert_invariants(emu, running.pk, outcome="cancelled")


def test_a_slow_download_holds_up_neither_cron_nor_a_cancel(
    emu: EmulatorHandle, tmp_path: Path, children: list[Child], admin_user: str
) -> None:
    """A worker is in the middle of a slow (20 s) download of job X's results. Cron's full pass
    (X included) and a user's cancel of another job run meanwhile and finish promptly; cron
    ingests X itself, and the slow worker, when its download ends, ingests nothing twice."""
    x = submitted_job(ITEMS, name="x")
    other = submitted_job(ITEMS, name="other")
    running = submitted_job(items=chat_items(4, emulator={"stall": True}), name="running")
    x = services.refresh(x, ingest=False)  # completed at the provider, not ingested
    assert x.is_terminal and x.output_file_id
    # 20 s: far longer than cron and a cancel need, even on a loaded CI machine.
    fault = emu.inject_fault("GET", f"/v1/files/{x.output_file_id}/content", "slow", delay=20.0)
    slow = start(children, emu, tmp_path, "ingest", x.pk, name="slow", PROC_TIMEOUT="60")
    deadline = time.monotonic() + 60
    while fault.count > 0:  # the emulator took the fault: the slow download has begun
        assert time.monotonic() < deadline and slow.proc.poll() is None, slow.output()
        time.sleep(0.02)
    cron = start(children, emu, tmp_path, "sync", x.pk, name="cron")
    user = start(
        children, emu, tmp_path, "admin-cancel", running.pk, name="user", PROC_ADMIN_USER=admin_user
    )
    assert finish_within(cron, 15.0, paused=slow) < 7.0
    assert finish_within(user, 15.0, paused=slow) < 7.0
    assert BatchJob.objects.get(pk=x.pk).state == JobState.FINISHED  # by cron, not the slow one
    assert finish_ok(slow) == 0  # its download ended after cron's ingest: nothing written
    recover(emu, [x.pk, other.pk, running.pk])
    assert_invariants(emu, x.pk)
    assert_invariants(emu, other.pk)
    assert_invariants(emu, running.pk, outcome="cancelled")


def test_admin_cancel_while_a_webhook_poll_holds_a_stale_answer(
    emu: EmulatorHandle, tmp_path: Path, children: list[Child], admin_user: str
) -> None:
    """The poll has read "in_progress" from the provider; before it applies that, an admin
    cancels the job. The stale answer must not undo the cancel, and the job must end
    cancelled with every item one final result."""
    job = submitted_job(items=chat_items(4, emulator={"stall": True}), name="running")
    poll = start(children, emu, tmp_path, "poll", job.pk, wait_at="refresh.fetched", name="poll")
    poll.wait_reached("refresh.fetched")
    admin = start(
        children, emu, tmp_path, "admin-cancel", job.pk, name="admin", PROC_ADMIN_USER=admin_user
    )
    finish_within(admin, BOUND, paused=poll)
    assert BatchJob.objects.get(pk=job.pk).provider_status in ("cancelling", "cancelled")
    poll.release()
    finish_ok(poll)
    assert BatchJob.objects.get(pk=job.pk).provider_status in ("cancelling", "cancelled")
    recover(emu, [job.pk])
    assert_invariants(emu, job.pk, outcome="cancelled")
