"""A child process for the crash and race suites: runs one lifecycle step of the app as a
real ``python`` process against the test's database and emulator.

    python -m tests.procs.child ACTION JOB_PK [--crash-at NAME] [--wait-at NAME] [--hit N]

``--crash-at NAME`` replaces ``services._base._checkpoint`` so the process SIGKILLs itself at the
N-th time it reaches the checkpoint NAME: no ``finally``, no rollback sent, no log flushed,
exactly as a machine losing power or the OOM killer would leave things. ``--wait-at NAME``
instead creates ``reached-NAME`` in ``$PROC_CONTROL_DIR`` and waits for a ``release`` file
there, so a test can force an interleaving instead of hoping for one. The process prints
one JSON line: what the step returned and how long it took.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any


def _install_checkpoint(crash_at: str | None, wait_at: str | None, hit: int) -> None:
    from openai_batches import services

    if crash_at and crash_at not in services.CHECKPOINTS:
        raise SystemExit(f"unknown checkpoint {crash_at!r}")
    if wait_at and wait_at not in services.CHECKPOINTS:
        raise SystemExit(f"unknown checkpoint {wait_at!r}")
    control = Path(os.environ.get("PROC_CONTROL_DIR", "."))
    seen: dict[str, int] = {}

    def checkpoint(name: str) -> None:
        seen[name] = seen.get(name, 0) + 1
        if seen[name] != hit:
            return
        if name == crash_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if name == wait_at:
            (control / f"reached-{name}").touch()
            deadline = time.monotonic() + 120
            while not (control / "release").exists():
                if time.monotonic() > deadline:
                    raise SystemExit(f"never released at {name}")
                time.sleep(0.02)

    services._base._checkpoint = checkpoint  # type: ignore[assignment]


def _admin_action(action: str, job_pk: int) -> Any:
    from django.contrib.auth import get_user_model
    from django.contrib.messages import get_messages
    from django.test import Client

    client = Client()
    client.force_login(get_user_model().objects.get(username=os.environ["PROC_ADMIN_USER"]))
    response = client.post(
        "/admin/openai_batches/batchjob/",
        {"action": action, "_selected_action": [str(job_pk)]},
        follow=True,
    )
    return {
        "status": response.status_code,
        "messages": [str(m) for m in get_messages(response.wsgi_request)],
    }


def run(action: str, job_pk: int) -> Any:
    from openai_batches import jobs, services

    if action == "submit":
        return services.submit(job_pk).state
    if action == "refresh":
        return services.refresh(job_pk).state
    if action == "ingest":
        return services.ingest(job_pk)
    if action == "announce":
        return services.announce_pending()
    if action == "sync":
        report = services.sync()
        return {"summary": report.summary(), "errors": report.errors}
    if action == "sync-others":  # a sync pass over every job but this one
        from openai_batches.models import BatchJob

        others = BatchJob.objects.exclude(pk=job_pk).values_list("pk", flat=True)
        report = services.sync(job_ids=list(others))
        return {"summary": report.summary(), "errors": report.errors}
    if action == "poll":  # what the RQ worker runs for a webhook's request_refresh
        return jobs.poll_job(job_pk, force=True)
    if action == "cancel":
        return services.cancel(job_pk).state
    if action in ("admin-cancel", "admin-refresh"):
        return _admin_action(
            {"admin-cancel": "cancel_jobs", "admin-refresh": "refresh_jobs"}[action], job_pk
        )
    raise SystemExit(f"unknown action {action!r}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("action")
    parser.add_argument("job", type=int)
    parser.add_argument("--crash-at")
    parser.add_argument("--wait-at")
    parser.add_argument("--hit", type=int, default=1)
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings

    from openai_batches.conf import app_settings

    from .receivers import connect

    # Like cron or a worker calling the services directly: nothing goes through RQ (the
    # test drives every step), and small chunks so a few items span several of them.
    settings.OPENAI_BATCHES = {
        **settings.OPENAI_BATCHES,
        "RUNNER": "none",
        "INGEST_CHUNK_SIZE": int(os.environ.get("PROC_INGEST_CHUNK", "5")),
    }
    if os.environ.get("PROC_TIMEOUT"):  # a deliberately slow response must not time out
        settings.OPENAI_BATCHES["TIMEOUT"] = float(os.environ["PROC_TIMEOUT"])
    app_settings.reload()
    from openai_batches import services

    services.announcing._ANNOUNCE_CHUNK = int(os.environ.get("PROC_ANNOUNCE_CHUNK", "500"))
    connect()
    _install_checkpoint(args.crash_at, args.wait_at, args.hit)
    started = time.monotonic()
    result = run(args.action, args.job)
    print(json.dumps({"result": result, "elapsed": time.monotonic() - started}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
