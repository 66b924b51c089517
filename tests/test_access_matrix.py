"""The access matrix: every role against every API endpoint and every admin view and action.

Roles: the job's **owner** (a plain user), **another** plain user, **view**-only staff
(``view_batchjob``/``view_requestitem``), **change** staff (view + ``change_batchjob``, no add
or delete), a **superuser**, and an **anonymous** client. Each cell is the status code the
role gets and whether the request may change anything. A refused request (every cell whose
``changes`` is False) must leave the database exactly as it was: every job row, every item
row, the number of jobs; an allowed mutating request must really have acted.

The rules the table encodes (see ``openai_batches/api/permissions.py`` and the admin):

* API: an owner may do everything with their own job; another user's job needs the model
  permission of the action (view to read; change to submit/cancel/refresh/retry/add items; delete
  to delete); a job one may not view is a 404; anyone authenticated may create their own job;
  anonymous is a 401 with a Basic challenge (DRF's default authenticators).
* Admin: Django's model permissions only (ownership means nothing there); non-staff and
  anonymous users are sent to the login page (302).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser, Permission, User
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from openai_batches import services
from openai_batches.models import BatchJob, ItemState, JobState, ProviderBatch, RequestItem
from openai_batches.testing import openai_emulator  # noqa: F401

from .lifecycle_helpers import chat_items

pytestmark = pytest.mark.django_db

ROLES = ("owner", "other", "viewer", "changer", "superuser", "anonymous")


@pytest.fixture(autouse=True)
def _fresh_throttles() -> None:
    """Throttle counts live in Django's cache, which outlives a test's transaction."""
    from django.core.cache import cache

    cache.clear()


def make_user(role: str) -> Any:
    if role == "anonymous":
        return AnonymousUser()
    if role == "superuser":
        return User.objects.create_superuser("root", password="pw")
    staff = role in ("viewer", "changer")
    user = User.objects.create_user(role, password="pw", is_staff=staff)
    codenames = {
        "viewer": ["view_batchjob", "view_requestitem"],
        "changer": ["view_batchjob", "change_batchjob", "view_requestitem"],
    }.get(role, [])
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return User.objects.get(pk=user.pk)


def build_job(kind: str, owner: Any, request: pytest.FixtureRequest) -> BatchJob:
    """A job of ``owner``: a ``draft``, ``finished`` (the state only), ``running`` at the
    provider, ``done`` (ingested, with an output and an error file: one request the model
    refused, which an operator may retry) or ``expired`` (ingested, one request never ran
    and was not retried by itself). Only the last three start an emulator."""
    job = services.create_job(name=f"{kind}-job", owner=owner, items=chat_items(2))
    if kind == "draft":
        return job
    if kind == "finished":  # its state only: what deleting cares about, without a provider
        BatchJob.objects.filter(pk=job.pk).update(state=JobState.FINISHED)
        job.refresh_from_db()
        return job
    emulator = request.getfixturevalue("openai_emulator")
    if kind == "done":
        emulator.fail_request("req-1", status_code=400)
    elif kind == "expired":
        settings = request.getfixturevalue("settings")
        # Past the retry deadline at once: the expired request waits for an operator.
        settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "RETRY": {"DEADLINE": 0}}
        emulator.stall_request("req-0", times=1)
    else:
        emulator.stall_request("req-0")  # keeps the batch in progress: cancellable
    services.request_submit(job)
    job = services.submit(job)
    assert job.state == JobState.SUBMITTED, job.last_error
    if kind == "done":
        job = services.refresh(job)
        assert job.state == JobState.FINISHED and job.error_file_id and job.output_file_id
    if kind == "expired":
        emulator.advance(86_400 + 60)
        job = services.refresh(job)
        assert job.state == JobState.FINISHED
        assert job.items.filter(state=ItemState.EXPIRED).count() == 1
    return job


def snapshot() -> tuple[Any, ...]:
    """Everything a request could change: every job, provider batch and item row."""
    jobs = list(BatchJob.objects.order_by("pk").values())
    batches = list(ProviderBatch.objects.order_by("pk").values())
    items = list(RequestItem.objects.order_by("pk").values())
    return (jobs, batches, items)


# --------------------------------------------------------------------------------------------
# The API
# --------------------------------------------------------------------------------------------

NS = "openai_batches_api"


def api_url(name: str, **kwargs: Any) -> str:
    return reverse(f"{NS}:{name}", kwargs=kwargs)


@dataclass(frozen=True)
class Endpoint:
    method: str
    kind: str  # which job it addresses: see build_job
    path: Callable[[BatchJob], str]
    body: dict[str, Any] | None = None
    mutates: bool = False


ENDPOINTS: dict[str, Endpoint] = {
    "list": Endpoint("get", "draft", lambda j: api_url("job-list")),
    "detail": Endpoint("get", "draft", lambda j: api_url("job-detail", uuid=str(j.uuid))),
    "create": Endpoint(
        "post", "draft", lambda j: api_url("job-list"), {"items": chat_items(1)}, True
    ),
    "items": Endpoint("get", "draft", lambda j: api_url("job-item-list", job_uuid=str(j.uuid))),
    "item": Endpoint(
        "get",
        "draft",
        lambda j: api_url("job-item-detail", job_uuid=str(j.uuid), custom_id="req-0"),
    ),
    "add items": Endpoint(
        "post",
        "draft",
        lambda j: api_url("job-item-list", job_uuid=str(j.uuid)),
        {"items": chat_items(1, prefix="more-")},
        True,
    ),
    "results": Endpoint("get", "draft", lambda j: api_url("job-results", uuid=str(j.uuid))),
    "export": Endpoint("get", "done", lambda j: api_url("job-export", uuid=str(j.uuid))),
    "estimate": Endpoint("get", "draft", lambda j: api_url("job-estimate", uuid=str(j.uuid))),
    "submit": Endpoint(
        "post", "draft", lambda j: api_url("job-submit", uuid=str(j.uuid)), None, True
    ),
    "cancel": Endpoint(
        "post", "running", lambda j: api_url("job-cancel", uuid=str(j.uuid)), None, True
    ),
    "refresh": Endpoint(
        "post", "running", lambda j: api_url("job-refresh", uuid=str(j.uuid)), None, True
    ),
    "retry": Endpoint(
        "post", "done", lambda j: api_url("job-retry", uuid=str(j.uuid)), {"which": "failed"}, True
    ),
    "delete": Endpoint(
        "delete", "finished", lambda j: api_url("job-detail", uuid=str(j.uuid)), None, True
    ),
    "schema": Endpoint("get", "draft", lambda j: api_url("schema")),
    "dashboard": Endpoint("get", "draft", lambda j: api_url("dashboard")),
    "quota": Endpoint("get", "draft", lambda j: api_url("quota")),
}

#: Status per endpoint, in ROLES order: owner, other, viewer, changer, superuser, anonymous.
API_MATRIX: dict[str, tuple[int, ...]] = {
    "list": (200, 200, 200, 200, 200, 401),
    "detail": (200, 404, 200, 200, 200, 401),
    "create": (201, 201, 201, 201, 201, 401),
    "items": (200, 404, 200, 200, 200, 401),
    "item": (200, 404, 200, 200, 200, 401),
    "add items": (201, 404, 403, 201, 201, 401),
    "results": (200, 404, 200, 200, 200, 401),
    "export": (200, 404, 200, 200, 200, 401),
    "estimate": (200, 404, 200, 200, 200, 401),
    "submit": (202, 404, 403, 202, 202, 401),
    "cancel": (200, 404, 403, 200, 200, 401),
    "refresh": (200, 404, 403, 200, 200, 401),
    "retry": (202, 404, 403, 202, 202, 401),
    "delete": (204, 404, 403, 403, 204, 401),
    # The schema describes the API, not anyone's data: public, like the code.
    "schema": (200, 200, 200, 200, 200, 200),
    # Figures over the jobs the user may see (their own without view_batchjob).
    "dashboard": (200, 200, 200, 200, 200, 401),
    # Budgets and the line of every owner's jobs: the permission that shows every job.
    "quota": (403, 403, 200, 200, 200, 401),
}

#: How many jobs each role sees in the list (the owner's one job, or none).
LIST_COUNTS = {"owner": 1, "other": 0, "viewer": 1, "changer": 1, "superuser": 1}

API_CASES = [
    pytest.param(name, role, expected, id=f"{name}-{role}")
    for name, codes in API_MATRIX.items()
    for role, expected in zip(ROLES, codes, strict=True)
]


def test_the_api_matrix_covers_every_route() -> None:
    from openai_batches.api import urls

    names = {p.name for p in urls.urlpatterns if getattr(p, "name", None)}
    covered = {
        "job-list",
        "job-detail",
        "job-item-list",
        "job-item-detail",
        "job-results",
        "job-export",
        "job-estimate",
        "job-submit",
        "job-cancel",
        "job-refresh",
        "job-retry",
        "schema",
        "dashboard",
        "quota",
    }
    assert names == covered, names ^ covered


@pytest.mark.parametrize(("name", "role", "expected"), API_CASES)
def test_api_access(
    name: str,
    role: str,
    expected: int,
    request: pytest.FixtureRequest,
) -> None:
    endpoint = ENDPOINTS[name]
    owner = make_user("owner") if role != "owner" else None
    user = make_user(role)
    job = build_job(endpoint.kind, owner or user, request)
    client = APIClient()
    if user.is_authenticated:
        client.force_authenticate(user)
    before = snapshot()
    path = endpoint.path(job)
    if endpoint.body is not None:
        response = getattr(client, endpoint.method)(path, endpoint.body, format="json")
    else:
        response = getattr(client, endpoint.method)(path)
    assert response.status_code == expected, (name, role, response.status_code)
    if expected >= 400:
        assert snapshot() == before, "a refused request changed something"
        body = response.json()["error"]
        assert body["type"] in ("not_authenticated", "not_found", "permission_denied")
        if expected == 401:
            assert response["WWW-Authenticate"].startswith("Basic")
        return
    if name == "list":
        assert response.json()["count"] == LIST_COUNTS[role]
    if endpoint.mutates:
        assert snapshot() != before, "an allowed request did nothing"
        assert not BatchJob.objects.exclude(last_error="").exists()  # acted, not failed
    else:
        assert snapshot() == before, "a read changed something"


# --------------------------------------------------------------------------------------------
# The admin
# --------------------------------------------------------------------------------------------

CHANGELIST = "admin:openai_batches_batchjob_changelist"


def changelist_action(action: str) -> Callable[[Client, BatchJob], Any]:
    def run(client: Client, job: BatchJob) -> Any:
        return client.post(
            reverse(CHANGELIST), {"action": action, "_selected_action": [job.pk], "index": 0}
        )

    return run


def button(action: str) -> Callable[[Client, BatchJob], Any]:
    def run(client: Client, job: BatchJob) -> Any:
        return client.post(
            reverse("admin:openai_batches_batchjob_object_action", args=[job.pk, action])
        )

    return run


def get(name: str, with_job: bool = True) -> Callable[[Client, BatchJob], Any]:
    def run(client: Client, job: BatchJob) -> Any:
        return client.get(reverse(name, args=[job.pk] if with_job else []))

    return run


def item_page(client: Client, job: BatchJob) -> Any:
    item = job.items.order_by("pk").first()
    assert item is not None
    return client.get(reverse("admin:openai_batches_requestitem_change", args=[item.pk]))


def rename(client: Client, job: BatchJob) -> Any:
    return client.post(
        reverse("admin:openai_batches_batchjob_change", args=[job.pk]), {"name": "renamed"}
    )


def create(client: Client, job: BatchJob) -> Any:
    line = {"custom_id": "a", "body": {"model": "gpt-4o-mini"}}
    return client.post(
        reverse("admin:openai_batches_batchjob_add"),
        {"endpoint": "/v1/chat/completions", "account": "default", "jsonl_text": json.dumps(line)},
    )


def delete(client: Client, job: BatchJob) -> Any:
    return client.post(
        reverse("admin:openai_batches_batchjob_delete", args=[job.pk]), {"post": "yes"}
    )


def live(client: Client, job: BatchJob) -> Any:
    return client.get(
        reverse("admin:openai_batches_batchjob_live"), {"ids": str(job.pk), "page": "1"}
    )


#: name -> (job kind, request)
ADMIN_TARGETS: dict[str, tuple[str, Callable[[Client, BatchJob], Any]]] = {
    "changelist": ("draft", get(CHANGELIST, with_job=False)),
    "change page": ("draft", get("admin:openai_batches_batchjob_change")),
    "history": ("draft", get("admin:openai_batches_batchjob_history")),
    "rename": ("draft", rename),
    "add page": ("draft", get("admin:openai_batches_batchjob_add", with_job=False)),
    "create": ("draft", create),
    "delete page": ("draft", get("admin:openai_batches_batchjob_delete")),
    "delete": ("finished", delete),
    "item list": ("draft", get("admin:openai_batches_requestitem_changelist", with_job=False)),
    "item page": ("draft", item_page),
    "live updates": ("running", live),
    "dashboard": ("done", get("admin:openai_batches_batchjob_dashboard", with_job=False)),
    "quota": ("draft", get("admin:openai_batches_batchjob_quota", with_job=False)),
    **{
        f"{action} ({how})": (kind, runner(action))
        for how, runner in (("action", changelist_action), ("button", button))
        for action, kind in (
            ("submit_jobs", "draft"),
            ("refresh_jobs", "running"),
            ("cancel_jobs", "running"),
            ("retry_failed", "done"),
            ("retry_expired", "expired"),
            ("download_input", "draft"),
            ("download_output", "done"),
            ("download_errors", "done"),
            ("export_results_csv", "done"),
            ("export_results_jsonl", "done"),
        )
    },
}

# Outcomes: an int is a status code with nothing changed; ("changed", code) is a status code
# with the database changed; ("download", 200) is a streamed attachment.
LOGIN = 302  # the admin sends non-staff and anonymous users to its login page
D = ("download", 200)


def C(code: int) -> tuple[str, int]:
    return ("changed", code)


# Columns, in ROLES order: owner, other, viewer, changer, superuser, anonymous. The owner and
# the other user are not staff: the admin does not know about ownership at all.
ADMIN_MATRIX: dict[str, tuple[Any, ...]] = {
    "changelist": (LOGIN, LOGIN, 200, 200, 200, LOGIN),
    "change page": (LOGIN, LOGIN, 200, 200, 200, LOGIN),
    "history": (LOGIN, LOGIN, 200, 200, 200, LOGIN),
    "rename": (LOGIN, LOGIN, 403, C(302), C(302), LOGIN),
    "add page": (LOGIN, LOGIN, 403, 403, 200, LOGIN),
    "create": (LOGIN, LOGIN, 403, 403, C(302), LOGIN),
    "delete page": (LOGIN, LOGIN, 403, 403, 200, LOGIN),
    "delete": (LOGIN, LOGIN, 403, 403, C(302), LOGIN),
    "item list": (LOGIN, LOGIN, 200, 200, 200, LOGIN),
    "item page": (LOGIN, LOGIN, 200, 200, 200, LOGIN),
    # Read-only pages of their own: the job view permission, like the job list.
    "live updates": (LOGIN, LOGIN, 200, 200, 200, LOGIN),
    "dashboard": (LOGIN, LOGIN, 200, 200, 200, LOGIN),
    "quota": (LOGIN, LOGIN, 200, 200, 200, LOGIN),
    # A view-only user has no actions: Django ignores the posted one and shows the list.
    **{
        f"{action} (action)": (LOGIN, LOGIN, 200, outcome, outcome, LOGIN)
        for action, outcome in (
            ("submit_jobs", C(302)),
            ("refresh_jobs", C(302)),
            ("cancel_jobs", C(302)),
            ("retry_failed", C(302)),
            ("retry_expired", C(302)),
            ("download_input", D),
            ("download_output", D),
            ("download_errors", D),
            ("export_results_csv", D),
            ("export_results_jsonl", D),
        )
    },
    # The job page's buttons: the same actions, refused outright without the permission.
    **{
        f"{action} (button)": (LOGIN, LOGIN, 403, outcome, outcome, LOGIN)
        for action, outcome in (
            ("submit_jobs", C(302)),
            ("refresh_jobs", C(302)),
            ("cancel_jobs", C(302)),
            ("retry_failed", C(302)),
            ("retry_expired", C(302)),
            ("download_input", D),
            ("download_output", D),
            ("download_errors", D),
            ("export_results_csv", D),
            ("export_results_jsonl", D),
        )
    },
}

ADMIN_CASES = [
    pytest.param(name, role, expected, id=f"{name}-{role}")
    for name, outcomes in ADMIN_MATRIX.items()
    for role, expected in zip(ROLES, outcomes, strict=True)
]


def test_the_admin_matrix_covers_every_action() -> None:
    from django.contrib import admin

    model_admin = admin.site._registry[BatchJob]
    declared = set(model_admin.actions or ())
    tested = {name.split(" ")[0] for name in ADMIN_MATRIX if name.endswith("(action)")}
    assert declared == tested, declared ^ tested
    assert set(ADMIN_MATRIX) == set(ADMIN_TARGETS)


@pytest.mark.parametrize(("name", "role", "expected"), ADMIN_CASES)
def test_admin_access(
    name: str,
    role: str,
    expected: Any,
    request: pytest.FixtureRequest,
) -> None:
    kind, run = ADMIN_TARGETS[name]
    owner = make_user("owner") if role != "owner" else None
    user = make_user(role)
    job = build_job(kind, owner or user, request)
    client = Client()
    if user.is_authenticated:
        client.force_login(user)
    before = snapshot()
    response = run(client, job)
    outcome, code = expected if isinstance(expected, tuple) else ("same", expected)
    assert response.status_code == code, (name, role, response.status_code)
    if code == LOGIN and outcome == "same":
        assert "/login/" in response["Location"]
    if outcome == "download":
        assert response.streaming and "attachment" in response["Content-Disposition"]
        b"".join(response.streaming_content)
        assert snapshot() == before
    elif outcome == "changed":
        assert snapshot() != before, "an allowed request did nothing"
        job_row = BatchJob.objects.filter(pk=job.pk).values("last_error").first()
        assert not (job_row and job_row["last_error"]), job_row  # acted, not failed
    else:
        assert snapshot() == before, "a refused request changed something"
        if code == 200 and name.endswith("(action)"):
            assert not getattr(response, "streaming", False)
