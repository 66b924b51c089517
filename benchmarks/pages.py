"""Page benchmark: admin and API pages over 10,000 jobs and 1,000,000 items.

Builds (raw bulk SQL, see ``_data.py``) 10,000 jobs, one of them a finished 50,000-item job,
and 1,000,000 items in all, then requests through Django's test client, as a superuser::

    admin job list         at 10 and at 100 rows a page: queries must not grow with the page,
                           and no query may count items per row (reported: the queries that
                           read the item table, and the slowest query)
    admin job page         the 50,000-item job's change page
    admin dashboard        30 days
    API job list           at 10 and at 100 rows a page (``page_size``)
    API job detail         the 50,000-item job
    API results stream     the 50,000-item job's JSONL, body read to the end, alternated
                           with its floor: one server-side raw SELECT of the same five
                           columns on the driver's cursor, each row written as the same
                           JSON line (and, for reference, the bare SELECT alone)

Each page: queries, min and median of ``--repeat`` requests (one warm-up request first).

Usage::

    python benchmarks/pages.py                          # PostgreSQL (DATABASE_URL or local)
    python benchmarks/pages.py --db sqlite --jobs 200 --items 60000 --big 50000
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _common import alternate, configure_django, database, summary, write_json
from _data import build

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BENCH_DB = "openai_batches_pages_bench"

urlpatterns: list[Any] = []  # filled in main(), once Django is set up


def configure(db: dict[str, Any]) -> None:
    configure_django(
        db,
        apps=(
            "django.contrib.admin",
            "django.contrib.sessions",
            "django.contrib.messages",
            "django.contrib.staticfiles",
            "rest_framework",
            "drf_spectacular",
        ),
        openai_batches={
            "RUNNER": "none",
            "PRICES": {"gpt-4o-mini": {"input": 0.075, "output": 0.3}},
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
        REST_FRAMEWORK={"DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema"},
    )


def page(client: Any, url: str, params: dict[str, str], repeat: int) -> dict[str, Any]:
    """Queries and timings of one page; the body read to its end (streamed or not)."""
    from django.db import connection, reset_queries
    from django.test.utils import CaptureQueriesContext

    from openai_batches.models import RequestItem

    def get() -> tuple[float, int]:
        start = time.perf_counter()
        response = client.get(url, params)
        size = (
            sum(len(c) for c in response.streaming_content)
            if response.streaming
            else len(response.content)
        )
        elapsed = time.perf_counter() - start
        if response.status_code != 200:
            raise SystemExit(f"{url} answered {response.status_code}")
        return elapsed, size

    get()  # warm-up: imports, templates, URLconf
    # Each request empties the connection's query log (request_started), so the capture
    # must start from an empty log or its slice misses the request's queries.
    reset_queries()
    with CaptureQueriesContext(connection) as ctx:
        _, size = get()
    queries = ctx.captured_queries  # before the next request empties the log
    times = [get()[0] for _ in range(repeat)]
    item_table = RequestItem._meta.db_table
    slowest = max(queries, key=lambda q: float(q["time"])) if queries else {"sql": "", "time": 0}
    # The query run most often, literals blanked: one per row is the N+1 a growing count means.
    shapes = Counter(re.sub(r"\b\d+\b|'[^']*'", "?", q["sql"]) for q in queries)
    repeated_sql, repeated = shapes.most_common(1)[0] if shapes else ("", 0)
    return {
        **summary(times),
        "queries": len(queries),
        "repeated": repeated,
        # From FROM on: the column list says nothing about why the query runs per row.
        "repeated_sql": "SELECT ..." + repeated_sql[repeated_sql.find(" FROM ") :][:400],  # noqa: S608 - a report, never run
        "bytes": size,
        # Where each query touching the item table touches it (the SELECT lists come first).
        "item_queries": [
            "..." + q["sql"][max(0, q["sql"].find(item_table) - 250) :][:500] + "..."
            for q in queries
            if item_table in q["sql"]
        ],
        "slowest_sql": slowest["sql"][:400],
        "slowest_s": float(slowest["time"]),
    }


def results_floor(job_id: int, encode: bool) -> float:
    """The same five columns by one raw server-side SELECT, each row a JSON line."""
    from django.db import connection

    from openai_batches.models import RequestItem

    table = connection.ops.quote_name(RequestItem._meta.db_table)
    sql = (
        f"SELECT custom_id, state, status_code, response, error FROM {table} "  # noqa: S608
        f"WHERE job_id = {int(job_id)} ORDER BY id"
    )
    start = time.perf_counter()
    total = 0
    if connection.vendor == "postgresql":
        connection.ensure_connection()
        raw = connection.connection
        with raw.transaction(), raw.cursor(name="bench_floor") as cursor:
            cursor.itersize = 2000
            cursor.execute(sql)
            for custom_id, state, status_code, response, error in cursor:
                if encode:
                    line = {
                        "custom_id": custom_id,
                        "state": state,
                        "status_code": status_code,
                        "response": response,
                        "error": error,
                    }
                    total += len(json.dumps(line).encode() + b"\n")
    else:
        cursor = connection.connection.cursor()
        cursor.execute(sql)
        while rows := cursor.fetchmany(2000):
            for custom_id, state, status_code, response, error in rows:
                if encode:
                    line = {
                        "custom_id": custom_id,
                        "state": state,
                        "status_code": status_code,
                        "response": json.loads(response) if response else None,
                        "error": json.loads(error) if error else None,
                    }
                    total += len(json.dumps(line).encode() + b"\n")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--big", type=int, default=50_000, help="items of the one big job")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    per_job = (args.items - args.big) // (args.jobs - 1)

    with database(args.db, BENCH_DB) as db:
        configure(db)
        from django.contrib import admin
        from django.contrib.auth.models import User
        from django.core.management import call_command
        from django.db import connection
        from django.test import Client
        from django.urls import include, path, reverse

        from openai_batches.models import BatchJob, RequestItem

        urlpatterns.append(path("admin/", admin.site.urls))
        urlpatterns.append(path("api/batches/", include("openai_batches.api.urls")))
        call_command("migrate", verbosity=0, stdout=io.StringIO())
        started = time.perf_counter()
        big = build(args.jobs - 1, per_job, big_job=args.big)
        built = time.perf_counter() - started
        n_jobs, n_items = BatchJob.objects.count(), RequestItem.objects.count()
        print(f"built {n_jobs:,} jobs and {n_items:,} items in {built:.0f}s on {connection.vendor}")
        client = Client()
        client.force_login(User.objects.create_superuser("bench", password=None))
        job_admin = admin.site._registry[BatchJob]
        changelist = reverse("admin:openai_batches_batchjob_changelist")
        pages: dict[str, Any] = {}
        for rows in (10, 100):
            job_admin.list_per_page = rows
            pages[f"admin job list, {rows} rows"] = page(client, changelist, {}, args.repeat)
        job_admin.list_per_page = 50
        pages["admin job page (50,000 items)"] = page(
            client, reverse("admin:openai_batches_batchjob_change", args=[big.pk]), {}, args.repeat
        )
        pages["admin dashboard, 30 days"] = page(
            client, reverse("admin:openai_batches_batchjob_dashboard"), {"days": "30"}, args.repeat
        )
        for rows in (10, 100):
            pages[f"API job list, {rows} rows"] = page(
                client, "/api/batches/jobs/", {"page_size": str(rows)}, args.repeat
            )
        pages["API job detail (50,000 items)"] = page(
            client, f"/api/batches/jobs/{big.uuid}/", {}, args.repeat
        )
        for name, p in pages.items():
            print(
                f"{name:34} {p['queries']:3} queries  min {p['min'] * 1000:7.0f} ms  "
                f"median {p['median'] * 1000:7.0f} ms  item-table queries "
                f"{len(p['item_queries'])}  slowest query {p['slowest_s'] * 1000:.0f} ms"
            )

        results_url = f"/api/batches/jobs/{big.uuid}/results/"
        stream = page(client, results_url, {}, 1)  # queries and bytes; timed below

        def app_stream() -> float:
            start = time.perf_counter()
            response = client.get(results_url)
            for _chunk in response.streaming_content:
                pass
            return time.perf_counter() - start

        results_floor(big.pk, True)  # warm the cache for both alike
        stream_figures = alternate(
            args.repeat,
            {
                "floor": lambda: results_floor(big.pk, True),
                "app": app_stream,
                "bare_select": lambda: results_floor(big.pk, False),
            },
        )
        for f in stream_figures.values():
            f["ratio_min"] = f["min"] / stream_figures["floor"]["min"]
            f["ratio_median"] = f["median"] / stream_figures["floor"]["median"]
        print(
            f"API results stream ({args.big:,} items, {stream['bytes'] / 1e6:.1f} MB, "
            f"{stream['queries']} queries)"
        )
        for name, f in stream_figures.items():
            print(
                f"  {name:12} min {f['min']:6.2f} s  median {f['median']:6.2f} s  "
                f"= {f['ratio_min']:.2f}x / {f['ratio_median']:.2f}x floor"
            )
        write_json(
            args.json,
            {
                "db": connection.vendor,
                "jobs": n_jobs,
                "items": n_items,
                "big": args.big,
                "build_s": built,
                "pages": pages,
                "stream": {
                    **stream_figures,
                    "queries": stream["queries"],
                    "bytes": stream["bytes"],
                },
            },
        )
        connection.close()


if __name__ == "__main__":
    main()
