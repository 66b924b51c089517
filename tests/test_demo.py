"""The README's demo runs end to end (fast mode) and every request gets an answer.

Runs ``example_project/manage.py demo --fast`` in a subprocess with its own temporary SQLite
database and no Redis, exactly as ``scripts/demo`` does after bootstrapping.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MANAGE = ROOT / "example_project" / "manage.py"

pytestmark = pytest.mark.slow


def run_demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "EXAMPLE_"))}
    env.pop("REDIS_URL", None)  # the in-process path: no Redis at all
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'demo.sqlite3'}"
    env["DJANGO_SETTINGS_MODULE"] = "example_project.settings"
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


def test_demo_runs_again_on_the_same_database(tmp_path: Path) -> None:
    """A second run reuses the reviews and the login and answers everything again."""
    assert run_demo(tmp_path, "--count", "12", "--fail", "0").returncode == 0
    result = run_demo(tmp_path, "--count", "12", "--fail", "0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Answered      12/12 (succeeded 12, failed 0)" in result.stdout
    assert "Batch job     2 " in result.stdout
