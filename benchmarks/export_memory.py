"""Memory of ``export.export_results``: 50,000 results as CSV and as JSONL, streamed.

The export must not grow with the job. This script builds a finished job whose items all
carry a stored structured-output chat completion (bulk insert into a script-local database,
no provider involved), exports it in each format, discarding the bytes chunk by chunk, and
prints for each format::

    output        bytes produced (what building the export in memory would at least cost)
    peak growth   VmHWM during the export minus RSS before it (high-water mark reset first)
    ratio         peak growth / output: ~0 means flat, ~1 or more means "built in memory"
    rows/s        throughput

Usage::

    python benchmarks/export_memory.py                      # SQLite in a temp dir
    python benchmarks/export_memory.py --db postgres        # DATABASE_URL, or a database
                                                            # created on 127.0.0.1:5432
    python benchmarks/export_memory.py --n 100000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from _common import configure_django, database, mb, reset_hwm, status_kb, trim

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BENCH_DB = "openai_batches_export_bench"
MODEL = "gpt-4o-mini"
SCHEMA = "benchmarks_export_schema.Review"


def configure(db: dict[str, Any]) -> None:
    prices = {MODEL: {"input": 0.075, "cached_input": 0.0375, "output": 0.3}}
    configure_django(db, openai_batches={"PRICES": prices})


def define_schema() -> None:
    """The structured output model, importable by path like a host project's would be."""
    import types
    from typing import Literal

    from pydantic import BaseModel

    module = types.ModuleType("benchmarks_export_schema")

    class Review(BaseModel):
        sentiment: Literal["positive", "negative", "neutral", "mixed"]
        reason: str
        score: float

    Review.__module__ = module.__name__
    module.Review = Review  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module


def build_job(n: int) -> Any:
    from django.db import transaction
    from django.utils import timezone

    from openai_batches.models import BatchJob, BatchStatus, ItemState, JobState, RequestItem

    job = BatchJob.objects.create(
        name="bench",
        model=MODEL,
        state=JobState.FINISHED,
        provider_status=BatchStatus.COMPLETED,
        item_count=n,
        output_schema=SCHEMA,
    )
    now = timezone.now()
    labels = ("positive", "negative", "neutral", "mixed")
    chunk: list[RequestItem] = []
    with transaction.atomic():
        for i in range(n):
            answer = {
                "sentiment": labels[i % 4],
                "reason": f"Review {i}: arrived on time and blends well, but the lid cracked "
                f"after {i % 97 + 3} days.",
                "score": round((i % 100) / 100, 2),
            }
            chunk.append(
                RequestItem(
                    job=job,
                    custom_id=f"review-{i:06d}",
                    url="/v1/chat/completions",
                    body={"model": MODEL, "messages": []},
                    state=ItemState.SUCCEEDED,
                    status_code=200,
                    response=_completion(i, json.dumps(answer)),
                    parsed=answer,
                    input_tokens=42,
                    output_tokens=23,
                    completed_at=now,
                    announced=True,
                )
            )
            if len(chunk) == 5000:
                RequestItem.objects.bulk_create(chunk)
                chunk = []
        RequestItem.objects.bulk_create(chunk)
    return job


def _completion(i: int, content: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{i:024d}",
        "object": "chat.completion",
        "created": 1_760_000_000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 42, "completion_tokens": 23, "total_tokens": 65},
        "system_fingerprint": "fp_bench",
    }


def measure(job: Any, fmt: str) -> tuple[int, int, int, float, int, bool]:
    """(output bytes, lines, chunks, seconds, peak RSS growth in bytes, hwm reset worked)."""
    from openai_batches.export import export_results

    trim()
    before = status_kb("VmRSS")
    hwm_ok = reset_hwm()
    start = time.perf_counter()
    size = lines = chunks = 0
    for chunk in export_results(job, fmt):
        size += len(chunk)
        lines += chunk.count(b"\n")
        chunks += 1
    seconds = time.perf_counter() - start
    peak = (status_kb("VmHWM") - before) * 1024
    return size, lines, chunks, seconds, peak, hwm_ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--n", type=int, default=50_000, help="items in the job")
    args = parser.parse_args()

    with database(args.db, BENCH_DB) as db:
        configure(db)
        define_schema()
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
        t0 = time.perf_counter()
        job = build_job(args.n)
        print(f"built {args.n:,} stored results on {args.db} in {time.perf_counter() - t0:.1f} s")
        for fmt in ("csv", "jsonl"):
            size, lines, chunks, seconds, peak, hwm_ok = measure(job, fmt)
            note = "" if hwm_ok else "  (VmHWM could not be reset: peak may be overstated)"
            print(
                f"{fmt:5}  output {mb(size)} in {chunks:,} chunks, {lines:,} lines  "
                f"peak growth {mb(peak)}  ratio {peak / max(size, 1):.3f}  "
                f"{args.n / seconds:,.0f} rows/s{note}"
            )


if __name__ == "__main__":
    main()
