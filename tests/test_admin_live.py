"""Live updates of the job list and job page, and the laptop-sized list.

The live view returns, for the jobs a page shows, the same HTML the page renders for the
cells and fields that change while a job moves; ``live.js`` swaps them in and stops polling
when nothing moves. The lifecycle test drives a real batch through the emulator.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from openai_batches import services
from openai_batches.models import (
    BatchJob,
    BatchStatus,
    ItemState,
    JobState,
    ProviderBatch,
    RequestItem,
)
from openai_batches.testing import openai_emulator  # noqa: F401
from tests.part_helpers import set_part

pytestmark = pytest.mark.django_db

LIVE = "admin:openai_batches_batchjob_live"
CHANGELIST = "admin:openai_batches_batchjob_changelist"


def make_job(n: int = 2, name: str = "job") -> BatchJob:
    return services.create_job(
        endpoint="/v1/chat/completions",
        name=name,
        items=[
            {
                "custom_id": f"{name}-{i}",
                "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
            }
            for i in range(n)
        ],
    )


def running(name: str = "run", done: int = 1) -> BatchJob:
    job = make_job(3, name)
    set_part(
        job,
        state=JobState.SUBMITTED,
        provider_status=BatchStatus.IN_PROGRESS,
        provider_batch_id=f"batch_{name}",
        request_count_total=3,
        request_count_completed=done,
    )
    return job


def live(client: Client, *jobs: BatchJob, page: bool = False) -> Any:
    params = {"ids": ",".join(str(j.pk) for j in jobs)}
    if page:
        params["page"] = "1"
    return client.get(reverse(LIVE), params)


def snapshot() -> Any:
    return (
        list(BatchJob.objects.order_by("pk").values()),
        list(ProviderBatch.objects.order_by("pk").values()),
        list(RequestItem.objects.order_by("pk").values()),
    )


def test_list_fragments_are_what_the_list_renders(admin_client: Client) -> None:
    job, draft = running("a"), make_job(1, "b")
    response = live(admin_client, job, draft)
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    data = response.json()
    assert data["moving"] is True and data["interval"] == 3
    assert data["jobs"][str(job.pk)]["moving"] is True
    assert data["jobs"][str(draft.pk)]["moving"] is False
    fields = data["jobs"][str(job.pk)]["fields"]
    assert set(fields) == {"status_badge", "progress", "when", "tokens", "cost_usd"}
    assert 'data-completed="1" data-failed="0" data-total="3"' in fields["progress"]
    assert 'data-provider-status="in_progress"' in fields["status_badge"]
    listing = admin_client.get(reverse(CHANGELIST)).content.decode()
    for name, html in fields.items():
        assert f'<td class="field-{name}">{html}</td>' in listing, name
    # The page tells the script where to poll and which rows move.
    assert f'data-url="{reverse(LIVE)}" data-mode="list"' in listing
    assert f'data-ob-job="{job.pk}" data-ob-moving="1"' in listing
    assert f'data-ob-job="{draft.pk}" data-ob-moving="0"' in listing
    assert "openai_batches/live.js" in listing


def test_a_moving_job_is_seen_to_move_and_then_to_stop(admin_client: Client) -> None:
    job = running("a", done=1)
    first = live(admin_client, job).json()["jobs"][str(job.pk)]
    set_part(
        job,
        request_count_completed=3,
        provider_status=BatchStatus.COMPLETED,
        state=JobState.FINISHED,
        ingested_at=timezone.now(),
        completed_at=timezone.now(),
        succeeded_count=3,  # what the ingest keeps on the job and the part
    )
    RequestItem.objects.filter(job=job).update(state=ItemState.SUCCEEDED)
    data = live(admin_client, job).json()
    after = data["jobs"][str(job.pk)]
    assert first["fields"]["progress"] != after["fields"]["progress"]
    assert 'data-completed="3" data-failed="0" data-total="3"' in after["fields"]["progress"]
    assert 'data-state="finished"' in after["fields"]["status_badge"]
    assert after["fields"]["when"].count("<time") == 2  # created, and now finished too
    assert after["moving"] is False and data["moving"] is False  # the script stops here


def test_page_fragments_are_the_page_fields_and_buttons(admin_client: Client) -> None:
    job = running("p")
    data = live(admin_client, job, page=True).json()
    entry = data["jobs"][str(job.pk)]
    page = admin_client.get(reverse("admin:openai_batches_batchjob_change", args=[job.pk]))
    html = page.content.decode()
    for name in (
        "status_badge",
        "progress",
        "timeline",
        "usage_table",
        "items_link",
        "batches_table",
    ):
        assert entry["fields"][name] in html, name
    assert 'data-action="refresh_jobs"' in entry["buttons"]
    assert 'data-action="cancel_jobs"' in entry["buttons"]
    assert 'name="csrfmiddlewaretoken"' in entry["buttons"]
    assert 'data-mode="page"' in html and f'data-job="{job.pk}" data-moving="1"' in html


def test_the_live_view_runs_constant_queries_and_never_writes(admin_client: Client) -> None:
    one = [running("q0")]
    many = one + [running(f"q{i}") for i in range(1, 30)]

    def count(jobs: list[BatchJob]) -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert live(admin_client, *jobs).status_code == 200
        return len(ctx.captured_queries)

    before = snapshot()
    assert count(one) == count(many)
    assert snapshot() == before


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ("", "ids: give the job ids"),
        ("1,x", "ids: 'x' is not a job id"),
        (",".join(["1"] * 201), "at most 200 jobs per request"),
    ],
)
def test_bad_ids_are_a_400_naming_the_problem(admin_client: Client, ids: str, message: str) -> None:
    response = admin_client.get(reverse(LIVE), {"ids": ids})
    assert response.status_code == 400
    assert message in response.content.decode()


def test_a_page_asks_about_one_job(admin_client: Client) -> None:
    a, b = make_job(1, "a"), make_job(1, "b")
    response = admin_client.get(reverse(LIVE), {"ids": f"{a.pk},{b.pk}", "page": "1"})
    assert response.status_code == 400


def test_jobs_one_may_not_see_are_not_answered(client: Client) -> None:
    job = running("secret")
    staff = User.objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(staff)
    assert live(client, job).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_batchjob"))
    client.force_login(User.objects.get(pk=staff.pk))
    data = live(client, job, page=True).json()
    assert data["jobs"][str(job.pk)]["buttons"].strip() == ""  # view only: no buttons
    anonymous = Client().get(reverse(LIVE), {"ids": str(job.pk)})
    assert anonymous.status_code == 302 and "/login/" in anonymous["Location"]


def test_the_live_view_follows_a_real_batch(
    admin_client: Client,
    openai_emulator: Any,  # noqa: F811
) -> None:
    job = make_job(2, "real")
    services.request_submit(job)
    job = services.submit(job)
    entry = live(admin_client, job, page=True).json()["jobs"][str(job.pk)]
    assert entry["moving"] is True
    assert 'data-state="submitted"' in entry["fields"]["status_badge"]
    assert 'data-action="download_output"' not in entry["buttons"]
    services.refresh(job)  # what the poll job does: the emulator finishes at once
    entry = live(admin_client, job, page=True).json()["jobs"][str(job.pk)]
    assert entry["moving"] is False
    assert 'data-provider-status="completed"' in entry["fields"]["status_badge"]
    assert 'data-field="completed_at"' in entry["fields"]["timeline"]
    assert 'data-action="download_output"' in entry["buttons"]
    assert 'data-action="refresh_jobs"' not in entry["buttons"]
    assert openai_emulator.api_key not in json.dumps(entry)


# -- the laptop-sized list and page --------------------------------------------------------


def test_list_shows_id_short_uuid_compact_times_and_tokens(admin_client: Client) -> None:
    a, b = make_job(1, "same"), make_job(1, "same")
    BatchJob.objects.filter(pk=a.pk).update(input_tokens=1_234_567, output_tokens=45_600)
    html = admin_client.get(reverse(CHANGELIST)).content.decode()
    for job in (a, b):
        assert f'>#{job.pk}<br><code class="ob-short-uuid">{job.uuid.hex[:8]}</code>' in html
    assert 'title="1,234,567 in / 45,600 out">1.2M / 45.6k</span>' in html
    created = timezone.localtime(a.created_at)
    assert f'title="{created:%Y-%m-%d %H:%M:%S}' in html
    assert f">{created:%b} {created.day} {created:%H:%M}</time>" in html


def test_item_filter_names_jobs_uniquely(admin_client: Client) -> None:
    a, b = make_job(1, "same"), make_job(1, "same")
    response = admin_client.get(reverse("admin:openai_batches_requestitem_changelist"))
    [spec] = [
        s for s in response.context["cl"].filter_specs if getattr(s, "parameter_name", "") == "job"
    ]
    assert dict(spec.lookup_choices) == {str(a.pk): f"#{a.pk} same", str(b.pk): f"#{b.pk} same"}
    unnamed = services.create_job(endpoint="/v1/chat/completions")
    response = admin_client.get(reverse("admin:openai_batches_requestitem_changelist"))
    [spec] = [
        s for s in response.context["cl"].filter_specs if getattr(s, "parameter_name", "") == "job"
    ]
    assert dict(spec.lookup_choices)[str(unnamed.pk)] == f"#{unnamed.pk} {unnamed.uuid.hex[:8]}"


def test_finished_job_page_has_no_save_and_add_another_and_a_readable_size(
    admin_client: Client,
) -> None:
    job = make_job(1, "done")
    BatchJob.objects.filter(pk=job.pk).update(
        state=JobState.FINISHED, input_bytes=5 * 1024 * 1024 + 1
    )
    html = admin_client.get(
        reverse("admin:openai_batches_batchjob_change", args=[job.pk])
    ).content.decode()
    assert 'name="_addanother"' not in html
    assert 'name="_save"' in html  # the name stays editable
    assert "5.0 MB (5,242,881 bytes)" in html
