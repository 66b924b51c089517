"""Real RQ worker processes for the tests that are about workers (PostgreSQL and Redis)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@contextmanager
def rq_workers(
    env: dict[str, str], logs: Path, prefix: str, count: int = 2
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` ``manage rqworker --with-scheduler`` processes with ``env``, stopped on exit;
    a traceback in any worker's log fails the test (a crash must not pass as a slow job)."""
    procs = []
    for n in range(count):
        log = open(logs / f"worker{n}.log", "wb")  # noqa: SIM115 - closed with the process
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "django",
                    "rqworker",
                    "openai_batches",
                    "--with-scheduler",
                    "--name",
                    f"{prefix}-{n}-{uuid.uuid4().hex[:8]}",
                ],
                env=env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    yield procs
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    for n in range(count):
        text = (logs / f"worker{n}.log").read_text(errors="replace")
        assert "Traceback" not in text, text[-4000:]
