"""Ingest and signal-pass benchmark: ``services.ingest`` against a floor doing the same work.

The design holds ingest, and ingest with one ``result_received`` receiver (the signal pass),
to 2x the floor for 50,000 results. One run measures, on the same completed batch, the
contenders alternated (floor, app, app + receiver, floor, ...) ``--repeat`` times::

    floor        written by hand, the same work as the app: download both result files from
                 the emulator over HTTP into temporary files, decode every line with
                 json.loads, pick the columns, re-encode the response/error bodies as JSON
                 text, then the database's bulk path (PostgreSQL: COPY into a temp table +
                 one UPDATE ... FROM; SQLite: one executemany UPDATE) and one
                 INSERT ... SELECT of the attempt rows, as the app records them
    ingest       services.ingest(job) end to end, no receiver connected
    signal pass  services.ingest(job) with one trivial result_received receiver, the
                 on-commit announce included

``--lines large`` makes every answer about 2.7 KB on the wire (a 500-token answer, via a
JSON-schema string with a minLength); ``small`` is a one-sentence answer (~0.8 KB).
Also printed: the per-result cost of the announce against a bare ``Signal.send`` loop with
one receiver, and the peak RSS growth of one ingest against the result files' size.

Usage::

    python benchmarks/ingest.py                          # PostgreSQL (DATABASE_URL or local)
    python benchmarks/ingest.py --db sqlite --n 5000 --lines large
    python benchmarks/ingest.py --json out.json --profile 15

PostgreSQL: ``DATABASE_URL`` is used as is; without it the script creates the database
``openai_batches_bench`` on 127.0.0.1:5432 (user postgres) and drops it afterwards. No
Redis: the runner is ``none`` and ``services.submit`` runs in-process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _common import (
    alternate,
    configure_django,
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

BENCH_DB = "openai_batches_bench"
MODEL = "gpt-4o-mini"
#: A string this long in the answer makes a result line about 2.7 KB: a 500-token answer.
LARGE_ANSWER_CHARS = 2000


def configure(db: dict[str, Any]) -> None:
    configure_django(
        db,
        # A budget far above the job: the reservation is taken (as in production) but
        # never makes the job wait, which is not what these scripts time.
        openai_batches={"RUNNER": "none", "ENQUEUED_TOKEN_LIMITS": {MODEL: 10**12}},
        LOGGING={
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"stderr": {"class": "logging.StreamHandler"}},
            "root": {"handlers": ["stderr"], "level": "WARNING"},
        },
    )


# -- the job ----------------------------------------------------------------------------


def request_body(i: int, lines: str, fail: bool) -> dict[str, Any]:
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
        "max_tokens": 600,
    }
    if lines == "large":
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {
                "name": "summary",
                "schema": {
                    "type": "object",
                    "properties": {"summary": {"type": "string", "minLength": LARGE_ANSWER_CHARS}},
                    "required": ["summary"],
                    "additionalProperties": False,
                },
            },
        }
    if fail:
        # The emulator's scripted failure: the request runs and lands in the error file.
        body["emulator"] = {
            "status_code": 400,
            "code": "context_length_exceeded",
            "message": "This model's maximum context length was exceeded.",
            "type": "invalid_request_error",
            "param": "messages",
        }
    return body


def _items(n: int, fail_every: int, lines: str) -> Iterator[dict[str, Any]]:
    for i in range(n):
        fail = bool(fail_every) and i % fail_every == fail_every - 1
        yield {"custom_id": f"review-{i:06d}", "body": request_body(i, lines, fail)}


def build_job(n: int, fail_every: int, lines: str) -> Any:
    """A submitted, completed job of ``n`` chat completions whose results await ingest."""
    from openai_batches import services
    from openai_batches.models import JobState

    job = services.create_job(name="ingest benchmark", items=_items(n, fail_every, lines))
    services.request_submit(job)
    job = services.submit(job)
    if job.state != JobState.SUBMITTED:
        raise SystemExit(f"submit failed: {job.state} {job.last_error}")
    job = services.refresh(job, ingest=False)  # instant timing: completed on this request
    if not job.batches.filter(provider_status="completed").exists():
        raise SystemExit("the emulator did not finish the batch")
    return job


def reset(job: Any) -> None:
    """Put the job, its part and items back to 'submitted, no results' (and no attempts) so
    every run does all the work from the same physical state."""
    from django.db import connection

    from openai_batches.models import (
        BatchJob,
        ItemState,
        JobState,
        ProviderBatch,
        RequestAttempt,
        RequestItem,
    )

    zero = {"input_tokens": 0, "cached_tokens": 0, "output_tokens": 0, "reasoning_tokens": 0}
    RequestAttempt.objects.filter(item__job=job).delete()
    RequestItem.objects.filter(job=job).update(
        state=ItemState.SUBMITTED,
        status_code=None,
        response=None,
        error=None,
        provider_request_id="",
        result_line_id="",
        completed_at=None,
        announced=False,
        attempt_count=0,
        parsed=None,
        parse_error="",
        **zero,
    )
    ProviderBatch.objects.filter(job=job).update(
        state=JobState.SUBMITTED, ingested_at=None, cost=None, **zero
    )
    BatchJob.objects.filter(pk=job.pk).update(
        state=JobState.SUBMITTED, ingested_at=None, finish_announced=False, cost=None, **zero
    )
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            for model in (RequestItem, RequestAttempt, ProviderBatch, BatchJob):
                cursor.execute(f"VACUUM ANALYZE {connection.ops.quote_name(model._meta.db_table)}")
        else:
            cursor.execute("ANALYZE")
    trim()


def stored(job: Any) -> list[tuple[Any, ...]]:
    """What the items hold now (result columns), to check the contenders wrote the same."""
    from openai_batches.models import RequestItem
    from openai_batches.services.ingestion import _RESULT_COLUMNS

    return list(
        RequestItem.objects.filter(job=job)
        .order_by("custom_id")
        .values_list("custom_id", "attempt_count", *_RESULT_COLUMNS)
    )


# -- the floor --------------------------------------------------------------------------


def _decode(line: bytes) -> tuple[Any, ...]:
    """One result line to the row the app stores: the least work that gives the same row."""
    obj = json.loads(line)
    response = obj.get("response")
    error = obj.get("error")
    if response is None:
        return (
            obj["custom_id"],
            "failed",
            None,
            None,
            json.dumps(error),
            "",
            obj["id"],
            0,
            0,
            0,
            0,
        )
    status = response["status_code"]
    body = response["body"]
    ok = 200 <= status < 300 and not error
    usage = body.get("usage") or {} if ok else {}
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0) if ok else 0
    reasoning = (
        (usage.get("completion_tokens_details") or {}).get("reasoning_tokens", 0) if ok else 0
    )
    return (
        obj["custom_id"],
        "succeeded" if ok else "failed",
        status,
        json.dumps(body),
        json.dumps(error) if error else None,
        response.get("request_id") or "",
        obj["id"],
        usage.get("prompt_tokens", 0),
        cached,
        usage.get("completion_tokens", 0),
        reasoning,
    )


def run_floor(job: Any, base_url: str, api_key: str) -> float:
    """Download + decode + store + attempt rows, by hand, on the driver's own cursor."""
    import httpx
    from django.db import connection, transaction
    from django.utils import timezone

    from openai_batches.models import ProviderBatch, RequestAttempt, RequestItem
    from openai_batches.services.ingestion import _RESULT_COLUMNS

    part = ProviderBatch.objects.get(job=job)
    table = connection.ops.quote_name(RequestItem._meta.db_table)
    attempts = connection.ops.quote_name(RequestAttempt._meta.db_table)
    now = timezone.now()
    start = time.perf_counter()
    files = []
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}) as http:
        for file_id in (part.output_file_id, part.error_file_id):
            if not file_id:
                continue
            tmp = tempfile.TemporaryFile()  # noqa: SIM115 - closed below, after decoding
            with http.stream("GET", f"/files/{file_id}/content") as response:
                response.raise_for_status()
                for chunk in response.iter_bytes(1 << 16):
                    tmp.write(chunk)
            tmp.seek(0)
            files.append(tmp)
    rows = [_decode(line) for tmp in files for line in tmp if line.strip()]
    for tmp in files:
        tmp.close()
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
                f"UPDATE {table} AS i SET {sets}, completed_at = %s, announced = true, "  # noqa: S608
                "attempt_count = i.attempt_count + 1 FROM bench_floor AS t "
                "WHERE i.batch_id = %s AND i.custom_id = t.custom_id",
                [now, part.pk],
            )
            updated = raw.rowcount
            mark = "%s"
        else:
            sets = ", ".join(f'"{c}" = ?' for c in _RESULT_COLUMNS)
            now_db = connection.ops.adapt_datetimefield_value(now)
            raw.executemany(
                f"UPDATE {table} SET {sets}, completed_at = ?, announced = 1, "  # noqa: S608
                "attempt_count = attempt_count + 1 WHERE batch_id = ? AND custom_id = ?",
                ((*r[1:], now_db, part.pk, r[0]) for r in rows),
            )
            updated = raw.rowcount
            mark = "?"
        raw.execute(
            f"INSERT INTO {attempts} (item_id, batch_id, number, state, status_code, error, "  # noqa: S608
            "input_tokens, cached_tokens, output_tokens, reasoning_tokens, retried, created_at) "
            "SELECT id, batch_id, attempt_count, state, status_code, "
            f"CASE WHEN state = 'succeeded' THEN NULL ELSE COALESCE(error, response) END, "
            "input_tokens, cached_tokens, output_tokens, reasoning_tokens, "
            f"{mark}, {mark} FROM {table} WHERE batch_id = {mark}",
            [False, connection.ops.adapt_datetimefield_value(now) if mark == "?" else now, part.pk],
        )
    elapsed = time.perf_counter() - start
    if updated != len(rows):
        raise SystemExit(f"floor updated {updated} rows, expected {len(rows)}")
    return elapsed


# -- the app ----------------------------------------------------------------------------


class Receiver:
    """One trivial ``result_received`` receiver, connected only for the signal-pass runs."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, **kwargs: Any) -> None:
        self.calls += 1


def run_app(job: Any, receiver: Receiver | None, split: list[float] | None = None) -> float:
    """``services.ingest`` end to end (the on-commit announce included when a receiver is
    connected). The call sits in an outer ``atomic`` only to split the clock: its exit
    commits and runs the on-commit announce exactly as a bare ``ingest(job)`` would."""
    from django.db import transaction

    from openai_batches import services
    from openai_batches.models import ItemState, RequestItem
    from openai_batches.signals import result_received

    if receiver is not None:
        result_received.connect(receiver, weak=False)
        receiver.calls = 0
    try:
        start = time.perf_counter()
        with transaction.atomic():
            lines = services.ingest(job)
            stored_at = time.perf_counter()
        end = time.perf_counter()
    finally:
        if receiver is not None:
            result_received.disconnect(receiver)
    if split is not None:
        split.append(end - stored_at)
    if lines != job.item_count:
        raise SystemExit(f"ingest read {lines} lines, expected {job.item_count}")
    if RequestItem.objects.filter(job=job, state=ItemState.SUBMITTED).exists():
        raise SystemExit("ingest left items open")
    if receiver is not None and receiver.calls != job.item_count:
        raise SystemExit(f"the receiver got {receiver.calls} results, expected {job.item_count}")
    return end - start


def bare_signal_us(n: int) -> float:
    """µs per ``Signal.send`` with one trivial receiver: the least a signal pass can cost."""
    from django.dispatch import Signal

    signal = Signal()
    signal.connect(Receiver(), weak=False)
    start = time.perf_counter()
    for i in range(n):
        signal.send(sender=object, custom_id=str(i), item=None)
    return (time.perf_counter() - start) / n * 1e6


def peak_growth(job: Any) -> int:
    from openai_batches import services

    trim()
    if not reset_hwm():
        return -1
    before = status_kb("VmRSS")
    services.ingest(job)
    return (status_kb("VmHWM") - before) * 1024


# -- main -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--n", type=int, default=50_000, help="requests in the job (50000)")
    parser.add_argument("--lines", choices=("small", "large"), default="small")
    parser.add_argument(
        "--fail-every",
        type=int,
        default=100,
        help="every Nth request fails with a 400 and lands in the error file (0: none)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="alternated runs of each (3)")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="profile, top N")
    parser.add_argument("--json", help="write the figures here (for run_all.py)")
    args = parser.parse_args(argv)

    with database(args.db, BENCH_DB) as db:
        configure(db)
        from django.core.management import call_command
        from django.db import connection

        from openai_batches.models import ProviderBatch
        from openai_batches.testing import running_emulator

        call_command("migrate", verbosity=0)
        with running_emulator(timing="instant") as emu:
            t0 = time.perf_counter()
            job = build_job(args.n, args.fail_every, args.lines)
            part = ProviderBatch.objects.get(job=job)
            out_bytes = sum(
                emu.get_file(f)["bytes"] for f in (part.output_file_id, part.error_file_id) if f
            )
            print(
                f"{connection.vendor} | {args.n:,} requests, {part.request_count_failed:,} "
                f"failed | result files {mb(out_bytes).strip()} "
                f"({out_bytes / args.n:,.0f} bytes a line) | setup {time.perf_counter() - t0:.1f}s",
                flush=True,
            )
            receiver = Receiver()
            announce: list[float] = []
            # The app's own result first, to check the floor stores the same.
            reset(job)
            run_app(job, None)
            expected = stored(job)
            figures = alternate(
                args.repeat,
                {
                    "floor": lambda: run_floor(job, emu.base_url, emu.api_key),
                    "ingest": lambda: run_app(job, None),
                    "signal_pass": lambda: run_app(job, receiver, announce),
                },
                prepare=lambda: reset(job),
            )
            reset(job)
            run_floor(job, emu.base_url, emu.api_key)
            if stored(job) != expected:
                raise SystemExit("the floor stored something else than ingest did")
            del expected
            reset(job)
            growth = peak_growth(job)
            bare = bare_signal_us(args.n)
            announce_us = statistics.median(announce) / args.n * 1e6
            floor = figures["floor"]
            lines_out = []
            for name, label in (
                ("floor", "floor (download+decode+COPY/UPDATE+attempts)"),
                ("ingest", "services.ingest, no receiver"),
                ("signal_pass", "services.ingest + 1 receiver (signal pass)"),
            ):
                f = figures[name]
                f["ratio_min"] = f["min"] / floor["min"]
                f["ratio_median"] = f["median"] / floor["median"]
                lines_out.append(
                    f"{label:48} min {f['min']:6.2f} s  median {f['median']:6.2f} s  "
                    f"= {f['ratio_min']:.2f}x / {f['ratio_median']:.2f}x floor"
                )
            print("\n".join(lines_out))
            print(
                f"announce per result {announce_us:6.1f} µs vs bare Signal.send {bare:5.1f} µs"
                f" = {announce_us / bare:.1f}x"
            )
            if growth >= 0:
                print(
                    f"memory: peak RSS growth of one ingest {mb(growth).strip()} vs result files"
                    f" {mb(out_bytes).strip()} = {growth / out_bytes:.3f}x"
                )
            profile = ""
            if args.profile:
                reset(job)
                profile = profile_top(lambda: run_app(job, receiver), args.profile)
                print(profile)
            write_json(
                args.json,
                {
                    "db": connection.vendor,
                    "n": args.n,
                    "lines": args.lines,
                    "bytes_per_line": out_bytes / args.n,
                    "failed": part.request_count_failed,
                    "figures": figures,
                    "announce_us": announce_us,
                    "bare_signal_us": bare,
                    "peak_growth": growth,
                    "result_bytes": out_bytes,
                    "profile": profile,
                },
            )
        connection.close()


if __name__ == "__main__":
    main()
