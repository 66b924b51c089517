"""Lifecycle on the manual clock: expiry, all-failed, scripted failures, result bodies."""

from __future__ import annotations

import base64
import json
import math
import struct

import pytest
from openai import OpenAI

from openai_batches.emulator import Emulator

from .conftest import create_batch, line, read_jsonl

EXPIRED = "This request could not be executed before the completion window expired."


def test_instant_batch_is_completed_on_first_retrieve(client: OpenAI) -> None:
    batch = create_batch(client, [line("a")])
    assert batch.status == "validating"
    assert client.batches.retrieve(batch.id).status == "completed"


def test_expiry_keeps_finished_results(emu: Emulator, client: OpenAI) -> None:
    emu.stall_request("r1")
    batch = create_batch(
        client, [line("r0"), line("r1"), line("r2"), line("r3", emulator={"stall": True})]
    )
    running = client.batches.retrieve(batch.id)
    assert running.status == "in_progress"  # stalled requests keep it running
    assert running.request_counts is not None
    assert (running.request_counts.completed, running.request_counts.total) == (2, 4)
    emu.advance(86399)
    assert client.batches.retrieve(batch.id).status == "in_progress"
    emu.advance(1)
    expired = client.batches.retrieve(batch.id)
    assert expired.status == "expired"
    assert expired.expired_at == expired.expires_at
    assert expired.request_counts is not None
    # Not-run requests are not counted as failed (as observed on the real API).
    assert expired.request_counts.model_dump() == {"total": 4, "completed": 2, "failed": 0}
    output = read_jsonl(client, expired.output_file_id)
    errors = read_jsonl(client, expired.error_file_id)
    assert sorted(o["custom_id"] for o in output) == ["r0", "r2"]
    assert sorted(e["custom_id"] for e in errors) == ["r1", "r3"]
    for e in errors:
        assert e["response"] is None
        assert e["error"] == {"code": "batch_expired", "message": EXPIRED}
    assert emu.events[-1]["type"] == "batch.expired"


def test_all_failed_batch_completes_without_output_file(emu: Emulator, client: OpenAI) -> None:
    batch = create_batch(
        client,
        [
            line("a", emulator={"status_code": 400, "code": "context_length_exceeded"}),
            line("b", emulator={"status_code": 500, "message": "boom"}),
        ],
    )
    done = client.batches.retrieve(batch.id)
    assert done.status == "completed"
    assert done.output_file_id is None and done.error_file_id is not None
    assert done.request_counts is not None
    assert done.request_counts.model_dump() == {"total": 2, "completed": 0, "failed": 2}
    errors = {e["custom_id"]: e for e in read_jsonl(client, done.error_file_id)}
    assert errors["a"]["error"] is None
    assert errors["a"]["response"]["status_code"] == 400
    assert errors["a"]["response"]["body"]["error"]["code"] == "context_length_exceeded"
    assert errors["a"]["response"]["body"]["error"]["type"] == "invalid_request_error"
    assert errors["b"]["response"]["status_code"] == 500
    assert errors["b"]["response"]["body"]["error"] == {
        "message": "boom",
        "type": "server_error",
        "param": None,
        "code": None,
    }
    assert done.usage is not None and done.usage.total_tokens == 0


def test_request_counts_rise_and_timestamps_follow_the_clock(emu: Emulator, client: OpenAI) -> None:
    emu.set_timing("realistic")
    batch = create_batch(client, [line(f"r{i}") for i in range(40)])
    t0 = batch.created_at
    assert client.batches.retrieve(batch.id).status == "validating"
    emu.advance(30)
    b = client.batches.retrieve(batch.id)
    assert b.status == "in_progress" and b.in_progress_at == t0 + 30
    assert b.model == "gpt-4o-mini-2024-07-18"  # the dated snapshot, as the real API reports
    counts = []
    for _ in range(5):  # the run takes 120 s + 0.5 s per request = 140 s
        emu.advance(25)
        b = client.batches.retrieve(batch.id)
        assert b.request_counts is not None
        counts.append(b.request_counts.completed)
    assert counts == sorted(counts) and counts[0] < counts[-1] < 40
    emu.advance(20)
    b = client.batches.retrieve(batch.id)
    assert b.status == "finalizing" and b.request_counts is not None
    assert b.request_counts.completed == 40 and b.output_file_id is None
    emu.advance(120)
    b = client.batches.retrieve(batch.id)
    assert b.status == "completed" and b.output_file_id is not None
    assert b.completed_at == b.finalizing_at + 120  # type: ignore[operator]


def test_result_order_is_shuffled_deterministically(emu: Emulator, client: OpenAI) -> None:
    batch = create_batch(client, [line(f"r{i:02d}") for i in range(30)])
    done = client.batches.retrieve(batch.id)
    first = client.files.content(done.output_file_id or "").content
    again = client.files.content(done.output_file_id or "").content
    ids = [json.loads(x)["custom_id"] for x in first.splitlines()]
    assert first == again
    assert ids != sorted(ids) and sorted(ids) == [f"r{i:02d}" for i in range(30)]


def test_same_body_same_reply(client: OpenAI) -> None:
    a = create_batch(client, [line("x", "same question")])
    b = create_batch(client, [line("y", "same question")])
    out_a = read_jsonl(client, client.batches.retrieve(a.id).output_file_id)[0]
    out_b = read_jsonl(client, client.batches.retrieve(b.id).output_file_id)[0]
    msg = out_a["response"]["body"]["choices"][0]["message"]["content"]
    assert msg == out_b["response"]["body"]["choices"][0]["message"]["content"]
    assert "same question" in msg


def _run(client: OpenAI, endpoint: str, body: dict) -> dict:
    batch = create_batch(
        client, [{"custom_id": "x", "method": "POST", "url": endpoint, "body": body}], endpoint
    )
    done = client.batches.retrieve(batch.id)
    assert done.status == "completed", done.errors
    [result] = read_jsonl(client, done.output_file_id)
    assert result["response"]["status_code"] == 200
    return result["response"]["body"]


def test_chat_completion_body_parses_with_sdk(client: OpenAI) -> None:
    from openai.types.chat import ChatCompletion

    body = _run(client, "/v1/chat/completions", line("x", "hi there")["body"])
    parsed = ChatCompletion.model_validate(body)
    assert parsed.usage is not None and parsed.usage.prompt_tokens > 0
    assert parsed.choices[0].message.content


def test_responses_body_parses_with_sdk(client: OpenAI) -> None:
    from openai.types.responses import Response

    body = _run(client, "/v1/responses", {"model": "gpt-4.1-mini", "input": "hello"})
    parsed = Response.model_validate(body)
    assert parsed.output_text.startswith("Emulated reply")
    assert parsed.usage is not None and parsed.usage.input_tokens > 0


def test_embeddings_honour_dimensions_and_are_deterministic(client: OpenAI) -> None:
    from openai.types import CreateEmbeddingResponse

    body = _run(
        client,
        "/v1/embeddings",
        {"model": "text-embedding-3-small", "input": ["a", "b"], "dimensions": 8},
    )
    parsed = CreateEmbeddingResponse.model_validate(body)
    assert [len(d.embedding) for d in parsed.data] == [8, 8]
    assert math.isclose(sum(v * v for v in parsed.data[0].embedding), 1.0, rel_tol=1e-6)
    assert parsed.data[0].embedding != parsed.data[1].embedding
    again = _run(
        client, "/v1/embeddings", {"model": "text-embedding-3-small", "input": "a", "dimensions": 8}
    )
    assert again["data"][0]["embedding"] == body["data"][0]["embedding"]
    default = _run(client, "/v1/embeddings", {"model": "text-embedding-3-small", "input": "a"})
    assert len(default["data"][0]["embedding"]) == 1536
    b64 = _run(
        client,
        "/v1/embeddings",
        {
            "model": "text-embedding-3-small",
            "input": "a",
            "dimensions": 8,
            "encoding_format": "base64",
        },
    )
    decoded = struct.unpack("<8f", base64.b64decode(b64["data"][0]["embedding"]))
    assert all(
        math.isclose(x, y, abs_tol=1e-6)
        for x, y in zip(decoded, body["data"][0]["embedding"], strict=True)
    )


def test_completions_and_moderations_bodies(client: OpenAI) -> None:
    from openai.types import Completion, ModerationCreateResponse

    completion = Completion.model_validate(
        _run(client, "/v1/completions", {"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi"})
    )
    assert completion.object == "text_completion" and completion.usage is not None
    moderation = ModerationCreateResponse.model_validate(
        _run(client, "/v1/moderations", {"input": ["fine", "emulator-flag this"]})
    )
    assert [r.flagged for r in moderation.results] == [False, True]
    assert moderation.model == "omni-moderation-latest"


def test_images_and_videos_bodies(client: OpenAI) -> None:
    from openai.types import ImagesResponse, Video

    images = ImagesResponse.model_validate(
        _run(client, "/v1/images/generations", {"model": "gpt-image-1", "prompt": "a cat"})
    )
    assert images.data and images.data[0].b64_json
    video = Video.model_validate(_run(client, "/v1/videos", {"model": "sora-2", "prompt": "waves"}))
    assert video.status == "completed"


def test_cancel_during_validation(emu: Emulator, client: OpenAI) -> None:
    emu.set_timing("realistic")
    batch = create_batch(client, [line("a")])
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling"
    emu.advance(300)
    done = client.batches.retrieve(batch.id)
    assert done.status == "cancelled"
    assert done.output_file_id is None and done.error_file_id is None
    assert emu.events[-1] == {
        "object": "event",
        "id": emu.events[-1]["id"],
        "type": "batch.cancelled",
        "created_at": done.cancelled_at,
        "data": {"id": batch.id},
    }


def test_python_api_views(emu: Emulator, client: OpenAI) -> None:
    batch = create_batch(client, [line("a")])
    assert emu.get_batch(batch.id)["status"] == "completed"
    assert [b["id"] for b in emu.list_batches()] == [batch.id]
    out = emu.get_batch(batch.id)["output_file_id"]
    assert emu.get_file(out)["purpose"] == "batch_output"
    assert json.loads(emu.file_content(out))["custom_id"] == "a"
    state = emu.state()
    assert state["batches"][0]["id"] == batch.id and len(state["files"]) == 2
    emu.reset()
    assert emu.list_batches() == [] and emu.state()["files"] == []


@pytest.mark.parametrize(
    ("model", "reported"),
    [
        ("gpt-4o-mini", "gpt-4o-mini-2024-07-18"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini-2024-07-18"),  # already a snapshot
        ("my-fine-tune", "my-fine-tune"),  # unknown: as given
    ],
)
def test_the_batch_reports_the_dated_snapshot_of_its_model(
    emu: Emulator, client: OpenAI, model: str, reported: str
) -> None:
    emu.set_token_budget("gpt-4o-mini", 10**6)  # budgets stay keyed by the name used
    batch = create_batch(client, [line("a", model=model)])
    assert client.batches.retrieve(batch.id).model == reported


def test_a_moderation_batch_reports_its_snapshot(client: OpenAI) -> None:
    lines = [{"custom_id": "a", "method": "POST", "url": "/v1/moderations", "body": {"input": "x"}}]
    batch = create_batch(client, lines, "/v1/moderations")
    assert client.batches.retrieve(batch.id).model == "omni-moderation-2024-09-26"
