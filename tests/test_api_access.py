"""Who may do what through the API: owners, other users, staff, anonymous, configured classes.

Another user's job must be indistinguishable from a job that does not exist (404), for every
endpoint, and must be left exactly as it was.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.urls import reverse
from rest_framework.authentication import (
    BaseAuthentication,
    BasicAuthentication,
    SessionAuthentication,
)
from rest_framework.test import APIClient

from openai_batches import services
from openai_batches.models import BatchJob, JobState

from .lifecycle_helpers import chat_items
from .part_helpers import set_part

pytestmark = pytest.mark.django_db

NS = "openai_batches_api"


@pytest.fixture(autouse=True)
def _fresh_throttles() -> None:
    """Throttle counts live in Django's cache, which outlives a test's transaction."""
    from django.core.cache import cache

    cache.clear()


def url(name: str, **kwargs: Any) -> str:
    return reverse(f"{NS}:{name}", kwargs=kwargs)


@pytest.fixture
def alice(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("alice", password="pw-alice")


@pytest.fixture
def bob(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("bob", password="pw-bob")


@pytest.fixture
def staff(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("root", password="pw-root", is_staff=True)


def client_for(user: Any | None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


def job_of(owner: Any, n: int = 2, name: str = "job") -> BatchJob:
    return services.create_job(
        endpoint="/v1/chat/completions", name=name, owner=owner, items=chat_items(n)
    )


def every_job_request(job: BatchJob) -> list[tuple[str, str, dict[str, Any] | None]]:
    """(method, path, json body) of every endpoint that addresses one job."""
    key = str(job.uuid)
    return [
        ("get", url("job-detail", uuid=key), None),
        ("delete", url("job-detail", uuid=key), None),
        ("post", url("job-submit", uuid=key), None),
        ("post", url("job-refresh", uuid=key), None),
        ("post", url("job-cancel", uuid=key), None),
        ("post", url("job-retry", uuid=key), {"which": "failed"}),
        ("get", url("job-results", uuid=key), None),
        ("get", url("job-item-list", job_uuid=key), None),
        ("post", url("job-item-list", job_uuid=key), {"items": chat_items(1, prefix="x-")}),
        ("get", url("job-item-detail", job_uuid=key, custom_id="req-0"), None),
    ]


def call(client: APIClient, method: str, path: str, body: dict[str, Any] | None) -> Any:
    return (
        getattr(client, method)(path, body, format="json")
        if body
        else getattr(client, method)(path)
    )


def test_a_user_lists_only_their_own_jobs(alice: Any, bob: Any) -> None:
    mine = job_of(alice, name="mine")
    job_of(bob, name="theirs")
    body = client_for(alice).get(url("job-list")).json()
    assert [j["uuid"] for j in body["results"]] == [str(mine.uuid)]
    # Filtering by another owner reveals nothing either.
    body = client_for(alice).get(url("job-list"), {"owner": bob.pk}).json()
    assert body["count"] == 0


def test_another_users_job_is_404_everywhere_and_untouched(alice: Any, bob: Any) -> None:
    theirs = job_of(bob)
    before = BatchJob.objects.filter(pk=theirs.pk).values().get()
    client = client_for(alice)
    for method, path, body in every_job_request(theirs):
        response = call(client, method, path, body)
        assert response.status_code == 404, (method, path, response.status_code)
        assert response.json()["error"]["type"] == "not_found"
    assert BatchJob.objects.filter(pk=theirs.pk).values().get() == before
    assert theirs.items.count() == 2


def staff_with(username: str, *codenames: str) -> Any:
    from django.contrib.auth.models import Permission, User

    user = User.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return User.objects.get(pk=user.pk)  # a fresh instance: no cached permissions


def test_staff_with_permissions_see_and_act_on_every_job(alice: Any, bob: Any) -> None:
    a, b = job_of(alice, name="a"), job_of(bob, name="b")
    client = client_for(staff_with("operator", "view_batchjob", "change_batchjob"))
    body = client.get(url("job-list")).json()
    assert {j["uuid"] for j in body["results"]} == {str(a.uuid), str(b.uuid)}
    assert client.get(url("job-list"), {"owner": bob.pk}).json()["count"] == 1
    assert client.get(url("job-results", uuid=str(b.uuid))).status_code == 200
    assert client.post(url("job-submit", uuid=str(b.uuid))).status_code == 202
    assert client.post(url("job-cancel", uuid=str(b.uuid))).status_code == 200
    b.refresh_from_db()
    assert b.state == JobState.CANCELLED and b.owner == bob
    # Deleting another user's job is the delete permission's, not change's.
    response = client.delete(url("job-detail", uuid=str(b.uuid)))
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "permission_denied"
    assert "openai_batches.delete_batchjob" in response.json()["error"]["message"]
    assert BatchJob.objects.filter(pk=b.pk).exists()
    deleter = client_for(staff_with("deleter", "view_batchjob", "delete_batchjob"))
    assert deleter.delete(url("job-detail", uuid=str(b.uuid))).status_code == 204
    assert not BatchJob.objects.filter(pk=b.pk).exists()


def test_view_only_staff_can_read_every_job_but_change_none(alice: Any) -> None:
    job = job_of(alice)
    before = BatchJob.objects.filter(pk=job.pk).values().get()
    viewer = client_for(staff_with("viewer", "view_batchjob"))
    key = str(job.uuid)
    assert viewer.get(url("job-list")).json()["count"] == 1
    assert viewer.get(url("job-detail", uuid=key)).status_code == 200
    assert viewer.get(url("job-results", uuid=key)).status_code == 200
    assert viewer.get(url("job-item-list", job_uuid=key)).status_code == 200
    assert viewer.get(url("job-item-detail", job_uuid=key, custom_id="req-0")).status_code == 200
    for method, path, body in every_job_request(job):
        if method == "get":
            continue
        response = call(viewer, method, path, body)
        assert response.status_code == 403, (method, path, response.status_code)
        assert response.json()["error"]["type"] == "permission_denied"
    assert BatchJob.objects.filter(pk=job.pk).values().get() == before
    assert job.items.count() == 2


def test_staff_without_model_permissions_are_like_any_other_user(alice: Any) -> None:
    job = job_of(alice)
    staff = client_for(staff_with("bare"))
    assert staff.get(url("job-list")).json()["count"] == 0
    for method, path, body in every_job_request(job):
        response = call(staff, method, path, body)
        assert response.status_code == 404, (method, path, response.status_code)
    assert BatchJob.objects.get(pk=job.pk).state == JobState.DRAFT
    # Their own jobs stay theirs.
    mine = client_for(staff_with("bare2"))
    created = mine.post(url("job-list"), {"items": chat_items(1)}, format="json")
    assert created.status_code == 201
    assert mine.post(url("job-submit", uuid=created.json()["uuid"])).status_code == 202


def test_the_permission_rule_holds_whatever_classes_are_configured(
    alice: Any, settings: Any
) -> None:
    settings.OPENAI_BATCHES = {
        **settings.OPENAI_BATCHES,
        "API_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
    }
    job = job_of(alice)
    viewer = client_for(staff_with("viewer", "view_batchjob"))
    assert viewer.get(url("job-detail", uuid=str(job.uuid))).status_code == 200
    assert viewer.post(url("job-submit", uuid=str(job.uuid))).status_code == 403
    assert BatchJob.objects.get(pk=job.pk).state == JobState.DRAFT


def test_the_owner_can_do_what_the_other_user_cannot(alice: Any) -> None:
    job = job_of(alice)
    client = client_for(alice)
    assert client.get(url("job-detail", uuid=str(job.uuid))).status_code == 200
    assert client.get(url("job-results", uuid=str(job.uuid))).status_code == 200
    assert client.post(url("job-submit", uuid=str(job.uuid))).status_code == 202
    assert client.post(url("job-cancel", uuid=str(job.uuid))).status_code == 200


def test_anonymous_is_refused_everywhere(alice: Any) -> None:
    job = job_of(alice)
    client = client_for(None)
    requests = [
        ("get", url("job-list"), None),
        ("post", url("job-list"), {"items": chat_items(1)}),
        *every_job_request(job),
    ]
    for method, path, body in requests:
        response = call(client, method, path, body)
        # DRF's defaults are [SessionAuthentication, BasicAuthentication]: the session has
        # no challenge to offer, Basic has, so a client is told how to authenticate.
        assert response.status_code == 401, (method, path, response.status_code)
        assert response["WWW-Authenticate"] == 'Basic realm="api"'
        assert response.json()["error"]["type"] == "not_authenticated"
    assert BatchJob.objects.count() == 1


class BearerToken(BaseAuthentication):
    """A token scheme like DRF's TokenAuthentication (which needs its own app and table)."""

    def authenticate(self, request: Any) -> Any:
        return None

    def authenticate_header(self, request: Any) -> str:
        return "Bearer"


@pytest.mark.parametrize(
    ("classes", "status", "challenge"),
    [
        ([BasicAuthentication], 401, "Basic"),
        ([SessionAuthentication, BasicAuthentication], 401, "Basic"),
        ([SessionAuthentication, BearerToken, BasicAuthentication], 401, "Bearer"),
        ([BearerToken], 401, "Bearer"),
        # A session has no challenge scheme: HTTP forbids a 401 without one.
        ([SessionAuthentication], 403, None),
    ],
    ids=["basic", "session+basic", "session+token+basic", "token", "session"],
)
def test_anonymous_gets_401_with_the_first_challenge_on_offer(
    monkeypatch: pytest.MonkeyPatch, classes: list[Any], status: int, challenge: str | None
) -> None:
    from openai_batches.api.views import BatchJobViewSet

    monkeypatch.setattr(BatchJobViewSet, "authentication_classes", classes)
    response = client_for(None).get(url("job-list"))
    assert response.status_code == status
    assert response.get("WWW-Authenticate", "").split(" ")[0] == (challenge or "")
    assert response.json()["error"]["type"] == "not_authenticated"


def test_basic_auth_credentials_work(alice: Any) -> None:
    job_of(alice)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Basic " + _b64("alice:pw-alice"))
    assert client.get(url("job-list")).json()["count"] == 1


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


def test_permission_classes_come_from_settings(alice: Any, staff: Any, settings: Any) -> None:
    settings.OPENAI_BATCHES = {
        **settings.OPENAI_BATCHES,
        "API_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
    }
    response = client_for(alice).get(url("job-list"))
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "permission_denied"
    assert client_for(staff).get(url("job-list")).status_code == 200


def test_a_permissive_setting_still_shows_nobody_elses_jobs(alice: Any, settings: Any) -> None:
    settings.OPENAI_BATCHES = {
        **settings.OPENAI_BATCHES,
        "API_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    }
    job = job_of(alice)
    anonymous = client_for(None)
    assert anonymous.get(url("job-list")).json()["count"] == 0
    assert anonymous.get(url("job-detail", uuid=str(job.uuid))).status_code == 404


def test_a_bad_permission_path_names_the_setting(alice: Any, settings: Any) -> None:
    from openai_batches.api.permissions import permission_classes

    settings.OPENAI_BATCHES = {
        **settings.OPENAI_BATCHES,
        "API_PERMISSION_CLASSES": ["nowhere.Nothing"],
    }
    with pytest.raises(ImproperlyConfigured, match=r"API_PERMISSION_CLASSES.*nowhere\.Nothing"):
        permission_classes()
    settings.OPENAI_BATCHES = {
        **settings.OPENAI_BATCHES,
        "API_PERMISSION_CLASSES": "rest_framework.permissions.AllowAny",
    }
    with pytest.raises(ImproperlyConfigured, match="must be a list"):
        permission_classes()


def test_missing_drf_names_the_api_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(sys.modules):
        if name == "openai_batches.api" or name.startswith("openai_batches.api."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "rest_framework", None)  # makes `import` fail
    with pytest.raises(ImproperlyConfigured, match=r"django-openai-batches\[api\]"):
        importlib.import_module("openai_batches.api")


def test_no_key_appears_in_any_api_answer_or_log(
    django_user_model: Any,
    settings: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every endpoint, success and failure (provider 502, unusable account 503), as a
    superuser: neither the answers nor anything logged carries an API key."""
    import logging

    from openai_batches.models import BatchStatus
    from openai_batches.testing import running_emulator

    caplog.set_level(logging.DEBUG)
    root = django_user_model.objects.create_superuser("root2", password="pw")
    client = client_for(root)
    keys = ["sk-emulator-test", "sk-test-key-never-logged", "sk-kept-key"]
    texts: list[str] = []

    def hit(job: BatchJob) -> None:
        for method, path, body in [*every_job_request(job), ("get", url("job-list"), None)]:
            if method == "delete":
                continue
            response = call(client, method, path, body)
            content = (
                b"".join(response.streaming_content) if response.streaming else response.content
            )
            texts.append(content.decode("utf-8", "replace"))

    # Settings first: running_emulator overrides on top of them and restores them after.
    settings.OPENAI_BATCHES = {
        **settings.OPENAI_BATCHES,
        "MAX_RETRIES": 0,
        "ACCOUNTS": {"kept": {"API_KEY": "sk-kept-key", "BASE_URL": "http://127.0.0.1:9/v1"}},
    }
    with running_emulator() as emulator:
        emulator.fail_request("req-1", status_code=400)
        done = job_of(root)
        services.request_submit(done)
        services.submit(done)
        services.refresh(done)
        hit(done)
        running = job_of(root, name="running")
        services.request_submit(running)
        services.submit(running)
        emulator.inject_fault("*", "/v1/batches*", "status", status=500, count=100)
        hit(running)
        assert any('"provider_error"' in t for t in texts)
    orphan = job_of(root, name="orphan")
    set_part(
        orphan,
        account="gone",  # renamed away from the settings
        state=JobState.SUBMITTED,
        provider_batch_id="batch_gone",
        provider_status=BatchStatus.IN_PROGRESS,
    )
    hit(orphan)
    assert any('"configuration_error"' in t for t in texts)
    logged = "\n".join(r.getMessage() + str(r.exc_info or "") for r in caplog.records)
    for key in keys:
        assert all(key not in t for t in texts), key
        assert key not in logged, key
