"""Submit benchmark: ``create_job`` + ``request_submit`` + ``submit`` against its floor.

The design holds submitting 50,000 requests to 2x the floor. Alternated ``--repeat`` times::

    floor   written by hand, the same work: the job and part rows, every item row with the
            database's bulk path (PostgreSQL COPY, SQLite executemany) with each body
            JSON-encoded once, the JSONL written to a temporary file from that same text,
            one multipart upload and one batch create over HTTP to the emulator, one UPDATE
            recording the batch on the part
    app     ``services.create_job(items=...)`` + ``request_submit`` (runner ``none``: no
            queue) + ``services.submit`` against the same emulator

Both start from the same Python dicts (custom_id + body). Also measured: submitting many
one-item jobs (time per job, queries per job), and the peak RSS growth of one app submit.

Usage::

    python benchmarks/submit.py                       # PostgreSQL (DATABASE_URL or local)
    python benchmarks/submit.py --db sqlite --n 5000 --json out.json --profile 15
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    alternate,
    database,
    mb,
    profile_top,
    reset_hwm,
    status_kb,
    trim,
    write_json,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BENCH_DB = "openai_batches_submit_bench"
URL = "/v1/chat/completions"


def items(n: int, prefix: str = "review") -> list[dict[str, Any]]:
    from ingest import request_body

    return [
        {"custom_id": f"{prefix}-{i:06d}", "body": request_body(i, "small", False)}
        for i in range(n)
    ]


def clear() -> None:
    """Remove every job (and what hangs off it) so each run inserts into the same tables."""
    from django.db import connection

    from openai_batches.models import BatchJob, ProviderBatch, RequestAttempt, RequestItem

    tables = [
        connection.ops.quote_name(m._meta.db_table)
        for m in (RequestAttempt, RequestItem, ProviderBatch, BatchJob)
    ]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"TRUNCATE {', '.join(tables)} CASCADE")
            for table in tables:
                cursor.execute(f"VACUUM ANALYZE {table}")
        else:
            for table in tables:
                cursor.execute(f"DELETE FROM {table}")  # noqa: S608
            cursor.execute("ANALYZE")
    trim()


def run_app(data: list[dict[str, Any]]) -> float:
    from openai_batches import services
    from openai_batches.models import JobState

    start = time.perf_counter()
    job = services.create_job(name="submit benchmark", items=iter(data))
    services.request_submit(job)
    job = services.submit(job)
    elapsed = time.perf_counter() - start
    if job.state != JobState.SUBMITTED or job.item_count != len(data):
        raise SystemExit(f"submit failed: {job.state} {job.last_error}")
    return elapsed


def run_floor(data: list[dict[str, Any]], base_url: str, api_key: str) -> float:
    import httpx
    from django.db import connection, transaction

    from openai_batches.models import BatchJob, JobState, ProviderBatch, RequestItem

    table = connection.ops.quote_name(RequestItem._meta.db_table)
    columns = (
        "job_id, custom_id, method, url, body, object_id, state, attempt_count, nbytes, "
        "batch_id, input_tokens, cached_tokens, output_tokens, reasoning_tokens, announced, "
        "output_schema, parse_error, provider_request_id, result_line_id, estimated_tokens"
    )
    start = time.perf_counter()
    with tempfile.TemporaryFile() as tmp:
        with transaction.atomic():
            job = BatchJob.objects.create(
                name="submit floor", state=JobState.SUBMITTING, item_count=len(data)
            )
            part = ProviderBatch.objects.create(
                job=job, part=1, state=JobState.SUBMITTING, item_count=len(data)
            )
            rows = []
            for item in data:
                body = json.dumps(item["body"])
                line = (
                    f'{{"custom_id": {json.dumps(item["custom_id"])}, "method": "POST", '
                    f'"url": "{URL}", "body": {body}}}\n'
                ).encode()
                tmp.write(line)
                rows.append(
                    (
                        job.pk,
                        item["custom_id"],
                        "POST",
                        URL,
                        body,
                        "",
                        "submitted",
                        0,
                        len(line),
                        part.pk,
                        0,
                        0,
                        0,
                        0,
                        False,
                        "",
                        "",
                        "",
                        "",
                        0,  # the app estimates each item's tokens (issue 12); not the floor
                    )
                )
            raw = connection.cursor().cursor
            if connection.vendor == "postgresql":
                with raw.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            else:
                marks = ", ".join(["?"] * 19)
                raw.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)  # noqa: S608
        tmp.seek(0)
        with httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=300
        ) as http:
            upload = http.post(
                "/files",
                data={"purpose": "batch"},
                files={"file": ("floor.jsonl", tmp, "application/jsonl")},
            )
            upload.raise_for_status()
            batch = http.post(
                "/batches",
                json={
                    "input_file_id": upload.json()["id"],
                    "endpoint": URL,
                    "completion_window": "24h",
                    "metadata": {"job": str(job.uuid)},
                },
            )
            batch.raise_for_status()
    ProviderBatch.objects.filter(pk=part.pk).update(
        provider_batch_id=batch.json()["id"], state=JobState.SUBMITTED
    )
    return time.perf_counter() - start


def small_jobs(count: int) -> tuple[float, float]:
    """(ms per job, queries per job) for ``count`` one-item jobs created and submitted."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    data = items(count, "one")
    start = time.perf_counter()
    with CaptureQueriesContext(connection) as ctx:
        for item in data:
            run_app([item])
    return (time.perf_counter() - start) / count * 1000, len(ctx.captured_queries) / count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--one-item-jobs", type=int, default=200)
    parser.add_argument("--profile", type=int, default=0, metavar="N")
    parser.add_argument("--json")
    args = parser.parse_args(argv)

    with database(args.db, BENCH_DB) as db:
        from ingest import configure

        configure(db)
        from django.core.management import call_command
        from django.db import connection

        from openai_batches.testing import running_emulator

        call_command("migrate", verbosity=0)
        data = items(args.n)
        with running_emulator(timing="instant") as emu:
            figures = alternate(
                args.repeat,
                {
                    "floor": lambda: run_floor(data, emu.base_url, emu.api_key),
                    "app": lambda: run_app(data),
                },
                prepare=clear,
            )
            for f in figures.values():
                f["ratio_min"] = f["min"] / figures["floor"]["min"]
                f["ratio_median"] = f["median"] / figures["floor"]["median"]
            clear()
            hwm = reset_hwm()
            before = status_kb("VmRSS")
            run_app(data)
            growth = (status_kb("VmHWM") - before) * 1024 if hwm else -1
            clear()
            per_job_ms, per_job_queries = small_jobs(args.one_item_jobs)
            profile = ""
            if args.profile:
                clear()
                profile = profile_top(lambda: run_app(data), args.profile)
        print(f"{connection.vendor} | submit {args.n:,} items")
        for name in ("floor", "app"):
            f = figures[name]
            print(
                f"{name:6} min {f['min']:6.2f} s  median {f['median']:6.2f} s  "
                f"= {f['ratio_min']:.2f}x / {f['ratio_median']:.2f}x floor"
            )
        print(f"peak RSS growth of one submit {mb(growth).strip()}")
        print(
            f"{args.one_item_jobs} one-item jobs: {per_job_ms:.1f} ms, {per_job_queries:.0f} queries per job"
        )
        if profile:
            print(profile)
        write_json(
            args.json,
            {
                "db": connection.vendor,
                "n": args.n,
                "figures": figures,
                "peak_growth": growth,
                "one_item_jobs": args.one_item_jobs,
                "per_job_ms": per_job_ms,
                "per_job_queries": per_job_queries,
                "profile": profile,
            },
        )
        connection.close()


if __name__ == "__main__":
    main()
