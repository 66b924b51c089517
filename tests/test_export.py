"""Export of a job's results as CSV and JSONL (openai_batches.export), streamed."""

from __future__ import annotations

import csv
import io
import json
import tracemalloc
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings

from openai_batches import services, structured
from openai_batches.export import BASE_COLUMNS, export_results
from openai_batches.models import BatchJob, Endpoint, ItemState, JobState, RequestItem
from openai_batches.testing import EmulatorHandle, running_emulator
from tests.test_structured import Person
from tests.testapp.models import Article

PRICES = {"gpt-4o-mini": {"input": 0.075, "cached_input": 0.0375, "output": 0.3}}


@pytest.fixture
def emu() -> Iterator[EmulatorHandle]:
    with running_emulator() as handle:
        yield handle


def finish(job: BatchJob) -> BatchJob:
    services.request_submit(job)
    services.submit(job)
    services.refresh(job)
    job.refresh_from_db()
    assert job.state == JobState.FINISHED, job.last_error
    return job


def text(chunks: Iterator[bytes]) -> str:
    return b"".join(chunks).decode("utf-8")


def chat(custom_id: str, content: str, **extra: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]},
        **extra,
    }


@pytest.mark.django_db(transaction=True)
def test_csv_and_jsonl_of_a_chat_job(emu: EmulatorHandle) -> None:
    article = Article.objects.create(title="kettle")
    job = services.create_job(
        endpoint=Endpoint.CHAT_COMPLETIONS,
        items=[chat("ok", "Hello there", object=article), chat("bad", "Hello")],
    )
    emu.fail_request("bad", code="invalid_prompt", message="Invalid prompt.")
    finish(job)
    with override_settings(OPENAI_BATCHES={**settings.OPENAI_BATCHES, "PRICES": PRICES}):
        rows = list(csv.DictReader(io.StringIO(text(export_results(job, "csv")))))
        lines = [json.loads(x) for x in text(export_results(job, "jsonl")).splitlines()]

    assert [r["custom_id"] for r in rows] == ["ok", "bad"]
    assert list(rows[0]) == list(BASE_COLUMNS)
    ok, bad = rows
    item = RequestItem.objects.get(job=job, custom_id="ok")
    assert (
        ok["state"] == "succeeded"
        and ok["answer"] == item.result.text
        and "Hello there" in ok["answer"]
    )
    assert ok["finish_reason"] == "stop" and ok["code"] == "" and ok["reason"] == ""
    assert int(ok["input_tokens"]) == item.input_tokens > 0
    assert int(ok["output_tokens"]) == item.output_tokens > 0
    expected = (
        Decimal(item.input_tokens) * Decimal("0.075") + Decimal(item.output_tokens) * Decimal("0.3")
    ) / 1_000_000
    assert Decimal(ok["cost"]) == expected.quantize(Decimal("0.000001"))
    assert ok["linked_object"] == f"testapp.article:{article.pk}"
    assert bad["state"] == "failed" and bad["code"] == "invalid_prompt"
    assert (
        bad["reason"] == "invalid_prompt: Invalid prompt."
        and bad["answer"] == ""
        and bad["cost"] == ""
    )

    assert [line["custom_id"] for line in lines] == ["ok", "bad"]
    assert lines[0]["text"] == item.result.text and lines[0]["tool_calls"] == []
    assert lines[0]["usage"]["input_tokens"] == item.input_tokens
    assert lines[0]["usage"]["total_tokens"] == item.input_tokens + item.output_tokens
    assert lines[0]["linked_object"] == f"testapp.article:{article.pk}"
    assert lines[1]["code"] == "invalid_prompt" and lines[1]["cost"] is None


@pytest.mark.django_db(transaction=True)
def test_structured_fields_become_columns(emu: EmulatorHandle) -> None:
    job = finish(
        structured.create_job(output_schema=Person, items=[chat("p1", "Ada"), chat("p2", "Bob")])
    )
    RequestItem.objects.filter(job=job, custom_id="p2").update(
        response={
            "choices": [
                {"index": 0, "message": {"content": '{"name": 1}'}, "finish_reason": "stop"}
            ]
        },
        parsed=None,  # the answer stored earlier no longer stands
    )
    rows = list(csv.DictReader(io.StringIO(text(export_results(job, "csv")))))
    fields = ["name", "born", "home.city", "home.postcode", "work", "tags", "score"]
    assert list(rows[0]) == [*BASE_COLUMNS, *fields]
    parsed = RequestItem.objects.select_related("job").get(job=job, custom_id="p1").result.parsed
    assert isinstance(parsed, Person)
    p1 = rows[0]
    assert p1["name"] == parsed.name and p1["born"] == parsed.born.isoformat()
    assert p1["home.city"] == parsed.home.city and json.loads(p1["tags"]) == parsed.tags
    assert float(p1["score"]) == parsed.score
    p2 = rows[1]
    assert (
        p2["code"] == "parse_failed"
        and p2["name"] == ""
        and "name: Input should be" in p2["reason"]
    )

    lines = [json.loads(x) for x in text(export_results(job, "jsonl")).splitlines()]
    assert lines[0]["parsed"]["home"]["city"] == parsed.home.city and lines[1]["parsed"] is None


@pytest.mark.django_db(transaction=True)
def test_other_endpoints_answers(emu: EmulatorHandle) -> None:
    emb = finish(
        services.create_job(
            endpoint=Endpoint.EMBEDDINGS,
            items=[
                {
                    "custom_id": "e",
                    "body": {
                        "model": "text-embedding-3-small",
                        "input": ["a", "b"],
                        "dimensions": 4,
                    },
                }
            ],
        )
    )
    row = next(csv.DictReader(io.StringIO(text(export_results(emb, "csv")))))
    vectors = json.loads(row["answer"])
    assert len(vectors) == 2 and len(vectors[0]) == 4
    line = json.loads(text(export_results(emb, "jsonl")))
    assert line["embeddings"] == vectors and "text" not in line

    mod = finish(
        services.create_job(
            endpoint=Endpoint.MODERATIONS,
            items=[
                {
                    "custom_id": "m",
                    "body": {"model": "omni-moderation-latest", "input": "emulator-flag"},
                }
            ],
        )
    )
    assert (
        next(csv.DictReader(io.StringIO(text(export_results(mod, "csv")))))["answer"]
        == '["violence"]'
    )
    assert json.loads(text(export_results(mod, "jsonl")))["moderation"][0]["flagged"] is True


@pytest.mark.django_db
def test_formula_cells_are_defused_in_csv_only() -> None:
    job = services.create_job(
        endpoint=Endpoint.CHAT_COMPLETIONS, items=[chat("=cmd|' /C calc'!A0", "x")]
    )
    RequestItem.objects.filter(job=job).update(
        state=ItemState.SUCCEEDED,
        status_code=200,
        response={
            "choices": [
                {
                    "index": 0,
                    "message": {"content": '=HYPERLINK("http://x")'},
                    "finish_reason": "stop",
                }
            ]
        },
    )
    row = next(csv.reader(io.StringIO(text(export_results(job, "csv"))).readlines()[1:]))
    assert row[0] == "'=cmd|' /C calc'!A0" and row[2] == '\'=HYPERLINK("http://x")'
    line = json.loads(text(export_results(job, "jsonl")))
    assert line["custom_id"] == "=cmd|' /C calc'!A0" and line["text"].startswith("=HYPERLINK")


@pytest.mark.django_db
def test_state_filter_and_bad_format() -> None:
    job = services.create_job(
        endpoint=Endpoint.CHAT_COMPLETIONS, items=[chat("a", "x"), chat("b", "y")]
    )
    RequestItem.objects.filter(job=job, custom_id="b").update(
        state=ItemState.EXPIRED, error={"code": "batch_expired", "message": "Too late."}
    )
    rows = list(csv.DictReader(io.StringIO(text(export_results(job, "csv", state="expired")))))
    assert [(r["custom_id"], r["reason"]) for r in rows] == [("b", "batch_expired: Too late.")]
    with pytest.raises(ValueError, match="format must be one of csv, jsonl"):
        export_results(job, "xlsx")


def _bulk_results(job: BatchJob, n: int) -> None:
    answer = "A fairly ordinary answer of about a hundred characters, repeated for every row of the export. "
    RequestItem.objects.bulk_create(
        [
            RequestItem(
                job=job,
                custom_id=f"row-{i:06d}",
                url=job.endpoint,
                body={"model": "gpt-4o-mini", "messages": []},
                state=ItemState.SUCCEEDED,
                status_code=200,
                response={
                    "choices": [
                        {
                            "index": 0,
                            "message": {"content": f"{answer}{i}"},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 20},
                },
                input_tokens=10,
                output_tokens=20,
            )
            for i in range(n)
        ],
        batch_size=2000,
    )


def _measure(job: BatchJob, fmt: str) -> tuple[int, int, int, int]:
    """(peak traced bytes, output bytes, chunks, lines) of one export."""
    tracemalloc.start()
    try:
        size = chunks = lines = 0
        for chunk in export_results(job, fmt):
            size += len(chunk)
            chunks += 1
            lines += chunk.count(b"\n")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, size, chunks, lines


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_export_memory_stays_flat_as_the_job_grows(fmt: str) -> None:
    small = BatchJob.objects.create(endpoint=Endpoint.CHAT_COMPLETIONS, model="gpt-4o-mini")
    big = BatchJob.objects.create(endpoint=Endpoint.CHAT_COMPLETIONS, model="gpt-4o-mini")
    _bulk_results(small, 2_000)
    _bulk_results(big, 10_000)
    small_peak, small_size, _, _ = _measure(small, fmt)
    big_peak, big_size, chunks, lines = _measure(big, fmt)
    assert lines == 10_000 + (1 if fmt == "csv" else 0)
    assert chunks >= 10_000 // 500  # written out as it goes, not in one piece
    assert big_size > 4.5 * small_size
    # Five times the rows, about the same peak: one chunk of rows from the database and one
    # of output, never the whole export.
    assert big_peak < 1.3 * small_peak + 256 * 1024, (small_peak, big_peak)


# -- the admin action ----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_admin_action_and_job_page_button_stream_the_export(
    emu: EmulatorHandle, admin_client: Any
) -> None:
    from django.urls import reverse

    job = finish(
        services.create_job(
            endpoint=Endpoint.CHAT_COMPLETIONS, name="Kettles", items=[chat("k1", "Hi")]
        )
    )
    other = services.create_job(endpoint=Endpoint.CHAT_COMPLETIONS, items=[chat("d1", "Hi")])
    changelist = reverse("admin:openai_batches_batchjob_changelist")
    response = admin_client.post(
        changelist, {"action": "export_results_csv", "_selected_action": [job.pk]}
    )
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == f'attachment; filename="kettles-{job.pk}-results.csv"'
    body = b"".join(response.streaming_content).decode()
    assert body.splitlines()[1].startswith("k1,succeeded,")

    jsonl = admin_client.post(
        changelist, {"action": "export_results_jsonl", "_selected_action": [job.pk]}
    )
    assert json.loads(b"".join(jsonl.streaming_content))["custom_id"] == "k1"

    both = admin_client.post(
        changelist,
        {"action": "export_results_csv", "_selected_action": [job.pk, other.pk]},
        follow=True,
    )
    assert "Select exactly one job to export its results." in both.content.decode()

    page = admin_client.get(
        reverse("admin:openai_batches_batchjob_change", args=[job.pk])
    ).content.decode()
    assert 'data-action="export_results_csv"' in page
    draft = admin_client.get(
        reverse("admin:openai_batches_batchjob_change", args=[other.pk])
    ).content.decode()
    assert 'data-action="export_results_csv"' not in draft  # nothing to export yet
    button = admin_client.post(
        reverse("admin:openai_batches_batchjob_object_action", args=[job.pk, "export_results_csv"])
    )
    assert button.streaming and b"k1,succeeded," in b"".join(button.streaming_content)


# -- the API endpoint ----------------------------------------------------------------------


def _error(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and {"type", "message", "problems"} <= set(body["error"])
    return dict(body["error"])


@pytest.mark.django_db(transaction=True)
def test_api_export_streams_csv_and_jsonl_for_the_owner_only(
    emu: EmulatorHandle, django_user_model: Any
) -> None:
    from django.urls import reverse
    from rest_framework.test import APIClient

    alice = django_user_model.objects.create_user("alice", password="pw")
    bob = django_user_model.objects.create_user("bob", password="pw")
    job = finish(
        services.create_job(
            endpoint=Endpoint.CHAT_COMPLETIONS,
            name="Kettles",
            owner=alice,
            items=[chat("k1", "Hi"), chat("k2", "Yo")],
        )
    )
    url = reverse("openai_batches_api:job-export", kwargs={"uuid": str(job.uuid)})
    api = APIClient()
    api.force_authenticate(alice)

    response = api.get(url)
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == f'attachment; filename="kettles-{job.pk}-results.csv"'
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [r["custom_id"] for r in rows] == ["k1", "k2"] and rows[0]["state"] == "succeeded"

    for kwargs in ({"format": "jsonl"}, {}):
        headers = {} if kwargs else {"HTTP_ACCEPT": "application/jsonl"}
        jsonl = api.get(url, kwargs, **headers)
        assert jsonl["Content-Type"] == "application/jsonl"
        lines = [json.loads(x) for x in b"".join(jsonl.streaming_content).splitlines()]
        assert [x["custom_id"] for x in lines] == ["k1", "k2"]

    only = api.get(url, {"state": "failed"})
    assert b"".join(only.streaming_content).decode().splitlines()[1:] == []

    bad = api.get(url, {"state": "nope"})
    assert bad.status_code == 400 and _error(bad)["problems"][0]["field"] == "state"
    wrong = api.get(url, HTTP_ACCEPT="application/json")
    assert wrong.status_code == 406 and _error(wrong)["type"] == "not_acceptable"

    other = APIClient()
    other.force_authenticate(bob)
    hidden = other.get(url)
    assert hidden.status_code == 404 and _error(hidden)["type"] == "not_found"
    assert APIClient().get(url).status_code in (401, 403)


@pytest.mark.django_db(transaction=True)
def test_a_model_removed_from_the_code_neither_crashes_nor_loses_stored_answers(
    emu: EmulatorHandle,
) -> None:
    from tests.test_structured import Sentiment

    job = finish(
        structured.create_job(output_schema=Sentiment, items=[chat("a", "x"), chat("b", "y")])
    )
    stored = RequestItem.objects.get(job=job, custom_id="a").parsed
    assert stored is not None
    RequestItem.objects.filter(job=job, custom_id="b").update(parsed=None)
    BatchJob.objects.filter(pk=job.pk).update(output_schema="tests.gone.Sentiment")
    job.refresh_from_db()

    rows = list(csv.DictReader(io.StringIO(text(export_results(job, "csv")))))
    assert list(rows[0]) == [*BASE_COLUMNS, "parsed"]
    assert json.loads(rows[0]["parsed"]) == stored and rows[0]["code"] == ""
    assert rows[1]["parsed"] == "" and rows[1]["code"] == "parse_failed"
    assert "tests.gone.Sentiment" in rows[1]["reason"] and "cannot be imported" in rows[1]["reason"]

    item = RequestItem.objects.select_related("job").get(job=job, custom_id="b")
    assert item.result.parsed is None and item.result.code == "parse_failed"
    item.refresh_from_db()
    assert item.parsed is None and item.parse_error == ""  # not stored: parses once it is back
