"""Per-request body rules: a line whose body its endpoint refuses runs and gets a 400 in
the error file (``response.status_code`` 400, an ``invalid_request_error`` naming the
``param``, ``error: null``), as the real Batch API writes it; the batch still completes and
the valid lines succeed. One test per rule, over HTTP with the official SDK."""

from __future__ import annotations

from typing import Any

import pytest
from openai import OpenAI

from openai_batches.emulator.validation import RULES, check_body

from .conftest import create_batch, line, read_jsonl

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
    "/v1/images/edits": {"model": "gpt-image-1", "prompt": "a hat", "images": []},
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
    assert entry["error"] is None
    assert entry["response"]["status_code"] == 400
    assert entry["response"]["request_id"]
    error = entry["response"]["body"]["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    return error


def without(endpoint: str, key: str) -> dict[str, Any]:
    return {k: v for k, v in GOOD[endpoint].items() if k != key}


# -- missing required parameters ----------------------------------------------------------


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


@pytest.mark.parametrize("endpoint", ["/v1/responses", "/v1/embeddings", "/v1/moderations"])
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


@pytest.mark.parametrize(
    "source",
    [
        {"prompt": {"id": "pmpt_1"}},
        {"previous_response_id": "resp_1"},
        {"conversation": "conv_1"},
    ],
)
def test_a_responses_request_may_take_its_input_from_elsewhere(source: dict[str, Any]) -> None:
    assert check_body("/v1/responses", {"model": "gpt-4o-mini", **source}) is None


def test_a_null_required_parameter_is_missing() -> None:
    body = {"model": "gpt-4o-mini", "messages": None}
    found = check_body("/v1/chat/completions", body)
    assert found is not None and found.code == "missing_required_parameter"


# -- unknown parameters --------------------------------------------------------------------


def test_an_unknown_parameter(client: OpenAI) -> None:
    body = {**GOOD["/v1/chat/completions"], "temprature": 0.2}
    assert run(client, "/v1/chat/completions", body) == {
        "message": "Unknown parameter: 'temprature'.",
        "type": "invalid_request_error",
        "param": "temprature",
        "code": "unknown_parameter",
    }


def test_a_parameter_of_another_endpoint_is_unknown(client: OpenAI) -> None:
    # max_output_tokens is the Responses name; chat calls it max_completion_tokens.
    body = {**GOOD["/v1/chat/completions"], "max_output_tokens": 10}
    error = run(client, "/v1/chat/completions", body)
    assert (error["param"], error["code"]) == ("max_output_tokens", "unknown_parameter")


def test_moderations_take_only_input_and_model(client: OpenAI) -> None:
    body = {**GOOD["/v1/moderations"], "temperature": 0}
    assert run(client, "/v1/moderations", body)["param"] == "temperature"


# -- stream --------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["/v1/chat/completions", "/v1/responses", "/v1/completions"])
def test_stream_true_is_refused(client: OpenAI, endpoint: str) -> None:
    error = run(client, endpoint, {**GOOD[endpoint], "stream": True})
    assert (error["param"], error["code"]) == ("stream", "invalid_value")


def test_stream_false_is_fine(client: OpenAI) -> None:
    lines = [line("a", stream=False), line("b", stream=None)]
    batch = client.batches.retrieve(create_batch(client, lines).id)
    assert batch.request_counts is not None and batch.request_counts.completed == 2
    assert batch.error_file_id is None


# -- types of the common parameters --------------------------------------------------------


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


def test_a_valid_batch_still_completes_in_full(client: OpenAI) -> None:
    lines = [line(f"r{i}", temperature=0.1 * i, n=1, max_tokens=50) for i in range(5)]
    batch = client.batches.retrieve(create_batch(client, lines).id)
    assert batch.status == "completed"
    assert batch.request_counts is not None and batch.request_counts.completed == 5
    assert batch.error_file_id is None
