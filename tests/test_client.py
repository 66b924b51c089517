"""The httpx client against the emulator over real HTTP: headers, retries, typed errors,
truncated downloads, and the API key kept out of reprs, error text and logs.

``httpx.MockTransport`` stands in for the emulator only where the emulator cannot help:
echoing request headers, and answering with ``retry-after-ms`` or a malformed
``retry-after``.
"""

from __future__ import annotations

import email.utils
import io
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from openai_batches.client import MAX_RETRY_AFTER, OpenAIClient
from openai_batches.conf import Account
from openai_batches.emulator import Emulator, EmulatorServer
from openai_batches.exceptions import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    NotFoundError,
    OpenAIBatchesError,
    ProviderError,
    RateLimitError,
)

KEY = "sk-proj-CLIENTTESTKEY0123456789abcdef"
RETRIES = 2  # three attempts in all


def backoff_range(attempt: int) -> tuple[float, float]:
    """The jittered exponential backoff before retry ``attempt`` (0-based), no server hint."""
    base = min(0.5 * 2**attempt, 8.0)
    return base * 0.75, base


@pytest.fixture
def emu() -> Iterator[Emulator]:
    emulator = Emulator(timing="instant", api_key=KEY)
    yield emulator
    emulator.close()


@pytest.fixture
def server(emu: Emulator) -> Iterator[EmulatorServer]:
    with EmulatorServer(emu, port=0) as srv:
        yield srv


@pytest.fixture
def delays() -> list[float]:
    return []


@pytest.fixture
def make_client(
    server: EmulatorServer, delays: list[float]
) -> Iterator[Callable[..., OpenAIClient]]:
    clients: list[OpenAIClient] = []

    def make(
        *, api_key: str = KEY, max_retries: int = RETRIES, timeout: float = 5.0
    ) -> OpenAIClient:
        account = Account("default", server.base_url, api_key, timeout=timeout)
        client = OpenAIClient(account, max_retries=max_retries, sleep=delays.append)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def client(make_client: Callable[..., OpenAIClient]) -> OpenAIClient:
    return make_client()


def mock_client(
    handler: Callable[[httpx.Request], httpx.Response],
    delays: list[float],
    **account: Any,
) -> OpenAIClient:
    acct = Account("default", "https://api.example.test/v1", KEY, **account)
    return OpenAIClient(
        acct, max_retries=RETRIES, transport=httpx.MockTransport(handler), sleep=delays.append
    )


def remaining_faults(emu: Emulator) -> list[dict[str, Any]]:
    return emu.state()["faults"]


def batch_input(tmp_path: Path, n: int = 3) -> Path:
    path = tmp_path / "input.jsonl"
    lines = [
        {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"hi {i}"}]},
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


# -- headers -----------------------------------------------------------------------------


def test_bearer_key_organization_and_project_headers_are_sent(delays: list[float]) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"object": "list", "data": [], "has_more": False})

    with mock_client(handler, delays, organization="org-abc", project="proj_xyz") as client:
        client.list_batches(limit=7)
    (request,) = seen
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["openai-organization"] == "org-abc"
    assert request.headers["openai-project"] == "proj_xyz"
    assert request.headers["user-agent"].startswith("django-openai-batches/")
    assert request.url.path == "/v1/batches"
    assert request.url.params["limit"] == "7"


def test_organization_and_project_headers_are_absent_when_not_configured(
    delays: list[float],
) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, json={"id": "batch_1", "object": "batch", "status": "validating"}
        )

    with mock_client(handler, delays) as client:
        client.retrieve_batch("batch_1")
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert "openai-organization" not in seen[0].headers
    assert "openai-project" not in seen[0].headers


def test_the_emulator_accepts_the_bearer_key(client: OpenAIClient) -> None:
    # The emulator insists on KEY, so this only passes when the header carries it.
    assert client.list_batches()["data"] == []


# -- retries -----------------------------------------------------------------------------


def test_429_is_retried_after_the_servers_retry_after(
    emu: Emulator, client: OpenAIClient, delays: list[float]
) -> None:
    emu.inject_fault("GET", "/v1/batches", "status", status=429, retry_after=2.5, count=2)
    assert client.list_batches()["object"] == "list"
    assert delays == [2.5, 2.5]
    assert remaining_faults(emu) == []


def test_retry_after_above_the_cap_falls_back_to_backoff(
    emu: Emulator, client: OpenAIClient, delays: list[float]
) -> None:
    emu.inject_fault("GET", "/v1/batches", "status", status=429, retry_after=MAX_RETRY_AFTER + 1)
    client.list_batches()
    (delay,) = delays
    lo, hi = backoff_range(0)
    assert lo <= delay <= hi


def test_retry_after_ms_wins_over_retry_after(delays: list[float]) -> None:
    answers = [
        httpx.Response(
            429,
            headers={"retry-after-ms": "250", "retry-after": "7", "x-request-id": "req_1"},
            json={"error": {"message": "slow down", "type": "rate_limit_error"}},
        ),
        httpx.Response(429, headers={"retry-after": "3"}, json={"error": {"message": "again"}}),
        httpx.Response(200, json={"id": "batch_1", "object": "batch", "status": "validating"}),
    ]

    with mock_client(lambda request: answers.pop(0), delays) as client:
        assert client.retrieve_batch("batch_1")["id"] == "batch_1"
    assert delays == [0.25, 3.0]


def test_retry_after_as_an_http_date(delays: list[float]) -> None:
    when = email.utils.formatdate(time.time() + 4, usegmt=True)
    answers = [
        httpx.Response(503, headers={"retry-after": when}, json={"error": {"message": "busy"}}),
        httpx.Response(200, json={"id": "batch_1", "status": "validating"}),
    ]
    with mock_client(lambda request: answers.pop(0), delays) as client:
        client.retrieve_batch("batch_1")
    (delay,) = delays
    assert 2.0 <= delay <= 4.0


def test_a_malformed_retry_after_falls_back_to_backoff(delays: list[float]) -> None:
    """A proxy answering ``Retry-After: soon`` must not crash the client: the header is
    neither seconds nor an HTTP date, so the usual backoff applies."""
    answers = [
        httpx.Response(503, headers={"retry-after": "soon"}, json={"error": {"message": "busy"}}),
        httpx.Response(200, json={"id": "batch_1", "status": "validating"}),
    ]
    with mock_client(lambda request: answers.pop(0), delays) as client:
        assert client.retrieve_batch("batch_1") == {"id": "batch_1", "status": "validating"}
    (delay,) = delays
    lo, hi = backoff_range(0)
    assert lo <= delay <= hi


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retried_with_backoff_then_succeed(
    emu: Emulator, client: OpenAIClient, delays: list[float], status: int
) -> None:
    emu.inject_fault("GET", "/v1/batches", "status", status=status, count=2)
    assert client.list_batches()["data"] == []
    assert len(delays) == 2
    for attempt, delay in enumerate(delays):
        lo, hi = backoff_range(attempt)
        assert lo <= delay <= hi
    assert remaining_faults(emu) == []


def test_gives_up_after_max_retries_with_a_typed_error(
    emu: Emulator, client: OpenAIClient, delays: list[float]
) -> None:
    emu.inject_fault("GET", "/v1/batches/*", "status", status=503, count=RETRIES + 2)
    with pytest.raises(APIError) as info:
        client.retrieve_batch("batch_whatever")
    err = info.value
    assert type(err) is APIError
    assert err.status_code == 503
    assert err.retryable
    assert err.body["error"]["message"] == "The server is overloaded or not ready yet."
    assert err.type == "server_error"
    assert err.request_id and err.request_id.startswith("req_")
    assert err.request_id in str(err)
    assert (err.method, err.path) == ("GET", "/batches/batch_whatever")
    assert len(delays) == RETRIES
    # MAX_RETRIES + 1 attempts consumed MAX_RETRIES + 1 faults; one is left.
    assert [f["count"] for f in remaining_faults(emu)] == [1]


def test_429_beyond_retries_is_a_rate_limit_error(
    emu: Emulator, client: OpenAIClient, delays: list[float]
) -> None:
    emu.inject_fault("GET", "/v1/batches", "status", status=429, retry_after=1, count=RETRIES + 1)
    with pytest.raises(RateLimitError) as info:
        client.list_batches()
    assert info.value.status_code == 429
    assert info.value.code == "rate_limit_exceeded"
    assert delays == [1.0] * RETRIES


def test_a_dropped_connection_is_retried(
    emu: Emulator, client: OpenAIClient, delays: list[float]
) -> None:
    emu.inject_fault("GET", "/v1/batches", "drop")
    assert client.list_batches()["object"] == "list"
    (delay,) = delays
    lo, hi = backoff_range(0)
    assert lo <= delay <= hi


def test_dropped_on_every_attempt_is_a_connection_error(
    emu: Emulator, client: OpenAIClient, delays: list[float]
) -> None:
    emu.inject_fault("GET", "/v1/batches", "drop", count=RETRIES + 1)
    with pytest.raises(APIConnectionError) as info:
        client.list_batches()
    assert "GET /batches" in str(info.value)
    assert len(delays) == RETRIES
    assert remaining_faults(emu) == []


def test_a_timeout_is_retried(
    emu: Emulator, make_client: Callable[..., OpenAIClient], delays: list[float]
) -> None:
    client = make_client(timeout=0.2)
    emu.inject_fault("GET", "/v1/batches", "slow", delay=0.5)
    assert client.list_batches()["object"] == "list"
    assert len(delays) == 1


def test_upload_is_retried_from_the_start_of_the_file(
    emu: Emulator, client: OpenAIClient, delays: list[float], tmp_path: Path
) -> None:
    path = batch_input(tmp_path, n=50)
    emu.inject_fault("POST", "/v1/files", "status", status=500)
    uploaded = client.upload_file(path, filename="input.jsonl")
    assert len(delays) == 1
    assert uploaded["purpose"] == "batch"
    assert uploaded["bytes"] == path.stat().st_size
    assert emu.file_content(uploaded["id"]) == path.read_bytes()
    assert len(emu.state()["files"]) == 1


# -- POST /batches is never retried ------------------------------------------------------


@pytest.mark.parametrize("kind", ["status", "drop"])
def test_create_batch_is_not_retried(
    emu: Emulator, client: OpenAIClient, delays: list[float], tmp_path: Path, kind: str
) -> None:
    file_id = client.upload_file(batch_input(tmp_path), filename="input.jsonl")["id"]
    emu.inject_fault("POST", "/v1/batches", kind, status=500, count=2)
    expected = APIError if kind == "status" else APIConnectionError
    with pytest.raises(expected) as info:
        client.create_batch(
            input_file_id=file_id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"k": "v"},
        )
    if kind == "status":
        assert isinstance(info.value, APIError)
        assert info.value.status_code == 500
    # Exactly one attempt: one of the two faults is left, no sleep, no batch.
    assert [f["count"] for f in remaining_faults(emu)] == [1]
    assert delays == []
    assert emu.list_batches() == []


def test_create_batch_sends_metadata(emu: Emulator, client: OpenAIClient, tmp_path: Path) -> None:
    file_id = client.upload_file(batch_input(tmp_path), filename="input.jsonl")["id"]
    batch = client.create_batch(
        input_file_id=file_id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"openai_batches_job": "abc"},
    )
    assert emu.get_batch(batch["id"])["metadata"] == {"openai_batches_job": "abc"}


# -- downloads ---------------------------------------------------------------------------


@pytest.fixture
def stored_file(emu: Emulator) -> tuple[str, bytes]:
    content = b"".join(
        json.dumps({"custom_id": f"r{i}", "padding": "x" * 200}).encode() + b"\n"
        for i in range(2000)
    )
    return emu.add_file(content, filename="output.jsonl")["id"], content


def test_a_truncated_download_is_detected_and_retried(
    emu: Emulator, client: OpenAIClient, delays: list[float], stored_file: tuple[str, bytes]
) -> None:
    file_id, content = stored_file
    emu.inject_fault("GET", "/v1/files/*/content", "truncate")
    dest = io.BytesIO(b"already here|")
    dest.seek(len(b"already here|"))
    size = client.download_file(file_id, dest)
    assert size == len(content)
    # Retried from the start: the half-written first attempt left nothing behind.
    assert dest.getvalue() == b"already here|" + content
    assert len(delays) == 1
    assert remaining_faults(emu) == []


def test_a_download_truncated_on_every_attempt_fails(
    emu: Emulator, client: OpenAIClient, delays: list[float], stored_file: tuple[str, bytes]
) -> None:
    file_id, content = stored_file
    emu.inject_fault("GET", "/v1/files/*/content", "truncate", count=RETRIES + 1)
    dest = io.BytesIO()
    with pytest.raises(APIConnectionError) as info:
        client.download_file(file_id, dest)
    assert f"/files/{file_id}/content" in str(info.value)
    assert len(delays) == RETRIES
    assert remaining_faults(emu) == []
    assert len(dest.getvalue()) < len(content)  # never a silently short "success"


def test_a_download_is_retried_on_a_server_error(
    emu: Emulator, client: OpenAIClient, delays: list[float], stored_file: tuple[str, bytes]
) -> None:
    file_id, content = stored_file
    emu.inject_fault("GET", "/v1/files/*/content", "status", status=502)
    dest = io.BytesIO()
    assert client.download_file(file_id, dest) == len(content)
    assert dest.getvalue() == content
    assert len(delays) == 1


# -- typed errors ------------------------------------------------------------------------


def test_404_is_a_not_found_error_and_is_not_retried(
    client: OpenAIClient, delays: list[float]
) -> None:
    with pytest.raises(NotFoundError) as info:
        client.retrieve_batch("batch_missing")
    err = info.value
    assert err.status_code == 404
    assert not err.retryable
    assert err.param == "id"
    assert "batch_missing" in err.message
    assert err.request_id and err.request_id.startswith("req_")
    with pytest.raises(NotFoundError):
        client.download_file("file-missing", io.BytesIO())
    with pytest.raises(NotFoundError):
        client.delete_file("file-missing")
    assert delays == []


def test_a_wrong_key_is_an_authentication_error(
    make_client: Callable[..., OpenAIClient], delays: list[float]
) -> None:
    client = make_client(api_key="sk-wrong-0000000000000000000000")
    with pytest.raises(AuthenticationError) as info:
        client.list_batches()
    assert info.value.status_code == 401
    assert info.value.code == "invalid_api_key"
    assert delays == []


# -- the key stays secret ----------------------------------------------------------------


def test_the_key_never_appears_in_reprs_errors_or_logs(
    emu: Emulator,
    make_client: Callable[..., OpenAIClient],
    stored_file: tuple[str, bytes],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.DEBUG)  # httpx and httpcore included
    client = make_client()
    assert KEY not in repr(client)
    assert KEY not in repr(client.account)
    errors: list[BaseException] = []

    def expect_error(call: Callable[[], object]) -> None:
        with pytest.raises(ProviderError) as info:
            call()
        errors.append(info.value)

    file_id, _ = stored_file
    emu.inject_fault("GET", "/v1/batches", "status", status=429, retry_after=0, count=3)
    expect_error(client.list_batches)
    emu.inject_fault("GET", "/v1/batches/*", "status", status=500, count=3)
    expect_error(lambda: client.retrieve_batch("batch_x"))
    emu.inject_fault("GET", "/v1/batches", "drop", count=3)
    expect_error(client.list_batches)
    emu.inject_fault("GET", "/v1/files/*/content", "truncate", count=3)
    expect_error(lambda: client.download_file(file_id, io.BytesIO()))
    emu.inject_fault("POST", "/v1/batches", "status", status=400)
    expect_error(
        lambda: client.create_batch(
            input_file_id=file_id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={},
        )
    )
    expect_error(lambda: client.retrieve_batch("batch_missing"))
    emu.inject_fault("GET", "/v1/batches", "slow", delay=0.5, count=3)
    expect_error(make_client(timeout=0.1).list_batches)
    # The emulator insists on KEY, so a client holding a longer key gets a 401 that quotes a
    # masked version of it.
    expect_error(make_client(api_key=KEY + "-other").list_batches)

    assert len(errors) == 8
    for err in errors:
        assert KEY not in str(err)
        assert KEY not in repr(err)
        for arg in err.args:
            assert KEY not in str(arg)
    assert caplog.records, "the failing calls should have logged their retries"
    for record in caplog.records:
        assert KEY not in record.getMessage()
        assert KEY not in str(record.args)
    assert KEY not in caplog.text


def test_a_malformed_key_is_not_echoed_in_errors(
    make_client: Callable[..., OpenAIClient],
    delays: list[float],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A key read from a file or an env var with its trailing newline is an illegal header
    value; h11 quotes the whole header (``Illegal header value b'Bearer sk-...\\n'``) in its
    exception, which must not reach the error text the services store in ``last_error``."""
    caplog.set_level(logging.DEBUG)
    raised: list[OpenAIBatchesError] = []
    try:  # refusing the key up front, or stripping it, would both be fine
        make_client(api_key=KEY + "\n").list_batches()
    except OpenAIBatchesError as err:
        raised.append(err)
    for error in raised:
        assert KEY not in str(error)
        assert KEY not in repr(error)
    assert KEY not in caplog.text
