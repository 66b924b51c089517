"""Announcing: the outbox that sends ``result_received`` and ``job_finished`` exactly once."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, QuerySet

from .. import signals
from ..models import (
    BatchJob,
    ItemState,
    JobState,
    RequestItem,
)
from . import _base
from ._base import _count_announced, _get, _record_error, _record_error_quietly, logger

#: Items announced per transaction.
_ANNOUNCE_CHUNK = 500


def _announce_finished(job_id: int) -> bool:
    """Send ``job_finished`` once, after every result of the job has been announced.

    Like the results, the job carries its own outbox mark (``finish_announced``) set in the
    transaction the receivers run in, so a crash before it is sent is repaired by the next
    ``announce_pending`` (every ``sync_batches`` pass runs one).
    """
    if RequestItem.objects.pending_announcement().filter(job_id=job_id).exists():
        return False  # a result is still unannounced (e.g. its receiver failed): wait for it
    try:
        return _send_finished(job_id)
    except Exception as err:
        # Rolled back: the mark stays unset and the next pass sends it again. One job's
        # failing receiver must not keep job_finished from any other job.
        logger.exception("a job_finished receiver failed for job %s", job_id)
        _record_error(_get(job_id), err)
        return False


def _send_finished(job_id: int) -> bool:
    with transaction.atomic():
        job = (
            BatchJob.objects.select_for_update(skip_locked=True)
            .filter(pk=job_id, state=JobState.FINISHED, finish_announced=False)
            .first()
        )
        if job is None:
            return False
        counts = dict(job.items.values_list("state").annotate(n=Count("pk")).order_by())
        signals.job_finished.send(
            sender=BatchJob,
            job=job,
            outcome=job.provider_status,
            succeeded=counts.get(ItemState.SUCCEEDED, 0),
            failed=sum(n for s, n in counts.items() if s != ItemState.SUCCEEDED),
        )
        _base._checkpoint("announce.finished_sent")
        BatchJob.objects.filter(pk=job.pk).update(finish_announced=True)
        job.finish_announced = True
    return True


def _send_result(item: RequestItem) -> None:
    signals.result_received.send(
        sender=RequestItem,
        job=item.job,
        item=item,
        custom_id=item.custom_id,
        succeeded=item.state == ItemState.SUCCEEDED,
        response=item.response,
        error=item.error,
        attempt=item.attempt_count,
    )


def announce_pending(job: BatchJob | int | None = None) -> int:
    """Send ``result_received`` for every stored result not yet announced, then
    ``job_finished`` for each job whose results are all out; exactly once each.

    Rows are claimed and marked ``announced`` in pk-ordered chunks, one statement each
    (``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING``; the partial
    outbox index makes each chunk an index range, not a scan of the job); receivers run in
    that transaction, so their writes and the mark commit together. A receiver that raises
    rolls back its own item only (a savepoint, taken before its receivers' first query),
    which is unmarked, stays pending, is logged, and is retried on the next call. With no
    receiver connected the marks are set in one statement.
    """
    if job is not None:
        job_id = job.pk if isinstance(job, BatchJob) else job
        sent = _announce_job(job_id)
        _announce_finished(job_id)
        return sent
    job_ids = (
        RequestItem.objects.pending_announcement()
        .order_by()
        .values_list("job_id", flat=True)
        .distinct()
    )
    sent = 0
    for job_id in list(job_ids):
        try:
            sent += _announce_job(job_id)
        except Exception as err:
            # One job's trouble (a database error, a deleted row) must not stop the rest.
            logger.exception("announcing results of job %s failed", job_id)
            _record_error_quietly(job_id, err)
    unfinished = BatchJob.objects.filter(state=JobState.FINISHED, finish_announced=False)
    for job_id in list(unfinished.values_list("pk", flat=True)):
        _announce_finished(job_id)
    return sent


def _announce_job(job_id: int) -> int:
    pending = RequestItem.objects.pending_announcement().filter(job_id=job_id)
    if not signals.result_received.has_listeners(RequestItem):
        marked = pending.update(announced=True)
        _count_announced(marked)
        return marked
    job = BatchJob.objects.get(pk=job_id)
    sent = last_pk = 0
    while True:
        with transaction.atomic():
            chunk = _claim(pending.filter(pk__gt=last_pk))
            if not chunk:
                return sent
            last_pk = chunk[-1].pk
            for item in chunk:
                item.job = job  # one job object for all, not one query (or join) per item
            failed = _send_chunk(chunk)
            _base._checkpoint("announce.chunk_sent")
            if failed:
                RequestItem.objects.filter(pk__in=failed).update(announced=False)
            sent += len(chunk) - len(failed)
            _count_announced(len(chunk) - len(failed))


def _update_returns_rows() -> bool:
    """Whether the database takes ``UPDATE ... RETURNING``: PostgreSQL, SQLite >= 3.35
    (the same versions that return columns from an INSERT)."""
    return bool(connection.features.can_return_columns_from_insert)


def _claim(pending: QuerySet[RequestItem]) -> list[RequestItem]:
    """Lock the next chunk of ``pending`` (skipping rows another process holds), mark it
    announced and return its items, in pk order: on PostgreSQL and SQLite >= 3.35 in one
    statement, ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING``.

    The mark is written before the receivers run, in their transaction: it commits with
    their writes or not at all, and the items whose receivers fail are unmarked before the
    commit. Re-reading each row to mark it afterwards was a second full write of every
    result. The request body stays deferred: receivers almost never read it and it is the
    largest JSON to decode (one query for the receiver that does read it).
    """
    ids = pending.select_for_update(skip_locked=True).order_by("pk").values("pk")[:_ANNOUNCE_CHUNK]
    rows = RequestItem.objects.defer("body")
    if not _update_returns_rows():
        chunk = list(rows.filter(pk__in=list(ids.values_list("pk", flat=True))).order_by("pk"))
        RequestItem.objects.filter(pk__in=[item.pk for item in chunk]).update(announced=True)
        for item in chunk:
            item.announced = True  # as RETURNING reports it below
        return chunk
    compiler = rows.query.get_compiler(using=rows.db)
    compiler.setup_query()
    columns = [col for col, _, _ in compiler.select]
    quote = connection.ops.quote_name
    sub_sql, params = ids.query.sql_with_params()
    # Identifiers come from the model's metadata; the values are parameters.
    sql = (
        f"UPDATE {quote(RequestItem._meta.db_table)} SET {quote('announced')} = %s "  # noqa: S608
        f"WHERE {quote('id')} IN ({sub_sql}) "
        f"RETURNING {', '.join(quote(col.target.column) for col in columns)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [True, *params])
        fetched: Iterable[Any] = cursor.fetchall()
    converters = compiler.get_converters(columns)
    if converters:
        fetched = compiler.apply_converters(fetched, converters)
    names = [col.target.attname for col in columns]
    chunk = [RequestItem.from_db(rows.db, names, row) for row in fetched]
    chunk.sort(key=lambda item: item.pk)  # RETURNING keeps no order
    return chunk


class _LazySavepoint:
    """A savepoint taken just before the first query a receiver runs, and only then.

    Receivers must be able to fail alone: one that raises rolls back its own item's writes
    and nobody else's. A savepoint per item costs a round trip per result (it was a third
    of the whole signal pass), yet a receiver that never touches this database has nothing
    to roll back. So the savepoint is created by an ``execute_wrapper`` in front of the
    receiver's first statement: writes get exactly the protection a savepoint per item
    gives, and a receiver that only counts, logs or enqueues costs no query at all.
    """

    def __init__(self) -> None:
        self.sid: str | None = None
        self._taking = False

    def __call__(
        self, execute: Callable[..., Any], sql: Any, params: Any, many: bool, context: Any
    ) -> Any:
        if self.sid is None and not self._taking:
            self._taking = True  # the SAVEPOINT statement itself passes through here too
            try:
                self.sid = transaction.savepoint()
            finally:
                self._taking = False
        return execute(sql, params, many, context)


def _send_chunk(chunk: list[RequestItem]) -> list[int]:
    """Send each item's signal once; return the pks whose receivers failed.

    Each item's receivers get their own savepoint (taken lazily, see :class:`_LazySavepoint`),
    so a receiver that raises rolls back that item's writes alone; the items before and
    after it are not sent again (a receiver that emails or calls out must not do it twice).
    Savepoints are not released one by one: that would double the round trips, and
    committing the chunk releases them all.
    """
    failed: list[int] = []
    for item in chunk:
        guard = _LazySavepoint()
        callbacks = len(connection.run_on_commit)
        try:
            with connection.execute_wrapper(guard):
                _send_result(item)
        except Exception as err:
            if guard.sid is not None:
                # A receiver's failed query inside its own atomic block marks the whole
                # transaction for rollback, and Django then refuses even the rollback to
                # our savepoint: clear the mark first; the savepoint undoes its writes.
                transaction.set_rollback(False)
                transaction.savepoint_rollback(guard.sid)
            # What the failed item's receivers asked to run on commit goes with its writes
            # (a rollback to a savepoint drops these too, but there may be no savepoint).
            del connection.run_on_commit[callbacks:]
            logger.exception("a result_received receiver failed for %s", item.custom_id)
            if not failed:
                _record_error(item.job, err)
            failed.append(item.pk)
    return failed
