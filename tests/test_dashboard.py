"""The dashboard: figures aggregated by the database, priced per group, shown with tables
behind every chart in the admin and as JSON over the API, permission-checked, and a constant
number of queries in both."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from openai_batches.dashboard import collect
from openai_batches.models import (
    BatchJob,
    BatchStatus,
    ItemState,
    JobState,
    ProviderBatch,
    RequestItem,
)

pytestmark = pytest.mark.django_db

DASHBOARD = "admin:openai_batches_batchjob_dashboard"
PRICES = {
    "gpt-4o-mini": {"input": 0.075, "cached_input": 0.0375, "output": 0.3},
    "gpt-4o": {"input": 1.25, "output": 5.0},
}


@pytest.fixture(autouse=True)
def _prices(settings: Any) -> None:
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "PRICES": PRICES}


def finished(
    model: str, inp: int, out: int, *, days_ago: int = 0, cached: int = 0, status: str = "completed"
) -> BatchJob:
    when = timezone.now() - timedelta(days=days_ago)
    job = BatchJob.objects.create(
        name=f"{model}-{days_ago}",
        model=model,
        state=JobState.FINISHED,
        provider_status=status,
        input_tokens=inp,
        cached_tokens=cached,
        output_tokens=out,
        ingested_at=when,
        created_at=when,
    )
    ProviderBatch.objects.create(
        job=job,
        part=1,
        state=JobState.FINISHED,
        provider_status=status,
        provider_batch_id=f"batch_{model}_{days_ago}_{inp}",
        completed_at=when,
        ingested_at=when,
    )
    return job


def items(job: BatchJob, *rows: dict[str, Any]) -> None:
    RequestItem.objects.bulk_create(
        RequestItem(job=job, custom_id=f"{job.pk}-{i}", url=job.endpoint, body={}, **row)
        for i, row in enumerate(rows)
    )


def test_spend_per_day_and_model_priced_per_group_with_the_synchronous_double() -> None:
    finished("gpt-4o-mini", 1_000_000, 100_000, days_ago=0)
    finished("gpt-4o-mini", 2_000_000, 0, days_ago=0, cached=1_000_000)
    finished("gpt-4o", 100_000, 10_000, days_ago=3)
    finished("gpt-4o", 100_000, 10_000, days_ago=40)  # outside 30 days
    f = collect(30)
    mini = dict(f.per_model)["gpt-4o-mini"]
    # 1M*0.075 + 0.1M*0.3 = 0.105; then 1M uncached*0.075 + 1M cached*0.0375 = 0.1125
    assert mini.batch_cost == Decimal("0.217500")
    assert mini.sync_cost == Decimal("0.435000") and mini.saved == Decimal("0.217500")
    assert (mini.jobs, mini.input_tokens, mini.cached_tokens) == (2, 3_000_000, 1_000_000)
    big = dict(f.per_model)["gpt-4o"]
    assert big.jobs == 1 and big.batch_cost == Decimal("0.175000")  # 0.125 + 0.05
    assert f.total.batch_cost == Decimal("0.392500")
    days = dict(f.per_day)
    assert len(days) == 30
    today = timezone.localdate()
    assert days[today].batch_cost == Decimal("0.217500")
    assert days[today - timedelta(days=3)].batch_cost == Decimal("0.175000")
    assert sum(s.jobs for s in days.values()) == 3
    assert collect(90).total.jobs == 4


def test_a_model_without_price_is_counted_in_tokens_not_in_cost() -> None:
    finished("mystery-model", 500, 50)
    f = collect(7)
    spend = dict(f.per_model)["mystery-model"]
    assert spend.batch_cost == 0 and spend.unpriced_tokens == 550
    assert f.total.unpriced_tokens == 550


def test_outcomes_and_failures_by_code() -> None:
    done = finished("gpt-4o-mini", 10, 10)
    finished("gpt-4o-mini", 10, 10, status=BatchStatus.EXPIRED)
    BatchJob.objects.create(name="draft")
    BatchJob.objects.create(name="running", state=JobState.SUBMITTED, provider_status="in_progress")
    BatchJob.objects.create(name="broken", state=JobState.SUBMIT_FAILED)
    items(
        done,
        {"state": ItemState.SUCCEEDED, "status_code": 200},
        {
            "state": ItemState.FAILED,
            "status_code": 400,
            "response": {"error": {"code": "invalid_prompt", "message": "x"}},
        },
        {
            "state": ItemState.FAILED,
            "status_code": 400,
            "response": {"error": {"code": "invalid_prompt", "message": "y"}},
        },
        {"state": ItemState.FAILED, "status_code": 500, "response": {"oops": 1}},
        {"state": ItemState.EXPIRED, "error": {"code": "batch_expired", "message": "z"}},
        {"state": ItemState.MISSING},
    )
    f = collect(30)
    assert {key: n for key, _, n in f.outcomes} == {
        "completed": 1,
        "expired": 1,
        "draft": 1,
        "in_flight": 1,
        "submit_failed": 1,
    }
    assert f.failures == [
        ("invalid_prompt", 2),
        ("batch_expired", 1),
        ("http_500", 1),
        ("missing", 1),
    ]
    assert f.failed_total == 5
    # The same codes as the typed result reads them, item by item.
    for item in RequestItem.objects.exclude(state=ItemState.SUCCEEDED):
        assert item.result.code in dict(f.failures), item.result.code


def test_the_page_shows_figures_charts_tables_and_the_batch_rule(admin_client: Client) -> None:
    finished("gpt-4o-mini", 1_000_000, 100_000)
    running = BatchJob.objects.create(
        name="in the air",
        state=JobState.SUBMITTED,
        provider_status=BatchStatus.IN_PROGRESS,
        submitted_at=timezone.now() - timedelta(hours=2),
        request_count_total=10,
        request_count_completed=4,
    )
    response = admin_client.get(reverse(DASHBOARD))
    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="ob-total-batch"><span>Spent at batch prices</span><strong>$0.1050</strong>' in html
    assert "<strong>$0.2100</strong>" in html  # synchronous: twice
    assert "half the synchronous price" in html
    assert "<svg" in html and 'class="ob-bar-batch"' in html
    assert '<table class="ob-table ob-dash-table" id="ob-day-table">' in html
    assert 'data-model="gpt-4o-mini"' in html and "$0.1050" in html
    assert f'<tr data-job="{running.pk}">' in html
    assert 'data-completed="4" data-failed="0" data-total="10"' in html
    assert "2\xa0hours" in html
    assert "sk-test-key-never-logged" not in html
    # Linked from the app's index and the job list.
    url = reverse(DASHBOARD)
    assert (
        url in admin_client.get(reverse("admin:app_list", args=["openai_batches"])).content.decode()
    )
    assert (
        url
        in admin_client.get(reverse("admin:openai_batches_batchjob_changelist")).content.decode()
    )


def test_the_period_is_checked(admin_client: Client) -> None:
    assert admin_client.get(reverse(DASHBOARD), {"days": "7"}).status_code == 200
    bad = admin_client.get(reverse(DASHBOARD), {"days": "3"})
    assert bad.status_code == 400 and b"days: choose one of 30, 7, 90, 365" in bad.content


def test_view_permission_is_needed(client: Client) -> None:
    user = User.objects.create_user("nobody", password="pw", is_staff=True)
    client.force_login(user)
    assert client.get(reverse(DASHBOARD)).status_code == 403
    link = reverse(DASHBOARD)
    user.user_permissions.add(Permission.objects.get(codename="view_requestitem"))
    index = client.get(reverse("admin:app_list", args=["openai_batches"]))
    assert link not in index.content.decode()  # no link to a page that would refuse
    user.user_permissions.add(Permission.objects.get(codename="view_batchjob"))
    user = User.objects.get(pk=user.pk)
    client.force_login(user)
    assert client.get(link).status_code == 200


def _queries(client: Client) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(reverse(DASHBOARD)).status_code == 200
    return len(ctx.captured_queries)


def _bulk(n: int, offset: int) -> None:
    now = timezone.now()
    models = ("gpt-4o-mini", "gpt-4o", "unpriced")
    jobs = BatchJob.objects.bulk_create(
        BatchJob(
            name=f"bulk-{offset + i}",
            model=models[i % 3],
            state=(JobState.FINISHED, JobState.SUBMITTED, JobState.SUBMIT_REQUESTED)[i % 3],
            provider_status=("completed", "in_progress", "")[i % 3],
            input_tokens=1000 + i,
            output_tokens=100,
            ingested_at=now - timedelta(days=i % 20) if i % 3 == 0 else None,
            created_at=now - timedelta(days=i % 20),
        )
        for i in range(n)
    )
    RequestItem.objects.bulk_create(
        RequestItem(
            job=job,
            custom_id=f"{job.pk}-{k}",
            url=job.endpoint,
            body={},
            state=ItemState.FAILED if k else ItemState.SUCCEEDED,
            status_code=400 if k else 200,
            response={"error": {"code": f"code_{job.pk % 7}"}} if k else {},
        )
        for job in jobs
        for k in range(2)
    )


def test_query_count_does_not_grow_from_10_to_1000_jobs(admin_client: Client) -> None:
    _bulk(10, 0)
    small = _queries(admin_client)
    _bulk(990, 10)
    assert BatchJob.objects.count() == 1000
    large = _queries(admin_client)
    assert small == large, (small, large)
    html = admin_client.get(reverse(DASHBOARD)).content.decode()
    moving = BatchJob.objects.filter(
        state__in=[JobState.SUBMITTED, JobState.SUBMIT_REQUESTED]
    ).count()
    assert moving == 666  # 6 of the first 10, 660 of the next 990
    assert f"Batches in flight ({moving})" in html
    assert html.count("<tr data-job=") == 50  # the oldest 50, not all of them


# -- the same figures over the API ------------------------------------------------------------

API = "/api/batches/dashboard/"


def api_as(user: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_the_api_serves_the_admin_figures_over_every_job_to_a_user_with_view_permission() -> None:
    finished("gpt-4o-mini", 1_000_000, 100_000)
    finished("gpt-4o", 100_000, 10_000, days_ago=3)
    running = BatchJob.objects.create(
        name="in the air",
        model="gpt-4o-mini",
        state=JobState.SUBMITTED,
        provider_status=BatchStatus.IN_PROGRESS,
        submitted_at=timezone.now() - timedelta(hours=2),
        request_count_total=10,
        request_count_completed=4,
        request_count_failed=1,
    )
    viewer = User.objects.create_user("viewer")
    viewer.user_permissions.add(Permission.objects.get(codename="view_batchjob"))
    response = api_as(viewer).get(API, {"days": 7})
    assert response.status_code == 200, response.content
    data = response.json()
    f = collect(7)
    assert data["scope"] == "all" and data["days"] == 7 and data["currency"] == "USD"
    assert data["prices_configured"] is True
    assert data["total"]["batch_cost"] == str(f.total.batch_cost) == "0.280000"
    assert data["total"]["sync_cost"] == "0.560000" and data["total"]["saved"] == "0.280000"
    assert data["total"]["input_tokens"] == 1_100_000 and data["total"]["total_tokens"] == 1_210_000
    assert [d["day"] for d in data["per_day"]] == [day.isoformat() for day, _ in f.per_day]
    assert len(data["per_day"]) == 7
    assert [(m["model"], m["batch_cost"]) for m in data["per_model"]] == [
        ("gpt-4o-mini", "0.105000"),
        ("gpt-4o", "0.175000"),
    ]
    assert {o["outcome"]: o["jobs"] for o in data["outcomes"]} == {"completed": 2, "in_flight": 1}
    (flying,) = data["in_flight"]
    assert flying["uuid"] == str(running.uuid) and flying["state"] == "submitted"
    assert (flying["provider_completed"], flying["provider_failed"]) == (4, 1)
    assert 7190 <= flying["age_seconds"] <= 7300
    assert data["in_flight_total"] == 1
    assert "sk-test-key-never-logged" not in response.content.decode()


def test_a_user_without_view_permission_gets_the_figures_of_their_own_jobs_only() -> None:
    alice = User.objects.create_user("alice")
    bob = User.objects.create_user("bob")
    mine = finished("gpt-4o-mini", 1_000_000, 0)
    theirs = finished("gpt-4o", 1_000_000, 0, days_ago=1)
    BatchJob.objects.filter(pk=mine.pk).update(owner=alice)
    BatchJob.objects.filter(pk=theirs.pk).update(owner=bob)
    items(
        mine,
        {"state": ItemState.FAILED, "status_code": 400, "response": {"error": {"code": "mine"}}},
    )
    items(
        theirs,
        {"state": ItemState.FAILED, "status_code": 400, "response": {"error": {"code": "theirs"}}},
    )
    BatchJob.objects.create(name="bob flying", owner=bob, state=JobState.SUBMITTED)
    data = api_as(alice).get(API).json()
    assert data["scope"] == "own" and data["days"] == 30  # the default period
    assert data["total"]["jobs"] == 1 and data["total"]["batch_cost"] == "0.075000"
    assert [m["model"] for m in data["per_model"]] == ["gpt-4o-mini"]
    assert data["failures"] == [{"code": "mine", "requests": 1}] and data["failed_total"] == 1
    assert data["in_flight"] == [] and data["in_flight_total"] == 0
    assert {o["outcome"]: o["jobs"] for o in data["outcomes"]} == {"completed": 1}
    # The admin's rule is unchanged: everyone's figures, for whoever may view jobs.
    staff = User.objects.create_superuser("root")
    everything = api_as(staff).get(API).json()
    assert everything["scope"] == "all" and everything["total"]["jobs"] == 2
    assert everything["in_flight_total"] == 1 and everything["failed_total"] == 2


def test_the_api_refuses_anonymous_users_and_bad_periods_in_the_error_shape() -> None:
    anonymous = APIClient().get(API)
    assert anonymous.status_code in (401, 403)
    assert set(anonymous.json()["error"]) >= {"type", "message"}
    user = User.objects.create_user("carol")
    for bad in ("0", "367", "seven", ""):
        response = api_as(user).get(API, {"days": bad})
        assert response.status_code == 400, bad
        (problem,) = response.json()["error"]["problems"]
        assert problem["field"] == "days", response.json()
    assert api_as(user).get(API, {"days": "366"}).status_code == 200
    # Read-only.
    assert api_as(user).post(API, {}).status_code == 405


def _api_queries(client: APIClient) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(API).status_code == 200
    return len(ctx.captured_queries)


@pytest.mark.parametrize("permitted", [True, False], ids=["all-jobs", "own-jobs"])
def test_the_api_query_count_does_not_grow_from_10_to_1000_jobs(permitted: bool) -> None:
    user = User.objects.create_user("grapher")
    if permitted:
        user.user_permissions.add(Permission.objects.get(codename="view_batchjob"))
    client = api_as(User.objects.get(pk=user.pk))
    _bulk(10, 0)
    BatchJob.objects.update(owner=user)
    client.get(API)  # the first request also loads the user's permissions, once
    small = _api_queries(client)
    _bulk(990, 10)
    BatchJob.objects.update(owner=user)
    large = _api_queries(client)
    assert small == large <= 6, (small, large)
    data = client.get(API).json()
    assert data["in_flight_total"] == 666 and len(data["in_flight"]) == 50
    assert data["failed_total"] == 334  # one failed item per ingested job
