"""The CLI, the management command and ``openai_batches.testing``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from django.conf import settings
from openai import OpenAI

from openai_batches.testing import EmulatorHandle, running_emulator

from .conftest import create_batch, line

ROOT = Path(__file__).resolve().parents[2]


def _serve(args: list[str], env: dict[str, str]) -> None:
    proc = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        with OpenAI(base_url=base_url, api_key="sk-cli", max_retries=0) as c:
            batch = create_batch(c, [line("a")])
            assert c.batches.retrieve(batch.id).status == "completed"
        root = base_url.removesuffix("/v1")
        assert httpx.get(f"{root}/_emulator/health").json()["timing"] == "instant"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""


def test_python_m_runs_without_django_settings(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    args = [sys.executable, "-m", "openai_batches.emulator", "--port", "0", "--timing", "instant"]
    _serve([*args, "--data-dir", str(tmp_path)], env)
    assert (tmp_path / "files").is_dir()


def test_management_command(tmp_path: Path) -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "django", "openai_emulator", "--port", "0", "--timing", "instant"]
    _serve(args, env)


def test_running_emulator_points_the_app_at_it() -> None:
    before = getattr(settings, "OPENAI_BATCHES", None)
    with running_emulator() as emu:
        assert settings.OPENAI_BATCHES["BASE_URL"] == emu.base_url
        assert settings.OPENAI_BATCHES["API_KEY"] == emu.api_key
        with OpenAI(base_url=emu.base_url, api_key=emu.api_key, max_retries=0) as c:
            batch = create_batch(c, [line("a")])
            assert emu.get_batch(batch.id)["status"] == "completed"
        emu.advance(10)  # delegated to the Emulator
    assert getattr(settings, "OPENAI_BATCHES", None) == before


def test_openai_emulator_fixture(openai_emulator: EmulatorHandle) -> None:
    assert settings.OPENAI_BATCHES["BASE_URL"] == openai_emulator.base_url
    assert (
        httpx.get(
            f"{openai_emulator.base_url}/batches",
            headers={"Authorization": f"Bearer {openai_emulator.api_key}"},
        ).json()["data"]
        == []
    )
