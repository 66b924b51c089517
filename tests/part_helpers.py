"""Test helper for the surfaces' tests: give a job the provider facts it would have after
running, without running it.

Since a job became one or more provider batches, the provider's facts (batch id, files,
timestamps, errors) live on :class:`~openai_batches.models.ProviderBatch` rows and the job
keeps only its totals. Tests that used to write those fields onto the job write them here:
onto one part, with the totals the job keeps copied onto the job, as the services'
summary would leave them.
"""

from __future__ import annotations

from typing import Any

from openai_batches.models import BatchJob, BatchReason, JobState, ProviderBatch, RequestItem


def _names(model: type[Any]) -> set[str]:
    return {f.name for f in model._meta.concrete_fields} | {
        f.attname for f in model._meta.concrete_fields
    }


def set_part(job: BatchJob, *, part: int = 1, reason: str = "", **fields: Any) -> ProviderBatch:
    """Create (or update) ``job``'s provider batch number ``part`` with ``fields``; the fields
    the job also has (state, provider status, counts, tokens, cost, times) are written on
    the job too. The job's items join part 1 once the job has left the draft state."""
    on_part = {k: v for k, v in fields.items() if k in _names(ProviderBatch) and k != "job"}
    on_job = {k: v for k, v in fields.items() if k in _names(BatchJob)}
    unknown = set(fields) - set(on_part) - set(on_job)
    assert not unknown, f"neither a job nor a batch field: {sorted(unknown)}"
    defaults = {
        "account": job.account,
        "item_count": job.item_count,
        "reason": reason or (BatchReason.FIRST if part == 1 else BatchReason.SPLIT),
        **on_part,
    }
    batch, _ = ProviderBatch.objects.update_or_create(job=job, part=part, defaults=defaults)
    if on_job:
        BatchJob.objects.filter(pk=job.pk).update(**on_job)
    if part == 1 and fields.get("state", JobState.DRAFT) != JobState.DRAFT:
        RequestItem.objects.filter(job=job, batch__isnull=True).update(batch=batch)
    job.refresh_from_db()
    return batch
