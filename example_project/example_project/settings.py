"""Settings of the example project.

Defaults need nothing running: SQLite in ``example_project/db.sqlite3`` and the bundled
OpenAI emulator at ``http://127.0.0.1:8765/v1``. Environment variables change that:

- ``DATABASE_URL``: ``postgres://user:pass@host:5432/name`` or ``sqlite:////abs/path.db``.
- ``REDIS_URL``: ``redis://host:6379/0``; the demo then runs real RQ workers.
- ``EXAMPLE_RUNNER``: who does the background work, ``rq``, ``tasks`` or ``none`` (default
  ``rq`` with ``REDIS_URL``, else ``none``). ``tasks`` uses Django's Tasks framework with
  ``django-tasks-db``'s database backend: ``db_worker`` processes, no Redis.
- ``EXAMPLE_OPENAI_BASE_URL`` / ``EXAMPLE_OPENAI_API_KEY``: where the app sends batches.
  Deliberately not the SDK's ``OPENAI_BASE_URL``/``OPENAI_API_KEY``, so a key in your shell
  never makes the example spend money; ``manage.py demo --openai`` is the explicit opt-in.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-project-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "example_project.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

#: The DRF API is optional: installed with ``pip install django-openai-batches[api]``.
HAS_API = all(importlib.util.find_spec(m) for m in ("rest_framework", "drf_spectacular"))

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    *(["rest_framework", "drf_spectacular"] if HAS_API else []),
    "django_rq",
    "openai_batches",
    "reviews",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
STATIC_URL = "/static/"


def database_from_url(url: str) -> dict[str, object]:
    """A DATABASES entry from a postgres:// or sqlite:/// URL (no extra dependency)."""
    parts = urlsplit(url)
    if parts.scheme in ("postgres", "postgresql"):
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parts.path.lstrip("/")) or "postgres",
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
        }
    if parts.scheme == "sqlite":
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": unquote(parts.path[1:]) or str(BASE_DIR / "db.sqlite3"),
            # The demo's RQ workers write while the demo reads; wait for the lock, don't fail.
            "OPTIONS": {"timeout": 30},
        }
    raise ValueError(
        f"Unsupported DATABASE_URL scheme {parts.scheme!r}: use postgres:// or sqlite:///"
    )


DATABASES = {
    "default": database_from_url(
        os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}"
    )
}

REDIS_URL = os.environ.get("REDIS_URL", "")
#: Without REDIS_URL the example uses no Redis at all (``RUNNER`` below is "none"): nothing
#: is enqueued and the work is done by ``sync_batches`` (``scripts/serve`` runs it in a loop;
#: the demo runs the same passes in-process). That is also how a cron-only deployment works.
RQ_QUEUES = {
    "default": {"URL": REDIS_URL or "redis://127.0.0.1:6379/0", "DEFAULT_TIMEOUT": 600},
    "openai_batches": {"URL": REDIS_URL or "redis://127.0.0.1:6379/0", "DEFAULT_TIMEOUT": 600},
}

#: The app's queue: an RQ queue above, a Tasks queue below.
QUEUE = "openai_batches"
RUNNER = os.environ.get("EXAMPLE_RUNNER") or ("rq" if REDIS_URL else "none")
if RUNNER not in ("rq", "tasks", "none"):
    raise ValueError(f"EXAMPLE_RUNNER is {RUNNER!r}: use rq, tasks or none")
if RUNNER == "tasks":
    # Django 6 has django.tasks; on 5.2 the django-tasks backport's app provides it.
    BACKPORT = importlib.util.find_spec("django.tasks") is None
    for needed in (["django_tasks"] if BACKPORT else []) + ["django_tasks_db"]:
        if importlib.util.find_spec(needed) is None:
            raise ImportError(
                f"EXAMPLE_RUNNER=tasks needs {needed}: pip install 'django-openai-batches[tasks]'"
            )
    INSTALLED_APPS += [*(["django_tasks"] if BACKPORT else []), "django_tasks_db"]
    TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": [QUEUE]}}

EMULATOR_URL = "http://127.0.0.1:8765/v1"
OPENAI_BATCHES = {
    "BASE_URL": os.environ.get("EXAMPLE_OPENAI_BASE_URL") or EMULATOR_URL,
    # The emulator accepts any key; the real key only comes in through ``demo --openai``.
    "API_KEY": os.environ.get("EXAMPLE_OPENAI_API_KEY") or "sk-emulator",
    "QUEUE": QUEUE,
    "RUNNER": RUNNER,
    # Seconds: the emulator moves fast. Against the real API the defaults (30 s backing off
    # to 10 min) are kinder to the rate limits.
    "POLL_INTERVAL": float(os.environ.get("EXAMPLE_POLL_INTERVAL", "1")),
    "POLL_MAX_INTERVAL": 30,
    # USD per 1M tokens at *batch* rates (half the synchronous price), for the cost estimates.
    "PRICES": {
        "gpt-4o-mini": {"input": 0.075, "cached_input": 0.0375, "output": 0.30},
        "gpt-4.1-mini": {"input": 0.20, "cached_input": 0.05, "output": 0.80},
    },
}
# ``demo --max-per-batch M`` sets this for its worker subprocesses: smaller provider batches,
# so a job is split into parts.
if os.environ.get("EXAMPLE_MAX_REQUESTS_PER_BATCH"):
    OPENAI_BATCHES["MAX_REQUESTS_PER_BATCH"] = int(os.environ["EXAMPLE_MAX_REQUESTS_PER_BATCH"])

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.BasicAuthentication",
    ],
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"short": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "short"}},
    "loggers": {
        "openai_batches": {
            "handlers": ["console"],
            "level": os.environ.get("LOG_LEVEL", "WARNING"),
        },
        "reviews": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
    },
}
