"""Purge benchmark: ``retention.purge`` deleting 1,000,000 items, time and peak memory.

Builds old finished jobs of 50,000 items each (the provider's batch limit) with realistic
result rows (a chat completion body per item), plus a draft whose items must survive, then
runs ``retention.purge(older_than=30 days, keep_files=True, chunk=N)`` and prints

    time         the whole purge, and items per second
    chunks       DELETE transactions, and the longest one (how long a lock is held)
    peak RSS     growth during the purge (VmHWM after, the high-water mark reset first,
                 minus RSS before): flat means independent of the number of rows

``keep_files`` because the files are the provider's work, not the database's (the suite
covers them over HTTP). Usage::

    python benchmarks/purge.py                        # PostgreSQL (DATABASE_URL or local)
    python benchmarks/purge.py --db sqlite
    python benchmarks/purge.py --n 200000 --chunk 1000

PostgreSQL: ``DATABASE_URL`` is used as is; without it the script creates the database
``openai_batches_purge_bench`` on 127.0.0.1:5432 (user postgres) and drops it afterwards.
SQLite uses a temporary file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from _common import configure_django, database, mb, reset_hwm, status_kb, trim

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BENCH_DB = "openai_batches_purge_bench"
PER_JOB = 50_000


def configure(db: dict[str, Any]) -> None:
    configure_django(db)


def _response(i: int) -> str:
    return json.dumps(
        {
            "id": f"chatcmpl-{i}",
            "object": "chat.completion",
            "model": "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "The blender is loud but makes a good smoothie; the lid "
                        "cracked within weeks.",
                    },
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 41, "completion_tokens": 19, "total_tokens": 60},
        }
    )


def build(n: int) -> tuple[list[int], int]:
    """Old finished jobs holding ``n`` items, and a draft with 1,000 that must stay."""
    from django.db import connection, transaction
    from django.utils import timezone

    from openai_batches.models import BatchJob, JobState, ProviderBatch, RequestAttempt, RequestItem

    old = timezone.now() - timedelta(days=40)
    body = json.dumps(
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Summarise it."}]}
    )
    response = _response(0)
    table = RequestItem._meta.db_table
    columns = (
        "job_id, custom_id, method, url, body, object_id, state, status_code, response, "
        "provider_request_id, result_line_id, input_tokens, cached_tokens, output_tokens, "
        "reasoning_tokens, completed_at, announced, output_schema, parse_error, batch_id, "
        "attempt_count, nbytes, estimated_tokens"
    )
    jobs: list[int] = []
    sizes = [PER_JOB] * (n // PER_JOB) + ([n % PER_JOB] if n % PER_JOB else [])
    for size in [*sizes, 1000]:
        draft = size == 1000 and len(jobs) == len(sizes)
        job = BatchJob.objects.create(
            name="purge benchmark",
            model="gpt-4o-mini",
            item_count=size,
            state=JobState.DRAFT if draft else JobState.FINISHED,
            finish_announced=not draft,
            ingested_at=None if draft else old,
        )
        part = None
        if not draft:
            jobs.append(job.pk)
            part = ProviderBatch.objects.create(
                job=job, part=1, state=JobState.FINISHED, item_count=size, ingested_at=old
            ).pk
        state = "pending" if draft else "succeeded"
        values = [
            (
                job.pk,
                f"r-{i:07d}",
                "POST",
                "/v1/chat/completions",
                body,
                "",
                state,
                None if draft else 200,
                None if draft else response,
                "",
                "",
                41,
                0,
                19,
                0,
                None if draft else old,
                not draft,
                "",
                "",
                part,
                0 if draft else 1,
                len(body) + 80,
                12,
            )
            for i in range(size)
        ]
        marks = ", ".join(["%s"] * len(values[0]))
        with transaction.atomic(), connection.cursor() as cursor:
            for start in range(0, len(values), 10_000):
                cursor.executemany(
                    f"INSERT INTO {table} ({columns}) VALUES ({marks})",  # noqa: S608 - model table
                    values[start : start + 10_000],
                )
        del values
        if part is not None:
            # Every result is the item's first attempt, as an ingest records it.
            attempts = RequestAttempt._meta.db_table
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    f"INSERT INTO {attempts} (item_id, batch_id, number, state, status_code, "  # noqa: S608
                    "input_tokens, cached_tokens, output_tokens, reasoning_tokens, retried, "
                    f"created_at) SELECT id, batch_id, 1, state, status_code, input_tokens, "
                    f"cached_tokens, output_tokens, reasoning_tokens, %s, %s FROM {table} "
                    "WHERE batch_id = %s",
                    [False, old, part],
                )
    return jobs, 1000


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--n", type=int, default=1_000_000, help="items to purge (1000000)")
    parser.add_argument("--chunk", type=int, default=5000, help="items per chunk (5000)")
    args = parser.parse_args(argv)

    with database(args.db, BENCH_DB) as db:
        configure(db)
        from django.core.management import call_command
        from django.db import connection

        call_command("migrate", verbosity=0)
        from openai_batches import retention
        from openai_batches.models import BatchJob, RequestItem

        started = time.perf_counter()
        jobs, kept = build(args.n)
        print(
            f"built {args.n:,} items in {len(jobs)} job(s) in {time.perf_counter() - started:.1f}s"
        )
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(f"ANALYZE {RequestItem._meta.db_table}")

        chunk_times: list[float] = []
        last = [time.perf_counter()]

        def progress(done: int, total: int) -> None:
            now = time.perf_counter()
            chunk_times.append(now - last[0])
            last[0] = now

        trim()
        rss_before = status_kb("VmRSS")
        hwm_reset = reset_hwm()
        started = last[0] = time.perf_counter()
        report = retention.purge(
            older_than=timedelta(days=30), keep_files=True, chunk=args.chunk, progress=progress
        )
        elapsed = time.perf_counter() - started
        peak = status_kb("VmHWM")

        assert report.ok and report.items == args.n and report.jobs == len(jobs), report
        assert not BatchJob.objects.filter(pk__in=jobs).exists()
        assert RequestItem.objects.count() == kept, "the draft's items must stay"
        print(f"database     {connection.vendor}")
        print(f"purged       {report.items:,} items, {report.jobs} jobs")
        print(f"time         {elapsed:8.1f} s   ({report.items / elapsed:,.0f} items/s)")
        rest = sorted(chunk_times[1:]) or [0.0]
        print(
            f"chunks       {report.chunks} of {args.chunk}; the first (with selecting and "
            f"claiming the jobs) {chunk_times[0] * 1000:.0f} ms, then median "
            f"{rest[len(rest) // 2] * 1000:.0f} ms, longest {rest[-1] * 1000:.0f} ms"
        )
        growth = max(0, peak - rss_before) * 1024 if hwm_reset else float("nan")
        print(f"peak RSS     +{mb(growth).strip()} over {mb(rss_before * 1024).strip()} before")


if __name__ == "__main__":
    main()
