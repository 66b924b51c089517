"""The emulator's bodies have the shapes of the real ones, for every endpoint, including the
answers that are not plain text: forced tool calls, refusals, ``length`` stops, image URLs,
and the structured-output format echoed by the Responses API.

Each body is loaded into the official SDK's type for it (required fields and types checked),
and read back through :class:`openai_batches.results.Result`.
"""

from __future__ import annotations

import json
from typing import Any

from openai.types import (
    Completion,
    CreateEmbeddingResponse,
    ImagesResponse,
    ModerationCreateResponse,
)
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from openai_batches.emulator.responses import response_body
from openai_batches.results import Result

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["c", "f"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}


def body(endpoint: str, request: dict[str, Any], model: str = "gpt-4o-mini") -> Result:
    return Result(
        endpoint,
        "succeeded",
        200,
        response_body(endpoint, request, model, 1_760_000_000, "batch:c1"),
    )


def chat(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **extra}


def test_chat_plain_multiple_choices_and_length() -> None:
    r = body("/v1/chat/completions", chat("hello", n=3))
    ChatCompletion.model_validate(r.raw)
    assert len(r.choices) == 3 and r.finish_reason == "stop" and r.ok
    cut = body("/v1/chat/completions", chat("a long request for an essay", max_completion_tokens=2))
    assert cut.truncated and cut.usage.output_tokens == 2


def test_chat_forced_tool_call_fits_the_function_schema() -> None:
    for choice in ("required", {"type": "function", "function": {"name": "get_weather"}}):
        r = body(
            "/v1/chat/completions", chat("Weather in Paris?", tools=[WEATHER], tool_choice=choice)
        )
        completion = ChatCompletion.model_validate(r.raw)
        assert completion.choices[0].message.content is None
        assert r.finish_reason == "tool_calls" and r.text is None and r.ok
        (call,) = r.tool_calls
        assert call.name == "get_weather" and call.id.startswith("call_")
        args = call.json()
        assert set(args) == {"city", "unit"} and args["unit"] in ("c", "f")
    auto = body("/v1/chat/completions", chat("Weather?", tools=[WEATHER]))
    assert auto.tool_calls == [] and auto.text  # "auto": the emulator answers in text


def test_chat_refusal_on_the_documented_trigger() -> None:
    r = body("/v1/chat/completions", chat("emulator-refuse please"))
    ChatCompletion.model_validate(r.raw)
    assert r.text is None and r.refusal and r.code == "refusal"


def test_responses_text_tool_call_refusal_and_echoed_format() -> None:
    plain = body("/v1/responses", {"model": "gpt-4o-mini", "input": "hi"})
    Response.model_validate(plain.raw)
    assert plain.text and plain.raw["text"]["format"] == {"type": "text"}

    fmt = {
        "type": "json_schema",
        "name": "r",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"a": {"type": "integer"}},
            "required": ["a"],
            "additionalProperties": False,
        },
    }
    structured = body(
        "/v1/responses", {"model": "gpt-4o-mini", "input": "hi", "text": {"format": fmt}}
    )
    Response.model_validate(structured.raw)
    assert structured.raw["text"]["format"] == fmt and isinstance(
        json.loads(structured.text or "")["a"], int
    )

    tool = {
        "type": "function",
        "name": "get_weather",
        "parameters": WEATHER["function"]["parameters"],
        "strict": True,
    }
    called = body(
        "/v1/responses",
        {"model": "gpt-4o-mini", "input": "Paris?", "tools": [tool], "tool_choice": "required"},
    )
    Response.model_validate(called.raw)
    assert called.finish_reason == "tool_calls" and called.tool_calls[0].json()["city"]
    assert called.raw["tools"] == [tool]

    refused = body("/v1/responses", {"model": "gpt-4o-mini", "input": "emulator-refuse"})
    Response.model_validate(refused.raw)
    assert refused.refusal and refused.text is None and refused.code == "refusal"

    cut = body(
        "/v1/responses", {"model": "gpt-4o-mini", "input": "write a lot", "max_output_tokens": 1}
    )
    assert cut.truncated and cut.raw["status"] == "incomplete"


def test_embeddings_completions_moderations_images() -> None:
    emb = body(
        "/v1/embeddings",
        {"model": "text-embedding-3-small", "input": ["a", "b"], "dimensions": 6},
        "text-embedding-3-small",
    )
    CreateEmbeddingResponse.model_validate(emb.raw)
    assert [len(v) for v in emb.embeddings] == [6, 6]
    b64 = body(
        "/v1/embeddings",
        {
            "model": "text-embedding-3-small",
            "input": "a",
            "dimensions": 6,
            "encoding_format": "base64",
        },
        "text-embedding-3-small",
    )
    assert [round(x, 5) for x in b64.embeddings[0]] == [round(x, 5) for x in emb.embeddings[0]]

    comp = body("/v1/completions", {"model": "gpt-3.5-turbo-instruct", "prompt": "Once", "n": 2})
    Completion.model_validate(comp.raw)
    assert len(comp.texts) == 2 and [c["index"] for c in comp.raw["choices"]] == [0, 1]

    mod = body("/v1/moderations", {"input": ["fine", "emulator-flag"]}, "omni-moderation-latest")
    ModerationCreateResponse.model_validate(mod.raw)
    assert mod.flagged and mod.categories == ["violence"]

    img = body(
        "/v1/images/generations", {"model": "dall-e-2", "prompt": "a cat", "n": 2}, "dall-e-2"
    )
    ImagesResponse.model_validate(img.raw)
    assert [i.bytes()[:4] for i in img.images] == [b"\x89PNG"] * 2
    url = body(
        "/v1/images/generations",
        {"model": "dall-e-2", "prompt": "a cat", "response_format": "url"},
        "dall-e-2",
    )
    ImagesResponse.model_validate(url.raw)
    assert (
        url.images[0].url and url.images[0].url.endswith(".png") and url.images[0].b64_json is None
    )
