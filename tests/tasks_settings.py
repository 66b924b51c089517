"""Settings for the Django Tasks runner's worker processes (``tests/test_tasks_runner.py``).

The suite's settings plus ``django-tasks-db``'s database backend, whose ``db_worker`` runs
the app's tasks, and ``RUNNER = "tasks"``. On Django 5.2 the ``django-tasks`` backport
provides ``django.tasks``'s API and its app connects the framework's signals.
"""

from __future__ import annotations

from importlib.util import find_spec

from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS, OPENAI_BATCHES

BACKPORT = find_spec("django.tasks") is None

INSTALLED_APPS = [*INSTALLED_APPS, *(["django_tasks"] if BACKPORT else []), "django_tasks_db"]
TASKS = {
    "default": {
        "BACKEND": "django_tasks_db.DatabaseBackend",
        "QUEUES": [OPENAI_BATCHES["QUEUE"]],
    }
}
OPENAI_BATCHES = {**OPENAI_BATCHES, "RUNNER": "tasks"}
