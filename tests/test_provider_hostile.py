"""The provider adapters against a broken or hostile provider, and against other users of
the same provider account: what they must never do (cancel a batch that is not ours, loop
for ever on a list, point a call at another endpoint or host, crash on a value out of
range) however the answers look.

The emulator plays the provider where it can; a local ``httpx.MockTransport`` plays the
hostile server the emulator will not be (answers no real provider sends)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from openai_batches import services
from openai_batches.client import BatchLookup, _check_batch, get_client
from openai_batches.conf import Account
from openai_batches.emulator import EmulatorServer
from openai_batches.exceptions import APIConnectionError, ConfigurationError, ProviderError
from openai_batches.jsonl import METADATA_JOB_KEY
from openai_batches.models import JobState
from openai_batches.providers import provider_class, provider_for
from openai_batches.providers.azure import AzureProvider
from openai_batches.providers.base import unix_time
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


# -- ids and URLs -------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "azure", "anthropic"])
@pytest.mark.parametrize("batch_id", ["..", ".", "../files", "x?after=y", "a/../../b"])
def test_an_id_from_the_provider_stays_one_path_segment(provider: str, batch_id: str) -> None:
    """An id (from a broken provider's answer, or a hand-edited row) of ``..`` or ``.``
    must not point a cancel at another endpoint (``batches/../cancel`` is ``/cancel``)."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path.decode())
        return httpx.Response(404, json={"error": {"message": "no such batch"}})

    account = Account("acct", "https://provider.example", KEY, provider=provider)
    client = provider_for(account, transport=httpx.MockTransport(handler))
    client.max_retries = 0
    with pytest.raises(ProviderError):
        client.cancel_batch(batch_id)
    (path,) = seen
    _stem, _sep, rest = path.partition("batches/")
    segment, _slash, tail = rest.partition("/")
    assert tail == "cancel", path  # the cancel of exactly one batch
    assert segment not in ("", ".", ".."), path


@pytest.mark.parametrize(
    "base_url",
    [
        # The deployment URL the Azure portal shows, pasted whole.
        "https://res.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2025-01-01",
        "https://res.openai.azure.com/#frag",
        "https://user:password@res.openai.azure.com",
        "ftp://res.openai.azure.com",
        "res.openai.azure.com",
    ],
)
@pytest.mark.parametrize("provider", ["openai", "azure", "anthropic", "groq", "openai-compatible"])
def test_a_base_url_that_cannot_be_a_root_is_refused_naming_the_setting(
    provider: str, base_url: str
) -> None:
    """Paths are joined onto BASE_URL: with a query, a fragment or credentials in it, the
    calls would go to another endpoint (or show a password in reprs); refused before any
    call, by the adapter and by the system check alike."""
    sent: list[httpx.Request] = []
    account = Account("acct", base_url, KEY, provider=provider)
    with pytest.raises(ConfigurationError, match="BASE_URL") as caught:
        provider_for(account, transport=httpx.MockTransport(sent.append))  # type: ignore[arg-type]
    assert "password" not in str(caught.value)
    assert sent == []
    problems = provider_class(provider).settings_problems(account)
    assert any("BASE_URL" in message for message, _hint in problems), problems


# -- loose shapes: numbers and times out of range ----------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["0001-01-01T00:00:00+00:00", "1969-12-31T23:59:59Z", "9999-12-31T23:59:59-14:00"],
)
def test_an_iso_time_out_of_range_is_no_time(value: str) -> None:
    """As an integer out of range is: a time no column holds is dropped, not allowed to
    make the whole batch object unusable."""
    assert unix_time(value) is None


def test_an_azure_batch_created_near_year_9999_keeps_a_storable_deadline() -> None:
    """The app's deadline is added to Azure's ``created_at``: the sum must still be a time
    the services can store (a hostile server's largest valid time plus a day is not)."""
    batch = {
        "id": "batch_1",
        "object": "batch",
        "status": "in_progress",
        "created_at": 253402300000,
        "completion_window": "24h",
    }

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=batch)

    account = Account("acct", "https://res.openai.azure.com", KEY, provider="azure")
    client = provider_for(account, transport=httpx.MockTransport(handler))
    _check_batch(client.retrieve_batch("batch_1"))  # raises on a time out of range


# -- Anthropic: results never fetched from anywhere but the configured host ----------------------


def _anthropic_batch(**extra: Any) -> dict[str, Any]:
    return {
        "id": "msgbatch_1",
        "type": "message_batch",
        "processing_status": "ended",
        "request_counts": {"succeeded": 1},
        "created_at": "2030-01-01T00:00:00Z",
        "ended_at": "2030-01-01T00:10:00Z",
        "results_url": "https://collector.evil.example/v1/messages/batches/msgbatch_1/results",
        **extra,
    }


@pytest.mark.parametrize("redirect", [False, True])
def test_anthropic_results_are_read_from_the_configured_host_only(redirect: bool) -> None:
    """A ``results_url`` on another host (or a redirect there) never receives a request,
    and so never the ``x-api-key``: results are read at the configured host's path."""
    hosts: list[tuple[str, str | None]] = []
    line = {
        "custom_id": "a",
        "result": {"type": "succeeded", "message": {"id": "msg_1", "content": []}},
    }

    def handler(request: httpx.Request) -> httpx.Response:
        hosts.append((request.url.host, request.headers.get("x-api-key")))
        if request.url.path.endswith("/results"):
            if redirect:
                return httpx.Response(307, headers={"location": _anthropic_batch()["results_url"]})
            return httpx.Response(200, content=json.dumps(line).encode() + b"\n")
        return httpx.Response(200, json=_anthropic_batch())

    account = Account("acct", "https://api.anthropic.com", KEY, provider="anthropic")
    client = provider_for(account, transport=httpx.MockTransport(handler))
    batch = client.retrieve_batch("msgbatch_1")
    if redirect:
        with pytest.raises(ProviderError):
            b"".join(client.iter_file_chunks(batch["output_file_id"]))
    else:
        (result,) = b"".join(client.iter_file_chunks(batch["output_file_id"])).splitlines()
        assert json.loads(result)["custom_id"] == "a"
    assert {host for host, _key in hosts} == {"api.anthropic.com"}


def test_an_anthropic_lookup_meeting_results_that_are_not_json_fails_as_a_provider_error() -> None:
    """Verifying a candidate reads its results: a garbled line makes the lookup fail the
    way the services expect (a ProviderError: try again later), not with a ValueError."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/results"):
            return httpx.Response(200, content=b"<html>oops</html>\n")
        return httpx.Response(200, json={"data": [_anthropic_batch()], "has_more": False})

    account = Account("acct", "https://api.anthropic.com", KEY, provider="anthropic")
    client = provider_for(account, transport=httpx.MockTransport(handler))
    with pytest.raises(ProviderError, match="not JSON"):
        client.find_batches(_lookup(0))


def test_syncs_list_refresh_stops_on_a_cursor_that_does_not_advance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """sync_batches refreshes many parts of an account through the list call: the same
    page for ever must end the pass for that account with an error, not loop."""
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from openai_batches.services import _base, syncing

    now = int(time.time())
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url)
        if len(calls) > 50:
            raise RuntimeError("still looping")
        batch = {"id": "batch_x", "object": "batch", "status": "in_progress", "created_at": now}
        return httpx.Response(200, json={"object": "list", "data": [batch], "has_more": True})

    account = Account("acct", "https://provider.example", KEY, provider="openai")
    monkeypatch.setattr(
        _base,
        "get_client",
        lambda name: provider_for(account, transport=httpx.MockTransport(handler)),
    )
    created = datetime.fromtimestamp(now - 60, tz=UTC)
    group = [
        SimpleNamespace(
            provider_batch_id=f"batch_{i}", provider_created_at=created, created_at=created
        )
        for i in range(syncing.LIST_REFRESH_THRESHOLD + 1)
    ]
    with pytest.raises(APIConnectionError, match="does not advance"):
        syncing._fetch_batches("acct", group, syncing.SyncReport())  # type: ignore[arg-type]
    assert len(calls) == 2


# -- a create is never sent twice by the adapter -----------------------------------------------


@pytest.mark.parametrize("provider", ["azure", "anthropic", "groq"])
@pytest.mark.parametrize("fault", ["500", "429", "drop", "garbled"])
def test_a_create_is_sent_once_whatever_the_answer(
    provider: str, fault: str, tmp_path: Path
) -> None:
    """POST /batches (Anthropic: /v1/messages/batches) is not idempotent: after a fault
    its outcome is unknown and the services look the batch up; the adapter must never
    send it again itself (a 401 replay with a fresh token is covered elsewhere)."""
    creates: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.endswith("batches"):
            creates.append(request.url.path)
            if fault == "drop":
                raise httpx.RemoteProtocolError("peer closed connection", request=request)
            if fault == "garbled":
                return httpx.Response(200, content=b'{"id": "batch_')
            return httpx.Response(int(fault), json={"error": {"message": "try later"}})
        file = {"id": "file-1", "object": "file", "bytes": 3, "filename": "in.jsonl"}
        return httpx.Response(200, json=file)

    account = Account(
        "acct", "https://provider.example", KEY, provider=provider, staging_dir=str(tmp_path)
    )
    client = provider_for(account, transport=httpx.MockTransport(handler), sleep=lambda s: None)
    line = {
        "custom_id": "a",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
    }
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(line) + "\n")
    file_id = client.upload_file(path, filename="in.jsonl")["id"]
    with pytest.raises(ProviderError):
        client.create_batch(
            input_file_id=file_id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={METADATA_JOB_KEY: "job:1"},
        )
    assert len(creates) == 1, creates


# -- Anthropic: the lookup without metadata never adopts a batch it cannot verify ----------------


@pytest.mark.django_db
def test_an_anthropic_lookup_never_adopts_another_programs_running_batch(tmp_path: Path) -> None:
    """A create refused with a 500 (nothing created), while another program in the same
    workspace runs a batch of the same size: that batch cannot be told from ours until
    its results name their custom_ids, so it is not taken (the part would track, cancel
    and delete someone else's batch); once it ends, ours is created."""
    from tests.procs.helpers import expire_submit_leases
    from tests.test_providers_anthropic import _foreign_batch, conf, items

    with account_on_emulator("anthropic", conf(tmp_path)) as (emu, _server):
        job = services.create_job(items=items(2), account="acct")
        services.request_submit(job)
        emu.stall_request("other-0", times=1)  # it runs until the clock moves a day
        foreign = _foreign_batch(2, "other-")
        emu.inject_fault("POST", "/v1/messages/batches", "status", status=500, count=1)
        job = services.submit(job)
        assert job.state == JobState.SUBMIT_REQUESTED, job.last_error
        assert not job.batches.get().provider_batch_id  # the foreign batch was not taken
        assert emu.get_batch(foreign)["processing_status"] == "in_progress"

        emu.advance(86_401)  # it ends: its results say it is not ours
        expire_submit_leases()
        job = services.submit(job)
        assert job.state == JobState.SUBMITTED, job.last_error
        ours = job.batches.get().provider_batch_id
        assert ours and ours != foreign
        assert emu.get_batch(foreign)["processing_status"] == "ended"
        assert emu.get_batch(foreign).get("cancel_initiated_at") is None


def test_an_anthropic_results_line_without_end_is_refused_not_held_in_memory(
    settings: Any,
) -> None:
    """Results are translated a line at a time: a server sending one endless line (no
    newline, within MAX_DOWNLOAD_BYTES) must not make the adapter hold it all (or copy
    it over and over); a line longer than MAX_RESPONSE_BYTES is refused."""
    import tracemalloc

    from openai_batches.client import ResponseTooLarge

    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "MAX_RESPONSE_BYTES": 1 << 20}
    chunk = b"x" * (1 << 16)

    def endless() -> Iterator[bytes]:
        for _ in range(160):  # 10 MB, one line
            yield chunk

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=endless())

    account = Account("acct", "https://api.anthropic.com", KEY, provider="anthropic")
    client = provider_for(account, transport=httpx.MockTransport(handler))
    tracemalloc.start()
    try:
        with pytest.raises(ResponseTooLarge, match="line"):
            for _ in client.iter_file_chunks("msgbatch_1/results"):
                pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak


@pytest.mark.django_db
def test_an_anthropic_create_that_landed_is_answered_even_if_the_staged_file_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once Anthropic took the requests, the batch is the answer: failing to remove the
    staged copy (a read-only or full disk) must not turn a created batch into an error,
    which the services would read as an unknown outcome."""
    from tests.test_providers_anthropic import conf, items

    with account_on_emulator("anthropic", conf(tmp_path)) as (emu, _server):
        client = get_client("acct")
        try:
            path = tmp_path / "in.jsonl"
            line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions"}
            path.write_text(json.dumps({**line, "body": items(1)[0]["body"]}) + "\n")
            staged = client.upload_file(path, filename="in.jsonl")["id"]

            def unlink(self: Path, missing_ok: bool = False) -> None:
                raise PermissionError(13, "Read-only file system", str(self))

            monkeypatch.setattr(Path, "unlink", unlink)
            batch = client.create_batch(
                input_file_id=staged,
                endpoint="/v1/chat/completions",
                completion_window="24h",
                metadata={},
            )
        finally:
            monkeypatch.undo()
            client.close()
        assert [b["id"] for b in emu.list_batches()] == [batch["id"]]


# -- Azure: any batch object a broken server sends ends in a batch or a ProviderError ------------

_HOSTILE_FIELDS = [
    ("created_at", 1e308),
    ("created_at", -5),
    ("created_at", 10**30),
    ("created_at", "2024-13-45T00:00:00Z"),
    ("created_at", "9" * 5000),
    ("created_at", []),
    ("created_at", True),
    ("created_at", "2024-01-01T00:00:00.123456789+00:00"),
    ("completion_window", 5),
    ("completion_window", "9999d"),
    ("completion_window", "24h" * 1000),
    ("status", None),
    ("status", 5),
    ("status", "COMPLETED"),
    ("request_counts", None),
    ("request_counts", []),
    ("request_counts", {"total": 10**40}),
    ("request_counts", {"total": -1, "completed": None, "failed": "3"}),
    ("errors", "x"),
    ("errors", {"data": "x"}),
    ("output_file_id", 5),
    ("output_file_id", ""),
    ("metadata", [METADATA_JOB_KEY]),
    ("cancelling_at", "2024-01-01T00:00:00Z"),
]


@pytest.mark.parametrize(("field", "value"), _HOSTILE_FIELDS)
@pytest.mark.parametrize("call", ["retrieve", "list"])
def test_a_broken_azure_batch_object_is_a_batch_or_a_provider_error(
    field: str, value: Any, call: str
) -> None:
    batch = {
        "id": "batch_1",
        "object": "batch",
        "status": "in_progress",
        "created_at": 1_700_000_000,
        "completion_window": "24h",
        "metadata": {METADATA_JOB_KEY: "job:1"},
        field: value,
    }

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":  # the deadline's cancel
            return httpx.Response(200, json={**batch, "status": "cancelling"})
        if call == "list":
            return httpx.Response(200, json={"object": "list", "data": [batch], "has_more": False})
        return httpx.Response(200, json=batch)

    account = Account("acct", "https://res.openai.azure.com", KEY, provider="azure")
    client = provider_for(account, transport=httpx.MockTransport(handler), sleep=lambda s: None)
    try:
        answer = (
            client.retrieve_batch("batch_1")
            if call == "retrieve"
            else client.list_batches()["data"][0]
        )
    except ProviderError:
        return
    _check_batch(answer)  # what the services store is in range


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("processing_status", None),
        ("processing_status", ["ended"]),
        ("request_counts", {"succeeded": 10**40}),
        ("request_counts", {"succeeded": "5", "errored": -3}),
        ("request_counts", "lots"),
        ("created_at", "0000-00-00"),
        ("created_at", 10**30),
        ("ended_at", {"t": 1}),
        ("results_url", 5),
        ("id", 5),
        ("id", "x" * 300),
    ],
)
def test_a_broken_anthropic_batch_object_is_a_batch_or_a_provider_error(
    field: str, value: Any
) -> None:
    batch = {**_anthropic_batch(), field: value}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=batch)

    account = Account("acct", "https://api.anthropic.com", KEY, provider="anthropic")
    client = provider_for(account, transport=httpx.MockTransport(handler), sleep=lambda s: None)
    try:
        answer = client.retrieve_batch("msgbatch_1")
    except ProviderError:
        return
    _check_batch(answer)
