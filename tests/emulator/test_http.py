"""Wire details: auth, error bodies, files endpoints, pagination params, the multipart parser."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI

from openai_batches.emulator import Emulator, EmulatorServer
from openai_batches.emulator.multipart import parse_multipart

from .conftest import API_KEY, jsonl, line, upload

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def test_401_without_bearer_key(server: EmulatorServer) -> None:
    r = httpx.get(f"{server.base_url}/batches")
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-request-id"].startswith("req_")
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert (
        httpx.get(f"{server.base_url}/batches", headers={"Authorization": "Basic abc"}).status_code
        == 401
    )


def test_specific_api_key(tmp_path: Path) -> None:
    emu = Emulator(api_key="sk-right", data_dir=str(tmp_path))
    with EmulatorServer(emu) as srv:
        with OpenAI(base_url=srv.base_url, api_key="sk-wrong-key", max_retries=0) as c:
            with pytest.raises(openai.AuthenticationError) as info:
                c.batches.list()
            assert info.value.code == "invalid_api_key"
        with OpenAI(base_url=srv.base_url, api_key="sk-right", max_retries=0) as c:
            assert c.batches.list().data == []
    assert (tmp_path / "files").is_dir()


def test_404s(server: EmulatorServer, client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.batches.retrieve("batch_" + "0" * 32)
    assert info.value.param == "id"
    with pytest.raises(openai.NotFoundError) as finfo:
        client.files.retrieve("file-nope")
    assert finfo.value.message.startswith("Error code: 404")
    assert finfo.value.body == {
        "message": "No such File object: file-nope",
        "type": "invalid_request_error",
        "param": "id",
        "code": None,
    }
    with pytest.raises(openai.NotFoundError):
        client.files.content("file-nope")
    with pytest.raises(openai.NotFoundError):
        client.batches.cancel("batch_nope")
    assert httpx.get(f"{server.base_url}/nowhere", headers=AUTH).status_code == 404


def test_batch_create_400s(client: OpenAI, server: EmulatorServer) -> None:
    file_id = upload(client, [line("a")])
    other = client.files.create(file=("notes.txt", b"hi"), purpose="user_data").id

    def create(**body: object) -> httpx.Response:
        return httpx.post(f"{server.base_url}/batches", json=body, headers=AUTH)

    r = create(endpoint="/v1/chat/completions", completion_window="24h")
    assert r.status_code == 400
    assert r.json() == {
        "error": {
            "message": "Missing required parameter: 'input_file_id'.",
            "type": "invalid_request_error",
            "param": "input_file_id",
            "code": "missing_required_parameter",
        }
    }
    r = create(input_file_id=file_id, endpoint="/v1/nope", completion_window="24h")
    assert r.status_code == 400 and r.json()["error"]["param"] == "endpoint"
    r = create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="48h")
    assert r.status_code == 400 and r.json()["error"]["param"] == "completion_window"
    r = create(input_file_id=other, endpoint="/v1/chat/completions", completion_window="24h")
    assert r.status_code == 400 and r.json()["error"]["param"] == "input_file_id"
    r = create(
        input_file_id="file-missing", endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "file_id"
    r = create(
        input_file_id=file_id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={f"k{i}": "v" for i in range(17)},
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "metadata"
    r = httpx.post(f"{server.base_url}/batches", content=b"{nope", headers=AUTH)
    assert r.status_code == 400
    with pytest.raises(openai.BadRequestError):
        client.batches.list(limit=101)
    with pytest.raises(openai.BadRequestError):
        client.batches.list(limit=0)


def test_upload_400s(emu: Emulator, client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.files.create(file=("data.csv", b"a,b\n"), purpose="batch")
    assert info.value.body == {
        "message": "Invalid file format for Batch API. Must be .jsonl",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    emu.limits.max_batch_file_bytes = 100
    with pytest.raises(openai.BadRequestError) as info:
        client.files.create(file=("big.jsonl", b"x" * 101), purpose="batch")
    assert info.value.body == {
        "message": "File is too large.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    client.files.create(file=("ok.jsonl", b"x" * 100), purpose="batch")
    with pytest.raises(openai.BadRequestError) as info:
        client.files.create(file=("a.jsonl", b"x"), purpose="nonsense")  # type: ignore[arg-type]
    assert info.value.param == "purpose"
    # No file part was left behind by the rejected uploads.
    assert os.listdir(os.path.join(emu.data_dir, "tmp")) == []


def test_upload_expires_after_and_missing_parts(server: EmulatorServer, client: OpenAI) -> None:
    f = client.files.create(
        file=("a.jsonl", b"{}\n"),
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    assert f.expires_at == f.created_at + 3600
    r = httpx.post(f"{server.base_url}/files", data={"purpose": "batch"}, files={}, headers=AUTH)
    assert r.status_code == 400
    r = httpx.post(f"{server.base_url}/files", files={"file": ("a.jsonl", b"{}")}, headers=AUTH)
    assert r.status_code == 400 and r.json()["error"]["param"] == "purpose"


def test_files_list_order_purpose_after_and_delete(emu: Emulator, client: OpenAI) -> None:
    ids = []
    for i in range(5):
        ids.append(upload(client, [line(f"r{i}")], name=f"f{i}.jsonl"))
        emu.advance(1)
    notes = client.files.create(file=("n.pdf", b"%PDF"), purpose="user_data").id
    assert [f.id for f in client.files.list(purpose="batch")] == ids[::-1]
    assert [f.id for f in client.files.list(purpose="batch", order="asc")] == ids
    page = client.files.list(purpose="batch", limit=2, order="asc")
    assert [f.id for f in page.data] == ids[:2] and page.has_more
    assert [f.id for f in client.files.list(purpose="batch", limit=2, order="asc")] == ids
    assert [f.id for f in client.files.list(after=ids[2], order="asc")] == [*ids[3:], notes]
    with pytest.raises(openai.BadRequestError):
        client.files.content(notes)  # user_data is not downloadable
    deleted = client.files.delete(ids[0])
    assert deleted.model_dump() == {"id": ids[0], "object": "file", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(ids[0])
    assert client.files.content(ids[1]).content == jsonl([line("r1")])


def test_file_ids_are_base62(client: OpenAI) -> None:
    file_id = upload(client, [line("a")])
    assert file_id.startswith("file-") and len(file_id) == 27 and file_id[5:].isalnum()


def test_multipart_parser_streams_to_disk(tmp_path: Path) -> None:
    boundary = "b0und4ry"
    payload = os.urandom(300_000) + b"\r\n--b0und" + os.urandom(1000)
    body = (
        (
            f"preamble\r\n--{boundary}\r\n"
            'Content-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="file"; filename="x.jsonl"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + payload
        + f"\r\n--{boundary}--\r\n".encode()
    )

    class Trickle(io.RawIOBase):
        """Returns at most 7 bytes per read, to split delimiters across reads."""

        def __init__(self, data: bytes) -> None:
            self.buf = io.BytesIO(data)

        def read(self, n: int = -1) -> bytes:
            return self.buf.read(min(7, n if n >= 0 else 7))

    for stream in (io.BytesIO(body), Trickle(body)):
        result = parse_multipart(
            stream,  # type: ignore[arg-type]
            f"multipart/form-data; boundary={boundary}",
            len(body),
            str(tmp_path),
            10**9,
        )
        assert result.fields == {"purpose": "batch"}
        upload_ = result.files["file"]
        assert upload_.filename == "x.jsonl" and upload_.size == len(payload)
        assert Path(upload_.path).read_bytes() == payload
        result.discard()


RATE_LIMIT_HEADERS = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
)


def test_answers_carry_rate_limit_headers(emu: Emulator, server: EmulatorServer) -> None:
    """The six ``x-ratelimit-*`` headers, requests counted per minute of the emulator's
    clock, resets as duration strings (``20ms``, ``6s``, ``1m0s``)."""
    first = httpx.get(f"{server.base_url}/batches", headers=AUTH)
    second = httpx.get(f"{server.base_url}/files", headers=AUTH)
    for answer in (first, second):
        assert all(name in answer.headers for name in RATE_LIMIT_HEADERS), answer.headers
        assert re.fullmatch(
            r"(\d+m)?\d+(\.\d+)?(ms|s)", answer.headers["x-ratelimit-reset-requests"]
        )
    limit = int(first.headers["x-ratelimit-limit-requests"])
    assert int(first.headers["x-ratelimit-remaining-requests"]) == limit - 1
    assert int(second.headers["x-ratelimit-remaining-requests"]) == limit - 2
    assert int(first.headers["x-ratelimit-remaining-tokens"]) <= int(
        first.headers["x-ratelimit-limit-tokens"]
    )
    # Errors carry them too; a 429 says nothing is left.
    emu.inject_fault("GET", "/v1/batches", "status", status=429)
    limited = httpx.get(f"{server.base_url}/batches", headers=AUTH)
    assert limited.status_code == 429
    assert limited.headers["x-ratelimit-remaining-requests"] == "0"
    # The control API is not OpenAI's and has none.
    assert (
        "x-ratelimit-limit-requests" not in httpx.get(f"{server.root_url}/_emulator/health").headers
    )


def test_the_request_window_resets_with_the_clock(emu: Emulator, server: EmulatorServer) -> None:
    httpx.get(f"{server.base_url}/batches", headers=AUTH)
    emu.advance(61)
    answer = httpx.get(f"{server.base_url}/batches", headers=AUTH)
    limit = int(answer.headers["x-ratelimit-limit-requests"])
    assert int(answer.headers["x-ratelimit-remaining-requests"]) == limit - 1
    assert answer.headers["x-ratelimit-reset-requests"] == "1m0s"
