"""Dashboard benchmark: the admin dashboard over 10,000 jobs and 1,000,000 items.

Builds jobs spread over 120 days (five models, every outcome, some in flight) with 100 items
each, a tenth of them failed with one of a dozen error codes, then requests the dashboard
through Django's test client as a superuser and prints, per period (7, 30, 365 days):

    queries      how many the page ran (the same for any number of rows)
    time         the median of five requests, whole page rendered

plus the job list and one live-update poll for a page of 50 moving jobs. Usage::

    python benchmarks/dashboard.py                     # PostgreSQL (DATABASE_URL or local)
    python benchmarks/dashboard.py --db sqlite --jobs 1000 --per-job 100

PostgreSQL: ``DATABASE_URL`` is used as is; without it the script creates the database
``openai_batches_dashboard_bench`` on 127.0.0.1:5432 (user postgres) and drops it after.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _common import configure_django, database
from _data import MODELS, build

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BENCH_DB = "openai_batches_dashboard_bench"

urlpatterns: list[Any] = []  # filled in main(), once Django is set up


def configure(db: dict[str, Any]) -> None:
    configure_django(
        db,
        apps=(
            "django.contrib.admin",
            "django.contrib.sessions",
            "django.contrib.messages",
            "django.contrib.staticfiles",
        ),
        openai_batches={
            "PRICES": {
                m: {"input": 0.1 * (i + 1), "output": 0.4 * (i + 1)} for i, m in enumerate(MODELS)
            }
        },
        ROOT_URLCONF="__main__",
        ALLOWED_HOSTS=["*"],
        STATIC_URL="/static/",
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
        ],
        TEMPLATES=[
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "APP_DIRS": True,
                "OPTIONS": {
                    "context_processors": [
                        "django.template.context_processors.request",
                        "django.contrib.auth.context_processors.auth",
                        "django.contrib.messages.context_processors.messages",
                    ]
                },
            }
        ],
    )


def timed(client: Any, url: str, params: dict[str, str], runs: int = 5) -> tuple[int, float, int]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    times = []
    queries = 0
    size = 0
    for _ in range(runs):
        with CaptureQueriesContext(connection) as ctx:
            started = time.perf_counter()
            response = client.get(url, params)
            times.append(time.perf_counter() - started)
        assert response.status_code == 200, (url, response.status_code)
        queries = len(ctx.captured_queries)
        size = len(response.content)
    return queries, statistics.median(times), size


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--per-job", type=int, default=100)
    args = parser.parse_args(argv)

    with database(args.db, BENCH_DB) as db:
        configure(db)
        from django.contrib import admin
        from django.core.management import call_command
        from django.db import connection
        from django.test import Client
        from django.urls import path, reverse

        urlpatterns.append(path("admin/", admin.site.urls))
        call_command("migrate", verbosity=0, stdout=io.StringIO())
        from django.contrib.auth.models import User

        from openai_batches.models import BatchJob, RequestItem

        started = time.perf_counter()
        build(args.jobs, args.per_job)
        print(
            f"built {BatchJob.objects.count():,} jobs and {RequestItem.objects.count():,} items "
            f"in {time.perf_counter() - started:.1f}s on {connection.vendor}"
        )
        client = Client()
        client.force_login(User.objects.create_superuser("bench", password=None))
        dashboard = reverse("admin:openai_batches_batchjob_dashboard")
        for days in ("7", "30", "365"):
            queries, seconds, size = timed(client, dashboard, {"days": days})
            print(
                f"dashboard {days:>3} days  {queries} queries  {seconds * 1000:7.0f} ms  "
                f"({size / 1024:.0f} KiB)"
            )
        queries, seconds, _ = timed(client, reverse("admin:openai_batches_batchjob_changelist"), {})
        print(f"job list (50 rows)    {queries} queries  {seconds * 1000:7.0f} ms")
        moving = BatchJob.objects.filter(state="submitted").values_list("pk", flat=True)[:50]
        queries, seconds, _ = timed(
            client,
            reverse("admin:openai_batches_batchjob_live"),
            {"ids": ",".join(map(str, moving))},
        )
        print(f"live poll (50 jobs)   {queries} queries  {seconds * 1000:7.0f} ms")


if __name__ == "__main__":
    main()
