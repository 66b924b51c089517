"""The CLI, the management command and ``openai_batches.testing``."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
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


# --- ports: not runserver's, and a taken one is one clear line ---------------------------------


def test_default_port_is_not_runservers() -> None:
    import argparse

    from django.core.management.commands.runserver import Command as RunServer

    from openai_batches.emulator.cli import DEFAULT_PORT, add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args([]).port == DEFAULT_PORT
    assert str(DEFAULT_PORT) != RunServer.default_port
    # The example project's settings and `serve` expect the emulator on the same default.
    assert (
        f"127.0.0.1:{DEFAULT_PORT}/v1"
        in (ROOT / "example_project/example_project/settings.py").read_text()
    )


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _assert_one_clear_line(result: subprocess.CompletedProcess[str], port: int) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert f"127.0.0.1:{port}" in lines[0]
    assert "in use" in lines[0]


@pytest.mark.parametrize("entry", ["python -m", "manage.py openai_emulator"])
def test_emulator_on_a_taken_port_fails_with_one_line(taken_port: int, entry: str) -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT)}
    module = (
        ["-m", "openai_batches.emulator"]
        if entry == "python -m"
        else ["-m", "django", "openai_emulator"]
    )
    result = subprocess.run(
        [sys.executable, *module, "--port", str(taken_port)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    _assert_one_clear_line(result, taken_port)
    assert result.stdout == ""  # no base URL printed for a server that is not there


@pytest.mark.parametrize("which", ["--port", "--emulator-port"])
def test_serve_on_a_taken_port_fails_before_its_banner(
    taken_port: int, which: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "REDIS_URL")}
    # A scratch database: the check must come before migrate, but never touch the real one.
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    other = "--emulator-port" if which == "--port" else "--port"
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        free = spare.getsockname()[1]
    result = subprocess.run(
        [
            sys.executable,
            "example_project/manage.py",
            "serve",
            which,
            str(taken_port),
            other,
            str(free),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    _assert_one_clear_line(result, taken_port)
    assert which in result.stderr  # says how to pick another
    assert "is running" not in result.stdout
    # Failed before migrating: no table was made (Django 6.1's system checks may open, and
    # so create, an empty SQLite file first).
    db = tmp_path / "db.sqlite3"
    if db.exists():
        with sqlite3.connect(db) as conn:
            tables = conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
        assert tables == []


def test_management_command_serves_the_flavor_asked_for() -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "django", "openai_emulator", "--port", "0"]
    proc = subprocess.Popen(
        [*args, "--flavor", "anthropic"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        root = base_url.split("/v1")[0]
        answer = httpx.get(
            f"{root}/v1/messages/batches",
            headers={"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"},
        )
        # Anthropic's list shape, not OpenAI's: the flag reached the server.
        assert answer.status_code == 200, answer.text
        assert {"data", "has_more", "first_id", "last_id"} <= set(answer.json())
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
