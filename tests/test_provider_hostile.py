"""The provider adapters against a broken or hostile provider, and against other users of
the same provider account: what they must never do (cancel a batch that is not ours, loop
for ever on a list, point a call at another endpoint or host, crash on a value out of
range) however the answers look.

The emulator plays the provider where it can; a local ``httpx.MockTransport`` plays the
hostile server the emulator will not be (answers no real provider sends)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from openai_batches import services
from openai_batches.client import BatchLookup, get_client
from openai_batches.conf import Account
from openai_batches.emulator import EmulatorServer
from openai_batches.exceptions import APIConnectionError
from openai_batches.models import JobState
from openai_batches.providers import provider_for
from openai_batches.providers.azure import AzureProvider
from tests.lifecycle_helpers import chat_items
from tests.provider_helpers import KEY, account_on_emulator

DEPLOYMENT = "gpt-4o-mini-batch"


def azure_account(server: EmulatorServer) -> dict[str, Any]:
    return {"PROVIDER": "azure", "BASE_URL": server.root_url, "API_KEY": KEY}


def _upload(client: Any, folder: Path, custom_id: str) -> str:
    body = {"model": DEPLOYMENT, "messages": [{"role": "user", "content": "hi"}]}
    line = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
    path = folder / f"{custom_id}.jsonl"
    path.write_text(json.dumps(line) + "\n")
    return str(client.upload_file(path, filename=path.name)["id"])


# -- Azure: the app's deadline applies to the app's batches only ----------------------------


@pytest.mark.django_db
def test_listing_an_azure_resource_never_cancels_a_batch_another_program_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An Azure resource is shared (other teams, the portal, other apps): a batch this app
    did not create may run as long as its owner likes. Listing (sync's refresh of many
    parts, the crash-recovery lookup) must not cancel it past *our* deadline."""
    with account_on_emulator("azure", azure_account) as (emu, _server):
        monkeypatch.setattr(AzureProvider, "now", staticmethod(emu.clock.now))
        emu.stall_request("theirs")
        emu.stall_request("req-0")
        client = get_client("acct")
        try:
            theirs = client.create_batch(
                input_file_id=_upload(client, tmp_path, "theirs"),
                endpoint="/v1/chat/completions",
                completion_window="24h",
                metadata={"team": "someone-else"},
            )
            job = services.create_job(items=chat_items(1, model=DEPLOYMENT), account="acct")
            services.request_submit(job)
            job = services.submit(job)
            assert job.state == JobState.SUBMITTED, job.last_error
            ours = job.batches.get().provider_batch_id
            emu.advance(86_400 * 3)  # past the 24-hour deadline of both

            listed = {b["id"]: b["status"] for b in client.list_batches()["data"]}
        finally:
            client.close()
        assert emu.get_batch(theirs["id"])["status"] == "in_progress"
        assert listed[theirs["id"]] == "in_progress"
        # The app's own batch is still held to the app's deadline.
        assert emu.get_batch(ours)["status"] in ("cancelling", "cancelled")


# -- lists whose cursor does not advance -----------------------------------------------------


def _lookup(since: float) -> BatchLookup:
    return BatchLookup(
        key="job:1", since=since, count=1, custom_ids=lambda: ["a"], tracked=lambda ids: set()
    )


@pytest.mark.parametrize("provider", ["openai", "azure", "anthropic"])
def test_a_lookup_whose_list_cursor_does_not_advance_stops_with_an_error(provider: str) -> None:
    """The crash-recovery lookup pages back to the part's planning time; a server whose
    pages never advance (the same page, ``has_more`` for ever) must end in an error, not a
    worker looping until its lease runs out."""
    now = int(time.time())
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url)
        if len(calls) > 50:
            raise RuntimeError("still looping")
        if provider == "anthropic":
            batch = {
                "id": "msgbatch_1",
                "type": "message_batch",
                "processing_status": "in_progress",
                "request_counts": {"processing": 2},
                "created_at": "2030-01-01T00:00:00Z",
            }
            return httpx.Response(200, json={"data": [batch], "has_more": True})
        batch = {"id": "batch_1", "object": "batch", "status": "in_progress", "created_at": now}
        return httpx.Response(200, json={"object": "list", "data": [batch], "has_more": True})

    account = Account("acct", "https://provider.example", KEY, provider=provider)
    client = provider_for(account, transport=httpx.MockTransport(handler))
    with pytest.raises(APIConnectionError, match="does not advance"):
        client.find_batches(_lookup(now - 60))
    assert len(calls) == 2
