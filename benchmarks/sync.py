"""``sync_batches`` benchmark: one pass over 1,000 and 10,000 active batches that did not change.

Every job has one part whose batch the emulator holds in ``validating`` on a clock that does
not move, so a pass finds nothing new: what it costs is pure overhead. For each size, after
one warm-up pass, ``--repeat`` passes of ``manage.py sync_batches`` are alternated with the
floor and measured for::

    queries      SQL statements in the pass (counted with an execute wrapper), and per job
    HTTP calls   the API calls the command reports (one list call per 100 batches is good)
    time         wall time of the whole pass, min and median

The floor is the same HTTP listing done by hand (``GET /v1/batches?limit=100`` pages until
every batch is seen) plus one SELECT of the active parts: what a pass must do when nothing
changed. The issue's target: O(1) queries for a job whose status did not change, i.e. the
pass's query count must not grow with the number of unchanged jobs.

Usage::

    python benchmarks/sync.py                          # PostgreSQL (DATABASE_URL or local)
    python benchmarks/sync.py --db sqlite --sizes 100,1000 --json out.json
"""

from __future__ import annotations

import argparse
import io
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import alternate, database, profile_top, write_json

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BENCH_DB = "openai_batches_sync_bench"
LINE = b'{"custom_id":"a","method":"POST","url":"/v1/moderations","body":{"input":"x"}}\n'


def add_jobs(emu: Any, count: int) -> None:
    """``count`` jobs, each one item and one part whose batch the emulator holds."""
    from django.db import transaction

    from openai_batches.models import BatchJob, JobState, ProviderBatch, RequestItem

    file = emu.add_file(LINE)
    batches = [
        emu.create_batch(
            {
                "input_file_id": file["id"],
                "endpoint": "/v1/moderations",
                "completion_window": "24h",
            }
        )
        for _ in range(count)
    ]
    with transaction.atomic():
        jobs = BatchJob.objects.bulk_create(
            [
                BatchJob(
                    name=f"sync {b['id']}",
                    endpoint="/v1/moderations",
                    model="omni-moderation-latest",
                    state=JobState.SUBMITTED,
                    provider_status=b["status"],
                    item_count=1,
                )
                for b in batches
            ],
            batch_size=2000,
        )
        parts = ProviderBatch.objects.bulk_create(
            [
                ProviderBatch(
                    job=job,
                    part=1,
                    state=JobState.SUBMITTED,
                    provider_status=b["status"],
                    provider_batch_id=b["id"],
                    input_file_id=file["id"],
                    item_count=1,
                    provider_created_at=datetime.fromtimestamp(b["created_at"], tz=UTC),
                )
                for job, b in zip(jobs, batches, strict=True)
            ],
            batch_size=2000,
        )
        RequestItem.objects.bulk_create(
            [
                RequestItem(
                    job=job,
                    batch=part,
                    custom_id="a",
                    url="/v1/moderations",
                    body={"input": "x"},
                    state="submitted",
                    nbytes=len(LINE),
                )
                for job, part in zip(jobs, parts, strict=True)
            ],
            batch_size=2000,
        )


class Counter:
    """An execute wrapper counting statements (the debug log would cap at 9,000)."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        self.n += 1
        return execute(sql, params, many, context)


def run_command(out: dict[str, Any]) -> float:
    from django.core.management import call_command
    from django.db import connection

    counter = Counter()
    stdout = io.StringIO()
    start = time.perf_counter()
    with connection.execute_wrapper(counter):
        call_command("sync_batches", stdout=stdout, stderr=io.StringIO())
    elapsed = time.perf_counter() - start
    text = stdout.getvalue()
    calls = re.search(r"(\d+) API call", text)
    refreshed = re.search(r"refreshed (\d+)", text)
    out.update(
        queries=counter.n,
        http_calls=int(calls.group(1)) if calls else -1,
        refreshed=int(refreshed.group(1)) if refreshed else -1,
        summary=text.strip().splitlines()[-1] if text.strip() else "",
    )
    return elapsed


def run_floor(base_url: str, api_key: str, count: int) -> float:
    import httpx

    from openai_batches.models import ProviderBatch

    start = time.perf_counter()
    wanted = set(ProviderBatch.objects.active().values_list("provider_batch_id", flat=True))
    seen: set[str] = set()
    after = None
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}) as http:
        while wanted - seen:
            params: dict[str, Any] = {"limit": 100}
            if after:
                params["after"] = after
            page = http.get("/batches", params=params).json()
            seen.update(b["id"] for b in page["data"])
            if not page["has_more"]:
                break
            after = page["data"][-1]["id"]
    if len(wanted) != count or wanted - seen:
        raise SystemExit(f"floor saw {len(seen & wanted)} of {count} batches")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--repeat-largest",
        type=int,
        default=0,
        help="runs at the largest size only (0: --repeat); a pass over 10,000 jobs is minutes",
    )
    parser.add_argument("--profile", type=int, default=0, metavar="N")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]

    with database(args.db, BENCH_DB) as db:
        from ingest import configure

        configure(db)
        from django.core.management import call_command
        from django.db import connection

        from openai_batches.testing import running_emulator

        call_command("migrate", verbosity=0)
        results: dict[str, Any] = {}
        profile = ""
        # A clock that never moves: every batch stays "validating", nothing changes.
        with running_emulator(timing="realistic", clock="manual") as emu:
            have = 0
            for size in sizes:
                add_jobs(emu.emulator, size - have)
                have = size
                if connection.vendor == "postgresql":
                    with connection.cursor() as cursor:
                        cursor.execute("ANALYZE")
                run_command({})  # warm-up: first poll stamps, imports
                last: dict[str, Any] = {}
                repeat = args.repeat
                if size == max(sizes) and args.repeat_largest:
                    repeat = args.repeat_largest
                figures = alternate(
                    repeat,
                    {
                        "floor": lambda size=size: run_floor(emu.base_url, emu.api_key, size),
                        "command": lambda last=last: run_command(last),
                    },
                )
                for f in figures.values():
                    f["ratio_min"] = f["min"] / figures["floor"]["min"]
                    f["ratio_median"] = f["median"] / figures["floor"]["median"]
                results[str(size)] = {
                    **figures,
                    **last,
                    "queries_per_job": last["queries"] / size,
                    "repeat": repeat,
                }
                print(
                    f"{size:>6,} unchanged batches: {last['queries']:,} queries "
                    f"({last['queries'] / size:.2f} per job), {last['http_calls']} HTTP calls, "
                    f"command min {figures['command']['min']:.2f} s median "
                    f"{figures['command']['median']:.2f} s, floor min {figures['floor']['min']:.2f} s"
                    f" = {figures['command']['ratio_min']:.1f}x  [{last['summary']}]",
                    flush=True,
                )
                if args.profile and size == sizes[0]:  # the smallest size: cProfile is slow
                    profile = profile_top(lambda: run_command({}), args.profile)
                    print(profile)
        write_json(args.json, {"db": connection.vendor, "sizes": results, "profile": profile})
        connection.close()


if __name__ == "__main__":
    main()
