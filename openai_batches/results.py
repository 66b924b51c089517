"""Typed access to a request's result, the same way for every endpoint the Batch API takes.

Each endpoint hides its answer in a different place (``choices[0].message.content`` for chat
completions, ``output[*].content[*].text`` for the Responses API, ``data[*].embedding`` for
embeddings ...). :class:`Result` reads the stored row once and offers the answer itself, so a
receiver, the admin, the API and the export never touch the wire format:

============================  ==================================================================
``result.ok``                 the request ran, succeeded, was not refused, and (with a
                              structured output) parsed and validated
``result.text``               chat: the first choice's message; responses: the output text of
                              every message item joined; completions: the first choice's text
``result.texts``              the text of every choice (``n`` > 1)
``result.refusal``            the model's refusal, when it refused
``result.finish_reason``      ``stop``, ``length``, ``tool_calls`` or ``content_filter`` (the
                              Responses API's statuses mapped to chat's words)
``result.truncated``          the answer stopped at the output token limit
``result.tool_calls``         :class:`ToolCall` list (name, arguments, ``.json()``)
``result.embedding(s)``       the first / every vector (base64 answers decoded)
``result.flagged``            any moderation input flagged; ``result.categories`` the flagged
                              category names; ``result.moderations`` one entry per input
``result.images``             :class:`Image` list (``b64_json`` or ``url``, ``.bytes()``)
``result.usage``              :class:`Usage` (input, cached, output, reasoning, total tokens)
``result.code``/``reason``    for anything not ``ok``: a short code and a one-line reason
``result.parsed``             the structured output as an instance of the item's Pydantic
                              model (see :mod:`openai_batches.structured`), or None
``result.raw``                the endpoint's body exactly as stored
============================  ==================================================================

Examples, one per endpoint (``item`` is a :class:`~openai_batches.models.RequestItem`)::

    # /v1/chat/completions
    r = item.result
    r.text, r.finish_reason             # "Paris.", "stop"
    r.tool_calls[0].json()              # with tools: {"city": "Paris"}
    r.texts                             # with n=3: ["Paris.", "Paris!", "It is Paris."]
    # /v1/responses
    r.text                              # output_text of every message item, joined
    r.refusal                           # a refusal content part, when the model refused
    # /v1/completions
    r.text, r.truncated                 # " upon a time", True when cut at max_tokens
    # /v1/embeddings
    r.embeddings                        # [[0.01, ...], [0.02, ...]] one per input
    # /v1/moderations
    r.flagged, r.categories             # True, ["violence"]
    # /v1/images/generations and /v1/images/edits
    r.images[0].bytes()                 # the PNG (or r.images[0].url)
    # any endpoint
    r.usage.input_tokens                # 42
    r.ok, r.reason                      # False, "invalid_prompt: Invalid prompt."
    r.parsed.sentiment                  # a structured output: "positive"

Failure codes: the provider's error ``code`` (or ``type``) of a 4xx/5xx body or of an error
object of a request that never ran (``batch_expired``, ``batch_cancelled``, ...), this app's own
``missing_result`` / ``batch_failed``, and for answers: ``refusal``, ``parse_failed``.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .models import RequestItem

#: Codes of answers that arrived but are not usable.
REFUSAL = "refusal"
PARSE_FAILED = "parse_failed"

# The Responses API says why a response is incomplete; chat's vocabulary for the same.
_INCOMPLETE_REASONS = {"max_output_tokens": "length", "content_filter": "content_filter"}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _int(value: Any) -> int:
    """A token count or index as stored; anything that is not a number counts as 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return int(value) if value == value and abs(value) != float("inf") else 0


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def one_line(text: Any, limit: int = 500) -> str:
    """``text`` on one line, whitespace collapsed, at most ``limit`` characters."""
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


@dataclass(frozen=True)
class Usage:
    """Tokens one request used, whatever the endpoint called them."""

    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @classmethod
    def of(cls, body: Any) -> Usage:
        usage = _map(_map(body).get("usage"))
        if not usage:
            return cls()
        inp = usage.get("input_tokens", usage.get("prompt_tokens"))
        out = usage.get("output_tokens", usage.get("completion_tokens"))
        ind = _map(usage.get("input_tokens_details") or usage.get("prompt_tokens_details"))
        outd = _map(usage.get("output_tokens_details") or usage.get("completion_tokens_details"))
        return cls(
            input_tokens=_int(inp),
            cached_tokens=_int(ind.get("cached_tokens")),
            output_tokens=_int(out),
            reasoning_tokens=_int(outd.get("reasoning_tokens")),
        )


@dataclass(frozen=True)
class ToolCall:
    """A function (or custom tool) call the model asked for."""

    id: str
    name: str
    arguments: str
    type: str = "function"

    def json(self) -> Any:
        """The arguments decoded; raises ``ValueError`` if the model wrote invalid JSON."""
        return json.loads(self.arguments) if self.arguments else {}


@dataclass(frozen=True)
class Choice:
    """One of the ``n`` answers of a chat completion or completion."""

    index: int
    text: str | None
    refusal: str | None = None
    finish_reason: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)


@dataclass(frozen=True)
class Image:
    """A generated or edited image: base64 data or a URL (valid for an hour at OpenAI)."""

    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None

    def bytes(self) -> bytes:
        if self.b64_json is None:
            raise ValueError("this image was returned as a URL; fetch it from image.url")
        return base64.b64decode(self.b64_json)


@dataclass(frozen=True)
class Moderation:
    """The verdict on one moderation input."""

    flagged: bool
    categories: list[str]
    scores: dict[str, float]


def _tool_calls_chat(message: Mapping[str, Any]) -> list[ToolCall]:
    calls = []
    for call in _list(message.get("tool_calls")):
        if not isinstance(call, Mapping):
            continue
        kind = str(call.get("type") or "function")
        spec = call.get(kind)
        if not isinstance(spec, Mapping):
            spec = {}
        arguments = spec.get("arguments", spec.get("input"))
        if not isinstance(arguments, str):
            arguments = "" if arguments is None else json.dumps(arguments)
        calls.append(
            ToolCall(str(call.get("id") or ""), str(spec.get("name") or ""), str(arguments), kind)
        )
    return calls


def _decode_vector(value: Any) -> list[float]:
    """A vector as stored: a list of numbers, or base64 of little-endian float32
    (``encoding_format=base64``). Anything else is no vector (an empty list)."""
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except ValueError:
            return []
        return list(struct.unpack(f"<{len(raw) // 4}f", raw[: len(raw) // 4 * 4]))
    values = _list(value)
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return []
    return [float(v) for v in values]


class Result:
    """The answer of one request, read from what is stored on its item.

    Build it with :meth:`from_item` (or ``item.result``), or from the stored values directly
    (what the export does without loading model instances). Everything is computed on first
    access and cached; nothing here does I/O except loading the structured output's model
    class and, when ``store`` is given, saving a parse done on first access.
    """

    def __init__(
        self,
        endpoint: str,
        state: str,
        status_code: int | None = None,
        response: Any = None,
        error: Any = None,
        *,
        schema: str = "",
        parsed_json: Any = None,
        parse_error: str = "",
        store: Callable[[Any, str], None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.state = state
        self.status_code = status_code
        self.raw = response
        self.error_object = error
        self.schema = schema
        self._parsed_json = parsed_json
        self._parse_error = parse_error
        self._store = store

    @classmethod
    def from_item(cls, item: RequestItem, *, store: bool = True) -> Result:
        """The item's result; with ``store`` a structured output parsed here is saved on it."""

        def save(parsed: Any, error: str) -> None:
            item.parsed, item.parse_error = parsed, error
            if item.pk:
                type(item).objects.filter(pk=item.pk).update(parsed=parsed, parse_error=error)

        return cls(
            item.url,
            item.state,
            item.status_code,
            item.response,
            item.error,
            schema=item.output_schema_path,
            parsed_json=item.parsed,
            parse_error=item.parse_error,
            store=save if store else None,
        )

    def __repr__(self) -> str:
        return f"<Result {self.endpoint} {self.state} {self.summary()!r}>"

    # -- the request itself ------------------------------------------------------------

    @property
    def succeeded(self) -> bool:
        """The provider ran the request and answered 2xx (the item's ``succeeded`` state)."""
        return self.state == "succeeded"

    @property
    def ok(self) -> bool:
        """Succeeded, not refused, and with a structured output, parsed and valid."""
        return self.succeeded and not self.code

    @property
    def body(self) -> Mapping[str, Any]:
        return self.raw if isinstance(self.raw, Mapping) and self.succeeded else {}

    @cached_property
    def usage(self) -> Usage:
        return Usage.of(self.body)

    # -- text endpoints ----------------------------------------------------------------

    @cached_property
    def choices(self) -> list[Choice]:
        """Chat completions' and completions' choices; the Responses API as one choice."""
        body = self.body
        if self.endpoint == "/v1/responses":
            if not body:
                return []
            return [
                Choice(
                    0,
                    self._responses_text(),
                    self._responses_refusal(),
                    self._responses_finish(),
                    self._responses_tools(),
                )
            ]
        out = []
        for i, choice in enumerate(_list(body.get("choices"))):
            if not isinstance(choice, Mapping):
                continue
            index = _int(choice.get("index", i))
            finish = _text(choice.get("finish_reason"))
            message = choice.get("message")
            if isinstance(message, Mapping):
                content = message.get("content")
                if isinstance(content, list):  # content parts (audio/text models)
                    content = "".join(
                        str(p.get("text") or "") for p in content if isinstance(p, Mapping)
                    )
                content = _text(content)
                out.append(
                    Choice(
                        index,
                        content,
                        _text(message.get("refusal")) or None,
                        finish,
                        _tool_calls_chat(message),
                    )
                )
            else:
                out.append(Choice(index, _text(choice.get("text")), None, finish))
        return out

    def _responses_items(self, kind: str) -> list[Mapping[str, Any]]:
        return [
            o
            for o in _list(self.body.get("output"))
            if isinstance(o, Mapping) and o.get("type") == kind
        ]

    def _responses_parts(self, kind: str) -> list[Mapping[str, Any]]:
        return [
            part
            for message in self._responses_items("message")
            for part in _list(message.get("content"))
            if isinstance(part, Mapping) and part.get("type") == kind
        ]

    def _responses_text(self) -> str | None:
        parts = self._responses_parts("output_text")
        return "".join(str(p.get("text") or "") for p in parts) if parts else None

    def _responses_refusal(self) -> str | None:
        parts = self._responses_parts("refusal")
        return "".join(str(p.get("refusal") or "") for p in parts) if parts else None

    def _responses_tools(self) -> list[ToolCall]:
        calls = []
        for item in _list(self.body.get("output")):
            if not isinstance(item, Mapping):
                continue
            if item.get("type") == "function_call":
                calls.append(
                    ToolCall(
                        str(item.get("call_id") or item.get("id") or ""),
                        str(item.get("name") or ""),
                        str(item.get("arguments") or ""),
                    )
                )
            elif item.get("type") == "custom_tool_call":
                calls.append(
                    ToolCall(
                        str(item.get("call_id") or item.get("id") or ""),
                        str(item.get("name") or ""),
                        str(item.get("input") or ""),
                        "custom",
                    )
                )
        return calls

    def _responses_finish(self) -> str | None:
        status = self.body.get("status")
        if status == "incomplete":
            reason = _map(self.body.get("incomplete_details")).get("reason")
            return _INCOMPLETE_REASONS.get(str(reason), str(reason or "incomplete"))
        if status == "completed":
            return "tool_calls" if self._responses_tools() else "stop"
        return str(status) if status else None

    @property
    def text(self) -> str | None:
        """The text answer (None for endpoints without one, or when the model gave none)."""
        return self.choices[0].text if self.choices else None

    @property
    def texts(self) -> list[str | None]:
        return [c.text for c in self.choices]

    @property
    def refusal(self) -> str | None:
        return self.choices[0].refusal if self.choices else None

    @property
    def finish_reason(self) -> str | None:
        return self.choices[0].finish_reason if self.choices else None

    @property
    def truncated(self) -> bool:
        """The answer was cut at the output token limit (``length``)."""
        return self.finish_reason == "length"

    @property
    def tool_calls(self) -> list[ToolCall]:
        return self.choices[0].tool_calls if self.choices else []

    def json(self) -> Any:
        """The text answer decoded as JSON (JSON mode, or a schema without a Pydantic model)."""
        if self.text is None:
            raise ValueError(f"the result has no text answer ({self.reason or self.endpoint})")
        return json.loads(self.text)

    # -- embeddings, moderations, images -----------------------------------------------

    @cached_property
    def embeddings(self) -> list[list[float]]:
        """One vector per input, in input order."""
        if self.endpoint != "/v1/embeddings":
            return []
        data = [d for d in _list(self.body.get("data")) if isinstance(d, Mapping)]
        data.sort(key=lambda d: _int(d.get("index")))
        return [_decode_vector(d.get("embedding")) for d in data]

    @property
    def embedding(self) -> list[float] | None:
        return self.embeddings[0] if self.embeddings else None

    @cached_property
    def moderations(self) -> list[Moderation]:
        if self.endpoint != "/v1/moderations":
            return []
        out = []
        for r in _list(self.body.get("results")):
            if not isinstance(r, Mapping):
                continue
            cats = _map(r.get("categories"))
            out.append(
                Moderation(
                    flagged=bool(r.get("flagged")),
                    categories=[name for name, on in cats.items() if on],
                    scores={
                        k: float(v)
                        for k, v in _map(r.get("category_scores")).items()
                        if isinstance(v, int | float) and not isinstance(v, bool)
                    },
                )
            )
        return out

    @property
    def flagged(self) -> bool:
        return any(m.flagged for m in self.moderations)

    @property
    def categories(self) -> list[str]:
        """Every category flagged on any input, once each, in the order first seen."""
        return list(dict.fromkeys(c for m in self.moderations for c in m.categories))

    @cached_property
    def images(self) -> list[Image]:
        if not self.endpoint.startswith("/v1/images/"):
            return []
        return [
            Image(_text(d.get("b64_json")), _text(d.get("url")), _text(d.get("revised_prompt")))
            for d in _list(self.body.get("data"))
            if isinstance(d, Mapping)
        ]

    # -- structured outputs ------------------------------------------------------------

    def _parse(self) -> tuple[Any, str]:
        """(parsed JSON, error) for the structured output, computed once and stored."""
        if self._parsed_json is not None or self._parse_error or not self.schema:
            return self._parsed_json, self._parse_error
        if not self.succeeded or (self.refusal and not self.text):
            return None, ""  # nothing to parse; ``code`` says why
        from .exceptions import ConfigurationError
        from .structured import parse_text

        try:
            parsed, error = parse_text(self.schema, self.text, truncated=self.truncated)
        except ConfigurationError as err:
            # The deployment's fault, not the answer's: reported, not stored, so the item
            # parses once the model is importable again.
            self._parse_error = str(err)
            return None, self._parse_error
        self._parsed_json, self._parse_error = parsed, error
        if self._store is not None:
            self._store(parsed, error)
        return parsed, error

    @property
    def parsed_json(self) -> Any:
        """The validated structured output as JSON (what the item stores), or None."""
        return self._parse()[0]

    @property
    def parse_error(self) -> str:
        """Why the structured output did not validate ("" when it did, or there is none)."""
        return self._parse()[1]

    @cached_property
    def parsed(self) -> Any:
        """The structured output as an instance of the item's Pydantic model, or None."""
        data = self.parsed_json
        if data is None:
            return None
        from .exceptions import ConfigurationError
        from .structured import load_model

        try:
            return load_model(self.schema).model_validate(data)
        except ConfigurationError as err:
            self._parse_error = str(err)
            return None

    # -- failures ----------------------------------------------------------------------

    @cached_property
    def _failure(self) -> tuple[str, str]:
        if self.state in ("pending", "submitted"):
            return "", ""
        if not self.succeeded:
            source = self.error_object
            if not isinstance(source, Mapping) and isinstance(self.raw, Mapping):
                source = self.raw.get("error")
            if isinstance(source, Mapping):
                code = str(source.get("code") or source.get("type") or "")
                message = one_line(source.get("message"))
            else:
                code, message = "", ""
            if not code:
                code = f"http_{self.status_code}" if self.status_code else str(self.state)
            return code, message or f"the request {self.state} without an error message"
        if self.refusal and not self.text:
            return REFUSAL, one_line(self.refusal)
        if self.parse_error:
            return PARSE_FAILED, self.parse_error
        return "", ""

    @property
    def code(self) -> str:
        """A short failure code, or "" for a usable answer (see the module docstring)."""
        return self._failure[0]

    @property
    def message(self) -> str:
        return self._failure[1]

    @property
    def reason(self) -> str:
        """One line saying why the result is not usable ("" when it is)."""
        code, message = self._failure
        return f"{code}: {message}" if code else ""

    # -- one short line, for lists --------------------------------------------------------

    def summary(self, limit: int = 80) -> str:
        """The answer in a few words: text, refusal, vector size, flags, images, or reason."""
        if self.state in ("pending", "submitted"):
            return ""
        if self.code and self.code != PARSE_FAILED:
            return one_line(self.reason, limit)
        if isinstance(self.parsed_json, dict):
            text = ", ".join(f"{k}: {v}" for k, v in self.parsed_json.items())
        elif self.tool_calls and not self.text:
            text = ", ".join(f"{c.name}({c.arguments})" for c in self.tool_calls)
        elif self.endpoint == "/v1/embeddings":
            dims = len(self.embedding or [])
            text = f"{len(self.embeddings)} vector(s) of {dims} dimensions"
        elif self.endpoint == "/v1/moderations":
            text = f"flagged: {', '.join(self.categories)}" if self.flagged else "not flagged"
        elif self.images:
            text = f"{len(self.images)} image(s)"
        else:
            text = self.text or ""
        if self.code == PARSE_FAILED:
            text = f"[{self.reason}] {text}"
        return one_line(text, limit)


def token_cost(prices: Mapping[str, Any] | None, usage: Usage) -> Decimal | None:
    """Cost in USD of ``usage`` at ``prices`` (per 1M tokens: input, cached_input, output).

    ``None`` when there are no prices, or when the entry is malformed (``manage.py check``
    reports it as openai_batches.E008): a cost column shows "unknown" rather than failing.
    """
    from .checks import price_problems

    if not prices or price_problems({"model": prices}):
        return None
    uncached = max(usage.input_tokens - usage.cached_tokens, 0)
    cost = (
        Decimal(uncached) * Decimal(str(prices.get("input", 0)))
        + Decimal(usage.cached_tokens)
        * Decimal(str(prices.get("cached_input", prices.get("input", 0))))
        + Decimal(usage.output_tokens) * Decimal(str(prices.get("output", 0)))
    ) / Decimal(1_000_000)
    return cost.quantize(Decimal("0.000001"))
