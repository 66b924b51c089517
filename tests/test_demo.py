"""The README's demo runs end to end (fast mode) and every request gets an answer.

Runs ``example_project/manage.py demo --fast`` in a subprocess with its own temporary SQLite
database and no Redis, exactly as ``scripts/demo`` does after bootstrapping; then again on
the Django Tasks runner (``EXAMPLE_RUNNER=tasks``), where a real ``db_worker`` subprocess
does the work, and ``manage.py serve`` on that runner with a real job through its worker.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MANAGE = ROOT / "example_project" / "manage.py"

pytestmark = pytest.mark.slow


def demo_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "EXAMPLE_"))}
    env.pop("REDIS_URL", None)  # no Redis at all
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'demo.sqlite3'}"
    env["DJANGO_SETTINGS_MODULE"] = "example_project.settings"
    return {**env, **extra}


def run_demo(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = env or demo_env(tmp_path)
    return subprocess.run(
        [sys.executable, str(MANAGE), "demo", "--fast", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_demo_answers_every_request(tmp_path: Path) -> None:
    result = run_demo(tmp_path)
    out = result.stdout
    assert result.returncode == 0, f"stdout:\n{out}\nstderr:\n{result.stderr}"
    answered = re.search(r"Answered\s+(\d+)/(\d+) \(succeeded (\d+), failed (\d+)\)", out)
    assert answered, out
    done, total, succeeded, failed = map(int, answered.groups())
    assert total == 40 and done == total
    assert (succeeded, failed) == (38, 2)  # the demo asks the emulator to reject two
    assert "Written back  40 results delivered to the receiver" in out
    assert re.search(r"Cost\s+\$\d+\.\d+ at batch prices vs \$\d+\.\d+ synchronously", out)
    assert "-> sentiment " in out and "failed: invalid_prompt" in out  # rows read back
    # The receiver's answers came through item.result, parsed into the Pydantic model.
    assert "Sample parsed results (item.result, model reviews.schemas.Sentiment):" in out
    parsed = re.findall(r"parsed Sentiment\(sentiment='(\w+)', reason='Emulated text", out)
    assert len(parsed) == 3 and set(parsed) <= {"positive", "negative", "neutral", "mixed"}
    assert re.search(r"not parsed: invalid_prompt: ", out)
    assert "http://127.0.0.1:8000/admin/" in out and "demo / demo" in out
    assert "Traceback" not in result.stderr


def test_demo_splits_a_job_larger_than_one_batch_into_parts(tmp_path: Path) -> None:
    result = run_demo(tmp_path, "--count", "12", "--max-per-batch", "5", "--fail", "0")
    out = result.stdout
    assert result.returncode == 0, f"stdout:\n{out}\nstderr:\n{result.stderr}"
    assert "At most 5 requests per provider batch" in out
    assert "Split into 3 parts, one provider batch each, of at most 5 requests: 5 + 5 + 2" in out
    assert re.search(r"Batches\s+3 part\(s\): 5 \+ 5 \+ 2 requests\n", out), out
    # One job, carried to completion over its three batches.
    assert "Answered      12/12 (succeeded 12, failed 0)" in out
    assert "Written back  12 results delivered to the receiver" in out
    db = sqlite3.connect(tmp_path / "demo.sqlite3")
    try:
        rows = db.execute(
            "SELECT part, item_count, state, provider_status FROM openai_batches_providerbatch "
            "ORDER BY part"
        ).fetchall()
    finally:
        db.close()
    assert rows == [
        (1, 5, "finished", "completed"),
        (2, 5, "finished", "completed"),
        (3, 2, "finished", "completed"),
    ]


def test_demo_refuses_a_batch_size_below_one(tmp_path: Path) -> None:
    result = run_demo(tmp_path, "--count", "3", "--max-per-batch", "0")
    assert result.returncode != 0
    assert "--max-per-batch must be at least 1, not 0." in result.stderr


def test_demo_runs_again_on_the_same_database(tmp_path: Path) -> None:
    """A second run reuses the reviews and the login and answers everything again."""
    assert run_demo(tmp_path, "--count", "12", "--fail", "0").returncode == 0
    result = run_demo(tmp_path, "--count", "12", "--fail", "0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Answered      12/12 (succeeded 12, failed 0)" in result.stdout
    assert "Batch job     2 " in result.stdout


def task_rows(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT task_path, status FROM django_tasks_database_dbtaskresult ORDER BY enqueued_at"
        ).fetchall()


def test_demo_on_the_tasks_runner_lets_a_real_db_worker_do_the_work(tmp_path: Path) -> None:
    result = run_demo(tmp_path, env=demo_env(tmp_path, EXAMPLE_RUNNER="tasks"))
    out = result.stdout
    assert result.returncode == 0, f"stdout:\n{out}\nstderr:\n{result.stderr}"
    assert "Started a Django Tasks worker (db_worker --queue-name openai_batches)" in out
    assert "Submission requested: the db_worker uploads the JSONL" in out
    assert "services.sync() passes" not in out  # not the in-process path
    assert "Answered      40/40 (succeeded 38, failed 2)" in out
    assert "Written back  40 results delivered to the receiver" in out
    assert "Done: every one of 40 requests answered." in out
    assert "Traceback" not in result.stderr
    # The worker process ran the app's tasks from the demo's own SQLite database.
    rows = task_rows(tmp_path / "demo.sqlite3")
    assert rows[0] == ("openai_batches.tasks.submit_job", "SUCCESSFUL"), rows
    assert ("openai_batches.tasks.poll_job", "SUCCESSFUL") in rows, rows
    assert {status for _, status in rows} == {"SUCCESSFUL"}, rows
    worker_log = re.search(
        r"db_worker --queue-name openai_batches\) on the demo's database "
        r"\(log in (\S+)\)",
        out,
    )
    assert worker_log, out
    log = (Path(worker_log.group(1)) / "db_worker.log").read_text(errors="replace")
    assert "Traceback" not in log, log[-4000:]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Runs in the example project while `serve` runs: one job of 5 reviews, submission requested.
REQUEST = """
from reviews.batching import create_classification_job
from reviews.models import Review
from openai_batches import services
job = create_classification_job(list(Review.objects.order_by("pk")[:5]))
services.request_submit(job)
print(job.pk)
"""


def test_serve_on_the_tasks_runner_runs_a_db_worker_that_finishes_a_job(tmp_path: Path) -> None:
    port, emulator_port = free_port(), free_port()
    env = demo_env(tmp_path, EXAMPLE_RUNNER="tasks")
    env.pop("DJANGO_SETTINGS_MODULE")
    # The emulator `serve` starts; `shell` below must use it too.
    env["EXAMPLE_OPENAI_BASE_URL"] = f"http://127.0.0.1:{emulator_port}/v1"
    serve = subprocess.Popen(
        [
            sys.executable,
            str(MANAGE),
            "serve",
            "--port",
            str(port),
            *("--emulator-port", str(emulator_port), "--timing", "instant"),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert serve.stdout is not None
        banner = ""
        deadline = time.monotonic() + 90
        while "Ctrl-C stops everything" not in banner and time.monotonic() < deadline:
            line = serve.stdout.readline()
            if not line:
                break
            banner += line
        assert "The example project is running" in banner, banner
        worker = re.search(r"Worker +(.*)", banner)
        assert worker, banner
        assert worker.group(1).startswith("db_worker --queue-name openai_batches"), banner
        shell = subprocess.run(
            [sys.executable, str(MANAGE), "shell", "-c", REQUEST],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert shell.returncode == 0, shell.stderr
        job_id = int(shell.stdout.strip().splitlines()[-1])
        db = tmp_path / "demo.sqlite3"
        deadline = time.monotonic() + 60
        state = ""
        while time.monotonic() < deadline:
            with sqlite3.connect(db) as conn:
                (state,) = conn.execute(
                    "SELECT state FROM openai_batches_batchjob WHERE id = ?", (job_id,)
                ).fetchone()
            if state == "finished":
                break
            assert serve.poll() is None, "serve stopped before the job finished"
            time.sleep(0.3)
        assert state == "finished"
        with sqlite3.connect(db) as conn:
            (answered,) = conn.execute(
                "SELECT COUNT(*) FROM openai_batches_requestitem WHERE job_id = ? "
                "AND state = 'succeeded'",
                (job_id,),
            ).fetchone()
        assert answered == 5
        assert ("openai_batches.tasks.submit_job", "SUCCESSFUL") in task_rows(db)
    finally:
        serve.send_signal(signal.SIGINT)
        try:
            serve.wait(timeout=30)
        except subprocess.TimeoutExpired:
            serve.kill()


def test_demo_stops_at_once_when_its_db_worker_dies(tmp_path: Path) -> None:
    """A worker that dies (here: at start) fails the demo with its log, not after the timeout."""
    hook = tmp_path / "hook"
    hook.mkdir()
    # Only the worker subprocess (its argv names db_worker) exits, with status 3.
    (hook / "sitecustomize.py").write_text(
        'import os, sys\nif "db_worker" in sys.argv:\n    os._exit(3)\n'
    )
    path = os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH", "")]))
    env = demo_env(tmp_path, EXAMPLE_RUNNER="tasks", PYTHONPATH=path)
    started = time.monotonic()
    result = run_demo(tmp_path, "--timeout", "90", env=env)
    elapsed = time.monotonic() - started
    assert result.returncode != 0, result.stdout
    assert "A worker exited with status 3 before batch job 1 finished; see " in result.stderr
    assert "db_worker.log" in result.stderr
    assert "Gave up" not in result.stderr
    assert elapsed < 60, elapsed
