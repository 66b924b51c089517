"""Budgets: a job over a limit is refused before submitting, with one sentence, everywhere.

The input-token estimator is swapped (``TOKEN_ESTIMATOR``) for one that says 1,000 tokens a
request, so every figure below is exact: a request with ``max_tokens`` 100 at $100 per 1M
input and output tokens is estimated at $0.11, a job of ten at $1.10.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from openai_batches import budgets, services
from openai_batches.checks import check_budgets
from openai_batches.exceptions import InvalidStateError
from openai_batches.models import BatchJob, JobState

pytestmark = pytest.mark.django_db

MODEL = "budget-model"
PRICES = {MODEL: {"input": 100, "output": 100}}
NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)


def thousand_tokens(endpoint: str, body: Mapping[str, Any]) -> int:
    """A test estimator: every request is 1,000 input tokens."""
    return 1000


@pytest.fixture(autouse=True)
def _prices(settings: Any) -> None:
    settings.OPENAI_BATCHES = {
        **settings.OPENAI_BATCHES,
        "PRICES": PRICES,
        "TOKEN_ESTIMATOR": f"{__name__}.thousand_tokens",
    }


def set_budgets(settings: Any, **limits: Any) -> None:
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "BUDGETS": limits}


def draft(owner: Any, n: int = 10, name: str = "draft", model: str = MODEL) -> BatchJob:
    return services.create_job(
        owner=owner,
        name=name,
        items=[
            {
                "custom_id": f"{name}-{i}",
                "body": {
                    "model": model,
                    "max_tokens": 100,
                    "messages": [{"role": "user", "content": f"Say {i}."}],
                },
            }
            for i in range(n)
        ],
    )


def spent_job(owner: Any, dollars: str, when: datetime, name: str = "done") -> BatchJob:
    """A finished job whose stored usage costs ``dollars`` (input tokens at $100 per 1M)."""
    tokens = int(Decimal(dollars) * 10_000)
    return BatchJob.objects.create(
        owner=owner,
        name=name,
        model=MODEL,
        state=JobState.FINISHED,
        provider_status="completed",
        input_tokens=tokens,
        ingested_at=when,
        created_at=when,
    )


@pytest.fixture
def alice() -> User:
    return User.objects.create_user("alice", password="pw")


def test_no_budget_no_refusal_and_no_query(alice: User) -> None:
    job = draft(alice)
    with CaptureQueriesContext(connection) as ctx:
        assert budgets.refusal(job) == ""
    assert len(ctx.captured_queries) == 0


def test_a_limit_set_to_none_is_no_limit(settings: Any, alice: User) -> None:
    set_budgets(settings, PER_JOB=None, PER_OWNER_PER_DAY=None, DEFAULT_OUTPUT_TOKENS=5)
    assert budgets.refusal(draft(alice)) == ""


def test_the_estimate_uses_the_configured_estimator_and_the_body_limits(alice: User) -> None:
    job = draft(alice)
    estimate = budgets.estimate_job(job)
    assert (estimate.requests, estimate.input_tokens, estimate.output_tokens) == (10, 10_000, 1000)
    assert estimate.cost == Decimal("1.100000")


def test_the_price_counts_the_input_tokens_stored_when_items_were_added(alice: User) -> None:
    # The enqueued-token budget reserves the stored estimates: the price shown must count
    # the same tokens, not a second estimate by whatever estimator is configured now.
    job = draft(alice)
    job.items.update(estimated_tokens=7)
    assert budgets.estimate_job(job).input_tokens == 70
    job.items.update(estimated_tokens=0)  # rows from before estimates were stored
    cache.clear()
    assert budgets.estimate_job(job).input_tokens == 10_000


def test_the_output_default_applies_to_a_request_without_a_limit(
    settings: Any, alice: User
) -> None:
    set_budgets(settings, DEFAULT_OUTPUT_TOKENS=500)
    job = services.create_job(
        owner=alice,
        items=[
            {
                "custom_id": "x",
                "body": {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
            }
        ],
    )
    assert budgets.estimate_job(job).output_tokens == 500


def test_per_job_budget(settings: Any, alice: User) -> None:
    job = draft(alice)
    set_budgets(settings, PER_JOB=1)
    assert budgets.refusal(job) == (
        "it would exceed the per-job budget of $1.00: this job is estimated at $1.10 "
        "(10,000 input tokens and up to 1,000 output tokens)"
    )
    set_budgets(settings, PER_JOB=Decimal("1.10"))
    assert budgets.refusal(job) == ""  # at the limit is within it


def test_daily_budget_counts_what_was_spent_today_only(settings: Any, alice: User) -> None:
    job = draft(alice)
    spent_job(alice, "3.20", NOW - timedelta(hours=3))
    spent_job(alice, "1.00", NOW.replace(hour=0, minute=0, second=0))  # midnight is today
    spent_job(alice, "9.00", NOW.replace(hour=0) - timedelta(seconds=1))  # yesterday
    bob = User.objects.create_user("bob")
    spent_job(bob, "9.00", NOW - timedelta(hours=1))  # someone else's
    set_budgets(settings, PER_OWNER_PER_DAY=5)
    assert budgets.refusal(job, now=NOW) == (
        "it would exceed the daily budget of $5.00 for alice: $4.20 spent today, "
        "this job is estimated at $1.10"
    )
    set_budgets(settings, PER_OWNER_PER_DAY=Decimal("5.30"))
    assert budgets.refusal(job, now=NOW) == ""


def test_monthly_budget_counts_the_calendar_month(settings: Any, alice: User) -> None:
    job = draft(alice)
    spent_job(alice, "10", datetime(2026, 3, 1, tzinfo=UTC))
    spent_job(alice, "20", datetime(2026, 3, 10, tzinfo=UTC))
    spent_job(alice, "500", datetime(2026, 2, 28, 23, 59, tzinfo=UTC))  # last month
    set_budgets(settings, PER_OWNER_PER_DAY=100, PER_OWNER_PER_MONTH=30)
    assert budgets.refusal(job, now=NOW) == (
        "it would exceed the monthly budget of $30.00 for alice: $30.00 spent this month, "
        "this job is estimated at $1.10"
    )


def test_jobs_in_flight_count_at_their_estimate(settings: Any, alice: User) -> None:
    job = draft(alice)
    flying = draft(alice, 20, name="flying")  # $2.20
    BatchJob.objects.filter(pk=flying.pk).update(state=JobState.SUBMITTED)
    spent_job(alice, "2", NOW - timedelta(hours=1))
    set_budgets(settings, PER_OWNER_PER_DAY=5)
    assert budgets.refusal(job, now=NOW) == (
        "it would exceed the daily budget of $5.00 for alice: $4.20 spent today (of which "
        "$2.20 estimated for 1 job in flight), this job is estimated at $1.10"
    )


def test_jobs_without_an_owner_share_one_budget(settings: Any) -> None:
    job = draft(None)
    spent_job(None, "4.50", NOW - timedelta(hours=1))
    set_budgets(settings, PER_OWNER_PER_DAY=5)
    assert budgets.refusal(job, now=NOW) == (
        "it would exceed the daily budget of $5.00 for jobs without an owner: $4.50 spent "
        "today, this job is estimated at $1.10"
    )


def test_a_model_without_a_price_is_refused_while_a_budget_is_set(
    settings: Any, alice: User
) -> None:
    job = draft(alice, model="no-price-model")
    set_budgets(settings, PER_OWNER_PER_DAY=5)
    assert budgets.refusal(job) == (
        "it cannot be checked against the daily budget of $5.00: the model 'no-price-model' "
        "has no price in OPENAI_BATCHES['PRICES']"
    )


def test_small_amounts_keep_their_digits() -> None:
    assert budgets.usd(Decimal("0.0042")) == "$0.0042"
    assert budgets.usd(Decimal("1234.5")) == "$1,234.50"
    assert budgets.usd(Decimal(0)) == "$0.00"
    assert budgets.usd(Decimal("0.5")) == "$0.50"


def test_spend_is_counted_in_a_constant_number_of_queries(alice: User) -> None:
    def queries() -> int:
        cache.clear()  # the in-flight estimates are cached; count the uncached path
        with CaptureQueriesContext(connection) as ctx:
            budgets.spent(alice.pk, NOW - timedelta(days=1))
        return len(ctx.captured_queries)

    def more(n: int) -> None:
        for i in range(n):
            spent_job(alice, "0.01", NOW - timedelta(hours=1), name=f"done-{i}")
            flying = draft(alice, 2, name=f"flying-{BatchJob.objects.count()}")
            BatchJob.objects.filter(pk=flying.pk).update(state=JobState.SUBMITTED)

    more(2)
    small = queries()
    more(40)
    large = queries()
    assert small == large == 3, (small, large)
    so_far = budgets.spent(alice.pk, NOW - timedelta(days=1))
    assert so_far.actual == Decimal("0.42") and so_far.in_flight_jobs == 42
    assert so_far.in_flight == Decimal("0.22") * 42
    # Cached: a second look reads no item.
    with CaptureQueriesContext(connection) as ctx:
        budgets.spent(alice.pk, NOW - timedelta(days=1))
    assert len(ctx.captured_queries) == 2


def test_adding_items_changes_the_cached_estimate(alice: User) -> None:
    job = draft(alice, 2)
    assert budgets.estimate_job(job).requests == 2
    services.add_items(
        job, [{"custom_id": "more", "body": {"model": MODEL, "max_tokens": 100, "messages": []}}]
    )
    job.refresh_from_db()
    assert budgets.estimate_job(job).requests == 3


# -- the refusal in every entry point ----------------------------------------------------------


def test_request_submit_raises_with_the_sentence_and_leaves_the_draft(
    settings: Any, alice: User, django_capture_on_commit_callbacks: Any
) -> None:
    job = draft(alice)
    spent_job(alice, "4.20", timezone.now())
    set_budgets(settings, PER_OWNER_PER_DAY=5)
    with (
        django_capture_on_commit_callbacks(execute=False) as callbacks,
        pytest.raises(InvalidStateError) as caught,
    ):
        services.request_submit(job)
    assert str(caught.value) == (
        f"Job {job.pk} cannot be submitted: it would exceed the daily budget of $5.00 for "
        "alice: $4.20 spent today, this job is estimated at $1.10."
    )
    job.refresh_from_db()
    assert job.state == JobState.DRAFT and callbacks == []
    assert services.can_submit(job) == (False, str(caught.value.reason))
    # Within budget again (the limit raised), the same job goes.
    set_budgets(settings, PER_OWNER_PER_DAY=10)
    assert services.request_submit(job).state == JobState.SUBMIT_REQUESTED


def test_the_admin_submit_action_shows_the_refusal_and_submits_nothing(
    settings: Any, admin_client: Client, alice: User
) -> None:
    job = draft(alice, name="Nightly")
    set_budgets(settings, PER_JOB=0.5)
    response = admin_client.post(
        reverse("admin:openai_batches_batchjob_changelist"),
        {"action": "submit_jobs", "_selected_action": [job.pk]},
        follow=True,
    )
    assert response.status_code == 200
    shown = [(m.level_tag, str(m)) for m in response.context["messages"]]
    assert shown == [
        (
            "error",
            f"Skipped 1 job. “Nightly”: Job {job.pk} cannot be submitted: it would exceed the "
            "per-job budget of $0.50: this job is estimated at $1.10 (10,000 input tokens and "
            "up to 1,000 output tokens).",
        )
    ]
    job.refresh_from_db()
    assert job.state == JobState.DRAFT


def test_the_api_submit_is_a_409_with_the_sentence(settings: Any, alice: User) -> None:
    job = draft(alice)
    spent_job(alice, "4.20", timezone.now())
    set_budgets(settings, PER_OWNER_PER_DAY=5)
    client = APIClient()
    client.force_authenticate(alice)
    url = reverse("openai_batches_api:job-submit", kwargs={"uuid": str(job.uuid)})
    response = client.post(url)
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["type"] == "invalid_state"
    assert error["message"] == (
        f"Job {job.uuid} cannot be submitted: it would exceed the daily budget of $5.00 for "
        "alice: $4.20 spent today, this job is estimated at $1.10."
    )
    # The job's detail says why Submit is not possible now.
    detail = client.get(reverse("openai_batches_api:job-detail", kwargs={"uuid": str(job.uuid)}))
    assert detail.json()["actions"]["submit"] == {
        "allowed": False,
        "reason": "it would exceed the daily budget of $5.00 for alice: $4.20 spent today, "
        "this job is estimated at $1.10",
    }
    job.refresh_from_db()
    assert job.state == JobState.DRAFT


# -- manage.py check -----------------------------------------------------------------------------


def ids(settings: Any, **values: Any) -> list[str]:
    settings.OPENAI_BATCHES = {"API_KEY": "sk-x", "QUEUE": "openai_batches", **values}
    messages = check_budgets()
    for message in messages:
        assert message.hint and message.hint.strip()
    return [str(m.id) for m in messages]


def test_valid_budgets_and_estimator_pass(settings: Any) -> None:
    assert (
        ids(
            settings,
            PRICES=PRICES,
            BUDGETS={
                "PER_JOB": 20,
                "PER_OWNER_PER_DAY": 50.5,
                "PER_OWNER_PER_MONTH": Decimal(500),
                "DEFAULT_OUTPUT_TOKENS": 256,
            },
            TOKEN_ESTIMATOR="openai_batches.estimate.tiktoken_input_tokens",
        )
        == []
    )
    assert ids(settings, BUDGETS={"PER_JOB": None}) == []  # None: no limit


@pytest.mark.parametrize(
    "value",
    [
        [],
        "50",
        {"PER_DAY": 5},
        {"PER_JOB": "20"},
        {"PER_JOB": -1},
        {"PER_OWNER_PER_DAY": float("nan")},
        {"PER_OWNER_PER_MONTH": True},
        {"DEFAULT_OUTPUT_TOKENS": 1.5},
        {"DEFAULT_OUTPUT_TOKENS": -1},
    ],
)
def test_e009_malformed_budgets(settings: Any, value: Any) -> None:
    assert ids(settings, PRICES=PRICES, BUDGETS=value) == ["openai_batches.E009"]


def test_w009_limits_without_prices(settings: Any) -> None:
    assert ids(settings, BUDGETS={"PER_JOB": 5}) == ["openai_batches.W009"]


@pytest.mark.parametrize(
    "path",
    [
        "no.such.module",
        "openai_batches.estimate.NOPE",
        "openai_batches.estimate.DEFAULT_OUTPUT_TOKENS",  # an int: not callable
        42,
    ],
)
def test_e010_token_estimator_that_cannot_be_used(settings: Any, path: Any) -> None:
    assert ids(settings, TOKEN_ESTIMATOR=path) == ["openai_batches.E010"]


def test_manage_py_check_reports_a_bad_budget(settings: Any) -> None:
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "BUDGETS": {"PER_JOB": "lots"}}
    with pytest.raises(SystemCheckError, match=r"openai_batches\.E009"):
        call_command("check")


def test_many_uncached_jobs_in_flight_are_read_in_slices(
    alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite caps a query's parameters: the item query takes the job ids a slice at a time."""
    monkeypatch.setattr(budgets, "IDS_PER_QUERY", 5)
    for i in range(12):
        flying = draft(alice, 1, name=f"f{i}")
        BatchJob.objects.filter(pk=flying.pk).update(state=JobState.SUBMITTED)
    cache.clear()
    with CaptureQueriesContext(connection) as ctx:
        so_far = budgets.spent(alice.pk, NOW)
    assert len(ctx.captured_queries) == 2 + 3  # usage, jobs in flight, three slices of items
    assert so_far.in_flight_jobs == 12 and so_far.in_flight == Decimal("0.11") * 12
