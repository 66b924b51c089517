"""Adding items: validate everything first, report every problem, save nothing when wrong."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser

from openai_batches import services
from openai_batches.exceptions import (
    InvalidStateError,
    LimitExceeded,
    OpenAIBatchesError,
    Problem,
    ValidationError,
)
from openai_batches.jsonl import dumps_line, write_jsonl
from openai_batches.models import BatchJob, Endpoint, JobState, RequestItem
from openai_batches.services import add_items, add_items_from_jsonl, create_job
from tests.testapp.models import Article

pytestmark = pytest.mark.django_db

MODEL = "gpt-4o-mini"


def item(n: int | str, **overrides: Any) -> dict[str, Any]:
    """A valid chat-completions item."""
    data: dict[str, Any] = {
        "custom_id": f"req-{n}",
        "body": {"model": MODEL, "messages": [{"role": "user", "content": f"Say {n}"}]},
    }
    data.update(overrides)
    return data


def input_line(data: dict[str, Any], endpoint: str = Endpoint.CHAT_COMPLETIONS) -> dict[str, Any]:
    return {
        "custom_id": data["custom_id"],
        "method": "POST",
        "url": data.get("url", endpoint),
        "body": data["body"],
    }


def nbytes(items: list[dict[str, Any]], endpoint: str = Endpoint.CHAT_COMPLETIONS) -> int:
    """Bytes of the JSONL upload: one ``dumps_line`` per item plus its newline."""
    return sum(len(dumps_line(input_line(i, endpoint)).encode("utf-8")) + 1 for i in items)


def row(job: BatchJob) -> dict[str, Any]:
    """The job's database row, every column."""
    return BatchJob.objects.filter(pk=job.pk).values().get()


def where(err: ValidationError) -> list[tuple[int | None, str | None]]:
    return [(p.index, p.field) for p in err.problems]


@pytest.fixture
def job() -> BatchJob:
    return create_job(name="test")


# --- the acceptance test ----------------------------------------------------------------------


def test_ten_items_with_three_problems_raise_one_error_and_save_nothing(job: BatchJob) -> None:
    items = [item(i) for i in range(10)]
    items[2]["body"] = {"messages": []}  # no model
    items[5]["url"] = "/v1/embeddings"  # not the job's endpoint
    items[8]["custom_id"] = "req-1"  # duplicate of item 1
    before = row(job)

    with pytest.raises(ValidationError) as info:
        add_items(job, items)

    err = info.value
    assert type(err) is ValidationError
    assert where(err) == [(2, "body.model"), (5, "url"), (8, "custom_id")]
    assert [p.line for p in err.problems] == [3, 6, 9]
    message = str(err)
    assert message.startswith("3 problem(s) in the batch input; nothing was saved")
    assert "item 2 (line 3), body.model: is required" in message
    assert "item 5 (line 6), url: '/v1/embeddings' does not match" in message
    assert "item 8 (line 9), custom_id: 'req-1' is used more than once" in message
    # Nothing saved: no items, the job row untouched (counters, model, everything).
    assert RequestItem.objects.count() == 0
    assert row(job) == before
    assert before["item_count"] == 0
    assert before["input_bytes"] == 0
    assert before["model"] == ""
    # The in-memory job is untouched too.
    assert (job.item_count, job.input_bytes, job.model) == (0, 0, "")


def test_failed_add_leaves_earlier_items_and_counters_alone(job: BatchJob) -> None:
    add_items(job, [item("a"), item("b")])
    before = row(job)
    ids_before = list(RequestItem.objects.values_list("pk", "custom_id"))
    items = [item(i) for i in range(10)]
    items[0]["method"] = "GET"
    items[4]["body"] = "not an object"
    items[9] = ["not", "a", "dict"]

    with pytest.raises(ValidationError) as info:
        add_items(job, items)

    assert where(info.value) == [(0, "method"), (4, "body"), (9, None)]
    assert list(RequestItem.objects.values_list("pk", "custom_id")) == ids_before
    assert RequestItem.objects.count() == 2
    assert row(job) == before
    assert (before["item_count"], before["model"]) == (2, MODEL)


def test_nothing_saved_when_the_problem_comes_after_a_flushed_chunk(
    job: BatchJob, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services.items, "_INSERT_CHUNK", 3)  # rows are inserted while validating
    items = [item(i) for i in range(10)]
    items[9]["body"] = {"model": "gpt-4o"}  # a second model, after three chunks went in
    before = row(job)
    with pytest.raises(ValidationError) as info:
        add_items(job, items)
    assert where(info.value) == [(9, "body.model")]
    assert RequestItem.objects.count() == 0
    assert row(job) == before


# --- each rule --------------------------------------------------------------------------------


def test_duplicate_custom_id_within_the_input(job: BatchJob) -> None:
    with pytest.raises(ValidationError) as info:
        add_items(job, [item("x"), item("y"), item("x"), item("x")])
    assert where(info.value) == [(2, "custom_id"), (3, "custom_id")]
    assert "'req-x' is used more than once" in info.value.problems[0].message
    assert RequestItem.objects.count() == 0


def test_duplicate_custom_id_against_an_earlier_call(job: BatchJob) -> None:
    add_items(job, [item("a"), item("b")])
    before = row(job)
    with pytest.raises(ValidationError) as info:
        add_items(job, [item("c"), item("b")])
    assert where(info.value) == [(1, "custom_id")]
    assert "'req-b' is already in the job" in info.value.problems[0].message
    assert sorted(RequestItem.objects.values_list("custom_id", flat=True)) == ["req-a", "req-b"]
    assert row(job) == before


def test_duplicate_against_an_earlier_call_in_an_early_chunk(
    job: BatchJob, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_items(job, [item(1)])
    monkeypatch.setattr(services.items, "_INSERT_CHUNK", 2)
    with pytest.raises(ValidationError) as info:
        add_items(job, [item(0), item(1), item(2), item(3)])
    assert where(info.value) == [(1, "custom_id")]
    assert RequestItem.objects.count() == 1


def test_duplicate_against_an_earlier_call_is_reported_with_other_problems(
    job: BatchJob,
) -> None:
    # "One error that lists every problem": the clash with a stored item must not be
    # dropped because another item is also wrong.
    add_items(job, [item("a")])
    items = [item("a"), item("b", body={"messages": []})]
    with pytest.raises(ValidationError) as info:
        add_items(job, items)
    assert sorted(where(info.value)) == [(0, "custom_id"), (1, "body.model")]
    assert RequestItem.objects.count() == 1


def test_same_custom_id_in_another_job_is_fine(job: BatchJob) -> None:
    other = create_job()
    add_items(other, [item(1)])
    assert add_items(job, [item(1)]) == 1


@pytest.mark.parametrize("url", ["/v1/embeddings", "/v1/chat/completions/", "", None])
def test_url_must_match_the_endpoint(job: BatchJob, url: Any) -> None:
    with pytest.raises(ValidationError) as info:
        add_items(job, [item(0), item(1, url=url)])
    assert where(info.value) == [(1, "url")]
    assert "does not match the job's endpoint '/v1/chat/completions'" in str(info.value)


def test_url_equal_to_the_endpoint_or_omitted_is_fine() -> None:
    job = create_job(endpoint=Endpoint.EMBEDDINGS)
    body = {"model": "text-embedding-3-small", "input": "x"}
    add_items(job, [{"custom_id": "a", "body": body, "url": "/v1/embeddings"}])
    add_items(job, [{"custom_id": "b", "body": body}])
    assert set(RequestItem.objects.values_list("url", flat=True)) == {"/v1/embeddings"}


@pytest.mark.parametrize(
    "body", [{}, {"messages": []}, {"model": ""}, {"model": None}, {"model": 4}]
)
def test_model_is_required(job: BatchJob, body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as info:
        add_items(job, [item(0, body=body)])
    assert where(info.value) == [(0, "body.model")]


def test_one_model_per_job_within_the_input(job: BatchJob) -> None:
    items = [item(0), item(1, body={"model": "gpt-4o"}), item(2), item(3, body={"model": "o3"})]
    with pytest.raises(ValidationError) as info:
        add_items(job, items)
    assert where(info.value) == [(1, "body.model"), (3, "body.model")]
    assert "'gpt-4o' differs from 'gpt-4o-mini'" in info.value.problems[0].message
    assert RequestItem.objects.count() == 0


def test_one_model_per_job_across_calls(job: BatchJob) -> None:
    add_items(job, [item(0)])
    before = row(job)
    with pytest.raises(ValidationError) as info:
        add_items(job, [item(1, body={"model": "gpt-4o"})])
    assert where(info.value) == [(0, "body.model")]
    assert "differs from 'gpt-4o-mini'" in str(info.value)
    assert row(job) == before


def test_model_check_uses_the_stored_job_not_a_stale_instance(job: BatchJob) -> None:
    add_items(BatchJob.objects.get(pk=job.pk), [item(0)])  # job (in memory) still says ""
    with pytest.raises(ValidationError):
        add_items(job, [item(1, body={"model": "gpt-4o"})])


@pytest.mark.parametrize(
    ("body", "kind"),
    [(None, "missing"), ([1, 2], "a list"), ("hello", "a str"), (7, "a int")],
)
def test_body_must_be_an_object(job: BatchJob, body: Any, kind: str) -> None:
    data = item(0)
    if body is None:
        del data["body"]
    else:
        data["body"] = body
    with pytest.raises(ValidationError) as info:
        add_items(job, [data])
    assert where(info.value) == [(0, "body")]
    assert f"must be a JSON object, got {kind}" in info.value.problems[0].message


@pytest.mark.parametrize("bad", [None, "req-1", ["custom_id", "x"], 3])
def test_item_must_be_an_object(job: BatchJob, bad: Any) -> None:
    with pytest.raises(ValidationError) as info:
        add_items(job, [item(0), bad, item(2)])
    assert where(info.value) == [(1, None)]
    assert f"must be an object, not {type(bad).__name__}" in info.value.problems[0].message


@pytest.mark.parametrize("custom_id", ["", "   ", None, 12, "x" * 256])
def test_custom_id_must_be_a_short_non_empty_string(job: BatchJob, custom_id: Any) -> None:
    with pytest.raises(ValidationError) as info:
        add_items(job, [item(0, custom_id=custom_id)])
    assert where(info.value) == [(0, "custom_id")]


def test_missing_custom_id(job: BatchJob) -> None:
    data = item(0)
    del data["custom_id"]
    with pytest.raises(ValidationError) as info:
        add_items(job, [data])
    assert where(info.value) == [(0, "custom_id")]


def test_custom_id_of_255_characters_is_fine(job: BatchJob) -> None:
    add_items(job, [item(0, custom_id="x" * 255)])
    assert RequestItem.objects.get().custom_id == "x" * 255


def test_too_long_custom_id_names_its_length(job: BatchJob) -> None:
    with pytest.raises(ValidationError) as info:
        add_items(job, [item(0, custom_id="x" * 300)])
    assert "is 300 characters; at most 255" in info.value.problems[0].message


@pytest.mark.parametrize("method", ["GET", "post", "PUT", None])
def test_method_must_be_post(job: BatchJob, method: Any) -> None:
    with pytest.raises(ValidationError) as info:
        add_items(job, [item(0, method=method)])
    assert where(info.value) == [(0, "method")]


def test_method_post_explicit_or_omitted_is_fine(job: BatchJob) -> None:
    add_items(job, [item(0, method="POST"), item(1)])
    assert set(RequestItem.objects.values_list("method", flat=True)) == {"POST"}


def test_several_problems_on_one_item_are_all_listed(job: BatchJob) -> None:
    bad = {"custom_id": "", "method": "GET", "url": "/v1/videos", "body": []}
    with pytest.raises(ValidationError) as info:
        add_items(job, [bad])
    assert where(info.value) == [(0, "custom_id"), (0, "method"), (0, "url"), (0, "body")]


# --- limits -----------------------------------------------------------------------------------


def test_over_max_requests_raises_limit_exceeded(job: BatchJob, settings) -> None:
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "MAX_REQUESTS_PER_JOB": 3}
    with pytest.raises(LimitExceeded) as info:
        add_items(job, [item(i) for i in range(5)])
    assert isinstance(info.value, ValidationError)
    assert where(info.value) == [(3, None)]  # reported once, at the first item over
    assert "exceed 3 requests" in str(info.value)
    assert RequestItem.objects.count() == 0


def test_exactly_max_requests_is_fine(job: BatchJob, settings) -> None:
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "MAX_REQUESTS_PER_JOB": 3}
    assert add_items(job, [item(i) for i in range(3)]) == 3
    with pytest.raises(LimitExceeded) as info:
        add_items(job, [item(3)])  # counts the items already in the job
    assert where(info.value) == [(0, None)]
    assert row(job)["item_count"] == 3


def test_max_requests_counts_earlier_calls(job: BatchJob, settings) -> None:
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "MAX_REQUESTS_PER_JOB": 3}
    add_items(job, [item(0), item(1)])
    with pytest.raises(LimitExceeded) as info:
        add_items(job, [item(2), item(3)])
    assert where(info.value) == [(1, None)]
    assert RequestItem.objects.count() == 2


def test_a_job_over_one_batchs_bytes_is_taken_whole_for_splitting(job: BatchJob, settings) -> None:
    items = [item(i) for i in range(4)]
    size = nbytes(items)
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "MAX_FILE_BYTES": size - 1}
    assert add_items(job, items) == 4
    assert row(job)["input_bytes"] == size
    # Each item knows its own line's size, so submit can cut parts without re-encoding.
    assert sum(RequestItem.objects.values_list("nbytes", flat=True)) == size


def test_one_line_over_max_file_bytes_raises_naming_it(job: BatchJob, settings) -> None:
    items = [item(0), item(1, body={"model": "gpt-4o-mini", "messages": [], "x": "y" * 500})]
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "MAX_FILE_BYTES": nbytes(items[:1])}
    with pytest.raises(ValidationError) as info:
        add_items(job, items)
    assert where(info.value) == [(1, None)]
    assert "one batch takes at most" in str(info.value)
    assert RequestItem.objects.count() == 0


def test_limit_with_other_problems_is_still_limit_exceeded(job: BatchJob, settings) -> None:
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "MAX_REQUESTS_PER_JOB": 2}
    items = [item(0, method="GET"), item(1), item(2)]
    with pytest.raises(LimitExceeded) as info:
        add_items(job, items)
    assert where(info.value) == [(0, "method"), (2, None)]


def test_many_problems_are_capped_and_marked_truncated(job: BatchJob) -> None:
    with pytest.raises(ValidationError) as info:
        add_items(job, [item(i, method="GET") for i in range(1005)])
    err = info.value
    assert err.truncated
    assert len(err.problems) == 1000
    assert "1000 problem(s)" in str(err)
    assert "... and 950 more" in str(err)
    assert "validation stopped early" in str(err)
    assert RequestItem.objects.count() == 0


# --- state ------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", [s for s in JobState.values if s != JobState.DRAFT])
def test_adding_to_a_non_draft_job_raises_invalid_state(state: str) -> None:
    job = create_job()
    BatchJob.objects.filter(pk=job.pk).update(state=state)
    before = row(job)
    # ``job`` in memory still says draft: the service must read the stored state.
    with pytest.raises(InvalidStateError) as info:
        add_items(job, [item(0)])
    assert info.value.job_id == job.pk
    assert info.value.state == state
    assert "draft" in str(info.value)
    assert isinstance(info.value, OpenAIBatchesError)
    assert RequestItem.objects.count() == 0
    assert row(job) == before


def test_invalid_state_wins_over_invalid_items() -> None:
    job = create_job()
    BatchJob.objects.filter(pk=job.pk).update(state=JobState.SUBMITTED)
    with pytest.raises(InvalidStateError):
        add_items(job, [None])


# --- success ----------------------------------------------------------------------------------


def test_successful_add_sets_counters_bytes_and_model(job: BatchJob) -> None:
    items = [item(i) for i in range(5)]
    items[3]["body"]["messages"][0]["content"] = "Résumé, naïve, 日本語, 🎉"  # multi-byte UTF-8
    assert add_items(job, items) == 5

    expected = nbytes(items)
    assert (job.item_count, job.input_bytes, job.model) == (5, expected, MODEL)
    stored = row(job)
    assert (stored["item_count"], stored["input_bytes"], stored["model"]) == (5, expected, MODEL)

    # input_bytes is exactly the size of the JSONL written from the stored rows.
    buffer = io.BytesIO()
    count, size = write_jsonl(
        (i.as_input_line() for i in RequestItem.objects.filter(job=job).order_by("pk")), buffer
    )
    assert (count, size) == (5, expected)
    assert len(buffer.getvalue()) == expected
    assert buffer.getvalue().count(b"\n") == 5


def test_successful_add_stores_each_item(job: BatchJob) -> None:
    items = [item(i) for i in range(3)]
    add_items(job, items)
    stored = list(RequestItem.objects.filter(job=job).order_by("pk"))
    assert [i.custom_id for i in stored] == ["req-0", "req-1", "req-2"]
    assert [i.as_input_line() for i in stored] == [input_line(i) for i in items]
    assert {i.state for i in stored} == {"pending"}


def test_adds_accumulate_across_calls(job: BatchJob) -> None:
    first, second = [item(0), item(1)], [item(2), item(3), item(4)]
    assert add_items(job, first) == 2
    assert add_items(job, second) == 3
    assert (job.item_count, job.input_bytes) == (5, nbytes(first + second))
    stored = row(job)
    assert (stored["item_count"], stored["input_bytes"]) == (5, nbytes(first + second))
    assert RequestItem.objects.filter(job=job).count() == 5


def test_accepts_any_iterable(job: BatchJob) -> None:
    assert add_items(job, (item(i) for i in range(4))) == 4
    assert add_items(job, []) == 0
    assert row(job)["item_count"] == 4


def test_body_is_copied_not_shared(job: BatchJob) -> None:
    data = item(0)
    add_items(job, [data])
    data["body"]["model"] = "changed"
    assert RequestItem.objects.get().body["model"] == MODEL


def test_items_link_to_host_rows(job: BatchJob) -> None:
    a = Article.objects.create(title="One")
    b = Article.objects.create(title="Two")
    add_items(job, [item(0, object=a), item(1, object=b), item(2)])
    stored = {i.custom_id: i for i in RequestItem.objects.all()}
    assert stored["req-0"].content_object == a
    assert stored["req-1"].content_object == b
    assert stored["req-2"].content_object is None
    assert "object" not in stored["req-0"].as_input_line()["body"]


def test_unsaved_link_target_is_refused_and_nothing_is_saved(job: BatchJob) -> None:
    with pytest.raises(ValidationError) as info:
        add_items(job, [item(0), item(1, object=Article(title="unsaved"))])
    assert [(p.index, p.field) for p in info.value.problems] == [(1, "object")]
    assert "saved model instance" in info.value.problems[0].message
    assert RequestItem.objects.count() == 0


# --- JSONL input ------------------------------------------------------------------------------


JSONL_OK = "\n".join(dumps_line(input_line(item(i))) for i in range(3)) + "\n"


@pytest.mark.parametrize(
    "stream",
    [
        io.BytesIO(JSONL_OK.encode()),
        io.StringIO(JSONL_OK),
        JSONL_OK.splitlines(keepends=True),
    ],
    ids=["bytes", "text", "list"],
)
def test_add_items_from_jsonl(job: BatchJob, stream: Any) -> None:
    assert add_items_from_jsonl(job, stream) == 3
    assert row(job)["input_bytes"] == len(JSONL_OK.encode()) == nbytes([item(i) for i in range(3)])
    assert list(RequestItem.objects.values_list("custom_id", flat=True)) == [
        "req-0",
        "req-1",
        "req-2",
    ]


def test_jsonl_invalid_json_reports_its_line_counting_blank_lines(job: BatchJob) -> None:
    lines = [
        dumps_line(input_line(item(0))),  # line 1
        "",  # line 2
        "   ",  # line 3
        '{"custom_id": "req-1", "body": ',  # line 4: broken
        dumps_line(input_line(item(2))),  # line 5
    ]
    stream = io.BytesIO(("\n".join(lines) + "\n").encode())
    with pytest.raises(ValidationError) as info:
        add_items_from_jsonl(job, stream)
    [problem] = info.value.problems
    assert problem.line == 4
    assert problem.index == 3
    assert problem.field is None
    assert "not valid JSON" in problem.message
    assert "line 4" in str(info.value)
    assert RequestItem.objects.count() == 0


def test_jsonl_item_problems_report_editor_line_numbers(job: BatchJob) -> None:
    lines = [
        dumps_line(input_line(item(0))),  # line 1
        "",  # line 2
        dumps_line({**input_line(item(1)), "url": "/v1/embeddings"}),  # line 3
        "[1, 2]",  # line 4
        dumps_line(input_line(item(0))),  # line 5: duplicate of line 1
    ]
    with pytest.raises(ValidationError) as info:
        add_items_from_jsonl(job, io.StringIO("\n".join(lines)))
    assert [(p.line, p.field) for p in info.value.problems] == [
        (3, "url"),
        (4, None),
        (5, "custom_id"),
    ]
    assert RequestItem.objects.count() == 0


# --- create_job -------------------------------------------------------------------------------


def test_create_job_defaults(django_user_model) -> None:
    user = django_user_model.objects.create_user("ann", password="x")
    job = create_job(name="n", metadata={"k": "v"}, owner=user)
    job.refresh_from_db()
    assert job.state == JobState.DRAFT
    assert job.endpoint == "/v1/chat/completions"
    assert job.completion_window == "24h"
    assert job.metadata == {"k": "v"}
    assert job.account == "default"
    assert job.owner == user


def test_create_job_ignores_an_anonymous_owner() -> None:
    assert create_job(owner=AnonymousUser()).owner is None


@pytest.mark.parametrize("endpoint", ["/v1/chat", "/chat/completions", "", "/v1/files"])
def test_create_job_rejects_an_unknown_endpoint(endpoint: str) -> None:
    with pytest.raises(ValidationError) as info:
        create_job(endpoint=endpoint)
    assert where(info.value) == [(None, "endpoint")]
    assert BatchJob.objects.count() == 0


@pytest.mark.parametrize("endpoint", Endpoint.values)
def test_create_job_accepts_every_batch_endpoint(endpoint: str) -> None:
    assert create_job(endpoint=endpoint).endpoint == endpoint


@pytest.mark.parametrize("window", ["48h", "1h", "", "24"])
def test_create_job_rejects_an_unknown_completion_window(window: str) -> None:
    with pytest.raises(ValidationError) as info:
        create_job(completion_window=window)
    assert where(info.value) == [(None, "completion_window")]
    assert BatchJob.objects.count() == 0


@pytest.mark.parametrize(
    ("metadata", "field"),
    [
        ({f"k{i}": "v" for i in range(17)}, "metadata"),
        ({"k" * 65: "v"}, "metadata." + "k" * 65),
        ({"key": "v" * 513}, "metadata.key"),
        ({"count": 3}, "metadata.count"),
        ({"flag": None}, "metadata.flag"),
        ({1: "v"}, "metadata.1"),
        (["a", "b"], "metadata"),
        ("k=v", "metadata"),
    ],
    ids=["17-pairs", "key-65", "value-513", "int-value", "none-value", "int-key", "list", "str"],
)
def test_create_job_validates_metadata(metadata: Any, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        create_job(metadata=metadata)
    assert where(info.value) == [(None, field)]
    assert BatchJob.objects.count() == 0


def test_create_job_accepts_metadata_at_the_limits() -> None:
    metadata = {f"k{i:02d}" + "x" * 61: "v" * 512 for i in range(16)}
    assert all(len(k) == 64 for k in metadata)
    job = create_job(metadata=metadata)
    job.refresh_from_db()
    assert job.metadata == metadata


def test_create_job_validates_the_account(settings) -> None:
    settings.OPENAI_BATCHES = {
        **settings.OPENAI_BATCHES,
        "ACCOUNTS": {"azure": {"API_KEY": "k", "BASE_URL": "http://localhost/v1"}},
    }
    with pytest.raises(ValidationError) as info:
        create_job(account="nope")
    assert where(info.value) == [(None, "account")]
    assert "'nope'" in str(info.value)
    assert "azure" not in str(info.value)  # configured names are not for API users
    assert BatchJob.objects.count() == 0
    assert create_job(account="azure").account == "azure"


def test_create_job_lists_every_problem_at_once() -> None:
    with pytest.raises(ValidationError) as info:
        create_job(
            endpoint="/v1/nope",
            completion_window="7d",
            metadata={"k": 1},
            account="ghost",
        )
    assert where(info.value) == [
        (None, "endpoint"),
        (None, "completion_window"),
        (None, "metadata.k"),
        (None, "account"),
    ]
    assert "4 problem(s)" in str(info.value)
    assert BatchJob.objects.count() == 0


def test_create_job_with_items() -> None:
    items = [item(i) for i in range(3)]
    job = create_job(name="with items", items=items)
    stored = row(job)
    assert (stored["item_count"], stored["input_bytes"], stored["model"]) == (
        3,
        nbytes(items),
        MODEL,
    )
    assert RequestItem.objects.filter(job=job).count() == 3


def test_create_job_with_bad_items_leaves_no_job() -> None:
    items = [item(i) for i in range(4)]
    items[1]["url"] = "/v1/responses"
    items[3]["body"] = {"model": "other"}
    with pytest.raises(ValidationError) as info:
        create_job(name="doomed", items=items)
    assert where(info.value) == [(1, "url"), (3, "body.model")]
    assert BatchJob.objects.count() == 0
    assert RequestItem.objects.count() == 0


def test_create_job_with_items_over_the_limit_leaves_no_job(settings) -> None:
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "MAX_REQUESTS_PER_JOB": 1}
    with pytest.raises(LimitExceeded):
        create_job(items=[item(0), item(1)])
    assert BatchJob.objects.count() == 0


# --- the error object -------------------------------------------------------------------------


def test_problem_as_dict(job: BatchJob) -> None:
    with pytest.raises(ValidationError) as info:
        add_items(job, [item(0), item(1, url="/v1/embeddings")])
    [problem] = info.value.problems
    assert problem.as_dict() == {
        "index": 1,
        "line": 2,
        "field": "url",
        "message": problem.message,
    }
    assert problem.message.startswith("'/v1/embeddings' does not match")


def test_problem_as_dict_without_an_index() -> None:
    with pytest.raises(ValidationError) as info:
        create_job(endpoint="/v1/x")
    d = info.value.problems[0].as_dict()
    assert d["index"] is None
    assert d["line"] is None
    assert d["field"] == "endpoint"
    assert "'/v1/x' is not one of" in d["message"]
    assert str(info.value.problems[0]).startswith("input, endpoint: ")


def test_problem_str_without_a_field() -> None:
    assert str(Problem(4, None, "must be an object")) == "item 4 (line 5), item: must be an object"


def test_error_message_lists_every_problem(job: BatchJob) -> None:
    items = [item(0, method="GET"), item(1, custom_id=""), item(2, body=[])]
    with pytest.raises(ValidationError) as info:
        add_items(job, items)
    message = str(info.value)
    assert message.splitlines()[0] == "3 problem(s) in the batch input; nothing was saved:"
    assert message.splitlines()[1:] == [f"  - {p}" for p in info.value.problems]
    assert not info.value.truncated


# --- text that is not valid Unicode (issue 10, item 12) -------------------------------------


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"custom_id": "req-\ud800"}, "custom_id"),
        ({"custom_id": "\udfff"}, "custom_id"),
        (
            {"body": {"model": MODEL, "messages": [{"role": "user", "content": "x\ud800"}]}},
            "body.messages.0.content",
        ),
        ({"body": {"model": "gpt\udc00"}}, "body.model"),
        ({"body": {"model": MODEL, "\ud800key": 1}}, "body.\\ud800key"),
    ],
    ids=["custom_id", "custom_id-low", "content", "model", "key"],
)
def test_a_lone_surrogate_is_a_problem_naming_line_and_field(
    job: BatchJob, bad: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as info:
        add_items(job, [item(0), item(1, **bad)])
    [problem] = info.value.problems
    assert (problem.index, problem.line, problem.field) == (1, 2, field)
    assert "surrogate" in problem.message
    # The message itself must be printable as UTF-8 (the API renders it).
    str(info.value).encode("utf-8")
    assert RequestItem.objects.count() == 0 and row(job)["item_count"] == 0


def test_a_surrogate_escape_in_jsonl_names_its_line(job: BatchJob) -> None:
    lines = [
        dumps_line(input_line(item(0))),
        '{"custom_id": "a\\ud800", "body": {"model": "gpt-4o-mini"}}',
        '{"custom_id": "b", "body": {"model": "gpt-4o-mini", "messages": ["\\udc00"]}}',
        '{"custom_id": "c", "body": {"model": "gpt-4o-mini", "messages": ["\\ud83d\\ude00"]}}',
    ]
    with pytest.raises(ValidationError) as info:
        add_items_from_jsonl(job, io.StringIO("\n".join(lines)))
    assert [(p.line, p.field) for p in info.value.problems] == [
        (2, "custom_id"),
        (3, "body.messages.0"),
    ]
    assert RequestItem.objects.count() == 0


def test_invalid_utf8_in_a_jsonl_upload_names_its_line_instead_of_being_replaced(
    job: BatchJob,
) -> None:
    good = dumps_line(input_line(item(0))).encode()
    # A surrogate encoded as UTF-8 bytes (CESU-8) and a truncated sequence.
    bad = b'{"custom_id": "x\xed\xa0\x80", "body": {"model": "gpt-4o-mini"}}'
    cut = b'{"custom_id": "y\xc3", "body": {"model": "gpt-4o-mini"}}'
    with pytest.raises(ValidationError) as info:
        add_items_from_jsonl(job, io.BytesIO(good + b"\n" + bad + b"\n" + cut + b"\n"))
    assert [(p.line, p.field) for p in info.value.problems] == [(2, None), (3, None)]
    assert all("UTF-8" in p.message for p in info.value.problems)
    assert RequestItem.objects.count() == 0


def test_a_surrogate_in_metadata_is_a_problem() -> None:
    with pytest.raises(ValidationError) as info:
        create_job(metadata={"k": "v\ud800"})
    assert where(info.value) == [(None, "metadata.k")]
    assert "surrogate" in info.value.problems[0].message
    with pytest.raises(ValidationError) as info:
        create_job(metadata={"k\udc00": "v"})
    assert where(info.value) == [(None, "metadata.k\\udc00")]
    assert BatchJob.objects.count() == 0


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"temperature": float("nan")}, "body.temperature"),
        ({"temperature": float("inf")}, "body.temperature"),
        ({"stop": {"a", "b"}}, "body.stop"),
        ({"messages": [{"role": "user", "content": b"bytes"}]}, "body.messages.0.content"),
        ({"when": __import__("datetime").date(2025, 1, 1)}, "body.when"),
        ({("tuple", "key"): 1}, "body"),
    ],
    ids=["nan", "inf", "set", "bytes", "date", "tuple-key"],
)
def test_a_body_that_is_not_json_is_a_problem_not_a_crash(
    job: BatchJob, extra: dict[Any, Any], field: str
) -> None:
    """The Python API takes any mapping; what JSON (and so the provider and the database)
    cannot carry is reported like any other problem, with the path to it."""
    with pytest.raises(ValidationError) as info:
        add_items(job, [item(0), {"custom_id": "x", "body": {"model": MODEL, **extra}}])
    [problem] = info.value.problems
    assert (problem.line, problem.field) == (2, field)
    assert "JSON" in problem.message
    assert RequestItem.objects.count() == 0 and row(job)["item_count"] == 0


# --- moderations: the API defaults the model ---------------------------------------------


def moderation(n: int, **body: Any) -> dict[str, Any]:
    return {"custom_id": f"m-{n}", "body": {"input": f"text {n}", **body}}


def test_moderations_lines_without_a_model_are_accepted() -> None:
    """``/v1/moderations`` defaults ``model`` to omni-moderation-latest, so a line without
    one is valid; it is stored as given (the provider fills the model in)."""
    job = create_job(endpoint=Endpoint.MODERATIONS)
    add_items(job, [moderation(0), moderation(1, model="omni-moderation-latest")])
    assert RequestItem.objects.get(custom_id="m-0").body == {"input": "text 0"}
    assert row(job)["model"] == "omni-moderation-latest"


def test_moderations_without_a_model_count_as_the_default_for_one_model_per_batch() -> None:
    job = create_job(endpoint=Endpoint.MODERATIONS)
    with pytest.raises(ValidationError) as info:
        add_items(job, [moderation(0), moderation(1, model="text-moderation-latest")])
    assert where(info.value) == [(1, "body.model")]
    assert "differs from 'omni-moderation-latest'" in str(info.value)


@pytest.mark.parametrize("model", ["", None, 4])
def test_a_moderations_model_given_must_still_be_a_non_empty_string(model: Any) -> None:
    job = create_job(endpoint=Endpoint.MODERATIONS)
    with pytest.raises(ValidationError) as info:
        add_items(job, [moderation(0, model=model)])
    assert where(info.value) == [(0, "body.model")]


def test_chat_lines_still_need_a_model(job: BatchJob) -> None:
    with pytest.raises(ValidationError) as info:
        add_items(job, [item(0, body={"messages": []})])
    assert where(info.value) == [(0, "body.model")]
