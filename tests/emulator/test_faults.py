"""Fault injection, through the Python API and the /_emulator/ control API."""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from openai_batches.emulator import Emulator, EmulatorServer
from openai_batches.emulator.records import FAULT_KINDS

from .conftest import API_KEY, create_batch, jsonl, line, upload

DOCS = Path(__file__).resolve().parents[2] / "docs"

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def test_429_with_retry_after(emu: Emulator, client: OpenAI) -> None:
    emu.inject_fault("GET", "/v1/batches", "status", status=429, retry_after=0.2)
    with pytest.raises(openai.RateLimitError) as info:
        client.batches.list()
    assert info.value.response.headers["retry-after"] == "0.2"
    assert info.value.type == "rate_limit_error"
    assert info.value.request_id and info.value.request_id.startswith("req_")
    client.batches.list()  # the fault was used up


def test_sdk_retries_through_transient_faults(emu: Emulator, server: EmulatorServer) -> None:
    emu.inject_fault("POST", "/v1/files", "status", count=1, status=429, retry_after=0.1)
    emu.inject_fault("POST", "/v1/batches", "status", count=2, status=503)
    with OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=3) as c:
        batch = create_batch(c, [line("a")])
    assert batch.status == "validating"
    assert emu.state()["faults"] == []


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors(emu: Emulator, client: OpenAI, status: int) -> None:
    batch = create_batch(client, [line("a")])
    emu.inject_fault("GET", "/v1/batches/*", "status", status=status)
    with pytest.raises(openai.InternalServerError) as info:
        client.batches.retrieve(batch.id)
    assert info.value.status_code == status
    assert info.value.type == "server_error"
    assert client.batches.retrieve(batch.id).status == "completed"


def test_dropped_connection(emu: Emulator, client: OpenAI) -> None:
    emu.inject_fault("POST", "/v1/batches", "drop")
    file_id = upload(client, [line("a")])
    with pytest.raises(openai.APIConnectionError):
        client.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert emu.list_batches() == []  # the dropped create never reached the handler


def test_slow_response(emu: Emulator, client: OpenAI) -> None:
    emu.inject_fault("GET", "/v1/files", "slow", delay=1.0)
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.3).files.list()
    emu.inject_fault("GET", "/v1/files", "slow", delay=0.3)
    start = time.monotonic()
    client.files.list()
    assert time.monotonic() - start >= 0.3


def test_truncated_download(emu: Emulator, server: EmulatorServer, client: OpenAI) -> None:
    batch = create_batch(client, [line(f"r{i}") for i in range(200)])
    out = client.batches.retrieve(batch.id).output_file_id
    emu.inject_fault("GET", "/v1/files/*/content", "truncate")
    received: list[int] = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("GET", f"{server.base_url}/files/{out}/content", headers=AUTH) as r,
    ):
        size = int(r.headers["content-length"])
        for chunk in r.iter_raw():
            received.append(len(chunk))
    assert sum(received) == size // 2
    # The SDK sees it as a connection error (and would retry).
    emu.inject_fault("GET", "/v1/files/*/content", "truncate")
    with pytest.raises(openai.APIConnectionError):
        client.files.content(out or "")
    assert len(client.files.content(out or "").content) == size


def test_cannot_find_file_right_after_upload(emu: Emulator, client: OpenAI) -> None:
    file_id = upload(client, [line("a")])
    emu.inject_fault("POST", "/v1/batches", "file_not_found")
    with pytest.raises(openai.BadRequestError) as info:
        client.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert info.value.param == "file_id"
    assert info.value.body == {
        "message": f"Cannot find file {file_id}, or project proj_emulator does not have "
        "access to it.",
        "type": "invalid_request_error",
        "param": "file_id",
        "code": None,
    }
    client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )


def test_control_api(emu: Emulator, server: EmulatorServer, client: OpenAI) -> None:
    root = server.root_url + "/_emulator"
    r = httpx.post(
        f"{root}/faults",
        json={"method": "GET", "path": "/v1/files", "kind": "status", "status": 502, "count": 2},
    )
    assert r.status_code == 200 and r.json()["fault"]["count"] == 2
    assert len(httpx.get(f"{root}/faults").json()["faults"]) == 1
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            client.files.list()
    client.files.list()

    httpx.post(f"{root}/faults", json={"method": "*", "path": "/v1/*", "kind": "drop"})
    assert httpx.delete(f"{root}/faults").json() == {"ok": True}
    client.files.list()

    httpx.post(f"{root}/timing", json={"timing": "realistic"})
    httpx.post(f"{root}/stall_request", json={"custom_id": "s"})
    httpx.post(
        f"{root}/fail_request",
        json={"custom_id": "f", "status_code": 429, "code": "rate_limit_exceeded"},
    )
    batch = create_batch(client, [line("s"), line("f"), line("ok")])
    before = httpx.get(f"{root}/health").json()["now"]
    assert httpx.post(f"{root}/advance", json={"seconds": 86400}).json()["now"] == before + 86400
    done = client.batches.retrieve(batch.id)
    assert done.status == "expired"
    assert done.request_counts is not None
    assert done.request_counts.model_dump() == {"total": 3, "completed": 1, "failed": 1}

    httpx.post(f"{root}/token_budget", json={"model": "gpt-4o-mini", "tokens": 1})
    httpx.post(f"{root}/timing", json={"timing": "instant"})
    rejected = create_batch(client, [line("x")])
    errors = client.batches.retrieve(rejected.id).errors
    assert errors is not None and errors.data is not None
    assert errors.data[0].code == "token_limit_exceeded"

    state = httpx.get(f"{root}/state").json()
    assert {b["id"] for b in state["batches"]} == {batch.id, rejected.id}
    assert state["token_budgets"] == {"gpt-4o-mini": 1}
    assert httpx.post(f"{root}/reset").json()["ok"] is True
    assert httpx.get(f"{root}/state").json()["batches"] == []
    assert httpx.post(f"{root}/faults", json={"kind": "nope"}).status_code == 400
    assert httpx.post(f"{root}/unknown", json={}).status_code == 404


def test_in_process_wsgi_transport(emu: Emulator) -> None:
    transport = httpx.WSGITransport(app=emu.wsgi_app)
    with OpenAI(
        base_url="http://emulator/v1",
        api_key=API_KEY,
        http_client=httpx.Client(transport=transport),
        max_retries=0,
    ) as c:
        file = c.files.create(file=("x.jsonl", io.BytesIO(jsonl([line("a")]))), purpose="batch")
        batch = c.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        assert c.batches.retrieve(batch.id).status == "completed"


# -- broken and hostile answers (for testing a client's limits) ---------------------------


def test_429_without_retry_after(emu: Emulator, server: EmulatorServer) -> None:
    emu.inject_fault("GET", "/v1/batches", "status", status=429, retry_after=-1)
    r = httpx.get(f"{server.base_url}/batches", headers=AUTH)
    assert r.status_code == 429
    assert "retry-after" not in r.headers
    assert r.json()["error"]["code"] == "rate_limit_exceeded"


def test_huge_answers_stream_without_a_length(emu: Emulator, server: EmulatorServer) -> None:
    root = server.root_url + "/_emulator"
    fault = {"method": "GET", "path": "/v1/batches", "kind": "huge", "size": 3_000_000}
    assert httpx.post(f"{root}/faults", json=fault).json()["fault"]["size"] == 3_000_000
    with httpx.stream("GET", f"{server.base_url}/batches", headers=AUTH) as r:
        assert r.status_code == 200
        assert "content-length" not in r.headers
        total = sum(len(chunk) for chunk in r.iter_raw())
    assert total == len(b'{"data": "') + 3_000_000


def test_drip_sends_the_real_answer_slowly(emu: Emulator, server: EmulatorServer) -> None:
    emu.inject_fault("GET", "/v1/batches", "drip", delay=0.002)
    started = time.monotonic()
    r = httpx.get(f"{server.base_url}/batches", headers=AUTH)
    elapsed = time.monotonic() - started
    assert r.json()["object"] == "list"
    assert elapsed >= len(r.content) * 0.002


def _is_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize(
    ("kind", "check"),
    [
        ("garbage", lambda r: not _is_json(r.content)),
        ("wrong_shape", lambda r: isinstance(r.json(), list) and r.json()[0]["object"] == "batch"),
        ("no_id", lambda r: "id" not in r.json() and r.json()["object"] == "batch"),
    ],
)
def test_mangled_answers_after_the_call_ran(
    emu: Emulator, server: EmulatorServer, client: OpenAI, kind: str, check: Any
) -> None:
    batch = create_batch(client, [line("a")])
    emu.inject_fault("GET", "/v1/batches/*", kind)
    r = httpx.get(f"{server.base_url}/batches/{batch.id}", headers=AUTH)
    assert r.status_code == 200
    assert check(r)
    assert int(r.headers["content-length"]) == len(r.content)


def test_no_id_strips_every_id_of_a_list(
    emu: Emulator, server: EmulatorServer, client: OpenAI
) -> None:
    create_batch(client, [line("a")])
    emu.inject_fault("GET", "/v1/batches", "no_id")
    page = httpx.get(f"{server.base_url}/batches", headers=AUTH).json()
    assert page["data"] and all("id" not in b for b in page["data"])


def test_a_truncated_json_answer(emu: Emulator, server: EmulatorServer) -> None:
    emu.inject_fault("GET", "/v1/batches", "truncate")
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(f"{server.base_url}/batches", headers=AUTH)
    assert httpx.get(f"{server.base_url}/batches", headers=AUTH).json()["object"] == "list"


def test_a_body_fault_on_a_failing_call_answers_the_failure(
    emu: Emulator, server: EmulatorServer
) -> None:
    emu.inject_fault("GET", "/v1/batches/*", "garbage")
    r = httpx.get(f"{server.base_url}/batches/batch_missing", headers=AUTH)
    assert r.status_code == 404
    assert r.json()["error"]["param"] == "id"


def test_stuck_cursor_serves_the_first_page_whatever_the_cursor(
    emu: Emulator, server: EmulatorServer, client: OpenAI
) -> None:
    ids = [create_batch(client, [line("a")]).id for _ in range(3)]
    emu.inject_fault("GET", "/v1/batches", "stuck_cursor", count=2)
    for after in (None, ids[1]):
        params = {"limit": 1, **({"after": after} if after else {})}
        page = httpx.get(f"{server.base_url}/batches", headers=AUTH, params=params).json()
        assert [b["id"] for b in page["data"]] == [ids[2]]  # newest first, cursor ignored
        assert page["has_more"] is True
    # Used up: the cursor works again, and the last page says so.
    page = httpx.get(
        f"{server.base_url}/batches", headers=AUTH, params={"limit": 5, "after": ids[2]}
    ).json()
    assert [b["id"] for b in page["data"]] == [ids[1], ids[0]]
    assert page["has_more"] is False


def test_the_docs_name_every_fault_kind() -> None:
    text = (DOCS / "reference" / "emulator.md").read_text()
    (row,) = [r for r in text.splitlines() if r.startswith("| `POST /_emulator/faults`")]
    assert set(re.findall(r"`([a-z_]+)`", row.split("|")[3])) >= set(FAULT_KINDS)
