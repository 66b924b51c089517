"""Memory of the API's results download: a 50,000-item job streamed through the real view.

The results endpoint (``GET .../jobs/{uuid}/results/``) must stream: its memory must not
grow with the job. This script builds a job whose items all carry stored results (bulk
insert straight into a script-local database, no provider involved), then requests the
endpoint through Django's WSGI handler exactly as a server would, reading and discarding
the body chunk by chunk, and prints::

    body          bytes streamed (what building the answer in memory would at least cost)
    peak growth   VmHWM after the download minus RSS before it (high-water mark reset first)
    ratio         peak growth / body size: ~0 means flat, ~1 or more means "built in memory"

Usage::

    python benchmarks/api_results_memory.py                    # SQLite in a temp dir
    python benchmarks/api_results_memory.py --db postgres      # DATABASE_URL, or a database
                                                               # created on 127.0.0.1:5432
    python benchmarks/api_results_memory.py --n 100000
"""

from __future__ import annotations

import argparse
import base64
import io
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import configure_django, database, reset_hwm, status_kb, trim

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BENCH_DB = "openai_batches_api_bench"
USER, PASSWORD = "bench", "bench-password"
MODEL = "gpt-4o-mini"

# The script is its own URLconf (ROOT_URLCONF = "__main__").
urlpatterns: list[Any] = []


# -- setup -----------------------------------------------------------------------------------


def configure(db: dict[str, Any]) -> None:
    configure_django(
        db,
        apps=("rest_framework", "drf_spectacular"),
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF="__main__",
        MIDDLEWARE=[],
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
    )
    from django.urls import include, path

    urlpatterns.append(path("api/batches/", include("openai_batches.api.urls")))


def build_job(n: int) -> Any:
    """A finished job of ``n`` items, each with a realistic stored chat completion."""
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.utils import timezone

    from openai_batches.models import BatchJob, BatchStatus, ItemState, JobState, RequestItem

    user = get_user_model().objects.create_user(USER, password=PASSWORD)
    job = BatchJob.objects.create(
        name="bench",
        owner=user,
        model=MODEL,
        state=JobState.FINISHED,
        provider_status=BatchStatus.COMPLETED,
        item_count=n,
    )
    now = timezone.now()
    chunk: list[RequestItem] = []
    with transaction.atomic():
        for i in range(n):
            chunk.append(
                RequestItem(
                    job=job,
                    custom_id=f"review-{i:06d}",
                    url="/v1/chat/completions",
                    body={
                        "model": MODEL,
                        "messages": [{"role": "user", "content": f"Summarise review {i}."}],
                    },
                    state=ItemState.SUCCEEDED,
                    status_code=200,
                    response=_completion(i),
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


def _completion(i: int) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{i:024d}",
        "object": "chat.completion",
        "created": 1_760_000_000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": f"Review {i}: arrived on time and blends well, but it is loud "
                    f"and the lid cracked after {i % 97 + 3} days.",
                    "refusal": None,
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 42, "completion_tokens": 23, "total_tokens": 65},
        "system_fingerprint": "fp_bench",
    }


# -- measuring -------------------------------------------------------------------------------


def download(job: Any) -> tuple[int, int, int, float, bool]:
    """GET the results through the WSGI handler; (status, bytes, chunks, seconds, streamed)."""
    from django.core.handlers.wsgi import WSGIHandler

    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": f"/api/batches/jobs/{job.uuid}/results/",
        "QUERY_STRING": "",
        "SERVER_NAME": "bench",
        "SERVER_PORT": "80",
        "HTTP_HOST": "bench",
        "HTTP_AUTHORIZATION": f"Basic {token}",
        "HTTP_ACCEPT": "application/jsonl",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0),
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    status: list[str] = []

    def start_response(
        line: str, headers: list[tuple[str, str]], exc_info: Any = None, /
    ) -> Callable[[bytes], object]:
        status.append(line)
        return lambda data: None  # the legacy write(); Django never calls it

    start = time.perf_counter()
    body = WSGIHandler()(environ, start_response)
    # A streaming response hands the server an iterator; a built one, a single body.
    streamed = not hasattr(body, "content")
    total = chunks = 0
    try:
        for chunk in body:
            total += len(chunk)
            chunks += 1
    finally:
        if hasattr(body, "close"):
            body.close()
    return int(status[0].split()[0]), total, chunks, time.perf_counter() - start, streamed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--n", type=int, default=50_000, help="items in the job")
    args = parser.parse_args()

    with database(args.db, BENCH_DB) as db:
        configure(db)
        from django.core.management import call_command
        from django.db import connection

        call_command("migrate", verbosity=0)
        t0 = time.perf_counter()
        job = build_job(args.n)
        print(
            f"job          {args.n:,} items with results, inserted in {time.perf_counter() - t0:.1f} s"
        )
        download(job)  # warm up: imports, URLconf, first queries are not the stream's cost

        trim()
        rss_before = status_kb("VmRSS")
        hwm_ok = reset_hwm()
        status, nbytes, chunks, seconds, streamed = download(job)
        peak_growth = (status_kb("VmHWM") - rss_before) * 1024 if hwm_ok else -1
        connection.close()

    if status != 200:
        raise SystemExit(f"the results endpoint answered {status}")
    print(f"database     {connection.vendor}")
    print(
        f"response     {'streamed' if streamed else 'BUILT IN MEMORY'}, {chunks:,} chunks in {seconds:.2f} s"
    )
    print(f"body         {nbytes / 1e6:8.1f} MB")
    if peak_growth < 0:
        print("peak growth  VmHWM could not be reset here; not measured")
        return
    print(f"peak growth  {peak_growth / 1e6:8.1f} MB  (VmHWM during the download - RSS before)")
    print(f"ratio        {peak_growth / nbytes:8.3f}  (peak growth / body; ~0 = flat)")


if __name__ == "__main__":
    main()
