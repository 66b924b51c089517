"""Models: defaults, str, QuerySet helpers, the DB-level unique constraint, generic links."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser, Permission
from django.contrib.contenttypes.models import ContentType
from django.db import IntegrityError, transaction
from django.utils import timezone

from openai_batches.models import (
    FINAL_ITEM_STATES,
    BatchJob,
    BatchStatus,
    CompletionWindow,
    Endpoint,
    ItemState,
    JobState,
    ProviderBatch,
    RequestItem,
)
from tests.testapp.models import Article

pytestmark = pytest.mark.django_db


def make_item(job: BatchJob, custom_id: str, **fields) -> RequestItem:
    fields.setdefault("url", job.endpoint)
    fields.setdefault("body", {"model": "gpt-4o-mini", "messages": []})
    return RequestItem.objects.create(job=job, custom_id=custom_id, **fields)


# --- BatchJob ---------------------------------------------------------------------------------


def test_batch_job_defaults() -> None:
    before = timezone.now()
    job = BatchJob.objects.create()
    job.refresh_from_db()
    assert isinstance(job.uuid, uuid.UUID)
    assert job.name == ""
    assert job.endpoint == Endpoint.CHAT_COMPLETIONS == "/v1/chat/completions"
    assert job.completion_window == CompletionWindow.HOURS_24 == "24h"
    assert job.metadata == {}
    assert job.account == "default"
    assert job.model == ""
    assert job.item_count == 0
    assert job.input_bytes == 0
    assert job.state == JobState.DRAFT
    assert job.is_draft
    assert job.provider_status == ""
    assert job.provider_batch_id == ""
    assert job.input_file_id == job.output_file_id == job.error_file_id == ""
    assert job.request_count_total == job.request_count_completed == 0
    assert job.request_count_failed == 0
    assert job.provider_errors == []
    assert job.input_tokens == job.cached_tokens == job.output_tokens == 0
    assert job.reasoning_tokens == 0
    assert job.total_tokens == 0
    assert not job.is_terminal
    assert job.owner is None
    assert job.created_at >= before
    assert job.updated_at >= before
    for name in (
        "provider_created_at",
        "in_progress_at",
        "expires_at",
        "finalizing_at",
        "completed_at",
        "failed_at",
        "expired_at",
        "cancelling_at",
        "cancelled_at",
        "submit_requested_at",
        "submitted_at",
        "last_polled_at",
        "next_poll_at",
        "ingested_at",
        "last_error_at",
    ):
        assert getattr(job, name) is None, name
    assert job.last_error == ""


def test_uuids_are_unique_per_job() -> None:
    a, b = BatchJob.objects.create(), BatchJob.objects.create()
    assert a.uuid != b.uuid


def test_batch_job_str() -> None:
    named = BatchJob.objects.create(name="Summaries for March")
    assert str(named) == "Summaries for March"
    unnamed = BatchJob.objects.create()
    assert str(unnamed) == f"Batch job {unnamed.uuid}"


def test_endpoints_are_the_eight_batch_endpoints() -> None:
    assert set(Endpoint.values) == {
        "/v1/responses",
        "/v1/chat/completions",
        "/v1/embeddings",
        "/v1/completions",
        "/v1/moderations",
        "/v1/images/generations",
        "/v1/images/edits",
        "/v1/videos",
    }


def test_provider_status_is_kept_apart_from_local_state() -> None:
    job = BatchJob.objects.create(state=JobState.SUBMITTED, provider_status=BatchStatus.COMPLETED)
    job.refresh_from_db()
    assert job.state == "submitted"
    assert job.provider_status == "completed"
    assert job.is_terminal
    assert not job.is_draft


def test_total_tokens() -> None:
    job = BatchJob(input_tokens=10, output_tokens=5, cached_tokens=3, reasoning_tokens=2)
    assert job.total_tokens == 15


def test_default_ordering_is_newest_first() -> None:
    now = timezone.now()
    old = BatchJob.objects.create(created_at=now - timedelta(days=1))
    new = BatchJob.objects.create(created_at=now)
    assert list(BatchJob.objects.all()) == [new, old]


# --- BatchJob QuerySets ----------------------------------------------------------------------


def test_active_is_jobs_with_a_batch_at_the_provider() -> None:
    jobs = {state: BatchJob.objects.create(state=state) for state in JobState.values}
    running = jobs[JobState.SUBMITTED]
    ProviderBatch.objects.create(job=running, part=1, state=JobState.SUBMITTED)
    # A job waiting to send a retry part while another part still runs is active too.
    waiting = jobs[JobState.SUBMIT_REQUESTED]
    ProviderBatch.objects.create(job=waiting, part=1, state=JobState.SUBMITTED)
    ProviderBatch.objects.create(job=waiting, part=2, state=JobState.SUBMIT_REQUESTED)
    done = jobs[JobState.FINISHED]
    ProviderBatch.objects.create(job=done, part=1, state=JobState.FINISHED)
    assert set(BatchJob.objects.active()) == {running, waiting}


def test_submit_requested() -> None:
    jobs = {state: BatchJob.objects.create(state=state) for state in JobState.values}
    assert list(BatchJob.objects.submit_requested()) == [jobs[JobState.SUBMIT_REQUESTED]]


def running(**fields: Any) -> BatchJob:
    job = BatchJob.objects.create(state=JobState.SUBMITTED, **fields)
    ProviderBatch.objects.create(job=job, part=1, state=JobState.SUBMITTED)
    return job


def test_due_for_poll() -> None:
    now = timezone.now()
    never_polled = running(next_poll_at=None)
    overdue = running(next_poll_at=now - timedelta(seconds=5))
    exactly_now = running(next_poll_at=now)
    later = running(next_poll_at=now + timedelta(seconds=5))
    BatchJob.objects.create(state=JobState.FINISHED, next_poll_at=None)
    BatchJob.objects.create(state=JobState.DRAFT, next_poll_at=now - timedelta(hours=1))
    BatchJob.objects.create(state=JobState.SUBMIT_REQUESTED)

    due = set(BatchJob.objects.due_for_poll(now))
    assert due == {never_polled, overdue, exactly_now}
    # Later, the future one becomes due too.
    assert set(BatchJob.objects.due_for_poll(now + timedelta(seconds=10))) == {
        never_polled,
        overdue,
        exactly_now,
        later,
    }
    # Without an argument it uses the current time.
    assert set(BatchJob.objects.due_for_poll()) == {never_polled, overdue, exactly_now}


def test_for_user(django_user_model) -> None:
    alice = django_user_model.objects.create_user("alice", password="x")
    bob = django_user_model.objects.create_user("bob", password="x")
    staff = django_user_model.objects.create_user("staff", password="x", is_staff=True)
    viewer = django_user_model.objects.create_user("viewer", password="x")
    viewer.user_permissions.add(Permission.objects.get(codename="view_batchjob"))
    alices = BatchJob.objects.create(owner=alice, name="a")
    bobs = BatchJob.objects.create(owner=bob, name="b")
    orphan = BatchJob.objects.create(name="nobody")

    # Django's model permission, not is_staff, opens other people's jobs (as in the admin).
    assert set(BatchJob.objects.for_user(viewer)) == {alices, bobs, orphan}
    assert list(BatchJob.objects.for_user(staff)) == []
    assert set(BatchJob.objects.for_user(alice)) == {alices}
    assert set(BatchJob.objects.for_user(bob)) == {bobs}
    assert list(BatchJob.objects.for_user(AnonymousUser())) == []
    assert list(BatchJob.objects.for_user(None)) == []
    # Chains with the other helpers.
    ProviderBatch.objects.create(job=alices, part=1, state=JobState.SUBMITTED)
    assert list(BatchJob.objects.for_user(alice).active()) == [alices]
    assert list(BatchJob.objects.for_user(bob).active()) == []


def test_owner_deletion_keeps_the_job(django_user_model) -> None:
    user = django_user_model.objects.create_user("carol", password="x")
    job = BatchJob.objects.create(owner=user)
    user.delete()
    job.refresh_from_db()
    assert job.owner is None


# --- RequestItem ------------------------------------------------------------------------------


def test_request_item_defaults_and_str() -> None:
    job = BatchJob.objects.create()
    item = make_item(job, "article-1")
    item.refresh_from_db()
    assert str(item) == "article-1"
    assert item.method == "POST"
    assert item.state == ItemState.PENDING
    assert item.status_code is None
    assert item.response is None
    assert item.error is None
    assert item.provider_request_id == ""
    assert item.result_line_id == ""
    assert item.input_tokens == item.cached_tokens == item.output_tokens == 0
    assert item.reasoning_tokens == 0
    assert item.completed_at is None
    assert item.announced is False
    assert item.content_type is None
    assert item.object_id == ""
    assert item.content_object is None
    assert not item.succeeded
    assert list(job.items.all()) == [item]


def test_succeeded_property() -> None:
    job = BatchJob.objects.create()
    assert make_item(job, "a", state=ItemState.SUCCEEDED).succeeded
    assert not make_item(job, "b", state=ItemState.FAILED).succeeded


def test_as_input_line() -> None:
    job = BatchJob.objects.create(endpoint=Endpoint.EMBEDDINGS)
    body = {"model": "text-embedding-3-small", "input": "héllo"}
    item = make_item(job, "emb-1", body=body)
    item.refresh_from_db()
    assert item.as_input_line() == {
        "custom_id": "emb-1",
        "method": "POST",
        "url": "/v1/embeddings",
        "body": body,
    }
    assert list(item.as_input_line()) == ["custom_id", "method", "url", "body"]


def test_custom_id_is_unique_within_a_job_at_the_db_level() -> None:
    job = BatchJob.objects.create()
    make_item(job, "dup")
    with pytest.raises(IntegrityError), transaction.atomic():
        make_item(job, "dup")
    assert RequestItem.objects.filter(job=job).count() == 1


def test_custom_id_is_unique_within_a_job_even_with_bulk_create() -> None:
    job = BatchJob.objects.create()
    rows = [
        RequestItem(job=job, custom_id="same", url=job.endpoint, body={"model": "m"})
        for _ in range(2)
    ]
    with pytest.raises(IntegrityError), transaction.atomic():
        RequestItem.objects.bulk_create(rows)
    assert RequestItem.objects.count() == 0


def test_same_custom_id_in_two_jobs_is_fine() -> None:
    a, b = BatchJob.objects.create(), BatchJob.objects.create()
    make_item(a, "x")
    make_item(b, "x")
    assert RequestItem.objects.filter(custom_id="x").count() == 2


def test_deleting_a_job_deletes_its_items() -> None:
    job = BatchJob.objects.create()
    make_item(job, "a")
    make_item(job, "b")
    job.delete()
    assert RequestItem.objects.count() == 0


def test_generic_link_to_a_host_row() -> None:
    article = Article.objects.create(title="Django 5.2 released")
    job = BatchJob.objects.create()
    item = make_item(job, "art", content_object=article)
    assert item.content_type == ContentType.objects.get_for_model(Article)

    fresh = RequestItem.objects.get(pk=item.pk)
    assert fresh.object_id == str(article.pk)  # stored as text: any pk type fits
    assert fresh.content_object == article
    assert isinstance(fresh.content_object, Article)
    assert fresh.content_object.title == "Django 5.2 released"

    # Queryable from the host side without a GenericRelation.
    ct = ContentType.objects.get_for_model(Article)
    linked = RequestItem.objects.filter(content_type=ct, object_id=str(article.pk))
    assert list(linked) == [item]


def test_generic_link_survives_the_row_being_deleted() -> None:
    article = Article.objects.create(title="Gone soon")
    job = BatchJob.objects.create()
    item = make_item(job, "art", content_object=article)
    article.delete()
    fresh = RequestItem.objects.get(pk=item.pk)
    assert fresh.content_object is None


def test_pending_announcement_is_the_outbox() -> None:
    job = BatchJob.objects.create()
    expected = set()
    for state in ItemState.values:
        announced = make_item(job, f"{state}-done", state=state, announced=True)
        waiting = make_item(job, f"{state}-waiting", state=state, announced=False)
        assert announced  # announced rows never show up
        if state in FINAL_ITEM_STATES:
            expected.add(waiting)
    outbox = set(RequestItem.objects.pending_announcement())
    assert outbox == expected
    assert {i.state for i in outbox} == {
        "succeeded",
        "failed",
        "expired",
        "cancelled",
        "missing",
    }


def test_final_items() -> None:
    job = BatchJob.objects.create()
    pending = make_item(job, "p")
    done = make_item(job, "s", state=ItemState.SUCCEEDED, announced=True)
    assert list(RequestItem.objects.final()) == [done]
    assert pending not in RequestItem.objects.final()


def test_every_field_has_help_text() -> None:
    for model in (BatchJob, RequestItem):
        for f in model._meta.get_fields():
            if f.auto_created or not f.concrete:
                continue
            assert f.help_text, f"{model.__name__}.{f.name} has no help_text"


def test_indexes_are_named() -> None:
    for model in (BatchJob, RequestItem):
        for index in model._meta.indexes:
            assert index.name.startswith("openai_batches_")
