"""``manage.py purge_batches``: delete old jobs' provider files, then the jobs and items.

Made for cron: one pass, a summary line, and a non-zero exit (``CommandError``) when any
job was kept because one of its files could not be deleted at the provider. All the work
is :func:`openai_batches.retention.purge`; this only parses options and reports.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from openai_batches import retention

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_AGE = re.compile(r"([0-9]+)([smhd]?)")


def parse_age(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s`` or plain seconds as a timedelta."""
    match = _AGE.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(
            f"{text!r} is not an age: use a whole number with d, h, m or s (30d, 12h, 90m), "
            "or plain seconds"
        )
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def _age(text: str) -> timedelta:
    try:
        return parse_age(text)
    except ValueError as err:
        raise CommandError(f"--older-than: {err}.") from None


class Command(BaseCommand):
    help = (
        "Delete the provider files of finished, failed and cancelled jobs older than "
        "--older-than, then those jobs and their items in chunks. Jobs the provider may "
        "still be running, drafts, and finished jobs whose results are not yet announced "
        "are never touched."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            required=True,
            metavar="AGE",
            help="Only jobs that finished longer ago than this: 30d, 12h, 90m, or seconds.",
        )
        parser.add_argument(
            "--keep-files",
            action="store_true",
            help="Delete the jobs and items only; leave their files at the provider.",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Say how many jobs, items and files would be deleted; call and change nothing.",
        )
        parser.add_argument(
            "--chunk",
            type=int,
            default=5000,
            metavar="N",
            help="Most items deleted per statement and transaction (default 5000).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        older_than = _age(options["older_than"])
        if options["chunk"] < 1:
            raise CommandError("--chunk must be at least 1.")
        verbosity = int(options["verbosity"])
        report = retention.purge(
            older_than=older_than,
            keep_files=options["keep_files"],
            dry_run=options["dry_run"],
            chunk=options["chunk"],
            progress=self._progress if verbosity >= 2 else None,
        )
        for pk, message in report.errors:
            self.stderr.write(self.style.ERROR(f"  job {pk} kept: {message}"))
        line = ("dry run: " if report.dry_run else "") + report.summary()
        if verbosity >= 1:
            self.stdout.write(self.style.SUCCESS(line) if report.ok else self.style.WARNING(line))
        if not report.ok:
            raise CommandError(
                f"{len(report.errors)} job(s) kept: their provider files could not be deleted "
                "(see above); the next run tries again."
            )

    def _progress(self, done: int, total: int) -> None:
        self.stdout.write(f"  deleted {done}/{total} item(s)")
