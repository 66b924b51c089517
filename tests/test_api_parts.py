"""The API's view of one job carried by several provider batches: the job's ``batches``,
each item's ``attempts``, the retry action, and pages that cost the same number of queries
however many jobs, parts and items they show.

The runs go through the real services against the emulator over HTTP.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.test import APIClient

from openai_batches import services
from openai_batches.models import BatchJob, BatchStatus, ItemState, JobState
from openai_batches.testing import openai_emulator  # noqa: F401

from .lifecycle_helpers import chat_items
from .part_helpers import set_part

pytestmark = pytest.mark.django_db

NS = "openai_batches_api"


def url(name: str, **kwargs: Any) -> str:
    return reverse(f"{NS}:{name}", kwargs=kwargs)


def job_url(job: BatchJob, name: str = "job-detail") -> str:
    return url(name, uuid=str(job.uuid))


def item_url(job: BatchJob, custom_id: str) -> str:
    return url("job-item-detail", job_uuid=str(job.uuid), custom_id=custom_id)


@pytest.fixture
def alice(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("alice", password="pw-alice")


@pytest.fixture
def api(alice: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(alice)
    return client


def make_job(owner: Any, n: int, name: str = "job") -> BatchJob:
    return services.create_job(
        endpoint="/v1/chat/completions", name=name, owner=owner, items=chat_items(n)
    )


def test_a_split_job_shows_every_part_and_a_retried_item_its_attempts(
    api: APIClient,
    alice: Any,
    openai_emulator: Any,  # noqa: F811
    settings: Any,  # after the emulator: its teardown runs first, restoring what it changed
) -> None:
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "MAX_REQUESTS_PER_BATCH": 2}
    openai_emulator.fail_request("req-1", 500, "server_error", "boom", times=1)
    job = make_job(alice, 3)
    services.request_submit(job)
    services.submit(job)
    services.refresh(job)  # parts 1 and 2 end; the 500 goes in part 3
    services.submit(job)
    job = services.refresh(job)
    assert job.state == JobState.FINISHED

    body = api.get(job_url(job)).json()
    batches = body["batches"]
    parts = list(job.batches.order_by("part"))
    assert [(b["part"], b["reason"], b["state"], b["provider_status"]) for b in batches] == [
        (1, "first", "finished", "completed"),
        (2, "split", "finished", "completed"),
        (3, "retry", "finished", "completed"),
    ]
    assert [b["provider_batch_id"] for b in batches] == [p.provider_batch_id for p in parts]
    assert [b["counts"]["items"] for b in batches] == [2, 1, 1]
    assert all(b["output_file_id"] and b["input_file_id"] for b in batches)
    assert all(b["submitted_at"] and b["ingested_at"] for b in batches)
    # The job's own fields sum its parts; the compatibility ids are the latest part's.
    assert body["usage"]["input_tokens"] == sum(b["usage"]["input_tokens"] for b in batches)
    assert body["provider_batch_id"] == batches[-1]["provider_batch_id"]
    assert body["counts"]["provider_total"] == 4  # req-1 was sent twice, and billed twice
    assert body["actions"]["retry_failed"] == {
        "allowed": False,
        "reason": "it has no failed request sent fewer than 3 time(s)",
    }

    item = api.get(item_url(job, "req-1")).json()
    assert item["state"] == "succeeded" and item["attempt_count"] == 2
    first, second = item["attempts"]
    assert (first["number"], first["part"], first["state"], first["status_code"]) == (
        1,
        1,
        "failed",
        500,
    )
    assert first["provider_batch_id"] == parts[0].provider_batch_id
    assert first["error"]["error"]["message"] == "boom" and first["retried"] is True
    assert (second["number"], second["part"], second["state"], second["retried"]) == (
        2,
        3,
        "succeeded",
        False,
    )
    assert second["error"] is None and second["input_tokens"] > 0
    listed = api.get(url("job-item-list", job_uuid=str(job.uuid))).json()["results"]
    assert {i["custom_id"]: i["attempt_count"] for i in listed} == {
        "req-0": 1,
        "req-1": 2,
        "req-2": 1,
    }
    assert "attempts" not in listed[0]  # the list stays lean; the item has them


def test_retry_sends_failed_requests_again_and_refusals_are_409s(
    api: APIClient,
    alice: Any,
    openai_emulator: Any,  # noqa: F811
    django_capture_on_commit_callbacks: Any,
) -> None:
    openai_emulator.fail_request("req-0", 400, "invalid_prompt", "flagged", times=1)
    job = make_job(alice, 2)
    early = api.post(job_url(job, "job-retry"), {"which": "failed"}, format="json")
    assert early.status_code == 409
    error = early.json()["error"]
    assert error["type"] == "invalid_state" and error["state"] == "draft"
    assert error["message"] == (
        f"Job {job.uuid} cannot be retried (failed): it is draft; only a finished job is retried."
    )
    services.request_submit(job)
    services.submit(job)
    job = services.refresh(job)
    detail = api.get(job_url(job)).json()
    assert detail["actions"]["retry_failed"] == {"allowed": True, "reason": ""}
    assert detail["actions"]["retry_expired"]["allowed"] is False

    for bad in ({}, {"which": "everything"}, {"which": None}):
        response = api.post(job_url(job, "job-retry"), bad, format="json")
        assert response.status_code == 400, bad
        assert response.json()["error"]["problems"][0]["field"] == "which"
    nothing = api.post(job_url(job, "job-retry"), {"which": "expired"}, format="json")
    assert nothing.status_code == 409
    assert "it has no expired request" in nothing.json()["error"]["message"]
    assert job.batches.count() == 1

    response = api.post(job_url(job, "job-retry"), {"which": "failed"}, format="json")
    assert response.status_code == 202
    body = response.json()
    assert body["state"] == "submit_requested"
    assert [(b["part"], b["reason"], b["counts"]["items"]) for b in body["batches"]] == [
        (1, "first", 2),
        (2, "retry", 1),
    ]
    services.submit(job)
    job = services.refresh(job)
    assert job.items.get(custom_id="req-0").state == ItemState.SUCCEEDED


def queries(api: APIClient, path: str) -> int:
    # Once first: the forced user keeps its permission cache between requests, so only the
    # first request of a test reads the permissions.
    api.get(path)
    with CaptureQueriesContext(connection) as ctx:
        response = api.get(path)
    assert response.status_code == 200, response.content
    return len(ctx.captured_queries)


def test_the_job_list_costs_the_same_queries_for_1_or_12_jobs_of_several_parts(
    api: APIClient, alice: Any
) -> None:
    def job_of_two_parts(i: int) -> None:
        job = make_job(alice, 2, name=f"j{i}")
        set_part(job, state=JobState.FINISHED, provider_batch_id=f"batch_{i}a")
        set_part(
            job,
            part=2,
            state=JobState.FINISHED,
            provider_status=BatchStatus.COMPLETED,
            provider_batch_id=f"batch_{i}b",
        )

    job_of_two_parts(0)
    one = queries(api, url("job-list"))
    for i in range(1, 12):
        job_of_two_parts(i)
    assert queries(api, url("job-list")) == one
    listed = api.get(url("job-list")).json()["results"]
    assert len(listed) == 12
    # Each job names its latest part's batch, read from the one prefetch.
    assert {j["name"]: j["provider_batch_id"] for j in listed}["j3"] == "batch_3b"


def test_an_item_page_and_the_item_list_cost_constant_queries(
    api: APIClient,
    alice: Any,
    openai_emulator: Any,  # noqa: F811
    settings: Any,  # after the emulator: its teardown runs first, restoring what it changed
) -> None:
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "RETRY": {"DEADLINE": 0}}
    for cid in ("req-0", "req-1"):
        openai_emulator.fail_request(cid, 500, "server_error", times=1)
    small, big = make_job(alice, 1, name="small"), make_job(alice, 10, name="big")
    for job in (small, big):
        services.request_submit(job)
        services.submit(job)
        services.refresh(job)
    assert queries(api, url("job-item-list", job_uuid=str(small.uuid))) == queries(
        api, url("job-item-list", job_uuid=str(big.uuid))
    )
    for job in (small, big):
        services.retry(job, "failed")
        services.submit(job)
        services.refresh(job)
    one = queries(api, item_url(small, "req-0"))
    assert api.get(item_url(big, "req-1")).json()["attempt_count"] == 2
    assert queries(api, item_url(big, "req-1")) == one  # two attempts or one: same queries
    assert len(api.get(item_url(big, "req-1")).json()["attempts"]) == 2


def test_refresh_queues_the_ingest_of_a_part_that_ended_while_another_runs(
    api: APIClient,
    alice: Any,
    openai_emulator: Any,  # noqa: F811
    settings: Any,  # after the emulator: its teardown runs first, restoring what it changed
    django_capture_on_commit_callbacks: Any,
) -> None:
    from openai_batches import jobs

    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "MAX_REQUESTS_PER_BATCH": 2}
    openai_emulator.stall_request("req-2")  # part 2 keeps running
    job = make_job(alice, 3)
    services.request_submit(job)
    services.submit(job)
    queue = jobs.get_queue()
    queue.empty()
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(job_url(job, "job-refresh"))
    assert response.status_code == 200, response.json()
    body = response.json()
    # The job's status is its least advanced part's; part 1 has ended all the same.
    assert body["provider_status"] == "in_progress"
    assert [b["provider_status"] for b in body["batches"]] == ["completed", "in_progress"]
    assert [(j.func_name, j.args) for j in queue.jobs] == [
        ("openai_batches.jobs.poll_job", (job.pk,))
    ]
