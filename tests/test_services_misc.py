"""Services that entry points share: deleting jobs, creating from JSONL, refusing NULs."""

from __future__ import annotations

import io

import pytest

from openai_batches import services
from openai_batches.exceptions import InvalidStateError, ValidationError
from openai_batches.models import BatchJob, JobState, RequestItem
from tests.lifecycle_helpers import chat_items, make_job

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("state", "allowed"),
    [
        (JobState.DRAFT, True),
        (JobState.SUBMIT_FAILED, True),
        (JobState.CANCELLED, True),
        (JobState.FINISHED, True),
        (JobState.SUBMIT_REQUESTED, False),
        (JobState.SUBMITTING, False),
        (JobState.SUBMITTED, False),
    ],
)
def test_delete_job_only_when_the_provider_cannot_be_running_it(state: str, allowed: bool) -> None:
    job = make_job(2)
    BatchJob.objects.filter(pk=job.pk).update(state=state)
    if allowed:
        services.delete_job(job.pk)
        assert not BatchJob.objects.filter(pk=job.pk).exists()
        assert not RequestItem.objects.filter(job_id=job.pk).exists()
    else:
        with pytest.raises(InvalidStateError, match="cancel it first"):
            services.delete_job(job.pk)
        assert RequestItem.objects.filter(job_id=job.pk).count() == 2


def test_create_job_from_jsonl_is_all_or_nothing() -> None:
    good = b'{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}\n'
    job = services.create_job(endpoint="/v1/chat/completions", jsonl=io.BytesIO(good * 1))
    assert job.item_count == 1
    bad = good + b"{not json\n"
    with pytest.raises(ValidationError) as info:
        services.create_job(endpoint="/v1/chat/completions", name="bad", jsonl=io.BytesIO(bad))
    assert [p.line for p in info.value.problems] == [2]
    assert not BatchJob.objects.filter(name="bad").exists()


def test_nul_characters_are_problems_not_database_errors() -> None:
    items = chat_items(3)
    items[0]["custom_id"] = "nul\x00id"
    items[1]["body"]["messages"][0]["content"] = "a\x00b"
    items[2]["body"]["messages"][0]["content"] = "a literal \\u0000 is fine"
    job = services.create_job(endpoint="/v1/chat/completions")
    with pytest.raises(ValidationError) as info:
        services.add_items(job, items)
    assert [(p.index, p.field) for p in info.value.problems] == [(0, "custom_id"), (1, "body")]
    with pytest.raises(ValidationError) as meta:
        services.create_job(endpoint="/v1/chat/completions", metadata={"k": "v\x00"})
    assert meta.value.problems[0].field == "metadata.k"
    assert services.add_items(job, items[2:]) == 1
