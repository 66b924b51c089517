"""Reading a job back: its results, its input, the provider's files (rebuilt from the
database when the provider no longer has them), its cost."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

from django.db import models
from django.db.models import Q
from django.db.models.functions import Cast

from ..client import BatchProvider
from ..conf import app_settings
from ..exceptions import (
    APIConnectionError,
    ConfigurationError,
    NotFoundError,
)
from ..jsonl import dumps_line
from ..models import (
    BatchJob,
    ItemState,
    ProviderBatch,
    RequestItem,
)
from ..results import Usage, token_cost
from . import _base
from ._base import _get, _refusal, logger


def iter_results(job: BatchJob | int, *, state: str | None = None) -> Iterator[RequestItem]:
    """The job's items with their results, streamed from the database in pk order."""
    qs = RequestItem.objects.filter(job_id=_get(job).pk)
    if state:
        qs = qs.filter(state=state)
    return qs.order_by("pk").iterator(chunk_size=2000)


def iter_results_jsonl(job: BatchJob | int) -> Iterator[bytes]:
    """One JSON line per item: custom_id, state, status_code, response, error.

    The stored response and error go out as the database's own JSON text, spliced into
    the line: decoding every answer only to encode it again was most of the stream's cost.
    """
    rows = (
        RequestItem.objects.filter(job_id=_get(job).pk)
        .order_by("pk")
        .annotate(
            response_text=Cast("response", models.TextField()),
            error_text=Cast("error", models.TextField()),
        )
        .values_list("custom_id", "state", "status_code", "response_text", "error_text")
        .iterator(chunk_size=2000)
    )
    for custom_id, state, status_code, response, error in rows:
        head = dumps_line({"custom_id": custom_id, "state": state, "status_code": status_code})
        line = f'{head[:-1]},"response":{response or "null"},"error":{error or "null"}}}\n'
        yield line.encode("utf-8")


def iter_input_jsonl(job: BatchJob | int) -> Iterator[bytes]:
    """The job's JSONL input: every request, once, in the order it was added."""
    return _iter_input(RequestItem.objects.filter(job_id=_get(job).pk))


def _iter_input(items: models.QuerySet[RequestItem]) -> Iterator[bytes]:
    rows = items.order_by("pk").values_list("custom_id", "method", "url", "body")
    for custom_id, method, url, body in rows.iterator(chunk_size=2000):
        line = {"custom_id": custom_id, "method": method, "url": url, "body": body}
        yield dumps_line(line).encode("utf-8") + b"\n"


def iter_provider_file(job: BatchJob | int, which: str) -> Iterator[bytes]:
    """Stream the job's provider files of one kind, ``input``, ``output`` or ``error``:
    each part's file in part order (one file for a job of one batch).

    The checks run on the call (no such file raises :class:`InvalidStateError` before any
    response starts); the downloads stream as the iterator is consumed. When the provider
    no longer has a part's file (deleted, expired after its retention, or an emulator that
    is gone) and nothing of that file has been sent yet, the same lines are built from
    what the database holds: the part's items for the input, its ingested results for
    output and errors.
    """
    current = _get(job)
    if which not in ("input", "output", "error"):
        raise ValueError(f"which must be input, output or error, not {which!r}")
    attr = f"{which}_file_id"
    parts = [p for p in current.batches.order_by("part") if getattr(p, attr)]
    if not parts:
        raise _refusal(current, "downloaded", f"it has no {which} file")
    try:
        client = _base.get_client(current.account)
    except ConfigurationError:
        if not all(which == "input" or p.ingested_at for p in parts):
            raise
        return (chunk for p in parts for chunk in _stored_file(current, p, which))

    def chunks() -> Iterator[bytes]:
        try:
            for part in parts:
                yield from _part_file(client, current, part, which)
        finally:
            client.close()

    return chunks()


def _part_file(
    client: BatchProvider, job: BatchJob, part: ProviderBatch, which: str
) -> Iterator[bytes]:
    rebuildable = which == "input" or part.ingested_at is not None
    sent = False
    try:
        for chunk in client.iter_file_chunks(getattr(part, f"{which}_file_id")):
            sent = True
            yield chunk
    except (NotFoundError, APIConnectionError) as err:
        if sent or not rebuildable:
            raise
        logger.info(
            "job %s part %s: %s file unavailable (%s); built from the database",
            job.pk,
            part.part,
            which,
            err,
        )
        yield from _stored_file(job, part, which)


def _stored_file(job: BatchJob, part: ProviderBatch, which: str) -> Iterator[bytes]:
    """A part's ``which`` file as the provider wrote it, rebuilt from the database.

    Input: the part's requests. Output: what succeeded in it. Errors: every request that
    ran and failed (its status and error body) and every one that never ran (its error
    object); the app's own ``missing`` marks are not provider lines and are left out. A
    request sent again later belongs to its latest part's files.
    """
    if which == "input":
        sent = Q(batch=part) | Q(attempts__batch=part)
        yield from _iter_input(RequestItem.objects.filter(sent).distinct())
        return
    states = (
        [ItemState.SUCCEEDED]
        if which == "output"
        else [ItemState.FAILED, ItemState.EXPIRED, ItemState.CANCELLED]
    )
    lines = (
        RequestItem.objects.filter(batch=part, state__in=states)
        .order_by("pk")
        .values_list(
            "custom_id", "status_code", "response", "error", "provider_request_id", "result_line_id"
        )
        .iterator(chunk_size=2000)
    )
    for custom_id, status_code, response, error, request_id, line_id in lines:
        ran = status_code is not None
        line = {
            "id": line_id or None,
            "custom_id": custom_id,
            "response": (
                {"status_code": status_code, "request_id": request_id or None, "body": response}
                if ran
                else None
            ),
            "error": None if ran else error,
        }
        yield dumps_line(line).encode("utf-8") + b"\n"


def job_cost(job: BatchJob | int) -> Decimal | None:
    """Cost in USD at batch rates: what was stored when the job's results were ingested
    (each provider batch counted once), else computed from its usage and
    ``OPENAI_BATCHES["PRICES"]`` (per 1M tokens) when the model has a price."""
    job = _get(job) if not isinstance(job, BatchJob) else job
    if job.cost is not None:
        return job.cost
    table = app_settings.PRICES
    prices = table.get(job.model or job.provider_model) if isinstance(table, dict) else None
    usage = Usage(job.input_tokens, job.cached_tokens, job.output_tokens, job.reasoning_tokens)
    return token_cost(prices, usage)  # one formula for jobs, items and the export
