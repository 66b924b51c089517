"""File retention in the emulator: ``expires_after`` on uploads, ``output_expires_after`` on
batches, validated as strictly as OpenAI's schema (anchor ``created_at`` only, integer
seconds from 3600 to 2592000), and enforced on the emulator's clock: an expired file is
gone (404 everywhere, absent from lists) like a deleted one."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from openai_batches.client import OpenAIClient
from openai_batches.conf import Account
from openai_batches.emulator import Emulator, EmulatorServer
from openai_batches.exceptions import NotFoundError
from tests.emulator.conftest import API_KEY, create_batch, jsonl, line, upload

AUTH = {"Authorization": f"Bearer {API_KEY}"}
THIRTY_DAYS = 2592000


def _gone(client: OpenAI, file_id: str) -> None:
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(file_id)
    with pytest.raises(openai.NotFoundError):
        client.files.content(file_id)
    with pytest.raises(openai.NotFoundError):
        client.files.delete(file_id)
    assert file_id not in [f.id for f in client.files.list()]


def test_upload_expires_after_its_seconds_on_the_clock(emu: Emulator, client: OpenAI) -> None:
    f = client.files.create(
        file=("a.jsonl", io.BytesIO(jsonl([line("a")]))),
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    assert f.expires_at == f.created_at + 3600
    emu.advance(3599)
    assert client.files.retrieve(f.id).id == f.id
    assert client.files.content(f.id).content == jsonl([line("a")])
    emu.advance(1)
    _gone(client, f.id)


def test_batch_files_expire_after_thirty_days_by_default(emu: Emulator, client: OpenAI) -> None:
    file_id = upload(client, [line("a")])
    kept = client.files.create(file=("n.pdf", b"%PDF"), purpose="user_data")
    assert (
        client.files.retrieve(file_id).expires_at
        == client.files.retrieve(file_id).created_at + THIRTY_DAYS
    )
    assert kept.expires_at is None
    emu.advance(THIRTY_DAYS)
    _gone(client, file_id)
    assert client.files.retrieve(kept.id).id == kept.id  # other purposes are kept


def test_an_expired_input_file_cannot_make_a_batch(emu: Emulator, client: OpenAI) -> None:
    file_id = client.files.create(
        file=("a.jsonl", io.BytesIO(jsonl([line("a")]))),
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": 3600},
    ).id
    emu.advance(3600)
    with pytest.raises(openai.BadRequestError) as info:
        client.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert "Cannot find file" in info.value.message


def test_output_expires_after_counts_from_the_result_files_creation(
    emu: Emulator, client: OpenAI
) -> None:
    emu.set_timing("realistic")  # the result files are written minutes after the create
    emu.fail_request("bad")
    batch = create_batch(
        client,
        [line("ok"), line("bad")],
        output_expires_after={"anchor": "created_at", "seconds": 7200},
    )
    emu.advance(3600)
    batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed" and batch.completed_at
    assert batch.output_file_id and batch.error_file_id
    for file_id in (batch.output_file_id, batch.error_file_id):
        f = client.files.retrieve(file_id)
        assert f.created_at == batch.completed_at > batch.created_at
        assert f.expires_at == f.created_at + 7200
    # Still there 7200 s after the batch's creation: the anchor is the file's creation.
    emu.advance(batch.completed_at + 7199 - emu.now())
    assert client.files.content(batch.output_file_id).content
    emu.advance(1)
    _gone(client, batch.output_file_id)
    _gone(client, batch.error_file_id)


def test_a_running_batch_survives_its_input_files_expiry(emu: Emulator, client: OpenAI) -> None:
    emu.set_timing("realistic")  # about two hours of running for this batch
    emu.stall_request("slow")
    file_id = client.files.create(
        file=("a.jsonl", io.BytesIO(jsonl([line("a"), line("slow")]))),
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": 3600},
    ).id
    batch = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    emu.advance(3600)
    _gone(client, file_id)
    emu.advance(86400)  # expires with the one result that ran, read from the kept bytes
    batch = client.batches.retrieve(batch.id)
    assert batch.status == "expired" and batch.request_counts.completed == 1


@pytest.mark.parametrize(
    ("value", "status", "param", "message"),
    [
        (
            {"anchor": "created_at", "seconds": 3599},
            400,
            "output_expires_after.seconds",
            "below minimum value",
        ),
        (
            {"anchor": "created_at", "seconds": 2592001},
            400,
            "output_expires_after.seconds",
            "above maximum value",
        ),
        (
            {"anchor": "created_at", "seconds": "7200"},
            400,
            "output_expires_after.seconds",
            "expected an integer, but got a string",
        ),
        (
            {"anchor": "created_at", "seconds": 7200.5},
            400,
            "output_expires_after.seconds",
            "expected an integer, but got a decimal",
        ),
        (
            {"anchor": "created_at", "seconds": True},
            400,
            "output_expires_after.seconds",
            "expected an integer, but got a boolean",
        ),
        (
            {"anchor": "updated_at", "seconds": 7200},
            400,
            "output_expires_after.anchor",
            "Supported values are: 'created_at'",
        ),
        (
            {"anchor": None, "seconds": 7200},
            400,
            "output_expires_after.anchor",
            "expected a string, but got null",
        ),
        ({"seconds": 7200}, 400, "output_expires_after.anchor", "Missing required parameter"),
        (
            {"anchor": "created_at"},
            400,
            "output_expires_after.seconds",
            "Missing required parameter",
        ),
        (
            {"anchor": "created_at", "seconds": 7200, "days": 1},
            400,
            "output_expires_after.days",
            "Unknown parameter",
        ),
        (7200, 400, "output_expires_after", "expected an object, but got an integer"),
    ],
)
def test_output_expires_after_is_checked_like_the_schema(
    server: EmulatorServer, client: OpenAI, value: Any, status: int, param: str, message: str
) -> None:
    file_id = upload(client, [line("a")])
    r = httpx.post(
        f"{server.base_url}/batches",
        json={
            "input_file_id": file_id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "output_expires_after": value,
        },
        headers=AUTH,
    )
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["param"] == param and message in error["message"], error
    assert error["type"] == "invalid_request_error"
    assert client.batches.list().data == []  # nothing was created


@pytest.mark.parametrize("seconds", [3600, 2592000])
def test_output_expires_after_accepts_both_ends_of_the_range(
    emu: Emulator, client: OpenAI, seconds: int
) -> None:
    batch = create_batch(
        client, [line("a")], output_expires_after={"anchor": "created_at", "seconds": seconds}
    )
    emu.advance(1)
    out = client.batches.retrieve(batch.id).output_file_id
    assert out is not None
    f = client.files.retrieve(out)
    assert f.expires_at == f.created_at + seconds


@pytest.mark.parametrize(
    ("fields", "param", "message"),
    [
        (
            {"expires_after[anchor]": "created_at", "expires_after[seconds]": "3599"},
            "expires_after.seconds",
            "below minimum value",
        ),
        (
            {"expires_after[anchor]": "created_at", "expires_after[seconds]": "2592001"},
            "expires_after.seconds",
            "above maximum value",
        ),
        (
            {"expires_after[anchor]": "created_at", "expires_after[seconds]": "1h"},
            "expires_after.seconds",
            "expected an integer",
        ),
        (
            {"expires_after[anchor]": "created_at", "expires_after[seconds]": " 7200"},
            "expires_after.seconds",
            "expected an integer",
        ),
        (
            {"expires_after[anchor]": "last_accessed_at", "expires_after[seconds]": "7200"},
            "expires_after.anchor",
            "Supported values are: 'created_at'",
        ),
        ({"expires_after[seconds]": "7200"}, "expires_after.anchor", "Missing required parameter"),
        (
            {"expires_after[anchor]": "created_at"},
            "expires_after.seconds",
            "Missing required parameter",
        ),
        (
            {
                "expires_after[anchor]": "created_at",
                "expires_after[seconds]": "7200",
                "expires_after[days]": "1",
            },
            "expires_after.days",
            "Unknown parameter",
        ),
    ],
)
def test_upload_expires_after_is_checked_like_the_schema(
    emu: Emulator, server: EmulatorServer, fields: dict[str, str], param: str, message: str
) -> None:
    r = httpx.post(
        f"{server.base_url}/files",
        data={"purpose": "batch", **fields},
        files={"file": ("a.jsonl", jsonl([line("a")]))},
        headers=AUTH,
    )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and message in error["message"], error
    assert emu.state()["files"] == []  # nothing stored


def test_the_app_client_sends_both_expiries_in_the_wire_shape(
    emu: Emulator, server: EmulatorServer, tmp_path: Path
) -> None:
    """``OpenAIClient`` (what the services call) speaks the same shape as the SDK."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(jsonl([line("a")]))
    account = Account(name="default", base_url=server.base_url, api_key=API_KEY)
    with OpenAIClient(account) as api:
        uploaded = api.upload_file(path, filename="in.jsonl", expires_after=7200)
        assert uploaded["expires_at"] == uploaded["created_at"] + 7200
        default = api.upload_file(path, filename="in.jsonl")
        assert default["expires_at"] == default["created_at"] + THIRTY_DAYS
        batch = api.create_batch(
            input_file_id=uploaded["id"],
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={},
            output_expires_after=3600,
        )
        emu.advance(1)
        out = api.retrieve_batch(batch["id"])["output_file_id"]
        assert emu.get_file(out)["expires_at"] == emu.get_file(out)["created_at"] + 3600
        emu.advance(3600)
        with pytest.raises(NotFoundError):
            api.delete_file(out)
