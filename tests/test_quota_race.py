"""Quota with real processes: two RQ workers on PostgreSQL compete to submit jobs that
share one model's enqueued-token budget, and the emulator's own count of enqueued tokens
shows the budget was never exceeded (CI runs this; it needs DATABASE_URL and REDIS_URL)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from openai_batches import jobs, services
from openai_batches.emulator import responses
from openai_batches.models import BatchJob, ItemState, JobState, QuotaEvent
from openai_batches.testing import EmulatorHandle, running_emulator
from tests.worker_helpers import rq_workers

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

REPO = Path(__file__).resolve().parent.parent
MODEL = "gpt-4o-mini"
ESTIMATOR = "openai_batches.emulator.responses.estimate_input_tokens"
JOBS = 8
ITEMS = 30


@pytest.fixture
def emu() -> Iterator[EmulatorHandle]:
    # Real time: each batch validates for 1 s and runs for 2 s or more.
    with running_emulator(timing="fast") as handle:
        yield handle


def items(prefix: str) -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"{prefix}{i}",
            "body": {
                "model": MODEL,
                "messages": [{"role": "user", "content": f"{i} " + "quota " * 40}],
            },
        }
        for i in range(ITEMS)
    ]


def job_tokens() -> int:
    return sum(
        responses.estimate_input_tokens("/v1/chat/completions", i["body"]) for i in items("x")
    )


@pytest.fixture
def workers(
    emu: EmulatorHandle, tmp_path: Path, settings: Any
) -> Iterator[list[subprocess.Popen[bytes]]]:
    limit = job_tokens() * 5 // 2  # two jobs fit at once, a third does not
    limits = {MODEL: limit}
    settings.OPENAI_BATCHES = {
        **settings.OPENAI_BATCHES,
        "ENQUEUED_TOKEN_LIMITS": limits,
        "TOKEN_ESTIMATOR": ESTIMATOR,
    }
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.quota_settings",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "OPENAI_BASE_URL": emu.base_url,
        "PYTHONPATH": str(REPO),
        "QUOTA_LIMITS": json.dumps(limits),
        "QUOTA_ESTIMATOR": ESTIMATOR,
    }
    with rq_workers(env, tmp_path, "quota") as procs:
        yield procs


def test_two_workers_never_exceed_the_budget(
    emu: EmulatorHandle, workers: list[subprocess.Popen[bytes]]
) -> None:
    need = job_tokens()
    limit = need * 5 // 2
    # The provider enforces the same limit: a batch over it would fail and be seen.
    emu.set_token_budget(MODEL, limit)
    created = [
        services.create_job(endpoint="/v1/chat/completions", items=items(f"j{n}-"))
        for n in range(JOBS)
    ]
    queue = jobs.get_queue()
    for job in created:
        services.request_submit(job)  # enqueues submit_job on commit
        queue.enqueue(jobs.submit_job, job.pk)  # and a second, racing submit of each
    most_waiting = 0
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        states = list(BatchJob.objects.values_list("state", flat=True))
        most_waiting = max(most_waiting, states.count(JobState.WAITING_QUOTA))
        if states.count(JobState.FINISHED) == JOBS:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"timed out: {sorted(states)}")
    for job in created:
        job.refresh_from_db()
        assert job.items.filter(state=ItemState.SUCCEEDED).count() == ITEMS, job.last_error
    peak = emu.emulator.state()["peak_enqueued_tokens"][MODEL]
    assert peak <= limit
    assert peak >= 2 * need  # the two workers did run batches side by side
    assert most_waiting >= 1  # and jobs did wait in line for room
    batches = emu.emulator.list_batches()
    assert len(batches) == JOBS  # one batch per job: none refused, none sent twice
    assert all(b["status"] == "completed" for b in batches)
    assert not QuotaEvent.objects.exists()
