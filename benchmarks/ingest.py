"""Ingest benchmark: ``services.ingest`` against the database's own bulk-write floor.

The design holds ingest to about 2x the floor for 50,000 results. One run measures, on the
same results::

    floor        the database's own bulk path, written by hand, from an already-parsed
                 in-memory list (PostgreSQL: COPY into a temp table + one UPDATE ... FROM;
                 SQLite: one executemany UPDATE)
    ours         services.ingest(job) end to end against the bundled emulator: download,
                 parse, write, leftovers, usage sums, job row, and the on-commit announce
                 (split into "store" and "announce" below it)
    bulk_update  Django's QuerySet.bulk_update on the same rows (reference; --skip-bulk-update).
                 Its cost is Python building CASE/WHEN expressions, linear in rows at a fixed
                 batch_size, so by default 10,000 rows are timed and scaled (printed as such)

and prints each time, the ratios to the floor, and the peak RSS growth during ``ingest``
(VmHWM after minus RSS before, the high-water mark reset first) against the size of the
result files.

Usage::

    python benchmarks/ingest.py                       # PostgreSQL (DATABASE_URL or local)
    python benchmarks/ingest.py --db sqlite --n 50000
    python benchmarks/ingest.py --n 5000 --profile 25 # + cProfile of store and announce

PostgreSQL: ``DATABASE_URL`` is used as is; without it the script creates the database
``openai_batches_bench`` on 127.0.0.1:5432 (user postgres) and drops it afterwards. SQLite
uses a temporary file. Redis is not needed: the job's submission is recorded directly and
``services.submit`` is called in-process.
"""

from __future__ import annotations

import argparse
import json
import pstats
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from _common import configure_django, database, mb, reset_hwm, status_kb, trim

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BENCH_DB = "openai_batches_bench"
MODEL = "gpt-4o-mini"


# -- setup ------------------------------------------------------------------------------


def configure(db: dict[str, Any]) -> None:
    configure_django(
        db,
        LOGGING={
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"stderr": {"class": "logging.StreamHandler"}},
            "root": {"handlers": ["stderr"], "level": "WARNING"},
        },
    )


# -- measuring --------------------------------------------------------------------------


# -- the job ----------------------------------------------------------------------------


def _items(n: int, fail_every: int) -> Iterator[dict[str, Any]]:
    for i in range(n):
        body: dict[str, Any] = {
            "model": MODEL,
            "messages": [
                {"role": "system", "content": "Summarise the review in one sentence."},
                {
                    "role": "user",
                    "content": f"Review {i}: the blender arrived on time, is loud, and makes "
                    f"a good smoothie; the lid cracked after {i % 97 + 3} days.",
                },
            ],
            "max_tokens": 60,
        }
        if fail_every and i % fail_every == fail_every - 1:
            # The emulator's scripted failure: the request runs and lands in the error file.
            body["emulator"] = {
                "status_code": 400,
                "code": "context_length_exceeded",
                "message": "This model's maximum context length was exceeded.",
                "type": "invalid_request_error",
                "param": "messages",
            }
        yield {"custom_id": f"review-{i:06d}", "body": body}


def build_job(n: int, fail_every: int) -> Any:
    """A submitted, completed job of ``n`` chat completions whose results await ingest."""
    from openai_batches import services
    from openai_batches.models import BatchJob, JobState

    job = services.create_job(name="ingest benchmark", items=_items(n, fail_every))
    # request_submit minus its RQ enqueue (no Redis here): record the intent, then submit.
    BatchJob.objects.filter(pk=job.pk).update(state=JobState.SUBMIT_REQUESTED)
    job = services.submit(job)
    if job.state != JobState.SUBMITTED:
        raise SystemExit(f"submit failed: {job.state} {job.last_error}")
    job = services.refresh(job, ingest=False)  # instant timing: completed on this request
    if not job.is_terminal:
        raise SystemExit(f"the emulator did not finish the batch: {job.provider_status}")
    return job


def reset(job: Any) -> None:
    """Put the job and its items back to 'submitted, no results' so a run does all the work."""
    from django.db import connection

    from openai_batches.models import BatchJob, ItemState, JobState, RequestItem

    RequestItem.objects.filter(job=job).update(
        state=ItemState.SUBMITTED,
        status_code=None,
        response=None,
        error=None,
        provider_request_id="",
        result_line_id="",
        input_tokens=0,
        cached_tokens=0,
        output_tokens=0,
        reasoning_tokens=0,
        completed_at=None,
        announced=False,
    )
    BatchJob.objects.filter(pk=job.pk).update(
        state=JobState.SUBMITTED,
        ingested_at=None,
        input_tokens=0,
        cached_tokens=0,
        output_tokens=0,
        reasoning_tokens=0,
    )
    # Every run starts from the same physical state: no dead tuples left by the last one.
    table = connection.ops.quote_name(RequestItem._meta.db_table)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"VACUUM ANALYZE {table}")
        else:
            cursor.execute("ANALYZE")
    trim()


def parsed_results(job: Any) -> list[tuple[Any, ...]]:
    """The result files parsed once with the app's own reader: the floor's input."""
    from openai_batches.services import iter_result_rows

    return [(custom_id, *values) for custom_id, values in iter_result_rows(job)]


# -- the three contenders ---------------------------------------------------------------


def stored(job: Any) -> list[tuple[Any, ...]]:
    """What the items hold now (result columns), to check the contenders wrote the same."""
    from openai_batches.models import RequestItem
    from openai_batches.services.ingestion import _RESULT_COLUMNS

    return list(
        RequestItem.objects.filter(job=job)
        .order_by("custom_id")
        .values_list("custom_id", *_RESULT_COLUMNS)
    )


def run_floor(job: Any, rows: list[tuple[Any, ...]]) -> float:
    """The database's own bulk path for the same rows, the same WHERE and the same SET."""
    from django.db import connection, transaction
    from django.utils import timezone

    from openai_batches.models import ItemState, RequestItem
    from openai_batches.services.ingestion import _RESULT_COLUMNS

    table = connection.ops.quote_name(RequestItem._meta.db_table)
    now = timezone.now()
    open_states = (ItemState.PENDING, ItemState.SUBMITTED)
    start = time.perf_counter()
    with transaction.atomic():
        raw = connection.cursor().cursor  # the driver's own cursor: no Django in the loop
        if connection.vendor == "postgresql":
            raw.execute(
                "CREATE TEMP TABLE bench_floor (custom_id text, state text, status_code int, "
                "response jsonb, error jsonb, provider_request_id text, result_line_id text, "
                "input_tokens int, cached_tokens int, output_tokens int, reasoning_tokens int) "
                "ON COMMIT DROP"
            )
            with raw.copy("COPY bench_floor FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            sets = ", ".join(f"{c} = t.{c}" for c in _RESULT_COLUMNS)
            raw.execute(
                f"UPDATE {table} AS i SET {sets}, completed_at = %s, announced = false "  # noqa: S608
                "FROM bench_floor AS t WHERE i.job_id = %s AND i.custom_id = t.custom_id "
                "AND i.state IN (%s, %s)",
                [now, job.pk, *open_states],
            )
            updated = raw.rowcount
        else:
            sets = ", ".join(f'"{c}" = ?' for c in _RESULT_COLUMNS)
            now_db = connection.ops.adapt_datetimefield_value(now)
            raw.executemany(
                f"UPDATE {table} SET {sets}, completed_at = ?, announced = 0 "  # noqa: S608
                "WHERE job_id = ? AND custom_id = ? AND state IN (?, ?)",
                ((*r[1:], now_db, job.pk, r[0], *open_states) for r in rows),
            )
            updated = raw.rowcount
    elapsed = time.perf_counter() - start
    if updated != len(rows):
        raise SystemExit(f"floor updated {updated} rows, expected {len(rows)}")
    return elapsed


def run_ours(job: Any) -> tuple[float, float, int]:
    """``services.ingest`` end to end; returns (total, store, peak RSS growth in bytes).

    The call sits in an outer ``atomic`` only to split the clock: when it exits, the commit
    runs the on-commit announce exactly as it would after a bare ``ingest(job)``.
    """
    from django.db import transaction

    from openai_batches import services
    from openai_batches.models import ItemState, RequestItem

    trim()
    hwm_ok = reset_hwm()
    rss_before = status_kb("VmRSS")
    start = time.perf_counter()
    with transaction.atomic():
        lines = services.ingest(job)
        stored = time.perf_counter()
    end = time.perf_counter()
    growth = (status_kb("VmHWM") - rss_before) * 1024 if hwm_ok else -1
    if lines != job.request_count_total:
        raise SystemExit(f"ingest read {lines} lines, expected {job.request_count_total}")
    if RequestItem.objects.filter(job=job, state=ItemState.SUBMITTED).exists():
        raise SystemExit("ingest left items open")
    return end - start, stored - start, growth


def run_bulk_update(job: Any, rows: list[tuple[Any, ...]], batch_size: int | None) -> float:
    """``bulk_update`` with model instances built (untimed) from the same parsed rows."""
    from django.utils import timezone

    from openai_batches.models import RequestItem
    from openai_batches.services.ingestion import _RESULT_COLUMNS

    pks = dict(RequestItem.objects.filter(job=job).values_list("custom_id", "pk"))
    now = timezone.now()
    objs = []
    for custom_id, *values in rows:
        fields = dict(zip(_RESULT_COLUMNS, values, strict=True))
        # The parsed rows hold JSON text for jsonb COPY; the ORM wants Python objects.
        for key in ("response", "error"):
            if fields[key] is not None:
                fields[key] = json.loads(fields[key])
        objs.append(RequestItem(pk=pks[custom_id], completed_at=now, announced=False, **fields))
    trim()
    start = time.perf_counter()
    updated = RequestItem.objects.bulk_update(
        objs, [*_RESULT_COLUMNS, "completed_at", "announced"], batch_size=batch_size
    )
    elapsed = time.perf_counter() - start
    if updated != len(rows):
        raise SystemExit(f"bulk_update updated {updated} rows, expected {len(rows)}")
    return elapsed


def profile_ours(job: Any, top: int) -> None:
    """cProfile one more ingest: the store phase and the on-commit announce apart."""
    import cProfile

    from django.db import transaction

    from openai_batches import services

    store, announce = cProfile.Profile(), cProfile.Profile()
    with transaction.atomic():
        store.enable()
        services.ingest(job)
        store.disable()
        announce.enable()
    announce.disable()
    for name, profiler in (("store (inside ingest's transaction)", store), ("announce", announce)):
        for sort in ("tottime", "cumulative"):
            print(f"\n-- cProfile, {name}: top {top} by {sort} --")
            stats = pstats.Stats(profiler, stream=sys.stdout).strip_dirs().sort_stats(sort)
            stats.print_stats(top)


# -- main -------------------------------------------------------------------------------


def best(runs: int, prepare: Callable[[], None], measure: Callable[[], Any]) -> list[Any]:
    results = []
    for _ in range(runs):
        prepare()
        results.append(measure())
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--n", type=int, default=50_000, help="requests in the job (50000)")
    parser.add_argument(
        "--fail-every",
        type=int,
        default=100,
        help="every Nth request fails with a 400 and lands in the error file (0: none)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; the best counts")
    parser.add_argument("--skip-bulk-update", action="store_true")
    parser.add_argument(
        "--bulk-update-batch-size",
        type=int,
        default=1000,
        help="bulk_update batch_size (0: Django's default, one huge CASE per field on PostgreSQL)",
    )
    parser.add_argument(
        "--bulk-update-sample",
        type=int,
        default=10_000,
        help="time bulk_update on this many of the rows and scale linearly (0: all rows); "
        "its cost is per row in Django's expression building, about 5 ms a row",
    )
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="cProfile one more ingest, top N"
    )
    parser.add_argument(
        "--receiver",
        action="store_true",
        help="connect one trivial result_received receiver (what a real host project has), "
        "so every result is announced one by one",
    )
    args = parser.parse_args(argv)

    with database(args.db, BENCH_DB) as db:
        configure(db)
        from django.core.management import call_command
        from django.db import connection

        from openai_batches.testing import running_emulator

        call_command("migrate", verbosity=0)
        if args.receiver:
            from openai_batches.signals import result_received

            def receiver(**kwargs: Any) -> None:
                pass

            result_received.connect(receiver, weak=False)
            print("one result_received receiver connected")
        with running_emulator(timing="instant") as emu:
            t0 = time.perf_counter()
            job = build_job(args.n, args.fail_every)
            out_bytes = sum(
                emu.get_file(f)["bytes"] for f in (job.output_file_id, job.error_file_id) if f
            )
            print(
                f"{connection.vendor} {connection.pg_version if args.db == 'postgres' else ''}"
                f" | {args.n:,} requests, {job.request_count_failed:,} failed "
                f"| result files {mb(out_bytes).strip()} | setup {time.perf_counter() - t0:.1f}s",
                flush=True,
            )

            # ours first, while the process has not yet held the parsed list (clean RSS).
            ours_runs = best(args.repeat, lambda: reset(job), lambda: run_ours(job))
            ours, store, growth = min(ours_runs)
            rows = parsed_results(job)
            expected = stored(job)
            floor = min(best(args.repeat, lambda: reset(job), lambda: run_floor(job, rows)))
            if stored(job) != expected:
                raise SystemExit("the floor stored something else than ingest did")
            del expected
            bulk: float | None = None
            sample = rows
            if 0 < args.bulk_update_sample < len(rows):
                sample = rows[: args.bulk_update_sample]
            if not args.skip_bulk_update:
                bulk = min(
                    best(
                        args.repeat,
                        lambda: reset(job),
                        lambda: run_bulk_update(job, sample, args.bulk_update_batch_size or None),
                    )
                )
                bulk *= len(rows) / len(sample)

            what = "COPY + UPDATE ... FROM" if args.db == "postgres" else "executemany UPDATE"
            print(f"floor        {floor:8.2f} s   ({what}, {len(rows):,} rows, pre-parsed)")
            print(
                f"ours         {ours:8.2f} s   services.ingest end to end = "
                f"{ours / floor:5.2f}x floor"
            )
            print(
                f"  store      {store:8.2f} s   download+parse+write+leftovers+sums = "
                f"{store / floor:5.2f}x floor"
            )
            print(f"  announce   {ours - store:8.2f} s   on-commit result_received outbox pass")
            if bulk is not None:
                size = args.bulk_update_batch_size or "default"
                scaled = (
                    f", {len(sample):,} rows timed x {len(rows) / len(sample):.2f}"
                    if len(sample) < len(rows)
                    else ""
                )
                print(
                    f"bulk_update  {bulk:8.2f} s   (batch_size={size}{scaled}) = "
                    f"{bulk / floor:5.2f}x floor"
                )
            if growth >= 0:
                print(
                    f"memory       peak RSS growth during ingest {mb(growth).strip()} "
                    f"vs result files {mb(out_bytes).strip()} = {growth / out_bytes:.3f}x"
                )
            else:
                print("memory       VmHWM could not be reset here; peak RSS growth not measured")
            if args.profile:
                reset(job)
                profile_ours(job, args.profile)
        connection.close()


if __name__ == "__main__":
    main()
