"""The Anthropic Message Batches adapter over HTTP against the emulator's Anthropic
flavour: a job through submit, poll, ingest, cancel and expiry; the custom_id and body
rules checked when items are added; faults; and finding a batch again without metadata
(a lost create in-process, and a real process SIGKILLed between create and record)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from openai_batches import services
from openai_batches.client import BatchLookup, get_client
from openai_batches.emulator import EmulatorServer
from openai_batches.exceptions import ValidationError
from openai_batches.models import BatchJob, ItemState, JobState, ProviderBatch
from openai_batches.providers import part_limits
from openai_batches.providers.anthropic import to_chat_completion, to_params
from openai_batches.providers.base import custom_id_fingerprint
from tests.lifecycle_helpers import chat_items
from tests.procs.helpers import REPO, expire_submit_leases
from tests.provider_helpers import KEY, account_on_emulator

MODEL = "claude-sonnet-4-5"


def conf(staging: Path) -> Any:
    def build(server: EmulatorServer) -> dict[str, Any]:
        return {
            "PROVIDER": "anthropic",
            "BASE_URL": server.root_url,
            "API_KEY": KEY,
            "STAGING_DIR": str(staging),
        }

    return build


def items(n: int, *, prefix: str = "req-", **extra: Any) -> list[dict[str, Any]]:
    return chat_items(n, prefix=prefix, model=MODEL, max_tokens=64, **extra)


def submit(job: BatchJob) -> BatchJob:
    services.request_submit(job)
    job = services.submit(job)
    assert job.state == JobState.SUBMITTED, job.last_error
    return job


def states(job: BatchJob) -> dict[str, str]:
    return dict(job.items.values_list("custom_id", "state"))


def staged(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("staged-*.jsonl"))


@pytest.mark.django_db
def test_a_job_goes_through_submit_poll_and_ingest(tmp_path: Path) -> None:
    with account_on_emulator("anthropic", conf(tmp_path)) as (emu, _server):
        emu.fail_request("req-2", status_code=400, code=None, type="invalid_request_error")
        chat = items(3)
        chat[0]["body"]["messages"].insert(0, {"role": "system", "content": "Be brief."})
        job = submit(services.create_job(items=chat, account="acct"))
        part = job.batches.get()
        assert part.provider_batch_id.startswith("msgbatch_")
        assert part.provider_status == "in_progress"  # no validating phase
        assert part.input_file_id.startswith("staged-")
        assert staged(tmp_path) == []  # the requests are Anthropic's now

        emu.advance(1)
        job = services.refresh(job)
        assert job.state == JobState.FINISHED, job.last_error
        assert job.provider_status == "completed"
        assert states(job) == {
            "req-0": ItemState.SUCCEEDED,
            "req-1": ItemState.SUCCEEDED,
            "req-2": ItemState.FAILED,
        }
        ok = job.items.get(custom_id="req-0")
        # The answer reads like a chat completion, whatever the provider.
        assert ok.result.text
        assert ok.response["object"] == "chat.completion"
        assert ok.input_tokens > 0 and ok.output_tokens > 0
        failed = job.items.get(custom_id="req-2")
        assert failed.status_code == 400
        assert failed.response["error"]["type"] == "invalid_request_error"
        assert (job.request_count_total, job.request_count_completed) == (3, 2)


@pytest.mark.django_db
def test_cancel_keeps_what_ran_and_cancels_the_rest(tmp_path: Path) -> None:
    with account_on_emulator(
        "anthropic", conf(tmp_path), extra_settings={"RETRY": {"MAX_ATTEMPTS": 1}}
    ) as (emu, _server):
        emu.stall_request("req-1")
        job = submit(services.create_job(items=items(2), account="acct"))
        emu.advance(1)
        job = services.refresh(job)
        assert job.provider_status == "in_progress"
        job = services.cancel(job)
        assert job.provider_status in ("cancelling", "cancelled")
        emu.advance(3600)
        job = services.refresh(job)
        assert job.state == JobState.FINISHED, job.last_error
        assert job.provider_status == "cancelled"
        assert states(job) == {"req-0": ItemState.SUCCEEDED, "req-1": ItemState.CANCELLED}


@pytest.mark.django_db
def test_an_expired_batch_keeps_its_results(tmp_path: Path) -> None:
    with account_on_emulator(
        "anthropic", conf(tmp_path), extra_settings={"RETRY": {"MAX_ATTEMPTS": 1}}
    ) as (emu, _server):
        emu.stall_request("req-1")
        job = submit(services.create_job(items=items(2), account="acct"))
        emu.advance(86_401)
        job = services.refresh(job)
        assert job.state == JobState.FINISHED, job.last_error
        assert job.provider_status == "expired"
        assert states(job) == {"req-0": ItemState.SUCCEEDED, "req-1": ItemState.EXPIRED}
        assert job.items.get(custom_id="req-1").error["code"] == "batch_expired"


@pytest.mark.django_db
def test_faults_are_retried_overloaded_and_a_truncated_results_download(tmp_path: Path) -> None:
    with account_on_emulator("anthropic", conf(tmp_path)) as (emu, _server):
        job = submit(services.create_job(items=items(3), account="acct"))
        emu.advance(1)
        emu.inject_fault("GET", "/v1/messages/batches/*", "status", status=529, retry_after=0.01)
        emu.inject_fault("GET", "/v1/messages/batches/*/results", "truncate")
        job = services.refresh(job)
        assert job.state == JobState.FINISHED, job.last_error
        assert set(states(job).values()) == {ItemState.SUCCEEDED}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("custom_id", "ok"),
    [
        ("a" * 64, True),
        ("a" * 65, False),
        ("has space", False),
        ("slash/id", False),
        ("a_b-C9", True),
    ],
)
def test_custom_id_rules_are_checked_when_items_are_added(
    tmp_path: Path, custom_id: str, ok: bool
) -> None:
    with account_on_emulator("anthropic", conf(tmp_path)):
        job = services.create_job(account="acct")
        item = items(1)[0] | {"custom_id": custom_id}
        if ok:
            assert services.add_items(job, [items(1)[0], item]) == 2
            return
        with pytest.raises(ValidationError) as caught:
            services.add_items(job, [items(1)[0], item])
        (problem,) = caught.value.problems
        assert (problem.line, problem.field) == (2, "custom_id")
        assert job.items.count() == 0  # nothing half-saved


@pytest.mark.django_db
def test_bodies_anthropic_cannot_take_are_refused_naming_the_field(tmp_path: Path) -> None:
    with account_on_emulator("anthropic", conf(tmp_path)):
        job = services.create_job(account="acct")
        bad = [
            {
                "custom_id": "no-limit",
                "body": {"model": MODEL, "messages": [{"role": "user", "content": "x"}]},
            },
            items(1, prefix="tools-", tools=[{"type": "function"}])[0],
            items(1, prefix="hot-", temperature=1.5)[0],
            items(1, prefix="tool-msg-")[0]
            | {
                "body": {
                    "model": MODEL,
                    "max_tokens": 5,
                    "messages": [{"role": "tool", "content": "x"}],
                }
            },
        ]
        with pytest.raises(ValidationError) as caught:
            services.add_items(job, bad)
        found = [(p.line, p.field) for p in caught.value.problems]
        assert (1, "body.max_tokens") in found
        assert (2, "body.tools") in found
        assert (3, "body.temperature") in found
        assert (4, "body.messages[0].role") in found
        assert job.items.count() == 0


@pytest.mark.django_db
def test_anthropic_limits_and_windows(tmp_path: Path) -> None:
    with account_on_emulator("anthropic", conf(tmp_path)):
        assert part_limits("acct")["max_requests"] == 100_000
        assert part_limits("acct")["max_bytes"] == 256 * 1024 * 1024
        with pytest.raises(ValidationError, match="not an endpoint anthropic runs"):
            services.create_job(endpoint="/v1/embeddings", account="acct")


def test_bodies_are_mapped_onto_messages_and_back() -> None:
    body = {
        "model": MODEL,
        "max_completion_tokens": 100,
        "temperature": 0.2,
        "stop": "END",
        "user": "u-1",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "No lists."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
                ],
            },
        ],
    }
    assert to_params(body) == {
        "model": MODEL,
        "max_tokens": 100,
        "system": "Be brief.\n\nNo lists.",
        "temperature": 0.2,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u-1"},
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
                    },
                    {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
                ],
            }
        ],
    }
    message = {
        "id": "msg_1",
        "model": MODEL,
        "content": [{"type": "text", "text": "A cat."}],
        "stop_reason": "max_tokens",
        "usage": {"input_tokens": 10, "output_tokens": 3, "cache_read_input_tokens": 90},
    }
    chat = to_chat_completion(message)
    assert chat["choices"][0]["message"]["content"] == "A cat."
    assert chat["choices"][0]["finish_reason"] == "length"
    assert chat["usage"] == {
        "prompt_tokens": 100,
        "completion_tokens": 3,
        "total_tokens": 103,
        "prompt_tokens_details": {"cached_tokens": 90},
    }


# -- finding a batch again without metadata ---------------------------------------------------


def _foreign_batch(count: int, prefix: str) -> str:
    """A batch of ``count`` requests made by someone else in the same workspace."""
    client = get_client("acct")
    try:
        lines = [
            {
                "custom_id": f"{prefix}{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": item["body"],
            }
            for i, item in enumerate(items(count))
        ]
        path = Path(client.staging) / "foreign.jsonl"  # type: ignore[attr-defined]
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
        upload = client.upload_file(path, filename="foreign.jsonl")
        path.unlink()
        batch = client.create_batch(
            input_file_id=upload["id"],
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={},
        )
        return str(batch["id"])
    finally:
        client.close()


@pytest.mark.django_db
def test_a_lost_create_is_found_without_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with account_on_emulator("anthropic", conf(tmp_path)) as (emu, _server):
        job = services.create_job(items=items(4), account="acct")
        services.request_submit(job)

        def lost(name: str) -> None:
            if name == "submit.created":
                raise ConnectionResetError("the answer to the create was lost")

        monkeypatch.setattr(services._base, "_checkpoint", lost)
        with pytest.raises(ConnectionResetError):
            services.submit(job)
        monkeypatch.undo()
        assert len(emu.list_batches()) == 1
        job.refresh_from_db()
        assert job.state == JobState.SUBMIT_REQUESTED

        job = services.submit(job)
        assert job.state == JobState.SUBMITTED, job.last_error
        (batch,) = emu.list_batches()
        assert job.batches.get().provider_batch_id == batch["id"]  # found, not created again


@pytest.mark.django_db
def test_candidates_that_cannot_be_told_apart_wait_until_their_results_say(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with account_on_emulator("anthropic", conf(tmp_path)) as (emu, _server):
        job = services.create_job(items=items(3), account="acct")
        services.request_submit(job)
        emu.stall_request("req-0", times=1)
        emu.stall_request("other-0", times=1)

        def lost(name: str) -> None:
            if name == "submit.created":
                raise ConnectionResetError("lost")

        monkeypatch.setattr(services._base, "_checkpoint", lost)
        with pytest.raises(ConnectionResetError):
            services.submit(job)
        monkeypatch.undo()
        foreign = _foreign_batch(3, "other-")  # the same size, created meanwhile

        # Both still run: which is ours cannot be verified yet, so nothing is created.
        job = services.submit(job)
        assert job.state == JobState.SUBMIT_REQUESTED
        assert "decided once they end" in job.last_error
        assert len(emu.list_batches()) == 2

        emu.advance(86_401)  # both end (expired): their results name their custom_ids
        expire_submit_leases()
        job = services.submit(job)
        assert job.state == JobState.SUBMITTED, job.last_error
        ours = job.batches.get().provider_batch_id
        assert ours != foreign and len(emu.list_batches()) == 2


@pytest.mark.django_db
def test_the_fingerprint_ignores_order() -> None:
    assert custom_id_fingerprint(["a", "b", "c"]) == custom_id_fingerprint(["c", "a", "b"])
    assert custom_id_fingerprint(["a", "b"]) != custom_id_fingerprint(["a", "c"])


@pytest.mark.django_db
def test_a_tracked_batch_is_never_taken_for_another_part(tmp_path: Path) -> None:
    with account_on_emulator("anthropic", conf(tmp_path)):
        done = submit(services.create_job(items=items(2), account="acct"))
        tracked = done.batches.get().provider_batch_id
        client = get_client("acct")
        try:
            found = client.find_batches(
                BatchLookup(
                    key="x",
                    since=0,
                    count=2,
                    custom_ids=lambda: [],
                    tracked=lambda ids: set(
                        ProviderBatch.objects.filter(provider_batch_id__in=list(ids)).values_list(
                            "provider_batch_id", flat=True
                        )
                    ),
                )
            )
        finally:
            client.close()
        assert tracked and found == []


_CHILD = """
import json, os, signal, sys
import django
django.setup()
from django.conf import settings
settings.OPENAI_BATCHES = {
    **settings.OPENAI_BATCHES,
    "ACCOUNTS": {"acct": json.loads(os.environ["PROVIDER_ACCOUNT"])},
}
from openai_batches import services

def checkpoint(name):
    if name == "submit.created":
        os.kill(os.getpid(), signal.SIGKILL)

services._base._checkpoint = checkpoint
services.submit(int(sys.argv[1]))
"""


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_sigkill_between_create_and_record_recovers_without_a_duplicate(tmp_path: Path) -> None:
    with account_on_emulator("anthropic", conf(tmp_path)) as (emu, server):
        job = services.create_job(items=items(6), account="acct")
        services.request_submit(job)
        db = connection.settings_dict
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:"
            f"{db['PORT'] or 5432}/{db['NAME']}",
            "PYTHONPATH": str(REPO),
            "PROVIDER_ACCOUNT": json.dumps(conf(tmp_path)(server)),
        }
        child = subprocess.run(
            [sys.executable, "-c", _CHILD, str(job.pk)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
        (created,) = emu.list_batches()  # the child created it and died before recording
        job.refresh_from_db()
        assert job.state == JobState.SUBMITTING
        assert job.batches.get().provider_batch_id == ""

        expire_submit_leases()  # what time does to the dead child's lease
        for _ in range(4):
            services.sync()
        job.refresh_from_db()
        assert job.state == JobState.FINISHED, job.last_error
        assert [b["id"] for b in emu.list_batches()] == [created["id"]]  # no duplicate
        assert job.batches.get().provider_batch_id == created["id"]
        assert set(states(job).values()) == {ItemState.SUCCEEDED}
        assert staged(tmp_path) == []


@pytest.mark.django_db
def test_downloads_and_purge_work_on_an_anthropic_job(tmp_path: Path) -> None:
    with account_on_emulator("anthropic", conf(tmp_path)) as (emu, _server):
        job = submit(services.create_job(items=items(2), account="acct"))
        emu.advance(1)
        job = services.refresh(job)
        part = job.batches.get()
        # The input went to Anthropic, which keeps no copy: it is rebuilt from the items.
        sent = b"".join(services.iter_provider_file(job, "input")).decode()
        assert [json.loads(x)["custom_id"] for x in sent.splitlines()] == ["req-0", "req-1"]
        # The output is the results, translated into OpenAI's result lines.
        output = b"".join(services.iter_provider_file(job, "output")).decode().splitlines()
        assert {json.loads(x)["response"]["status_code"] for x in output} == {200}
        # Deleting the results file deletes the batch at Anthropic (how results are removed).
        client = get_client("acct")
        try:
            client.delete_file(part.output_file_id)
        finally:
            client.close()
        assert emu.list_batches() == []


def test_result_lines_map_onto_openais() -> None:
    from openai_batches.providers.anthropic import to_result_line

    def errored(kind: str) -> dict[str, Any]:
        error = {"type": "error", "error": {"type": kind, "message": "m"}, "request_id": "r"}
        return to_result_line({"custom_id": "c", "result": {"type": "errored", "error": error}})

    assert errored("invalid_request_error")["response"]["status_code"] == 400
    assert errored("overloaded_error")["response"]["status_code"] == 503  # retried
    assert errored("api_error")["response"]["status_code"] == 500  # retried
    assert errored("api_error")["error"] is None  # it ran: the body is in the response
    for kind, code in (("canceled", "batch_cancelled"), ("expired", "batch_expired")):
        line = to_result_line({"custom_id": "c", "result": {"type": kind}})
        assert (line["response"], line["error"]["code"]) == (None, code)


def test_the_create_body_and_the_results_stream_in_flat_memory(tmp_path: Path) -> None:
    import tracemalloc

    from openai_batches.providers.anthropic import _request_body, _translate

    n = 3000
    staged_file = tmp_path / "staged.jsonl"
    results_file = tmp_path / "results.jsonl"
    message = {"id": "m", "content": [{"type": "text", "text": "y" * 300}], "usage": {}}
    with open(staged_file, "w") as fp, open(results_file, "w") as out:
        for i, item in enumerate(items(n)):
            item["body"]["messages"][0]["content"] += "x" * 400
            line = {"custom_id": f"r-{i}", "method": "POST", "url": "/v1/chat/completions"}
            fp.write(json.dumps({**line, "body": item["body"]}) + "\n")
            result = {"type": "succeeded", "message": message}
            out.write(json.dumps({"custom_id": f"r-{i}", "result": result}) + "\n")
    assert staged_file.stat().st_size > 1_500_000

    tracemalloc.start()
    try:
        sent = sum(len(piece) for piece in _request_body(staged_file))
        _, body_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        written = 0
        with open(results_file, "rb") as fp:
            for raw in fp:
                written += len(_translate(raw))
        _, results_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sent > 1_000_000 and written > 1_000_000
    # Both are a line at a time: a fraction of the megabytes that went through.
    assert body_peak < 200_000, body_peak
    assert results_peak < 200_000, results_peak
