"""Export a job's results as data: CSV (one row per item) or JSONL, streamed.

:func:`export_results` is what the admin action, the API endpoint and scripts use
(``services.export_results`` re-exports it)::

    with open("results.csv", "wb") as f:
        for chunk in export_results(job, "csv"):
            f.write(chunk)

Rows are read from the database in pk-ordered chunks of plain values (no model instances)
and written out in chunks of bytes, so memory stays flat however many items the job has.

CSV columns: ``custom_id, state, answer, finish_reason, code, reason, input_tokens,
cached_tokens, output_tokens, reasoning_tokens, cost, linked_object``, then, for a job with a
structured output model, one column per field of the model (nested fields joined with dots:
``address.city``; lists as JSON), and a ``parsed`` column of JSON when some items carry a model
of their own. The ``answer`` is the text answer; for other endpoints the tool calls, vectors,
moderation categories or image URLs as JSON. Text cells that a spreadsheet would run as a
formula (starting with ``=``, ``+``, ``-``, ``@``, tab or CR) get a leading ``'``, since model
output is untrusted. JSONL lines hold the same facts with their JSON types, the answer split by
kind (``text``, ``refusal``, ``tool_calls``, ``embeddings``, ``moderation``, ``images``), and
``usage`` as an object; numbers stay numbers and nothing is escaped.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import asdict
from decimal import Decimal
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db.models import Q

from .conf import app_settings
from .models import BatchJob, Endpoint, RequestItem
from .results import Result, Usage, token_cost

FORMATS = {"csv": "text/csv; charset=utf-8", "jsonl": "application/jsonl"}

BASE_COLUMNS = (
    "custom_id",
    "state",
    "answer",
    "finish_reason",
    "code",
    "reason",
    "input_tokens",
    "cached_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost",
    "linked_object",
)

#: Rows read per database round trip, and rows per chunk of output.
_READ_CHUNK = 2000
_WRITE_CHUNK = 500

_VALUES = (
    "custom_id",
    "state",
    "status_code",
    "response",
    "error",
    "output_schema",
    "parsed",
    "parse_error",
    "input_tokens",
    "cached_tokens",
    "output_tokens",
    "reasoning_tokens",
    "content_type_id",
    "object_id",
)

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def content_type(fmt: str) -> str:
    return FORMATS[fmt]


def filename(job: BatchJob, fmt: str) -> str:
    from django.utils.text import slugify

    stem = slugify(job.name)[:50] or "batch"
    return f"{stem}-{job.pk}-results.{fmt}"


def export_results(
    job: BatchJob | int, fmt: str = "csv", *, state: str | None = None
) -> Iterator[bytes]:
    """The results of ``job`` as CSV or JSONL bytes, chunk by chunk (see the module docs).

    ``state`` keeps only the items in that state. Raises ``ValueError`` for an unknown format
    at the call, before anything is streamed.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    current = job if isinstance(job, BatchJob) else BatchJob.objects.get(pk=job)
    qs = RequestItem.objects.filter(job_id=current.pk)
    if state:
        qs = qs.filter(state=state)
    rows = _rows(current, qs)
    return _csv(_header(current, qs), rows) if fmt == "csv" else _jsonl(rows)


class _Row:
    """One item's export facts, computed from its stored values."""

    __slots__ = ("cost", "custom_id", "linked", "parsed", "result", "state", "usage")

    def __init__(
        self, job: BatchJob, values: tuple[Any, ...], prices: Any, types: dict[int, str]
    ) -> None:
        (
            self.custom_id,
            self.state,
            status_code,
            response,
            error,
            own_schema,
            parsed,
            parse_error,
            *tokens,
            ct_id,
            object_id,
        ) = values
        self.result = Result(
            job.endpoint,
            self.state,
            status_code,
            response,
            error,
            schema=own_schema or job.output_schema,
            parsed_json=parsed,
            parse_error=parse_error,
        )
        self.usage = Usage(*tokens)
        self.cost: Decimal | None = (
            token_cost(prices, self.usage) if self.result.succeeded else None
        )
        self.parsed = self.result.parsed_json
        self.linked = ""
        if ct_id:
            if ct_id not in types:
                ct = ContentType.objects.get_for_id(ct_id)
                types[ct_id] = f"{ct.app_label}.{ct.model}"
            self.linked = f"{types[ct_id]}:{object_id}"


def _rows(job: BatchJob, qs: Any) -> Iterator[_Row]:
    table = app_settings.PRICES
    prices = table.get(job.model or job.provider_model) if isinstance(table, dict) else None
    types: dict[int, str] = {}
    values = qs.order_by("pk").values_list(*_VALUES).iterator(chunk_size=_READ_CHUNK)
    for value in values:
        yield _Row(job, value, prices, types)


def _answer_fields(r: Result) -> dict[str, Any]:
    """The answer by kind, for JSONL (only the kinds the endpoint has)."""
    if r.endpoint == Endpoint.EMBEDDINGS:
        return {"embeddings": r.embeddings}
    if r.endpoint == Endpoint.MODERATIONS:
        return {"moderation": [asdict(m) for m in r.moderations]}
    if r.endpoint.startswith("/v1/images/"):
        return {"images": [asdict(i) for i in r.images]}
    if r.endpoint == Endpoint.VIDEOS:
        return {}
    return {
        "text": r.text,
        "refusal": r.refusal,
        "tool_calls": [asdict(c) for c in r.tool_calls],
    }


def _answer_cell(r: Result) -> str:
    """The answer as one CSV cell: text, else the endpoint's data as JSON."""
    if r.text is not None:
        return r.text
    if r.tool_calls:
        return json.dumps([{"name": c.name, "arguments": c.arguments} for c in r.tool_calls])
    if r.endpoint == Endpoint.EMBEDDINGS and r.embeddings:
        return json.dumps(r.embeddings)
    if r.endpoint == Endpoint.MODERATIONS and r.moderations:
        return json.dumps(r.categories)
    if r.images:
        return json.dumps([i.url or f"<{len(i.b64_json or '')} base64 chars>" for i in r.images])
    return r.refusal or ""


def _safe(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _header(job: BatchJob, qs: Any) -> tuple[list[str], list[str], bool]:
    """(header, the model's field columns, whether a ``parsed`` JSON column is added), found
    before the first byte is streamed."""
    from .exceptions import ConfigurationError
    from .structured import schema_fields

    try:
        fields = schema_fields(job.output_schema) if job.output_schema else []
        unloadable = False
    except ConfigurationError:
        # The model is gone from the code: the stored parsed JSON is still worth exporting.
        fields, unloadable = [], True
    own_models = qs.filter(~Q(output_schema="")).exclude(output_schema=job.output_schema).exists()
    json_column = own_models or unloadable
    return [*BASE_COLUMNS, *fields, *(["parsed"] if json_column else [])], fields, json_column


def _csv(header: tuple[list[str], list[str], bool], rows: Iterator[_Row]) -> Iterator[bytes]:
    from .structured import field_value

    columns, fields, own_models = header
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(columns)
    for n, row in enumerate(rows, 1):
        r = row.result
        cells: list[Any] = [
            _safe(row.custom_id),
            row.state,
            _safe(_answer_cell(r)),
            r.finish_reason or "",
            r.code,
            _safe(r.reason),
            row.usage.input_tokens,
            row.usage.cached_tokens,
            row.usage.output_tokens,
            row.usage.reasoning_tokens,
            "" if row.cost is None else str(row.cost),
            row.linked,
        ]
        cells += [_safe(_cell(field_value(row.parsed, f))) for f in fields]
        if own_models:
            cells.append(_safe("" if row.parsed is None else json.dumps(row.parsed)))
        writer.writerow(cells)
        if n % _WRITE_CHUNK == 0:
            yield _drain(buf)
    yield _drain(buf)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return value


def _drain(buf: io.StringIO) -> bytes:
    data = buf.getvalue().encode("utf-8")
    buf.seek(0)
    buf.truncate()
    return data


def _jsonl(rows: Iterator[_Row]) -> Iterator[bytes]:
    lines: list[str] = []
    for row in rows:
        r = row.result
        line = {
            "custom_id": row.custom_id,
            "state": row.state,
            **_answer_fields(r),
            "finish_reason": r.finish_reason,
            "parsed": row.parsed,
            "code": r.code,
            "reason": r.reason,
            "usage": {**asdict(row.usage), "total_tokens": row.usage.total_tokens},
            "cost": None if row.cost is None else str(row.cost),
            "linked_object": row.linked or None,
        }
        lines.append(json.dumps(line, ensure_ascii=False, separators=(",", ":")))
        if len(lines) >= _WRITE_CHUNK:
            yield ("\n".join(lines) + "\n").encode("utf-8")
            lines = []
    if lines:
        yield ("\n".join(lines) + "\n").encode("utf-8")
