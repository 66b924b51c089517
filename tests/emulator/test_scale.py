"""Scale: a 50,000-line batch streams through, and listing 1,000 batches stays fast."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openai import OpenAI

from openai_batches.emulator import Emulator

from .conftest import line, upload


@pytest.mark.slow
def test_50k_lines_upload_and_streamed_download(client: OpenAI, tmp_path: Path) -> None:
    src = tmp_path / "big.jsonl"
    with src.open("w") as fh:
        for i in range(50_000):
            fh.write(json.dumps(line(f"req-{i}", f"Summarise item {i}")) + "\n")
    with src.open("rb") as fh:
        file = client.files.create(file=fh, purpose="batch")
    assert file.bytes == src.stat().st_size
    batch = client.batches.create(
        input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = client.batches.retrieve(batch.id)
    assert done.status == "completed"
    assert done.request_counts is not None and done.request_counts.completed == 50_000
    seen = set()
    with client.files.with_streaming_response.content(done.output_file_id or "") as response:
        for text in response.iter_lines():
            if text:
                seen.add(json.loads(text)["custom_id"])
    assert len(seen) == 50_000


def test_listing_1000_batches_pages_correctly(emu: Emulator, client: OpenAI) -> None:
    # Speed is measured by benchmarks/emulator_listing.py, not asserted here.
    file = emu.add_file(
        b'{"custom_id":"a","method":"POST","url":"/v1/moderations","body":{"input":"x"}}\n'
    )
    created = [
        emu.create_batch(
            {"input_file_id": file["id"], "endpoint": "/v1/moderations", "completion_window": "24h"}
        )["id"]
        for _ in range(1000)
    ]
    emu.tick()  # run the 1,000 tiny batches to completion first
    ids = [b.id for b in client.batches.list(limit=100)]
    assert ids == created[::-1]  # all of them, newest first, no repeats
    page = client.batches.list(limit=100, after=ids[499])
    assert [b.id for b in page.data] == ids[500:600]
    assert page.has_more


def test_upload_helper_round_trip(client: OpenAI) -> None:
    file_id = upload(client, [line("a")])
    assert client.files.retrieve(file_id).bytes > 0
