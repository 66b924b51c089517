"""Test-side helpers for the crash and race suites (tests/test_crashes.py, test_races.py).

:func:`spawn` starts ``python -m tests.procs.child`` against the database the test uses (so
those tests are transactional, on PostgreSQL) and the emulator the test runs over HTTP;
:func:`recover` does what production does after a crash (``sync_batches`` passes, with the
dead attempt's submit lease expired); :func:`assert_invariants` checks the promise against
the emulator's own state and the database.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.db import connection
from django.utils import timezone

from openai_batches import services
from openai_batches.jsonl import METADATA_JOB_KEY
from openai_batches.models import FINAL_ITEM_STATES, BatchJob, ItemState, JobState
from openai_batches.testing import EmulatorHandle
from tests.testapp.models import ResultLog

from .receivers import FINISHED_MARK

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Child:
    """A running child process and its control folder."""

    proc: subprocess.Popen[str]
    control: Path
    log: Path

    def wait_reached(self, name: str, timeout: float = 60.0) -> None:
        """Block until the child is waiting at checkpoint ``name`` (fails if it exits)."""
        deadline = time.monotonic() + timeout
        while not (self.control / f"reached-{name}").exists():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"child exited ({self.proc.returncode}) before {name}: {self.output()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"child never reached {name}: {self.output()}")
            time.sleep(0.02)

    def release(self) -> None:
        (self.control / "release").touch()

    def finish(self, timeout: float = 120.0) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"child did not finish in {timeout}s: {self.output()}") from None

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def result(self) -> Any:
        """The JSON line the child printed at the end (after :meth:`finish`)."""
        for line in reversed(self.output().splitlines()):
            if line.startswith('{"result"'):
                return json.loads(line)
        raise AssertionError(f"child printed no result: {self.output()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def child_env(emu: EmulatorHandle, control: Path, **extra: str) -> dict[str, str]:
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        # The child must use the test database pytest-django created, not the dev one.
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "OPENAI_BASE_URL": emu.base_url,
        "PYTHONPATH": str(REPO),
        "PROC_CONTROL_DIR": str(control),
        "PROC_CALLS_FILE": str(control.parent / "calls.log"),
    }
    env.update(extra)
    return env


def spawn(
    emu: EmulatorHandle,
    tmp_path: Path,
    action: str,
    job_pk: int,
    *,
    crash_at: str | None = None,
    wait_at: str | None = None,
    hit: int = 1,
    name: str = "child",
    **extra_env: str,
) -> Child:
    control = tmp_path / name
    control.mkdir()
    log = tmp_path / f"{name}.log"
    args = [sys.executable, "-m", "tests.procs.child", action, str(job_pk), "--hit", str(hit)]
    if crash_at:
        args += ["--crash-at", crash_at]
    if wait_at:
        args += ["--wait-at", wait_at]
    with open(log, "w") as out:
        proc = subprocess.Popen(
            args,
            cwd=REPO,
            env=child_env(emu, control, **extra_env),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    return Child(proc, control, log)


def expire_submit_leases() -> int:
    """What time does to a dead submitter's lease (SUBMIT_LEASE, 15 minutes by default)."""
    stale = timezone.now() - timedelta(days=1)
    return BatchJob.objects.filter(state=JobState.SUBMITTING).update(submit_attempt_at=stale)


def recover(emu: EmulatorHandle, job_pks: list[int], passes: int = 6) -> list[services.SyncReport]:
    """Run ``sync_batches`` passes (as cron would) until the jobs are finished and announced."""
    expire_submit_leases()
    reports = []
    for _ in range(passes):
        reports.append(services.sync())
        jobs = BatchJob.objects.filter(pk__in=job_pks)
        if all(
            j.state in (JobState.FINISHED, JobState.CANCELLED) and j.finish_announced for j in jobs
        ):
            break
    return reports


def calls(tmp_path: Path) -> Counter[tuple[str, int, str]]:
    """Every receiver call any process made, committed or rolled back: (kind, job, key)."""
    path = tmp_path / "calls.log"
    if not path.exists():
        return Counter()
    return Counter(
        (kind, int(job), key)
        for _pid, kind, job, key in (line.split(" ", 3) for line in path.read_text().splitlines())
    )


def assert_invariants(
    emu: EmulatorHandle,
    job_pk: int,
    *,
    outcome: str = "completed",
    cancelled_duplicates: bool = False,
) -> BatchJob:
    """The promise, checked against the emulator's own state and the database.

    ``cancelled_duplicates``: a duplicate batch is tolerated only if it was cancelled (the
    case of a submitter that outlived its lease: nothing billed twice, nothing untracked).
    """
    job = BatchJob.objects.get(pk=job_pk)
    batches = emu.list_batches()
    parts = list(job.batches.order_by("part"))
    tracked = {p.provider_batch_id for p in parts}

    def job_of(batch: dict[str, Any]) -> str:
        return str((batch.get("metadata") or {}).get(METADATA_JOB_KEY, "")).partition("/")[0]

    mine = [b for b in batches if job_of(b) == str(job.uuid)]
    if cancelled_duplicates:
        others = [b for b in mine if b["id"] not in tracked]
        assert all(b["status"] in ("cancelling", "cancelled") for b in others), others
        mine = [b for b in mine if b["id"] in tracked]
    # Exactly one provider batch per part, each the one its part tracks.
    assert sorted(b["id"] for b in mine) == sorted(tracked), (mine, tracked)
    assert len(tracked) == len(parts) and "" not in tracked, parts
    # No uploaded file left that never became a batch (the provider keeps and bills those).
    used = {b.get("input_file_id") for b in batches}
    orphans = [f["id"] for f in emu.list_files(purpose="batch")["data"] if f["id"] not in used]
    assert orphans == [], f"uploads that never became a batch: {orphans}"
    assert {p.input_file_id for p in parts} == {b["input_file_id"] for b in mine}
    # Every item exactly one final result.
    states = Counter(job.items.values_list("state", flat=True))
    assert set(states) <= FINAL_ITEM_STATES, states
    assert sum(states.values()) == job.item_count
    assert job.state == JobState.FINISHED, (job.state, job.last_error)
    assert job.provider_status == outcome
    if outcome == "completed":
        assert states[ItemState.SUCCEEDED] == job.item_count, states
    # Every result's receiver effect recorded exactly once (a duplicate delivery would hit
    # ResultLog's unique constraint and be recorded as an error), job_finished exactly once.
    logged = Counter(ResultLog.objects.filter(job_id=job.pk).values_list("custom_id", flat=True))
    items = set(job.items.values_list("custom_id", flat=True))
    assert {k for k in logged if k != FINISHED_MARK} == items
    assert max(logged.values()) == 1
    assert logged[FINISHED_MARK] == 1, "job_finished not delivered exactly once"
    assert not job.items.filter(announced=False).exists()
    assert job.finish_announced
    assert job.last_error == "", job.last_error
    return job
