"""A scripted failure or stall limited to ``times`` batches: what a transient fault looks
like when the request is sent again (the retry tests of the app build on this)."""

from __future__ import annotations

import json

import pytest

from openai_batches.emulator import Emulator


def _run(emu: Emulator, custom_ids: list[str]) -> dict[str, dict]:
    lines = b"".join(
        json.dumps(
            {
                "custom_id": cid,
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": cid}]},
            }
        ).encode()
        + b"\n"
        for cid in custom_ids
    )
    file = emu.add_file(lines, filename="in.jsonl")
    batch = emu.create_batch(
        {
            "input_file_id": file["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        }
    )
    emu.advance(25 * 3600)
    done = emu.retrieve_batch(batch["id"])
    results: dict[str, dict] = {}
    for key in ("output_file_id", "error_file_id"):
        if done.get(key):
            for raw in emu.file_content(done[key]).splitlines():
                line = json.loads(raw)
                results[line["custom_id"]] = line
    return results


@pytest.fixture
def emu():
    emulator = Emulator(clock="manual")
    yield emulator
    emulator.close()


def test_failure_with_times_applies_to_that_many_batches_then_succeeds(emu):
    emu.fail_request("r1", 500, "server_error", "boom", times=1)
    first = _run(emu, ["r1", "r2"])
    assert first["r1"]["response"]["status_code"] == 500
    assert first["r2"]["response"]["status_code"] == 200
    second = _run(emu, ["r1"])
    assert second["r1"]["response"]["status_code"] == 200


def test_failure_without_times_applies_to_every_batch(emu):
    emu.fail_request("r1", 400)
    assert _run(emu, ["r1"])["r1"]["response"]["status_code"] == 400
    assert _run(emu, ["r1"])["r1"]["response"]["status_code"] == 400


def test_stall_with_times_expires_once_then_runs(emu):
    emu.stall_request("r1", times=1)
    first = _run(emu, ["r1", "r2"])
    assert first["r1"]["error"]["code"] == "batch_expired"
    assert first["r2"]["response"]["status_code"] == 200
    assert _run(emu, ["r1"])["r1"]["response"]["status_code"] == 200


def test_times_must_be_positive(emu):
    with pytest.raises(ValueError, match="at least 1"):
        emu.fail_request("r1", times=0)
