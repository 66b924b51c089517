"""The API's OpenAPI schema: it is served, it validates, and the API keeps its promises.

The property-based part runs schemathesis through its WSGI integration against this Django
project (no network, no server) as an authenticated user, with a bounded number of
examples per operation. Path parameters are sometimes swapped for the UUID and custom_ids
of real jobs so that the operations are exercised on rows that exist, not only on 404s.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.management import call_command
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from drf_spectacular.validation import validate_schema
from hypothesis import HealthCheck, settings
from rest_framework.test import APIClient
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import positive_data_acceptance

from openai_batches import services
from openai_batches.models import BatchJob

from .lifecycle_helpers import chat_items

PREFIX = "/api/batches/"
SCHEMA_URL = PREFIX + "schema/"
USER, PASSWORD = "fuzzer", "pw-fuzzer"
#: Examples per operation: enough to find shape errors, bounded so the suite stays quick.
#: ``API_FUZZ_EXAMPLES=500 API_FUZZ_RANDOM=1`` explores further (not run in CI).
MAX_EXAMPLES = int(os.environ.get("API_FUZZ_EXAMPLES", "25"))
DERANDOMIZE = not os.environ.get("API_FUZZ_RANDOM")


@pytest.fixture(autouse=True)
def _fresh_throttles() -> None:
    """Throttle counts live in Django's cache, which outlives a test's transaction."""
    from django.core.cache import cache

    cache.clear()


def served_schema(client: APIClient) -> dict[str, Any]:
    response = client.get(SCHEMA_URL, {"format": "json"})
    assert response.status_code == 200
    return json.loads(response.content)


@pytest.mark.django_db
def test_the_schema_is_served_and_valid() -> None:
    schema = served_schema(APIClient())
    validate_schema(schema)
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "openai_batches API"
    assert set(schema["paths"]) == {
        f"{PREFIX}jobs/",
        f"{PREFIX}jobs/{{uuid}}/",
        f"{PREFIX}jobs/{{uuid}}/submit/",
        f"{PREFIX}jobs/{{uuid}}/refresh/",
        f"{PREFIX}jobs/{{uuid}}/cancel/",
        f"{PREFIX}jobs/{{uuid}}/retry/",
        f"{PREFIX}jobs/{{uuid}}/results/",
        f"{PREFIX}jobs/{{uuid}}/export/",
        f"{PREFIX}jobs/{{uuid}}/estimate/",
        f"{PREFIX}jobs/{{job_uuid}}/items/",
        f"{PREFIX}jobs/{{job_uuid}}/items/{{custom_id}}/",
        f"{PREFIX}dashboard/",
        f"{PREFIX}quota/",
    }


@pytest.mark.django_db
def test_every_operation_documents_its_errors_in_the_one_shape() -> None:
    schema = served_schema(APIClient())
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            responses = operation["responses"]
            assert {"401", "403"} <= set(responses), (method, path)
            for code, response in responses.items():
                if code.startswith(("4", "5")):
                    (content,) = response["content"].values()
                    assert content["schema"] == {"$ref": "#/components/schemas/BatchError"}
    create = schema["paths"][f"{PREFIX}jobs/"]["post"]
    assert set(create["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    assert {"400", "413"} <= set(create["responses"])
    results = schema["paths"][f"{PREFIX}jobs/{{uuid}}/results/"]["get"]
    assert set(results["responses"]["200"]["content"]) == {"application/jsonl"}
    for action in ("submit", "refresh", "cancel", "retry"):
        assert "409" in schema["paths"][f"{PREFIX}jobs/{{uuid}}/{action}/"]["post"]["responses"]


@pytest.mark.django_db
def test_the_schema_states_the_delete_rule_the_code_applies(
    django_user_model: Any, django_capture_on_commit_callbacks: Any
) -> None:
    """Every state the services refuse to delete in, and only those, is named in the schema;
    and the API deletes exactly where ``services.can_delete`` allows."""
    from openai_batches.models import JobState

    owner = django_user_model.objects.create_user("deleter")
    client = APIClient()
    client.force_authenticate(owner)
    description = served_schema(client)["paths"][f"{PREFIX}jobs/{{uuid}}/"]["delete"]["description"]
    refused = set()
    for state in JobState.values:
        job = services.create_job(owner=owner, items=chat_items(1))
        BatchJob.objects.filter(pk=job.pk).update(state=state)
        job.refresh_from_db()
        allowed = services.can_delete(job)[0]
        response = client.delete(f"{PREFIX}jobs/{job.uuid}/")
        assert response.status_code == (204 if allowed else 409), state
        assert BatchJob.objects.filter(pk=job.pk).exists() is not allowed
        if not allowed:
            refused.add(state)
    named = {state for state in JobState.values if f"`{state}`" in description}
    assert refused and named == refused, (named, refused)
    assert "draft" in description.lower() and "finished" in description


def test_manage_py_spectacular_validates_without_warnings(tmp_path: Any) -> None:
    out = tmp_path / "schema.yaml"
    call_command(
        "spectacular", "--validate", "--fail-on-warn", "--file", str(out), stderr=StringIO()
    )
    assert "/api/batches/jobs/" in out.read_text()


# -- property-based: schemathesis -----------------------------------------------------------


#: Operations whose input is also checked against the job, other items and the settings.
STATEFUL_VALIDATION = {f"{PREFIX}jobs/", f"{PREFIX}jobs/{{job_uuid}}/items/"}

#: The fixture's real jobs, read by use_real_rows().
REAL: dict[str, list[str]] = {"uuids": [], "custom_ids": []}


@pytest.fixture
def fuzz_jobs(db: Any, django_user_model: Any) -> Iterator[None]:
    """The authenticated user and a few draft jobs of theirs for the fuzzer to act on."""
    # Like Django's test client: the bare WSGI handler would otherwise close the test's
    # connection (inside its transaction) at the start and end of every request.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    user = django_user_model.objects.create_user(USER, password=PASSWORD)
    jobs = [
        services.create_job(
            endpoint="/v1/chat/completions", name=f"fuzz {i}", owner=user, items=chat_items(3)
        )
        for i in range(3)
    ]
    REAL["uuids"] = [str(job.uuid) for job in jobs]
    REAL["custom_ids"] = ["req-0", "req-1", "req-2"]
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


# Loaded at collection (schemathesis' lazy ``from_fixture`` loader breaks on pytest 9); the
# schema view needs no database.
# schemathesis is told the credentials, so it sends them as the declared basicAuth scheme (not
# a stray header) and can probe that the API refuses the same request without them.
CONFIG = schemathesis.Config.from_dict(
    {"auth": {"basic": {"username": USER, "password": PASSWORD}}}
)
schema = schemathesis.openapi.from_wsgi(SCHEMA_URL + "?format=json", WSGIHandler(), config=CONFIG)


def use_real_rows(case: Any) -> None:
    """Point about half of the schema-valid cases at a real job (and item), so that more
    than 404s is checked. Negative path cases are left alone: they must stay invalid."""
    params = case.path_parameters
    if not params or (case.meta and case.meta.is_negative_at(ParameterLocation.PATH)):
        return
    generated = str(params.get("uuid") or params.get("job_uuid"))
    choice = zlib.crc32(generated.encode())  # deterministic for a given example
    if choice % 2:
        return
    for key in ("uuid", "job_uuid"):
        if key in params:
            params[key] = REAL["uuids"][choice % len(REAL["uuids"])]
    if "custom_id" in params:
        params["custom_id"] = REAL["custom_ids"][choice % len(REAL["custom_ids"])]


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=DERANDOMIZE,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_keeps_the_promises_of_its_schema(case: Any, fuzz_jobs: None) -> None:
    if case.media_type == "multipart/form-data" and (
        not isinstance(case.body, dict) or "" in case.body.values()
    ):
        # A form carries named parts only: a "non-object" form reaches the server as an
        # empty or garbled form, and werkzeug's encoder drops the delimiter of an empty part
        # so the server never sees it. Either way the server cannot tell that the case was
        # invalid; tests/test_api.py covers empty form fields with Django's own client.
        return
    use_real_rows(case)
    excluded = []
    if case.method == "POST" and case.path in STATEFUL_VALIDATION:
        # Schema-valid input may still break rules no JSON schema can state (one model per
        # job, unique custom_ids, the job's endpoint, the configured accounts); a 400 there
        # is the promised answer, so "valid data must be accepted" does not apply.
        excluded.append(positive_data_acceptance)
    case.call_and_validate(excluded_checks=excluded)
    # Nothing the fuzzer did may leave a job owned by someone else or half-created.
    assert not BatchJob.objects.filter(owner__isnull=True).exists()
