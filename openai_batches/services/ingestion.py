"""Ingesting an ended provider batch: results written in bulk, one attempt per request,
transient failures put back in line (the RETRY policy), usage and cost stored once."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from datetime import datetime
from typing import IO, Any

from django.db import connection, transaction
from django.db.models import Count, F, Q, Sum
from django.utils import timezone

from .. import signals, structured
from ..conf import app_settings
from ..jsonl import iter_jsonl
from ..models import (
    FINAL_ITEM_STATES,
    TERMINAL_STATUSES,
    BatchJob,
    BatchReason,
    BatchStatus,
    ItemState,
    JobState,
    ProviderBatch,
    RequestAttempt,
    RequestItem,
)
from ..results import Usage, token_cost
from . import _base
from ._base import (
    _INSERT_CHUNK,
    _OPEN_STATES,
    Progress,
    _clean_text,
    _count,
    _count_announced,
    _dict,
    _get,
    _json_text,
    _record_error,
    _short,
    _status_signal,
    logger,
)
from .announcing import announce_pending
from .parts import _plan, _reset_for_retry, _settle

_RESULT_COLUMNS = (
    "state",
    "status_code",
    "response",
    "error",
    "provider_request_id",
    "result_line_id",
    "input_tokens",
    "cached_tokens",
    "output_tokens",
    "reasoning_tokens",
)


def _usage(body: Any) -> tuple[int, int, int, int]:
    usage = _dict(body.get("usage") if isinstance(body, dict) else None)
    if not usage:
        return 0, 0, 0, 0
    inp = usage.get("input_tokens", usage.get("prompt_tokens"))
    out = usage.get("output_tokens", usage.get("completion_tokens"))
    in_details = _dict(usage.get("input_tokens_details") or usage.get("prompt_tokens_details"))
    out_details = _dict(
        usage.get("output_tokens_details") or usage.get("completion_tokens_details")
    )
    return (
        _count(inp),
        _count(in_details.get("cached_tokens")),
        _count(out),
        _count(out_details.get("reasoning_tokens")),
    )


_NEVER_RAN = {"batch_expired": ItemState.EXPIRED, "batch_cancelled": ItemState.CANCELLED}


def result_row(line: Mapping[str, Any]) -> tuple[str, tuple[Any, ...]] | None:
    """``(custom_id, values in _RESULT_COLUMNS order)`` for one result line, or None if unusable.

    A 4xx/5xx with ``error: null`` is a request that ran and failed (the provider's error body
    is kept as the response); ``response: null`` with an ``error`` object never ran.
    """
    custom_id = line.get("custom_id")
    if not isinstance(custom_id, str) or _clean_text(custom_id) != custom_id:
        return None  # no item of ours has such an id: input validation refuses them
    response = line.get("response")
    error = line.get("error")
    if isinstance(response, dict):
        raw_status = response.get("status_code")
        status = _count(raw_status)
        if not 100 <= status <= 599:
            status = 0  # not an HTTP status: the line cannot say the request succeeded
        body = response.get("body")
        ok = 200 <= status < 300 and not error
        state = ItemState.SUCCEEDED if ok else ItemState.FAILED
        usage = _usage(body) if ok else (0, 0, 0, 0)
        if not status and not error:
            error = {
                "code": "invalid_status_code",
                "message": f"The result line's status_code was {str(raw_status)[:40]!r}.",
            }
        return custom_id, (
            state,
            status or None,
            _json_text(body),
            _json_text(error) if error else None,
            _short(response.get("request_id")),
            _short(line.get("id")),
            *usage,
        )
    code = error.get("code") if isinstance(error, dict) else None
    state = _NEVER_RAN.get(str(code), ItemState.FAILED)
    return custom_id, (
        state,
        None,
        None,
        _json_text(
            error
            if error is not None
            else {
                "code": "no_response",
                "message": "The result line had neither a response nor an error.",
            }
        ),
        "",
        _short(line.get("id")),
        0,
        0,
        0,
        0,
    )


class _ResultWriter:
    """Writes result rows onto their items in bulk: COPY + UPDATE ... FROM on PostgreSQL,
    chunked ``executemany`` elsewhere. Only items still open are touched, so re-running an
    ingest changes nothing."""

    def __init__(
        self, job: BatchJob, part: ProviderBatch, now: datetime, *, announced: bool
    ) -> None:
        self.job = job
        self.part = part
        self.now = now
        self.announced = announced
        self.chunk = int(app_settings.INGEST_CHUNK_SIZE)
        self.rows: list[tuple[Any, ...]] = []
        self.postgres = connection.vendor == "postgresql"
        self.table = connection.ops.quote_name(RequestItem._meta.db_table)
        self._copy_ready = False

    def add(self, custom_id: str, values: tuple[Any, ...]) -> None:
        self.rows.append((custom_id, *values))
        if len(self.rows) >= self.chunk:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        if self.postgres:
            self._copy(self.rows)
        else:
            self._executemany(self.rows)
        self.rows = []

    def _executemany(self, rows: list[tuple[Any, ...]]) -> None:
        sets = ", ".join(f"{connection.ops.quote_name(c)} = %s" for c in _RESULT_COLUMNS)
        # Identifiers come from the model's metadata and a constant column list, never input.
        where = "WHERE job_id = %s AND custom_id = %s AND batch_id = %s AND state IN (%s, %s)"
        sql = (
            f"UPDATE {self.table} SET {sets}, completed_at = %s, announced = %s, "  # noqa: S608
            f"attempt_count = attempt_count + 1 {where}"
        )
        params = [
            (*r[1:], self.now, self.announced, self.job.pk, r[0], self.part.pk, *_OPEN_STATES)
            for r in rows
        ]
        with connection.cursor() as cursor:
            cursor.executemany(sql, params)

    def _copy(self, rows: list[tuple[Any, ...]]) -> None:
        with connection.cursor() as cursor:
            if not self._copy_ready:
                cursor.execute(
                    "CREATE TEMP TABLE IF NOT EXISTS openai_batches_ingest ("
                    "custom_id text, state text, status_code int, response jsonb, error jsonb, "
                    "provider_request_id text, result_line_id text, input_tokens int, cached_tokens int, "
                    "output_tokens int, reasoning_tokens int) ON COMMIT DROP"
                )
                self._copy_ready = True
            raw = cursor.cursor
            with raw.copy("COPY openai_batches_ingest FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)

    def finish(self) -> None:
        self.flush()
        if not (self.postgres and self._copy_ready):
            return
        sets = ", ".join(f"{c} = t.{c}" for c in _RESULT_COLUMNS)
        with connection.cursor() as cursor:
            # Identifiers come from the model's metadata and a constant column list, never input.
            where = (
                "WHERE i.job_id = %s AND i.custom_id = t.custom_id AND i.batch_id = %s "
                "AND i.state IN (%s, %s)"
            )
            sql = (
                f"UPDATE {self.table} AS i SET {sets}, completed_at = %s, announced = %s, "  # noqa: S608
                f"attempt_count = i.attempt_count + 1 FROM openai_batches_ingest AS t {where}"
            )
            cursor.execute(
                sql, [self.now, self.announced, self.job.pk, self.part.pk, *_OPEN_STATES]
            )
            cursor.execute("DROP TABLE openai_batches_ingest")


def ingest(job: BatchJob | int, *, progress: Progress | None = None) -> int:
    """Store the results of the job's terminal batches on their items, in bulk; idempotent.

    For each part that has ended and is not ingested yet: streams its output and error
    files to temporary files (retrying downloads) BEFORE taking the job's row lock, so a
    slow download never holds up a refresh, a sync pass or a user's action; then, under the
    lock (skipped if another process holds it), writes every result in bulk, marks the
    items that have no line (expired, cancelled, failed batch, or missing), records one
    attempt per request, puts the requests that failed for a transient reason back in line
    for a follow-up part (the ``RETRY`` policy), sums usage and cost onto the part and the
    job and, after commit, announces the final results. Returns the number of result lines
    read. Any error (a download, a database refusal) is recorded on the job and re-raised:
    the transaction rolls back, so the next poll starts afresh.
    """
    pk = _get(job).pk
    lines = 0
    try:
        ended = ProviderBatch.objects.filter(
            job_id=pk, state=JobState.SUBMITTED, provider_status__in=TERMINAL_STATUSES
        ).order_by("part")
        for part in list(ended):
            lines += _ingest_part(pk, part, progress)
    except Exception as err:
        _record_error(_get(pk), err)
        raise
    return lines


def _ingest_part(pk: int, part: ProviderBatch, progress: Progress | None) -> int:
    with _downloaded(part) as files, transaction.atomic():
        locked = BatchJob.objects.select_for_update(skip_locked=True).filter(pk=pk).first()
        if locked is None:
            return 0  # another process is ingesting (or recording) it
        current = ProviderBatch.objects.select_for_update().get(pk=part.pk)
        if current.state != JobState.SUBMITTED or not current.is_terminal:
            return 0  # ingested meanwhile, or nothing to do
        if (current.output_file_id, current.error_file_id) != (
            part.output_file_id,
            part.error_file_id,
        ):
            return 0  # changed under us; the next poll downloads what is current
        return _ingest_locked(locked, current, _rows(current, files), progress)


@contextmanager
def _downloaded(part: ProviderBatch) -> Iterator[list[tuple[str, IO[bytes]]]]:
    """The part's output and error files, each streamed whole to a temporary file.

    Downloads are retried from the start; a truncated one is an error, never a short file.
    """
    with ExitStack() as stack:
        files: list[tuple[str, IO[bytes]]] = []
        client = _base.get_client(part.account)
        try:
            for file_id in (part.output_file_id, part.error_file_id):
                if not file_id:
                    continue
                tmp = stack.enter_context(tempfile.TemporaryFile())
                client.download_file(file_id, tmp)
                tmp.seek(0)
                files.append((file_id, tmp))
        finally:
            client.close()
        yield files


def _rows(
    part: ProviderBatch, files: list[tuple[str, IO[bytes]]]
) -> Iterator[tuple[str, tuple[Any, ...]]]:
    for file_id, tmp in files:
        for line_no, obj, error in iter_jsonl(tmp):
            row = result_row(obj) if isinstance(obj, dict) else None
            if row is None:
                logger.warning(
                    "job %s: unusable line %s in %s (%s)", part.job_id, line_no, file_id, error
                )
                continue
            yield row


def iter_result_rows(job: BatchJob) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """Every usable line of the output and error files of the job's ended batches, as a
    :func:`result_row`. Each file is streamed to a temporary file first, then read one
    line at a time."""
    for part in job.batches.exclude(provider_batch_id="").order_by("part"):
        with _downloaded(part) as files:
            yield from _rows(part, files)


def _ingest_locked(
    job: BatchJob,
    part: ProviderBatch,
    rows: Iterable[tuple[str, tuple[Any, ...]]],
    progress: Progress | None,
) -> int:
    now = timezone.now()
    # With no receiver connected there is nothing to send: store the results as announced
    # in the same write instead of a second pass over every row after commit.
    announced = not signals.result_received.has_listeners(RequestItem)
    writer = _ResultWriter(job, part, now, announced=announced)
    total = part.request_count_total or part.item_count
    lines = 0
    for custom_id, values in rows:
        writer.add(custom_id, values)
        lines += 1
        if lines % writer.chunk == 0:
            _base._checkpoint("ingest.rows_written")
        if progress and lines % 1000 == 0:
            progress(lines, total)
    writer.finish()
    leftover = _leftover(part)
    RequestItem.objects.filter(batch=part, state__in=_OPEN_STATES).update(
        state=leftover[0],
        error=leftover[1],
        completed_at=now,
        announced=announced,
        attempt_count=F("attempt_count") + 1,
    )
    _record_attempts(part, now)
    retried = _retry_transient(job, part)
    # Structured outputs are parsed once, in bulk, in this transaction, so receivers and
    # the export read stored JSON instead of each parsing (and saving) on first access.
    structured.store_parsed(job)
    if announced:
        _count_announced(part.item_count - retried)
    _part_totals(job, part, now)
    _store_item_counts(job)
    old = (job.state, job.provider_status)
    if retried:
        _plan(job, BatchReason.RETRY)
    _settle(job)
    job.save()
    _status_signal(job, *old)
    if progress:
        progress(lines, total)
    _base._checkpoint("ingest.before_commit")
    transaction.on_commit(lambda: _after_ingest(job.pk), robust=True)
    if retried and job.state == JobState.SUBMIT_REQUESTED:
        from .. import jobs

        jobs.enqueue_submit(job.pk)
    return lines


def _record_attempts(part: ProviderBatch, now: datetime) -> None:
    """One attempt row per request the part carried, copied from the items in one
    statement (INSERT ... SELECT). Each item's attempt count was already moved on by the
    write that stored its result (a second pass over every row cost as much as that write)."""
    items = connection.ops.quote_name(RequestItem._meta.db_table)
    attempts = connection.ops.quote_name(RequestAttempt._meta.db_table)
    with connection.cursor() as cursor:
        # Identifiers come from the models' metadata, never from input. A failed request's
        # error body is its response (the request ran); a never-run one has an error object.
        cursor.execute(
            f"INSERT INTO {attempts} (item_id, batch_id, number, state, status_code, error, "  # noqa: S608
            "input_tokens, cached_tokens, output_tokens, reasoning_tokens, retried, created_at) "
            "SELECT id, batch_id, attempt_count, state, status_code, "
            "CASE WHEN state = %s THEN NULL ELSE COALESCE(error, response) END, "
            "input_tokens, cached_tokens, output_tokens, reasoning_tokens, %s, %s "
            f"FROM {items} WHERE batch_id = %s",
            [ItemState.SUCCEEDED, False, now, part.pk],
        )


def _retry_transient(job: BatchJob, part: ProviderBatch) -> int:
    """Put the part's requests that failed for a transient reason back in line (the
    ``RETRY`` policy); returns how many. Their attempts are marked ``retried``."""
    policy = app_settings.retry_policy()
    if job.cancel_requested_at is not None:
        return 0  # a cancelled job sends nothing again
    started = job.submit_requested_at or job.created_at
    if (timezone.now() - started).total_seconds() > float(policy["DEADLINE"]):
        return 0
    transient = Q(state=ItemState.FAILED, status_code__in=list(policy["STATUS_CODES"]))
    # (A batch cancelled here returned above: one cancelled by the provider, or on its
    # dashboard, has its never-run requests sent again like expired ones.)
    transient |= Q(status_code__isnull=True, error__code__in=list(policy["ERROR_CODES"]))
    batch_codes = {str(e.get("code")) for e in part.provider_errors if isinstance(e, dict)}
    if (
        part.provider_status == BatchStatus.FAILED
        and batch_codes
        and batch_codes <= set(policy["BATCH_ERROR_CODES"])
    ):
        transient |= Q(status_code__isnull=True, error__code="batch_failed")
    chosen = RequestItem.objects.filter(
        transient, batch=part, attempt_count__lt=int(policy["MAX_ATTEMPTS"])
    )
    ids = list(chosen.values_list("pk", flat=True))
    if not ids:
        return 0
    for start in range(0, len(ids), _INSERT_CHUNK):
        chunk = ids[start : start + _INSERT_CHUNK]
        RequestAttempt.objects.filter(batch=part, item_id__in=chunk).update(retried=True)
        _reset_for_retry(RequestItem.objects.filter(pk__in=chunk))
    return len(ids)


def _part_totals(job: BatchJob, part: ProviderBatch, now: datetime) -> None:
    """Store the part's usage (summed over its attempts) and its cost, once: the part is
    marked ingested in the same transaction, so a second ingest never counts it again."""
    sums = RequestAttempt.objects.filter(batch=part).aggregate(
        input_tokens=Sum("input_tokens"),
        cached_tokens=Sum("cached_tokens"),
        output_tokens=Sum("output_tokens"),
        reasoning_tokens=Sum("reasoning_tokens"),
    )
    for key, value in sums.items():
        setattr(part, key, value or 0)
    table = app_settings.PRICES
    prices = table.get(job.model or part.provider_model) if isinstance(table, dict) else None
    part.cost = token_cost(
        prices,
        Usage(part.input_tokens, part.cached_tokens, part.output_tokens, part.reasoning_tokens),
    )
    part.state = JobState.FINISHED
    part.ingested_at = now
    part.save()


def _store_item_counts(job: BatchJob) -> None:
    """Count the job's final items per outcome onto the job and each of its parts, in one
    GROUP BY (the ``(job, state)`` index), so the job lists read two columns instead of
    counting items for every row. Called, under the job's lock, wherever items become final
    or stop being final: ingest, retry, cancelling planned parts."""
    per_part: dict[int | None, list[int]] = {}
    rows = (
        RequestItem.objects.filter(job=job, state__in=FINAL_ITEM_STATES)
        .values_list("batch_id", "state")
        .annotate(n=Count("pk"))
        .order_by()
    )
    for batch_id, state, n in rows:
        per_part.setdefault(batch_id, [0, 0])[0 if state == ItemState.SUCCEEDED else 1] += n
    job.succeeded_count = sum(ok for ok, _ in per_part.values())
    job.failed_count = sum(failed for _, failed in per_part.values())
    BatchJob.objects.filter(pk=job.pk).update(
        succeeded_count=job.succeeded_count, failed_count=job.failed_count
    )
    for part in job.batches.only("pk", "succeeded_count", "failed_count"):
        ok, failed = per_part.get(part.pk, (0, 0))
        if (part.succeeded_count, part.failed_count) != (ok, failed):
            ProviderBatch.objects.filter(pk=part.pk).update(succeeded_count=ok, failed_count=failed)


def _leftover(part: ProviderBatch) -> tuple[str, dict[str, Any]]:
    """State and error for items the result files did not mention."""
    status = part.provider_status
    if status == BatchStatus.EXPIRED:
        return ItemState.EXPIRED, {
            "code": "batch_expired",
            "message": "The batch expired before this request ran.",
        }
    if status == BatchStatus.CANCELLED:
        return ItemState.CANCELLED, {
            "code": "batch_cancelled",
            "message": "The batch was cancelled before this request ran.",
        }
    if status == BatchStatus.FAILED:
        first = (part.provider_errors or [{}])[0]
        return ItemState.FAILED, {
            "code": "batch_failed",
            "message": f"The batch failed validation: {first.get('message', 'see the job')}",
        }
    return ItemState.MISSING, {
        "code": "missing_result",
        "message": "The batch ended without a result line for this request.",
    }


def _after_ingest(job_pk: int) -> None:
    _base._checkpoint("ingest.committed")
    try:
        announce_pending(job_pk)
    except Exception:
        # The results are committed and still marked pending: the next pass sends them.
        logger.exception("announcing the results of job %s failed; the next pass retries", job_pk)
