"""The provider adapters against a broken or hostile provider, and against other users of
the same provider account: what they must never do (cancel a batch that is not ours, loop
for ever on a list, point a call at another endpoint or host, crash on a value out of
range) however the answers look.

The emulator plays the provider where it can; a local ``httpx.MockTransport`` plays the
hostile server the emulator will not be (answers no real provider sends)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from openai_batches import services
from openai_batches.client import get_client
from openai_batches.emulator import EmulatorServer
from openai_batches.models import JobState
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
