"""Bulk-built benchmark data: many jobs with their provider batches and items, fast.

Rows go in with raw SQL (COPY on PostgreSQL, executemany on SQLite), not the ORM, so
10,000 jobs / 1,000,000 items take a minute rather than an hour. Every item carries what
the parts redesign needs: its part (``batch_id``), ``attempt_count`` and ``nbytes``.
Imported from the scripts' own folder, like ``_common``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "o4-mini", "text-embedding-3-small")
CODES = [f"code_{i}" for i in range(12)]

#: (job state, provider status) cycled over the jobs: mostly finished, some in flight.
STATES = [
    ("finished", "completed"),
    ("finished", "completed"),
    ("finished", "completed"),
    ("finished", "expired"),
    ("finished", "failed"),
    ("submitted", "in_progress"),
    ("submit_failed", ""),
    ("draft", ""),
]

ITEM_COLUMNS = (
    "job_id",
    "custom_id",
    "method",
    "url",
    "body",
    "object_id",
    "state",
    "status_code",
    "response",
    "provider_request_id",
    "result_line_id",
    "input_tokens",
    "cached_tokens",
    "output_tokens",
    "reasoning_tokens",
    "announced",
    "output_schema",
    "parse_error",
    "batch_id",
    "attempt_count",
    "nbytes",
    "estimated_tokens",
)


def answer(i: int) -> str:
    return json.dumps(
        {
            "id": f"chatcmpl-{i:024d}",
            "object": "chat.completion",
            "created": 1_760_000_000,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": f"Review {i}: arrived on time and blends well, but it is "
                        f"loud and the lid cracked after {i % 97 + 3} days.",
                        "refusal": None,
                    },
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 42, "completion_tokens": 23, "total_tokens": 65},
        }
    )


def insert_items(rows: Iterator[tuple[Any, ...]]) -> None:
    """``ITEM_COLUMNS`` rows into the item table with the database's bulk path."""
    from django.db import connection, transaction

    from openai_batches.models import RequestItem

    table = connection.ops.quote_name(RequestItem._meta.db_table)
    cols = ", ".join(ITEM_COLUMNS)
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            return
        marks = ", ".join(["%s"] * len(ITEM_COLUMNS))
        sql = f"INSERT INTO {table} ({cols}) VALUES ({marks})"  # noqa: S608 - model table
        batch: list[tuple[Any, ...]] = []
        for row in rows:
            batch.append(row)
            if len(batch) == 10_000:
                cursor.executemany(sql, batch)
                batch = []
        if batch:
            cursor.executemany(sql, batch)


def build(n_jobs: int, per_job: int, big_job: int = 0) -> Any:
    """``n_jobs`` jobs of ``per_job`` items spread over 120 days (five models, every outcome,
    some in flight, a tenth of the results failed with one of a dozen codes), each job that
    reached the provider with its one part; plus, if ``big_job``, one more finished job of
    that many succeeded items, which is returned (else None)."""
    from django.db import connection, transaction
    from django.utils import timezone

    from openai_batches.models import BatchJob, ProviderBatch

    now = timezone.now()
    jobs = []
    for i in range(n_jobs):
        state, status = STATES[i % len(STATES)]
        when = now - timedelta(days=i % 120, minutes=i % 1440)
        done = state == "finished"
        jobs.append(
            BatchJob(
                name=f"bench {i}",
                model=MODELS[i % len(MODELS)],
                state=state,
                provider_status=status,
                item_count=per_job,
                request_count_total=per_job if status else 0,
                request_count_completed=per_job * 9 // 10 if done else 0,
                request_count_failed=per_job // 10 if done else 0,
                input_tokens=per_job * 41 if done else 0,
                output_tokens=per_job * 19 if done else 0,
                created_at=when,
                submitted_at=when if status else None,
                ingested_at=when + timedelta(hours=1) if done else None,
                finish_announced=done,
            )
        )
    big = None
    with transaction.atomic():
        BatchJob.objects.bulk_create(jobs, batch_size=2000)
        if big_job:
            big = BatchJob.objects.create(
                name="the big job",
                model=MODELS[0],
                state="finished",
                provider_status="completed",
                item_count=big_job,
                request_count_total=big_job,
                request_count_completed=big_job,
                submitted_at=now,
                ingested_at=now,
                finish_announced=True,
            )
    all_jobs = list(
        BatchJob.objects.order_by("pk").values_list(
            "pk", "state", "provider_status", "item_count", "submitted_at", "ingested_at"
        )
    )
    parts = [
        ProviderBatch(
            job_id=pk,
            part=1,
            state=state,
            provider_status=status,
            provider_batch_id=f"batch_bench{pk:08d}",
            input_file_id=f"file-in{pk:08d}",
            output_file_id=f"file-out{pk:08d}" if state == "finished" else "",
            item_count=count,
            request_count_total=count,
            submitted_at=submitted,
            ingested_at=ingested,
        )
        for pk, state, status, count, submitted, ingested in all_jobs
        if status
    ]
    with transaction.atomic():
        ProviderBatch.objects.bulk_create(parts, batch_size=2000)
    part_of = dict(ProviderBatch.objects.values_list("job_id", "pk"))
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]})
    ok = answer(0)

    def rows() -> Iterator[tuple[Any, ...]]:
        for n, (job_id, state, _status, count, _s, _i) in enumerate(all_jobs):
            part = part_of.get(job_id)
            done = state == "finished"
            for k in range(count):
                failed = done and k % 10 == 0 and (big is None or job_id != big.pk)
                code = CODES[(n + k) % len(CODES)]
                if not done:
                    item_state = "submitted" if part else "pending"
                else:
                    item_state = "failed" if failed else "succeeded"
                response = json.dumps({"error": {"code": code, "message": "no"}}) if failed else ok
                yield (
                    job_id,
                    f"r-{k:05d}",
                    "POST",
                    "/v1/chat/completions",
                    body,
                    "",
                    item_state,
                    (400 if failed else 200) if done else None,
                    response if done else None,
                    "",
                    "",
                    41 if done else 0,
                    0,
                    19 if done else 0,
                    0,
                    done,
                    "",
                    "",
                    part,
                    1 if done else 0,
                    len(body) + 80,
                    12,  # the input-token estimate stored when items are added
                )

    insert_items(rows())
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    return big
