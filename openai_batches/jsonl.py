"""Streaming JSONL for batch input: validation with the provider's limits, reading, writing.

The same serialization (:func:`dumps_line`) is used to count bytes while validating and to
write the upload, so the 200 MB check measures exactly what is sent. Nothing here holds a
whole file: readers yield one line at a time and writers append one line at a time.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from .exceptions import Problem

MAX_CUSTOM_ID_LENGTH = 255
MAX_METADATA_PAIRS = 16
#: Endpoints whose ``model`` the API fills in when a body leaves it out (the line is
#: valid without one, and counts as this model for the one-model-per-batch rule).
DEFAULT_MODELS = {"/v1/moderations": "omni-moderation-latest"}
#: The metadata key that carries the job's UUID to the provider (to find the batch after a crash).
METADATA_JOB_KEY = "openai_batches_job"
MAX_METADATA_KEY_LENGTH = 64
MAX_METADATA_VALUE_LENGTH = 512
#: A JSON ``\u0000`` escape that is not itself an escaped backslash followed by "u0000".
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
#: Stop collecting after this many problems: enough to fix a file, bounded in memory.
MAX_PROBLEMS = 1000
#: A UTF-16 surrogate code point. Python strings may hold one alone (JSON's ``"\ud800"``
#: escape decodes to it), but it is not valid Unicode: UTF-8 cannot encode it, so neither
#: the database nor the provider's upload could take it.
_SURROGATE = re.compile("[\ud800-\udfff]")
SURROGATE_MESSAGE = (
    "contains a lone surrogate (a \\ud800-\\udfff escape without its pair), "
    "which is not valid Unicode"
)


def printable(text: str) -> str:
    """``text`` with lone surrogates written as ``\\udXXX`` escapes, safe to put in a message."""
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def surrogate_path(value: Any, path: str) -> str | None:
    """The dotted path of the first string (value or key) in ``value`` holding a surrogate.

    Only called once a line has failed to encode, so the walk costs nothing on good input.
    """
    return _first_path(value, path, lambda v: isinstance(v, str) and bool(_SURROGATE.search(v)))


def not_json_path(value: Any, path: str) -> str | None:
    """The dotted path of the first value in ``value`` that JSON cannot carry (a set, bytes,
    a date, NaN or infinity ...), or of the mapping whose key is not a string or a number."""
    return _first_path(value, path, _not_json)


_JSON_SCALARS = (str, int, bool, type(None))


def _not_json(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, Mapping):
        return not all(isinstance(k, (*_JSON_SCALARS, float)) for k in value)
    return not isinstance(value, (*_JSON_SCALARS, list, tuple))


def _first_path(value: Any, path: str, bad: Callable[[Any], bool]) -> str | None:
    if bad(value):
        return path
    if isinstance(value, Mapping):
        for key, child in value.items():
            here = f"{path}.{printable(str(key))}"
            if bad(key):
                return here
            found = _first_path(child, here, bad)
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for i, child in enumerate(value):
            found = _first_path(child, f"{path}.{i}", bad)
            if found is not None:
                return found
    return None


def dumps_line(obj: Mapping[str, Any]) -> str:
    """One compact JSON line without the newline (what goes into the upload).

    NaN and infinity raise ``ValueError``: they are not JSON, and neither the provider nor
    PostgreSQL's jsonb takes them.
    """
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def iter_jsonl(
    stream: IO[bytes] | IO[str] | Iterable[bytes] | Iterable[str],
) -> Iterator[tuple[int, Any, str | None]]:
    """Yield ``(line_number, parsed_object_or_None, error_message_or_None)`` per non-blank line.

    Line numbers are 1-based and count blank lines too, so they match an editor's. Bytes
    that are not UTF-8 are that line's error: replacing them would send the provider text
    that differs from the file.
    """
    for number, raw in enumerate(stream, start=1):
        if isinstance(raw, bytes):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield number, None, f"is not valid UTF-8 (byte {err.start + 1} of the line)"
                continue
        else:
            text = str(raw)
        if not text.strip():
            continue
        try:
            yield number, json.loads(text), None
        except ValueError as err:
            yield number, None, f"not valid JSON ({err})"


def validate_metadata(metadata: Any) -> list[Problem]:
    """Check OpenAI's metadata rules: at most 16 string pairs, keys <= 64, values <= 512."""
    if metadata in (None, {}):
        return []
    if not isinstance(metadata, dict):
        return [Problem(None, "metadata", "must be an object of string keys and values")]
    problems: list[Problem] = []
    if len(metadata) > MAX_METADATA_PAIRS:
        problems.append(
            Problem(
                None,
                "metadata",
                f"has {len(metadata)} pairs; at most {MAX_METADATA_PAIRS} are allowed",
            )
        )
    for key, value in metadata.items():
        name = f"metadata.{printable(key) if isinstance(key, str) else key}"
        if (isinstance(key, str) and _SURROGATE.search(key)) or (
            isinstance(value, str) and _SURROGATE.search(value)
        ):
            problems.append(Problem(None, name, SURROGATE_MESSAGE))
            continue
        if not isinstance(key, str) or len(key) > MAX_METADATA_KEY_LENGTH:
            problems.append(
                Problem(
                    None,
                    name,
                    f"keys must be strings of at most {MAX_METADATA_KEY_LENGTH} characters",
                )
            )
        if isinstance(key, str) and isinstance(value, str) and "\x00" in key + value:
            problems.append(
                Problem(
                    None,
                    name,
                    "contains a NUL character, which databases cannot store",
                )
            )
        if not isinstance(value, str) or len(value) > MAX_METADATA_VALUE_LENGTH:
            problems.append(
                Problem(
                    None,
                    name,
                    f"values must be strings of at most {MAX_METADATA_VALUE_LENGTH} characters",
                )
            )
    return problems


@dataclass
class ItemValidator:
    """Validates request items one at a time, keeping only what cross-item rules need.

    ``existing_ids``/``existing_count``/``existing_bytes`` describe items already in the job,
    so adding in several calls still respects uniqueness and the provider's limits.
    """

    endpoint: str
    model: str = ""
    max_requests: int = 50_000
    max_bytes: int = 200 * 1024 * 1024
    #: The largest one line may be: what one provider batch takes (a job is split into
    #: batches, but one request cannot be).
    max_line_bytes: int | None = None
    existing_count: int = 0
    existing_bytes: int = 0
    #: The job's provider's own rules for one item (``providers.item_checker``): a list
    #: of ``(field, message)``, asked only of an item the app's own rules accept.
    provider_check: Callable[[Mapping[str, Any]], list[tuple[str, str]]] | None = None
    seen_ids: set[str] = field(default_factory=set)
    problems: list[Problem] = field(default_factory=list)
    count: int = 0
    nbytes: int = 0
    #: Size of the last valid line, newline included, and its body as JSON text.
    last_nbytes: int = 0
    last_body_text: str = ""
    truncated: bool = False
    _limit_reported: set[str] = field(default_factory=set)

    def add_problem(self, index: int | None, field_name: str | None, message: str) -> None:
        if len(self.problems) >= MAX_PROBLEMS:
            self.truncated = True
            return
        self.problems.append(Problem(index, field_name, message))

    def check(self, index: int, item: Any) -> dict[str, Any] | None:
        """Validate item ``index``; return its normalized input line, or None if it is invalid."""
        if not isinstance(item, Mapping):
            self.add_problem(index, None, f"must be an object, not {type(item).__name__}")
            return None
        before = len(self.problems)
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id.strip():
            self.add_problem(index, "custom_id", "is required and must be a non-empty string")
        elif len(custom_id) > MAX_CUSTOM_ID_LENGTH:
            self.add_problem(
                index,
                "custom_id",
                f"is {len(custom_id)} characters; at most {MAX_CUSTOM_ID_LENGTH} are allowed",
            )
        elif "\x00" in custom_id:
            self.add_problem(
                index, "custom_id", "contains a NUL character, which databases cannot store"
            )
        elif _SURROGATE.search(custom_id):
            self.add_problem(index, "custom_id", SURROGATE_MESSAGE)
        elif custom_id in self.seen_ids:
            self.add_problem(index, "custom_id", f"{custom_id!r} is used more than once in the job")
        else:
            self.seen_ids.add(custom_id)
        method = item.get("method", "POST")
        if method != "POST":
            self.add_problem(index, "method", f"must be 'POST', not {method!r}")
        url = item.get("url", self.endpoint)
        if url != self.endpoint:
            self.add_problem(
                index, "url", f"{url!r} does not match the job's endpoint {self.endpoint!r}"
            )
        body = item.get("body")
        if not isinstance(body, Mapping):
            kind = "missing" if body is None else f"a {type(body).__name__}"
            self.add_problem(index, "body", f"must be a JSON object, got {kind}")
        else:
            model = body.get("model", DEFAULT_MODELS.get(self.endpoint))
            if not isinstance(model, str) or not model:
                self.add_problem(index, "body.model", "is required and must be a non-empty string")
            elif _SURROGATE.search(model):
                self.add_problem(index, "body.model", SURROGATE_MESSAGE)
            elif not self.model:
                self.model = model
            elif model != self.model:
                self.add_problem(
                    index,
                    "body.model",
                    f"{model!r} differs from {self.model!r}: a batch takes one model",
                )
        self.count += 1
        if (
            self.existing_count + self.count > self.max_requests
            and "count" not in self._limit_reported
        ):
            self._limit_reported.add("count")
            self.add_problem(
                index,
                None,
                f"the job would exceed {self.max_requests:,} requests, the most one job takes",
            )
        if len(self.problems) == before and self.provider_check is not None:
            for field_name, message in self.provider_check(item):
                self.add_problem(index, field_name, message)
        if len(self.problems) != before:
            return None
        line = {"custom_id": custom_id, "method": "POST", "url": url, "body": dict(body)}  # type: ignore[arg-type]
        try:
            # The body is encoded once: its text is stored as is, and the line is that text
            # inside the same compact framing dumps_line(line) would produce.
            body_text = dumps_line(line["body"])
            head = dumps_line({"custom_id": custom_id, "method": "POST", "url": url})
            text = f'{head[:-1]},"body":{body_text}}}'
        except (TypeError, ValueError) as err:
            # Only the Python API can get here (parsed JSON is JSON): any mapping is taken.
            where = not_json_path(line["body"], "body") or "body"
            self.add_problem(index, where, f"is not JSON ({err})")
            return None
        if "\\u0000" in text and _NUL_ESCAPE.search(text):
            # PostgreSQL's jsonb cannot hold U+0000; refuse it here instead of failing on save.
            self.add_problem(
                index, "body", "contains a NUL character (\\u0000), which databases cannot store"
            )
            return None
        try:
            encoded = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            where = surrogate_path(line["body"], "body") or "body"
            self.add_problem(index, where, SURROGATE_MESSAGE)
            return None
        if self.max_line_bytes is not None and encoded + 1 > self.max_line_bytes:
            self.add_problem(
                index,
                None,
                f"the request is {encoded + 1:,} bytes as a JSONL line; one batch takes at "
                f"most {self.max_line_bytes:,}",
            )
            return None
        self.nbytes += encoded + 1
        self.last_nbytes = encoded + 1
        self.last_body_text = body_text
        if (
            self.existing_bytes + self.nbytes > self.max_bytes
            and "bytes" not in self._limit_reported
        ):
            self._limit_reported.add("bytes")
            self.add_problem(
                index,
                None,
                f"the job's JSONL would exceed {self.max_bytes:,} bytes, the most one job takes",
            )
            return None
        return line


def write_jsonl(lines: Iterable[Mapping[str, Any]], fp: IO[bytes]) -> tuple[int, int]:
    """Write ``lines`` to a binary file, one per line; return ``(count, bytes)``."""
    count = nbytes = 0
    for line in lines:
        data = dumps_line(line).encode("utf-8") + b"\n"
        fp.write(data)
        count += 1
        nbytes += len(data)
    return count, nbytes
