"""The crash suite: SIGKILL a real process at every named step of the lifecycle, recover
the way production does, and check the promise against the emulator's own state.

Each case starts ``python -m tests.procs.child`` (Django with the test settings, on the
test's PostgreSQL database, calling the emulator this test serves over HTTP), which kills
itself with SIGKILL at one of ``services.CHECKPOINTS``. Then this process recovers as cron
would: ``services.sync()`` passes (what ``sync_batches`` runs), with the dead attempt's
submit lease expired. The invariants (:func:`tests.procs.assert_invariants`): one provider
batch per job carrying its UUID, no upload that never became a batch, every item one final
result, every receiver's database effect exactly once, ``job_finished`` exactly once.

Needs PostgreSQL (the child and the test share the database): skipped without
``DATABASE_URL`` off CI, a failure in CI (see ``conftest.py``).
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from openai_batches import services
from openai_batches.models import BatchJob, JobState
from openai_batches.testing import EmulatorHandle, running_emulator
from tests.lifecycle_helpers import make_job, submitted_job
from tests.procs.helpers import assert_invariants, calls, recover, spawn
from tests.procs.receivers import FINISHED_MARK, connect, disconnect

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ITEMS = 12
CHUNK = 5  # the child's ingest and announce chunk: 12 items span three of each

#: (checkpoint, what the child runs, which occurrence of the checkpoint kills it).
#: ``sync`` is cron's ``sync_batches`` pass; ``poll`` is the RQ job a webhook or the poll
#: chain runs; ``submit`` and ``refresh`` are the worker's and the admin's calls.
CASES = [
    *[
        (cp, action, 1)
        for cp in services.CHECKPOINTS
        if cp.startswith("submit.")
        for action in ("submit", "sync")
    ],
    ("refresh.fetched", "refresh", 1),
    ("refresh.fetched", "poll", 1),
    *[
        (cp, action, 1)
        for cp in services.CHECKPOINTS
        if cp.startswith(("ingest.", "announce."))
        for action in ("refresh", "sync")
    ],
    ("announce.chunk_sent", "sync", 2),  # after the first chunk's marks committed
]


def test_every_checkpoint_has_a_crash_case() -> None:
    assert {cp for cp, _action, _hit in CASES} == set(services.CHECKPOINTS)


@pytest.fixture
def emu() -> Iterator[EmulatorHandle]:
    with running_emulator() as handle:
        yield handle


@pytest.fixture(autouse=True)
def _receivers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("PROC_CALLS_FILE", str(tmp_path / "calls.log"))  # as the children do
    connect()
    yield
    disconnect()


@pytest.mark.parametrize(("checkpoint", "action", "hit"), CASES, ids=lambda v: str(v))
def test_sigkill_at_checkpoint_then_recover(
    emu: EmulatorHandle, tmp_path: Path, checkpoint: str, action: str, hit: int
) -> None:
    if checkpoint.startswith("submit."):
        job = make_job(ITEMS)
        services.request_submit(job)
    else:
        job = submitted_job(ITEMS)
    child = spawn(
        emu,
        tmp_path,
        action,
        job.pk,
        crash_at=checkpoint,
        hit=hit,
        PROC_INGEST_CHUNK=str(CHUNK),
        PROC_ANNOUNCE_CHUNK=str(CHUNK),
    )
    code = child.finish()
    # The child must have died at the checkpoint, or the case tests nothing.
    assert code == -signal.SIGKILL, f"exit {code}, not killed at {checkpoint}: {child.output()}"

    reports = recover(emu, [job.pk])
    assert_invariants(emu, job.pk)
    assert all(r.ok for r in reports), [r.errors for r in reports]

    # Side effects outside the database (an email, an HTTP call) are what a rollback cannot
    # undo: exactly once unless the kill fell between a receiver and its commit.
    made = calls(tmp_path)
    results = Counter({key: n for (kind, _job, key), n in made.items() if kind == "result"})
    finished = made[("finished", job.pk, FINISHED_MARK)]
    items = sorted(BatchJob.objects.get(pk=job.pk).items.values_list("custom_id", flat=True))
    if checkpoint == "announce.chunk_sent":
        # The killed chunk's receivers ran, then ran again after recovery; no other did.
        twice = {k for k, n in results.items() if n == 2}
        assert len(twice) == CHUNK and set(results) == set(items), results
        assert max(results.values()) == 2
    else:
        assert sorted(results) == items and set(results.values()) == {1}, results
    assert finished == (2 if checkpoint == "announce.finished_sent" else 1)


def test_recovery_leaves_other_jobs_alone(emu: EmulatorHandle, tmp_path: Path) -> None:
    """A crash in one job's ingest does not lose or repeat another job's results."""
    crashed = submitted_job(ITEMS, name="crashed")
    other = submitted_job(ITEMS, name="other")
    child = spawn(emu, tmp_path, "sync", crashed.pk, crash_at="ingest.before_commit", hit=1)
    assert child.finish() == -signal.SIGKILL, child.output()
    recover(emu, [crashed.pk, other.pk])
    for pk in (crashed.pk, other.pk):
        assert_invariants(emu, pk)
    assert BatchJob.objects.filter(state=JobState.FINISHED).count() == 2


#: A job split in three parts (12 items, 5 per batch): crashes between two parts'
#: submissions, and in the middle of ingesting one part while another waits.
PART_CASES = [
    ("submit.adopted", "submit", 1),  # part 1 recorded, part 2 not started
    ("submit.uploaded", "submit", 2),  # part 2 uploaded, its file id not recorded
    ("submit.created", "sync", 2),  # part 2 created at the provider, not recorded
    ("ingest.rows_written", "refresh", 1),  # part 1's first chunk written, uncommitted
    ("ingest.before_commit", "sync", 2),  # part 1 ingested and committed; part 2 killed
]


@pytest.mark.parametrize(("checkpoint", "action", "hit"), PART_CASES, ids=lambda v: str(v))
def test_sigkill_in_a_split_job_then_recover_with_one_batch_per_part(
    emu: EmulatorHandle,
    tmp_path: Path,
    settings: Any,
    checkpoint: str,
    action: str,
    hit: int,
) -> None:
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "MAX_REQUESTS_PER_BATCH": CHUNK}
    job = make_job(ITEMS)
    services.request_submit(job)
    assert job.batches.count() == 3
    if checkpoint.startswith("ingest."):
        job = services.submit(job)
        assert job.state == JobState.SUBMITTED
    child = spawn(
        emu,
        tmp_path,
        action,
        job.pk,
        crash_at=checkpoint,
        hit=hit,
        PROC_INGEST_CHUNK=str(CHUNK - 2),
        PROC_ANNOUNCE_CHUNK=str(CHUNK),
    )
    code = child.finish()
    assert code == -signal.SIGKILL, f"exit {code}, not killed at {checkpoint}: {child.output()}"

    reports = recover(emu, [job.pk])
    job = assert_invariants(emu, job.pk)
    assert all(r.ok for r in reports), [r.errors for r in reports]
    assert job.batches.count() == 3
    assert sorted(job.batches.values_list("item_count", flat=True)) == [2, 5, 5]
    results = Counter(
        {key: n for (kind, _job, key), n in calls(tmp_path).items() if kind == "result"}
    )
    assert len(results) == ITEMS and set(results.values()) == {1}, results
