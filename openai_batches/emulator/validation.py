"""The per-request body rules of each batch endpoint, as the real API applies them when a
request runs.

A line that passes the file-level checks (JSON, ``custom_id``, ``method``, ``url``, one
model) can still be a request the endpoint refuses: no ``messages``, ``stream: true``, a
``temperature`` given as a string or above 2. The real Batch API does not fail the batch
for those: the request runs and gets a 400, written to the error file as
``response.status_code`` 400 with an ``invalid_request_error`` body naming the ``param``
(``shared/reference/openai-batch-api.md`` §5: "The request ran and the endpoint returned
non-2xx. ``response`` is filled in, with for example ``status_code: 400`` and ``body:
{"error": {"message", "type", "param", "code"}}`` ... and ``error`` is **null**").
:func:`check_body` gives that failure (or None) so the emulator does the same and a test
that passes on it does not fail in production.

Strict only where the reference is: every rule below quotes its source, the OpenAPI spec's
request schema of the endpoint (``shared/reference/openai-openapi.yaml``, "SPEC") or the
Batch API reference (``openai-batch-api.md``). Where the spec is silent the rule accepts:
a parameter it does not list is refused only by a schema it closes with
``additionalProperties: false`` (embeddings) and by the two endpoints whose live answers to an
unknown parameter are on record (chat completions and Responses, sources at their rules);
a Responses body needs no ``input`` (the
spec's ``CreateResponse`` requires nothing); any optional parameter may be ``null``;
parameters whose type is a union of shapes (such as ``tool_choice``) are not
type-checked; enum values are not checked (the spec's lists trail the live API's). The
emulator's own ``emulator`` marker (scripted failures, stalls) is accepted everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
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

# The parameters of each endpoint and their kinds: the ``properties`` of its SPEC request
# schema (CreateChatCompletionRequest, CreateResponse, CreateEmbeddingRequest,
# CreateCompletionRequest, CreateModerationRequest, CreateImageRequest,
# EditImageBodyJsonParam + CreateImageEditRequest, CreateVideoJsonBody), checked name by name
# against ``openai-openapi.yaml`` (commit f85dbe2). A kind is the spec's ``type`` (or the
# ``type`` of each ``anyOf`` branch), ``null`` left out.
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
    """One endpoint's body: its parameters and kinds, what it requires, and its bounds."""

    params: Mapping[str, Kinds]
    #: Each entry is a parameter the body must have (one of several, for a tuple).
    required: tuple[str | tuple[str, ...], ...]
    #: The spec closes the schema (``additionalProperties: false``): a parameter it does
    #: not list is refused. Open schemas let it through (the spec does not say otherwise).
    closed: bool = False
    #: ``minimum`` / ``maximum`` of numeric parameters (None: no bound that way).
    bounds: Mapping[str, tuple[float | None, float | None]] = field(default_factory=dict)
    #: ``minItems`` / ``maxItems`` of parameters given as arrays.
    lengths: Mapping[str, tuple[int | None, int | None]] = field(default_factory=dict)


# SPEC CreateChatCompletionRequest (through CreateModelResponseProperties): "temperature:
# minimum: 0, maximum: 2", "top_p: minimum: 0, maximum: 1", "top_logprobs: minimum: 0,
# maximum: 20", "frequency_penalty / presence_penalty: minimum: -2, maximum: 2", "n:
# minimum: 1, maximum: 128"; "messages: minItems: 1"; "stop" as an array "minItems: 1,
# maxItems: 4"; "functions: minItems: 1, maxItems: 128".
_SAMPLING = {"temperature": (0, 2), "top_p": (0, 1), "top_logprobs": (0, 20)}
_PENALTIES = {"frequency_penalty": (-2, 2), "presence_penalty": (-2, 2)}
_CHAT_BOUNDS: dict[str, tuple[float | None, float | None]] = {
    **_SAMPLING,
    **_PENALTIES,
    "n": (1, 128),
}
_CHAT_LENGTHS: dict[str, tuple[int | None, int | None]] = {
    "messages": (1, None),
    "stop": (1, 4),
    "functions": (1, 128),
}

RULES: dict[str, Rules] = {
    # SPEC CreateChatCompletionRequest "required: [model, messages]" (``model`` is checked
    # per file, with the one-model rule, by the runner).
    # Closed although the spec does not say so: the live endpoint answers a parameter it
    # does not know with 400 ``{"message": "Unknown parameter: 'reasoning'.", "type":
    # "invalid_request_error", "param": "reasoning", "code": "unknown_parameter"}`` (a
    # ``POST https://api.openai.com/v1/chat/completions`` quoted in
    # github.com/teabranch/open-responses-server/issues/41; older answers said
    # "Unrecognized request argument supplied: reasoning_effort", coroot/coroot#698). A
    # test that passes here with a stray parameter would fail in production.
    "/v1/chat/completions": Rules(
        _CHAT, ("messages",), closed=True, bounds=_CHAT_BOUNDS, lengths=_CHAT_LENGTHS
    ),
    # SPEC CreateResponse has no ``required`` list: a body without ``input`` (one that
    # takes it from a stored prompt or a conversation) is not refused here.
    # "max_output_tokens: minimum: 16"; sampling bounds as chat's. Closed like chat: the
    # live endpoint answers "Unknown parameter: 'input[4].action.query'." with code
    # ``unknown_parameter`` (an ``openai.BadRequestError`` from ``responses.create`` quoted
    # in github.com/pydantic/pydantic-ai/issues/3653); only top-level names are checked.
    "/v1/responses": Rules(
        _RESPONSES, (), closed=True, bounds={**_SAMPLING, "max_output_tokens": (16, None)}
    ),
    # SPEC CreateEmbeddingRequest "additionalProperties: false", "required: [model,
    # input]", "dimensions: minimum: 1", input as an array "minItems: 1, maxItems: 2048".
    # So ``n`` (a chat parameter) is refused here, as the live API refuses it.
    "/v1/embeddings": Rules(
        _EMBEDDINGS,
        ("input",),
        closed=True,
        bounds={"dimensions": (1, None)},
        lengths={"input": (1, 2048)},
    ),
    # SPEC CreateCompletionRequest "required: [model, prompt]"; "best_of: minimum: 0,
    # maximum: 20", "logprobs: minimum: 0, maximum: 5", "max_tokens: minimum: 0", "n:
    # minimum: 1, maximum: 128"; prompt as an array "minItems: 1".
    "/v1/completions": Rules(
        _COMPLETIONS,
        ("prompt",),
        bounds={
            **_CHAT_BOUNDS,
            "best_of": (0, 20),
            "logprobs": (0, 5),
            "max_tokens": (0, None),
        },
        lengths={"prompt": (1, None), "stop": (1, 4)},
    ),
    # SPEC CreateModerationRequest "required: [input]" (``model`` defaults to
    # omni-moderation-latest); openai-batch-api.md §4.2: "every body needs ``input``".
    "/v1/moderations": Rules(_MODERATIONS, ("input",)),
    # SPEC CreateImageRequest "required: [prompt]", "n: minimum: 1, maximum: 10",
    # "partial_images: minimum: 0, maximum: 3".
    "/v1/images/generations": Rules(
        _IMAGES, ("prompt",), bounds={"n": (1, 10), "partial_images": (0, 3)}
    ),
    # SPEC EditImageBodyJsonParam "required: [images, prompt]" (the multipart
    # CreateImageEditRequest: "required: [prompt, image]"), "images: minItems: 1,
    # maxItems: 16".
    "/v1/images/edits": Rules(
        _IMAGE_EDITS,
        ("prompt", ("images", "image")),
        bounds={"n": (1, 10), "partial_images": (0, 3)},
        lengths={"images": (1, 16), "image": (None, 16)},
    ),
    # SPEC CreateVideoJsonBody "required: [prompt]".
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


def _out_of_bounds(
    name: str, value: Any, low: float | None, high: float | None
) -> BodyError | None:
    if kind_of(value) not in ("integer", "number"):
        return None
    word = "integer" if kind_of(value) == "integer" else "decimal"
    shown = f"{value:g}" if isinstance(value, float) else str(value)
    if low is not None and value < low:
        return BodyError(
            f"Invalid '{name}': {word} below minimum value. Expected a value >= {low:g}, but "
            f"got {shown} instead.",
            name,
            f"{word}_below_min_value",
        )
    if high is not None and value > high:
        return BodyError(
            f"Invalid '{name}': {word} above maximum value. Expected a value <= {high:g}, but "
            f"got {shown} instead.",
            name,
            f"{word}_above_max_value",
        )
    return None


def _bad_length(name: str, value: Any, low: int | None, high: int | None) -> BodyError | None:
    if not isinstance(value, list):
        return None
    if low is not None and len(value) < low:
        if not value:
            return BodyError(
                f"Invalid '{name}': empty array. Expected an array with minimum length {low}, "
                "but got an empty array instead.",
                name,
                "empty_array",
            )
        return BodyError(
            f"Invalid '{name}': array too short. Expected an array with minimum length {low}, "
            f"but got an array with length {len(value)} instead.",
            name,
            "array_below_min_length",
        )
    if high is not None and len(value) > high:
        return BodyError(
            f"Invalid '{name}': array too long. Expected an array with maximum length {high}, "
            f"but got an array with length {len(value)} instead.",
            name,
            "array_above_max_length",
        )
    return None


def check_body(endpoint: str, body: Mapping[str, Any]) -> BodyError | None:
    """The first rule of ``endpoint`` that ``body`` breaks, or None when the endpoint takes it.

    Checked in the order the API reports: unknown parameters (closed schemas only),
    missing required ones, types, bounds, then ``stream``.
    """
    rules = RULES.get(endpoint)
    if rules is None:
        return None
    if rules.closed:
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
    for name, (low, high) in rules.bounds.items():
        found = _out_of_bounds(name, body.get(name), low, high)
        if found is not None:
            return found
    for name, (short, long) in rules.lengths.items():
        found = _bad_length(name, body.get(name), short, long)
        if found is not None:
            return found
    # SPEC CreateEmbeddingRequest.input: "cannot be an empty string".
    if endpoint == "/v1/embeddings" and body.get("input") == "":
        return BodyError(
            "Invalid 'input': empty string. Expected a string with minimum length 1, but got "
            "an empty string instead.",
            "input",
            "empty_string",
        )
    # openai-batch-api.md §4.2: "No streaming (FAQ). For ``/v1/moderations`` the worker
    # rejects ``stream=true``".
    if body.get("stream") is True:
        return BodyError(
            "Streaming is not supported in the Batch API: 'stream' must be false or omitted.",
            "stream",
            "invalid_value",
        )
    return None
