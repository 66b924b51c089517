"""The per-request body rules of each batch endpoint, as the real API applies them when a
request runs.

A line that passes the file-level checks (JSON, ``custom_id``, ``method``, ``url``, one
model) can still be a request the endpoint refuses: no ``messages``, a parameter the
endpoint does not know, ``stream: true``, a ``temperature`` given as a string. The real
Batch API does not fail the batch for those: the request runs and gets a 400, written to
the error file as ``response.status_code`` 400 with an ``invalid_request_error`` body naming
the ``param``. :func:`check_body` gives that failure (or None) so the emulator does the
same and a test that passes on it does not fail in production.

The parameter lists come from the OpenAPI spec's request schemas for each endpoint (see
``shared/reference/openai-openapi.yaml``). Where the spec is unsure, the rule accepts: any
optional parameter may be ``null``, and parameters whose type is a union of shapes (such as
``tool_choice``) are not type-checked. The emulator's own ``emulator`` marker (scripted
failures, stalls) is accepted on every endpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: JSON kinds a parameter may take; ``None`` in a table means "any shape".
STRING = ("string",)
INTEGER = ("integer",)
NUMBER = ("number",)
BOOLEAN = ("boolean",)
ARRAY = ("array",)
OBJECT = ("object",)
STRING_OR_ARRAY = ("string", "array")
STRING_OR_OBJECT = ("string", "object")

Kinds = tuple[str, ...] | None

_CHAT: dict[str, Kinds] = {
    "audio": OBJECT,
    "frequency_penalty": NUMBER,
    "function_call": STRING_OR_OBJECT,
    "functions": ARRAY,
    "logit_bias": OBJECT,
    "logprobs": BOOLEAN,
    "max_completion_tokens": INTEGER,
    "max_tokens": INTEGER,
    "messages": ARRAY,
    "metadata": OBJECT,
    "modalities": ARRAY,
    "model": STRING,
    "moderation": None,
    "n": INTEGER,
    "parallel_tool_calls": BOOLEAN,
    "prediction": OBJECT,
    "presence_penalty": NUMBER,
    "prompt_cache_key": STRING,
    "prompt_cache_options": None,
    "prompt_cache_retention": STRING,
    "reasoning_effort": STRING,
    "response_format": OBJECT,
    "safety_identifier": STRING,
    "seed": INTEGER,
    "service_tier": STRING,
    "stop": STRING_OR_ARRAY,
    "store": BOOLEAN,
    "stream": BOOLEAN,
    "stream_options": OBJECT,
    "temperature": NUMBER,
    "tool_choice": STRING_OR_OBJECT,
    "tools": ARRAY,
    "top_logprobs": INTEGER,
    "top_p": NUMBER,
    "user": STRING,
    "verbosity": STRING,
    "web_search_options": OBJECT,
}

_RESPONSES: dict[str, Kinds] = {
    "background": BOOLEAN,
    "context_management": None,
    "conversation": STRING_OR_OBJECT,
    "include": ARRAY,
    "input": STRING_OR_ARRAY,
    "instructions": STRING,
    "max_output_tokens": INTEGER,
    "max_tool_calls": INTEGER,
    "metadata": OBJECT,
    "model": STRING,
    "moderation": None,
    "parallel_tool_calls": BOOLEAN,
    "previous_response_id": STRING,
    "prompt": OBJECT,
    "prompt_cache_key": STRING,
    "prompt_cache_options": None,
    "prompt_cache_retention": STRING,
    "reasoning": OBJECT,
    "safety_identifier": STRING,
    "service_tier": STRING,
    "store": BOOLEAN,
    "stream": BOOLEAN,
    "stream_options": OBJECT,
    "temperature": NUMBER,
    "text": OBJECT,
    "tool_choice": STRING_OR_OBJECT,
    "tools": ARRAY,
    "top_logprobs": INTEGER,
    "top_p": NUMBER,
    "truncation": STRING,
    "user": STRING,
}

_EMBEDDINGS: dict[str, Kinds] = {
    "dimensions": INTEGER,
    "encoding_format": STRING,
    "input": STRING_OR_ARRAY,
    "model": STRING,
    "user": STRING,
}

_COMPLETIONS: dict[str, Kinds] = {
    "best_of": INTEGER,
    "echo": BOOLEAN,
    "frequency_penalty": NUMBER,
    "logit_bias": OBJECT,
    "logprobs": INTEGER,
    "max_tokens": INTEGER,
    "model": STRING,
    "n": INTEGER,
    "presence_penalty": NUMBER,
    "prompt": STRING_OR_ARRAY,
    "seed": INTEGER,
    "stop": STRING_OR_ARRAY,
    "stream": BOOLEAN,
    "stream_options": OBJECT,
    "suffix": STRING,
    "temperature": NUMBER,
    "top_p": NUMBER,
    "user": STRING,
}

_MODERATIONS: dict[str, Kinds] = {"input": STRING_OR_ARRAY, "model": STRING}

_IMAGES: dict[str, Kinds] = {
    "background": STRING,
    "model": STRING,
    "moderation": STRING,
    "n": INTEGER,
    "output_compression": INTEGER,
    "output_format": STRING,
    "partial_images": INTEGER,
    "prompt": STRING,
    "quality": STRING,
    "response_format": STRING,
    "size": STRING,
    "stream": BOOLEAN,
    "style": STRING,
    "user": STRING,
}

# The JSON edit body takes ``images``; the multipart one ``image`` (accepted too: which of
# the two a batch line may use is not documented).
_IMAGE_EDITS: dict[str, Kinds] = {
    **{k: v for k, v in _IMAGES.items() if k != "style"},
    "image": None,
    "images": ARRAY,
    "input_fidelity": STRING,
    "mask": None,
}

_VIDEOS: dict[str, Kinds] = {
    "input_reference": None,
    "model": STRING,
    "prompt": STRING,
    "seconds": None,  # a string enum ("4", "8", "12") in the spec; numbers are not refused
    "size": STRING,
}


@dataclass(frozen=True)
class Rules:
    """One endpoint's body: its parameters and kinds, and what it requires."""

    params: Mapping[str, Kinds]
    #: Each entry is a parameter the body must have (one of several, for a tuple).
    required: tuple[str | tuple[str, ...], ...]


RULES: dict[str, Rules] = {
    "/v1/chat/completions": Rules(_CHAT, ("messages",)),
    # A Responses request may take its input from a stored prompt, an earlier response or
    # a conversation instead; only a body with none of these is missing its input.
    "/v1/responses": Rules(
        _RESPONSES, (("input", "prompt", "previous_response_id", "conversation"),)
    ),
    "/v1/embeddings": Rules(_EMBEDDINGS, ("input",)),
    "/v1/completions": Rules(_COMPLETIONS, ("prompt",)),
    "/v1/moderations": Rules(_MODERATIONS, ("input",)),
    "/v1/images/generations": Rules(_IMAGES, ("prompt",)),
    "/v1/images/edits": Rules(_IMAGE_EDITS, ("prompt",)),
    "/v1/videos": Rules(_VIDEOS, ("prompt",)),
}

#: Keys of the emulator's own, accepted everywhere.
EMULATOR_KEYS = frozenset({"emulator"})

_EXPECTED = {
    "string": "a string",
    "integer": "an integer",
    "number": "a decimal",
    "boolean": "a boolean",
    "array": "an array",
    "object": "an object",
}


@dataclass(frozen=True)
class BodyError:
    """Why the endpoint refuses a body: the 400 answer's ``error`` object."""

    message: str
    param: str
    code: str


def kind_of(value: Any) -> str:
    """The JSON kind of a parsed value, in the API's words."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _fits(value: Any, kinds: tuple[str, ...]) -> bool:
    kind = kind_of(value)
    # An integer is a decimal too (temperature: 1).
    return kind in kinds or (kind == "integer" and "number" in kinds)


def check_body(endpoint: str, body: Mapping[str, Any]) -> BodyError | None:
    """The first rule of ``endpoint`` that ``body`` breaks, or None when the endpoint takes it.

    Checked in the order the API reports: unknown parameters, missing required ones,
    types, then ``stream``.
    """
    rules = RULES.get(endpoint)
    if rules is None:
        return None
    for name in body:
        if name not in rules.params and name not in EMULATOR_KEYS:
            return BodyError(f"Unknown parameter: '{name}'.", name, "unknown_parameter")
    for need in rules.required:
        names = need if isinstance(need, tuple) else (need,)
        if not any(body.get(n) is not None for n in names):
            return BodyError(
                f"Missing required parameter: '{names[0]}'.",
                names[0],
                "missing_required_parameter",
            )
    for name, value in body.items():
        kinds = rules.params.get(name)
        if kinds is None or value is None or _fits(value, kinds):
            continue
        expected = " or ".join(_EXPECTED[k] for k in kinds)
        got = _EXPECTED.get(kind_of(value), "null")
        return BodyError(
            f"Invalid type for '{name}': expected {expected}, but got {got} instead.",
            name,
            "invalid_type",
        )
    messages = body.get("messages")
    if endpoint == "/v1/chat/completions" and messages == []:
        return BodyError(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but "
            "got an empty array instead.",
            "messages",
            "empty_array",
        )
    if body.get("stream") is True:
        return BodyError(
            "Streaming is not supported in the Batch API: 'stream' must be false or omitted.",
            "stream",
            "invalid_value",
        )
    return None
