"""The Anthropic flavour, judged by the official ``anthropic`` SDK over HTTP: create, poll,
results (all four result types), cancel, list paging, delete, the envelope's rules, the
Messages body rules, auth headers, limits, retention and faults."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import pytest

from openai_batches.emulator import Emulator, EmulatorServer, Limits

from .conftest import ServeFlavor

KEY = "sk-ant-emulator-test"
MODEL = "claude-opus-4-8"
HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}


def request(custom_id: str, text: str = "hello", **params: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 256,
        "messages": [{"role": "user", "content": text}],
    }
    body.update(params)
    return {"custom_id": custom_id, "params": body}


@pytest.fixture
def served(serve_flavor: ServeFlavor) -> tuple[Emulator, EmulatorServer]:
    return serve_flavor("anthropic", api_key=KEY, auth_tokens=["oauth-token"])


@pytest.fixture
def client(served: tuple[Emulator, EmulatorServer]) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=served[1].base_url, api_key=KEY, max_retries=0)


def outcomes(client: anthropic.Anthropic, batch_id: str) -> dict[str, Any]:
    return {r.custom_id: r.result for r in client.messages.batches.results(batch_id)}


def test_sdk_drives_a_batch_through_create_poll_and_results(
    served: tuple[Emulator, EmulatorServer], client: anthropic.Anthropic
) -> None:
    emu, server = served
    emu.fail_request("scripted", status_code=529, message="Overloaded (emulated).")
    batch = client.messages.batches.create(
        requests=[
            request("ok-1"),
            request("ok-2", model="claude-haiku-4-5"),  # any model per request
            request("no-max-tokens", max_tokens=None),
            request("scripted"),
        ]
    )
    # Processing starts at create: no validating phase, nothing counted but "processing".
    assert batch.id.startswith("msgbatch_")
    assert batch.processing_status == "in_progress"
    assert batch.request_counts.processing == 4 and batch.results_url is None
    assert batch.expires_at.timestamp() - batch.created_at.timestamp() == 86400

    emu.advance(1)
    batch = client.messages.batches.retrieve(batch.id)
    assert batch.processing_status == "ended" and batch.ended_at is not None
    counts = batch.request_counts
    assert (counts.processing, counts.succeeded, counts.errored) == (0, 2, 2)
    assert batch.results_url == f"{server.root_url}/v1/messages/batches/{batch.id}/results"

    results = outcomes(client, batch.id)
    assert results["ok-1"].type == "succeeded"
    message = results["ok-1"].message
    assert message.model == MODEL and message.stop_reason == "end_turn"
    assert message.content[0].type == "text" and message.usage.output_tokens > 0
    assert results["ok-2"].message.model == "claude-haiku-4-5"
    # Params are checked when the request runs: an errored result, double-nested.
    refused = results["no-max-tokens"]
    assert refused.type == "errored"
    assert refused.error.error.type == "invalid_request_error"
    assert refused.error.error.message == "max_tokens: Field required"
    assert results["scripted"].error.error.type == "overloaded_error"


def test_cancel_leaves_canceled_results_and_expiry_expired_ones(
    served: tuple[Emulator, EmulatorServer], client: anthropic.Anthropic
) -> None:
    emu, _ = served
    emu.stall_request("slow")
    cancelled = client.messages.batches.create(requests=[request("done"), request("slow")])
    emu.advance(1)
    canceling = client.messages.batches.cancel(cancelled.id)
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None
    emu.advance(3600)
    ended = client.messages.batches.retrieve(cancelled.id)
    assert ended.processing_status == "ended"
    assert (ended.request_counts.succeeded, ended.request_counts.canceled) == (1, 1)
    results = outcomes(client, cancelled.id)
    assert results["done"].type == "succeeded" and results["slow"].type == "canceled"

    expiring = client.messages.batches.create(requests=[request("done"), request("slow")])
    emu.advance(86400)
    ended = client.messages.batches.retrieve(expiring.id)
    assert ended.processing_status == "ended"
    assert (ended.request_counts.succeeded, ended.request_counts.expired) == (1, 1)
    assert outcomes(client, expiring.id)["slow"].type == "expired"


def test_counts_stay_zero_until_the_batch_ends(serve_flavor: ServeFlavor) -> None:
    emu, server = serve_flavor("anthropic", api_key=KEY, timing="fast", clock="manual")
    client = anthropic.Anthropic(base_url=server.base_url, api_key=KEY, max_retries=0)
    batch = client.messages.batches.create(requests=[request(f"r{i}") for i in range(4)])
    emu.advance(1.5)  # part of the requests have run
    live = client.messages.batches.retrieve(batch.id)
    assert live.processing_status == "in_progress"
    assert live.request_counts.processing == 4 and live.request_counts.succeeded == 0
    with pytest.raises(anthropic.AnthropicError, match="finished processing"):
        client.messages.batches.results(batch.id)
    early = httpx.get(f"{server.root_url}/v1/messages/batches/{batch.id}/results", headers=HEADERS)
    assert early.status_code == 400 and "still processing" in early.json()["error"]["message"]
    emu.advance(60)
    assert client.messages.batches.retrieve(batch.id).request_counts.succeeded == 4


def test_list_pages_newest_first_both_ways(client: anthropic.Anthropic) -> None:
    ids = [client.messages.batches.create(requests=[request("a")]).id for _ in range(5)]
    newest_first = ids[::-1]
    page = client.messages.batches.list(limit=2)
    assert [b.id for b in page.data] == newest_first[:2]
    assert page.has_more and page.first_id == newest_first[0] and page.last_id == newest_first[1]
    # The SDK follows after_id=last_id to the end.
    assert [b.id for b in client.messages.batches.list(limit=2)] == newest_first
    older = client.messages.batches.list(limit=2, after_id=newest_first[1])
    assert [b.id for b in older.data] == newest_first[2:4]
    # before_id: the ones just newer than it, still newest first.
    newer = client.messages.batches.list(limit=2, before_id=newest_first[3])
    assert [b.id for b in newer.data] == newest_first[1:3]
    assert newer.has_more
    last = client.messages.batches.list(limit=2, after_id=newest_first[3])
    assert [b.id for b in last.data] == newest_first[4:] and not last.has_more


def test_delete_only_once_ended(
    served: tuple[Emulator, EmulatorServer], client: anthropic.Anthropic
) -> None:
    emu, _ = served
    emu.stall_request("slow")
    batch = client.messages.batches.create(requests=[request("slow")])
    with pytest.raises(anthropic.BadRequestError, match="cancel it first"):
        client.messages.batches.delete(batch.id)
    client.messages.batches.cancel(batch.id)
    emu.advance(3600)
    deleted = client.messages.batches.delete(batch.id)
    assert (deleted.id, deleted.type) == (batch.id, "message_batch_deleted")
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.batches.retrieve(batch.id)
    assert caught.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    assert client.messages.batches.list().data == []


def test_results_are_archived_29_days_after_creation(
    served: tuple[Emulator, EmulatorServer], client: anthropic.Anthropic
) -> None:
    emu, server = served
    batch = client.messages.batches.create(requests=[request("a")])
    emu.advance(28 * 86400)
    assert outcomes(client, batch.id)["a"].type == "succeeded"
    emu.advance(86400)
    archived = client.messages.batches.retrieve(batch.id)
    assert archived.archived_at is not None and archived.results_url is None
    answer = httpx.get(f"{server.root_url}/v1/messages/batches/{batch.id}/results", headers=HEADERS)
    assert answer.status_code == 404
    assert answer.json()["error"]["type"] == "not_found_error"


# --- the envelope is checked at create -----------------------------------------------------


@pytest.mark.parametrize(
    ("requests", "message"),
    [
        ([request("x" * 65)], "requests.0.custom_id: String should have at most 64 characters"),
        ([request("")], "requests.0.custom_id: String should have at least 1 character"),
        ([request("a.b")], "requests.0.custom_id: String should match pattern"),
        ([request("a"), request("a")], "requests.1.custom_id: 'a' is already used"),
        ([{"custom_id": "a"}], "requests.0.params: Field required"),
        ([{"custom_id": "a", "params": []}], "requests.0.params: Input should be a valid dict"),
        ([{"custom_id": "a", "params": {}, "x": 1}], "requests.0.x: Extra inputs"),
        ([], "requests: List should have at least 1 item"),
    ],
)
def test_create_refuses_a_bad_envelope(
    served: tuple[Emulator, EmulatorServer],
    client: anthropic.Anthropic,
    requests: list[Any],
    message: str,
) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.batches.create(requests=requests)
    error = caught.value.body["error"]  # type: ignore[index]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith(message)
    assert served[0].list_batches() == []


def test_limits_are_anthropics_and_enforced(serve_flavor: ServeFlavor) -> None:
    emu = Emulator(flavor="anthropic")
    try:
        assert emu.limits.max_requests == 100_000
        assert emu.limits.max_batch_file_bytes == 256 * 1024 * 1024
    finally:
        emu.close()
    _, server = serve_flavor(
        "anthropic", api_key=KEY, limits=Limits(max_requests=2, max_batch_file_bytes=2000)
    )
    client = anthropic.Anthropic(base_url=server.base_url, api_key=KEY, max_retries=0)
    with pytest.raises(anthropic.BadRequestError, match="at most 2 items"):
        client.messages.batches.create(requests=[request(f"r{i}") for i in range(3)])
    with pytest.raises(anthropic.APIStatusError) as caught:
        client.messages.batches.create(requests=[request("big", "x" * 5000)])
    assert caught.value.status_code == 413
    assert caught.value.body["error"]["type"] == "request_too_large"  # type: ignore[index]


# --- params are checked when each request runs ---------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"max_tokens": None}, "max_tokens: Field required"),
        ({"messages": None}, "messages: Field required"),
        ({"max_tokens": 0}, "max_tokens: Input should be greater than or equal to 1"),
        ({"max_tokens": "many"}, "max_tokens: Input should be a valid integer"),
        ({"messages": []}, "messages: List should have at least 1 item"),
        ({"stream": True}, "stream: Streaming is not supported"),
        ({"speed": "fast"}, "speed: Fast mode is not supported"),
        ({"store": True}, "store: This parameter is not supported"),
        ({"cache_hint": {"x": 1}}, "cache_hint: This parameter is not supported"),
        ({"research_preview_2026_02": "active"}, "research_preview_2026_02: Research previews"),
        ({"frequency_penalty": 1}, "frequency_penalty: Extra inputs are not permitted"),
    ],
)
def test_a_body_the_messages_api_refuses_is_an_errored_result(
    served: tuple[Emulator, EmulatorServer],
    client: anthropic.Anthropic,
    params: dict[str, Any],
    message: str,
) -> None:
    body = request("refused")
    body["params"].update(params)
    body["params"] = {k: v for k, v in body["params"].items() if v is not None}
    batch = client.messages.batches.create(requests=[body, request("fine")])
    served[0].advance(1)
    results = outcomes(client, batch.id)
    assert results["fine"].type == "succeeded"
    assert results["refused"].type == "errored"
    assert results["refused"].error.error.message.startswith(message)


def test_tool_choice_and_structured_output_answer_in_shape(
    served: tuple[Emulator, EmulatorServer], client: anthropic.Anthropic
) -> None:
    schema = {
        "type": "object",
        "properties": {"label": {"type": "string", "enum": ["pos", "neg"]}},
        "required": ["label"],
    }
    tool = {"name": "classify", "description": "Classify", "input_schema": schema}
    batch = client.messages.batches.create(
        requests=[
            request("tool", tools=[tool], tool_choice={"type": "tool", "name": "classify"}),
            request("json", output_config={"format": {"type": "json_schema", "schema": schema}}),
            request("short", "a rather long question " * 10, max_tokens=2),
        ]
    )
    served[0].advance(1)
    results = outcomes(client, batch.id)
    used = results["tool"].message
    assert used.stop_reason == "tool_use"
    assert used.content[0].type == "tool_use" and used.content[0].input["label"] in ("pos", "neg")
    assert json.loads(results["json"].message.content[0].text)["label"] in ("pos", "neg")
    assert results["short"].message.stop_reason == "max_tokens"


# --- auth and headers ----------------------------------------------------------------------


def test_auth_headers(served: tuple[Emulator, EmulatorServer]) -> None:
    _, server = served
    url = f"{server.root_url}/v1/messages/batches"
    answer = httpx.get(url, headers=HEADERS)  # what anthropic < 2 sends
    assert answer.status_code == 200 and answer.headers["request-id"].startswith("req_")
    # The newest SDK sends the key, or an OAuth token, as a bearer token and a new version.
    for bearer in (KEY, "oauth-token"):
        fresh = httpx.get(
            url, headers={"Authorization": f"Bearer {bearer}", "anthropic-version": "2026-10-21"}
        )
        assert fresh.status_code == 200
    token_client = anthropic.Anthropic(
        base_url=server.base_url, auth_token="oauth-token", max_retries=0
    )
    assert token_client.messages.batches.list().data == []

    wrong = httpx.get(url, headers={**HEADERS, "x-api-key": "sk-ant-wrong"})
    assert wrong.status_code == 401
    assert wrong.json() == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
        "request_id": wrong.headers["request-id"],
    }
    assert httpx.get(url, headers={"anthropic-version": "2023-06-01"}).status_code == 401
    no_version = httpx.get(url, headers={"x-api-key": KEY})
    assert no_version.status_code == 400
    assert "anthropic-version" in no_version.json()["error"]["message"]
    # The SDK's beta resource calls the same paths with ?beta=true.
    beta = anthropic.Anthropic(base_url=server.base_url, api_key=KEY, max_retries=0)
    assert beta.beta.messages.batches.list().data == []


# --- faults, as for OpenAI -----------------------------------------------------------------


def test_status_faults_come_in_anthropics_error_shape(
    served: tuple[Emulator, EmulatorServer], client: anthropic.Anthropic
) -> None:
    emu, _ = served
    emu.inject_fault("POST", "/v1/messages/batches", "status", status=529)
    with pytest.raises(anthropic.OverloadedError):
        client.messages.batches.create(requests=[request("a")])
    emu.inject_fault("GET", "/v1/messages/batches", "status", status=429, retry_after=3)
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.batches.list()
    assert caught.value.response.headers["retry-after"] == "3"
    assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert emu.list_batches() == []  # the overloaded create made nothing


def test_a_truncated_results_download_is_cut_mid_stream(
    served: tuple[Emulator, EmulatorServer], client: anthropic.Anthropic
) -> None:
    emu, server = served
    batch = client.messages.batches.create(requests=[request(f"r{i}") for i in range(20)])
    emu.advance(1)
    emu.inject_fault("GET", "/v1/messages/batches/*/results", "truncate")
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{server.root_url}/v1/messages/batches/{batch.id}/results", headers=HEADERS)
    assert len(outcomes(client, batch.id)) == 20


def test_no_webhooks_for_message_batches(
    served: tuple[Emulator, EmulatorServer], client: anthropic.Anthropic
) -> None:
    emu, _ = served
    emu.configure_webhook("http://127.0.0.1:9/hooks", "whsec_dGVzdA==")
    client.messages.batches.create(requests=[request("a")])
    emu.advance(1)
    assert emu.wait_for_webhooks(5)
    assert emu.webhook_deliveries == []


def test_a_create_whose_answer_is_lost_still_made_its_batch(
    served: tuple[Emulator, EmulatorServer], client: anthropic.Anthropic
) -> None:
    """The case a crash-safe submit must recover from without creating twice: the batch
    exists, the client never learnt its id. With no metadata, what identifies it is its
    creation time and its request count, both in the list."""
    emu, server = served
    emu.inject_fault("POST", "/v1/messages/batches", "truncate")
    with pytest.raises(anthropic.APIConnectionError):
        client.messages.batches.create(requests=[request("a"), request("b")])
    (listed,) = client.messages.batches.list().data
    counts = listed.request_counts
    # "The sum of all values always matches the total number of requests."
    assert counts.processing + counts.succeeded + counts.errored + counts.canceled == 2
    assert abs(listed.created_at.timestamp() - emu.now()) < 1
    health = httpx.get(f"{server.root_url}/_emulator/health").json()
    assert health["flavor"] == "anthropic"


def test_no_metadata_and_anthropics_rate_limit_headers(
    served: tuple[Emulator, EmulatorServer],
) -> None:
    _, server = served
    url = f"{server.root_url}/v1/messages/batches"
    refused = httpx.post(
        url, headers=HEADERS, json={"requests": [request("a")], "metadata": {"job": "x"}}
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == "metadata: Extra inputs are not permitted"
    answer = httpx.get(url, headers=HEADERS)
    assert answer.headers["anthropic-ratelimit-requests-limit"] == "5000"
    assert int(answer.headers["anthropic-ratelimit-requests-remaining"]) < 5000
    assert answer.headers["anthropic-ratelimit-requests-reset"].endswith("Z")
    assert "x-ratelimit-limit-requests" not in answer.headers
