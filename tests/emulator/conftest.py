"""Fixtures for the emulator tests: an emulator, its real HTTP server, the official SDK
client pointed at it, an emulator of any flavour (Azure, Anthropic), and a tiny webhook
receiver."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from openai import OpenAI

from openai_batches.emulator import Emulator, EmulatorServer

API_KEY = "sk-emulator-test"


def line(
    custom_id: str,
    content: str = "hello",
    *,
    model: str = "gpt-4o-mini",
    url: str = "/v1/chat/completions",
    **body_extra: Any,
) -> dict[str, Any]:
    """One chat-completions input line."""
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": content}]}
    body.update(body_extra)
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def jsonl(lines: list[Any]) -> bytes:
    return "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines).encode()


def upload(client: OpenAI, lines: list[Any], name: str = "input.jsonl") -> str:
    return client.files.create(file=(name, io.BytesIO(jsonl(lines))), purpose="batch").id


def create_batch(
    client: OpenAI, lines: list[Any], endpoint: str = "/v1/chat/completions", **kwargs: Any
) -> Any:
    file_id = upload(client, lines)
    return client.batches.create(
        input_file_id=file_id,
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window="24h",
        **kwargs,
    )


def read_jsonl(client: OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(x) for x in client.files.content(file_id).text.splitlines()]


@pytest.fixture
def emu() -> Iterator[Emulator]:
    emulator = Emulator(timing="instant")
    yield emulator
    emulator.close()


@pytest.fixture
def server(emu: Emulator) -> Iterator[EmulatorServer]:
    with EmulatorServer(emu, port=0) as srv:
        yield srv


@pytest.fixture
def client(server: EmulatorServer) -> Iterator[OpenAI]:
    with OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0) as c:
        yield c


#: ``serve_flavor("azure", api_key=..., **flavor_options)`` -> (emulator, server).
ServeFlavor = Callable[..., tuple[Emulator, EmulatorServer]]


@pytest.fixture
def serve_flavor() -> Iterator[ServeFlavor]:
    """Start an emulator of a flavour over real HTTP (manual clock, instant timings unless
    told); every one started is stopped after the test."""
    started: list[tuple[Emulator, EmulatorServer]] = []

    def start(
        flavor: str,
        *,
        api_key: str | None = None,
        timing: str = "instant",
        clock: str | None = None,
        limits: Any = None,
        **options: Any,
    ) -> tuple[Emulator, EmulatorServer]:
        emulator = Emulator(
            timing=timing,
            api_key=api_key,
            clock=clock,
            limits=limits,
            flavor=flavor,
            flavor_options=options,
        )
        server = EmulatorServer(emulator, port=0).start()
        started.append((emulator, server))
        return emulator, server

    yield start
    for emulator, server in started:
        server.stop()
        emulator.close()


@dataclass
class Receiver:
    """Collects webhook POSTs; answers with ``statuses`` in turn (then 200)."""

    url: str = ""
    statuses: list[int] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes, int]] = field(default_factory=list)
    received: threading.Event = field(default_factory=threading.Event)

    def wait_for(self, n: int, timeout: float = 10.0) -> bool:
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.requests) >= n:
                return True
            time.sleep(0.02)
        return False


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            status = rec.statuses.pop(0) if rec.statuses else 200
            rec.requests.append(({k.lower(): v for k, v in self.headers.items()}, body, status))
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", "/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.url = f"http://127.0.0.1:{httpd.server_port}/hooks/openai"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield rec
    httpd.shutdown()
    httpd.server_close()


# The fixture users get with ``pytest_plugins = ["openai_batches.testing"]``.
from openai_batches.testing import openai_emulator  # noqa: E402, F401
