"""The quota panel (issue 12, "Seeing it"): the admin's quota page and ``GET quota/`` show
per account and model the enqueued-token budget, what is reserved and in flight, and the
line of waiting parts; the admin's "reset learned limit" button posts (with CSRF, with the
change permission) to ``quota.reset_learned_limit``.

The budgets and parts are set up as the quota services leave them (a budget row with a
learned limit, a part holding its reservation at the provider, parts in line); what the
surfaces show is compared with ``quota.overview`` / ``quota.waiting`` and with the rows.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from openai_batches import quota, services
from openai_batches.models import (
    BatchJob,
    JobState,
    ProviderBatch,
    QuotaEvent,
    QuotaEventKind,
    TokenBudget,
)

from .lifecycle_helpers import chat_items

pytestmark = pytest.mark.django_db

MODEL = "gpt-4o-mini"
PAGE = "admin:openai_batches_batchjob_quota"
RESET = "admin:openai_batches_batchjob_quota_reset"


def make_user(role: str) -> User:
    if role == "superuser":
        return User.objects.create_superuser("root", password="pw")
    user = User.objects.create_user(role, password="pw", is_staff=role != "plain")
    codenames = {
        "viewer": ["view_batchjob"],
        "changer": ["view_batchjob", "change_batchjob"],
    }.get(role, [])
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return User.objects.get(pk=user.pk)


def part_of(owner: Any, name: str, **fields: Any) -> ProviderBatch:
    """A one-part job of ``owner`` with its part in the state ``fields`` give."""
    job = services.create_job(name=name, owner=owner, items=chat_items(2))
    services.request_submit(job)
    part = ProviderBatch.objects.get(job=job)
    ProviderBatch.objects.filter(pk=part.pk).update(**fields)
    part.refresh_from_db()
    return part


@pytest.fixture
def scene() -> dict[str, Any]:
    """A learned limit, one part in flight holding 700 tokens, two parts in line."""
    owner = User.objects.create_user("alice", password="pw")
    now = timezone.now()
    TokenBudget.objects.create(account="default", model=MODEL, learned_limit=1_500)
    flying = part_of(
        owner,
        "flying",
        state=JobState.SUBMITTED,
        provider_status="in_progress",
        provider_batch_id="batch_fly",
        admitted_at=now - timedelta(minutes=9),
        reserved_tokens=700,
    )
    second = part_of(
        owner, "second", waiting_since=now - timedelta(minutes=1), estimated_tokens=900
    )
    first = part_of(
        owner, "first", waiting_since=now - timedelta(minutes=5), estimated_tokens=1_200
    )
    return {"owner": owner, "flying": flying, "first": first, "second": second}


# -- the API --------------------------------------------------------------------------------


def api_get(user: User, **params: Any) -> Any:
    client = APIClient()
    client.force_authenticate(user)
    return client.get(reverse("openai_batches_api:quota"), params)


def test_the_api_shows_budgets_and_the_line(scene: dict[str, Any]) -> None:
    response = api_get(make_user("viewer"))
    assert response.status_code == 200
    data = response.json()
    [row] = data["models"]
    assert row == {
        "account": "default",
        "model": MODEL,
        "limit": 2_000_000,
        "learned_limit": 1_500,
        "effective_limit": 1_500,
        "reserved": 700,
        "in_flight": 700,
        "waiting_parts": 2,
        "waiting_tokens": 2_100,
        "updated_at": row["updated_at"],
    }
    assert row["updated_at"].endswith("Z")
    # Oldest first, whichever was planned first.
    assert [(w["job_name"], w["estimated_tokens"]) for w in data["waiting"]] == [
        ("first", 1_200),
        ("second", 900),
    ]
    assert data["waiting"][0]["job"] == str(scene["first"].job.uuid)
    assert data["waiting"][0]["owner"] == scene["owner"].pk
    assert data["waiting_total"] == 2
    assert [q.model for q in quota.overview()] == [MODEL]  # the same source


def test_the_api_filters_by_account(scene: dict[str, Any]) -> None:
    data = api_get(make_user("viewer"), account="other").json()
    assert data == {"models": [], "waiting": [], "waiting_total": 0}


@pytest.mark.parametrize("role", ["plain", "owner"])
def test_the_api_needs_the_view_permission(scene: dict[str, Any], role: str) -> None:
    user = scene["owner"] if role == "owner" else make_user(role)
    response = api_get(user)
    assert response.status_code == 403
    assert "openai_batches.view_batchjob" in response.json()["error"]["message"]


def test_the_api_is_read_only(scene: dict[str, Any]) -> None:
    client = APIClient()
    client.force_authenticate(make_user("superuser"))
    assert client.post(reverse("openai_batches_api:quota")).status_code == 405
    assert TokenBudget.objects.get().learned_limit == 1_500


def test_the_schema_documents_it() -> None:
    schema = APIClient().get(reverse("openai_batches_api:schema"), {"format": "json"}).json()
    operation = schema["paths"]["/api/batches/quota/"]["get"]
    assert "view_batchjob" in operation["description"]
    assert {"200", "400", "401", "403"} <= set(operation["responses"])


# -- the admin page -------------------------------------------------------------------------


def admin_client(user: User, **kwargs: Any) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


def test_the_admin_page_shows_budgets_and_the_line(scene: dict[str, Any]) -> None:
    page = admin_client(make_user("viewer")).get(reverse(PAGE)).content.decode()
    row = page[page.index(f'data-model="{MODEL}"') :]
    row = row[: row.index("</tr>")]
    for cell in ("2,000,000", '<td class="ob-learned">1,500</td>', "700", "2,100"):
        assert cell in row, cell
    line = page[page.index('id="ob-quota-waiting"') :]
    assert line.index(">first<") < line.index(">second<")
    assert "The line: 2 parts waiting" in page
    # View only: no reset button.
    assert "Reset learned limit" not in page


def test_the_app_index_links_to_it() -> None:
    page = admin_client(make_user("viewer")).get(reverse("admin:app_list", args=["openai_batches"]))
    assert reverse(PAGE) in page.content.decode()


def test_an_operator_resets_a_learned_limit(scene: dict[str, Any]) -> None:
    client = admin_client(make_user("changer"), enforce_csrf_checks=True)
    page = client.get(reverse(PAGE))
    assert "Reset learned limit" in page.content.decode()
    token = page.context["csrf_token"]
    response = client.post(
        reverse(RESET), {"account": "default", "model": MODEL, "csrfmiddlewaretoken": str(token)}
    )
    assert response.status_code == 302 and response["Location"] == reverse(PAGE)
    assert TokenBudget.objects.get().learned_limit is None
    event = QuotaEvent.objects.get()
    assert (event.kind, event.limit_before) == (QuotaEventKind.RESET, 1_500)
    after = client.get(reverse(PAGE)).content.decode()
    assert "Reset the learned limit of gpt-4o-mini on default (it was 1,500 tokens)" in after


def test_a_reset_without_the_csrf_token_is_refused(scene: dict[str, Any]) -> None:
    client = admin_client(make_user("changer"), enforce_csrf_checks=True)
    response = client.post(reverse(RESET), {"account": "default", "model": MODEL})
    assert response.status_code == 403
    assert TokenBudget.objects.get().learned_limit == 1_500


@pytest.mark.parametrize(("role", "status"), [("viewer", 403), ("plain", 302)])
def test_a_reset_needs_the_change_permission(scene: dict[str, Any], role: str, status: int) -> None:
    response = admin_client(make_user(role)).post(
        reverse(RESET), {"account": "default", "model": MODEL}
    )
    assert response.status_code == status  # plain users go to the login page
    assert TokenBudget.objects.get().learned_limit == 1_500
    assert not QuotaEvent.objects.exists()


def test_a_reset_is_a_post(scene: dict[str, Any]) -> None:
    assert admin_client(make_user("changer")).get(reverse(RESET)).status_code == 405


def test_a_reset_of_an_unknown_budget_is_a_400(scene: dict[str, Any]) -> None:
    response = admin_client(make_user("changer")).post(
        reverse(RESET), {"account": "default", "model": "gpt-nothing"}
    )
    assert response.status_code == 400
    assert "gpt-nothing" in response.content.decode()
    assert not QuotaEvent.objects.exists()


def test_the_page_needs_the_view_permission() -> None:
    staff = User.objects.create_user("staff", password="pw", is_staff=True)
    assert admin_client(staff).get(reverse(PAGE)).status_code == 403
    assert not BatchJob.objects.exists()


# -- the real line, over the emulator -------------------------------------------------------


def test_the_panel_shows_the_line_the_services_made(settings: Any) -> None:
    """No hand-made rows: a budget that fits one job, two jobs submitted through the
    services against the emulator; the first is in flight, the second waits, and the
    API and the admin page show exactly that, then the line empty once the first ends."""
    from openai_batches.testing import running_emulator

    owner = User.objects.create_user("alice", password="pw")
    first_items, second_items = chat_items(20, prefix="a-"), chat_items(20, prefix="b-")
    need = services.create_job(items=first_items).estimated_tokens
    BatchJob.objects.all().delete()
    # Set before the emulator's own override: pytest-django restores what it saw first, and
    # inside the block that is the emulator's settings, which would outlive the test.
    settings.OPENAI_BATCHES = {
        **settings.OPENAI_BATCHES,
        "ENQUEUED_TOKEN_LIMITS": {MODEL: need + need // 2},  # one job fits, two do not
    }
    with running_emulator(timing="realistic", clock="manual") as emu:
        jobs = []
        for name, batch in (("first", first_items), ("second", second_items)):
            job = services.create_job(name=name, owner=owner, items=batch)
            services.request_submit(job)
            jobs.append(services.submit(job))
        assert [j.state for j in jobs] == [JobState.SUBMITTED, JobState.WAITING_QUOTA]

        data = api_get(make_user("viewer")).json()
        [row] = data["models"]
        assert (row["effective_limit"], row["reserved"], row["in_flight"]) == (
            need + need // 2,
            need,
            need,
        )
        assert (row["waiting_parts"], row["waiting_tokens"]) == (1, jobs[1].estimated_tokens)
        assert [w["job"] for w in data["waiting"]] == [str(jobs[1].uuid)]
        page = admin_client(make_user("superuser")).get(reverse(PAGE)).content.decode()
        assert "The line: 1 part waiting" in page and ">second<" in page

        emu.emulator.advance(7 * 3600)
        services.refresh(jobs[0])  # the first ends; the poll that sees it moves the line
        data = api_get(User.objects.get(username="viewer")).json()
        assert data["waiting"] == [] and data["waiting_total"] == 0
        assert data["models"][0]["in_flight"] == 0
