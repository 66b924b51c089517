"""Run every benchmark on PostgreSQL and write ``benchmarks/RESULTS.md``.

Usage::

    python benchmarks/run_all.py            # the issue's sizes (about 15 minutes on 2 cores)
    python benchmarks/run_all.py --quick    # small sizes, to check the scripts work
    python benchmarks/run_all.py --out /tmp/RESULTS.md

Each script runs in its own process against its own fresh database, created on the server
of ``DATABASE_URL`` (its credentials; the database named there is not touched) or on the
local server (127.0.0.1:5432, user postgres), and dropped afterwards. The scripts write their
figures as JSON; this one turns them into one Markdown page: the machine, the date, the load
before and after, every figure and ratio, and for each target of issue 13 whether it is met
or the gap with its measured cause (the profile's top entries, or the offending query).

Ratios are app / floor. Both are timed alternately in one process (app, floor, app, ...),
so a load spike from other work on a shared machine hits both; the verdict uses the ratio of
the minimums (the least disturbed runs), and the ratio of the medians is shown beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


# -- the runs ---------------------------------------------------------------------------


def plan(quick: bool) -> list[tuple[str, str, list[str]]]:
    """(key, script, arguments) for each run; figures come back as JSON unless noted."""
    n = "2000" if quick else "50000"
    return [
        (
            "submit",
            "submit.py",
            ["--n", n, "--one-item-jobs", "50" if quick else "200", "--profile", "15"],
        ),
        ("ingest_small", "ingest.py", ["--n", n, "--lines", "small", "--profile", "15"]),
        ("ingest_large", "ingest.py", ["--n", n, "--lines", "large", "--profile", "15"]),
        (
            "pages",
            "pages.py",
            ["--jobs", "300", "--items", "20000", "--big", "5000"]
            if quick
            else ["--jobs", "10000", "--items", "1000000", "--big", "50000"],
        ),
        (
            "sync",
            "sync.py",
            # A pass over 10,000 unchanged jobs takes minutes at today's per-job cost: one
            # measured pass there (after the warm-up), three at 1,000. Said in RESULTS.md.
            ["--sizes", "100,300" if quick else "1000,10000", "--profile", "15"]
            + ([] if quick else ["--repeat-largest", "1"]),
        ),
        # Memory and throughput scripts that print their own report (kept verbatim).
        ("api_results_memory", "api_results_memory.py", ["--db", "postgres", "--n", n]),
        ("export_memory", "export_memory.py", ["--db", "postgres", "--n", n]),
        # 200,000 rather than purge.py's 1,000,000: purge is not a target of issue 13, and the
        # run must fit the time a shared machine allows; its rate is per item.
        ("purge", "purge.py", ["--n", "20000" if quick else "200000"]),
        ("emulator_memory", "emulator_memory.py", ["--lines", n]),
        ("emulator_listing", "emulator_listing.py", []),
    ]


def server_url() -> str:
    url = os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/postgres"
    if urlsplit(url).scheme not in ("postgres", "postgresql"):
        raise SystemExit(f"run_all.py runs on PostgreSQL; DATABASE_URL is {urlsplit(url).scheme}")
    return url


def with_db(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))


def admin(url: str, sql: str) -> Any:
    import psycopg

    with psycopg.connect(with_db(url, "postgres"), autocommit=True) as conn:
        cursor = conn.execute(sql)
        row = cursor.fetchone() if cursor.description else None
        return row[0] if row else None


def run(key: str, script: str, args: list[str], url: str) -> dict[str, Any]:
    name = f"obb_bench_{key}"
    admin(url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin(url, f"CREATE DATABASE {name}")
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as out:
        pass  # only a name for the script to write to
    env = {**os.environ, "DATABASE_URL": with_db(url, name), "PYTHONUNBUFFERED": "1"}
    takes_json = script in ("submit.py", "ingest.py", "pages.py", "sync.py")
    cmd = [sys.executable, str(HERE / script), *args, *(["--json", out.name] if takes_json else [])]
    print(f"== {key}: {' '.join(cmd[1:])}", flush=True)
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    finally:
        admin(url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    elapsed = time.perf_counter() - started
    print(proc.stdout[-3000:], proc.stderr[-3000:] if proc.returncode else "", flush=True)
    result: dict[str, Any] = {
        "stdout": proc.stdout,
        "returncode": proc.returncode,
        "stderr": proc.stderr[-2000:],
        "elapsed": elapsed,
        "cmd": " ".join(["python", f"benchmarks/{script}", *args]),
    }
    if takes_json and proc.returncode == 0:
        result["data"] = json.loads(Path(out.name).read_text())
    os.unlink(out.name)
    return result


# -- the machine ------------------------------------------------------------------------


def machine(url: str) -> dict[str, str]:
    import django

    with open("/proc/meminfo") as fh:
        mem_kb = int(fh.readline().split()[1])
    cpu = "?"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "cores": str(os.cpu_count()),
        "cpu": cpu,
        "ram": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "os": platform.platform(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "postgresql": str(admin(url, "SHOW server_version")),
        "commit": commit,
    }


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


# -- the page ---------------------------------------------------------------------------


def s(x: float) -> str:
    return f"{x:.2f} s" if x >= 0.1 else f"{x * 1000:.0f} ms"


def fig(f: dict[str, Any]) -> str:
    return f"{s(f['min'])} / {s(f['median'])}"


def ratio(f: dict[str, Any]) -> str:
    return f"{f['ratio_min']:.2f}x / {f['ratio_median']:.2f}x"


def verdict(met: bool) -> str:
    return "**met**" if met else "**not met**"


def code(text: str) -> str:
    return "```\n" + text.strip() + "\n```\n"


def failed(r: dict[str, Any]) -> bool:
    return r["returncode"] != 0 or ("data" not in r and "--json" in r.get("cmd", ""))


def report(results: dict[str, dict[str, Any]], info: dict[str, Any]) -> str:
    m = info["machine"]
    out: list[str] = []
    w = out.append
    w("# Benchmark results\n")
    w(
        "Written by `python benchmarks/run_all.py"
        + (" --quick" if info["quick"] else "")
        + f"` on {info['date']} (commit `{m['commit']}`), in {info['elapsed'] / 60:.0f} min. "
        "Do not edit by hand: run the command again.\n"
    )
    if info["quick"]:
        w("**Quick run: small sizes, for checking the scripts; not the issue's figures.**\n")
    w("## Machine\n")
    w("| | |\n|---|---|")
    for k in ("cores", "cpu", "ram", "os", "python", "django", "postgresql"):
        w(f"| {k} | {m[k]} |")
    w("")
    w(
        "The machine was **shared**: other engineers ran test suites on the same 2 cores while "
        "this ran, so absolute times are noisy. Load (`uptime`) before and after:\n"
    )
    w(code(f"before: {info['uptime_before']}\nafter:  {info['uptime_after']}"))
    w(
        "How to read: every time is `min / median` of the runs; every ratio is app / floor, "
        "`ratio of minimums / ratio of medians`. App and floor were alternated in one process "
        "(at least 3 runs each), so load hits both; verdicts use the ratio of minimums. Each "
        "floor does the same work as the app (described under each section and in each "
        "script's docstring).\n"
    )

    w("## Targets of issue 13\n")
    w("| target | floor | app | ratio | verdict |\n|---|---|---|---|---|")
    causes: list[str] = []
    sub = results.get("submit", {}).get("data")
    if sub:
        f = sub["figures"]
        met = f["app"]["ratio_min"] <= 2
        w(
            f"| submit {sub['n']:,} items <= 2x | {fig(f['floor'])} | {fig(f['app'])} | "
            f"{ratio(f['app'])} | {verdict(met)} |"
        )
        if not met:
            causes.append(
                f"### Submit: {f['app']['ratio_min']:.1f}x, the gap's cause\n\n"
                "cProfile of one `create_job` + `request_submit` + `submit` (top entries):\n\n"
                + code(sub["profile"])
            )
    for key, label in (("ingest_small", "small"), ("ingest_large", "2.7 KB")):
        ing = results.get(key, {}).get("data")
        if not ing:
            continue
        f = ing["figures"]
        met = f["signal_pass"]["ratio_min"] <= 2
        w(
            f"| signal pass, {ing['n']:,} results, {label} lines ({ing['bytes_per_line']:,.0f} B) "
            f"<= 2x | {fig(f['floor'])} | {fig(f['signal_pass'])} | {ratio(f['signal_pass'])} | "
            f"{verdict(met)} |"
        )
        if not met:
            causes.append(
                f"### Signal pass, {label} lines: {f['signal_pass']['ratio_min']:.1f}x, the gap's "
                f"cause\n\nThe announce alone costs {ing['announce_us']:.0f} µs per result against "
                f"{ing['bare_signal_us']:.1f} µs for a bare `Signal.send` with one receiver "
                f"({ing['announce_us'] / ing['bare_signal_us']:.0f}x). cProfile of one ingest with "
                "the receiver (store and announce):\n\n" + code(ing["profile"])
            )
    pg = results.get("pages", {}).get("data")
    if pg:
        st = pg["stream"]
        met = st["app"]["ratio_min"] <= 1.5
        w(
            f"| API results stream, {pg['big']:,} items <= 1.5x | {fig(st['floor'])} | "
            f"{fig(st['app'])} | {ratio(st['app'])} | {verdict(met)} |"
        )
        if not met:
            causes.append(
                f"### Results stream: {st['app']['ratio_min']:.1f}x\n\nThe stream ran "
                f"{st['queries']} queries; the floor is one server-side SELECT plus the same "
                "JSON encoding per line (the bare SELECT alone is in the pages section).\n"
            )
    sy = results.get("sync", {}).get("data")
    if sy:
        sizes = sorted(sy["sizes"], key=int)
        lo, hi = sy["sizes"][sizes[0]], sy["sizes"][sizes[-1]]
        grows = hi["queries"] > lo["queries"] * 1.1
        w(
            f"| sync_batches: O(1) queries per unchanged job (the pass's count must not grow "
            f"with jobs) | {lo['http_calls']} / {hi['http_calls']} HTTP calls | "
            f"{lo['queries']:,} / {hi['queries']:,} queries at {int(sizes[0]):,} / "
            f"{int(sizes[-1]):,} jobs | {hi['queries_per_job']:.1f} queries per job | "
            f"{verdict(not grows)} |"
        )
        if grows:
            causes.append(
                f"### sync_batches: {hi['queries_per_job']:.1f} queries per unchanged job\n\n"
                f"A pass over {int(sizes[-1]):,} batches nobody changed ran {hi['queries']:,} "
                f"statements and took {s(hi['command']['min'])} against {s(hi['floor']['min'])} "
                "for the same HTTP listing and one SELECT. cProfile of one pass at "
                f"{int(sizes[0]):,} jobs:\n\n" + code(sy["profile"])
            )
    if pg:
        for which in ("admin job list", "API job list"):
            small, big = pg["pages"][f"{which}, 10 rows"], pg["pages"][f"{which}, 100 rows"]
            counts_items = bool(big["item_queries"])
            flat = big["queries"] <= small["queries"] + 1
            met = flat and not counts_items
            w(
                f"| {which}: no item counting per row, queries flat in page size | | "
                f"{small['queries']} queries at 10 rows, {big['queries']} at 100 | "
                f"{'reads the item table' if counts_items else 'no item-table query'} | "
                f"{verdict(met)} |"
            )
            if not met:
                why = []
                if not flat:
                    why.append(
                        f"the query count grows with the page: {big['repeated']} runs of\n\n"
                        + code(big["repeated_sql"])
                    )
                if counts_items:
                    why.append(
                        "the page reads the item table:\n\n"
                        + "".join(code(q) for q in big["item_queries"][:2])
                    )
                causes.append(f"### {which}\n\n" + "\n".join(why))
    w("")
    if causes:
        w("## Gaps and their measured causes\n")
        w("\n".join(causes))

    w("## Every figure\n")
    if sub:
        f = sub["figures"]
        w(f"### Submit ({results['submit']['cmd']})\n")
        w(
            "Floor: the job and part rows, every item by COPY with each body JSON-encoded once, "
            "the JSONL written from the same text to a temporary file, one upload, one create "
            "(HTTP, emulator). App: `create_job(items=...)` + `request_submit` + `submit`.\n"
        )
        w("| | min / median | ratio |\n|---|---|---|")
        w(f"| floor | {fig(f['floor'])} | 1 |")
        w(f"| app | {fig(f['app'])} | {ratio(f['app'])} |")
        w("")
        w(
            f"Peak RSS growth of one app submit: {sub['peak_growth'] / 1e6:.1f} MB. "
            f"{sub['one_item_jobs']} one-item jobs: {sub['per_job_ms']:.0f} ms and "
            f"{sub['per_job_queries']:.0f} queries per job.\n"
        )
    for key in ("ingest_small", "ingest_large"):
        ing = results.get(key, {}).get("data")
        if not ing:
            continue
        f = ing["figures"]
        w(f"### Ingest and signal pass, {ing['lines']} lines ({results[key]['cmd']})\n")
        w(
            f"{ing['n']:,} results ({ing['failed']:,} of them 400s in the error file), "
            f"{ing['result_bytes'] / 1e6:.1f} MB of result files, "
            f"{ing['bytes_per_line']:,.0f} bytes a line. Floor: HTTP download of both files, "
            "json.loads per line, COPY + UPDATE ... FROM, INSERT ... SELECT of the attempts.\n"
        )
        w("| | min / median | ratio |\n|---|---|---|")
        w(f"| floor | {fig(f['floor'])} | 1 |")
        w(f"| ingest, no receiver | {fig(f['ingest'])} | {ratio(f['ingest'])} |")
        w(
            f"| ingest + 1 receiver (signal pass) | {fig(f['signal_pass'])} | {ratio(f['signal_pass'])} |"
        )
        w("")
        w(
            f"Announce per result: {ing['announce_us']:.0f} µs; a bare `Signal.send` with one "
            f"receiver: {ing['bare_signal_us']:.1f} µs. Peak RSS growth of one ingest: "
            f"{ing['peak_growth'] / 1e6:.1f} MB for {ing['result_bytes'] / 1e6:.1f} MB of files.\n"
        )
    if pg:
        w(f"### Admin and API pages ({results['pages']['cmd']})\n")
        w(
            f"{pg['jobs']:,} jobs, {pg['items']:,} items (one job of {pg['big']:,}), built in "
            f"{pg['build_s']:.0f} s. Superuser, Django's test client, one warm-up request.\n"
        )
        w("| page | queries | most repeated query | min / median | slowest query |")
        w("|---|---|---|---|---|")
        for name, p in pg["pages"].items():
            w(
                f"| {name} | {p['queries']} | {p['repeated']}x | {fig(p)} | "
                f"{p['slowest_s'] * 1000:.0f} ms |"
            )
        w("")
        st = pg["stream"]
        w(f"Results stream: {st['bytes'] / 1e6:.1f} MB, {st['queries']} queries.\n")
        w("| | min / median | ratio |\n|---|---|---|")
        w(f"| floor: raw SELECT + the same JSON line per row | {fig(st['floor'])} | 1 |")
        w(
            f"| app: GET .../results/, body read to the end | {fig(st['app'])} | {ratio(st['app'])} |"
        )
        w(
            f"| bare raw SELECT, rows fetched, nothing encoded | {fig(st['bare_select'])} | {ratio(st['bare_select'])} |"
        )
        w("")
    if sy:
        w(f"### sync_batches ({results['sync']['cmd']})\n")
        w(
            "Every batch `validating` on a frozen emulator clock: nothing changes. Floor: the "
            "same list calls by hand plus one SELECT of the active parts. `runs`: measured "
            "passes after one warm-up pass (one at the largest size when a pass takes minutes).\n"
        )
        w(
            "| active batches | runs | queries | per job | HTTP calls | command min / median "
            "| floor min / median | ratio |"
        )
        w("|---|---|---|---|---|---|---|---|")
        for size in sorted(sy["sizes"], key=int):
            r = sy["sizes"][size]
            w(
                f"| {int(size):,} | {r['repeat']} | {r['queries']:,} | {r['queries_per_job']:.2f} | "
                f"{r['http_calls']} | {fig(r['command'])} | {fig(r['floor'])} | "
                f"{ratio(r['command'])} |"
            )
        w("")
    w("## The other scripts, verbatim\n")
    for key in (
        "api_results_memory",
        "export_memory",
        "purge",
        "emulator_memory",
        "emulator_listing",
    ):
        r = results.get(key)
        if r:
            w(f"### {key} (`{r['cmd']}`)\n")
            w(code(r["stdout"] or "(no output)"))
    broken = [k for k, r in results.items() if r["returncode"] != 0]
    if broken:
        w("## Runs that failed\n")
        for k in broken:
            w(f"### {k}\n")
            w(code(results[k]["stderr"]))
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    parser.add_argument("--only", help="comma-separated run keys (for debugging)")
    args = parser.parse_args(argv)
    url = server_url()
    info: dict[str, Any] = {
        "quick": args.quick,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(url),
        "uptime_before": uptime(),
    }
    started = time.perf_counter()
    results = {}
    for key, script, script_args in plan(args.quick):
        if args.only and key not in args.only.split(","):
            continue
        results[key] = run(key, script, script_args, url)
    info["elapsed"] = time.perf_counter() - started
    info["uptime_after"] = uptime()
    Path(args.out).write_text(report(results, info))
    print(f"wrote {args.out}")
    if any(r["returncode"] for r in results.values()):
        raise SystemExit("some runs failed: see the end of the page")


if __name__ == "__main__":
    main()
