"""Token estimates (openai_batches.estimate): the text heuristic, each endpoint's body, the
output limits, the pluggable estimator, tiktoken without downloads, and the error against
the emulator's own ``usage.prompt_tokens`` on a real batch.
"""

from __future__ import annotations

import base64
import struct
import sys
import types
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from openai_batches import estimate, services
from openai_batches.estimate import (
    estimate_input_tokens,
    estimate_max_output_tokens,
    image_size,
    image_tokens,
    input_token_estimator,
    text_tokens,
    tiktoken_input_tokens,
)
from openai_batches.exceptions import ConfigurationError
from openai_batches.models import ItemState, JobState
from openai_batches.testing import EmulatorHandle, openai_emulator  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]

SAMPLES = {
    "english": (
        "I ordered the blue jacket in a medium after reading the size guide, and it arrived two "
        "days later than promised. The fabric feels sturdy and the zip is smooth, but the sleeves "
        "are at least three centimetres too long for me. Customer service answered within an hour "
        "and offered a free exchange, which I appreciated. Overall I'd give it four stars: good "
        "value for the price, though I wish the measurements on the website were more accurate."
    ),
    "code": (
        "def summarise(job: BatchJob) -> dict[str, int]:\n"
        '    """Count the job\'s items per state."""\n'
        "    counts: dict[str, int] = {}\n"
        '    for item in job.items.only("state").iterator():\n'
        "        counts[item.state] = counts.get(item.state, 0) + 1\n"
        "    return counts\n"
    ),
    "german": (
        "Die Lieferung kam pünktlich an, aber die Verpackung war leider beschädigt. Der Inhalt "
        "war zum Glück unversehrt, und das Gerät funktioniert einwandfrei. Die Bedienungsanleitung "
        "ist allerdings schwer verständlich und enthält mehrere Übersetzungsfehler."
    ),
    "russian": (
        "Заказ пришёл вовремя, но упаковка была повреждена. К счастью, содержимое не пострадало, "  # noqa: RUF001
        "и устройство работает без нареканий. Инструкция, правда, написана непонятно."
    ),
    "japanese": (
        "注文した商品は予定より二日遅れて届きました。品質はとても良く、サイズもぴったりでした。"
        "ただし、説明書が分かりにくかったので、星四つにします。"
    ),
    "chinese": (
        "我上周买的这件外套质量很好，颜色和图片一样，但是袖子有点长。客服回复很快，"  # noqa: RUF001
        "还给我换了一个小一号的。总体来说很满意，会推荐给朋友。"  # noqa: RUF001
    ),
    "arabic": (
        "وصل الطلب في الموعد المحدد، لكن العلبة كانت متضررة قليلاً. لحسن الحظ، المنتج نفسه "
        "سليم ويعمل بشكل ممتاز. خدمة العملاء كانت سريعة ومتعاونة."
    ),
}

#: Tokens of each sample by tiktoken's ``cl100k_base`` (counted once, written down here so
#: the test needs no tokenizer).
CL100K = {
    "english": 90,
    "code": 68,
    "german": 69,
    "russian": 77,
    "japanese": 70,
    "chinese": 74,
    "arabic": 102,
}


def one_each(text: str) -> int:
    """A counter that makes the structure visible: every text is one token."""
    return 1


@pytest.mark.parametrize("name", list(SAMPLES))
def test_the_text_heuristic_is_within_a_quarter_of_a_real_tokenizer(name: str) -> None:
    truth = CL100K[name]
    assert abs(text_tokens(SAMPLES[name]) - truth) <= 0.25 * truth


def test_characters_over_four_would_not_be() -> None:
    """What the heuristic is for: scripts where 4 characters are far more than a token."""
    for name in ("russian", "japanese", "chinese", "arabic"):
        assert len(SAMPLES[name]) / 4 < 0.6 * CL100K[name], name


def test_text_basics() -> None:
    assert text_tokens("") == 0
    assert text_tokens("hello") == 1
    assert text_tokens(" the cat sat on the mat") == 6
    assert text_tokens("internationalisation") == 4  # a long word, a token per six letters
    assert text_tokens("1234567") == 3  # digits go in runs of three
    assert text_tokens("日本語の文章") == 6  # about one per character


def test_chat_messages_names_tools_and_schema() -> None:
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "name": "alice", "content": "Hi"},
        ],
    }
    # Priming 3, then per message 3 + 1 (role) + the content (1), the name 1 + 1.
    assert estimate_input_tokens("/v1/chat/completions", body, one_each) == 3 + 5 + 5 + 2
    tools = {
        **body,
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "lookup",
                    "description": "Find a thing",
                    "parameters": {"type": "object"},
                },
            }
        ],
    }
    plain = estimate_input_tokens("/v1/chat/completions", body, one_each)
    # The wrapper 12, the tool 8, its name, description and parameters 1 each.
    assert estimate_input_tokens("/v1/chat/completions", tools, one_each) == plain + 12 + 8 + 3
    schema = {
        **body,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "object"}},
        },
    }
    assert estimate_input_tokens("/v1/chat/completions", schema, one_each) == plain + 10 + 1
    # The heuristic's own count for real text.
    real = estimate_input_tokens(
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": SAMPLES["english"]}]},
    )
    assert real == 3 + 4 + text_tokens(SAMPLES["english"])


def png(width: int, height: int) -> str:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + chunk).decode()


def jpeg(width: int, height: int) -> str:
    app0 = b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = b"\xff\xc0\x00\x11\x08" + struct.pack(">HH", height, width) + b"\x03" + b"\x00" * 9
    return "data:image/jpeg;base64," + base64.b64encode(b"\xff\xd8" + app0 + sof0).decode()


def test_images_by_detail_and_size() -> None:
    assert image_size(png(2048, 4096)) == (2048, 4096)
    assert image_size(jpeg(640, 480)) == (640, 480)
    assert image_size("https://example.com/cat.png") is None
    assert image_tokens("low", (4000, 4000)) == 85
    # 2048x4096 fits 1024x2048, then 768x1536: 2 x 3 tiles.
    assert image_tokens("high", (2048, 4096)) == 85 + 170 * 6
    assert image_tokens("auto", None) == 85 + 170 * 4  # unknown: 1024x1024
    assert image_tokens("high", (512, 512)) == 85 + 170  # never scaled up
    assert image_tokens("high", (2048, 4096), "gpt-4o-mini-2024-07-18") == 2833 + 5667 * 6

    def chat(url: str, detail: str) -> dict[str, Any]:
        part = {"type": "image_url", "image_url": {"url": url, "detail": detail}}
        return {"model": "gpt-4o", "messages": [{"role": "user", "content": [part]}]}

    base = 3 + 4
    assert (
        estimate_input_tokens("/v1/chat/completions", chat(png(2048, 4096), "high")) == base + 1105
    )
    assert estimate_input_tokens("/v1/chat/completions", chat(jpeg(640, 480), "low")) == base + 85
    responses = {
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {"type": "input_image", "image_url": png(512, 512), "detail": "high"},
                ],
            }
        ]
    }
    assert estimate_input_tokens("/v1/responses", responses, one_each) == 3 + 4 + 1 + 255


def test_responses_embeddings_completions_moderations_images() -> None:
    assert (
        estimate_input_tokens(
            "/v1/responses", {"instructions": "Be brief.", "input": "Hi"}, one_each
        )
        == (4 + 1) + (4 + 1) + 3
    )
    items = {
        "input": [
            {"type": "function_call", "name": "f", "arguments": "{}", "call_id": "c"},
            {"type": "function_call_output", "call_id": "c", "output": "42"},
        ]
    }
    assert estimate_input_tokens("/v1/responses", items, one_each) == (8 + 4) + (3 + 1) + 3
    assert estimate_input_tokens("/v1/embeddings", {"input": "a b c"}) == text_tokens("a b c")
    assert estimate_input_tokens("/v1/embeddings", {"input": ["one", "two"]}, one_each) == 2
    assert estimate_input_tokens("/v1/embeddings", {"input": [1, 2, 3, 4]}) == 4  # token ids
    assert estimate_input_tokens("/v1/embeddings", {"input": [[1, 2], [3]]}) == 3
    assert estimate_input_tokens("/v1/completions", {"prompt": ["a", "b"]}, one_each) == 2
    assert estimate_input_tokens("/v1/moderations", {"input": "hello"}, one_each) == 1
    multimodal = {
        "input": [
            {"type": "text", "text": "is this ok"},
            {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}},
        ]
    }
    assert estimate_input_tokens("/v1/moderations", multimodal, one_each) == 1 + 765
    assert estimate_input_tokens("/v1/images/generations", {"prompt": "a cat"}, one_each) == 1
    assert estimate_input_tokens("/v1/images/edits", {"prompt": "x", "image": ["a", "b"]}) == (
        1 + 2 * 765
    )
    assert estimate_input_tokens("/v1/chat/completions", {}) == 0  # nothing to read


def test_most_output_tokens() -> None:
    chat = "/v1/chat/completions"
    assert estimate_max_output_tokens(chat, {"max_tokens": 50}) == 50
    assert estimate_max_output_tokens(chat, {"max_completion_tokens": 70, "max_tokens": 50}) == 70
    assert estimate_max_output_tokens(chat, {"max_tokens": 50, "n": 3}) == 150
    assert estimate_max_output_tokens(chat, {}) == estimate.DEFAULT_OUTPUT_TOKENS == 1024
    assert estimate_max_output_tokens(chat, {}, default=10) == 10
    assert estimate_max_output_tokens(chat, {"max_tokens": "50"}) == 1024  # not a number
    assert estimate_max_output_tokens("/v1/responses", {"max_output_tokens": 300}) == 300
    assert estimate_max_output_tokens("/v1/completions", {}) == 16  # the endpoint's default
    assert estimate_max_output_tokens("/v1/completions", {"max_tokens": 10, "best_of": 4}) == 40
    assert estimate_max_output_tokens("/v1/embeddings", {"input": "x"}) == 0
    assert estimate_max_output_tokens("/v1/moderations", {"input": "x"}) == 0
    image = {"model": "gpt-image-1", "quality": "low", "size": "1024x1536", "n": 2}
    assert estimate_max_output_tokens("/v1/images/generations", image) == 816
    assert estimate_max_output_tokens("/v1/images/generations", {"model": "gpt-image-1"}) == 6240
    assert estimate_max_output_tokens("/v1/images/generations", {"model": "dall-e-3"}) == 0


# -- the configured estimator and tiktoken ------------------------------------------------------


def test_the_estimator_is_the_heuristic_unless_a_path_is_set(settings: Any) -> None:
    assert input_token_estimator() is estimate_input_tokens
    settings.OPENAI_BATCHES = {
        **settings.OPENAI_BATCHES,
        "TOKEN_ESTIMATOR": "openai_batches.estimate.tiktoken_input_tokens",
    }
    assert input_token_estimator() is tiktoken_input_tokens
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "TOKEN_ESTIMATOR": "no.such.thing"}
    with pytest.raises(ConfigurationError, match=r"TOKEN_ESTIMATOR'\] names 'no.such.thing'"):
        input_token_estimator()


@pytest.fixture
def fresh_tiktoken() -> Iterator[None]:
    estimate.tiktoken_encoding.cache_clear()
    yield
    estimate.tiktoken_encoding.cache_clear()


def test_without_tiktoken_the_tiktoken_estimator_is_the_heuristic(
    fresh_tiktoken: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tiktoken", None)  # import fails
    body = {"messages": [{"role": "user", "content": SAMPLES["german"]}]}
    assert estimate.tiktoken_encoding() is None
    assert tiktoken_input_tokens("/v1/chat/completions", body) == estimate_input_tokens(
        "/v1/chat/completions", body
    )


def test_an_encoding_that_would_be_downloaded_is_not_used(
    fresh_tiktoken: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tiktoken fetches a missing encoding file over HTTP: the estimator never lets it."""
    fetched: list[str] = []
    loader = types.ModuleType("tiktoken.load")

    def read_file(blobpath: str) -> bytes:
        fetched.append(blobpath)  # stands for the download
        return b""

    loader.read_file = read_file  # type: ignore[attr-defined]
    fake = types.ModuleType("tiktoken")
    fake.load = loader  # type: ignore[attr-defined]
    fake.list_encoding_names = lambda: ["o200k_base", "cl100k_base"]  # type: ignore[attr-defined]

    def get_encoding(name: str) -> Any:
        loader.read_file(f"https://encodings.invalid/{name}.tiktoken")  # type: ignore[attr-defined]
        return object()

    fake.get_encoding = get_encoding  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tiktoken", fake)
    monkeypatch.setitem(sys.modules, "tiktoken.load", loader)
    assert estimate.tiktoken_encoding() is None
    assert fetched == []
    assert loader.read_file is read_file  # type: ignore[attr-defined]  # put back


def test_tiktoken_counts_the_text_when_it_is_installed_with_an_encoding(
    fresh_tiktoken: None,
) -> None:
    encoding = estimate.tiktoken_encoding()
    if encoding is None:
        pytest.skip("tiktoken or a local encoding file is not installed (optional)")
    text = SAMPLES["english"]
    assert tiktoken_input_tokens("/v1/embeddings", {"input": text}) == len(encoding.encode(text))
    if encoding.name.startswith("cl100k_base"):
        assert len(encoding.encode(text)) == CL100K["english"]
    chat = {"messages": [{"role": "user", "content": text}]}
    assert tiktoken_input_tokens("/v1/chat/completions", chat) == 3 + 4 + len(encoding.encode(text))


# -- against the emulator -----------------------------------------------------------------------


def readme_paragraphs() -> list[str]:
    """Realistic English: the README's prose paragraphs (not code, not tables)."""
    text = (ROOT / "README.md").read_text()
    paragraphs = [" ".join(p.split()) for p in text.split("\n\n")]
    return [p for p in paragraphs if len(p) > 200 and not p.startswith(("```", "|", "#", "<"))]


@pytest.mark.django_db
def test_the_estimate_against_the_emulators_usage_on_a_real_batch(
    openai_emulator: EmulatorHandle,  # noqa: F811
) -> None:
    """The emulator bills chat input as characters/4 per string plus 3 a message: on prose
    the heuristic lands within a fifth of it per request, and within 15% over the batch."""
    paragraphs = readme_paragraphs()[:20]
    assert len(paragraphs) >= 10
    job = services.create_job(
        endpoint="/v1/chat/completions",
        items=[
            {
                "custom_id": f"p-{i}",
                "body": {
                    "model": "gpt-4o-mini",
                    "max_tokens": 200,
                    "messages": [
                        {"role": "system", "content": "Summarise the paragraph in one line."},
                        {"role": "user", "content": paragraph},
                    ],
                },
            }
            for i, paragraph in enumerate(paragraphs)
        ],
    )
    services.request_submit(job)
    services.submit(job)
    job = services.refresh(job)
    assert job.state == JobState.FINISHED, job.last_error
    estimated = billed = 0
    for item in job.items.order_by("pk"):
        assert item.state == ItemState.SUCCEEDED
        guess = estimate_input_tokens(item.url, item.body)
        assert abs(guess - item.input_tokens) <= 0.2 * item.input_tokens, (guess, item.input_tokens)
        estimated += guess
        billed += item.input_tokens
    assert billed == job.input_tokens
    assert abs(estimated - billed) <= 0.15 * billed, (estimated, billed)
