"""What the benchmark scripts share: a scratch database and memory readings from /proc.

The scripts run as ``python benchmarks/NAME.py``, so this module is imported from their
own folder (``import _common``); it is not part of the package.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

LOCAL_PG = {"HOST": "127.0.0.1", "PORT": "5432", "USER": "postgres", "PASSWORD": ""}


def _pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(
        host=LOCAL_PG["HOST"],
        port=LOCAL_PG["PORT"],
        user=LOCAL_PG["USER"],
        password=LOCAL_PG["PASSWORD"] or None,
        dbname="postgres",
        autocommit=True,
    ) as conn:
        conn.execute(sql)


@contextlib.contextmanager
def database(kind: str, scratch_name: str) -> Iterator[dict[str, Any]]:
    """A DATABASES['default'] entry: a temp SQLite file, the PostgreSQL of ``DATABASE_URL``,
    or a scratch PostgreSQL database ``scratch_name`` on the local server. Whatever the run
    creates is removed after it."""
    if kind == "sqlite":
        tmpdir = tempfile.mkdtemp(prefix=f"{scratch_name}-")
        try:
            yield {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": os.path.join(tmpdir, "db.sqlite3"),
            }
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
        return
    url = os.environ.get("DATABASE_URL", "")
    if url:
        parts = urlsplit(url)
        if parts.scheme not in ("postgres", "postgresql"):
            raise SystemExit(f"--db postgres needs a postgres:// DATABASE_URL, not {parts.scheme}")
        yield {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parts.path.lstrip("/")) or "postgres",
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
        }
        return
    _pg_admin(f"DROP DATABASE IF EXISTS {scratch_name} WITH (FORCE)")
    _pg_admin(f"CREATE DATABASE {scratch_name}")
    try:
        yield {"ENGINE": "django.db.backends.postgresql", "NAME": scratch_name, **LOCAL_PG}
    finally:
        from django.db import connections

        connections.close_all()  # no open session may hold the database we drop
        _pg_admin(f"DROP DATABASE IF EXISTS {scratch_name} WITH (FORCE)")


def status_kb(field: str) -> int:
    """A ``/proc/self/status`` field in kB (``VmRSS``, ``VmHWM``)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def trim() -> None:
    """Hand freed memory back to the OS so the next RSS growth is the next step's own."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def reset_hwm() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def mb(n_bytes: float) -> str:
    return f"{n_bytes / 1e6:8.1f} MB"


def configure_django(
    db: dict[str, Any],
    *,
    apps: tuple[str, ...] = (),
    openai_batches: dict[str, Any] | None = None,
    **extra: Any,
) -> None:
    """``settings.configure`` + ``django.setup()`` for a benchmark: the app, its
    dependencies, ``db``, DEBUG off (DEBUG keeps every query in memory and would spoil
    the measurements) and a provider URL nothing listens on; ``apps`` go before ours."""
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        SECRET_KEY="benchmark-only-not-secret",  # noqa: S106
        USE_TZ=True,
        TIME_ZONE="UTC",
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django_rq",
            *apps,
            "openai_batches",
        ],
        DATABASES={"default": db},
        # Database 6: the one this project's benchmarks may use (15 belongs to the test suite).
        RQ_QUEUES={"default": {"URL": "redis://127.0.0.1:6379/6"}},
        OPENAI_BATCHES={
            "API_KEY": "sk-bench",
            "BASE_URL": "http://127.0.0.1:9/v1",
            **(openai_batches or {}),
        },
        **extra,
    )
    django.setup()


# -- alternating app and floor ------------------------------------------------------------


def summary(times: list[float]) -> dict[str, Any]:
    """min, median and every run of a list of timings (seconds)."""
    return {"min": min(times), "median": statistics.median(times), "runs": times}


def alternate(
    repeat: int,
    contenders: dict[str, Callable[[], float]],
    prepare: Callable[[], None] = lambda: None,
) -> dict[str, dict[str, Any]]:
    """Run each contender ``repeat`` times, interleaved (app, floor, app, floor, ...), with
    ``prepare`` before every run, so a load spike on the shared machine hits both sides
    alike. Each contender returns its own measured seconds (setup stays outside its clock).
    """
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeat):
        for name, run in contenders.items():
            prepare()
            times[name].append(run())
    return {name: summary(t) for name, t in times.items()}


def timer(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def write_json(path: str | None, data: dict[str, Any]) -> None:
    """The figures for ``run_all.py`` (which writes RESULTS.md from them)."""
    if path:
        with open(path, "w") as fh:
            json.dump(data, fh, indent=1, default=str)


def profile_top(fn: Callable[[], Any], top: int = 12) -> str:
    """cProfile one call of ``fn``: the ``top`` entries by own time (anything, the database
    driver's waits included), then the app's own functions by cumulative time."""
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        fn()
    finally:
        profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    out.write(f"-- top {top} by own time --\n")
    stats.sort_stats("tottime").print_stats(top)
    out.write(f"-- top {top} of openai_batches' own functions by cumulative time --\n")
    stats.sort_stats("cumulative").print_stats("openai_batches/", top)
    keep = ("--", "ncalls", "  ")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    lines = []
    for line in out.getvalue().splitlines():
        if line.strip() and line.startswith(keep):
            # Paths shortened: the checkout's and site-packages' prefixes say nothing.
            line = re.sub(r"\S*/(site-packages|lib/python3\.\d+)/", "", line.replace(root, ""))
            lines.append(line)
    return "\n".join(lines)
