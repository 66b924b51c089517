"""``manage.py sync_batches``: submit, refresh, ingest and announce, with no worker needed.

Made for cron (one pass, non-zero exit when any job failed to sync) and for containers
(``--loop``). All the work is :func:`openai_batches.services.sync`; this only parses options
and reports, including the provider batches (parts) behind the jobs it names: how many parts
the pass submitted and ingested, and how many requests it put back in line for a retry part.
Those are read from the database for the report's jobs (a part submitted or ingested since
the pass began, a retry part planned since then), so the services' report stays per job.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Count, Q, Sum
from django.utils import timezone

from openai_batches import services
from openai_batches.models import BatchJob, BatchReason, JobState, ProviderBatch


@dataclass
class PartsReport:
    """What one pass did to the provider batches of the jobs it reports."""

    submitted: int = 0  # parts the provider accepted during the pass
    ingested: int = 0  # parts whose results were stored during the pass
    retry_parts: int = 0  # follow-up parts planned during the pass for requests sent again
    retry_requests: int = 0  # the requests in them
    planned: int = 0  # (dry run) parts waiting to be submitted

    def summary(self, dry_run: bool) -> str:
        if dry_run:
            return f"{self.planned} planned part(s) to submit"
        return (
            f"parts: {self.submitted} submitted, {self.ingested} ingested; "
            f"retries: {self.retry_requests} request(s) in {self.retry_parts} new part(s)"
        )


def parts_report(report: services.SyncReport, since: datetime) -> PartsReport:
    """The parts behind ``report``'s jobs, in one query."""
    ids = {*report.submitted, *report.refreshed, *report.ingested}
    if not ids:
        return PartsReport()
    since_q = Q(created_at__gte=since, reason=BatchReason.RETRY)
    counts = ProviderBatch.objects.filter(job_id__in=ids).aggregate(
        submitted=Count("pk", filter=Q(job_id__in=report.submitted, submitted_at__gte=since)),
        ingested=Count("pk", filter=Q(ingested_at__gte=since)),
        retry_parts=Count("pk", filter=since_q),
        retry_requests=Sum("item_count", filter=since_q),
        planned=Count("pk", filter=Q(job_id__in=report.submitted, state=JobState.SUBMIT_REQUESTED)),
    )
    return PartsReport(**{k: v or 0 for k, v in counts.items()})


class Command(BaseCommand):
    help = (
        "Submit jobs whose submission was requested, refresh every active batch (one list call "
        "per 100 when there are many), ingest finished ones and send pending result signals."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--job",
            action="append",
            type=int,
            dest="jobs",
            metavar="ID",
            help="Only this job (by id); repeat for several.",
        )
        parser.add_argument(
            "--no-submit",
            action="store_false",
            dest="submit",
            help="Do not submit jobs whose submission was requested.",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Show what would be submitted and refreshed; call nothing, change nothing.",
        )
        parser.add_argument(
            "--loop", action="store_true", help="Run passes forever (for a container)."
        )
        parser.add_argument(
            "--interval",
            type=float,
            default=30.0,
            help="Seconds between passes with --loop (default 30).",
        )
        parser.add_argument("--max-passes", type=int, default=0, help=argparse.SUPPRESS)

    def handle(self, *args: Any, **options: Any) -> None:
        passes = 0
        while True:
            passes += 1
            report = self._pass(options)
            if not options["loop"] or (options["max_passes"] and passes >= options["max_passes"]):
                break
            time.sleep(max(options["interval"], 0.1))
        if not report.ok:
            raise CommandError(f"{len(report.errors)} job(s) failed to sync (see above).")

    def _pass(self, options: dict[str, Any]) -> services.SyncReport:
        verbosity = int(options["verbosity"])
        progress = self._progress if verbosity >= 1 else None
        started = timezone.now()
        report = services.sync(
            job_ids=options["jobs"],
            submit=options["submit"],
            dry_run=options["dry_run"],
            progress=progress,
        )
        if self._bar_open:
            self.stderr.write("")
            self._bar_open = False
        if verbosity >= 2 or options["dry_run"]:
            jobs = BatchJob.objects.annotate(
                n_parts=Count("batches"),
                n_retries=Count("batches", filter=Q(batches__reason=BatchReason.RETRY)),
            ).in_bulk([*report.submitted, *report.refreshed, *report.ingested])
            for label, ids in (
                ("submit" if options["dry_run"] else "submitted", report.submitted),
                ("refresh" if options["dry_run"] else "refreshed", report.refreshed),
                ("ingested", report.ingested),
            ):
                for pk in ids:
                    job = jobs.get(pk)
                    status = f" [{job.state}/{job.provider_status or '-'}]" if job else ""
                    shape = f" {self._parts(job)}" if job else ""
                    self.stdout.write(f"  {label}: job {pk} {job or ''}{status}{shape}")
        for pk, message in report.errors:
            self.stderr.write(self.style.ERROR(f"  job {pk}: {message}"))
        parts = parts_report(report, started)
        line = (
            ("dry run: " if options["dry_run"] else "")
            + report.summary()
            + "; "
            + parts.summary(options["dry_run"])
        )
        if verbosity >= 1:
            self.stdout.write(self.style.SUCCESS(line) if report.ok else self.style.WARNING(line))
        return report

    @staticmethod
    def _parts(job: BatchJob) -> str:
        n, retries = job.__dict__["n_parts"], job.__dict__["n_retries"]
        return f"({n} part(s){f', {retries} retry' if retries else ''})"

    _bar_open = False

    def _progress(self, job: BatchJob, done: int, total: int) -> None:
        """A one-line progress bar on stderr for long ingests."""
        if total < 1000:
            return
        width = 30
        filled = int(width * min(done, total) / max(total, 1))
        end = "\n" if not sys.stderr.isatty() and done >= total else ""
        self.stderr.write(
            f"\r  ingesting job {job.pk}: [{'#' * filled}{'.' * (width - filled)}] {done}/{total}",
            ending=end,
        )
        self._bar_open = not end
