"""Settings for the test suite.

With ``DATABASE_URL`` (postgres://...) and ``REDIS_URL`` set, the suite runs on the real
PostgreSQL and Redis (as CI does). Without them it uses SQLite and, in ``conftest.py``, an
in-process fakeredis, so a newcomer's machine needs nothing running.
"""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "tests.urls"
ALLOWED_HOSTS = ["*"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_rq",
    "rest_framework",
    "drf_spectacular",
    "openai_batches",
    "tests.testapp",
]
MIDDLEWARE = [
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
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


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
            # Per-process name: parallel runs on one server (CI, a developer) never collide.
            "TEST": {"NAME": f"test_openai_batches_{os.getpid()}"},
        }
    if parts.scheme == "sqlite":
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": parts.path[1:] or ":memory:"}
    raise ValueError(f"Unsupported DATABASE_URL scheme: {parts.scheme}")


DATABASE_URL = os.environ.get("DATABASE_URL", "")
DATABASES = {
    "default": database_from_url(DATABASE_URL)
    if DATABASE_URL
    else {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
}

REDIS_URL = os.environ.get("REDIS_URL", "")
#: True when the suite talks to a real Redis; conftest installs fakeredis otherwise.
USE_REAL_REDIS = bool(REDIS_URL)
RQ_QUEUES = {
    "default": {"URL": REDIS_URL or "redis://127.0.0.1:6379/15", "DEFAULT_TIMEOUT": 600},
    "openai_batches": {"URL": REDIS_URL or "redis://127.0.0.1:6379/15", "DEFAULT_TIMEOUT": 600},
}
RQ = {"COMMIT_MODE": "auto"}  # the app must enqueue on commit whatever the host chooses

OPENAI_BATCHES = {
    "API_KEY": "sk-test-key-never-logged",
    # Tests point this at an emulator; worker subprocesses get its URL from the environment.
    "BASE_URL": os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:9/v1"),
    "QUEUE": "openai_batches",
    "POLL_INTERVAL": 1,
    "POLL_MAX_INTERVAL": 10,
    "MAX_RETRIES": 2,
    "TIMEOUT": 10,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"null": {"class": "logging.NullHandler"}},
    "root": {"handlers": ["null"], "level": "WARNING"},
}
