"""The Azure flavour, judged by the official ``openai`` SDK's ``AzureOpenAI`` client over
HTTP: both API surfaces, key and Entra ID token auth, deployments, Azure's limits and its
two ways of refusing work over the token quota."""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import openai
import pytest
from openai import AzureOpenAI, OpenAI

from openai_batches.emulator import Emulator, EmulatorServer, Limits

from .conftest import ServeFlavor, jsonl, line

KEY = "azure-key-0123456789"
TOKEN = "entra-token-abc"
DEPLOYMENT = "gpt-4o-mini-batch"
DATED = "2025-04-01-preview"


def azure_line(custom_id: str, deployment: str = DEPLOYMENT, **extra: Any) -> dict[str, Any]:
    # Azure's samples write the URL without /v1; the model is the deployment's name.
    return line(custom_id, model=deployment, url="/chat/completions", **extra)


def upload(client: OpenAI, lines: list[Any], **kwargs: Any) -> str:
    data = io.BytesIO(jsonl(lines))
    return client.files.create(file=("in.jsonl", data), purpose="batch", **kwargs).id


def results(client: OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if not file_id:
        return []
    return [json.loads(x) for x in client.files.content(file_id).text.splitlines()]


@pytest.fixture
def azure(serve_flavor: ServeFlavor) -> tuple[Emulator, EmulatorServer]:
    return serve_flavor("azure", api_key=KEY, tokens=[TOKEN])


def dated_key_client(server: EmulatorServer) -> AzureOpenAI:
    return AzureOpenAI(
        azure_endpoint=server.root_url, api_key=KEY, api_version=DATED, max_retries=0
    )


def clients(server: EmulatorServer) -> dict[str, OpenAI]:
    """Every way a user reaches Azure: both surfaces, key and token."""
    return {
        "dated+key": dated_key_client(server),
        "dated+token": AzureOpenAI(
            azure_endpoint=server.root_url,
            azure_ad_token_provider=lambda: TOKEN,
            api_version="2024-10-21",
            max_retries=0,
        ),
        "v1+key": AzureOpenAI(
            base_url=server.base_url, api_key=KEY, api_version="preview", max_retries=0
        ),
        "v1+token": AzureOpenAI(
            base_url=server.base_url, azure_ad_token=TOKEN, api_version="v1", max_retries=0
        ),
        # Microsoft's v1 docs use the plain client: the key goes as a bearer token.
        "v1+plain-openai": OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0),
    }


@pytest.mark.parametrize(
    "way", ["dated+key", "dated+token", "v1+key", "v1+token", "v1+plain-openai"]
)
def test_sdk_drives_a_batch_through_create_poll_results_and_cancel(
    azure: tuple[Emulator, EmulatorServer], way: str
) -> None:
    emu, server = azure
    client = clients(server)[way]
    emu.fail_request("bad")
    file_id = upload(client, [azure_line("a"), azure_line("b"), azure_line("bad")])
    created = client.batches.with_raw_response.create(
        input_file_id=file_id, endpoint="/chat/completions", completion_window="24h"
    )
    # The dated API documents 201 for a create; the v1 API answers like OpenAI.
    assert created.status_code == (201 if way.startswith("dated") else 200)
    assert created.headers["apim-request-id"]
    batch = created.parse()
    assert batch.id.startswith("batch_") and batch.status == "validating"
    assert batch.endpoint == "/chat/completions"

    emu.advance(1)
    batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed"
    assert batch.model == DEPLOYMENT
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (2, 1)
    output = results(client, batch.output_file_id)
    assert sorted(x["custom_id"] for x in output) == ["a", "b"]
    first = output[0]
    # Azure's lines: no batch_req_ id, a bare UUID request id, content-filter results.
    assert "id" not in first
    assert len(first["response"]["request_id"]) == 36
    assert first["response"]["body"]["choices"][0]["content_filter_results"]["hate"] == {
        "filtered": False,
        "severity": "safe",
    }
    (error,) = results(client, batch.error_file_id)
    assert error["custom_id"] == "bad" and error["response"]["status_code"] == 400
    assert [b.id for b in client.batches.list()] == [batch.id]

    emu.stall_request("slow")
    running = client.batches.create(
        input_file_id=upload(client, [azure_line("done"), azure_line("slow")]),
        endpoint="/chat/completions",
        completion_window="24h",
    )
    emu.advance(1)
    assert client.batches.cancel(running.id).status == "cancelling"
    emu.advance(3600)
    cancelled = client.batches.retrieve(running.id)
    assert cancelled.status == "cancelled"
    assert [x["custom_id"] for x in results(client, cancelled.output_file_id)] == ["done"]
    (unrun,) = results(client, cancelled.error_file_id)
    assert unrun["error"]["code"] == "batch_cancelled"


def test_a_successful_batch_still_has_an_empty_error_file(
    azure: tuple[Emulator, EmulatorServer],
) -> None:
    emu, server = azure
    client = dated_key_client(server)
    batch = client.batches.create(
        input_file_id=upload(client, [azure_line("a")]),
        endpoint="/chat/completions",
        completion_window="24h",
    )
    emu.advance(1)
    batch = client.batches.retrieve(batch.id)
    assert batch.error_file_id
    assert client.files.retrieve(batch.error_file_id).bytes == 0
    assert client.files.content(batch.error_file_id).content == b""


# --- auth: the key, tokens, and Azure's refusals ------------------------------------------


def test_wrong_key_gets_azures_401(azure: tuple[Emulator, EmulatorServer]) -> None:
    _, server = azure
    client = AzureOpenAI(
        azure_endpoint=server.root_url, api_key="wrong", api_version=DATED, max_retries=0
    )
    with pytest.raises(openai.AuthenticationError) as caught:
        client.batches.list()
    assert caught.value.body["code"] == "401"  # type: ignore[index]
    assert "invalid subscription key" in caught.value.body["message"]  # type: ignore[index]


def test_expired_token_is_refused_and_a_fresh_one_accepted(
    azure: tuple[Emulator, EmulatorServer],
) -> None:
    emu, server = azure
    tokens = iter([TOKEN, "fresh-token"])
    client = AzureOpenAI(
        azure_endpoint=server.root_url,
        azure_ad_token_provider=lambda: next(tokens),
        api_version=DATED,
        max_retries=0,
    )
    assert client.batches.list().data == []
    # The token provider is asked on every call; the old token has expired meanwhile.
    emu.flavor.tokens = {"fresh-token"}  # type: ignore[attr-defined]
    assert client.batches.list().data == []
    with pytest.raises(openai.AuthenticationError) as caught:
        AzureOpenAI(
            azure_endpoint=server.root_url,
            azure_ad_token=TOKEN,
            api_version=DATED,
            max_retries=0,
        ).batches.list()
    assert "Access token is missing, invalid" in caught.value.body["message"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("path", "headers", "message"),
    [
        ("/openai/batches?api-version=2024-10-21", {}, "missing subscription key"),
        # The key as a bearer token is a v1-surface convenience; the dated API wants api-key.
        (
            "/openai/batches?api-version=2024-10-21",
            {"Authorization": f"Bearer {KEY}"},
            "Access token is missing, invalid",
        ),
        ("/openai/v1/batches", {"Authorization": "Bearer nope"}, "Access token is missing"),
    ],
)
def test_auth_refusals(
    azure: tuple[Emulator, EmulatorServer], path: str, headers: dict[str, str], message: str
) -> None:
    _, server = azure
    answer = httpx.get(server.root_url + path, headers=headers)
    assert answer.status_code == 401
    assert message in answer.json()["error"]["message"]
    assert KEY not in answer.text


def test_api_versions(azure: tuple[Emulator, EmulatorServer]) -> None:
    _, server = azure
    get = lambda path: httpx.get(server.root_url + path, headers={"api-key": KEY})  # noqa: E731
    assert get("/openai/batches").status_code == 404  # the dated API needs a version
    assert get("/openai/batches?api-version=someday").status_code == 400
    assert get("/openai/batches?api-version=2024-10-21").status_code == 200
    assert get("/openai/v1/batches").status_code == 200  # optional on v1
    assert get("/openai/v1/batches?api-version=2024-10-21").status_code == 400
    assert get("/v1/batches").status_code == 404  # OpenAI's path is not Azure's


# --- deployments, limits, no expiry -------------------------------------------------------


def test_deployments_name_the_model_and_an_unknown_one_fails_the_batch(
    serve_flavor: ServeFlavor,
) -> None:
    emu, server = serve_flavor("azure", api_key=KEY, deployments={DEPLOYMENT: "gpt-4o-mini"})
    client = dated_key_client(server)
    ok = client.batches.create(
        input_file_id=upload(client, [azure_line("a")]),
        endpoint="/chat/completions",
        completion_window="24h",
    )
    missing = client.batches.create(
        input_file_id=upload(client, [azure_line("a", deployment="no-such-deployment")]),
        endpoint="/chat/completions",
        completion_window="24h",
    )
    emu.advance(1)
    ok = client.batches.retrieve(ok.id)
    (answer,) = results(client, ok.output_file_id)
    # The result names the deployment's underlying model, as Azure's samples show.
    assert answer["response"]["body"]["model"] == "gpt-4o-mini-2024-07-18"
    missing = client.batches.retrieve(missing.id)
    assert missing.status == "failed"
    assert missing.errors is not None and missing.errors.data is not None
    assert missing.errors.data[0].code == "model_not_found"


def test_lines_must_share_one_url_but_the_create_endpoint_does_not_decide(
    azure: tuple[Emulator, EmulatorServer],
) -> None:
    emu, server = azure
    client = dated_key_client(server)
    responses_line = {
        "custom_id": "r",
        "method": "POST",
        "url": "/v1/responses",
        "body": {"model": DEPLOYMENT, "input": "hi"},
    }
    # Azure reads the file to tell chat from Responses, whatever the create said.
    ran = client.batches.create(
        input_file_id=upload(client, [responses_line]),
        endpoint="/chat/completions",
        completion_window="24h",
    )
    mixed = client.batches.create(
        input_file_id=upload(client, [azure_line("a"), responses_line]),
        endpoint="/chat/completions",
        completion_window="24h",
    )
    emu.advance(1)
    (answer,) = results(client, client.batches.retrieve(ran.id).output_file_id)
    assert answer["response"]["body"]["object"] == "response"
    mixed = client.batches.retrieve(mixed.id)
    assert mixed.status == "failed"
    assert mixed.errors is not None and mixed.errors.data is not None
    assert mixed.errors.data[0].code == "url_mismatch"


def test_azure_limits_are_its_own() -> None:
    emu = Emulator(flavor="azure")
    try:
        assert emu.limits.max_requests == 100_000
        assert emu.limits.max_batch_file_bytes == 200 * 1024 * 1024
    finally:
        emu.close()


def test_too_many_requests_fails_the_batch(serve_flavor: ServeFlavor) -> None:
    emu, server = serve_flavor("azure", api_key=KEY, limits=Limits(max_requests=2))
    client = dated_key_client(server)
    batch = client.batches.create(
        input_file_id=upload(client, [azure_line(f"r{i}") for i in range(3)]),
        endpoint="/chat/completions",
        completion_window="24h",
    )
    emu.advance(1)
    batch = client.batches.retrieve(batch.id)
    assert batch.status == "failed"
    assert batch.errors is not None and batch.errors.data is not None
    assert batch.errors.data[0].code == "too_many_tasks"


def test_a_batch_past_24_hours_keeps_running_until_cancelled(
    azure: tuple[Emulator, EmulatorServer],
) -> None:
    emu, server = azure
    client = dated_key_client(server)
    emu.stall_request("slow")
    batch = client.batches.create(
        input_file_id=upload(client, [azure_line("a"), azure_line("slow")]),
        endpoint="/chat/completions",
        completion_window="24h",
    )
    emu.advance(3 * 86400)
    batch = client.batches.retrieve(batch.id)
    assert batch.status == "in_progress"  # Azure does not expire jobs
    assert batch.expires_at == batch.created_at + 86400  # though it still states one
    client.batches.cancel(batch.id)
    emu.advance(600)
    assert client.batches.retrieve(batch.id).status == "cancelled"


def test_expiry_range_and_spellings(azure: tuple[Emulator, EmulatorServer]) -> None:
    _, server = azure
    client = dated_key_client(server)
    # No default expiry on an Azure input (which is why the 500-file cap bites).
    assert client.files.retrieve(upload(client, [azure_line("a")])).expires_at is None
    with pytest.raises(openai.BadRequestError, match="1209600"):
        upload(client, [azure_line("a")], expires_after={"anchor": "created_at", "seconds": 3600})
    fourteen_days = upload(
        client, [azure_line("a")], expires_after={"anchor": "created_at", "seconds": 1209600}
    )
    stored = client.files.retrieve(fourteen_days)
    assert stored.expires_at == stored.created_at + 1209600
    # Azure's REST samples write the form fields with dots.
    dotted = httpx.post(
        f"{server.root_url}/openai/files?api-version={DATED}",
        headers={"api-key": KEY},
        data={
            "purpose": "batch",
            "expires_after.anchor": "created_at",
            "expires_after.seconds": "2592000",
        },
        files={"file": ("in.jsonl", jsonl([azure_line("a")]))},
    )
    assert dotted.status_code == 200, dotted.text
    assert dotted.json()["expires_at"] == dotted.json()["created_at"] + 2592000
    with pytest.raises(openai.BadRequestError, match="1209600"):
        client.batches.create(
            input_file_id=fourteen_days,
            endpoint="/chat/completions",
            completion_window="24h",
            extra_body={"output_expires_after": {"anchor": "created_at", "seconds": 86400}},
        )


def test_unexpiring_input_files_are_capped(serve_flavor: ServeFlavor) -> None:
    _, server = serve_flavor("azure", api_key=KEY, max_unexpiring_input_files=2)
    client = dated_key_client(server)
    upload(client, [azure_line("a")])
    upload(client, [azure_line("a")])
    with pytest.raises(openai.BadRequestError, match="expires_after"):
        upload(client, [azure_line("a")])
    # An input that expires does not count against that cap.
    upload(client, [azure_line("a")], expires_after={"anchor": "created_at", "seconds": 1209600})


def test_a_bom_fails_the_batch_with_azures_misleading_message(
    azure: tuple[Emulator, EmulatorServer],
) -> None:
    emu, server = azure
    client = dated_key_client(server)
    data = b"\xef\xbb\xbf" + jsonl([azure_line("a")])
    file_id = client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch").id
    batch = client.batches.create(
        input_file_id=file_id, endpoint="/chat/completions", completion_window="24h"
    )
    emu.advance(1)
    batch = client.batches.retrieve(batch.id)
    assert batch.status == "failed"
    assert batch.errors is not None and batch.errors.data is not None
    assert "valid model deployment name couldn't be extracted" in str(batch.errors.data[0].message)


# --- token_limit_exceeded, both ways ------------------------------------------------------


def test_token_limit_exceeded_fails_the_batch(azure: tuple[Emulator, EmulatorServer]) -> None:
    emu, server = azure
    client = dated_key_client(server)
    emu.set_token_budget(DEPLOYMENT, 5)
    created = client.batches.with_raw_response.create(
        input_file_id=upload(client, [azure_line("a", content="a long prompt " * 20)]),
        endpoint="/chat/completions",
        completion_window="24h",
    )
    # The only documented view of the deployment's queue.
    assert created.headers["deployment-maximum-enqueued-tokens"] == "5"
    assert int(created.headers["deployment-enqueued-tokens"]) > 5
    emu.advance(1)
    batch = client.batches.retrieve(created.parse().id)
    assert batch.status == "failed"
    assert batch.errors is not None and batch.errors.data is not None
    assert batch.errors.data[0].code == "token_limit_exceeded"


def test_fail_fast_regions_refuse_the_create_with_a_400(serve_flavor: ServeFlavor) -> None:
    emu, server = serve_flavor("azure", api_key=KEY, fail_fast=True)
    client = dated_key_client(server)
    emu.set_token_budget(DEPLOYMENT, 5)
    file_id = upload(client, [azure_line("a", content="a long prompt " * 20)])
    with pytest.raises(openai.BadRequestError) as caught:
        client.batches.create(
            input_file_id=file_id, endpoint="/chat/completions", completion_window="24h"
        )
    assert "token_limit_exceeded" in str(caught.value)  # how Microsoft's sample matches it
    assert caught.value.code == "token_limit_exceeded"
    assert emu.list_batches() == []  # nothing was created
    emu.set_token_budget(DEPLOYMENT, None)
    assert client.batches.create(
        input_file_id=file_id, endpoint="/chat/completions", completion_window="24h"
    ).id


# --- the samples' quirks, for an adapter's tolerant parsing -------------------------------


def test_quirks_serve_the_batch_the_way_microsofts_samples_show_it(
    serve_flavor: ServeFlavor,
) -> None:
    emu, server = serve_flavor("azure", api_key=KEY, quirks=True, timing="fast", clock="manual")
    client = dated_key_client(server)
    file_id = upload(client, [azure_line("a")])
    raw = client.batches.with_raw_response.create(
        input_file_id=file_id, endpoint="/chat/completions", completion_window="24h"
    ).http_response.json()
    assert raw["status"] == "Validating"
    assert raw["request_counts"] == {"total": None, "completed": None, "failed": None}
    assert raw["output_file_id"] == "" and raw["error_file_id"] == ""
    assert raw["created_at"].endswith("+00:00") and "T" in raw["created_at"]
    assert raw["in_progress_at"] is None
    emu.advance(60)
    done = client.batches.with_raw_response.retrieve(raw["id"]).http_response.json()
    assert done["status"] == "Completed"
    assert done["request_counts"] == {"total": 1, "completed": 1, "failed": 0}
    assert isinstance(done["completed_at"], str) and done["output_file_id"]


def test_faults_apply_to_azure_paths(azure: tuple[Emulator, EmulatorServer]) -> None:
    emu, server = azure
    client = dated_key_client(server)
    emu.inject_fault("GET", "/openai/batches", "status", status=429, retry_after=7)
    with pytest.raises(openai.RateLimitError) as caught:
        client.batches.list()
    assert caught.value.response.headers["retry-after"] == "7"
    assert client.batches.list().data == []


def test_without_a_configured_credential_any_is_accepted(serve_flavor: ServeFlavor) -> None:
    _, server = serve_flavor("azure")
    for headers in ({"api-key": "anything"}, {"Authorization": "Bearer any-token"}):
        answer = httpx.get(f"{server.root_url}/openai/v1/batches", headers=headers)
        assert answer.status_code == 200
    assert httpx.get(f"{server.root_url}/openai/v1/batches").status_code == 401


def test_input_files_are_capped_in_all(serve_flavor: ServeFlavor) -> None:
    _, server = serve_flavor("azure", api_key=KEY, max_input_files=1)
    client = dated_key_client(server)
    expiring = {"anchor": "created_at", "seconds": 1209600}
    upload(client, [azure_line("a")], expires_after=expiring)
    with pytest.raises(openai.BadRequestError, match="Delete some first"):
        upload(client, [azure_line("a")], expires_after=expiring)


def test_batch_events_go_to_the_configured_webhook(
    serve_flavor: ServeFlavor, receiver: Any
) -> None:
    emu, server = serve_flavor("azure", api_key=KEY)
    emu.configure_webhook(receiver.url, "whsec_dGVzdHNlY3JldA==")
    client = dated_key_client(server)
    batch = client.batches.create(
        input_file_id=upload(client, [azure_line("a")]),
        endpoint="/chat/completions",
        completion_window="24h",
    )
    emu.advance(1)
    assert receiver.wait_for(1)
    _, body, _ = receiver.requests[0]
    event = json.loads(body)
    assert (event["type"], event["data"]["id"]) == ("batch.completed", batch.id)


def test_create_headers_show_the_deployments_queue(azure: tuple[Emulator, EmulatorServer]) -> None:
    emu, server = azure
    client = dated_key_client(server)
    emu.set_token_budget(DEPLOYMENT, 100_000)
    emu.stall_request("slow")
    first = client.batches.with_raw_response.create(
        input_file_id=upload(client, [azure_line("slow")]),
        endpoint="/chat/completions",
        completion_window="24h",
    )
    one = int(first.headers["deployment-enqueued-tokens"])
    assert one > 0
    emu.advance(1)  # it runs, stalled: its tokens stay enqueued
    assert emu.enqueued_tokens(DEPLOYMENT) == one
    second = client.batches.with_raw_response.create(
        input_file_id=upload(client, [azure_line("other")]),
        endpoint="/chat/completions",
        completion_window="24h",
    )
    assert int(second.headers["deployment-enqueued-tokens"]) == 2 * one  # same prompt
    assert second.headers["deployment-maximum-enqueued-tokens"] == "100000"
