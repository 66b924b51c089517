"""The official openai SDK drives the emulator over real HTTP, end to end."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI
from openai.types import Batch, FileObject
from openai.types.webhooks import BatchCompletedWebhookEvent
from pydantic import BaseModel

from openai_batches.emulator import Emulator, EmulatorServer

from .conftest import API_KEY, Receiver, create_batch, line, read_jsonl, upload

SECRET = "whsec_ZW11bGF0b3ItdGVzdC1zZWNyZXQtMDEyMzQ1Njc4OQ=="


def assert_complete(model: type[BaseModel], raw: dict[str, Any]) -> None:
    """Every field the SDK type declares is present in the raw JSON (null allowed), and the
    JSON validates strictly against the SDK type (not just ``construct``)."""
    missing = set(model.model_fields) - set(raw)
    assert not missing, f"{model.__name__} is missing {sorted(missing)}"
    parsed = model.model_validate(raw)
    assert parsed.model_fields_set == set(model.model_fields)
    for name, info in model.model_fields.items():
        value = raw[name]
        sub = getattr(info.annotation, "__args__", (info.annotation,))
        for cls in sub:
            if isinstance(cls, type) and issubclass(cls, BaseModel) and isinstance(value, dict):
                assert_complete(cls, value)


def raw_batch(server: EmulatorServer, batch_id: str) -> dict[str, Any]:
    response = httpx.get(
        f"{server.base_url}/batches/{batch_id}", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"].startswith("req_")
    return response.json()


def wait_terminal(client: OpenAI, batch_id: str, timeout: float = 20.0) -> Batch:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
        assert time.monotonic() < deadline, f"batch stuck in {batch.status}"
        time.sleep(0.1)


def test_full_flow_with_sdk(
    emu: Emulator, server: EmulatorServer, client: OpenAI, receiver: Receiver
) -> None:
    emu.configure_webhook(receiver.url, SECRET)
    emu.fail_request("r3", 400, "context_length_exceeded", "too long")
    lines = [line(f"r{i}", f"question {i}") for i in range(10)]
    file_id = upload(client, lines)
    file = client.files.retrieve(file_id)
    assert file.purpose == "batch" and file.status == "processed"
    assert file.expires_at == file.created_at + 2592000

    batch = client.batches.create(
        input_file_id=file_id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"job": "42"},
    )
    assert batch.status == "validating"
    assert batch.expires_at == batch.created_at + 86400
    assert batch.request_counts is not None and batch.request_counts.total == 0
    assert batch.id.startswith("batch_") and len(batch.id) == len("batch_") + 32

    done = wait_terminal(client, batch.id)
    assert done.status == "completed"
    assert done.model == "gpt-4o-mini-2024-07-18"  # the dated snapshot the alias resolved to
    assert done.metadata == {"job": "42"}
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed) == (10, 9)
    assert done.request_counts.failed == 1
    assert done.usage is not None and done.usage.total_tokens > 0
    assert_complete(Batch, raw_batch(server, batch.id))

    output = read_jsonl(client, done.output_file_id)
    errors = read_jsonl(client, done.error_file_id)
    assert sorted(o["custom_id"] for o in output) == sorted(f"r{i}" for i in range(10) if i != 3)
    assert [o["custom_id"] for o in output] != [f"r{i}" for i in range(10) if i != 3]
    for o in output:
        assert o["id"].startswith("batch_req_") and o["error"] is None
        assert o["response"]["status_code"] == 200
        assert o["response"]["body"]["object"] == "chat.completion"
    assert errors == [
        {
            "id": errors[0]["id"],
            "custom_id": "r3",
            "response": {
                "status_code": 400,
                "request_id": errors[0]["response"]["request_id"],
                "body": {
                    "error": {
                        "message": "too long",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "context_length_exceeded",
                    }
                },
            },
            "error": None,
        }
    ]
    out_file = client.files.retrieve(done.output_file_id or "")
    assert out_file.purpose == "batch_output"

    # The webhook the emulator really sent unwraps with the SDK and the same secret.
    assert emu.wait_for_webhooks(10)
    assert receiver.wait_for(1)
    headers, body, _ = receiver.requests[0]
    event = client.webhooks.unwrap(body, headers, secret=SECRET)
    assert isinstance(event, BatchCompletedWebhookEvent)
    assert event.data.id == batch.id
    assert event.id.startswith("evt_") and headers["webhook-id"].startswith("wh_")
    assert event.created_at == done.completed_at


def test_every_terminal_status_parses_complete(
    emu: Emulator, server: EmulatorServer, client: OpenAI
) -> None:
    completed = create_batch(client, [line("a"), line("b")])
    failed = create_batch(client, ["not json"])
    expired = create_batch(client, [line("a"), line("stuck", emulator={"stall": True})])
    cancelled = create_batch(client, [line("a"), line("stuck", emulator={"stall": True})])
    emu.tick()
    client.batches.cancel(cancelled.id)
    emu.advance(86400)
    statuses = {}
    for batch in (completed, failed, expired, cancelled):
        raw = raw_batch(server, batch.id)
        assert_complete(Batch, raw)
        statuses[raw["status"]] = raw
    assert set(statuses) == {"completed", "failed", "expired", "cancelled"}
    assert statuses["failed"]["errors"]["data"][0]["line"] == 1
    assert statuses["expired"]["expired_at"] is not None
    assert statuses["cancelled"]["cancelled_at"] is not None
    for status in ("cancelling", "validating"):  # in-flight shapes too
        assert status not in statuses

    listing = httpx.get(
        f"{server.base_url}/files", headers={"Authorization": f"Bearer {API_KEY}"}
    ).json()
    assert set(listing) == {"object", "data", "first_id", "last_id", "has_more"}
    for raw_file in listing["data"]:
        assert_complete(FileObject, raw_file)


def test_list_auto_paginates_over_more_than_100(emu: Emulator, client: OpenAI) -> None:
    file_id = upload(client, [line("a")])
    created = [
        client.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        ).id
        for _ in range(130)
    ]
    page = client.batches.list(limit=100)
    assert len(page.data) == 100 and page.has_more
    assert page.data[0].id == created[-1]  # newest first
    seen = [b.id for b in client.batches.list(limit=100)]
    assert seen == created[::-1]
    seen_small = [b.id for b in client.batches.list(limit=7)]
    assert seen_small == created[::-1]
    last = client.batches.list(limit=100, after=seen[99])
    assert len(last.data) == 30 and last.has_more is False
    assert last.first_id == seen[100] and last.last_id == seen[-1]  # type: ignore[attr-defined]


def test_cancel_with_sdk_keeps_finished_results(emu: Emulator, client: OpenAI) -> None:
    emu.set_timing("realistic")  # ~2 min + 0.5 s per request in progress
    batch = create_batch(client, [line(f"r{i}") for i in range(100)])
    emu.advance(30)  # validated, now in_progress
    emu.advance(100)
    running = client.batches.retrieve(batch.id)
    assert running.status == "in_progress"
    assert running.request_counts is not None
    finished = running.request_counts.completed
    assert 0 < finished < 100

    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    emu.advance(300)
    cancelled = client.batches.retrieve(batch.id)
    assert cancelled.status == "cancelled" and cancelled.cancelled_at is not None
    assert cancelled.request_counts is not None
    assert cancelled.request_counts.completed == finished
    output = read_jsonl(client, cancelled.output_file_id)
    errors = read_jsonl(client, cancelled.error_file_id)
    assert len(output) == finished
    assert len(errors) == 100 - finished
    assert all(e["response"] is None for e in errors)
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    assert {o["custom_id"] for o in output} | {e["custom_id"] for e in errors} == {
        f"r{i}" for i in range(100)
    }

    with pytest.raises(openai.BadRequestError) as info:
        client.batches.cancel(batch.id)
    assert info.value.status_code == 400


def test_fast_profile_walks_every_state_in_real_time(emu: Emulator) -> None:
    fast = Emulator(timing="fast")
    try:
        with (
            EmulatorServer(fast, port=0) as srv,
            OpenAI(base_url=srv.base_url, api_key=API_KEY, max_retries=0) as c,
        ):
            batch = create_batch(c, [line(f"r{i}") for i in range(20)])
            seen = []
            counts = []
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                b = c.batches.retrieve(batch.id)
                if not seen or seen[-1] != b.status:
                    seen.append(b.status)
                assert b.request_counts is not None
                counts.append(b.request_counts.completed)
                if b.status == "completed":
                    break
                time.sleep(0.1)
            assert seen == ["validating", "in_progress", "finalizing", "completed"]
            assert any(0 < n < 20 for n in counts)  # counts rose while in progress
            assert counts == sorted(counts)
    finally:
        fast.close()
