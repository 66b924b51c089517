"""``--flavor`` on the command line: the server speaks the chosen provider's API, and a
flavour option given to the wrong flavour is an error rather than silently ignored."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import anthropic
import pytest
from openai import AzureOpenAI

from openai_batches.emulator.cli import flavor_options

ROOT = Path(__file__).resolve().parents[2]


def serve(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "openai_batches.emulator", "--port", "0", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait(timeout=10)


def test_flavor_anthropic_serves_message_batches() -> None:
    proc, base_url = serve("--flavor", "anthropic", "--api-key", "k", "--timing", "instant")
    try:
        client = anthropic.Anthropic(base_url=base_url, api_key="k", max_retries=0)
        params = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
        batch = client.messages.batches.create(requests=[{"custom_id": "a", "params": params}])
        assert batch.processing_status == "in_progress"
        assert client.messages.batches.retrieve(batch.id).processing_status == "ended"
    finally:
        stop(proc)


def test_flavor_azure_with_quirks_serves_both_surfaces() -> None:
    proc, base_url = serve("--flavor", "azure", "--api-key", "k", "--azure-quirks")
    try:
        assert base_url.endswith("/openai/v1")
        root = base_url.removesuffix("/openai/v1")
        dated = AzureOpenAI(azure_endpoint=root, api_key="k", api_version="2024-10-21")
        line = {"custom_id": "a", "method": "POST", "url": "/chat/completions", "body": {}}
        data = (json.dumps(line) + "\n").encode()
        file_id = dated.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch").id
        created = dated.batches.with_raw_response.create(
            input_file_id=file_id, endpoint="/chat/completions", completion_window="24h"
        ).http_response.json()
        assert created["status"] == "Validating"  # --azure-quirks took effect
        v1 = AzureOpenAI(base_url=base_url, api_key="k", api_version="v1")
        assert [b.id for b in v1.batches.list()] == [created["id"]]
    finally:
        stop(proc)


def test_flavor_options_belong_to_their_flavor() -> None:
    assert flavor_options("azure", ["t"], True, True) == {
        "tokens": ["t"],
        "quirks": True,
        "fail_fast": True,
    }
    assert flavor_options("anthropic", ["t"], False, False) == {"auth_tokens": ["t"]}
    assert flavor_options("openai", [], False, False) == {}
    with pytest.raises(SystemExit, match="--flavor azure"):
        flavor_options("openai", [], True, False)
    with pytest.raises(SystemExit, match="--token"):
        flavor_options("openai", ["t"], False, False)
