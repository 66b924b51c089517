"""A new user following only the README's quickstart gets a batch submitted and ingested.

Builds a fresh project with ``django-admin startproject`` in a temporary directory, pastes in
the README's settings block (step 2), the API URL line (step 4), an app with the README's
job-creation code and receiver (step 7), migrates, and runs ``manage.py sync_batches`` (step 6)
in subprocesses against the bundled emulator. No Redis: the queue URL points at a port where
nothing listens, which is exactly the cron-only deployment the README promises works.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()

pytestmark = pytest.mark.slow


def readme_block(marker: str, index: int = 0) -> str:
    """The ``index``-th fenced code block after ``<!-- quickstart:<marker> -->``."""
    start = README.index(f"<!-- quickstart:{marker} -->")
    blocks = re.findall(r"```[a-z]*\n(.*?)```", README[start:], flags=re.S)
    return textwrap.dedent(blocks[index])


ARTICLE_MODEL = """
from django.db import models


class Article(models.Model):
    text = models.TextField()
    summary = models.TextField(blank=True, default="")
"""

APPS = """
from django.apps import AppConfig


class ArticlesConfig(AppConfig):
    name = "articles"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from . import receivers  # noqa: F401
"""


@pytest.fixture
def emulator_url() -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "openai_batches.emulator", "--port", "0", "--timing", "instant"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()  # the emulator prints its base URL first
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The test's environment without any OpenAI or Django variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "DJANGO_"))}
    env.update(
        REDIS_URL="redis://127.0.0.1:1/0",  # no Redis: sync_batches must do everything
        PYTHONPATH=str(tmp_path),
        **extra,
    )
    env.pop("DATABASE_URL", None)
    return env


def runner(tmp_path: Path, env: dict[str, str]) -> Callable[..., str]:
    def run(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"{args}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        return result.stdout

    return run


def build_project(tmp_path: Path, run: Callable[..., str]) -> None:
    """Steps 1, 2 and 4 of the quickstart in a fresh ``startproject``."""
    run("-m", "django", "startproject", "mysite", ".")
    run("manage.py", "startapp", "articles")
    (tmp_path / "articles" / "models.py").write_text(ARTICLE_MODEL)
    (tmp_path / "articles" / "apps.py").write_text(APPS)
    receiver = readme_block("use", 1)
    (tmp_path / "articles" / "receivers.py").write_text(
        "from articles.models import Article\n" + receiver
    )

    # Step 2: the README's settings, verbatim. Step 4: its URL line.
    settings = tmp_path / "mysite" / "settings.py"
    settings.write_text(
        settings.read_text()
        + "\n"
        + readme_block("settings")
        + '\nINSTALLED_APPS += ["articles"]\n'
    )
    url_line = re.search(r'path\("api/batches/".*\),', README)
    assert url_line
    urls = tmp_path / "mysite" / "urls.py"
    urls.write_text(
        urls.read_text().replace(
            "from django.urls import path", "from django.urls import include, path"
        )
        + f"\nurlpatterns += [{url_line.group(0)}]\n"
    )


def test_quickstart_in_a_fresh_project(tmp_path: Path, emulator_url: str) -> None:
    assert emulator_url.startswith("http://127.0.0.1:")
    env = clean_env(
        tmp_path,
        OPENAI_BASE_URL=emulator_url,  # the settings block reads the SDK's variables
        OPENAI_API_KEY="sk-quickstart",
    )
    run = runner(tmp_path, env)
    build_project(tmp_path, run)

    # Step 3.
    run("manage.py", "makemigrations", "articles", "-v", "0")
    run("manage.py", "migrate", "-v", "0")
    assert "no issues" in run("manage.py", "check")

    # Step 7: create and submit a job with the README's code.
    use = readme_block("use", 0)
    run(
        "manage.py",
        "shell",
        "-v",
        "0",
        "-c",
        "from articles.models import Article\n"
        "for n in range(3): Article.objects.create(text=f'Article number {n} about batches.')\n"
        + use,
    )

    # Step 6: cron's sync_batches, a few passes: submit, then refresh + ingest + signals.
    state = ""
    for _ in range(5):
        run("manage.py", "sync_batches")
        state = run(
            "manage.py",
            "shell",
            "-v",
            "0",
            "-c",
            "from openai_batches.models import BatchJob; j = BatchJob.objects.get(); "
            "print(j.state, j.provider_status, j.items.filter(state='succeeded').count())",
        ).strip()
        if state.startswith("finished"):
            break
    assert state == "finished completed 3"

    # The README's receiver wrote each result back onto its article.
    summaries = run(
        "manage.py",
        "shell",
        "-v",
        "0",
        "-c",
        "from articles.models import Article\n"
        "for a in Article.objects.order_by('pk'): print(repr(a.summary))",
    ).splitlines()
    assert len(summaries) == 3
    assert all("Emulated reply" in s for s in summaries), summaries


def test_quickstart_migrates_without_an_api_key(tmp_path: Path) -> None:
    """CI and Docker builds run migrate, makemigrations and collectstatic with no secret set:
    a missing key is a warning there, and an error only under ``check --deploy``."""
    env = clean_env(tmp_path)  # no OPENAI_API_KEY, no OPENAI_BASE_URL: the real OpenAI URL
    run = runner(tmp_path, env)
    build_project(tmp_path, run)
    settings = tmp_path / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + f"\nSTATIC_ROOT = {str(tmp_path / 'static')!r}\n")

    run("manage.py", "makemigrations", "articles", "-v", "0")
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrate.returncode == 0, migrate.stderr
    assert "Applying openai_batches.0001" in migrate.stdout
    assert "openai_batches.W004" in migrate.stderr  # still said, not blocking
    run("manage.py", "collectstatic", "--noinput", "-v", "0")

    deploy = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert deploy.returncode != 0
    assert "openai_batches.E004" in deploy.stderr
    assert "OPENAI_API_KEY" in deploy.stderr
