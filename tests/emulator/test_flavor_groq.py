"""The Groq flavour, judged by the official ``openai`` SDK over HTTP: OpenAI's shape under
``/openai/v1`` with completion windows from 24 hours to 7 days."""

from __future__ import annotations

import openai
import pytest
from openai import OpenAI

from openai_batches.emulator import Emulator, EmulatorServer

from .conftest import ServeFlavor, line, read_jsonl, upload

KEY = "gsk_emulator_test"


@pytest.fixture
def groq(serve_flavor: ServeFlavor) -> tuple[Emulator, OpenAI]:
    emu, server = serve_flavor("groq", api_key=KEY)
    return emu, OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0)


def create(client: OpenAI, window: str, custom_ids: list[str]) -> str:
    return client.batches.create(
        input_file_id=upload(client, [line(c, model="llama-3.1-8b-instant") for c in custom_ids]),
        endpoint="/v1/chat/completions",
        completion_window=window,  # type: ignore[arg-type]
    ).id


def test_sdk_drives_a_batch_through_create_poll_results_and_cancel(
    groq: tuple[Emulator, OpenAI],
) -> None:
    emu, client = groq
    done = create(client, "24h", ["a", "b"])
    emu.advance(1)
    batch = client.batches.retrieve(done)
    assert batch.status == "completed" and batch.completion_window == "24h"
    assert sorted(x["custom_id"] for x in read_jsonl(client, batch.output_file_id)) == ["a", "b"]
    emu.stall_request("slow")
    running = create(client, "48h", ["c", "slow"])
    emu.advance(1)
    assert client.batches.cancel(running).status == "cancelling"
    emu.advance(3600)
    assert client.batches.retrieve(running).status == "cancelled"


def test_a_seven_day_window_expires_after_seven_days_not_one(
    groq: tuple[Emulator, OpenAI],
) -> None:
    emu, client = groq
    emu.stall_request("slow")
    batch_id = create(client, "7d", ["done", "slow"])
    emu.advance(1)
    batch = client.batches.retrieve(batch_id)
    assert batch.expires_at == batch.created_at + 7 * 86400
    emu.advance(2 * 86400)
    assert client.batches.retrieve(batch_id).status == "in_progress"
    emu.advance(5 * 86400)
    expired = client.batches.retrieve(batch_id)
    assert expired.status == "expired"
    assert [x["custom_id"] for x in read_jsonl(client, expired.output_file_id)] == ["done"]
    (unrun,) = read_jsonl(client, expired.error_file_id)
    assert unrun["error"]["code"] == "batch_expired"


@pytest.mark.parametrize("window", ["23h", "8d", "169h", "1w", "24"])
def test_windows_outside_24h_to_7d_are_refused(groq: tuple[Emulator, OpenAI], window: str) -> None:
    _, client = groq
    with pytest.raises(openai.BadRequestError) as caught:
        create(client, window, ["a"])
    assert caught.value.param == "completion_window"  # type: ignore[attr-defined]


@pytest.mark.parametrize("window", ["24h", "36h", "3d", "168h", "7d"])
def test_windows_from_24h_to_7d_are_taken(groq: tuple[Emulator, OpenAI], window: str) -> None:
    _, client = groq
    assert client.batches.retrieve(create(client, window, ["a"])).completion_window == window


def test_groq_serves_under_openai_v1_with_its_limits(
    groq: tuple[Emulator, OpenAI], serve_flavor: ServeFlavor
) -> None:
    emu, client = groq
    assert emu.limits.max_batch_file_bytes == 100 * 1024 * 1024
    assert str(client.base_url).endswith("/openai/v1/")
    with pytest.raises(openai.BadRequestError) as caught:
        client.batches.create(
            input_file_id=upload(client, [line("a")]),
            endpoint="/v1/embeddings",
            completion_window="24h",
        )
    assert caught.value.param == "endpoint"  # type: ignore[attr-defined]
    with pytest.raises(openai.AuthenticationError):
        OpenAI(base_url=str(client.base_url), api_key="wrong", max_retries=0).batches.list()


def test_an_unknown_flavor_is_refused() -> None:
    with pytest.raises(ValueError, match="flavor must be one of"):
        Emulator(flavor="bedrock")
    with pytest.raises(ValueError, match="bad option for the groq flavor"):
        Emulator(flavor="groq", flavor_options={"quirks": True})


def test_the_server_base_url_follows_the_flavor(serve_flavor: ServeFlavor) -> None:
    urls = {name: serve_flavor(name)[1] for name in ("openai", "azure", "anthropic", "groq")}
    base = {name: server.base_url.removeprefix(server.root_url) for name, server in urls.items()}
    assert base == {"openai": "/v1", "azure": "/openai/v1", "anthropic": "", "groq": "/openai/v1"}
    assert isinstance(urls["openai"], EmulatorServer)
