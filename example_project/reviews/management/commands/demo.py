"""``manage.py demo``: a real batch, end to end, in about ten seconds.

Migrates, creates a few hundred product reviews and a demo admin login, starts the bundled
OpenAI emulator in this process, turns the reviews into one Batch API job, submits it, draws
the batch's progress through its states, and prints a summary with sample results that the
receiver in ``reviews/receivers.py`` wrote back onto their rows.

``--max-per-batch M`` lowers the requests one provider batch takes (OpenAI's limit is
50,000), so a job of more requests is split into parts, one provider batch each, carried
to completion as one job: ``--count 120000 --max-per-batch 50000`` makes 3 parts. The
output says how the job was cut and, at the end, how many parts (and retry parts) it took.

Who does the queue work:

- no ``REDIS_URL``: this process calls the same service functions the RQ jobs call
  (``services.submit``, then ``services.refresh`` until the batch is terminal, which
  ingests the results and sends the signals). Nothing needs Redis.
- ``REDIS_URL`` set: ``services.request_submit`` enqueues the submit job, and RQ worker
  subprocesses (``manage.py rqworker openai_batches --with-scheduler``) do the submit, the
  scheduled polls and the ingest; this process only watches the database.
- ``EXAMPLE_RUNNER=tasks``: the same through Django's Tasks framework: the tasks are rows in
  the demo's own database and a ``manage.py db_worker`` subprocess runs them. No Redis.

``--openai`` sends the batch to the real OpenAI API instead (needs ``OPENAI_API_KEY``; it
costs money and may take up to 24 hours).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from argparse import ArgumentParser
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count, Q, Sum
from django.test.utils import override_settings

from openai_batches import jobs, services
from openai_batches.conf import app_settings
from openai_batches.models import BatchJob, BatchReason, ItemState, JobState, RequestItem

from ...batching import MODEL, create_classification_job
from ...models import Review
from ...seeding import DEMO_PASSWORD, DEMO_USERNAME, ensure_demo_user, ensure_reviews

OPENAI_URL = "https://api.openai.com/v1"
#: Terminal local states: after these nothing more happens to the job.
DONE_STATES = {JobState.FINISHED, JobState.SUBMIT_FAILED, JobState.CANCELLED}
BAR_WIDTH = 30


@dataclass
class Progress:
    state: str
    status: str
    total: int
    completed: int
    failed: int
    stored: int

    @classmethod
    def of(cls, job: BatchJob) -> Progress:
        return cls(
            state=job.state,
            status=job.provider_status,
            total=job.request_count_total or job.item_count,
            completed=job.request_count_completed,
            failed=job.request_count_failed,
            stored=0,
        )


class Command(BaseCommand):
    help = (
        "Run the end-to-end demo: classify the sentiment of a few hundred reviews with one "
        "Batch API job against the bundled emulator (or the real OpenAI with --openai)."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--count",
            type=int,
            default=None,
            help="reviews to classify (default 300; 40 with --fast)",
        )
        parser.add_argument(
            "--fast",
            action="store_true",
            help="for tests: the emulator's 'instant' timing and fewer reviews",
        )
        parser.add_argument(
            "--timing",
            choices=["instant", "fast", "realistic"],
            default=None,
            help="emulator timing (default fast: the batch walks every state in a few seconds)",
        )
        parser.add_argument(
            "--max-per-batch",
            type=int,
            default=None,
            metavar="M",
            help="at most M requests per provider batch: a larger job is split into parts, "
            "each its own batch (OpenAI's limit, the default, is 50,000); e.g. --count 120000 "
            "--max-per-batch 50000 makes 3 parts",
        )
        parser.add_argument(
            "--fail",
            type=int,
            default=2,
            help="requests the emulator is told to reject, to show how failures look (default 2)",
        )
        parser.add_argument(
            "--openai",
            action="store_true",
            help="use the real OpenAI API (needs OPENAI_API_KEY; costs money; up to 24 h)",
        )
        parser.add_argument("--model", default=MODEL, help=f"model (default {MODEL})")
        parser.add_argument(
            "--workers", type=int, default=2, help="RQ worker processes when REDIS_URL is set"
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=None,
            help="give up after this many seconds (default 300; 25 h with --openai)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self.workers: list[tuple[subprocess.Popen[bytes], Path]] = []
        self.tty = self.stdout.isatty()
        count = options["count"] or (40 if options["fast"] else 300)
        timing = options["timing"] or ("instant" if options["fast"] else "fast")
        runner = jobs.runner()
        timeout = options["timeout"] or (25 * 3600 if options["openai"] else 300)
        started = time.monotonic()
        if options["openai"] and not os.environ.get("OPENAI_API_KEY"):
            raise CommandError("--openai needs OPENAI_API_KEY in the environment.")
        max_per_batch = options["max_per_batch"]
        if max_per_batch is not None and max_per_batch < 1:
            raise CommandError(f"--max-per-batch must be at least 1, not {max_per_batch}.")

        self.heading("django-openai-batches demo")
        self.step("Migrating the database")
        call_command("migrate", verbosity=0, interactive=False)
        self.demo_user = ensure_demo_user()
        reviews = self.ensure_reviews(count)

        with ExitStack() as stack:
            if options["openai"]:
                provider = self.use_openai(stack)
            else:
                provider = self.use_emulator(stack, timing, reviews, options["fail"])
            if max_per_batch is not None:
                # Before the workers start: they read it from the environment.
                self.limit_batches(stack, max_per_batch)
            if runner == "rq":
                self.start_workers(stack, options["workers"])
            elif runner == "tasks":
                self.start_db_worker(stack)
            job = create_classification_job(reviews, owner=self.demo_user, model=options["model"])
            self.step(
                f"Created batch job {job.pk} ({job.uuid}) with {job.item_count} requests "
                f"to {job.endpoint}, model {job.model}"
            )
            job = self.run_job(job, runner=runner, timeout=timeout, provider=provider)

        elapsed = time.monotonic() - started
        self.summary(job, reviews, elapsed)
        self.admin_hint()
        self.check_done(job)

    # ------------------------------------------------------------------ setup

    def heading(self, text: str) -> None:
        self.stdout.write(self.style.MIGRATE_HEADING(f"\n{text}\n{'=' * len(text)}"))

    def step(self, text: str) -> None:
        self.stdout.write(f"- {text}")

    def ensure_reviews(self, count: int) -> list[Review]:
        created = ensure_reviews(count)
        if created:
            self.step(f"Created {created} product reviews (deterministic example data)")
        reviews = list(Review.objects.order_by("pk")[:count])
        # Start from a clean slate so the summary shows what *this* run wrote.
        Review.objects.filter(pk__in=[r.pk for r in reviews]).update(
            sentiment="",
            sentiment_reason="",
            model_reply="",
            classification_error="",
            classified_at=None,
        )
        self.step(f"Using {len(reviews)} reviews of {len({r.product for r in reviews})} products")
        return reviews

    def point_app_at(self, stack: ExitStack, base_url: str, api_key: str) -> None:
        # In this process through the settings; in worker subprocesses through the
        # environment variables the example's settings.py reads.
        stack.enter_context(
            override_settings(
                OPENAI_BATCHES={**settings.OPENAI_BATCHES, "BASE_URL": base_url, "API_KEY": api_key}
            )
        )
        os.environ["EXAMPLE_OPENAI_BASE_URL"] = base_url
        os.environ["EXAMPLE_OPENAI_API_KEY"] = api_key

    def limit_batches(self, stack: ExitStack, max_per_batch: int) -> None:
        # In this process through the settings (the job is cut into parts when its
        # submission is requested, here); in worker subprocesses through the environment.
        stack.enter_context(
            override_settings(
                OPENAI_BATCHES={**settings.OPENAI_BATCHES, "MAX_REQUESTS_PER_BATCH": max_per_batch}
            )
        )
        os.environ["EXAMPLE_MAX_REQUESTS_PER_BATCH"] = str(max_per_batch)
        self.step(f"At most {max_per_batch:,} requests per provider batch")

    def use_openai(self, stack: ExitStack) -> str:
        key = os.environ.get("OPENAI_API_KEY", "")
        if not key:
            raise CommandError("--openai needs OPENAI_API_KEY in the environment.")
        self.point_app_at(stack, OPENAI_URL, key)
        self.step(
            self.style.WARNING(
                "Using the REAL OpenAI API: this costs money and the batch may take up to 24 hours. "
                "Ctrl-C leaves it running at OpenAI; `manage.py sync_batches` ingests it later."
            )
        )
        return "OpenAI"

    def use_emulator(self, stack: ExitStack, timing: str, reviews: list[Review], fail: int) -> str:
        from openai_batches.emulator import Emulator, EmulatorServer

        # A real clock whatever the profile, as the emulator's own CLI does: "instant" batches
        # finish on the next request, "fast" ones move while we watch.
        emulator = Emulator(timing=timing, clock="real")
        stack.callback(emulator.close)
        server = EmulatorServer(emulator, host="127.0.0.1", port=0)
        server.start()
        stack.callback(server.stop)
        self.point_app_at(stack, server.base_url, "sk-emulator")
        self.step(f"Started the bundled OpenAI emulator at {server.base_url} (timing {timing!r})")
        # A couple of rejected requests show how failures are stored and reported.
        for review in reviews[7 :: max(1, len(reviews) // max(fail, 1))][:fail]:
            emulator.fail_request(
                review.custom_id,
                status_code=400,
                code="invalid_prompt",
                message="Invalid prompt: flagged as potentially violating the usage policy (emulated).",
            )
        return "emulator"

    def start_workers(self, stack: ExitStack, n: int) -> None:
        import django_rq

        queue = app_settings.QUEUE
        try:
            django_rq.get_connection(queue).ping()
        except Exception as exc:
            raise CommandError(
                f"REDIS_URL is set ({settings.REDIS_URL}) but Redis does not answer: {exc}. "
                "Start Redis, or unset REDIS_URL to run the queue work in this process."
            ) from exc
        log_dir = Path(tempfile.mkdtemp(prefix="openai-batches-demo-"))
        procs = [
            self.spawn(
                stack, log_dir / f"worker-{i + 1}.log", "rqworker", queue, "--with-scheduler"
            )
            for i in range(max(1, n))
        ]
        stack.callback(self.stop_workers, procs)
        self.workers = [(p, log_dir / f"worker-{i + 1}.log") for i, p in enumerate(procs)]
        self.step(
            f"Started {len(procs)} RQ workers on queue {queue!r} at {settings.REDIS_URL} "
            f"(logs in {log_dir})"
        )

    def start_db_worker(self, stack: ExitStack) -> None:
        """One ``db_worker`` of django-tasks-db on this demo's database (SQLite included)."""
        queue = app_settings.QUEUE
        log_dir = Path(tempfile.mkdtemp(prefix="openai-batches-demo-"))
        # --no-reload: the example runs with DEBUG, where db_worker would start an autoreloader.
        proc = self.spawn(
            stack,
            log_dir / "db_worker.log",
            *("db_worker", "--queue-name", queue, "--interval", "0.2"),
            *("--no-startup-delay", "--no-reload"),
        )
        stack.callback(self.stop_workers, [proc])
        self.workers = [(proc, log_dir / "db_worker.log")]
        self.step(
            f"Started a Django Tasks worker (db_worker --queue-name {queue}) on the demo's "
            f"database (log in {log_dir})"
        )

    def spawn(self, stack: ExitStack, log_path: Path, *args: str) -> subprocess.Popen[bytes]:
        """A ``manage.py`` subprocess with this process's environment, output to ``log_path``."""
        manage = Path(sys.argv[0]).resolve()
        if manage.name != "manage.py":
            manage = Path(settings.BASE_DIR) / "manage.py"
        log = open(log_path, "wb")  # noqa: SIM115 - closed by the stack
        stack.callback(log.close)
        return subprocess.Popen(
            [sys.executable, str(manage), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
        )

    def stop_workers(self, procs: list[subprocess.Popen[bytes]]) -> None:
        self.workers = []
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()

    # ------------------------------------------------------------------ the run

    def run_job(self, job: BatchJob, *, runner: str, timeout: float, provider: str) -> BatchJob:
        deadline = time.monotonic() + timeout
        if runner in ("rq", "tasks"):
            services.request_submit(job)
            self.step(self.parts_line(job))
            who = "an RQ worker" if runner == "rq" else "the db_worker"
            self.step(f"Submission requested: {who} uploads the JSONL and creates the batch")
            updates = self.watch(job, deadline)
        else:
            services.request_submit(job)  # RUNNER is "none" without REDIS_URL: nothing enqueued
            self.step(self.parts_line(job))
            self.step(
                "Submission requested. No REDIS_URL, so nothing is enqueued: this process runs "
                f"services.sync() passes (what `manage.py sync_batches` runs) against the {provider}"
            )
            updates = self.drive(job, deadline)
        last: Progress | None = None
        for progress in updates:
            if progress != last:
                self.draw(progress)
                last = progress
        if self.tty:
            self.stdout.write("")
        job.refresh_from_db()
        return job

    def parts_line(self, job: BatchJob) -> str:
        """How the job was cut into provider batches when its submission was requested."""
        sizes = list(job.batches.order_by("part").values_list("item_count", flat=True))
        if len(sizes) == 1:
            return f"One provider batch carries all {sizes[0]:,} requests"
        limit = int(app_settings.MAX_REQUESTS_PER_BATCH)
        return (
            f"Split into {len(sizes)} parts, one provider batch each, of at most {limit:,} "
            f"requests: {' + '.join(f'{n:,}' for n in sizes)}"
        )

    def parts_summary(self, job: BatchJob) -> str:
        """The job's provider batches at the end: the parts its size took, and retries."""
        parts = list(job.batches.order_by("part").values_list("reason", "item_count"))
        sized = [n for reason, n in parts if reason != BatchReason.RETRY]
        retries = [n for reason, n in parts if reason == BatchReason.RETRY]
        text = f"{len(parts)} part(s): {' + '.join(f'{n:,}' for n in sized)} requests"
        if retries:
            text += f", then {len(retries)} retry part(s) of {sum(retries):,} request(s)"
        return text

    def drive(self, job: BatchJob, deadline: float) -> Iterator[Progress]:
        """No Redis: one sync pass at a time, as ``sync_batches --loop`` would run them."""
        interval = float(app_settings.POLL_INTERVAL) if self.is_real(job) else 0.25
        while True:
            report = services.sync(job_ids=[job.pk])
            job.refresh_from_db()
            yield self.progress(job)
            if job.state in DONE_STATES:
                return
            if job.state == JobState.SUBMIT_FAILED or (
                report.errors and job.state == JobState.DRAFT
            ):
                return
            if time.monotonic() > deadline:
                raise CommandError(
                    f"Gave up waiting for batch job {job.pk} (still {job.provider_status or job.state})."
                )
            time.sleep(interval)

    def watch(self, job: BatchJob, deadline: float) -> Iterator[Progress]:
        """With workers (RQ or Tasks): they do everything; read the database."""
        while True:
            job.refresh_from_db()
            progress = self.progress(job)
            yield progress
            if job.state in DONE_STATES and progress.stored >= job.item_count:
                return
            if job.state in DONE_STATES and job.state != JobState.FINISHED:
                return
            if time.monotonic() > deadline:
                raise CommandError(
                    f"Gave up waiting for batch job {job.pk} (still {job.provider_status})."
                )
            # A worker that died (a bad setting, a missing table) would leave us waiting
            # until the deadline for work nobody does.
            for proc, log in self.workers:
                if proc.poll() is not None:
                    raise CommandError(
                        f"A worker exited with status {proc.returncode} before batch job "
                        f"{job.pk} finished; see {log}"
                    )
            time.sleep(0.2)

    def is_real(self, job: BatchJob) -> bool:
        return app_settings.account(job.account).base_url == OPENAI_URL

    def progress(self, job: BatchJob) -> Progress:
        p = Progress.of(job)
        p.stored = RequestItem.objects.filter(job=job, announced=True).count()
        return p

    def draw(self, p: Progress) -> None:
        status = p.status or p.state
        total = max(p.total, 1)
        done = p.completed + p.failed
        if p.state == JobState.FINISHED:
            label = (
                f"finished: {p.stored}/{p.total} results written back"
                if p.stored >= p.total
                else f"ingested; receivers writing back: {p.stored}/{p.total}"
            )
            frac = 1.0
        elif status in ("finalizing", "completed", "expired", "cancelled") or (
            p.state == JobState.SUBMITTED and done
        ):
            label, frac = (
                f"{status}: {p.completed} done, {p.failed} failed of {p.total}",
                done / total,
            )
        else:
            label, frac = status.replace("_", " "), 0.0
        filled = round(frac * BAR_WIDTH)
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        line = f"  [{bar}] {frac:4.0%}  {label}"
        if self.tty:
            self.stdout.write(f"\r\033[K{line}", ending="")
            self.stdout.flush()
        else:
            self.stdout.write(line)

    # ------------------------------------------------------------------ the report

    def summary(self, job: BatchJob, reviews: list[Review], elapsed: float) -> None:
        items = RequestItem.objects.filter(job=job)
        counts = items.aggregate(
            total=Count("pk"),
            succeeded=Count("pk", filter=Q(state=ItemState.SUCCEEDED)),
            failed=Count("pk", filter=Q(state=ItemState.FAILED)),
            other=Count("pk", filter=~Q(state__in=[ItemState.SUCCEEDED, ItemState.FAILED])),
            announced=Count("pk", filter=Q(announced=True)),
            input_tokens=Sum("input_tokens"),
            output_tokens=Sum("output_tokens"),
        )
        answered = counts["succeeded"] + counts["failed"]
        self.heading("Summary")
        rows = [
            (
                "Batch job",
                f"{job.pk} · {job.provider_batch_id or '-'} · {job.provider_status or job.state}",
            ),
            ("Batches", self.parts_summary(job)),
            ("Requests", f"{counts['total']}"),
            (
                "Answered",
                f"{answered}/{counts['total']} (succeeded {counts['succeeded']}, failed {counts['failed']})",
            ),
            ("Written back", f"{counts['announced']} results delivered to the receiver"),
            (
                "Tokens",
                f"{job.input_tokens or counts['input_tokens'] or 0:,} input, {job.output_tokens or counts['output_tokens'] or 0:,} output",
            ),
            ("Cost", self.cost_line(job)),
            ("Elapsed", f"{elapsed:.1f} s"),
        ]
        if counts["other"]:
            rows.insert(3, ("Not answered", str(counts["other"])))
        width = max(len(k) for k, _ in rows)
        for key, value in rows:
            self.stdout.write(f"  {key.ljust(width)}  {value}")

        by_sentiment = (
            Review.objects.filter(pk__in=[r.pk for r in reviews])
            .values_list("sentiment")
            .annotate(n=Count("pk"))
            .order_by("-n")
        )
        self.stdout.write(
            "  "
            + "Sentiments".ljust(width)
            + "  "
            + ", ".join(f"{s or 'none'} {n}" for s, n in by_sentiment)
        )
        self.samples(reviews)
        self.parsed_samples(job)

    def cost_line(self, job: BatchJob) -> str:
        cost = services.job_cost(job)
        if cost is None:
            return f"unknown (add {job.model!r} to OPENAI_BATCHES['PRICES'])"
        sync = cost * 2  # OpenAI's batch rates are half the synchronous ones
        return (
            f"${self.money(cost)} at batch prices vs ${self.money(sync)} synchronously "
            f"(saved ${self.money(sync - cost)}, 50%)"
        )

    @staticmethod
    def money(value: Decimal) -> str:
        return f"{value:.6f}" if value < 1 else f"{value:.2f}"

    def samples(self, reviews: list[Review]) -> None:
        rows = Review.objects.filter(pk__in=[r.pk for r in reviews])
        picks = list(rows.exclude(sentiment="").order_by("pk")[:3])
        picks += list(rows.exclude(classification_error="").order_by("pk")[:1])
        if not picks:
            return
        self.stdout.write("\n  Sample results, read back from the reviews table:")
        for review in picks:
            self.stdout.write(
                f"  · review {review.pk}, {review.product}, {review.rating}★: {review.title!r}"
            )
            self.stdout.write(f"      {review.text[:96]}{'...' if len(review.text) > 96 else ''}")
            if review.classification_error:
                self.stdout.write(
                    self.style.WARNING(f"      failed: {review.classification_error}")
                )
            else:
                reason = f" ({review.sentiment_reason[:90]})" if review.sentiment_reason else ""
                self.stdout.write(f"      -> sentiment {review.sentiment}{reason}")
        if not self.is_real_settings():
            self.stdout.write(
                "\n  The emulator does not read the reviews: it answers the structured-output "
                "schema with\n  a label picked by a hash of the request. With --openai the "
                "model reads them, and the\n  same receiver stores its labels."
            )

    def parsed_samples(self, job: BatchJob) -> None:
        """A few answers as the receiver got them: ``item.result``, parsed into the model."""
        items = RequestItem.objects.filter(job=job).select_related("job").order_by("pk")
        picks = list(items.filter(state=ItemState.SUCCEEDED)[:3])
        picks += list(items.exclude(state=ItemState.SUCCEEDED)[:1])
        if not picks:
            return
        self.stdout.write(f"\n  Sample parsed results (item.result, model {job.output_schema}):")
        for item in picks:
            result = item.result
            if result.parsed is not None:
                shown = f"parsed {result.parsed!r}"
            else:
                shown = self.style.WARNING(f"not parsed: {result.reason}")
            self.stdout.write(f"  · {item.custom_id}: {shown}")
            self.stdout.write(
                f"      tokens {result.usage.input_tokens} in / {result.usage.output_tokens} out, "
                f"finish {result.finish_reason or '-'}"
            )

    def is_real_settings(self) -> bool:
        return app_settings.account().base_url == OPENAI_URL

    def admin_hint(self) -> None:
        self.heading("Look around")
        self.stdout.write(
            "  scripts/serve        # admin, API, emulator and a worker on http://127.0.0.1:8000\n"
            f"  open http://127.0.0.1:8000/admin/   login {DEMO_USERNAME} / {DEMO_PASSWORD}\n"
            "  (or: python example_project/manage.py runserver, same URL and login)"
        )

    def check_done(self, job: BatchJob) -> None:
        items = RequestItem.objects.filter(job=job)
        unanswered = items.exclude(state__in=[ItemState.SUCCEEDED, ItemState.FAILED]).count()
        if job.state != JobState.FINISHED or unanswered:
            raise CommandError(
                f"Batch job {job.pk} ended {job.state}/{job.provider_status or '-'} with "
                f"{unanswered} requests unanswered. {job.last_error}".strip()
            )
        self.stdout.write(
            self.style.SUCCESS(f"\nDone: every one of {items.count()} requests answered.")
        )
