"""Structured output replies fit the schema asked for, checked by a JSON Schema validator:
``$ref``/``$defs`` (what Pydantic emits for nested models), nullable unions, string
formats, numeric bounds, lengths and item counts."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from openai_batches.emulator.responses import reply_text

SCHEMA: dict[str, Any] = {
    "$defs": {
        "Address": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "minLength": 3, "maxLength": 40},
                "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
            },
            "required": ["city", "zip"],
            "additionalProperties": False,
        },
    },
    "type": "object",
    "properties": {
        "home": {"$ref": "#/$defs/Address"},
        "work": {"anyOf": [{"$ref": "#/$defs/Address"}, {"type": "null"}]},
        "nickname": {"anyOf": [{"type": "null"}, {"type": "string"}]},
        "born": {"type": "string", "format": "date"},
        "seen": {"type": "string", "format": "date-time"},
        "id": {"type": "string", "format": "uuid"},
        "email": {"type": "string", "format": "email"},
        "site": {"type": "string", "format": "uri"},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "rank": {"type": "integer", "exclusiveMinimum": 100, "maximum": 200},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 3},
        "code": {"type": "string", "maxLength": 5},
    },
    "required": [
        "home",
        "work",
        "nickname",
        "born",
        "seen",
        "id",
        "email",
        "site",
        "score",
        "rank",
        "tags",
        "code",
    ],
    "additionalProperties": False,
}


def chat(text: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": text}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "r", "strict": True, "schema": schema},
        },
    }


@pytest.mark.parametrize("text", ["a", "bb", "a much longer review of a kettle", "ünïcode"])
def test_reply_validates_against_the_schema(text: str) -> None:
    value = json.loads(reply_text("/v1/chat/completions", chat(text, SCHEMA)))
    jsonschema.validate(value, SCHEMA, format_checker=jsonschema.FormatChecker())
    assert isinstance(value["work"], dict)  # the first non-null branch is taken


def test_recursive_refs_terminate() -> None:
    node = {
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
                },
                "required": ["name", "children"],
                "additionalProperties": False,
            }
        },
        "$ref": "#/$defs/Node",
    }
    value = json.loads(reply_text("/v1/chat/completions", chat("tree", node)))
    jsonschema.validate(value, node)
