"""Batch validation failures: each code, with 1-based line numbers, via the SDK."""

from __future__ import annotations

from typing import Any

import pytest
from openai import OpenAI

from openai_batches.emulator import Emulator, Limits

from .conftest import create_batch, line


def failed_errors(
    client: OpenAI, lines: list[Any], endpoint: str = "/v1/chat/completions"
) -> list[Any]:
    batch = create_batch(client, lines, endpoint)
    done = client.batches.retrieve(batch.id)
    assert done.status == "failed"
    assert done.failed_at is not None
    assert done.output_file_id is None and done.error_file_id is None
    assert done.errors is not None and done.errors.object == "list"
    return [e.model_dump() for e in done.errors.data or []]


def test_invalid_json_line(client: OpenAI) -> None:
    errors = failed_errors(client, [line("a"), "{not json", line("c")])
    assert errors == [
        {
            "code": "invalid_json_line",
            "message": "This line is not parseable as valid JSON.",
            "param": None,
            "line": 2,
        }
    ]


def test_duplicate_custom_id(client: OpenAI) -> None:
    errors = failed_errors(client, [line("a"), line("b"), line("a")])
    assert [(e["code"], e["line"], e["param"]) for e in errors] == [
        ("duplicate_custom_id", 3, "custom_id")
    ]


def test_url_mismatch(client: OpenAI) -> None:
    errors = failed_errors(client, [line("a"), line("b", url="/v1/embeddings")])
    assert errors[0]["code"] == "url_mismatch"
    assert errors[0]["line"] == 2
    assert (
        errors[0]["message"]
        == "The URL provided for this request does not prefix-match the batch endpoint"
    )


def test_model_mismatch(client: OpenAI) -> None:
    errors = failed_errors(client, [line("a"), line("b", model="gpt-4o")])
    assert [(e["code"], e["line"], e["param"]) for e in errors] == [
        ("model_mismatch", 2, "body.model")
    ]


def test_method_must_be_post(client: OpenAI) -> None:
    bad = {**line("b"), "method": "GET"}
    errors = failed_errors(client, [line("a"), bad])
    assert [(e["code"], e["line"], e["param"]) for e in errors] == [("invalid_method", 2, "method")]


@pytest.mark.parametrize("key", ["custom_id", "method", "url", "body"])
def test_missing_keys(client: OpenAI, key: str) -> None:
    bad = line("b")
    del bad[key]
    errors = failed_errors(client, [line("a"), bad])
    assert [(e["code"], e["line"], e["param"]) for e in errors] == [
        ("missing_required_parameter", 2, key)
    ]


def test_empty_file(client: OpenAI) -> None:
    errors = failed_errors(client, ["", "   "])
    assert [(e["code"], e["line"]) for e in errors] == [("empty_file", None)]


def test_too_many_tasks(emu: Emulator, client: OpenAI) -> None:
    emu.limits.max_requests = 5
    errors = failed_errors(client, [line(f"r{i}") for i in range(6)])
    assert [(e["code"], e["line"]) for e in errors] == [("too_many_tasks", None)]


def test_too_many_tasks_at_the_real_limit(client: OpenAI) -> None:
    lines = [
        f'{{"custom_id":"r{i}","method":"POST","url":"/v1/embeddings","body":{{"model":"m","input":"x"}}}}'
        for i in range(50_001)
    ]
    errors = failed_errors(client, lines, "/v1/embeddings")
    assert [e["code"] for e in errors] == ["too_many_tasks"]


def test_too_many_bytes(emu: Emulator, client: OpenAI) -> None:
    # Upload under the limit, then lower it: the batch-time check sees an oversize file.
    file_id = client.files.create(
        file=(
            "in.jsonl",
            b'{"custom_id":"a","method":"POST","url":"/v1/chat/completions",'
            b'"body":{"model":"m","messages":[]}}\n',
        ),
        purpose="batch",
    ).id
    emu.limits.max_batch_file_bytes = 10
    batch = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = client.batches.retrieve(batch.id)
    assert done.status == "failed"
    assert done.errors is not None and done.errors.data is not None
    assert done.errors.data[0].code == "file_too_large"


def test_embeddings_input_cap(emu: Emulator, client: OpenAI) -> None:
    emu.limits.max_embedding_inputs = 5
    lines = [
        {
            "custom_id": f"e{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "text-embedding-3-small", "input": ["a", "b", "c"]},
        }
        for i in range(2)
    ]
    errors = failed_errors(client, lines, "/v1/embeddings")
    assert [e["code"] for e in errors] == ["too_many_embedding_inputs"]


def test_errors_report_every_bad_line(client: OpenAI) -> None:
    errors = failed_errors(client, ["oops", line("a"), line("a"), line("b", model="other")])
    assert [(e["code"], e["line"]) for e in errors] == [
        ("invalid_json_line", 1),
        ("duplicate_custom_id", 3),
        ("model_mismatch", 4),
    ]


def test_token_budget_counts_in_progress_batches(emu: Emulator, client: OpenAI) -> None:
    emu.set_timing("realistic")
    first = create_batch(client, [line(f"a{i}", "x" * 400) for i in range(10)])
    emu.advance(60)
    running = client.batches.retrieve(first.id)
    assert running.status == "in_progress"
    # Budget: room for the first batch but not for a second one while it runs.
    emu.set_token_budget("gpt-4o-mini", 1500)
    second = create_batch(client, [line(f"b{i}", "x" * 400) for i in range(10)])
    emu.advance(60)
    rejected = client.batches.retrieve(second.id)
    assert rejected.status == "failed"
    assert rejected.errors is not None and rejected.errors.data is not None
    err = rejected.errors.data[0]
    assert err.code == "token_limit_exceeded"
    assert err.line is None and err.param is None
    assert err.message == (
        "Enqueued token limit reached for gpt-4o-mini in organization org-emulator. "
        "Limit: 1,500 enqueued tokens. Please try again once some in_progress batches have "
        "been completed."
    )
    # Once the first batch finishes, its tokens stop counting.
    emu.advance(3600)
    assert client.batches.retrieve(first.id).status == "completed"
    third = create_batch(client, [line(f"c{i}", "x" * 400) for i in range(10)])
    emu.advance(60)
    assert client.batches.retrieve(third.id).status == "in_progress"
    # Other models are not capped.
    other = create_batch(client, [line(f"d{i}", "x" * 400, model="gpt-4o") for i in range(10)])
    emu.advance(60)
    assert client.batches.retrieve(other.id).status == "in_progress"


def test_limits_default_to_the_providers() -> None:
    limits = Limits()
    assert limits.max_requests == 50_000
    assert limits.max_batch_file_bytes == 200 * 1024 * 1024
