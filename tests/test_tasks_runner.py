"""The Django Tasks runner (``OPENAI_BATCHES['RUNNER'] = "tasks"``).

In-process tests use the Tasks framework's dummy backend (it records what is enqueued) to
pin the on-commit guarantees the RQ path has. The end-to-end test runs a real ``db_worker``
process of ``django-tasks-db``'s database backend on PostgreSQL (``tests/tasks_settings.py``)
and carries a job from ``request_submit`` to its last signal over the emulator.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, transaction
from django.test import override_settings

from openai_batches import jobs, services
from openai_batches.exceptions import ConfigurationError
from openai_batches.models import BatchJob, ItemState, JobState
from openai_batches.testing import EmulatorHandle, running_emulator
from tests.lifecycle_helpers import make_job
from tests.testapp.models import ResultLog

pytestmark = pytest.mark.django_db(transaction=True)

REPO = Path(__file__).resolve().parent.parent
QUEUE = "openai_batches"  # tests/settings.py's OPENAI_BATCHES["QUEUE"]


def _framework() -> Any:
    # Not via openai_batches.tasks: importing it defines the tasks, which the framework
    # checks against the backend configured at that moment (the fixture's).
    name = "django.tasks" if find_spec("django.tasks") else "django_tasks"
    return importlib.import_module(name)


@pytest.fixture
def emu() -> Iterator[EmulatorHandle]:
    with running_emulator() as handle:
        yield handle


@pytest.fixture
def dummy(settings: Any) -> Iterator[Any]:
    """RUNNER "tasks" on the framework's dummy backend; yields the backend."""
    framework = _framework()
    if framework.__name__ == "django_tasks":
        # The backport's app (not installed in the suite) connects its settings reset.
        importlib.import_module("django_tasks.signals")
    with override_settings(
        TASKS={
            "default": {
                "BACKEND": f"{framework.__name__}.backends.dummy.DummyBackend",
                "QUEUES": [QUEUE],
            }
        }
    ):
        settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "RUNNER": "tasks"}
        yield framework.task_backends["default"]


def _enqueued(backend: Any) -> list[tuple[str, list[Any], dict[str, Any]]]:
    return [(r.task.name, list(r.args), dict(r.kwargs)) for r in backend.results]


def test_submit_is_enqueued_as_a_task_only_after_commit(dummy: Any) -> None:
    job = make_job(2)
    with transaction.atomic():
        services.request_submit(job)
        assert dummy.results == []  # not before the intent is committed
    assert _enqueued(dummy) == [("submit_job", [job.pk], {})]
    (result,) = dummy.results
    assert result.task.queue_name == QUEUE
    assert result.task.module_path == "openai_batches.tasks.submit_job"


def test_rolled_back_intent_enqueues_no_task(dummy: Any) -> None:
    job = make_job(2)
    with pytest.raises(RuntimeError), transaction.atomic():
        services.request_submit(job)
        raise RuntimeError("the view failed after asking to submit")
    assert dummy.results == []
    assert BatchJob.objects.get(pk=job.pk).state == JobState.DRAFT


def test_submit_task_schedules_the_first_poll_with_run_after(
    dummy: Any, emu: EmulatorHandle
) -> None:
    from openai_batches import tasks

    job = services.request_submit(make_job(3))
    dummy.clear()
    assert tasks.submit_job.call(job.pk) == JobState.SUBMITTED
    job.refresh_from_db()
    (poll,) = dummy.results
    assert poll.task.name == "poll_job" and list(poll.args) == [job.pk]
    assert poll.task.run_after == job.next_poll_at  # a scheduled poll, not an immediate one
    dummy.clear()
    assert tasks.poll_job.call(job.pk, force=True) == JobState.FINISHED
    assert job.items.filter(state=ItemState.SUCCEEDED).count() == 3
    assert dummy.results == []  # a finished job's chain ends


def test_a_failing_tasks_backend_keeps_the_intent_and_logs_one_line(
    dummy: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def down(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("could not connect to the task database")

    monkeypatch.setattr(type(dummy), "enqueue", down)
    caplog.set_level(logging.DEBUG, logger="openai_batches.jobs")
    job = services.request_submit(make_job(1))
    assert BatchJob.objects.get(pk=job.pk).state == JobState.SUBMIT_REQUESTED
    (record,) = [r for r in caplog.records if r.name == "openai_batches.jobs"]
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert "tasks" in record.getMessage() and "could not connect" in record.getMessage()


def test_runner_none_enqueues_nothing(dummy: Any, settings: Any) -> None:
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "RUNNER": "none"}
    queue = jobs.get_queue()
    queue.empty()
    job = services.request_submit(make_job(1))
    assert dummy.results == [] and queue.count == 0
    assert BatchJob.objects.get(pk=job.pk).state == JobState.SUBMIT_REQUESTED


@pytest.mark.parametrize(
    ("conf", "expected"),
    [
        ({}, "rq"),
        ({"USE_RQ": True}, "rq"),
        ({"USE_RQ": False}, "none"),  # the deprecated spelling keeps working
        ({"RUNNER": "tasks", "USE_RQ": False}, "tasks"),  # RUNNER wins
        ({"RUNNER": "none", "USE_RQ": True}, "none"),
        ({"RUNNER": "rq"}, "rq"),
    ],
)
def test_runner_resolution(settings: Any, conf: dict[str, Any], expected: str) -> None:
    base = {k: v for k, v in settings.OPENAI_BATCHES.items() if k not in ("RUNNER", "USE_RQ")}
    settings.OPENAI_BATCHES = {**base, **conf}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # USE_RQ's; tested below
        assert jobs.runner() == expected


def test_an_unknown_runner_is_a_clear_error(settings: Any) -> None:
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "RUNNER": "celery"}
    with pytest.raises(ConfigurationError, match=r"RUNNER'\] is 'celery'; use one of: 'rq'"):
        services.request_submit(make_job(1))
    assert BatchJob.objects.get().state == JobState.DRAFT  # nothing half-saved


# -- a real db_worker process on PostgreSQL -------------------------------------------------


def _env(emu: EmulatorHandle) -> dict[str, str]:
    db = connection.settings_dict
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.tasks_settings",
        # The worker must use the test database pytest-django created, not the dev one.
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}",
        "OPENAI_BASE_URL": emu.base_url,
        "PYTHONPATH": str(REPO),
    }


def _django(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "django", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def wait_for(predicate: Callable[[], bool], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError("timed out waiting")


# Runs in a process with the Tasks settings (this one lacks django_tasks_db): asks for the
# submission inside a transaction and reports what the task table held before and after it
# committed, on the same connection (which would see its own uncommitted insert).
ENQUEUE = """
import json
from django.db import transaction
from django_tasks_db.models import DBTaskResult
from openai_batches import services
with transaction.atomic():
    services.request_submit({pk})
    inside = DBTaskResult.objects.count()
print(json.dumps({{"inside": inside, "after": DBTaskResult.objects.count()}}))
"""


@pytest.mark.postgres
@pytest.mark.slow
def test_a_job_end_to_end_through_a_real_db_worker(emu: EmulatorHandle, tmp_path: Path) -> None:
    env = _env(emu)
    _django(env, "migrate", "django_tasks_database", "--noinput")
    job = make_job(200)
    log_path = tmp_path / "db_worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "django",
                "db_worker",
                "--queue-name",
                QUEUE,
                "--interval",
                "0.2",
                "--no-startup-delay",
            ],
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            out = _django(env, "shell", "-c", ENQUEUE.format(pk=job.pk))
            counts = json.loads(out.strip().splitlines()[-1])
            assert counts == {"inside": 0, "after": 1}  # enqueued on commit, not before
            wait_for(lambda: BatchJob.objects.get(pk=job.pk).state == JobState.FINISHED)
            job.refresh_from_db()
            assert job.items.filter(state=ItemState.SUCCEEDED).count() == 200
            wait_for(lambda: not job.items.filter(announced=False).exists(), timeout=30)
            assert ResultLog.objects.filter(job_id=job.pk).count() == 200
            assert job.last_error == ""
        finally:
            worker.terminate()
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
    text = log_path.read_text(errors="replace")
    assert "Traceback" not in text, text[-4000:]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT task_path, status, run_after > enqueued_at "
            "FROM django_tasks_database_dbtaskresult ORDER BY enqueued_at"
        )
        rows = cursor.fetchall()
    paths = [row[0] for row in rows]
    assert paths[0] == "openai_batches.tasks.submit_job"
    assert "openai_batches.tasks.poll_job" in paths
    assert {row[1] for row in rows} == {"SUCCESSFUL"}, rows
    # Polls were scheduled for later with run_after, not run at once in a loop.
    assert any(path.endswith("poll_job") and deferred for path, _, deferred in rows)


# -- system checks ----------------------------------------------------------------------------


def _ids(settings: Any) -> list[str]:
    from openai_batches.checks import check_runner

    return [m.id for m in check_runner() if m.id]


def test_use_rq_is_deprecated_with_a_warning_naming_the_replacement(settings: Any) -> None:
    from openai_batches.checks import check_runner

    base = {k: v for k, v in settings.OPENAI_BATCHES.items() if k not in ("RUNNER", "USE_RQ")}
    settings.OPENAI_BATCHES = {**base, "USE_RQ": False}
    with pytest.warns(DeprecationWarning, match=r'USE_RQ.*deprecated.*"RUNNER": "none"'):
        assert jobs.runner() == "none"
    # A runtime warning, not a check: `manage.py check` (and the example site's banner) stay
    # quiet for projects that have not moved yet.
    assert check_runner() == []
    settings.OPENAI_BATCHES = {**base, "RUNNER": "none"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert jobs.runner() == "none"


def test_check_rejects_an_unknown_runner(settings: Any) -> None:
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "RUNNER": "celery"}
    assert _ids(settings) == ["openai_batches.E020"]


def test_check_accepts_a_usable_tasks_backend(dummy: Any, settings: Any) -> None:
    assert _ids(settings) == []


def test_check_rejects_a_tasks_backend_that_cannot_schedule(settings: Any) -> None:
    framework = _framework()
    if framework.__name__ == "django_tasks":
        importlib.import_module("django_tasks.signals")
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "RUNNER": "tasks"}
    with override_settings(
        TASKS={
            "default": {
                "BACKEND": f"{framework.__name__}.backends.immediate.ImmediateBackend",
                "QUEUES": ["default"],
            }
        }
    ):
        assert _ids(settings) == ["openai_batches.E022", "openai_batches.E023"]
