"""Deterministic, valid response bodies for every batch endpoint, plus token estimates.

The same request body always yields the same reply text, embedding vector and ``usage``, so
tests can assert on results. Tokens are estimated as one token per four characters of the
text in the request (rounded up, at least one); that is not tiktoken, but it is stable and
grows with the input, which is what budgets and usage accounting need.

Answers that are not plain text, on documented triggers, so receivers can be tested on them:

- a ``json_schema`` format (chat ``response_format``, Responses ``text.format``): JSON that
  fits the schema; the Responses body echoes the format as the real one does;
- ``tool_choice`` ``"required"`` or naming a function: a call of that function (the first one
  for ``"required"``) with arguments that fit its ``parameters`` schema; ``"auto"`` answers
  in text;
- a prompt containing ``emulator-refuse``: a refusal (chat ``message.refusal``, Responses a
  ``refusal`` content part);
- a prompt containing ``emulator-flag`` (moderations): flagged as violence;
- ``max_tokens``/``max_completion_tokens``/``max_output_tokens`` below the reply: the reply
  cut with a ``length`` stop (Responses: ``incomplete``, ``max_output_tokens``);
- images with ``response_format: "url"``: URLs instead of base64.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
from collections.abc import Iterator
from typing import Any

from .ids import stable_hex

#: Models used when a body does not name one (the endpoints where ``model`` is optional).
DEFAULT_MODELS = {
    "/v1/moderations": "omni-moderation-latest",
    "/v1/images/generations": "dall-e-2",
    "/v1/images/edits": "dall-e-2",
    "/v1/videos": "sora-2",
}

#: The dated snapshot each alias resolves to, which a batch reports as its ``model`` (as the
#: real API does: a ``gpt-4o-mini`` batch says ``gpt-4o-mini-2024-07-18``). Embedding models
#: have no dated snapshots; a name not listed (already dated, a fine-tune) is reported as is.
#: openai-batch-api.md §2 on the batch's ``model``: "The model id that processes the batch,
#: e.g. ``gpt-5.4-pro-2026-03-05`` (a resolved snapshot name, observed)". The reference
#: gives no table: these are the snapshots the aliases resolved to when it was written
#: (an alias moves on; update both). ``docs/reference/emulator.md`` lists it, and a test
#: keeps the two equal.
SNAPSHOTS = {
    "gpt-3.5-turbo": "gpt-3.5-turbo-0125",
    "gpt-4-turbo": "gpt-4-turbo-2024-04-09",
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano": "gpt-4.1-nano-2025-04-14",
    "gpt-5": "gpt-5-2025-08-07",
    "gpt-5-mini": "gpt-5-mini-2025-08-07",
    "gpt-5-nano": "gpt-5-nano-2025-08-07",
    "o1": "o1-2024-12-17",
    "o3": "o3-2025-04-16",
    "o3-mini": "o3-mini-2025-01-31",
    "o4-mini": "o4-mini-2025-04-16",
    "omni-moderation-latest": "omni-moderation-2024-09-26",
}


def snapshot(model: str) -> str:
    """The dated snapshot the real API reports for ``model``."""
    return SNAPSHOTS.get(model, model)


_EMBEDDING_DIMS = {"text-embedding-3-large": 3072}
_DEFAULT_EMBEDDING_DIMS = 1536

_MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)

# A 1x1 transparent PNG: a real image the SDK and users can decode.
_PNG_1X1 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


def _strings(value: Any) -> Iterator[str]:
    """Every string inside a JSON value (message contents, inputs, prompts ...)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def count_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def _prompt_part(endpoint: str, body: dict[str, Any]) -> Any:
    if endpoint == "/v1/chat/completions":
        return body.get("messages", [])
    if endpoint == "/v1/responses":
        return [body.get("instructions"), body.get("input")]
    if endpoint == "/v1/messages":  # Anthropic's Messages API
        return [body.get("system"), body.get("messages", [])]
    if endpoint in ("/v1/embeddings", "/v1/moderations"):
        return body.get("input")
    return body.get("prompt")


def estimate_input_tokens(endpoint: str, body: dict[str, Any]) -> int:
    """Input tokens a request would consume (what the enqueued-token budget counts)."""
    part = _prompt_part(endpoint, body)
    total = sum(count_tokens(s) for s in _strings(part))
    if endpoint == "/v1/chat/completions" and isinstance(part, list):
        total += 3 * len(part) + 3  # per-message framing, like the real tokenizer adds
    return max(1, total)


def embedding_input_count(body: dict[str, Any]) -> int:
    """How many embedding inputs one ``/v1/embeddings`` body carries."""
    inp = body.get("input")
    if isinstance(inp, list) and inp and not isinstance(inp[0], int):
        return len(inp)
    return 1


def _last_user_text(endpoint: str, body: dict[str, Any]) -> str:
    texts = list(_strings(_prompt_part(endpoint, body)))
    return texts[-1] if texts else ""


def _requested_format(body: dict[str, Any]) -> dict[str, Any] | None:
    """The structured-output format asked for: chat's ``response_format``, Responses'
    ``text.format``, or Anthropic's ``output_config.format`` (``output_format`` before)."""
    fmt = body.get("response_format") or body.get("output_format")
    for holder in ("text", "output_config"):
        if not isinstance(fmt, dict):
            nested = body.get(holder)
            fmt = nested.get("format") if isinstance(nested, dict) else None
    return fmt if isinstance(fmt, dict) else None


_FORMATS = {
    "date": "2024-05-17",
    "date-time": "2024-05-17T12:30:00Z",
    "time": "12:30:00",
    "duration": "P1D",
    "email": "user@example.com",
    "hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "uuid": "123e4567-e89b-42d3-a456-426614174000",
    "uri": "https://example.com/emulated",
}


def _resolve(ref: str, root: Any) -> Any:
    node = root
    for part in ref.removeprefix("#").strip("/").split("/"):
        if not part:
            continue
        node = (
            node.get(part.replace("~1", "/").replace("~0", "~")) if isinstance(node, dict) else None
        )
    return node


def _from_pattern(pattern: str, pick: int) -> str:
    """A string matching a regular expression, built from its parse tree."""
    import re._parser as sre  # private, but the only parser of Python's own regex syntax

    def gen(items: Any) -> str:
        out = []
        for op, arg in items:
            name = str(op)
            if name == "LITERAL":
                out.append(chr(arg))
            elif name == "ANY":
                out.append("x")
            elif name == "IN":
                out.append(_in(arg))
            elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
                low, high, sub = arg
                count = max(low, min(high, 1 if low == 0 else low))
                out.append("".join(gen(sub) for _ in range(count)))
            elif name == "SUBPATTERN":
                out.append(gen(arg[-1]))
            elif name == "BRANCH":
                branches = arg[1]
                out.append(gen(branches[pick % len(branches)]))
            # AT (anchors) and the like match no characters
        return "".join(out)

    def _in(arg: Any) -> str:
        negated = any(str(op) == "NEGATE" for op, _ in arg)
        if negated:
            excluded = {chr(v) for op, v in arg if str(op) == "LITERAL"}
            return next(c for c in "xyz0" if c not in excluded)
        op, value = next((o, v) for o, v in arg if str(o) != "NEGATE")
        if str(op) == "LITERAL":
            return chr(value)
        if str(op) == "RANGE":
            return chr(value[0] + pick % (value[1] - value[0] + 1))
        return {"CATEGORY_DIGIT": "7", "CATEGORY_SPACE": " "}.get(str(value), "a")

    return gen(sre.parse(pattern))


def _string(schema: dict[str, Any], pick: int, prompt: str) -> str:
    if schema.get("format") in _FORMATS:
        return _FORMATS[schema["format"]]
    if isinstance(schema.get("pattern"), str):
        return _from_pattern(schema["pattern"], pick)
    text = f"Emulated text for: {prompt[:60]}"
    low = schema.get("minLength")
    high = schema.get("maxLength")
    if isinstance(high, int):
        text = text[:high]
    if isinstance(low, int) and len(text) < low:
        text = text.ljust(low, ".")
    return text


def _number(schema: dict[str, Any], pick: int, integer: bool) -> float | int:
    given_low = schema.get("minimum", schema.get("exclusiveMinimum"))
    given_high = schema.get("maximum", schema.get("exclusiveMaximum"))
    if given_low is None and given_high is None:
        return pick % 100 if integer else round((pick % 10_000) / 100, 2)
    # One bound at least is given here.
    low = float(given_low) if given_low is not None else float(given_high or 0) - 100
    high = float(given_high) if given_high is not None else low + 100
    if integer:
        first = math.floor(low) + 1 if "exclusiveMinimum" in schema else math.ceil(low)
        last = math.ceil(high) - 1 if "exclusiveMaximum" in schema else math.floor(high)
        return first + pick % max(1, last - first + 1)
    # A point strictly inside the range satisfies inclusive and exclusive bounds alike.
    return low + (high - low) * ((pick % 98) + 1) / 100


def _from_schema(schema: Any, seed: str, prompt: str, depth: int = 0, root: Any = None) -> Any:
    """A deterministic value that fits a JSON schema (enums picked by hash of the input):
    ``$ref`` into ``$defs``, unions (first non-null branch), formats, patterns, bounds."""
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > 12:
        return None
    if isinstance(schema.get("$ref"), str):
        target = _resolve(schema["$ref"], root)
        merged = {**(target if isinstance(target, dict) else {}), **schema}
        merged.pop("$ref")
        return _from_schema(merged, seed, prompt, depth + 1, root)
    pick = int(stable_hex(seed, length=8), 16)
    if schema.get("enum"):
        return schema["enum"][pick % len(schema["enum"])]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            options = schema[key]
            chosen = next((o for o in options if o.get("type") != "null"), options[0])
            return _from_schema(chosen, seed, prompt, depth + 1, root)
    if isinstance(schema.get("allOf"), list) and schema["allOf"]:
        merged = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            merged.update(part if isinstance(part, dict) else {})
        return _from_schema(merged, seed, prompt, depth + 1, root)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {
            name: _from_schema(sub, f"{seed}.{name}", prompt, depth + 1, root)
            for name, sub in props.items()
        }
    if kind == "array":
        # A recursive schema stops growing: deep arrays are left empty when allowed.
        count = int(schema.get("minItems") or (1 if depth < 6 else 0))
        if isinstance(schema.get("maxItems"), int):
            count = min(count, schema["maxItems"])
        return [
            _from_schema(schema.get("items"), f"{seed}[{i}]", prompt, depth + 1, root)
            for i in range(count)
        ]
    if kind in ("integer", "number"):
        return _number(schema, pick, kind == "integer")
    if kind == "boolean":
        return bool(pick % 2)
    if kind == "null":
        return None
    return _string(schema, pick, prompt)


def reply_text(endpoint: str, body: dict[str, Any]) -> str:
    """The deterministic assistant reply for a request body.

    With a ``json_schema`` response format the reply is JSON that fits the schema (enum
    values picked by a hash of the request), with ``json_object`` a small JSON object, so
    code parsing structured output can be exercised offline.
    """
    digest = stable_hex(json.dumps(body, sort_keys=True), length=8)
    prompt = " ".join(_last_user_text(endpoint, body).split())[:80]
    fmt = _requested_format(body)
    if fmt and fmt.get("type") == "json_schema":
        nested = fmt.get("json_schema")  # chat nests the schema; Responses does not
        spec: dict[str, Any] = nested if isinstance(nested, dict) else fmt
        return json.dumps(_from_schema(spec.get("schema"), digest, prompt))
    if fmt and fmt.get("type") == "json_object":
        return json.dumps({"reply": f"Emulated reply {digest}", "prompt": prompt})
    return f"Emulated reply {digest} to: {prompt}"


def _output_limit(body: dict[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = body.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _reply_and_tokens(endpoint: str, body: dict[str, Any]) -> tuple[str, int, str]:
    text = reply_text(endpoint, body)
    tokens = count_tokens(text)
    limit = _output_limit(body)
    if limit is not None and tokens > limit:
        return text[: limit * 4], limit, "length"
    return text, tokens, "stop"


def embedding_vector(text: str, model: str, dimensions: int | None) -> list[float]:
    """A unit-length vector derived from a hash of (model, text): same input, same vector."""
    dims = dimensions or _EMBEDDING_DIMS.get(model, _DEFAULT_EMBEDDING_DIMS)
    raw = hashlib.shake_256(f"{model}\x00{text}".encode()).digest(2 * dims)
    ints = struct.unpack(f"<{dims}h", raw)
    norm = math.sqrt(sum(i * i for i in ints)) or 1.0
    return [round(i / norm, 8) for i in ints]


def _count(body: dict[str, Any]) -> int:
    n = body.get("n")
    return n if isinstance(n, int) and n > 0 else 1


REFUSE_TRIGGER = "emulator-refuse"
REFUSAL_TEXT = "I'm sorry, I can't help with that request (emulated refusal)."


def _refuses(endpoint: str, body: dict[str, Any]) -> bool:
    return REFUSE_TRIGGER in _last_user_text(endpoint, body).lower()


def _forced_tool(body: dict[str, Any]) -> tuple[str, Any] | None:
    """(name, parameters schema) of the function ``tool_choice`` forces, if it forces one.
    Chat nests a function under ``function``; the Responses API does not."""
    tools = [
        t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("type") == "function"
    ]
    specs: list[dict[str, Any]] = []
    for tool in tools:
        nested = tool.get("function")
        specs.append(nested if isinstance(nested, dict) else tool)
    choice = body.get("tool_choice")
    if choice == "required" and specs:
        return str(specs[0].get("name")), specs[0].get("parameters")
    if isinstance(choice, dict) and choice.get("type") == "function":
        nested = choice.get("function")
        named = nested if isinstance(nested, dict) else choice
        for spec in specs:
            if spec.get("name") == named.get("name"):
                return str(spec.get("name")), spec.get("parameters")
    return None


def _tool_arguments(endpoint: str, body: dict[str, Any], parameters: Any) -> str:
    digest = stable_hex(json.dumps(body, sort_keys=True), length=8)
    prompt = " ".join(_last_user_text(endpoint, body).split())[:80]
    return json.dumps(_from_schema(parameters or {"type": "object"}, digest, prompt))


def _chat(body: dict[str, Any], model: str, created: int, key: str) -> dict[str, Any]:
    endpoint = "/v1/chat/completions"
    text, out_tokens, finish = _reply_and_tokens(endpoint, body)
    n = _count(body)
    in_tokens = estimate_input_tokens(endpoint, body)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text,
        "refusal": None,
        "annotations": [],
    }
    forced = _forced_tool(body)
    if forced is not None:
        arguments = _tool_arguments(endpoint, body, forced[1])
        message["content"] = None
        message["tool_calls"] = [
            {
                "id": "call_" + stable_hex("call", key, length=24),
                "type": "function",
                "function": {"name": forced[0], "arguments": arguments},
            }
        ]
        out_tokens, finish = count_tokens(arguments), "tool_calls"
    elif _refuses(endpoint, body):
        message["content"], message["refusal"] = None, REFUSAL_TEXT
        out_tokens, finish = count_tokens(REFUSAL_TEXT), "stop"
    return {
        "id": "chatcmpl-" + stable_hex("chat", key, length=29),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": i,
                "message": dict(message),
                "logprobs": None,
                "finish_reason": finish,
            }
            for i in range(n)
        ],
        "usage": {
            "prompt_tokens": in_tokens,
            "completion_tokens": out_tokens * n,
            "total_tokens": in_tokens + out_tokens * n,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_emulator",
    }


def _responses(body: dict[str, Any], model: str, created: int, key: str) -> dict[str, Any]:
    endpoint = "/v1/responses"
    text, out_tokens, finish = _reply_and_tokens(endpoint, body)
    in_tokens = estimate_input_tokens(endpoint, body)
    content: dict[str, Any] = {
        "type": "output_text",
        "text": text,
        "annotations": [],
        "logprobs": [],
    }
    output: dict[str, Any] = {
        "type": "message",
        "id": "msg_" + stable_hex("msg", key, length=48),
        "status": "completed" if finish == "stop" else "incomplete",
        "role": "assistant",
        "content": [content],
    }
    forced = _forced_tool(body)
    if forced is not None:
        arguments = _tool_arguments(endpoint, body, forced[1])
        output = {
            "type": "function_call",
            "id": "fc_" + stable_hex("fc", key, length=48),
            "call_id": "call_" + stable_hex("call", key, length=24),
            "name": forced[0],
            "arguments": arguments,
            "status": "completed",
        }
        out_tokens, finish = count_tokens(arguments), "stop"
    elif _refuses(endpoint, body):
        output["content"] = [{"type": "refusal", "refusal": REFUSAL_TEXT}]
        out_tokens, finish = count_tokens(REFUSAL_TEXT), "stop"
    requested = body.get("text")
    requested_text: dict[str, Any] = requested if isinstance(requested, dict) else {}
    return {
        "id": "resp_" + stable_hex("resp", key, length=48),
        "object": "response",
        "created_at": created,
        "status": "completed" if finish == "stop" else "incomplete",
        "background": False,
        "error": None,
        "incomplete_details": None if finish == "stop" else {"reason": "max_output_tokens"},
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": model,
        "output": [output],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": True,
        "temperature": body.get("temperature", 1.0),
        "text": {"format": {"type": "text"}, "verbosity": "medium", **requested_text},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": {
            "input_tokens": in_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": out_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": in_tokens + out_tokens,
        },
        "user": None,
        "metadata": body.get("metadata") or {},
    }


def _embeddings(body: dict[str, Any], model: str) -> dict[str, Any]:
    inp = body.get("input")
    inputs: list[Any] = (
        inp if isinstance(inp, list) and inp and not isinstance(inp[0], int) else [inp]
    )
    dims = body.get("dimensions") if isinstance(body.get("dimensions"), int) else None
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    tokens = 0
    for index, item in enumerate(inputs):
        text = item if isinstance(item, str) else json.dumps(item)
        tokens += len(item) if isinstance(item, list) else count_tokens(text)
        vector = embedding_vector(text, model, dims)
        embedding: Any = (
            base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            if as_base64
            else vector
        )
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _completions(body: dict[str, Any], model: str, created: int, key: str) -> dict[str, Any]:
    text, out_tokens, finish = _reply_and_tokens("/v1/completions", body)
    in_tokens = estimate_input_tokens("/v1/completions", body)
    return {
        "id": "cmpl-" + stable_hex("cmpl", key, length=29),
        "object": "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_emulator",
        "choices": [
            {"text": text, "index": i, "logprobs": None, "finish_reason": finish}
            for i in range(_count(body))
        ],
        "usage": {
            "prompt_tokens": in_tokens,
            "completion_tokens": out_tokens * _count(body),
            "total_tokens": in_tokens + out_tokens * _count(body),
        },
    }


def _moderations(body: dict[str, Any], model: str, key: str) -> dict[str, Any]:
    inp = body.get("input")
    inputs = inp if isinstance(inp, list) else [inp]
    results = []
    for item in inputs:
        text = " ".join(_strings(item)).lower()
        # Deterministic and documented: text containing "emulator-flag" is flagged as violence.
        flagged = "emulator-flag" in text
        kind = ["image"] if isinstance(item, dict) and item.get("type") == "image_url" else ["text"]
        results.append(
            {
                "flagged": flagged,
                "categories": {c: flagged and c == "violence" for c in _MODERATION_CATEGORIES},
                "category_scores": {
                    c: (0.97 if flagged and c == "violence" else 0.0001)
                    for c in _MODERATION_CATEGORIES
                },
                "category_applied_input_types": dict.fromkeys(_MODERATION_CATEGORIES, kind),
            }
        )
    return {"id": "modr-" + stable_hex("modr", key, length=32), "model": model, "results": results}


def _images(body: dict[str, Any], created: int, key: str) -> dict[str, Any]:
    n = _count(body)
    in_tokens = estimate_input_tokens("/v1/images/generations", body)
    return {
        "created": created,
        "data": [
            {
                "url": f"https://files.emulator.invalid/images/{stable_hex('img', key, str(i), length=16)}.png"
            }
            if body.get("response_format") == "url"
            else {"b64_json": _PNG_1X1, "revised_prompt": body.get("prompt")}
            for i in range(n)
        ],
        "usage": {
            "input_tokens": in_tokens,
            "input_tokens_details": {"text_tokens": in_tokens, "image_tokens": 0},
            "output_tokens": 272 * n,
            "total_tokens": in_tokens + 272 * n,
        },
    }


def _videos(body: dict[str, Any], model: str, created: int, key: str) -> dict[str, Any]:
    return {
        "id": "video_" + stable_hex("video", key, length=32),
        "object": "video",
        "created_at": created,
        "completed_at": created,
        "expires_at": created + 86400,
        "status": "completed",
        "model": model,
        "progress": 100,
        "prompt": body.get("prompt"),
        "seconds": str(body.get("seconds", "4")),
        "size": body.get("size", "720x1280"),
        "remixed_from_video_id": None,
        "error": None,
    }


def response_body(
    endpoint: str, body: dict[str, Any], model: str, created: int, key: str
) -> dict[str, Any]:
    """The synchronous response body ``endpoint`` would return for ``body``.

    ``key`` (batch id + custom_id) makes generated object ids unique yet reproducible.
    """
    if endpoint == "/v1/chat/completions":
        return _chat(body, model, created, key)
    if endpoint == "/v1/responses":
        return _responses(body, model, created, key)
    if endpoint == "/v1/embeddings":
        return _embeddings(body, model)
    if endpoint == "/v1/completions":
        return _completions(body, model, created, key)
    if endpoint == "/v1/moderations":
        return _moderations(body, model, key)
    if endpoint.startswith("/v1/images/"):
        return _images(body, created, key)
    return _videos(body, model, created, key)


def usage_of(endpoint: str, body: dict[str, Any]) -> tuple[int, int, int]:
    """(input, output, reasoning) tokens of a generated response body, for batch ``usage``."""
    usage = body.get("usage") or {}
    if "prompt_tokens" in usage:
        return usage["prompt_tokens"], usage.get("completion_tokens", 0), 0
    if "input_tokens" in usage:
        details = usage.get("output_tokens_details") or {}
        return usage["input_tokens"], usage["output_tokens"], details.get("reasoning_tokens", 0)
    return 0, 0, 0
