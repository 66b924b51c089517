"""Anthropic's Messages API inside a batch: which request bodies it refuses, and the
``Message`` a request that ran answers with.

The parameters are those of the official SDK's ``MessageCreateParamsNonStreaming`` (anthropic
2.14) plus the sampling parameters older SDKs still send (``temperature``, ``top_k``,
``top_p``). A batch validates ``params`` only when the request runs: a refused body becomes an
``errored`` result with an ``invalid_request_error``, in the API's pydantic-style words
(``max_tokens: Field required``). The batch-only refusals are the ones the batch guide lists:
``stream: true``, fast-mode ``speed``, ``store`` / ``previous_thread_event_id``,
``cache_hint`` / ``context_hint``, ``max_tokens`` below 1 and the ``research_preview_2026_02``
switch.
"""

from __future__ import annotations

import json
from typing import Any

from ..ids import stable_hex
from ..responses import (
    REFUSAL_TEXT,
    _from_schema,
    _refuses,
    _reply_and_tokens,
    count_tokens,
    estimate_input_tokens,
)
from ..validation import EMULATOR_KEYS, BodyError, kind_of

ENDPOINT = "/v1/messages"

#: Parameter -> the JSON kinds it takes (None: any shape).
PARAMS: dict[str, tuple[str, ...] | None] = {
    "model": ("string",),
    "max_tokens": ("integer",),
    "messages": ("array",),
    "system": ("string", "array"),
    "metadata": ("object",),
    "stop_sequences": ("array",),
    "temperature": ("number", "integer"),
    "top_k": ("integer",),
    "top_p": ("number", "integer"),
    "tools": ("array",),
    "tool_choice": ("object",),
    "thinking": ("object",),
    "service_tier": ("string",),
    "container": ("string", "object"),
    "mcp_servers": ("array",),
    "context_management": ("object",),
    "output_config": ("object",),
    "output_format": ("object",),
    "cache_control": ("object",),
    "inference_geo": ("string",),
    "diagnostics": ("object",),
    # Known to the API but refused inside a batch (below).
    "stream": ("boolean",),
    "speed": ("string",),
    "store": ("boolean",),
    "previous_thread_event_id": ("string",),
    "cache_hint": None,
    "context_hint": None,
    "research_preview_2026_02": ("string",),
}
REQUIRED = ("model", "max_tokens", "messages")

_KIND_WORDS = {
    "string": "a valid string",
    "integer": "a valid integer",
    "number": "a valid number",
    "boolean": "a valid boolean",
    "array": "a valid list",
    "object": "a valid dictionary",
}


def _refused(param: str, message: str) -> BodyError:
    return BodyError(f"{param}: {message}", param, "invalid_request_error")


def check_message_body(body: dict[str, Any]) -> BodyError | None:
    """Why a batch refuses this ``params`` body when it runs (None when it takes it)."""
    for name in body:
        if name not in PARAMS and name not in EMULATOR_KEYS:
            return _refused(name, "Extra inputs are not permitted")
    for name in REQUIRED:
        if body.get(name) is None:
            return _refused(name, "Field required")
    for name, value in body.items():
        kinds = PARAMS.get(name)
        if kinds is None or value is None or kind_of(value) in kinds:
            continue
        return _refused(name, f"Input should be {_KIND_WORDS[kinds[0]]}")
    if body["max_tokens"] < 1:
        return _refused("max_tokens", "Input should be greater than or equal to 1")
    if body["messages"] == []:
        return _refused("messages", "List should have at least 1 item after validation, not 0")
    if body.get("stream") is True:
        return _refused("stream", "Streaming is not supported in the Message Batches API")
    if body.get("speed") == "fast":
        return _refused("speed", "Fast mode is not supported in the Message Batches API")
    for name in ("store", "previous_thread_event_id", "cache_hint", "context_hint"):
        if body.get(name) not in (None, False):
            return _refused(name, "This parameter is not supported in the Message Batches API")
    if body.get("research_preview_2026_02") == "active":
        return _refused(
            "research_preview_2026_02", "Research previews are not available in batches"
        )
    return None


def _forced_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    """The tool ``tool_choice`` forces (``any``: the first; ``tool``: the named one)."""
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and "name" in t]
    choice = body.get("tool_choice")
    if not tools or not isinstance(choice, dict):
        return None
    if choice.get("type") == "any":
        return tools[0]
    if choice.get("type") == "tool":
        return next((t for t in tools if t["name"] == choice.get("name")), None)
    return None


def message_body(body: dict[str, Any], key: str) -> dict[str, Any]:
    """The ``Message`` a batch request answers with: deterministic text (JSON fitting
    ``output_config.format`` when one is asked for), a ``tool_use`` block when
    ``tool_choice`` forces a tool, ``max_tokens`` cutting the text, a refusal on the
    ``emulator-refuse`` trigger."""
    text, out_tokens, finish = _reply_and_tokens(ENDPOINT, body)
    content: list[dict[str, Any]] = [{"type": "text", "text": text}]
    stop_reason = "max_tokens" if finish == "length" else "end_turn"
    tool = _forced_tool(body)
    if tool is not None:
        digest = stable_hex(json.dumps(body, sort_keys=True), length=8)
        arguments = _from_schema(tool.get("input_schema") or {"type": "object"}, digest, "")
        content = [
            {
                "type": "tool_use",
                "id": "toolu_" + stable_hex("toolu", key, length=24),
                "name": tool["name"],
                "input": arguments,
            }
        ]
        out_tokens, stop_reason = count_tokens(json.dumps(arguments)), "tool_use"
    elif _refuses(ENDPOINT, body):
        content = [{"type": "text", "text": REFUSAL_TEXT}]
        out_tokens, stop_reason = count_tokens(REFUSAL_TEXT), "refusal"
    return {
        "id": "msg_" + stable_hex("msg", key, length=24),
        "type": "message",
        "role": "assistant",
        "model": body.get("model"),
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": estimate_input_tokens(ENDPOINT, body),
            "output_tokens": out_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "service_tier": "batch",
        },
    }
