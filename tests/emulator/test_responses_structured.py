"""Structured output: a json_schema response format gets JSON that fits the schema."""

from __future__ import annotations

import json

from openai_batches.emulator.responses import reply_text

SCHEMA = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "neutral", "negative"]},
        "score": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "ok": {"type": "boolean"},
    },
    "required": ["sentiment", "score", "tags", "ok"],
}


def _chat(text: str) -> dict[str, object]:
    return {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": text}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": SCHEMA}},
    }


def test_chat_json_schema_reply_fits_the_schema_and_is_deterministic() -> None:
    seen = set()
    for text in ("great", "awful", "fine", "meh", "love it", "broken"):
        value = json.loads(reply_text("/v1/chat/completions", _chat(text)))
        assert value["sentiment"] in {"positive", "neutral", "negative"}
        assert isinstance(value["score"], int)
        assert isinstance(value["tags"], list) and isinstance(value["tags"][0], str)
        assert isinstance(value["ok"], bool)
        assert reply_text("/v1/chat/completions", _chat(text)) == json.dumps(value)
        seen.add(value["sentiment"])
    assert len(seen) > 1  # enum values vary with the input


def test_responses_text_format_and_json_object() -> None:
    body = {
        "model": "m",
        "input": "hi",
        "text": {"format": {"type": "json_schema", "name": "r", "schema": SCHEMA}},
    }
    assert json.loads(reply_text("/v1/responses", body))["sentiment"] in {
        "positive",
        "neutral",
        "negative",
    }
    plain = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_object"},
    }
    assert isinstance(json.loads(reply_text("/v1/chat/completions", plain)), dict)
