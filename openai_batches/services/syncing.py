"""The ``sync_batches`` pass: submit what is requested, refresh every running batch (one
list call per 100 when there are many), ingest and announce what ended."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from ..client import _pages
from ..conf import app_settings
from ..exceptions import (
    ConfigurationError,
    NotFoundError,
    ProviderError,
)
from ..models import (
    TERMINAL_STATUSES,
    BatchJob,
    JobState,
    ProviderBatch,
)
from . import _base, quota
from ._base import _announced_in_pass, _record_error_quietly
from .announcing import announce_pending
from .ingestion import ingest
from .polling import _poll_failed, apply_batch, unchanged
from .submission import submit

#: Above this many active batches per account, one list call per 100 beats one GET each.
LIST_REFRESH_THRESHOLD = 5

#: The most jobs one statement schedules (see ``_schedule_polls``): their ids are
#: parameters, and SQLite takes at most 32,766 of them.
_SCHEDULE_CHUNK = 20_000


@dataclass
class SyncReport:
    """What one sync pass did; ``errors`` holds ``(job_id, message)`` pairs."""

    submitted: list[int] = field(default_factory=list)
    refreshed: list[int] = field(default_factory=list)
    ingested: list[int] = field(default_factory=list)
    announced: int = 0
    api_calls: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        if self.dry_run:
            return (
                f"would submit {len(self.submitted)}, would refresh {len(self.refreshed)}; "
                "nothing was called or changed"
            )
        return (
            f"submitted {len(self.submitted)}, refreshed {len(self.refreshed)}, ingested {len(self.ingested)}, "
            f"announced {self.announced} result(s), {self.api_calls} API call(s), {len(self.errors)} error(s)"
        )


def sync(
    *,
    job_ids: Iterable[int] | None = None,
    submit: bool = True,
    dry_run: bool = False,
    progress: Callable[[BatchJob, int, int], None] | None = None,
) -> SyncReport:
    """One pass: submit requested jobs, refresh active ones, ingest and announce finished ones.

    Needs no RQ worker: this is what cron's ``sync_batches`` runs. Active batches of one
    account are fetched with the list endpoint (one call per 100) when there are many.
    """
    report = SyncReport(dry_run=dry_run)
    counter = [0]
    token = _announced_in_pass.set(counter)
    try:
        _sync(report, job_ids=job_ids, submit=submit, dry_run=dry_run, progress=progress)
    finally:
        _announced_in_pass.reset(token)
    report.announced = counter[0]
    return report


def _sync(
    report: SyncReport,
    *,
    job_ids: Iterable[int] | None,
    submit: bool,
    dry_run: bool,
    progress: Callable[[BatchJob, int, int], None] | None,
) -> None:
    """:func:`sync`'s pass. Every job is handled on its own: whatever goes wrong with one
    (a provider error, a configuration problem, a bug, a database refusal) is recorded on
    it and reported, and the pass goes on with the others."""
    jobs_qs = BatchJob.objects.all()
    if job_ids is not None:
        jobs_qs = jobs_qs.filter(pk__in=list(job_ids))
    if submit:
        if not dry_run:
            # Move the lines first: parts that now fit their token budget are submitted
            # in this same pass.
            quota.admit_waiting()
        now = timezone.now()
        stale = now - timedelta(seconds=float(app_settings.SUBMIT_LEASE))
        to_submit = (
            jobs_qs.filter(
                Q(state=JobState.SUBMIT_REQUESTED)
                | Q(state=JobState.SUBMITTING, submit_attempt_at__lt=stale)
            )
            # Not the jobs the provider asked to come back later: not their time yet.
            .exclude(submit_not_before__gt=now)
            .order_by("pk")
        )
        for job in to_submit:
            if dry_run:
                report.submitted.append(job.pk)
                continue
            try:
                result = _submit(job)
            except Exception as err:
                report.errors.append((job.pk, _describe(err)))
                continue
            if result.state == JobState.SUBMITTED:
                report.submitted.append(job.pk)
            elif result.state in (JobState.SUBMIT_FAILED, JobState.SUBMIT_REQUESTED):
                report.errors.append((job.pk, result.last_error))
    read_at = timezone.now()  # a job polled after this is not backed off by this pass
    active = ProviderBatch.objects.active().select_related("job").order_by("job_id", "part")
    if job_ids is not None:
        active = active.filter(job_id__in=list(job_ids))
    by_account: dict[str, list[ProviderBatch]] = {}
    for part in active:
        by_account.setdefault(part.account, []).append(part)
    quiet: list[BatchJob] = []
    for account, group in by_account.items():
        jobs_in_group: dict[int, list[ProviderBatch]] = {}
        for part in group:
            jobs_in_group.setdefault(part.job_id, []).append(part)
        if dry_run:
            report.refreshed += list(jobs_in_group)
            continue
        try:
            batches = _fetch_batches(account, group, report)
        except Exception as err:
            for parts in jobs_in_group.values():
                _poll_failed(parts[0].job, err)
                report.errors.append((parts[0].job_id, _describe(err)))
            continue
        for job_pk, parts in jobs_in_group.items():
            job = parts[0].job
            for part in parts:
                if part.provider_batch_id not in batches:
                    report.errors.append(
                        (job_pk, f"batch {part.provider_batch_id} was not found at the provider")
                    )
            found = [
                (p, batches[p.provider_batch_id]) for p in parts if p.provider_batch_id in batches
            ]
            if not found:
                continue
            if len(found) == len(parts) and all(unchanged(p, b) for p, b in found):
                # Nothing new at the provider: no lock, no write, no query for this job;
                # its next poll is scheduled below with every other such job at once.
                quiet.append(job)
                report.refreshed.append(job_pk)
                continue
            try:
                _sync_one(job, found, report, progress)
            except Exception as err:
                _record_error_quietly(job, err)
                report.errors.append((job_pk, _describe(err)))
    if quiet:
        _schedule_polls(quiet, read_at)
    if not dry_run:
        announce_pending(None)


def _schedule_polls(jobs: list[BatchJob], read_at: datetime) -> None:
    """Back off the next poll of jobs whose batches did not change, as ``apply_batch``
    does one at a time, in one statement (per 20,000 jobs): the new interval follows from
    the row's current one, and the jobs of a pass have only a handful of distinct ones
    (the steps from ``POLL_INTERVAL`` to ``POLL_MAX_INTERVAL``), one CASE branch each.

    Rows another process holds are skipped (it is moving that job: a sync pass must not
    queue behind it), and so is a job polled since this pass read it (``read_at``).
    """
    now = timezone.now()
    base = float(app_settings.POLL_INTERVAL)
    factor, cap = float(app_settings.POLL_BACKOFF), float(app_settings.POLL_MAX_INTERVAL)
    steps: dict[float, float] = {}  # the current interval -> the next one
    for job in jobs:
        current = job.poll_interval or 0.0
        steps[current] = min(current * factor, cap) if current else base
        job.poll_interval, job.last_polled_at = steps[current], now
        job.next_poll_at = now + timedelta(seconds=steps[current])
    interval = Case(
        *[When(poll_interval=old, then=Value(new)) for old, new in steps.items()],
        default=F("poll_interval"),
    )
    next_poll = Case(
        *[
            When(poll_interval=old, then=Value(now + timedelta(seconds=new)))
            for old, new in steps.items()
        ],
        default=F("next_poll_at"),
    )
    unpolled = Q(last_polled_at__isnull=True) | Q(last_polled_at__lt=read_at)
    ids = [job.pk for job in jobs]
    for start in range(0, len(ids), _SCHEDULE_CHUNK):
        with transaction.atomic():
            free = (
                BatchJob.objects.filter(
                    unpolled,
                    pk__in=ids[start : start + _SCHEDULE_CHUNK],
                    poll_interval__in=list(steps),
                )
                .select_for_update(skip_locked=True)
                .values("pk")
            )
            BatchJob.objects.filter(pk__in=free).update(
                poll_interval=interval, next_poll_at=next_poll, last_polled_at=now
            )


def _sync_one(
    job: BatchJob,
    batches: list[tuple[ProviderBatch, dict[str, Any]]],
    report: SyncReport,
    progress: Callable[[BatchJob, int, int], None] | None,
) -> None:
    updated = job
    for part, batch in batches:
        applied = apply_batch(job, batch, known=part)
        if applied is not job:  # ``job`` itself comes back for a part with nothing new
            updated = applied
    report.refreshed.append(job.pk)
    if updated.batches.filter(
        state=JobState.SUBMITTED, provider_status__in=TERMINAL_STATUSES
    ).exists():
        callback = (lambda done, total: progress(updated, done, total)) if progress else None
        if (
            ingest(updated, progress=callback)
            or not updated.batches.filter(
                state=JobState.SUBMITTED, provider_status__in=TERMINAL_STATUSES
            ).exists()
        ):
            report.ingested.append(job.pk)


def _describe(err: BaseException) -> str:
    """An error as one line for reports: provider errors speak for themselves."""
    if isinstance(err, ProviderError | ConfigurationError):
        return str(err)
    return f"{type(err).__name__}: {err}"


def _fetch_batches(
    account: str, group: list[ProviderBatch], report: SyncReport
) -> dict[str, dict[str, Any]]:
    client = _base.get_client(account)
    found: dict[str, dict[str, Any]] = {}
    try:
        wanted = {part.provider_batch_id for part in group}
        if len(group) > LIST_REFRESH_THRESHOLD:
            oldest = min((p.provider_created_at or p.created_at) for p in group).timestamp()
            # _pages: a cursor that never advances is an error, not an endless pass.
            for page in _pages(lambda a: client.list_batches(after=a, limit=100), "GET /batches"):
                report.api_calls += 1
                data = page.get("data") or []
                for batch in data:
                    if batch.get("id") in wanted:
                        found[batch["id"]] = batch
                if not wanted - set(found) or (
                    data and (data[-1].get("created_at") or 0) < oldest - 1
                ):
                    break
        for batch_id in sorted(wanted - set(found)):
            try:
                found[batch_id] = client.retrieve_batch(batch_id)
            except NotFoundError:
                continue
            finally:
                report.api_calls += 1
    finally:
        client.close()
    return found


# ``sync(submit=...)`` takes a flag named like the function.
_submit = submit
