"""The REST API: every endpoint, every error class, and the lifecycle against the emulator.

Provider calls go to the bundled emulator (``openai_emulator``), never to mocks, so submit /
refresh / cancel / results exercise the same services the admin and the worker use.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, cast

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.http import StreamingHttpResponse
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from openai_batches import jobs, services
from openai_batches.models import BatchJob, BatchStatus, ItemState, JobState, RequestItem
from openai_batches.testing import openai_emulator  # noqa: F401

from .lifecycle_helpers import chat_items
from .part_helpers import set_part

pytestmark = pytest.mark.django_db

NS = "openai_batches_api"


# -- helpers ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _fresh_throttles() -> None:
    """Throttle counts live in Django's cache, which outlives a test's transaction."""
    from django.core.cache import cache

    cache.clear()


def url(name: str, **kwargs: Any) -> str:
    return reverse(f"{NS}:{name}", kwargs=kwargs)


def job_url(job: BatchJob, name: str = "job-detail") -> str:
    return url(name, uuid=str(job.uuid))


def items_url(job: BatchJob) -> str:
    return url("job-item-list", job_uuid=str(job.uuid))


def jsonl(lines: list[Any]) -> bytes:
    return b"".join(
        (line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines
    )


def error_of(response: Any) -> dict[str, Any]:
    """The error body, checked for the one shape every error has."""
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert {"type", "message", "problems"} <= set(error), error
    assert isinstance(error["message"], str) and error["message"]
    for problem in error["problems"]:
        assert set(problem) == {"index", "line", "field", "message"}, problem
    return error


@pytest.fixture
def alice(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("alice", password="pw-alice")


@pytest.fixture
def api(alice: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(alice)
    return client


def make_job(owner: Any, n: int = 3, **kwargs: Any) -> BatchJob:
    return services.create_job(
        endpoint=kwargs.pop("endpoint", "/v1/chat/completions"),
        name=kwargs.pop("name", "job"),
        owner=owner,
        items=kwargs.pop("items", None) or (chat_items(n) if n else None),
        **kwargs,
    )


def streamed(response: Any) -> bytes:
    assert isinstance(response, StreamingHttpResponse)
    return b"".join(cast(Iterator[bytes], response.streaming_content))


# -- create ----------------------------------------------------------------------------------


def test_create_with_inline_items(api: APIClient, alice: Any) -> None:
    response = api.post(
        url("job-list"),
        {"name": "summaries", "metadata": {"project": "demo"}, "items": chat_items(2)},
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    job = BatchJob.objects.get(uuid=body["uuid"])
    assert job.owner == alice and job.state == JobState.DRAFT
    assert body["name"] == "summaries" and body["metadata"] == {"project": "demo"}
    assert body["counts"]["items"] == 2 and body["model"] == "gpt-4o-mini"
    assert body["item_states"]["pending"] == 2
    assert body["actions"]["submit"] == {"allowed": True, "reason": ""}
    assert response["Location"].endswith(job_url(job))
    assert body["links"]["results"].endswith(job_url(job, "job-results"))
    assert list(job.items.values_list("custom_id", flat=True)) == ["req-0", "req-1"]


def test_create_without_items_makes_an_empty_draft(api: APIClient) -> None:
    response = api.post(url("job-list"), {"endpoint": "/v1/embeddings"}, format="json")
    assert response.status_code == 201
    assert response.json()["endpoint"] == "/v1/embeddings"
    assert response.json()["actions"]["submit"]["allowed"] is False


def test_create_lists_every_item_problem_and_saves_nothing(api: APIClient) -> None:
    items: list[Any] = [
        {"body": {"model": "gpt-4o-mini"}},  # no custom_id
        {"custom_id": "a", "body": {"model": "gpt-4o-mini"}},
        {"custom_id": "a", "body": {"model": "gpt-4o-mini"}},  # duplicate
        {"custom_id": "b", "body": "not an object"},
        {"custom_id": "c", "method": "GET", "body": {"model": "gpt-4o"}},  # method + model
        42,
    ]
    response = api.post(url("job-list"), {"items": items}, format="json")
    assert response.status_code == 400
    error = error_of(response)
    assert error["type"] == "invalid_request"
    where = {(p["index"], p["field"]) for p in error["problems"]}
    assert {
        (0, "custom_id"),
        (2, "custom_id"),
        (3, "body"),
        (4, "method"),
        (4, "body.model"),
        (5, None),
    } <= where
    assert all(p["line"] == p["index"] + 1 for p in error["problems"])
    assert not BatchJob.objects.exists() and not RequestItem.objects.exists()


def test_create_reports_job_field_problems(api: APIClient) -> None:
    response = api.post(
        url("job-list"),
        {"endpoint": "/v1/nope", "name": "x" * 201, "metadata": ["not", "an", "object"]},
        format="json",
    )
    assert response.status_code == 400
    fields = {p["field"] for p in error_of(response)["problems"]}
    assert {"endpoint", "name", "metadata"} <= fields
    # Rules only the services know (metadata content, accounts) are reported too.
    response = api.post(
        url("job-list"),
        {"account": "nobody", "metadata": {"k": "v" * 600}, "items": chat_items(1)},
        format="json",
    )
    assert response.status_code == 400
    fields = {p["field"] for p in error_of(response)["problems"]}
    assert {"account", "metadata.k"} <= fields
    assert not BatchJob.objects.exists()


def test_an_unknown_account_is_named_without_listing_the_configured_ones(
    api: APIClient, settings: Any
) -> None:
    settings.OPENAI_BATCHES = {
        **settings.OPENAI_BATCHES,
        "ACCOUNTS": {"team-secret-name": {"API_KEY": "sk-x", "BASE_URL": "http://localhost/v1"}},
    }
    response = api.post(url("job-list"), {"account": "nobody"}, format="json")
    assert response.status_code == 400
    [problem] = error_of(response)["problems"]
    assert problem["field"] == "account"
    assert problem["message"] == "'nobody' is not a configured account you may use."
    assert "team-secret-name" not in response.content.decode()
    assert "default" not in response.content.decode()
    assert not BatchJob.objects.exists()


def test_malformed_json_is_a_400_in_the_error_shape(api: APIClient) -> None:
    response = api.generic("POST", url("job-list"), "{not json", content_type="application/json")
    assert response.status_code == 400
    assert error_of(response)["type"] == "parse_error"


def test_create_from_a_jsonl_upload(api: APIClient) -> None:
    lines = [
        {"custom_id": f"u-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}
        for i, body in enumerate(item["body"] for item in chat_items(3))
    ]
    upload = SimpleUploadedFile("in.jsonl", jsonl(lines), content_type="application/jsonl")
    response = api.post(
        url("job-list"),
        {"name": "from file", "metadata": json.dumps({"source": "upload"}), "file": upload},
        format="multipart",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["counts"]["items"] == 3 and body["metadata"] == {"source": "upload"}
    assert BatchJob.objects.get(uuid=body["uuid"]).items.count() == 3


def test_an_empty_form_field_is_an_error_not_a_default(api: APIClient) -> None:
    response = api.post(url("job-list"), {"endpoint": "", "name": ""}, format="multipart")
    assert response.status_code == 400
    problems = error_of(response)["problems"]
    assert [(p["field"], p["message"]) for p in problems] == [("endpoint", "May not be empty.")]
    response = api.get(url("job-list"), {"ordering": "", "owner": ""})
    assert {p["field"] for p in error_of(response)["problems"]} == {"ordering", "owner"}


def test_a_bad_upload_names_its_lines_and_leaves_no_job(api: APIClient) -> None:
    good = {"custom_id": "ok", "body": {"model": "gpt-4o-mini"}}
    content = jsonl([good, b"{broken", b"", {"custom_id": "ok", "body": {"model": "gpt-4o-mini"}}])
    upload = SimpleUploadedFile("in.jsonl", content)
    response = api.post(url("job-list"), {"file": upload}, format="multipart")
    assert response.status_code == 400
    problems = error_of(response)["problems"]
    assert {(p["line"], p["field"]) for p in problems} == {(2, None), (4, "custom_id")}
    assert not BatchJob.objects.exists()


def raw_json(api: APIClient, path: str, text: str) -> Any:
    """POST ``text`` as the JSON body exactly (json.dumps would escape it for us)."""
    return api.generic("POST", path, text.encode("utf-8"), content_type="application/json")


@pytest.mark.parametrize(
    ("body", "index", "field"),
    [
        ('{"items": [{"custom_id": "a\\ud800", "body": {"model": "m"}}]}', 0, "custom_id"),
        (
            '{"items": [{"custom_id": "a", "body": {"model": "m"}},'
            ' {"custom_id": "b", "body": {"model": "m", "input": ["x", "\\udfff"]}}]}',
            1,
            "body.input.1",
        ),
        ('{"name": "n\\ud800", "items": []}', None, "name"),
        ('{"metadata": {"k": "\\ud800"}}', None, "metadata.k"),
    ],
    ids=["custom_id", "body", "name", "metadata"],
)
def test_a_lone_surrogate_is_a_400_naming_the_field_not_a_500(
    api: APIClient, body: str, index: int | None, field: str
) -> None:
    response = raw_json(api, url("job-list"), body)
    assert response.status_code == 400, response.content
    problems = error_of(response)["problems"]
    assert [(p["index"], p["field"]) for p in problems] == [(index, field)]
    assert not BatchJob.objects.exists() and not RequestItem.objects.exists()


def test_a_lone_surrogate_in_an_upload_or_added_items_is_a_400(api: APIClient, alice: Any) -> None:
    upload = SimpleUploadedFile(
        "in.jsonl", b'{"custom_id": "ok", "body": {"model": "m"}}\n{"custom_id": "\\ud800"}\n'
    )
    response = api.post(url("job-list"), {"file": upload}, format="multipart")
    assert response.status_code == 400
    assert [(p["line"], p["field"]) for p in error_of(response)["problems"]][:1] == [
        (2, "custom_id")
    ]
    job = make_job(alice, 1)
    response = raw_json(
        api,
        items_url(job),
        '{"items": [{"custom_id": "z", "body": {"model": "gpt-4o-mini", "\\ud800": 1}}]}',
    )
    assert response.status_code == 400
    assert [(p["index"], p["field"]) for p in error_of(response)["problems"]] == [
        (0, "body.\\ud800")
    ]
    assert job.items.count() == 1 and BatchJob.objects.count() == 1


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=2_000)
def test_a_json_body_over_the_memory_limit_is_413(api: APIClient) -> None:
    response = api.post(url("job-list"), {"items": chat_items(50)}, format="json")
    assert response.status_code == 413
    error = error_of(response)
    assert error["type"] == "payload_too_large" and "JSONL" in error["message"]
    assert not BatchJob.objects.exists()


def test_an_upload_over_the_byte_limit_is_413(api: APIClient, settings: Any) -> None:
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "MAX_FILE_BYTES": 300}
    content = jsonl([{"custom_id": f"c{i}", "body": {"model": "m"}} for i in range(20)])
    assert len(content) > 300
    response = api.post(
        url("job-list"), {"file": SimpleUploadedFile("in.jsonl", content)}, format="multipart"
    )
    assert response.status_code == 413
    error = error_of(response)
    assert error["problems"][0]["field"] == "file"
    assert "add more items to the draft in further uploads" in error["problems"][0]["message"]
    assert not BatchJob.objects.exists()


def test_uploads_fill_a_job_larger_than_one_batch_which_submit_splits(
    api: APIClient, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    lines = [{"custom_id": f"c{i}", "body": {"model": "m"}} for i in range(6)]
    first = SimpleUploadedFile("a.jsonl", jsonl(lines[:3]))
    created = api.post(url("job-list"), {"file": first}, format="multipart")
    assert created.status_code == 201, created.json()
    job = BatchJob.objects.get()
    more = SimpleUploadedFile("b.jsonl", jsonl(lines[3:]))
    added = api.post(items_url(job), {"file": more}, format="multipart")
    assert added.status_code == 201 and added.json()["item_count"] == 6
    # One batch now takes three of these requests: the job holds twice that.
    line_bytes = job.items.values_list("nbytes", flat=True).first()
    assert line_bytes
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "MAX_FILE_BYTES": line_bytes * 3}
    submitted = api.post(job_url(job, "job-submit"))
    assert submitted.status_code == 202
    assert [b["counts"]["items"] for b in submitted.json()["batches"]] == [3, 3]


def test_a_multipart_body_far_over_the_limit_is_refused_unread(
    api: APIClient, settings: Any
) -> None:
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "MAX_FILE_BYTES": 10}
    big = b"x" * (1024 * 1024 + 100)
    response = api.post(
        url("job-list"), {"file": SimpleUploadedFile("in.jsonl", big)}, format="multipart"
    )
    assert response.status_code == 413
    assert "one upload takes at most 10 bytes" in error_of(response)["message"]


def test_more_items_than_one_job_takes_is_413(api: APIClient, settings: Any) -> None:
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "MAX_REQUESTS_PER_JOB": 3}
    response = api.post(url("job-list"), {"items": chat_items(4)}, format="json")
    assert response.status_code == 413
    error = error_of(response)
    assert error["type"] == "payload_too_large"
    assert "3 requests, the most one job takes" in error["problems"][0]["message"]
    assert not BatchJob.objects.exists()


def test_more_items_than_one_batch_takes_are_split_into_parts(
    api: APIClient, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "MAX_REQUESTS_PER_BATCH": 3}
    response = api.post(url("job-list"), {"items": chat_items(7)}, format="json")
    assert response.status_code == 201
    assert response.json()["batches"] == []  # nothing planned before submit
    job = BatchJob.objects.get()
    submitted = api.post(job_url(job, "job-submit"))
    assert submitted.status_code == 202
    batches = submitted.json()["batches"]
    assert [(b["part"], b["reason"], b["counts"]["items"]) for b in batches] == [
        (1, "first", 3),
        (2, "split", 3),
        (3, "split", 1),
    ]
    assert {b["state"] for b in batches} == {"submit_requested"}


# -- list, retrieve, delete ------------------------------------------------------------------


def test_list_is_paginated_and_ordered(api: APIClient, alice: Any) -> None:
    jobs = [make_job(alice, 1, name=f"job-{i}") for i in range(5)]
    response = api.get(url("job-list"), {"page_size": 2})
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 5 and body["next"] and body["previous"] is None
    assert [j["name"] for j in body["results"]] == ["job-4", "job-3"]  # newest first
    response = api.get(url("job-list"), {"ordering": "name", "page_size": "10"})
    assert [j["name"] for j in response.json()["results"]] == [j.name for j in jobs]
    assert api.get(url("job-list"), {"page": 99}).status_code == 404


def test_list_filters(api: APIClient, alice: Any, django_user_model: Any) -> None:
    old = make_job(alice, 1, name="old")
    BatchJob.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=10))
    make_job(
        alice,
        0,
        name="embed",
        endpoint="/v1/embeddings",
        items=[{"custom_id": "e", "body": {"model": "text-embedding-3-small", "input": "x"}}],
    )
    submitted = make_job(alice, 1, name="submitted")
    BatchJob.objects.filter(pk=submitted.pk).update(
        state=JobState.SUBMITTED,
        provider_status=BatchStatus.IN_PROGRESS,
        submitted_at=timezone.now(),
    )

    def names(**params: Any) -> set[str]:
        response = api.get(url("job-list"), params)
        assert response.status_code == 200, response.json()
        return {j["name"] for j in response.json()["results"]}

    assert names(state="submitted") == {"submitted"}
    assert names(state=["draft", "submitted"]) == {"old", "embed", "submitted"}
    assert names(provider_status="in_progress") == {"submitted"}
    assert names(endpoint="/v1/embeddings") == {"embed"}
    assert names(owner=alice.pk) == {"old", "embed", "submitted"}
    cutoff = (timezone.now() - timedelta(days=1)).isoformat()
    assert names(created_before=cutoff) == {"old"}
    assert names(created_after=cutoff) == {"embed", "submitted"}
    assert names(submitted_after=cutoff) == {"submitted"}
    assert names(submitted_before=cutoff) == set()


def test_bad_filters_are_400_with_every_problem(api: APIClient) -> None:
    response = api.get(
        url("job-list"), {"state": "nope", "created_after": "yesterday", "ordering": "pk"}
    )
    assert response.status_code == 400
    fields = {p["field"] for p in error_of(response)["problems"]}
    assert fields == {"state", "created_after", "ordering"}


def test_retrieve_shows_counts_usage_cost_errors_and_timestamps(
    api: APIClient, alice: Any, settings: Any
) -> None:
    settings.OPENAI_BATCHES = {
        **settings.OPENAI_BATCHES,
        "PRICES": {"gpt-4o-mini": {"input": 0.075, "cached_input": 0.0375, "output": 0.3}},
    }
    job = make_job(alice, 2)
    now = timezone.now()
    set_part(
        job,
        provider_batch_id="batch_one",
        input_tokens=1_000_000,
        cached_tokens=0,
        output_tokens=1_000_000,
        reasoning_tokens=5,
        provider_errors=[{"code": "invalid", "message": "bad line", "param": None, "line": 2}],
        request_count_total=2,
        request_count_completed=1,
        request_count_failed=1,
        completed_at=now,
    )
    job.items.filter(custom_id="req-0").update(state=ItemState.SUCCEEDED)
    body = api.get(job_url(job)).json()
    assert body["uuid"] == str(job.uuid)
    assert body["usage"] == {
        "input_tokens": 1_000_000,
        "cached_tokens": 0,
        "output_tokens": 1_000_000,
        "reasoning_tokens": 5,
        "total_tokens": 2_000_000,
    }
    assert body["cost"] == "0.375000"
    assert body["counts"] == {
        "items": 2,
        "input_bytes": job.input_bytes,
        "provider_total": 2,
        "provider_completed": 1,
        "provider_failed": 1,
    }
    assert body["provider_errors"] == [
        {"code": "invalid", "message": "bad line", "param": None, "line": 2}
    ]
    assert body["item_states"]["succeeded"] == 1 and body["item_states"]["pending"] == 1
    assert body["completed_at"] and body["created_at"] and body["submitted_at"] is None
    [batch] = body["batches"]
    assert batch["part"] == 1 and batch["provider_batch_id"] == body["provider_batch_id"]
    assert batch["provider_errors"] == body["provider_errors"]
    assert batch["usage"] == body["usage"] and batch["completed_at"] == body["completed_at"]


def test_cost_is_null_without_a_price(api: APIClient, alice: Any) -> None:
    assert api.get(job_url(make_job(alice, 1))).json()["cost"] is None


def test_unknown_or_malformed_uuid_is_404_in_the_error_shape(api: APIClient) -> None:
    for value in (str(uuid.uuid4()), "not-a-uuid", "42"):
        response = api.get(url("job-detail", uuid=value))
        assert response.status_code == 404
        assert error_of(response) == {"type": "not_found", "message": "Not found.", "problems": []}


def test_wrong_method_is_405_in_the_error_shape(api: APIClient, alice: Any) -> None:
    response = api.put(job_url(make_job(alice, 1)), {}, format="json")
    assert response.status_code == 405
    assert error_of(response)["type"] == "method_not_allowed"


def test_delete_a_draft(api: APIClient, alice: Any) -> None:
    job = make_job(alice, 2)
    response = api.delete(job_url(job))
    assert response.status_code == 204
    assert not BatchJob.objects.exists() and not RequestItem.objects.exists()


def test_delete_after_submission_is_409(api: APIClient, alice: Any) -> None:
    job = make_job(alice, 1)
    services.request_submit(job)
    response = api.delete(job_url(job))
    assert response.status_code == 409
    error = error_of(response)
    assert error["type"] == "invalid_state" and error["state"] == "submit_requested"
    # The API addresses jobs by UUID, so its messages name them so (never by database pk).
    assert error["message"] == (
        f"Job {job.uuid} cannot be deleted: it is submission requested; cancel it first."
    )
    assert BatchJob.objects.filter(pk=job.pk).exists()


# -- actions ---------------------------------------------------------------------------------


def test_submit_requests_submission(
    api: APIClient, alice: Any, django_capture_on_commit_callbacks: Any
) -> None:
    job = make_job(alice, 2)
    with django_capture_on_commit_callbacks() as callbacks:
        response = api.post(job_url(job, "job-submit"))
    assert response.status_code == 202, response.json()
    assert response.json()["state"] == "submit_requested"
    assert callbacks, "the submit job is enqueued on commit"
    response = api.post(job_url(job, "job-submit"))
    assert response.status_code == 409
    error = error_of(response)
    assert error["state"] == "submit_requested" and "cannot be submitted" in error["message"]


def test_submit_an_empty_draft_is_409(api: APIClient, alice: Any) -> None:
    job = make_job(alice, 0)
    response = api.post(job_url(job, "job-submit"))
    assert response.status_code == 409
    assert error_of(response)["message"] == f"Job {job.uuid} cannot be submitted: it has no items."


def test_cancel_a_draft_then_again(api: APIClient, alice: Any) -> None:
    job = make_job(alice, 1)
    response = api.post(job_url(job, "job-cancel"))
    assert response.status_code == 200
    assert response.json()["state"] == "cancelled"
    response = api.post(job_url(job, "job-cancel"))
    assert response.status_code == 409
    assert error_of(response)["state"] == "cancelled"


def test_refresh_before_the_provider_knows_the_job_is_409(api: APIClient, alice: Any) -> None:
    response = api.post(job_url(make_job(alice, 1), "job-refresh"))
    assert response.status_code == 409
    assert "does not know it yet" in error_of(response)["message"]


def test_a_provider_failure_is_502_and_keeps_the_job(
    api: APIClient,
    alice: Any,
    openai_emulator: Any,  # noqa: F811
    settings: Any,
) -> None:
    job = make_job(alice, 1)
    services.request_submit(job)
    services.submit(job)
    openai_emulator.inject_fault("GET", "/v1/batches/*", "status", status=500, count=50)
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "MAX_RETRIES": 0}
    response = api.post(job_url(job, "job-refresh"))
    assert response.status_code == 502
    error = error_of(response)
    assert error["type"] == "provider_error"
    assert openai_emulator.api_key not in json.dumps(response.json())
    job.refresh_from_db()
    assert job.state == JobState.SUBMITTED and job.last_error


def test_refresh_is_throttled_per_user_with_a_configurable_rate(
    api: APIClient, alice: Any, django_user_model: Any, settings: Any
) -> None:
    from django.core.cache import cache

    cache.clear()
    settings.REST_FRAMEWORK = {"DEFAULT_THROTTLE_RATES": {"openai_batches_refresh": "2/minute"}}
    job = make_job(alice, 1)  # a draft: 409, but each try still costs a request
    assert api.post(job_url(job, "job-refresh")).status_code == 409
    assert api.post(job_url(job, "job-refresh")).status_code == 409
    response = api.post(job_url(job, "job-refresh"))
    assert response.status_code == 429
    assert error_of(response)["type"] == "throttled"
    assert 0 < int(response["Retry-After"]) <= 60
    # Reading is not throttled, and the budget is per user.
    assert api.get(job_url(job)).status_code == 200
    bob = django_user_model.objects.create_user("bob")
    other = APIClient()
    other.force_authenticate(bob)
    theirs = make_job(bob, 1)
    assert other.post(job_url(theirs, "job-refresh")).status_code == 409


def test_refresh_has_a_default_throttle_rate(api: APIClient, alice: Any) -> None:
    from django.core.cache import cache

    from openai_batches.api.throttling import DEFAULT_REFRESH_RATE

    cache.clear()
    allowed = int(DEFAULT_REFRESH_RATE.split("/")[0])
    job = make_job(alice, 1)
    codes = [api.post(job_url(job, "job-refresh")).status_code for _ in range(allowed + 1)]
    assert codes == [409] * allowed + [429]


def test_a_job_whose_account_was_removed_is_a_503_not_a_500(
    api: APIClient, alice: Any, settings: Any
) -> None:
    settings.OPENAI_BATCHES = {
        **settings.OPENAI_BATCHES,
        "ACCOUNTS": {"gone": {"API_KEY": "sk-gone-key", "BASE_URL": "http://127.0.0.1:9/v1"}},
        "ACCOUNT_ACCESS": {"gone": {"EVERYONE": True}},
    }
    job = make_job(alice, 1, account="gone")
    set_part(
        job, state=JobState.SUBMITTED, provider_batch_id="batch_x", provider_status="in_progress"
    )
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "ACCOUNTS": {"kept-acct": {}}}
    before = BatchJob.objects.filter(pk=job.pk).values().get()
    for action in ("job-refresh", "job-cancel"):
        response = api.post(job_url(job, action))
        assert response.status_code == 503, (action, response.content)
        error = error_of(response)
        assert error["type"] == "configuration_error"
        assert str(job.uuid) in error["message"] and "'gone'" in error["message"]
        text = response.content.decode()
        assert "kept-acct" not in text and "sk-" not in text and "OPENAI_BATCHES[" not in text
    assert api.get(job_url(job)).status_code == 200
    after = BatchJob.objects.filter(pk=job.pk).values().get()
    # The failure is recorded on the job (and a failed poll backs off); nothing else moves.
    recorded = ("last_error", "last_error_at", "last_polled_at", "next_poll_at", "poll_interval")
    assert {k: v for k, v in after.items() if k not in recorded} == {
        k: v for k, v in before.items() if k not in recorded
    }
    assert "Unknown account 'gone'" in after["last_error"]


def test_whole_lifecycle_over_the_api(
    api: APIClient,
    openai_emulator: Any,  # noqa: F811
    django_capture_on_commit_callbacks: Any,
) -> None:
    openai_emulator.fail_request("req-2", status_code=400)
    created = api.post(url("job-list"), {"items": chat_items(3)}, format="json").json()
    job = BatchJob.objects.get(uuid=created["uuid"])
    assert api.post(job_url(job, "job-submit")).status_code == 202
    services.submit(job)  # what the queued RQ job runs
    queue = jobs.get_queue()
    queue.empty()
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(job_url(job, "job-refresh"))
    assert response.status_code == 200, response.json()
    body = response.json()
    # The status is the provider's, now; the results are not stored inside the request.
    assert body["provider_status"] == "completed" and body["state"] == "submitted"
    assert body["ingested_at"] is None and body["item_states"]["succeeded"] == 0
    # Storing them is queued for a worker (or the next sync_batches).
    assert [(j.func_name, j.args, j.kwargs) for j in queue.jobs] == [
        ("openai_batches.jobs.poll_job", (job.pk,), {"force": True})
    ]
    assert jobs.poll_job(job.pk, force=True) == "finished"  # what the worker runs
    body = api.get(job_url(job)).json()
    assert body["state"] == "finished" and body["provider_status"] == "completed"
    assert body["item_states"]["succeeded"] == 2 and body["item_states"]["failed"] == 1
    assert body["usage"]["input_tokens"] > 0
    assert body["actions"]["refresh"]["allowed"] is False

    response = api.get(job_url(job, "job-results"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/jsonl")
    assert f"batch-{job.uuid}-results.jsonl" in response["Content-Disposition"]
    lines = [json.loads(line) for line in streamed(response).splitlines()]
    assert [line["custom_id"] for line in lines] == ["req-0", "req-1", "req-2"]
    assert [line["state"] for line in lines] == ["succeeded", "succeeded", "failed"]
    assert lines[0]["response"]["choices"] and lines[2]["status_code"] == 400
    assert set(lines[0]) == {"custom_id", "state", "status_code", "response", "error"}

    item = api.get(url("job-item-detail", job_uuid=str(job.uuid), custom_id="req-0")).json()
    assert item["state"] == "succeeded" and item["status_code"] == 200
    assert item["input_tokens"] > 0 and item["completed_at"]


def test_cancel_a_running_job_at_the_provider(
    api: APIClient,
    alice: Any,
    openai_emulator: Any,  # noqa: F811
) -> None:
    openai_emulator.stall_request("req-0")  # keeps the batch in progress
    job = make_job(alice, 2)
    services.request_submit(job)
    services.submit(job)
    services.refresh(job)
    response = api.post(job_url(job, "job-cancel"))
    assert response.status_code == 200, response.json()
    assert response.json()["provider_status"] in ("cancelling", "cancelled")
    response = api.post(job_url(job, "job-submit"))
    assert response.status_code == 409


# -- items -----------------------------------------------------------------------------------


def test_item_list_filters_and_retrieve(api: APIClient, alice: Any) -> None:
    items = [*chat_items(3, prefix="summary:"), *chat_items(2, prefix="label/")]
    job = make_job(alice, items=items)
    job.items.filter(custom_id="summary:1").update(state=ItemState.FAILED, status_code=400)
    response = api.get(items_url(job), {"page_size": 2})
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 5 and [i["custom_id"] for i in body["results"]] == [
        "summary:0",
        "summary:1",
    ]
    first = body["results"][0]
    assert first["url"] == "/v1/chat/completions" and first["body"]["model"] == "gpt-4o-mini"
    assert first["linked_object"] is None and first["response"] is None

    def ids(**params: Any) -> list[str]:
        return [i["custom_id"] for i in api.get(items_url(job), params).json()["results"]]

    assert ids(state="failed") == ["summary:1"]
    assert ids(custom_id_prefix="label/") == ["label/0", "label/1"]
    assert ids(custom_id_prefix="summary:", state=["pending"]) == ["summary:0", "summary:2"]
    assert api.get(items_url(job), {"state": "bogus"}).status_code == 400

    # custom_ids may contain slashes; they are part of the URL path.
    response = api.get(url("job-item-detail", job_uuid=str(job.uuid), custom_id="label/1"))
    assert response.status_code == 200 and response.json()["custom_id"] == "label/1"
    response = api.get(url("job-item-detail", job_uuid=str(job.uuid), custom_id="nope"))
    assert response.status_code == 404 and error_of(response)["type"] == "not_found"


def test_item_linked_object(api: APIClient, alice: Any) -> None:
    from tests.testapp.models import Article

    article = Article.objects.create(title="t")
    items = [{**chat_items(1)[0], "object": article}]
    job = make_job(alice, items=items)
    item = api.get(items_url(job)).json()["results"][0]
    assert item["linked_object"] == {"type": "testapp.article", "id": str(article.pk)}


def test_add_items_to_a_draft(api: APIClient, alice: Any) -> None:
    job = make_job(alice, 2)
    response = api.post(items_url(job), {"items": chat_items(2, prefix="more-")}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json() == {"added": 2, "item_count": 4}
    upload = SimpleUploadedFile("x.jsonl", jsonl(chat_items(1, prefix="file-")))
    response = api.post(items_url(job), {"file": upload}, format="multipart")
    assert response.status_code == 201, response.json()
    assert response.json() == {"added": 1, "item_count": 5}
    assert job.items.count() == 5


def test_add_items_problems_are_all_listed_and_nothing_is_added(api: APIClient, alice: Any) -> None:
    job = make_job(alice, 2)
    bad = [chat_items(1, prefix="new-")[0], chat_items(1)[0], {"custom_id": "x"}]
    response = api.post(items_url(job), {"items": bad}, format="json")
    assert response.status_code == 400
    problems = error_of(response)["problems"]
    assert {(p["index"], p["field"]) for p in problems} == {(1, "custom_id"), (2, "body")}
    assert job.items.count() == 2
    response = api.post(items_url(job), {"items": "nope"}, format="json")
    assert response.status_code == 400
    assert error_of(response)["problems"][0]["field"] == "items"
    response = api.post(items_url(job), {}, format="multipart")
    assert response.status_code == 400
    assert error_of(response)["problems"][0]["field"] == "file"


def test_add_items_to_a_submitted_job_is_409(api: APIClient, alice: Any) -> None:
    job = make_job(alice, 1)
    services.request_submit(job)
    response = api.post(items_url(job), {"items": chat_items(1, prefix="late-")}, format="json")
    assert response.status_code == 409
    error = error_of(response)
    assert error["state"] == "submit_requested"
    assert error["message"].startswith(f"Job {job.uuid} ")
    assert f"Job {job.pk} " not in error["message"] and job.items.count() == 1


def test_add_items_over_the_limits_is_413(api: APIClient, alice: Any, settings: Any) -> None:
    job = make_job(alice, 2)
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "MAX_REQUESTS_PER_JOB": 3}
    response = api.post(items_url(job), {"items": chat_items(2, prefix="x-")}, format="json")
    assert response.status_code == 413
    assert job.items.count() == 2


def test_items_of_an_unknown_job_are_404(api: APIClient) -> None:
    response = api.get(url("job-item-list", job_uuid=str(uuid.uuid4())))
    assert response.status_code == 404 and error_of(response)["type"] == "not_found"


# -- results ---------------------------------------------------------------------------------


def test_results_stream_every_item_without_building_the_body(api: APIClient, alice: Any) -> None:
    job = make_job(alice, 3)
    job.items.filter(custom_id="req-1").update(
        state=ItemState.SUCCEEDED, status_code=200, response={"ok": True}
    )
    response = api.get(job_url(job, "job-results"))
    assert response.status_code == 200
    assert response.streaming  # a generator, not a body built in memory
    lines = [json.loads(line) for line in streamed(response).splitlines()]
    assert lines[1] == {
        "custom_id": "req-1",
        "state": "succeeded",
        "status_code": 200,
        "response": {"ok": True},
        "error": None,
    }
    assert [line["state"] for line in lines] == ["pending", "succeeded", "pending"]


def test_results_accept_jsonl_and_errors_stay_json(api: APIClient, alice: Any) -> None:
    job = make_job(alice, 1)
    response = api.get(job_url(job, "job-results"), HTTP_ACCEPT="application/jsonl")
    assert response.status_code == 200 and response.streaming
    response = api.get(url("job-results", uuid=str(uuid.uuid4())))
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    error_of(response)


# -- throttling ------------------------------------------------------------------------------


def test_throttled_requests_get_429_in_the_error_shape(
    api: APIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.core.cache import cache
    from rest_framework.throttling import UserRateThrottle

    from openai_batches.api.views import BatchJobViewSet

    # DRF binds DEFAULT_THROTTLE_CLASSES/RATES when the views are imported, i.e. from the
    # host's settings at start-up; a test can only patch what that produces.
    monkeypatch.setattr(BatchJobViewSet, "throttle_classes", [UserRateThrottle])
    monkeypatch.setattr(UserRateThrottle, "THROTTLE_RATES", {"user": "2/minute"})
    cache.clear()
    assert api.get(url("job-list")).status_code == 200
    assert api.get(url("job-list")).status_code == 200
    response = api.get(url("job-list"))
    assert response.status_code == 429
    assert error_of(response)["type"] == "throttled" and response["Retry-After"]
