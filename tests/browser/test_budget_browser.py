"""Budgets and the dashboard in a real browser: an operator over their daily budget tries to
submit a job from the job list and is told why, with the figures; the dashboard shows the
same day's spend in the admin and, for people who graph elsewhere, over the API.

Runs like ``test_admin_browser.py`` (Debian's chromium through Playwright, the app served
by pytest-django's live server); screenshots land in ``artifacts/screenshots/``. The token
estimator is swapped (``TOKEN_ESTIMATOR``) for one that says 1,000 input tokens a request,
so the estimate in the sentence is exact.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from openai_batches import services
from openai_batches.models import BatchJob, JobState

from .test_admin_browser import PASSWORD, SCREENSHOTS, chromium, login, page  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.slow]

MODEL = "gpt-4o-mini"


def thousand_tokens(endpoint: str, body: Mapping[str, Any]) -> int:
    """The test's estimator: every request is 1,000 input tokens."""
    return 1000


def test_a_submission_over_the_daily_budget_is_refused_and_the_dashboard_shows_the_spend(
    page: Any,  # noqa: F811
    live_server: Any,
    transactional_db: None,
    django_user_model: Any,
    settings: Any,
) -> None:
    from playwright.sync_api import expect

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    settings.OPENAI_BATCHES = {
        **settings.OPENAI_BATCHES,
        # $100 per 1M tokens: 10,000 input and 1,000 output tokens are $1.10.
        "PRICES": {MODEL: {"input": 100, "output": 100}},
        "BUDGETS": {"PER_OWNER_PER_DAY": 5},
        "TOKEN_ESTIMATOR": f"{__name__}.thousand_tokens",
    }
    operator = django_user_model.objects.create_superuser("operator", "op@example.com", PASSWORD)
    now = timezone.now()
    # Spent today: 42,000 input tokens at $100 per 1M, results stored an instant ago.
    BatchJob.objects.create(
        owner=operator,
        name="This morning's batch",
        model=MODEL,
        state=JobState.FINISHED,
        provider_status="completed",
        input_tokens=42_000,
        ingested_at=now,
        created_at=now - timedelta(minutes=30),
    )
    job = services.create_job(
        owner=operator,
        name="Evening summaries",
        items=[
            {
                "custom_id": f"evening-{i}",
                "body": {
                    "model": MODEL,
                    "max_tokens": 100,
                    "messages": [{"role": "user", "content": f"Summarise document {i}."}],
                },
            }
            for i in range(10)
        ],
    )
    base = live_server.url

    # The job list: select the draft, choose "Submit selected jobs", Go.
    login(page, base, "/admin/openai_batches/batchjob/")
    expect(page).to_have_url(f"{base}/admin/openai_batches/batchjob/")
    page.check(f"input.action-select[value='{job.pk}']")
    page.select_option("select[name=action]", "submit_jobs")
    page.click("button[name=index]")
    message = page.locator(".messagelist .error")
    expect(message).to_contain_text(
        "it would exceed the daily budget of $5.00 for operator: $4.20 spent today, "
        "this job is estimated at $1.10"
    )
    expect(page.locator(".messagelist .success")).to_have_count(0)
    row = page.locator(f"#result_list tr:has([data-ob-job='{job.pk}'])")
    expect(row.locator("[data-state]")).to_have_attribute("data-state", JobState.DRAFT)
    page.screenshot(path=str(SCREENSHOTS / "budget-refused.png"), full_page=True)
    job.refresh_from_db()
    assert job.state == JobState.DRAFT and job.submit_requested_at is None

    # The dashboard shows the day's spend the budget counted.
    page.goto(f"{base}/admin/openai_batches/")
    page.click("a.ob-dashboard-link")
    expect(page.locator("#ob-total-batch strong")).to_have_text("$4.2000")
    expect(page.locator("#ob-total-sync strong")).to_have_text("$8.4000")
    expect(page.locator(f"#ob-per-model tr[data-model='{MODEL}'] td").first).to_have_text("1")
    today = timezone.localdate(now).isoformat()
    page.click("#ob-spend-per-day details summary")  # the table behind the chart
    expect(page.locator(f"#ob-day-table tr[data-day='{today}'] td").nth(2)).to_have_text("$4.2000")
    page.screenshot(path=str(SCREENSHOTS / "dashboard-budget-day.png"), full_page=True)

    # The same figures over the API, with the operator's session.
    response = page.request.get(f"{base}/api/batches/dashboard/?days=7")
    assert response.status == 200, response.text()
    data = json.loads(response.text())
    assert data["scope"] == "all" and data["days"] == 7
    assert data["total"]["batch_cost"] == "4.200000"
    assert [d["batch_cost"] for d in data["per_day"] if d["day"] == today] == ["4.200000"]
    assert "sk-test-key-never-logged" not in page.content() + response.text()
