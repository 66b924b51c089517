"""Anthropic's shapes translated to and from OpenAI's, with no I/O: an OpenAI chat body
onto a Messages request (:func:`to_params`, after :func:`body_problems` found nothing it
cannot carry), a ``Message`` onto a chat completion, a result line onto OpenAI's, and a
``MessageBatch`` onto an OpenAI batch object. The adapter (:mod:`.anthropic`) uses them on
the wire; they are plain functions so each mapping can be read and tested on its own."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from .base import unix_time

CHAT = "/v1/chat/completions"
#: The pseudo file id of a batch's results is the batch id with this suffix.
RESULTS = "/results"

#: Anthropic error type -> the HTTP status a result line gets (overloaded is told as 503 so
#: the RETRY policy's STATUS_CODES retry it, as they do OpenAI's).
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 503,
    "timeout_error": 504,
}
#: Chat parameters with a Messages equivalent (the rest are refused when items are added).
_MAPPED = {
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "user",
    # The emulator's scripting key passes through (the real API would refuse it).
    "emulator",
}
_ROLES = ("system", "developer", "user", "assistant")
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_DATA_URL = re.compile(r"^data:(image/[a-z0-9.+-]+);base64,(.*)$", re.S)


# -- bodies ---------------------------------------------------------------------------------


def body_problems(body: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(field, message)`` for what an OpenAI chat body holds that Messages cannot take."""
    problems: list[tuple[str, str]] = []
    for key in body:
        if key not in _MAPPED:
            problems.append(
                (
                    f"body.{key}",
                    "has no Anthropic Messages equivalent; an Anthropic account maps "
                    "model, messages, max_tokens / max_completion_tokens, temperature, "
                    "top_p, stop and user",
                )
            )
    limit = body.get("max_tokens", body.get("max_completion_tokens"))
    if limit is None:
        problems.append(
            ("body.max_tokens", "is required for an Anthropic account (Messages needs it)")
        )
    elif isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        problems.append(("body.max_tokens", "must be an integer of at least 1"))
    temperature = body.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not 0 <= temperature <= 1
    ):
        problems.append(("body.temperature", "must be a number from 0 to 1 on Anthropic"))
    stop = body.get("stop")
    if stop is not None and not (
        isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(s, str) for s in stop))
    ):
        problems.append(("body.stop", "must be a string or a list of strings"))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        problems.append(("body.messages", "must be a non-empty list"))
        return problems
    turns = 0
    for i, message in enumerate(messages):
        where = f"body.messages[{i}]"
        if not isinstance(message, Mapping) or message.get("role") not in _ROLES:
            problems.append(
                (f"{where}.role", f"must be one of {', '.join(_ROLES)} on an Anthropic account")
            )
            continue
        turns += message["role"] in ("user", "assistant")
        extra = set(message) - {"role", "content", "name"}
        if extra:
            problems.append((f"{where}.{sorted(extra)[0]}", "has no Anthropic equivalent"))
        content = message.get("content")
        if isinstance(content, str):
            continue
        if not isinstance(content, list) or not content:
            problems.append((f"{where}.content", "must be a string or a non-empty list of parts"))
            continue
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, Mapping) else None
            text_ok = kind == "text" and isinstance(part.get("text"), str)
            image = part.get("image_url") if kind == "image_url" else None
            url = image.get("url") if isinstance(image, Mapping) else None
            image_ok = isinstance(url, str) and message["role"] == "user"
            if not (text_ok or image_ok):
                problems.append(
                    (
                        f"{where}.content[{j}]",
                        "must be a text part, or an image_url part of a user message",
                    )
                )
    if not turns:
        problems.append(("body.messages", "needs at least one user or assistant message"))
    return problems


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(p["text"] for p in content if p.get("type") == "text")


def _block(part: Mapping[str, Any]) -> dict[str, Any]:
    if part["type"] == "text":
        return {"type": "text", "text": part["text"]}
    url = part["image_url"]["url"]
    data = _DATA_URL.match(url)
    if data is not None:
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": data.group(1), "data": data.group(2)},
        }
    return {"type": "image", "source": {"type": "url", "url": url}}


def to_params(body: Mapping[str, Any]) -> dict[str, Any]:
    """The Messages ``params`` for an OpenAI chat body that :func:`body_problems` passed."""
    system = [_text(m["content"]) for m in body["messages"] if m["role"] in ("system", "developer")]
    messages = [
        {
            "role": m["role"],
            "content": m["content"]
            if isinstance(m["content"], str)
            else [_block(p) for p in m["content"]],
        }
        for m in body["messages"]
        if m["role"] in ("user", "assistant")
    ]
    params: dict[str, Any] = {
        "model": body["model"],
        "max_tokens": body.get("max_tokens", body.get("max_completion_tokens")),
        "messages": messages,
    }
    if system:
        params["system"] = "\n\n".join(system)
    for key in ("temperature", "top_p", "emulator"):
        if body.get(key) is not None:
            params[key] = body[key]
    stop = body.get("stop")
    if stop:
        params["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if isinstance(body.get("user"), str):
        params["metadata"] = {"user_id": body["user"]}
    return params


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _tokens(usage: Mapping[str, Any], key: str) -> int:
    value = usage.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def to_chat_completion(message: Any) -> dict[str, Any]:
    """A Messages ``Message`` as the chat completion an OpenAI batch would have returned."""
    message = message if isinstance(message, dict) else {}
    blocks = [b for b in message.get("content") or [] if isinstance(b, dict)]
    text = "".join(str(b.get("text", "")) for b in blocks if b.get("type") == "text")
    calls = [
        {
            "id": b.get("id"),
            "type": "function",
            "function": {"name": b.get("name"), "arguments": json.dumps(b.get("input"))},
        }
        for b in blocks
        if b.get("type") == "tool_use"
    ]
    stop = message.get("stop_reason")
    reply: dict[str, Any] = {
        "role": "assistant",
        "content": text if text or not calls else None,
        "refusal": text if stop == "refusal" else None,
    }
    if calls:
        reply["tool_calls"] = calls
    usage = _obj(message.get("usage"))
    cached = _tokens(usage, "cache_read_input_tokens")
    prompt = _tokens(usage, "input_tokens") + cached + _tokens(usage, "cache_creation_input_tokens")
    completion = _tokens(usage, "output_tokens")
    return {
        "id": message.get("id"),
        "object": "chat.completion",
        "model": message.get("model"),
        "choices": [
            {
                "index": 0,
                "message": reply,
                "finish_reason": _FINISH.get(str(stop), "stop"),
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        },
    }


def to_result_line(line: Any) -> dict[str, Any]:
    """One Anthropic result line as an OpenAI result line (see the module docstring)."""
    if not isinstance(line, dict):
        return {"custom_id": None, "response": None, "error": None}
    custom_id = line.get("custom_id")
    result = _obj(line.get("result"))
    kind = result.get("type")
    if kind == "succeeded":
        message = result.get("message")
        return {
            "custom_id": custom_id,
            "response": {
                "status_code": 200,
                "request_id": message.get("id") if isinstance(message, dict) else None,
                "body": to_chat_completion(message),
            },
            "error": None,
        }
    if kind == "errored":
        outer = _obj(result.get("error"))
        inner = _obj(outer.get("error"))
        error_type = str(inner.get("type") or "api_error")
        return {
            "custom_id": custom_id,
            "response": {
                "status_code": ERROR_STATUS.get(error_type, 500),
                "request_id": outer.get("request_id"),
                "body": {
                    "error": {
                        "message": inner.get("message"),
                        "type": error_type,
                        "code": error_type,
                        "param": None,
                    }
                },
            },
            "error": None,
        }
    if kind in ("canceled", "expired"):
        word = "cancelled" if kind == "canceled" else "expired"
        return {
            "custom_id": custom_id,
            "response": None,
            "error": {
                "code": f"batch_{word}",
                "message": f"The batch was {word} before this request ran.",
            },
        }
    return {
        "custom_id": custom_id,
        "response": None,
        "error": {"code": "unknown_result", "message": f"Unknown result type {str(kind)[:40]!r}."},
    }


def to_openai_batch(obj: Any) -> Any:
    """A ``MessageBatch`` as an OpenAI batch object (anything else as it is: the check
    that follows refuses it)."""
    if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
        return obj
    counts = _obj(obj.get("request_counts"))
    n = {
        k: _tokens(counts, k) for k in ("processing", "succeeded", "errored", "canceled", "expired")
    }
    created = unix_time(obj.get("created_at"))
    ended = unix_time(obj.get("ended_at"))
    cancelled = unix_time(obj.get("cancel_initiated_at"))
    processing = obj.get("processing_status")
    if processing == "in_progress":
        status = "in_progress"
    elif processing == "canceling":
        status = "cancelling"
    elif processing == "ended":
        status = "cancelled" if cancelled else "expired" if n["expired"] else "completed"
    else:
        status = str(processing)  # the services report a status they do not know
    available = obj.get("results_url") and not obj.get("archived_at")
    return {
        "id": obj["id"],
        "object": "batch",
        "endpoint": CHAT,
        "status": status,
        "errors": None,
        "input_file_id": None,
        "output_file_id": obj["id"] + RESULTS if available and status != "in_progress" else None,
        "error_file_id": None,
        "completion_window": "24h",
        "created_at": created,
        "in_progress_at": created,
        "expires_at": unix_time(obj.get("expires_at")),
        "cancelling_at": cancelled,
        "completed_at": ended if status == "completed" else None,
        "expired_at": ended if status == "expired" else None,
        "cancelled_at": ended if status == "cancelled" else None,
        "request_counts": {
            "total": sum(n.values()),
            "completed": n["succeeded"],
            "failed": n["errored"],
        },
        "metadata": {},
    }
