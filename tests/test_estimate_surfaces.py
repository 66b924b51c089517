"""The estimate before submitting (issue 12, "Seeing it"): the admin's job page and
``GET jobs/{uuid}/estimate/`` show a draft's tokens and cost at batch prices, from the one
estimate the budgets check uses (``budgets.estimate_job``).

The expected numbers are computed here independently, body by body, with the estimator's
public functions and the price table, so a surface that drifted from them fails.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.test import APIClient

from openai_batches import services
from openai_batches.estimate import estimate_input_tokens
from openai_batches.models import BatchJob, JobState

from .lifecycle_helpers import chat_items

pytestmark = pytest.mark.django_db

PRICE = {"input": 0.075, "output": 0.30}


@pytest.fixture(autouse=True)
def _prices(settings: Any) -> None:
    cache.clear()  # estimates are cached by job; a reused pk must not see another's
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "PRICES": {"gpt-4o-mini": PRICE}}


@pytest.fixture
def alice() -> User:
    return User.objects.create_user("alice", password="pw")


def items(n: int, model: str = "gpt-4o-mini") -> list[dict[str, Any]]:
    """Chat requests of different lengths; odd ones set their own output limit."""
    found = chat_items(n, model=model)
    for i, item in enumerate(found):
        item["body"]["messages"][0]["content"] += " word" * (i * 7)
        if i % 2:
            item["body"]["max_completion_tokens"] = 50 + i
    return found


def expected(batch: list[dict[str, Any]]) -> tuple[int, int, Decimal]:
    inp = sum(estimate_input_tokens("/v1/chat/completions", it["body"]) for it in batch)
    out = sum(it["body"].get("max_completion_tokens", 1024) for it in batch)
    cost = (Decimal(inp) * Decimal("0.075") + Decimal(out) * Decimal("0.30")) / Decimal(10**6)
    return inp, out, cost


def estimate_url(job: BatchJob) -> str:
    return reverse("openai_batches_api:job-estimate", kwargs={"uuid": str(job.uuid)})


def api_for(user: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


# -- the API --------------------------------------------------------------------------------


def test_the_api_returns_a_drafts_tokens_and_cost(alice: User) -> None:
    batch = items(9)
    job = services.create_job(owner=alice, items=batch)
    response = api_for(alice).get(estimate_url(job))
    assert response.status_code == 200
    inp, out, cost = expected(batch)
    data = response.json()
    assert data == {
        "requests": 9,
        "model": "gpt-4o-mini",
        "input_tokens": inp,
        "max_output_tokens": out,
        "currency": "USD",
        "cost": data["cost"],
        "cost_note": "",
    }
    assert inp > 9 * 5 and out < 9 * 1024  # the bodies' own limits were read
    assert abs(Decimal(data["cost"]) - cost) < Decimal("0.000001")


def test_a_model_without_a_price_has_no_cost_and_says_why(alice: User) -> None:
    job = services.create_job(owner=alice, items=items(2, model="gpt-unpriced"))
    data = api_for(alice).get(estimate_url(job)).json()
    assert data["cost"] is None
    assert data["cost_note"] == "no price for gpt-unpriced"
    assert data["input_tokens"] > 0


def test_an_empty_draft(alice: User) -> None:
    job = services.create_job(owner=alice)
    data = api_for(alice).get(estimate_url(job)).json()
    assert (data["requests"], data["input_tokens"], data["cost"]) == (0, 0, None)
    assert data["cost_note"] == "no requests yet"


def test_the_estimate_follows_items_added_to_the_draft(alice: User) -> None:
    job = services.create_job(owner=alice, items=items(2))
    client = api_for(alice)
    first = client.get(estimate_url(job)).json()
    services.add_items(job, chat_items(3, prefix="more-"))
    second = client.get(estimate_url(job)).json()
    assert second["requests"] == 5 and second["input_tokens"] > first["input_tokens"]


def test_asking_again_reads_no_request_bodies(alice: User) -> None:
    job = services.create_job(owner=alice, items=items(4))
    client = api_for(alice)
    client.get(estimate_url(job))
    with CaptureQueriesContext(connection) as queries:
        assert client.get(estimate_url(job)).status_code == 200
    assert not [q for q in queries if "openai_batches_requestitem" in q["sql"]]


def test_it_is_read_only(alice: User) -> None:
    job = services.create_job(owner=alice, items=items(1))
    assert api_for(alice).post(estimate_url(job)).status_code == 405


def test_the_schema_documents_it() -> None:
    schema = APIClient().get(reverse("openai_batches_api:schema"), {"format": "json"}).json()
    operation = schema["paths"]["/api/batches/jobs/{uuid}/estimate/"]["get"]
    ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    component = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert set(component["properties"]) == {
        "requests",
        "model",
        "input_tokens",
        "max_output_tokens",
        "currency",
        "cost",
        "cost_note",
    }
    assert component["properties"]["cost"]["nullable"] is True


# -- the admin ------------------------------------------------------------------------------


def admin_page(job: BatchJob) -> str:
    root = User.objects.create_superuser("root", password="pw")
    client = Client()
    client.force_login(root)
    response = client.get(reverse("admin:openai_batches_batchjob_change", args=[job.pk]))
    assert response.status_code == 200
    return str(response.content.decode())


def estimate_cell(page: str) -> str:
    start = page.index('class="ob-table ob-estimate"')
    return page[start : page.index("</table>", start)]


def test_the_admin_shows_a_drafts_estimate_before_submit(alice: User) -> None:
    batch = items(7)
    job = services.create_job(owner=alice, items=batch)
    inp, out, cost = expected(batch)
    cell = estimate_cell(admin_page(job))
    assert f"{inp:,}" in cell and f"{out:,}" in cell
    assert f"${cost:.4f}" in cell
    assert "Submit refused" not in cell


def test_the_admin_names_the_model_without_a_price(alice: User) -> None:
    job = services.create_job(owner=alice, items=items(2, model="gpt-unpriced"))
    assert "no price for gpt-unpriced" in estimate_cell(admin_page(job))


def test_the_admin_says_when_a_budget_refuses_the_submission(alice: User, settings: Any) -> None:
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "BUDGETS": {"PER_JOB": 0.000001}}
    job = services.create_job(owner=alice, items=items(3))
    page = admin_page(job)
    cell = estimate_cell(page)
    assert "Submit refused: it would exceed the per-job budget" in cell
    assert 'data-action="submit_jobs"' not in page


def test_a_job_past_submission_shows_no_estimate(alice: User) -> None:
    job = services.create_job(owner=alice, items=items(2))
    BatchJob.objects.filter(pk=job.pk).update(state=JobState.SUBMITTED)
    assert "ob-estimate" not in admin_page(job)
