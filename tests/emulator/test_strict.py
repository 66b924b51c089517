"""The emulator is strict where the real API is, and only there: one test per rule.

Per-request body rules (:mod:`openai_batches.emulator.validation`): a line whose body its
endpoint refuses runs and gets a 400 in the error file (``response.status_code`` 400, an
``invalid_request_error`` naming the ``param``, ``error: null``), as the real Batch API
writes it; the batch still completes and the valid lines succeed. Each rule is checked over
HTTP with the official SDK, and each place where the reference is silent has a test that
the emulator does *not* refuse. Also here: result files expire 30 days after they are
written unless told otherwise, and the snapshot table the docs promise. File expiry on
uploads and ``output_expires_after`` are in ``test_expiry.py``, the rate-limit headers in
``test_http.py``, the snapshot per batch in ``test_lifecycle.py``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import OpenAI

from openai_batches.emulator import Emulator
from openai_batches.emulator.responses import SNAPSHOTS
from openai_batches.emulator.validation import RULES, check_body

from .conftest import create_batch, line, read_jsonl

DOCS = Path(__file__).resolve().parents[2] / "docs" / "reference" / "emulator.md"

GOOD = {
    "/v1/chat/completions": {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
    },
    "/v1/responses": {"model": "gpt-4o-mini", "input": "hi"},
    "/v1/embeddings": {"model": "text-embedding-3-small", "input": "hi"},
    "/v1/completions": {"model": "gpt-3.5-turbo-instruct", "prompt": "hi"},
    "/v1/moderations": {"model": "omni-moderation-latest", "input": "hi"},
    "/v1/images/generations": {"model": "dall-e-2", "prompt": "a cat"},
    "/v1/images/edits": {
        "model": "gpt-image-1",
        "prompt": "a hat",
        "images": [{"image_url": "https://example.com/cat.png"}],
    },
    "/v1/videos": {"model": "sora-2", "prompt": "a wave"},
}


def run(client: OpenAI, endpoint: str, bad_body: dict[str, Any]) -> dict[str, Any]:
    """Run a batch of one valid line and one with ``bad_body``; return the bad line's
    error-file entry after checking the batch's counts and the good line's success."""
    lines = [
        {"custom_id": "good", "method": "POST", "url": endpoint, "body": GOOD[endpoint]},
        {"custom_id": "bad", "method": "POST", "url": endpoint, "body": bad_body},
    ]
    batch = client.batches.retrieve(create_batch(client, lines, endpoint).id)
    assert batch.status == "completed"
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (1, 1)
    output = read_jsonl(client, batch.output_file_id)
    assert [o["custom_id"] for o in output] == ["good"]
    (entry,) = read_jsonl(client, batch.error_file_id)
    assert entry["custom_id"] == "bad"
    assert entry["id"].startswith("batch_req_")
    assert entry["error"] is None
    assert entry["response"]["status_code"] == 400
    assert entry["response"]["request_id"]
    error = entry["response"]["body"]["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    return error


def accepted(client: OpenAI, endpoint: str, body: dict[str, Any]) -> None:
    """``body`` runs and succeeds: the emulator invents no rejection for it."""
    assert check_body(endpoint, body) is None
    lines = [{"custom_id": "ok", "method": "POST", "url": endpoint, "body": body}]
    batch = client.batches.retrieve(create_batch(client, lines, endpoint).id)
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (1, 0)
    assert batch.error_file_id is None


def without(endpoint: str, key: str) -> dict[str, Any]:
    return {k: v for k, v in GOOD[endpoint].items() if k != key}


# -- missing required parameters (SPEC ``required``) ---------------------------------------


def test_chat_without_messages(client: OpenAI) -> None:
    error = run(client, "/v1/chat/completions", without("/v1/chat/completions", "messages"))
    assert error == {
        "message": "Missing required parameter: 'messages'.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "missing_required_parameter",
    }


def test_chat_with_an_empty_messages_array(client: OpenAI) -> None:
    body = {**GOOD["/v1/chat/completions"], "messages": []}
    error = run(client, "/v1/chat/completions", body)
    assert (error["param"], error["code"]) == ("messages", "empty_array")


@pytest.mark.parametrize("endpoint", ["/v1/embeddings", "/v1/moderations"])
def test_input_endpoints_without_input(client: OpenAI, endpoint: str) -> None:
    error = run(client, endpoint, without(endpoint, "input"))
    assert (error["param"], error["code"]) == ("input", "missing_required_parameter")
    assert error["message"] == "Missing required parameter: 'input'."


@pytest.mark.parametrize(
    "endpoint",
    ["/v1/completions", "/v1/images/generations", "/v1/images/edits", "/v1/videos"],
)
def test_prompt_endpoints_without_prompt(client: OpenAI, endpoint: str) -> None:
    error = run(client, endpoint, without(endpoint, "prompt"))
    assert (error["param"], error["code"]) == ("prompt", "missing_required_parameter")


def test_an_image_edit_without_images(client: OpenAI) -> None:
    error = run(client, "/v1/images/edits", without("/v1/images/edits", "images"))
    assert (error["param"], error["code"]) == ("images", "missing_required_parameter")
    # The multipart body's ``image`` is the other name the spec gives it.
    body = {**without("/v1/images/edits", "images"), "image": "file-abc"}
    assert check_body("/v1/images/edits", body) is None


def test_a_null_required_parameter_is_missing() -> None:
    body = {"model": "gpt-4o-mini", "messages": None}
    found = check_body("/v1/chat/completions", body)
    assert found is not None and found.code == "missing_required_parameter"


@pytest.mark.parametrize(
    "source",
    [{}, {"prompt": {"id": "pmpt_1"}}, {"previous_response_id": "resp_1"}, {"conversation": "c"}],
)
def test_a_responses_body_without_input_is_not_refused(
    client: OpenAI, source: dict[str, Any]
) -> None:
    # The spec's CreateResponse requires nothing: no rejection is invented.
    accepted(client, "/v1/responses", {"model": "gpt-4o-mini", **source})


# -- unknown parameters: where the spec closes the schema, or the live API is on record -----


@pytest.mark.parametrize(
    ("endpoint", "extra", "name"),
    [
        ("/v1/embeddings", {"n": 2}, "n"),
        ("/v1/chat/completions", {"max_output_tokens": 10}, "max_output_tokens"),
        ("/v1/responses", {"max_completion_tokens": 10}, "max_completion_tokens"),
    ],
)
def test_an_unknown_parameter_is_refused(
    client: OpenAI, endpoint: str, extra: dict[str, Any], name: str
) -> None:
    assert run(client, endpoint, {**GOOD[endpoint], **extra}) == {
        "message": f"Unknown parameter: '{name}'.",
        "type": "invalid_request_error",
        "param": name,
        "code": "unknown_parameter",
    }


@pytest.mark.parametrize(
    ("endpoint", "extra"),
    [
        ("/v1/completions", {"messages": []}),
        ("/v1/moderations", {"temperature": 0}),
        ("/v1/images/generations", {"seed": 1}),
    ],
)
def test_an_open_schema_lets_an_unlisted_parameter_through(
    client: OpenAI, endpoint: str, extra: dict[str, Any]
) -> None:
    # These schemas have no ``additionalProperties: false`` and no live refusal is on record:
    # the reference does not say the API refuses what they do not list, so nor does this.
    accepted(client, endpoint, {**GOOD[endpoint], **extra})


# -- stream (openai-batch-api.md §4.2: "No streaming") -------------------------------------


@pytest.mark.parametrize(
    "endpoint",
    ["/v1/chat/completions", "/v1/responses", "/v1/completions", "/v1/moderations"],
)
def test_stream_true_is_refused(client: OpenAI, endpoint: str) -> None:
    error = run(client, endpoint, {**GOOD[endpoint], "stream": True})
    assert (error["param"], error["code"]) == ("stream", "invalid_value")


def test_stream_false_is_fine(client: OpenAI) -> None:
    lines = [line("a", stream=False), line("b", stream=None)]
    batch = client.batches.retrieve(create_batch(client, lines).id)
    assert batch.request_counts is not None and batch.request_counts.completed == 2
    assert batch.error_file_id is None


# -- types (SPEC ``type``) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("param", "value", "expected", "got"),
    [
        ("temperature", "0.2", "a decimal", "a string"),
        ("top_p", [1], "a decimal", "an array"),
        ("n", 1.5, "an integer", "a decimal"),
        ("max_tokens", "100", "an integer", "a string"),
        ("max_completion_tokens", True, "an integer", "a boolean"),
        ("seed", "7", "an integer", "a string"),
        ("messages", "hi", "an array", "a string"),
        ("tools", {}, "an array", "an object"),
        ("response_format", "json", "an object", "a string"),
        ("metadata", [], "an object", "an array"),
        ("user", 5, "a string", "an integer"),
        ("stream", "false", "a boolean", "a string"),
        ("stop", 3, "a string or an array", "an integer"),
    ],
)
def test_chat_parameter_of_the_wrong_type(
    client: OpenAI, param: str, value: Any, expected: str, got: str
) -> None:
    body = {**GOOD["/v1/chat/completions"], param: value}
    assert run(client, "/v1/chat/completions", body) == {
        "message": f"Invalid type for '{param}': expected {expected}, but got {got} instead.",
        "type": "invalid_request_error",
        "param": param,
        "code": "invalid_type",
    }


@pytest.mark.parametrize(
    ("endpoint", "param", "value"),
    [
        ("/v1/responses", "max_output_tokens", "10"),
        ("/v1/responses", "input", 42),
        ("/v1/embeddings", "dimensions", "256"),
        ("/v1/embeddings", "input", {"text": "hi"}),
        ("/v1/completions", "prompt", 7),
        ("/v1/moderations", "input", 1),
        ("/v1/images/generations", "n", "2"),
    ],
)
def test_other_endpoints_check_types_too(
    client: OpenAI, endpoint: str, param: str, value: Any
) -> None:
    error = run(client, endpoint, {**GOOD[endpoint], param: value})
    assert (error["param"], error["code"]) == (param, "invalid_type")


# -- bounds (SPEC ``minimum`` / ``maximum``, ``minItems`` / ``maxItems``) ------------------


@pytest.mark.parametrize(
    ("endpoint", "param", "value", "code", "bound"),
    [
        ("/v1/chat/completions", "temperature", 2.5, "decimal_above_max_value", "<= 2"),
        ("/v1/chat/completions", "top_p", -0.1, "decimal_below_min_value", ">= 0"),
        ("/v1/chat/completions", "n", 0, "integer_below_min_value", ">= 1"),
        ("/v1/chat/completions", "n", 129, "integer_above_max_value", "<= 128"),
        ("/v1/chat/completions", "top_logprobs", 21, "integer_above_max_value", "<= 20"),
        ("/v1/chat/completions", "presence_penalty", -3, "integer_below_min_value", ">= -2"),
        ("/v1/responses", "max_output_tokens", 15, "integer_below_min_value", ">= 16"),
        ("/v1/responses", "temperature", 3, "integer_above_max_value", "<= 2"),
        ("/v1/embeddings", "dimensions", 0, "integer_below_min_value", ">= 1"),
        ("/v1/completions", "logprobs", 6, "integer_above_max_value", "<= 5"),
        ("/v1/completions", "best_of", 21, "integer_above_max_value", "<= 20"),
        ("/v1/images/generations", "n", 11, "integer_above_max_value", "<= 10"),
    ],
)
def test_a_number_out_of_the_specs_bounds(
    client: OpenAI, endpoint: str, param: str, value: Any, code: str, bound: str
) -> None:
    error = run(client, endpoint, {**GOOD[endpoint], param: value})
    assert (error["param"], error["code"]) == (param, code)
    assert f"Expected a value {bound}, but got {value:g} instead." in error["message"]


@pytest.mark.parametrize(
    ("endpoint", "param", "value", "code"),
    [
        ("/v1/embeddings", "input", ["x"] * 2049, "array_above_max_length"),
        ("/v1/embeddings", "input", [], "empty_array"),
        ("/v1/chat/completions", "stop", ["a", "b", "c", "d", "e"], "array_above_max_length"),
        ("/v1/images/edits", "images", [{"file_id": "f"}] * 17, "array_above_max_length"),
    ],
)
def test_an_array_out_of_the_specs_bounds(
    client: OpenAI, endpoint: str, param: str, value: list[Any], code: str
) -> None:
    error = run(client, endpoint, {**GOOD[endpoint], param: value})
    assert (error["param"], error["code"]) == (param, code)


def test_an_empty_embeddings_input_string(client: OpenAI) -> None:
    error = run(client, "/v1/embeddings", {**GOOD["/v1/embeddings"], "input": ""})
    assert (error["param"], error["code"]) == ("input", "empty_string")


def test_the_bounds_themselves_are_accepted(client: OpenAI) -> None:
    body = {
        **GOOD["/v1/chat/completions"],
        "temperature": 2,
        "top_p": 0,
        "n": 128,
        "top_logprobs": 20,
        "frequency_penalty": -2,
        "stop": ["a", "b", "c", "d"],
    }
    accepted(client, "/v1/chat/completions", body)
    accepted(client, "/v1/embeddings", {**GOOD["/v1/embeddings"], "input": ["x"] * 2048})


# -- what is accepted ----------------------------------------------------------------------


def test_numbers_nulls_and_every_documented_parameter_are_accepted() -> None:
    body = {
        **GOOD["/v1/chat/completions"],
        "temperature": 1,  # an integer is a decimal
        "top_p": 0.5,
        "max_tokens": None,  # optional parameters may be null
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "emulator": {"stall": False},  # the emulator's own marker
    }
    assert check_body("/v1/chat/completions", body) is None
    for endpoint, rules in RULES.items():
        # Every parameter the endpoint documents, given as null, is accepted.
        full = {**dict.fromkeys(rules.params), **GOOD[endpoint]}
        assert check_body(endpoint, full) is None, endpoint
    # The emulator's marker passes even the closed embeddings schema.
    assert check_body("/v1/embeddings", {**GOOD["/v1/embeddings"], "emulator": {}}) is None


def test_a_valid_batch_still_completes_in_full(client: OpenAI) -> None:
    lines = [line(f"r{i}", temperature=0.1 * i, n=1, max_tokens=50) for i in range(5)]
    batch = client.batches.retrieve(create_batch(client, lines).id)
    assert batch.status == "completed"
    assert batch.request_counts is not None and batch.request_counts.completed == 5
    assert batch.error_file_id is None


# -- result files: 30 days by default (openai-batch-api.md §2.3) ---------------------------


def test_result_files_expire_thirty_days_after_they_are_written(
    emu: Emulator, client: OpenAI
) -> None:
    emu.fail_request("bad")
    batch = client.batches.retrieve(create_batch(client, [line("ok"), line("bad")]).id)
    assert batch.output_file_id and batch.error_file_id
    for file_id in (batch.output_file_id, batch.error_file_id):
        f = client.files.retrieve(file_id)
        assert f.expires_at == f.created_at + 30 * 86400
    emu.advance(batch.completed_at + 30 * 86400 - 1 - emu.now())
    assert client.files.content(batch.output_file_id).content
    emu.advance(1)
    for file_id in (batch.output_file_id, batch.error_file_id):
        with pytest.raises(openai.NotFoundError):
            client.files.retrieve(file_id)
        with pytest.raises(openai.NotFoundError):
            client.files.content(file_id)
    assert {batch.output_file_id, batch.error_file_id}.isdisjoint(f.id for f in client.files.list())


# -- the snapshot table the docs promise ---------------------------------------------------


def test_the_docs_list_every_snapshot_the_emulator_reports() -> None:
    text = DOCS.read_text()
    rows = dict(re.findall(r"^\| `([^`]+)` \| `([^`]+)` \|$", text, re.MULTILINE))
    assert rows == SNAPSHOTS
