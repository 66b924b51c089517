"""Retention: delete old jobs' provider files, then the jobs and their items, in chunks.

:func:`purge` is what ``manage.py purge_batches`` runs (and what ``services`` re-exports).
It touches only jobs the provider can no longer be running (finished, submission failed,
cancelled before submission) whose finish time (``ingested_at``, else ``updated_at``) is
older than the cutoff, and never a finished job whose result signals have not all gone out
(deleting it would lose them; ``announce_pending`` must catch up first).

A purge works one page of jobs at a time:

1. **Claim** the page in one short transaction: re-read the jobs locked, keep those still
   eligible, and turn a "submission failed" job into "cancelled" (with a note in
   ``last_error``). That is the one state a job can leave (by being submitted again), so
   after the claim nothing can revive a job whose items are half deleted, and a purge
   killed half-way is finished by the next run.
2. **Files** (unless ``keep_files``): delete the input, output and error files at the
   provider, outside any transaction. A file that is gone already (404: it expired, or was
   deleted by hand) counts as deleted. Each field is cleared once its file is gone, so the
   admin stops offering its download. Any other provider error is reported and the job is
   kept, with the file ids still on it, for the next run.
3. **Rows**: items are deleted by pk ranges of at most ``chunk`` rows, one short transaction
   each (``DELETE ... WHERE job_id IN (page) AND id <= bound``), then the page's job rows.
   Nothing is loaded but one pk per chunk, so memory stays flat however many rows go.

The deletes are Django's ``QuerySet.delete()`` on those bounded querysets rather than a raw
``_raw_delete()``: while nothing refers to an item and nobody listens to its delete signals,
Django's collector sends exactly the one ``DELETE`` without reading a row (what a raw delete
would do); the day a model refers to items (the per-attempt rows planned for issue 11) or a
host project connects ``pre_delete``/``post_delete``, the same call cascades and sends the
signals instead of failing on a foreign key or skipping them, still on at most ``chunk``
rows at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import models, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.db.models.functions import Coalesce
from django.utils import timezone

from .client import BatchProvider, get_client
from .exceptions import ConfigurationError, NotFoundError, ProviderError
from .models import BatchJob, ItemState, JobState, ProviderBatch, RequestAttempt, RequestItem

__all__ = ["PURGEABLE_STATES", "PurgeReport", "purge", "purgeable_jobs"]

logger = logging.getLogger(__name__)

#: Job states the provider cannot be running: the only ones a purge touches.
PURGEABLE_STATES = (JobState.FINISHED, JobState.SUBMIT_FAILED, JobState.CANCELLED)
#: A provider batch's fields naming provider files, in the order they are deleted.
FILE_FIELDS = ("input_file_id", "output_file_id", "error_file_id")
#: Jobs claimed per page. Bounds the ``IN (...)`` lists (SQLite takes 32,766 parameters)
#: and the job rows Django's collector reads when it deletes a page's jobs.
JOB_PAGE = 500

#: ``progress(items_deleted, items_total)``, called after every chunk.
PurgeProgress = Callable[[int, int], None]


@dataclass
class PurgeReport:
    """What a purge did (or, with ``dry_run``, would do).

    ``files`` counts provider files deleted (or found already gone: ``files_gone`` of
    them); ``errors`` holds ``(job_id, message)`` for every job kept because a file could
    not be deleted; ``skipped_unannounced`` counts old finished jobs kept because their
    result signals have not all been sent.
    """

    dry_run: bool = False
    jobs: int = 0
    items: int = 0
    files: int = 0
    files_gone: int = 0
    chunks: int = 0
    skipped_unannounced: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        if self.dry_run:
            text = (
                f"would delete {self.jobs} job(s), {self.items} item(s) and {self.files} "
                "provider file(s); nothing was called or changed"
            )
        else:
            text = (
                f"deleted {self.jobs} job(s), {self.items} item(s) in {self.chunks} chunk(s), "
                f"{self.files} provider file(s) ({self.files_gone} already gone), "
                f"{len(self.errors)} job(s) kept for file errors"
            )
        if self.skipped_unannounced:
            text += f"; {self.skipped_unannounced} job(s) skipped: results not yet announced"
        return text


def purgeable_jobs(older_than: timedelta, *, now: datetime | None = None) -> QuerySet[BatchJob]:
    """Jobs a purge with this cutoff deletes: not running anywhere, finished before the
    cutoff, every result signal (and ``job_finished``) sent."""
    cutoff = (now or timezone.now()) - older_than
    return _old(BatchJob.objects.all(), cutoff).exclude(_unannounced()).order_by("pk")


def _old(qs: QuerySet[BatchJob], cutoff: datetime) -> QuerySet[BatchJob]:
    return qs.alias(finished_on=Coalesce("ingested_at", "updated_at")).filter(
        state__in=PURGEABLE_STATES, finished_on__lt=cutoff
    )


def _unannounced() -> Q:
    # pending_announcement() in the words of the outbox's partial index (not announced, not
    # pending or submitted), so the check is one index probe per job, not a scan of its
    # items: the same rows for a finished job, whose items are all final.
    pending = RequestItem.objects.filter(job_id=OuterRef("pk"), announced=False).exclude(
        state__in=(ItemState.PENDING, ItemState.SUBMITTED)
    )
    return Q(state=JobState.FINISHED) & (Q(finish_announced=False) | Q(Exists(pending)))


def purge(
    *,
    older_than: timedelta,
    keep_files: bool = False,
    dry_run: bool = False,
    chunk: int = 5000,
    progress: PurgeProgress | None = None,
) -> PurgeReport:
    """Delete the provider files of old finished jobs, then the jobs and their items.

    See the module docstring for what is eligible and how it is made safe. ``dry_run``
    counts what would go and calls and changes nothing. ``chunk`` is the most items one
    ``DELETE`` (and one transaction) removes.
    """
    if older_than < timedelta(0):
        raise ValueError("older_than must not be negative")
    if chunk < 1:
        raise ValueError("chunk must be at least 1")
    now = timezone.now()
    cutoff = now - older_than
    report = PurgeReport(dry_run=dry_run)
    report.skipped_unannounced = _old(BatchJob.objects.all(), cutoff).filter(_unannounced()).count()
    eligible = purgeable_jobs(older_than, now=now)
    if dry_run:
        report.jobs = eligible.count()
        report.items = RequestItem.objects.filter(job__in=eligible.values("pk")).count()
        if not keep_files:
            parts = ProviderBatch.objects.filter(job__in=eligible.values("pk"))
            report.files = sum(parts.exclude(**{name: ""}).count() for name in FILE_FIELDS)
        return report
    total = sum(eligible.values_list("item_count", flat=True).iterator())
    clients: dict[str, BatchProvider] = {}
    last = 0
    try:
        while True:
            page = list(eligible.filter(pk__gt=last).values_list("pk", flat=True)[:JOB_PAGE])
            if not page:
                break
            last = page[-1]
            claimed = _claim(page, cutoff)
            if not keep_files:
                claimed = [pk for pk in claimed if _delete_files(pk, clients, report)]
            _delete_rows(claimed, chunk, report, progress, total)
    finally:
        for client in clients.values():
            client.close()
    return report


def _claim(page: list[int], cutoff: datetime) -> list[int]:
    """Lock the page's jobs, keep those still eligible, and make them final (see 1.)."""
    with transaction.atomic():
        locked = _old(BatchJob.objects.select_for_update(), cutoff).filter(pk__in=page)
        claimed = list(locked.exclude(_unannounced()).values_list("pk", flat=True))
        # .update(), not save(): updated_at (the finish time of these jobs) must not move.
        BatchJob.objects.filter(pk__in=claimed, state=JobState.SUBMIT_FAILED).update(
            state=JobState.CANCELLED,
            last_error="Submission failed; being purged (purge_batches), never to be submitted.",
        )
    return claimed


def _delete_files(pk: int, clients: dict[str, BatchProvider], report: PurgeReport) -> bool:
    """Delete the provider files of every batch of the job; False (and an error reported)
    if one remains."""
    parts = ProviderBatch.objects.filter(job_id=pk).only("pk", "account", *FILE_FIELDS)
    for part in parts.order_by("part"):
        for name in FILE_FIELDS:
            file_id = getattr(part, name)
            if not file_id:
                continue
            try:
                client = clients.get(part.account)
                if client is None:
                    client = clients[part.account] = get_client(part.account)
                client.delete_file(file_id)
            except NotFoundError:
                report.files_gone += 1  # expired at the provider, or deleted by hand
            except (ProviderError, ConfigurationError) as err:
                # Kept with its file ids: the next run tries again. A bad account setting
                # is reported the same way, for the operator to fix.
                message = f"could not delete {name.replace('_id', '')} {file_id}: {err}"
                logger.warning("purge: job %s kept: %s", pk, message)
                report.errors.append((pk, message))
                return False
            ProviderBatch.objects.filter(pk=part.pk, **{name: file_id}).update(**{name: ""})
            report.files += 1
    return True


def _delete_rows(
    jobs: list[int],
    chunk: int,
    report: PurgeReport,
    progress: PurgeProgress | None,
    total: int,
) -> None:
    """Delete the jobs' items ``chunk`` at a time (a transaction each), then the jobs."""
    if not jobs:
        return
    items = RequestItem.objects.filter(job_id__in=jobs)
    more = True
    while more:
        with transaction.atomic():
            # The chunk's last pk (and the next one, to know whether another chunk follows):
            # only rows at or below it go, so each DELETE removes at most ``chunk`` rows
            # however the jobs' pks interleave.
            ordered = items.order_by("pk").values_list("pk", flat=True)
            first = ordered.first()
            edge = list(ordered[chunk - 1 : chunk + 1])
            more = len(edge) == 2
            doomed = items.filter(pk__lte=edge[0]) if edge else items
            # The items' attempts first, then the items with one plain DELETE: through
            # Django's collector (items have attempts pointing at them) every item would be
            # loaded into memory and deleted a hundred rows per statement. The pk range
            # lets the attempts' index find them instead of a scan of every attempt.
            last = edge[0] if edge else None
            attempts = RequestAttempt.objects.filter(item__job_id__in=jobs)
            if first is not None:
                attempts = attempts.filter(item_id__gte=first)
            if last is not None:
                attempts = attempts.filter(item_id__lte=last)
            attempts.delete()
            deleted = doomed._raw_delete(doomed.db)
        if deleted:
            report.items += deleted
            report.chunks += 1
            if progress is not None:
                progress(report.items, total)
    with transaction.atomic():
        report.jobs += _count(BatchJob.objects.filter(pk__in=jobs).delete()[1], BatchJob)


def _count(per_model: dict[str, int], model: type[models.Model] = RequestItem) -> int:
    """Rows of ``model`` in what ``QuerySet.delete()`` returns."""
    return per_model.get(model._meta.label, 0)
