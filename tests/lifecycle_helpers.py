"""Helpers shared by the lifecycle tests: build jobs, count signals."""

from __future__ import annotations

from typing import Any

from openai_batches import services
from openai_batches.models import BatchJob


def chat_items(
    n: int, *, prefix: str = "req-", model: str = "gpt-4o-mini", **extra: Any
) -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"{prefix}{i}",
            "body": {
                "model": model,
                "messages": [{"role": "user", "content": f"Summarise item {i}."}],
                **extra,
            },
        }
        for i in range(n)
    ]


def make_job(n: int = 10, **kwargs: Any) -> BatchJob:
    items = kwargs.pop("items", None) or chat_items(n)
    return services.create_job(
        endpoint="/v1/chat/completions", name=kwargs.pop("name", "test job"), items=items, **kwargs
    )


def submitted_job(n: int = 10, **kwargs: Any) -> BatchJob:
    job = make_job(n, **kwargs)
    services.request_submit(job)
    job = services.submit(job)
    assert job.state == "submitted", job.last_error
    return job


def job_with_batch(provider_batch_id: str, **fields: Any) -> BatchJob:
    """A job row the provider knows as ``provider_batch_id`` (its part 1), made directly in
    the database for tests that start from a tracked batch."""
    from openai_batches.models import JobState, ProviderBatch

    fields.setdefault("state", JobState.SUBMITTED)
    job = BatchJob.objects.create(**fields)
    ProviderBatch.objects.create(
        job=job,
        part=1,
        account=job.account,
        state=JobState.SUBMITTED,
        provider_batch_id=provider_batch_id,
    )
    return job
