"""The admin operator console: list, job page, JSONL create form, actions, permissions.

Actions run against the bundled emulator (``openai_emulator`` fixture), not mocks, so what
the operator sees is what the services really did with a provider.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.contrib.admin import AdminSite
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext, override_settings
from django.urls import path, reverse
from django.utils import timezone

from openai_batches import services
from openai_batches.admin import BatchJobAdmin, RequestItemAdmin
from openai_batches.models import (
    BatchJob,
    BatchStatus,
    ItemState,
    JobState,
    ProviderBatch,
    RequestAttempt,
    RequestItem,
)
from openai_batches.testing import openai_emulator  # noqa: F401
from tests.part_helpers import set_part
from tests.testapp.models import Article

pytestmark = pytest.mark.django_db

SETTINGS_KEY = "sk-test-key-never-logged"
CHANGELIST = "admin:openai_batches_batchjob_changelist"
ITEMS = "admin:openai_batches_requestitem_changelist"
ADD = "admin:openai_batches_batchjob_add"


def change_url(job: BatchJob) -> str:
    return reverse("admin:openai_batches_batchjob_change", args=[job.pk])


def run_url(job: BatchJob, action: str) -> str:
    return reverse("admin:openai_batches_batchjob_object_action", args=[job.pk, action])


def line(custom_id: str, content: str = "hi", model: str = "gpt-4o-mini") -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": content}]},
    }


def jsonl(lines: list[Any]) -> str:
    return "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)


def make_job(n: int = 3, name: str = "job", **kwargs: Any) -> BatchJob:
    return services.create_job(
        endpoint="/v1/chat/completions",
        name=name,
        items=[{"custom_id": f"{name}-{i}", "body": line(f"{name}-{i}")["body"]} for i in range(n)],
        **kwargs,
    )


def run_action(client: Client, action: str, jobs: list[BatchJob], follow: bool = True) -> Any:
    return client.post(
        reverse(CHANGELIST),
        {"action": action, "_selected_action": [j.pk for j in jobs]},
        follow=follow,
    )


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def content(response: Any) -> str:
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content).decode()
    return response.content.decode()


def submitted_job(emulator: Any, n: int = 3, name: str = "job") -> BatchJob:
    """A job the provider knows (submitted through services, as the RQ job would)."""
    job = make_job(n, name=name)
    services.request_submit(job)
    job = services.submit(job)
    assert job.state == JobState.SUBMITTED, job.last_error
    return job


def staff_with(*codenames: str, username: str = "staff") -> User:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user


@pytest.fixture
def viewer_client() -> Client:
    client = Client()
    client.force_login(staff_with("view_batchjob", "view_requestitem", username="viewer"))
    return client


# --------------------------------------------------------------------------------------------
# The job list
# --------------------------------------------------------------------------------------------


def test_changelist_shows_badges_progress_times_and_cost(admin_client: Client) -> None:
    with override_settings(
        OPENAI_BATCHES={
            "API_KEY": SETTINGS_KEY,
            "PRICES": {"gpt-4o-mini": {"input": 0.075, "output": 0.3}},
        }
    ):
        job = make_job(4, name="summaries")
        set_part(
            job,
            state=JobState.SUBMITTED,
            provider_status=BatchStatus.IN_PROGRESS,
            provider_batch_id="batch_abc",
            request_count_total=4,
            request_count_completed=2,
            request_count_failed=1,
            input_tokens=1_000_000,
            output_tokens=100_000,
        )
        response = admin_client.get(reverse(CHANGELIST))
    html = content(response)
    assert response.status_code == 200
    assert "summaries" in html
    assert 'data-state="submitted"' in html
    assert 'data-provider-status="in_progress"' in html
    # While the batch runs, progress is the provider's request_counts.
    assert 'data-completed="2" data-failed="1" data-total="4"' in html
    assert "1,000,000 in / 100,000 out" in html
    assert "$0.1050" in html  # 1M * 0.075 + 0.1M * 0.3 per 1M tokens
    assert SETTINGS_KEY not in html


def test_changelist_progress_after_ingest_counts_items(admin_client: Client) -> None:
    job = make_job(3, name="done")
    items = list(job.items.order_by("pk"))
    RequestItem.objects.filter(pk=items[0].pk).update(state=ItemState.SUCCEEDED)
    RequestItem.objects.filter(pk=items[1].pk).update(state=ItemState.EXPIRED)
    BatchJob.objects.filter(pk=job.pk).update(
        state=JobState.FINISHED,
        provider_status=BatchStatus.EXPIRED,
        ingested_at=timezone.now(),
        request_count_total=3,
        request_count_completed=1,
        # What the services keep on the job where item states change (see
        # tests/test_query_counts.py for the services keeping them).
        succeeded_count=1,
        failed_count=1,
    )
    html = content(admin_client.get(reverse(CHANGELIST)))
    # Ingested: the items are the truth, and expired ones count as not succeeded.
    assert 'data-completed="1" data-failed="1" data-total="3"' in html


def _changelist_queries(client: Client) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(reverse(CHANGELIST))
    assert response.status_code == 200
    return len(ctx.captured_queries)


def test_changelist_query_count_does_not_grow_with_rows(admin_client: Client) -> None:
    owner = User.objects.get(username="admin")
    make_job(2, name="first", owner=owner)
    one = _changelist_queries(admin_client)
    for i in range(19):
        job = make_job(2, name=f"more{i}", owner=owner)
        if i % 2:
            set_part(job, state=JobState.SUBMITTED, provider_status=BatchStatus.IN_PROGRESS)
        elif i % 3 == 0:  # finished over two parts: the list shows when the last one ended
            set_part(job, state=JobState.FINISHED, provider_status=BatchStatus.COMPLETED)
            set_part(
                job,
                part=2,
                state=JobState.FINISHED,
                provider_status=BatchStatus.EXPIRED,
                expired_at=timezone.now(),
            )
    assert BatchJob.objects.count() == 20
    twenty = _changelist_queries(admin_client)
    assert one == twenty, (one, twenty)


def test_item_changelist_query_count_does_not_grow_with_rows(admin_client: Client) -> None:
    article = Article.objects.create(title="a")
    job = services.create_job(
        endpoint="/v1/chat/completions",
        items=[{"custom_id": "x0", "body": line("x0")["body"], "object": article}],
    )

    def count() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert admin_client.get(reverse(ITEMS)).status_code == 200
        return len(ctx.captured_queries)

    one = count()
    services.add_items(
        job,
        [
            {"custom_id": f"x{i}", "body": line("x")["body"], "object": article}
            for i in range(1, 20)
        ],
    )
    assert count() == one


def test_search_by_name_uuid_and_provider_batch_id(admin_client: Client) -> None:
    alpha, beta = make_job(1, name="alpha"), make_job(1, name="beta")
    set_part(beta, provider_batch_id="batch_other")
    set_part(beta, part=2, provider_batch_id="batch_findme")  # any part's id finds the job
    url = reverse(CHANGELIST)

    def found(term: str) -> set[int]:
        response = admin_client.get(url, {"q": term})
        assert response.status_code == 200
        return {obj.pk for obj in response.context["cl"].result_list}

    assert found("alpha") == {alpha.pk}
    assert found(str(alpha.uuid)) == {alpha.pk}
    assert found("batch_findme") == {beta.pk}


def test_filters_state_status_endpoint_account_owner(admin_client: Client) -> None:
    owner = User.objects.get(username="admin")
    mine = make_job(1, name="mine", owner=owner)
    other = make_job(1, name="other")
    BatchJob.objects.filter(pk=other.pk).update(
        state=JobState.SUBMITTED, provider_status=BatchStatus.VALIDATING
    )
    url = reverse(CHANGELIST)

    def found(**params: Any) -> set[int]:
        response = admin_client.get(url, params)
        assert response.status_code == 200
        return {obj.pk for obj in response.context["cl"].result_list}

    assert found(state__exact="draft") == {mine.pk}
    assert found(provider_status__exact="validating") == {other.pk}
    assert found(endpoint__exact="/v1/chat/completions") == {mine.pk, other.pk}
    assert found(account__exact="default") == {mine.pk, other.pk}
    assert found(owner__id__exact=owner.pk) == {mine.pk}
    year = mine.created_at.year
    assert found(created_at__year=year) == {mine.pk, other.pk}  # date hierarchy


# --------------------------------------------------------------------------------------------
# Creating a job from JSONL
# --------------------------------------------------------------------------------------------


def test_add_page_renders_form(admin_client: Client) -> None:
    response = admin_client.get(reverse(ADD))
    html = content(response)
    assert response.status_code == 200
    assert 'name="jsonl_file"' in html
    assert 'name="jsonl_text"' in html
    assert SETTINGS_KEY not in html


def test_create_job_from_uploaded_jsonl(admin_client: Client) -> None:
    upload = io.BytesIO(jsonl([line("a"), line("b"), "", line("c")]).encode())
    upload.name = "requests.jsonl"
    response = admin_client.post(
        reverse(ADD),
        {
            "name": "uploaded",
            "endpoint": "/v1/chat/completions",
            "account": "default",
            "metadata": '{"project": "demo"}',
            "jsonl_file": upload,
        },
    )
    job = BatchJob.objects.get()
    assert response.status_code == 302
    assert response["Location"] == change_url(job)
    assert job.name == "uploaded"
    assert job.metadata == {"project": "demo"}
    assert job.owner == User.objects.get(username="admin")
    assert job.state == JobState.DRAFT
    assert job.item_count == 3
    assert sorted(job.items.values_list("custom_id", flat=True)) == ["a", "b", "c"]
    page = admin_client.get(response["Location"])
    assert "Created job “uploaded” with 3 requests" in " ".join(messages_of(page))


def test_create_job_from_pasted_jsonl(admin_client: Client) -> None:
    response = admin_client.post(
        reverse(ADD),
        {
            "name": "pasted",
            "endpoint": "/v1/chat/completions",
            "account": "default",
            "jsonl_text": jsonl([line("p1"), line("p2")]),
        },
    )
    assert response.status_code == 302
    assert BatchJob.objects.get().item_count == 2


def test_create_job_lists_every_problem_with_its_line_and_saves_nothing(
    admin_client: Client,
) -> None:
    bad_model = line("c", model="gpt-4o")
    no_body = {"custom_id": "d", "method": "POST", "url": "/v1/chat/completions"}
    text = jsonl([line("a"), "{not json", line("a"), bad_model, no_body])
    response = admin_client.post(
        reverse(ADD),
        {
            "name": "broken",
            "endpoint": "/v1/chat/completions",
            "account": "default",
            "jsonl_text": text,
        },
    )
    assert response.status_code == 200
    assert BatchJob.objects.count() == 0
    assert RequestItem.objects.count() == 0
    html = content(response)
    assert "nothing was saved" in html
    problems = response.context["line_problems"]
    assert [p.line for p in problems] == [2, 3, 4, 5]
    for number in (2, 3, 4, 5):
        assert f'<tr data-line="{number}"><td>{number}</td>' in html
    assert "not valid JSON" in html
    assert "used more than once" in html
    assert "a batch takes one model" in html


def test_create_job_with_bad_metadata_lists_the_problem_and_saves_nothing(
    admin_client: Client,
) -> None:
    metadata = {f"k{i}": "v" for i in range(17)}
    response = admin_client.post(
        reverse(ADD),
        {
            "endpoint": "/v1/chat/completions",
            "account": "default",
            "metadata": json.dumps(metadata),
            "jsonl_text": jsonl([line("a")]),
        },
    )
    assert response.status_code == 200
    assert BatchJob.objects.count() == 0
    assert "at most 16 are allowed" in content(response)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "Upload a JSONL file or paste JSONL lines."),
        ({"jsonl_text": "\n\n"}, "Upload a JSONL file or paste JSONL lines."),
        ({"metadata": "[1]", "jsonl_text": "x"}, "Must be a JSON object."),
        ({"metadata": "{", "jsonl_text": "x"}, "Not valid JSON"),
    ],
)
def test_create_job_form_errors(admin_client: Client, data: dict[str, str], message: str) -> None:
    response = admin_client.post(
        reverse(ADD), {"endpoint": "/v1/chat/completions", "account": "default", **data}
    )
    assert response.status_code == 200
    assert message in content(response)
    assert BatchJob.objects.count() == 0


def test_create_job_refuses_file_and_text_together(admin_client: Client) -> None:
    upload = io.BytesIO(jsonl([line("a")]).encode())
    upload.name = "r.jsonl"
    response = admin_client.post(
        reverse(ADD),
        {
            "endpoint": "/v1/chat/completions",
            "account": "default",
            "jsonl_file": upload,
            "jsonl_text": jsonl([line("b")]),
        },
    )
    assert "not both" in content(response)
    assert BatchJob.objects.count() == 0


def test_create_job_with_only_blank_lines_in_file_saves_nothing(admin_client: Client) -> None:
    upload = io.BytesIO(b"\n  \n")
    upload.name = "empty.jsonl"
    response = admin_client.post(
        reverse(ADD),
        {"endpoint": "/v1/chat/completions", "account": "default", "jsonl_file": upload},
    )
    assert response.status_code == 200
    assert "holds no requests" in content(response)
    assert BatchJob.objects.count() == 0


# --------------------------------------------------------------------------------------------
# Actions
# --------------------------------------------------------------------------------------------


def test_submit_action_requests_submission_and_reports(
    admin_client: Client, django_capture_on_commit_callbacks: Any
) -> None:
    draft = make_job(2, name="ready")
    empty = services.create_job(endpoint="/v1/chat/completions", name="empty")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = run_action(admin_client, "submit_jobs", [draft, empty])
    draft.refresh_from_db()
    assert draft.state == JobState.SUBMIT_REQUESTED
    assert callbacks, "the submit RQ job is enqueued on commit"
    text = " ".join(messages_of(response))
    assert "Submission requested for 1 job: ready." in text
    assert "Skipped 1 job." in text
    assert "“empty”" in text and "it has no items" in text


def test_submit_action_refuses_wrong_state_without_a_500(admin_client: Client) -> None:
    job = make_job(1, name="twice")
    services.request_submit(job)
    response = run_action(admin_client, "submit_jobs", [job])
    assert response.status_code == 200
    text = " ".join(messages_of(response))
    assert "Skipped 1 job." in text
    assert "submission requested" in text.lower()
    assert "Submission requested for" not in text


def test_refresh_action_ingests_a_finished_batch(
    admin_client: Client,
    openai_emulator: Any,  # noqa: F811
) -> None:
    job = submitted_job(openai_emulator, 3, name="running")
    draft = make_job(1, name="draft")
    response = run_action(admin_client, "refresh_jobs", [job, draft])
    job.refresh_from_db()
    assert job.state == JobState.FINISHED
    assert job.provider_status == BatchStatus.COMPLETED
    assert job.items.filter(state=ItemState.SUCCEEDED).count() == 3
    text = " ".join(messages_of(response))
    assert "Refreshed 1 job: running." in text
    assert "“draft”" in text and "the provider does not know it yet" in text
    html = content(admin_client.get(reverse(CHANGELIST)))
    assert 'data-completed="3" data-failed="0" data-total="3"' in html
    assert openai_emulator.api_key not in html


def test_refresh_action_reports_provider_errors_without_a_500(
    admin_client: Client,
    openai_emulator: Any,  # noqa: F811
) -> None:
    job = submitted_job(openai_emulator, 1, name="flaky")
    openai_emulator.inject_fault("GET", "/v1/batches/*", "status", status=500, count=50)
    response = run_action(admin_client, "refresh_jobs", [job])
    assert response.status_code == 200
    text = " ".join(messages_of(response))
    assert "Skipped 1 job." in text and "the provider call failed" in text
    job.refresh_from_db()
    assert job.state == JobState.SUBMITTED  # the provider's facts are untouched
    assert job.last_error
    page = content(admin_client.get(change_url(job)))
    assert "Last local error" in page
    assert SETTINGS_KEY not in page and openai_emulator.api_key not in page


def test_cancel_action_drafts_running_and_finished(
    admin_client: Client,
    openai_emulator: Any,  # noqa: F811
) -> None:
    openai_emulator.stall_request("running-0")  # keeps the batch in progress
    running = submitted_job(openai_emulator, 2, name="running")
    services.refresh(running)
    draft = make_job(1, name="draft")
    done = submitted_job(openai_emulator, 1, name="done")
    services.refresh(done)
    response = run_action(admin_client, "cancel_jobs", [running, draft, done])
    text = " ".join(messages_of(response))
    running.refresh_from_db()
    draft.refresh_from_db()
    done.refresh_from_db()
    assert draft.state == JobState.CANCELLED
    assert running.provider_status in (BatchStatus.CANCELLING, BatchStatus.CANCELLED)
    assert done.state == JobState.FINISHED
    assert "Cancelled 2 jobs: running, draft." in text
    assert "Skipped 1 job." in text and "“done”" in text and "cannot be cancelled" in text


def test_download_input_streams_the_jsonl(admin_client: Client) -> None:
    job = make_job(2, name="input")
    response = run_action(admin_client, "download_input", [job], follow=False)
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "application/jsonl"
    assert f'filename="input-{job.pk}-input.jsonl"' in response["Content-Disposition"]
    lines = [json.loads(x) for x in content(response).splitlines()]
    assert [x["custom_id"] for x in lines] == ["input-0", "input-1"]


def test_download_output_and_error_files(
    admin_client: Client,
    openai_emulator: Any,  # noqa: F811
) -> None:
    openai_emulator.fail_request("mixed-1")
    job = submitted_job(openai_emulator, 3, name="mixed")
    services.refresh(job)
    job.refresh_from_db()
    assert job.output_file_id and job.error_file_id
    output = run_action(admin_client, "download_output", [job], follow=False)
    assert output.status_code == 200
    out_ids = {json.loads(x)["custom_id"] for x in content(output).splitlines()}
    assert out_ids == {"mixed-0", "mixed-2"}
    errors = run_action(admin_client, "download_errors", [job], follow=False)
    err_lines = [json.loads(x) for x in content(errors).splitlines()]
    assert [x["custom_id"] for x in err_lines] == ["mixed-1"]
    # The job page offers the downloads as buttons too.
    page = content(admin_client.get(change_url(job)))
    assert 'data-action="download_output"' in page
    assert 'data-action="download_errors"' in page
    assert 'data-action="refresh_jobs"' not in page  # already ingested


def test_download_refuses_several_jobs_and_missing_files(admin_client: Client) -> None:
    a, b = make_job(1, name="a"), make_job(1, name="b")
    several = run_action(admin_client, "download_input", [a, b])
    assert "Select exactly one job to download its input file." in messages_of(several)
    no_output = run_action(admin_client, "download_output", [a])
    assert no_output.status_code == 200
    text = " ".join(messages_of(no_output))
    assert "No output file to download for “a”" in text
    empty = services.create_job(endpoint="/v1/chat/completions", name="empty")
    no_input = run_action(admin_client, "download_input", [empty])
    assert "has no requests" in " ".join(messages_of(no_input))


def test_download_reports_a_provider_error_instead_of_a_broken_stream(
    admin_client: Client,
    openai_emulator: Any,  # noqa: F811
) -> None:
    job = submitted_job(openai_emulator, 1, name="gone")
    services.refresh(job)
    openai_emulator.inject_fault("GET", "/v1/files/*", "status", status=500, count=50)
    response = run_action(admin_client, "download_output", [job])
    assert response.status_code == 200
    assert "Could not download the output file of “gone”" in " ".join(messages_of(response))


def orphaned_job(settings: Any, name: str = "orphan") -> BatchJob:
    """A submitted job whose account has since been removed from the settings."""
    settings.OPENAI_BATCHES = {
        **settings.OPENAI_BATCHES,
        "ACCOUNTS": {
            "old-team": {"API_KEY": "sk-old-team-key", "BASE_URL": "http://127.0.0.1:9/v1"}
        },
    }
    job = make_job(1, name=name, account="old-team")
    set_part(
        job,
        state=JobState.SUBMITTED,
        provider_batch_id="batch_orphan",
        provider_status=BatchStatus.IN_PROGRESS,
        output_file_id="file-out",
        error_file_id="file-err",
    )
    settings.OPENAI_BATCHES = {
        **settings.OPENAI_BATCHES,
        "ACCOUNTS": {"still-here": {"API_KEY": "sk-still-here", "BASE_URL": "http://x/v1"}},
    }
    job.refresh_from_db()
    return job


@pytest.mark.parametrize(
    "action", ["refresh_jobs", "cancel_jobs", "download_output", "download_errors"]
)
def test_a_job_whose_account_was_removed_is_an_error_message_not_a_500(
    admin_client: Client, settings: Any, action: str
) -> None:
    job = orphaned_job(settings)
    before = BatchJob.objects.filter(pk=job.pk).values().get()
    for response in (
        run_action(admin_client, action, [job]),
        admin_client.post(run_url(job, action), follow=True),
    ):
        assert response.status_code == 200
        [message] = list(response.context["messages"])
        assert message.level_tag == "error", message
        text = str(message)
        assert "“orphan”" in text and "“old-team”" in text
        # Nothing from the settings: not the other accounts, not a key, not the dict.
        for secret in ("still-here", "sk-", "OPENAI_BATCHES["):
            assert secret not in text
    after = BatchJob.objects.filter(pk=job.pk).values().get()
    assert after["state"] == before["state"] == JobState.SUBMITTED
    assert after["provider_status"] == before["provider_status"]


def test_a_mixed_selection_reports_the_unusable_account_as_an_error(
    admin_client: Client, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    job = orphaned_job(settings)
    draft = make_job(1, name="fine")
    response = run_action(admin_client, "cancel_jobs", [job, draft])
    levels = {str(m): m.level_tag for m in response.context["messages"]}
    assert levels == {
        "Cancelled 1 job: fine.": "success",
        next(t for t in levels if "“orphan”" in t): "error",
    }


def test_the_pages_of_a_job_whose_account_was_removed_still_render(
    admin_client: Client, settings: Any
) -> None:
    job = orphaned_job(settings)
    assert admin_client.get(reverse(CHANGELIST)).status_code == 200
    page = admin_client.get(change_url(job))
    assert page.status_code == 200 and "still-here" not in content(page)


def test_a_broken_accounts_setting_on_the_add_page_is_an_error_message(
    admin_client: Client, settings: Any
) -> None:
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "ACCOUNTS": "not-a-dict"}
    for response in (
        admin_client.get(reverse(ADD), follow=True),
        admin_client.post(
            reverse(ADD),
            {
                "endpoint": "/v1/chat/completions",
                "account": "default",
                "jsonl_text": jsonl([line("a")]),
            },
            follow=True,
        ),
    ):
        assert response.status_code == 200
        [message] = list(response.context["messages"])
        assert message.level_tag == "error"
        assert "OPENAI_BATCHES" in str(message) and "not-a-dict" not in str(message)
    assert not BatchJob.objects.exists()


def test_the_list_offers_every_action_in_order(admin_client: Client) -> None:
    make_job(1)
    response = admin_client.get(reverse(CHANGELIST))
    choices = [value for value, _ in response.context["action_form"].fields["action"].choices]
    assert choices[1:] == [
        "submit_jobs",
        "refresh_jobs",
        "cancel_jobs",
        "retry_failed",
        "retry_expired",
        "download_input",
        "download_output",
        "download_errors",
        "export_results_csv",
        "export_results_jsonl",
    ]


# --------------------------------------------------------------------------------------------
# The job page
# --------------------------------------------------------------------------------------------


def test_job_page_shows_provider_errors_timeline_error_items_and_owner(
    admin_client: Client,
) -> None:
    owner = User.objects.get(username="admin")
    job = make_job(2, name="page", owner=owner, metadata={"team": "search"})
    now = timezone.now()
    set_part(
        job,
        state=JobState.FINISHED,
        provider_status=BatchStatus.FAILED,
        provider_batch_id="batch_page",
        provider_created_at=now,
        failed_at=now,
        submitted_at=now,
        provider_errors=[
            {"code": "invalid_url", "message": "bad url <b>", "param": "url", "line": 7},
            {"code": "missing_model", "message": "no model", "param": "body.model", "line": 9},
        ],
        last_error="APIConnectionError: connection reset",
        last_error_at=now,
    )
    response = admin_client.get(change_url(job))
    html = content(response)
    assert response.status_code == 200
    assert (
        "<td>7</td><td><code>invalid_url</code></td><td>url</td><td>bad url &lt;b&gt;</td>" in html
    )
    assert "<td>9</td>" in html
    for field in ("created_at", "provider_created_at", "submitted_at", "failed_at"):
        assert f'data-field="{field}"' in html
    assert "APIConnectionError: connection reset" in html
    assert f'{reverse(ITEMS)}?job={job.pk}"' in html
    assert "2 requests" in html
    assert reverse("admin:auth_user_change", args=[owner.pk]) in html
    assert "&quot;team&quot;: &quot;search&quot;" in html
    assert 'name="name"' in html  # the name is the one editable field
    assert 'name="state"' not in html
    assert 'name="provider_status"' not in html
    assert SETTINGS_KEY not in html


def test_job_page_buttons_follow_state(admin_client: Client) -> None:
    draft = make_job(1, name="draft")
    html = content(admin_client.get(change_url(draft)))
    assert 'data-action="submit_jobs"' in html
    assert 'data-action="cancel_jobs"' in html
    assert 'data-action="download_input"' in html
    assert 'data-action="refresh_jobs"' not in html
    assert 'data-action="download_output"' not in html


def test_job_page_button_runs_the_action(admin_client: Client) -> None:
    job = make_job(1, name="button")
    response = admin_client.post(run_url(job, "submit_jobs"), follow=True)
    assert response.redirect_chain[-1][0] == change_url(job)
    job.refresh_from_db()
    assert job.state == JobState.SUBMIT_REQUESTED
    assert "Submission requested for 1 job: button." in messages_of(response)
    again = admin_client.post(run_url(job, "submit_jobs"), follow=True)
    assert any("cannot be submitted" in m for m in messages_of(again))
    download = admin_client.post(run_url(job, "download_input"))
    assert download.streaming
    # Consumed, so PostgreSQL's server-side cursor is closed inside this test's transaction.
    assert json.loads(content(download))["custom_id"] == "button-0"


def test_job_page_button_needs_post_and_a_known_action(admin_client: Client) -> None:
    job = make_job(1)
    assert admin_client.get(run_url(job, "submit_jobs")).status_code == 405
    assert admin_client.post(run_url(job, "delete_selected")).status_code == 403
    missing = reverse("admin:openai_batches_batchjob_object_action", args=[999999, "submit_jobs"])
    assert admin_client.post(missing).status_code == 404


def test_editing_the_name_does_not_undo_a_workers_state_change(admin_client: Client) -> None:
    job = make_job(1, name="old")
    admin_client.get(change_url(job))
    # A worker moves the job on while the operator has the page open.
    services.request_submit(job)
    response = admin_client.post(change_url(job), {"name": "new"})
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.name == "new"
    assert job.state == JobState.SUBMIT_REQUESTED


def test_running_job_cannot_be_deleted(admin_client: Client) -> None:
    job = make_job(1)
    BatchJob.objects.filter(pk=job.pk).update(state=JobState.SUBMITTED)
    delete = reverse("admin:openai_batches_batchjob_delete", args=[job.pk])
    assert admin_client.get(delete).status_code == 403
    draft = make_job(1, name="deletable")
    draft_delete = reverse("admin:openai_batches_batchjob_delete", args=[draft.pk])
    assert admin_client.post(draft_delete, {"post": "yes"}).status_code == 302
    assert not BatchJob.objects.filter(pk=draft.pk).exists()


# --------------------------------------------------------------------------------------------
# Request items
# --------------------------------------------------------------------------------------------


def test_item_list_filters_by_job_and_state_and_searches_custom_id(admin_client: Client) -> None:
    a, b = make_job(2, name="a"), make_job(2, name="b")
    RequestItem.objects.filter(custom_id="a-1").update(state=ItemState.FAILED)
    url = reverse(ITEMS)

    def found(**params: Any) -> set[str]:
        response = admin_client.get(url, params)
        assert response.status_code == 200
        return {item.custom_id for item in response.context["cl"].result_list}

    assert found(job=a.pk) == {"a-0", "a-1"}
    assert found(job=b.pk, state__exact="pending") == {"b-0", "b-1"}
    assert found(state__exact="failed") == {"a-1"}
    assert found(q="b-1") == {"b-1"}
    assert found(job="nope") == set()


def test_item_page_is_read_only_pretty_json(admin_client: Client) -> None:
    job = make_job(1, name="pretty")
    item = job.items.get()
    RequestItem.objects.filter(pk=item.pk).update(
        state=ItemState.SUCCEEDED,
        status_code=200,
        response={"id": "chatcmpl-1", "choices": [{"message": {"content": "<hello>"}}]},
    )
    response = admin_client.get(reverse("admin:openai_batches_requestitem_change", args=[item.pk]))
    html = content(response)
    assert response.status_code == 200
    assert '<pre class="ob-json">' in html
    assert "&quot;content&quot;: &quot;&lt;hello&gt;&quot;" in html
    assert 'name="custom_id"' not in html and 'name="body"' not in html
    assert 'name="_save"' not in html  # nothing to save: services own the item
    assert admin_client.get(reverse("admin:openai_batches_requestitem_add")).status_code == 403
    delete = reverse("admin:openai_batches_requestitem_delete", args=[item.pk])
    assert admin_client.get(delete).status_code == 403


# A URLconf with an admin site where the host project's Article is registered, to check that
# an item links to its row's change page (and shows plain text where it is not registered).
link_site = AdminSite(name="linkadmin")
link_site.register(BatchJob, BatchJobAdmin)
link_site.register(RequestItem, RequestItemAdmin)
link_site.register(Article)
urlpatterns = [path("admin/", link_site.urls)]


def test_item_links_to_the_host_project_row(admin_client: Client) -> None:
    article = Article.objects.create(title="Linked")
    job = services.create_job(
        endpoint="/v1/chat/completions",
        items=[{"custom_id": "linked", "body": line("x")["body"], "object": article}],
    )
    item = job.items.get()
    # Not registered on the default site: plain text, no broken link.
    html = content(admin_client.get(reverse(ITEMS)))
    assert f"#{article.pk}" in html and "ob-linked-object" not in html
    with override_settings(ROOT_URLCONF="tests.test_admin"):
        expected = reverse("linkadmin:testapp_article_change", args=[article.pk])
        listing = content(
            admin_client.get(reverse("linkadmin:openai_batches_requestitem_changelist"))
        )
        page = content(
            admin_client.get(reverse("linkadmin:openai_batches_requestitem_change", args=[item.pk]))
        )
    assert f'<a href="{expected}" class="ob-linked-object">' in listing
    assert f'<a href="{expected}" class="ob-linked-object">' in page


# --------------------------------------------------------------------------------------------
# Permissions
# --------------------------------------------------------------------------------------------


def test_view_only_staff_sees_everything_and_changes_nothing(viewer_client: Client) -> None:
    job = make_job(2, name="looked-at")
    item = job.items.first()
    assert item is not None
    listing = viewer_client.get(reverse(CHANGELIST))
    assert listing.status_code == 200
    assert "looked-at" in content(listing)
    assert listing.context["action_form"] is None  # no actions at all
    assert 'class="action-select"' not in content(listing)
    assert reverse(ADD) not in content(listing)
    assert viewer_client.get(reverse(ADD)).status_code == 403
    page = viewer_client.get(change_url(job))
    html = content(page)
    assert page.status_code == 200
    assert 'name="name"' not in html
    assert 'name="_save"' not in html
    assert "data-action=" not in html  # no buttons
    assert "2 requests" in html
    for action in ("submit_jobs", "download_input"):
        assert viewer_client.post(run_url(job, action)).status_code == 403
    # A forged changelist action post does nothing either.
    forged = viewer_client.post(
        reverse(CHANGELIST), {"action": "submit_jobs", "_selected_action": [job.pk]}
    )
    assert forged.status_code in (200, 302, 403)
    assert viewer_client.post(change_url(job), {"name": "x"}).status_code == 403
    job.refresh_from_db()
    assert job.state == JobState.DRAFT and job.name == "looked-at"
    assert viewer_client.get(reverse(ITEMS), {"job": job.pk}).status_code == 200
    item_page = viewer_client.get(
        reverse("admin:openai_batches_requestitem_change", args=[item.pk])
    )
    assert item_page.status_code == 200


def test_change_permission_without_add_runs_actions_but_cannot_create(
    openai_emulator: Any,  # noqa: F811
) -> None:
    client = Client()
    client.force_login(staff_with("view_batchjob", "change_batchjob", username="operator"))
    job = make_job(1, name="op")
    assert client.get(reverse(ADD)).status_code == 403
    response = run_action(client, "submit_jobs", [job])
    assert "Submission requested for 1 job: op." in messages_of(response)


def test_staff_without_permissions_is_refused(client: Client) -> None:
    client.force_login(staff_with(username="nobody"))
    job = make_job(1)
    assert client.get(reverse(CHANGELIST)).status_code == 403
    assert client.get(change_url(job)).status_code == 403
    assert client.post(run_url(job, "submit_jobs")).status_code == 403


def test_the_api_key_never_appears(
    admin_client: Client,
    openai_emulator: Any,  # noqa: F811
) -> None:
    openai_emulator.fail_request("k-1")
    job = submitted_job(openai_emulator, 2, name="k")
    services.refresh(job)
    pages = [
        reverse(CHANGELIST),
        change_url(job),
        reverse(ADD),
        reverse(ITEMS),
        *(
            reverse("admin:openai_batches_requestitem_change", args=[pk])
            for pk in job.items.values_list("pk", flat=True)
        ),
    ]
    for url in pages:
        html = content(admin_client.get(url))
        assert openai_emulator.api_key not in html, url
        assert SETTINGS_KEY not in html, url


# --------------------------------------------------------------------------------------------
# One job, many provider batches: the parts, each request's attempts, retries on demand
# --------------------------------------------------------------------------------------------


def item_url(job: BatchJob, custom_id: str) -> str:
    item = job.items.get(custom_id=custom_id)
    return reverse("admin:openai_batches_requestitem_change", args=[item.pk])


def test_job_page_lists_every_provider_batch_and_an_item_page_its_attempts(
    admin_client: Client,
    openai_emulator: Any,  # noqa: F811
    settings: Any,  # after the emulator: its teardown runs first, restoring what it changed
) -> None:
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "MAX_REQUESTS_PER_BATCH": 2}
    openai_emulator.fail_request("split-1", 500, "server_error", "boom <b>", times=1)
    job = make_job(3, name="split")
    services.request_submit(job)
    services.submit(job)
    job = services.refresh(job)
    # Parts 1 and 2 ran; the 500 is sent again in a third part.
    assert job.state == JobState.SUBMIT_REQUESTED
    services.submit(job)
    job = services.refresh(job)
    assert job.state == JobState.FINISHED

    html = content(admin_client.get(change_url(job)))
    parts = list(job.batches.order_by("part"))
    assert [(p.part, p.reason) for p in parts] == [(1, "first"), (2, "split"), (3, "retry")]
    for part in parts:
        assert f'<tr data-part="{part.part}">' in html
        assert part.provider_batch_id in html and part.input_file_id in html
        assert part.output_file_id in html
    assert "First part" in html and "Split part" in html and "Retry" in html
    assert html.count('data-provider-status="completed"') >= 3
    assert SETTINGS_KEY not in html and openai_emulator.api_key not in html
    # The page's downloads give every part's file, in part order.
    output = admin_client.post(run_url(job, "download_output"))
    assert [json.loads(x)["custom_id"] for x in content(output).splitlines()] == [
        "split-0",
        "split-2",
        "split-1",
    ]
    errors = admin_client.post(run_url(job, "download_errors"))
    [error_line] = [json.loads(x) for x in content(errors).splitlines()]
    assert (error_line["custom_id"], error_line["response"]["status_code"]) == ("split-1", 500)

    page = content(admin_client.get(item_url(job, "split-1")))
    assert '<tr data-attempt="1">' in page and '<tr data-attempt="2">' in page
    first, second = page.split('<tr data-attempt="2">')
    first = first.split('<tr data-attempt="1">')[1]
    assert parts[0].provider_batch_id in first and "<td>500</td>" in first
    assert "<code>server_error</code> boom &lt;b&gt;" in first and "<td>yes</td>" in first
    assert parts[2].provider_batch_id in second and "<td>200</td>" in second
    assert 'data-state="succeeded"' in second and "<td>no</td>" in second


def test_retry_failed_from_the_job_page_and_its_refusals(
    admin_client: Client,
    viewer_client: Client,
    openai_emulator: Any,  # noqa: F811
) -> None:
    # A 400 the model refused is not retried by itself; an operator may send it again.
    openai_emulator.fail_request("again-1", 400, "invalid_prompt", "flagged", times=1)
    job = submitted_job(openai_emulator, 2, name="again")
    job = services.refresh(job)
    assert job.state == JobState.FINISHED
    html = content(admin_client.get(change_url(job)))
    assert 'data-action="retry_failed"' in html
    assert 'data-action="retry_expired"' not in html  # nothing expired
    assert 'data-action="retry_failed"' not in content(viewer_client.get(change_url(job)))
    assert viewer_client.post(run_url(job, "retry_failed")).status_code == 403

    # Nothing expired: the action says why, naming the job, and changes nothing.
    refused = run_action(admin_client, "retry_expired", [job])
    assert messages_of(refused) == [
        f"Skipped 1 job. “again”: Job {job.pk} cannot be retried (expired): it has no "
        "expired request sent fewer than 3 time(s)."
    ]
    assert job.batches.count() == 1

    response = admin_client.post(run_url(job, "retry_failed"), follow=True)
    assert response.redirect_chain[-1][0] == change_url(job)
    assert messages_of(response) == ["Failed requests sent again for 1 job: again."]
    job.refresh_from_db()
    assert job.state == JobState.SUBMIT_REQUESTED
    retry = job.batches.get(part=2)
    assert (retry.reason, retry.item_count) == ("retry", 1)
    again = admin_client.post(run_url(job, "retry_failed"), follow=True)
    assert any("only a finished job is retried" in m for m in messages_of(again))

    services.submit(job)
    job = services.refresh(job)
    assert job.items.get(custom_id="again-1").state == ItemState.SUCCEEDED
    assert 'data-action="retry_failed"' not in content(admin_client.get(change_url(job)))


def test_retry_expired_sends_only_what_never_ran(
    admin_client: Client,
    openai_emulator: Any,  # noqa: F811
    settings: Any,
) -> None:
    # With retries of expired requests off, they stay expired until an operator acts.
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "RETRY": {"MAX_ATTEMPTS": 1}}
    openai_emulator.emulator.stall_request("late-0", times=1)
    job = submitted_job(openai_emulator, 2, name="late")
    openai_emulator.emulator.advance(86_400 + 60)
    job = services.refresh(job)
    assert job.items.get(custom_id="late-0").state == ItemState.EXPIRED
    # The policy's limit holds on demand too: one attempt allowed, one made.
    assert 'data-action="retry_expired"' not in content(admin_client.get(change_url(job)))
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "RETRY": {"MAX_ATTEMPTS": 2}}
    assert 'data-action="retry_expired"' in content(admin_client.get(change_url(job)))
    response = run_action(admin_client, "retry_expired", [job])
    assert messages_of(response) == ["Expired requests sent again for 1 job: late."]
    services.submit(job)
    job = services.refresh(job)
    assert job.state == JobState.FINISHED
    assert list(job.batches.get(part=2).items.values_list("custom_id", flat=True)) == ["late-0"]
    assert job.items.get(custom_id="late-0").state == ItemState.SUCCEEDED


BATCHES = "admin:openai_batches_providerbatch_changelist"


def test_the_provider_batch_list_is_read_only_and_finds_a_batch_by_id(
    admin_client: Client,
) -> None:
    job = make_job(3, name="parts")
    set_part(job, state=JobState.FINISHED, provider_batch_id="batch_first")
    part = set_part(
        job,
        part=2,
        state=JobState.SUBMITTED,
        provider_status=BatchStatus.IN_PROGRESS,
        provider_batch_id="batch_second",
        request_count_total=2,
        request_count_completed=1,
    )
    html = content(admin_client.get(reverse(BATCHES)))
    assert "batch_first" in html and "batch_second" in html
    assert f'{change_url(job)}">#{job.pk} parts</a>' in html
    found = admin_client.get(reverse(BATCHES), {"q": "second"})
    assert [b.pk for b in found.context["cl"].result_list] == [part.pk]
    running = admin_client.get(reverse(BATCHES), {"provider_status__exact": "in_progress"})
    assert [b.pk for b in running.context["cl"].result_list] == [part.pk]
    for params, expected in (
        ({"q": "parts"}, 2),  # the job's name
        ({"reason__exact": "split"}, 1),
        ({"state__exact": "finished"}, 1),
        ({"account__exact": "default"}, 2),
    ):
        listed = admin_client.get(reverse(BATCHES), params).context["cl"].result_list
        assert len(listed) == expected, params
    assert found.context["action_form"] is None  # no bulk actions, not even delete

    page_url = reverse("admin:openai_batches_providerbatch_change", args=[part.pk])
    page = content(admin_client.get(page_url))
    assert "batch_second" in page
    assert 'name="provider_batch_id"' not in page and 'name="_save"' not in page
    assert admin_client.post(page_url, {"provider_batch_id": "x"}).status_code == 403
    assert admin_client.get(reverse("admin:openai_batches_providerbatch_add")).status_code == 403
    delete_url = reverse("admin:openai_batches_providerbatch_delete", args=[part.pk])
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 403
    part.refresh_from_db()
    assert part.provider_batch_id == "batch_second"


def test_the_provider_batch_list_costs_constant_queries(admin_client: Client) -> None:
    def count() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert admin_client.get(reverse(BATCHES)).status_code == 200
        return len(ctx.captured_queries)

    set_part(make_job(1, name="a"), provider_batch_id="batch_a")
    one = count()
    for i in range(15):
        job = make_job(1, name=f"m{i}")
        set_part(job, state=JobState.FINISHED, provider_batch_id=f"batch_{i}")
        set_part(job, part=2, provider_batch_id=f"batch_{i}b")
    assert count() == one


def test_a_finished_job_is_deleted_with_its_batches_and_attempts(
    admin_client: Client,
    openai_emulator: Any,  # noqa: F811
) -> None:
    job = submitted_job(openai_emulator, 2, name="gone")
    job = services.refresh(job)
    assert job.state == JobState.FINISHED and job.batches.exists()
    response = admin_client.post(
        reverse("admin:openai_batches_batchjob_delete", args=[job.pk]), {"post": "yes"}
    )
    assert response.status_code == 302
    assert not BatchJob.objects.filter(pk=job.pk).exists()
    assert not ProviderBatch.objects.exists() and not RequestAttempt.objects.exists()
