"""The client half of the provider-fault suite: every client call against every fault, over
real HTTP against the emulator (and, for what the emulator cannot do, tiny servers of
these tests' own), plus the size caps and deadlines that bound a hostile base URL.

Each fault is either retried per the client's policy (``POLICY`` below, the same table as
the client's module docstring) or raised as a ``ProviderError`` subclass whose text never
holds the key. No other exception type may leave the client.
"""

from __future__ import annotations

import gc
import io
import json
import socket
import socketserver
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from openai_batches.client import DeadlineExceeded, OpenAIClient, ResponseTooLarge
from openai_batches.conf import Account
from openai_batches.emulator import Emulator, EmulatorServer
from openai_batches.exceptions import (
    APIConnectionError,
    APIError,
    ConfigurationError,
    ProviderError,
    RateLimitError,
)

KEY = "sk-proj-FAULTSUITE-0123456789abcdef"
RETRIES = 2
MiB = 1024 * 1024


@dataclass
class World:
    emu: Emulator
    server: EmulatorServer
    tmp: Path
    file_id: str
    batch_id: str
    output_id: str


@pytest.fixture
def limits(settings: Any) -> dict[str, Any]:
    """Small caps and deadlines, so a hostile answer is caught in well under a second."""
    settings.OPENAI_BATCHES = {
        **settings.OPENAI_BATCHES,
        "REQUEST_DEADLINE": 1.0,
        "TRANSFER_DEADLINE": 1.0,
        "MAX_RESPONSE_BYTES": 1 * MiB,
        "MAX_DOWNLOAD_BYTES": 1 * MiB,
    }
    return settings.OPENAI_BATCHES  # type: ignore[no-any-return]


def _jsonl(n: int) -> bytes:
    return b"".join(
        json.dumps(
            {
                "custom_id": f"r{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
            }
        ).encode()
        + b"\n"
        for i in range(n)
    )


@pytest.fixture
def world(limits: dict[str, Any], tmp_path: Path) -> Iterator[World]:
    emu = Emulator(timing="instant", api_key=KEY)
    with EmulatorServer(emu, port=0) as server:
        input_file = emu.add_file(_jsonl(3), filename="input.jsonl")
        stalled = emu.add_file(_jsonl(2), filename="stalled.jsonl")
        emu.stall_request("r0")
        batch = emu.create_batch(
            {
                "input_file_id": stalled["id"],
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            }
        )
        output = emu.add_file(_jsonl(200), filename="output.jsonl")
        (tmp_path / "input.jsonl").write_bytes(_jsonl(5))
        yield World(emu, server, tmp_path, input_file["id"], batch["id"], output["id"])
    emu.close()


def make_client(
    base_url: str, delays: list[float], *, timeout: float = 5.0, key: str = KEY
) -> OpenAIClient:
    return OpenAIClient(
        Account("default", base_url, key, timeout=timeout),
        max_retries=RETRIES,
        sleep=delays.append,
    )


#: Every client call: (HTTP method, emulator path glob, how to call it).
CALLS: dict[str, tuple[str, str, Callable[[OpenAIClient, World], Any]]] = {
    "upload": (
        "POST",
        "/v1/files",
        lambda c, w: c.upload_file(w.tmp / "input.jsonl", filename="input.jsonl"),
    ),
    "create": (
        "POST",
        "/v1/batches",
        lambda c, w: c.create_batch(
            input_file_id=w.file_id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"job": "x"},
        ),
    ),
    "retrieve": ("GET", "/v1/batches/*", lambda c, w: c.retrieve_batch(w.batch_id)),
    "list": ("GET", "/v1/batches", lambda c, w: c.list_batches()),
    "cancel": ("POST", "/v1/batches/*/cancel", lambda c, w: c.cancel_batch(w.batch_id)),
    "download": (
        "GET",
        "/v1/files/*/content",
        lambda c, w: c.download_file(w.output_id, io.BytesIO()),
    ),
    "delete": ("DELETE", "/v1/files/*", lambda c, w: c.delete_file(w.file_id)),
    "list_files": ("GET", "/v1/files", lambda c, w: list(c.list_files(purpose="batch"))),
}

#: fault -> (emulator kind, its options, what the client does: "retry" or "raise").
FAULTS: dict[str, tuple[str, dict[str, Any], str]] = {
    "429 with retry-after": ("status", {"status": 429, "retry_after": 0.25}, "retry"),
    "429 without retry-after": ("status", {"status": 429, "retry_after": -1}, "retry"),
    "500": ("status", {"status": 500}, "retry"),
    "503": ("status", {"status": 503}, "retry"),
    "dropped connection": ("drop", {}, "retry"),
    "timeout": ("slow", {"delay": 0.6}, "retry"),
    "truncated body": ("truncate", {}, "retry"),
    "oversized body": ("huge", {"size": 150 * MiB}, "raise"),
    "dripping body": ("drip", {"delay": 0.05}, "raise"),
    "malformed JSON": ("garbage", {}, "retry"),
    "a list, not an object": ("wrong_shape", {}, "retry"),
    "no id": ("no_id", {}, "retry"),
}

#: What cannot apply: a file's bytes have no JSON shape (ingest checks them line by line),
#: and a delete's answer is its status (its body is not read).
NOT_APPLICABLE = {
    ("download", "malformed JSON"),
    ("download", "a list, not an object"),
    ("download", "no id"),
    ("delete", "malformed JSON"),
    ("delete", "a list, not an object"),
    ("delete", "no id"),
    ("delete", "oversized body"),
    ("delete", "dripping body"),
    ("delete", "truncated body"),
}

CASES = [
    pytest.param(call, fault, id=f"{call}-{fault}")
    for call in CALLS
    for fault in FAULTS
    if (call, fault) not in NOT_APPLICABLE
]


def _inject(world: World, call: str, fault: str, count: int) -> None:
    method, path, _ = CALLS[call]
    kind, options, _ = FAULTS[fault]
    world.emu.inject_fault(method, path, kind, count=count, **options)


def _expected_error(fault: str) -> type[ProviderError]:
    kind, options, _ = FAULTS[fault]
    if kind == "status":
        return RateLimitError if options["status"] == 429 else APIError
    if kind == "huge":
        return ResponseTooLarge
    if kind == "drip":
        return DeadlineExceeded
    return APIConnectionError


@pytest.mark.parametrize(("call", "fault"), CASES)
def test_a_single_fault_is_retried_or_raised_per_the_policy(
    world: World, call: str, fault: str
) -> None:
    delays: list[float] = []
    client = make_client(world.server.base_url, delays, timeout=0.3)
    _inject(world, call, fault, count=1)
    run = CALLS[call][2]
    _, options, policy = FAULTS[fault]
    batches_before = len(world.emu.list_batches())
    started = time.monotonic()
    if policy == "retry" and call != "create":
        run(client, world)  # the retry succeeds
        assert len(delays) == 1
        if options.get("retry_after", -1) >= 0:
            assert delays == [options["retry_after"]]  # the server's word
        else:
            assert 0.375 <= delays[0] <= 0.5  # the first step of the backoff
    else:
        with pytest.raises(ProviderError) as info:
            run(client, world)
        assert isinstance(info.value, _expected_error(fault))
        assert delays == []  # not retried: create never is, the others for cap/deadline
        assert KEY not in str(info.value) and KEY not in repr(info.value)
        if fault == "dripping body":
            assert time.monotonic() - started < 1.0 + 0.5  # the deadline held
    assert world.emu.state()["faults"] == []  # the fault was met exactly once
    if call == "create":
        # Never blindly retried: at most the one batch the single attempt made.
        assert len(world.emu.list_batches()) - batches_before <= 1
    client.close()


@pytest.mark.parametrize(("call", "fault"), CASES)
def test_a_persistent_fault_ends_in_a_provider_error_without_the_key(
    world: World, call: str, fault: str
) -> None:
    delays: list[float] = []
    client = make_client(world.server.base_url, delays, timeout=0.3)
    _inject(world, call, fault, count=RETRIES + 1)
    run = CALLS[call][2]
    kind, _, policy = FAULTS[fault]
    if call == "cancel" and kind in ("truncate", "garbage", "wrong_shape", "no_id"):
        # The first attempt cancelled the batch and its answer was lost; the retry is
        # refused (400: not cancellable), so the client looks the batch up and answers it.
        assert run(client, world)["status"] in ("cancelling", "cancelled")
        assert len(delays) == 1
        return
    with pytest.raises(ProviderError) as info:
        run(client, world)
    err = info.value
    assert isinstance(err, _expected_error(fault))
    retried = policy == "retry" and call != "create"
    assert len(delays) == (RETRIES if retried else 0)
    for text in (str(err), repr(err), *map(str, err.args)):
        assert KEY not in text
    client.close()


# -- a hostile base URL: memory and time stay bounded ----------------------------------------


def _peak_while(fn: Callable[[], object]) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        fn()
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


def test_a_150_mb_json_answer_is_refused_without_reading_it_into_memory(world: World) -> None:
    client = make_client(world.server.base_url, [])
    world.emu.inject_fault("GET", "/v1/batches", "huge", size=150 * MiB)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            client.list_batches()
        except ResponseTooLarge as err:
            errors.append(err)

    peak = _peak_while(call)
    assert errors and "cap of 1,048,576 bytes" in str(errors[0])
    assert peak < 6 * MiB, f"peak {peak / MiB:.1f} MiB for a 1 MiB cap"


def test_a_download_past_its_cap_stops_with_bounded_memory(world: World) -> None:
    client = make_client(world.server.base_url, [])
    world.emu.inject_fault("GET", "/v1/files/*/content", "huge", size=150 * MiB)
    errors: list[BaseException] = []

    def call() -> None:
        with tempfile.TemporaryFile() as dest:
            try:
                client.download_file(world.output_id, dest)
            except ResponseTooLarge as err:
                errors.append(err)

    peak = _peak_while(call)
    assert errors and "MAX_DOWNLOAD_BYTES" in str(errors[0])
    assert peak < 6 * MiB, f"peak {peak / MiB:.1f} MiB"


def test_a_file_within_the_cap_streams_with_bounded_memory(
    world: World, settings: Any, limits: dict[str, Any]
) -> None:
    settings.OPENAI_BATCHES = {**limits, "MAX_DOWNLOAD_BYTES": 64 * MiB, "TRANSFER_DEADLINE": 60}
    big = world.emu.add_file(b"x" * (40 * MiB), filename="big.jsonl")
    client = make_client(world.server.base_url, [])
    sizes: list[int] = []

    def call() -> None:
        with tempfile.TemporaryFile() as dest:
            sizes.append(client.download_file(big["id"], dest))

    peak = _peak_while(call)
    assert sizes == [40 * MiB]
    assert peak < 6 * MiB, f"peak {peak / MiB:.1f} MiB for a 40 MiB download"


def test_a_declared_oversized_download_is_not_read_at_all(limits: dict[str, Any]) -> None:
    reads: list[int] = []

    def body() -> Iterator[bytes]:
        reads.append(1)
        yield b"x"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-length": str(2 * MiB)}, content=body())

    client = OpenAIClient(
        Account("default", "https://api.example.test/v1", KEY),
        max_retries=RETRIES,
        transport=httpx.MockTransport(handler),
        sleep=lambda s: None,
    )
    with pytest.raises(ResponseTooLarge, match="announced 2,097,152 bytes"):
        client.download_file("file-x", io.BytesIO())
    with pytest.raises(ResponseTooLarge, match="announced"):
        client.retrieve_batch("batch_x")
    assert reads == []


class _Trickle(socketserver.BaseRequestHandler):
    """Answers slowly enough to never trip a per-read timeout, forever."""

    mode = "headers"
    gap = 0.1

    def handle(self) -> None:
        self.request.recv(65536)
        try:
            if self.mode == "headers":
                self.request.sendall(b"HTTP/1.1 200 OK\r\n")
                while True:  # one header byte at a time, never a blank line
                    self.request.sendall(b"X")
                    time.sleep(self.gap)
            else:
                self.request.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 100000\r\n\r\n"
                )
                while True:
                    self.request.sendall(b" ")
                    time.sleep(self.gap)
        except OSError:
            return  # the client gave up: good


@pytest.fixture
def trickle() -> Iterator[Callable[[str], str]]:
    servers: list[socketserver.ThreadingTCPServer] = []

    def start(mode: str) -> str:
        handler = type("Handler", (_Trickle,), {"mode": mode})
        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/v1"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("mode", ["headers", "body"])
def test_the_deadline_holds_against_a_server_that_drips(
    limits: dict[str, Any], trickle: Callable[[str], str], mode: str
) -> None:
    """A byte every 0.1 s never trips the 5 s read timeout; the 1 s deadline stops it,
    whether the drip is in the headers (before httpx returns a response) or the body."""
    client = make_client(trickle(mode), [], timeout=5.0)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="deadline of 1s"):
        client.retrieve_batch("batch_x")
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 1.4, elapsed


def test_the_deadline_holds_for_a_download_that_drips(
    limits: dict[str, Any], trickle: Callable[[str], str]
) -> None:
    client = make_client(trickle("body"), [], timeout=5.0)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        client.download_file("file-x", io.BytesIO())
    assert time.monotonic() - started < 1.4


def test_a_connect_that_hangs_is_bounded_by_the_deadline(limits: dict[str, Any]) -> None:
    # A listening socket whose backlog is full never completes a handshake in time; a
    # non-routable address does the same. Either way the deadline, not TIMEOUT, ends it.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(8):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    try:
        client = make_client(f"http://127.0.0.1:{port}/v1", [], timeout=30.0)
        started = time.monotonic()
        with pytest.raises(APIConnectionError):
            client.retrieve_batch("batch_x")
        assert time.monotonic() - started < 1.0 * (RETRIES + 1) + 1.5
    finally:
        for s in fillers:
            s.close()
        listener.close()


# -- answers no exception of httpx or json may escape ---------------------------------------


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"[" * 100_000, {}),  # nested deep enough to blow the recursion limit
        (b"\xff\xfe\x00garbage", {}),
        (b'{"id": "batch_1", "status": "completed"}', {"content-encoding": "gzip"}),
        (json.dumps({"id": 1, "status": "completed"}).encode(), {}),
        (json.dumps({"id": "b", "status": "completed", "request_counts": []}).encode(), {}),
        (
            json.dumps(
                {"id": "b", "status": "completed", "request_counts": {"total": -1}}
            ).encode(),
            {},
        ),
        (json.dumps({"id": "b", "status": "completed", "created_at": 1e30}).encode(), {}),
        (
            json.dumps({"id": "b", "status": "completed", "usage": {"input_tokens": "x"}}).encode(),
            {},
        ),
        (json.dumps({"id": "b", "status": "completed", "errors": {"data": {}}}).encode(), {}),
        (json.dumps({"id": "b" * 300, "status": "completed"}).encode(), {}),
    ],
)
def test_strange_answers_become_connection_errors(body: bytes, headers: dict[str, str]) -> None:
    delays: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=headers, content=body)

    client = OpenAIClient(
        Account("default", "https://api.example.test/v1", KEY),
        max_retries=RETRIES,
        transport=httpx.MockTransport(handler),
        sleep=delays.append,
    )
    with pytest.raises(APIConnectionError) as info:
        client.retrieve_batch("batch_1")
    assert "GET /batches/batch_1" in str(info.value)
    assert len(delays) == RETRIES


@pytest.mark.parametrize(
    "page",
    [
        {"object": "list", "data": {}, "has_more": False},
        {"object": "list", "data": [{"object": "file"}], "has_more": False},
        {"object": "list", "data": [], "has_more": "yes"},
        [],
    ],
)
def test_a_list_of_the_wrong_shape_is_a_connection_error(page: Any) -> None:
    client = OpenAIClient(
        Account("default", "https://api.example.test/v1", KEY),
        max_retries=0,
        transport=httpx.MockTransport(lambda request: httpx.Response(200, json=page)),
    )
    with pytest.raises(APIConnectionError):
        list(client.list_files())
    with pytest.raises(APIConnectionError):
        client.list_batches()


def test_an_error_answer_is_read_only_up_to_64_kib(limits: dict[str, Any]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, content=b"x" * (50 * MiB))

    client = OpenAIClient(
        Account("default", "https://api.example.test/v1", KEY),
        max_retries=0,
        transport=httpx.MockTransport(handler),
    )
    with pytest.raises(APIError) as info:
        client.retrieve_batch("batch_1")
    assert info.value.status_code == 400
    assert len(str(info.value)) < 3000


def test_ids_cannot_steer_a_call_to_another_endpoint() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path.decode())
        return httpx.Response(200, json={"id": "b", "status": "completed"})

    client = OpenAIClient(
        Account("default", "https://api.example.test/v1", KEY),
        max_retries=0,
        transport=httpx.MockTransport(handler),
    )
    client.retrieve_batch("../files?x=1")
    client.cancel_batch("a/b")
    assert seen == ["/v1/batches/..%2Ffiles%3Fx%3D1", "/v1/batches/a%2Fb/cancel"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("REQUEST_DEADLINE", 0),
        ("TRANSFER_DEADLINE", -1),
        ("MAX_RESPONSE_BYTES", "big"),
        ("MAX_DOWNLOAD_BYTES", None),
    ],
)
def test_a_bad_limit_setting_is_a_configuration_error(
    settings: Any, limits: dict[str, Any], name: str, value: Any
) -> None:
    settings.OPENAI_BATCHES = {**limits, name: value}
    with pytest.raises(ConfigurationError, match=name):
        OpenAIClient(Account("default", "https://api.example.test/v1", KEY))


def test_a_bad_base_url_is_a_configuration_error() -> None:
    client = OpenAIClient(Account("default", "http://exa mple.test:99999/v1", KEY))
    with pytest.raises((ConfigurationError, APIConnectionError)):
        client.list_batches()
