"""Creating jobs and adding their items: validated, all or nothing, inserted in chunks."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import IO, Any

from django.contrib.contenttypes.models import ContentType
from django.db import connection, models, transaction

from .. import access, providers
from ..conf import app_settings
from ..estimate import input_token_estimator
from ..exceptions import (
    LimitExceeded,
    Problem,
    ValidationError,
)
from ..jsonl import ItemValidator, iter_jsonl, validate_metadata
from ..models import (
    BatchJob,
    CompletionWindow,
    Endpoint,
    JobState,
    RequestItem,
)
from ._base import _INSERT_CHUNK, _MAX_COUNT, _clean_text, _refusal


def create_job(
    *,
    endpoint: str = Endpoint.CHAT_COMPLETIONS,
    name: str = "",
    metadata: Mapping[str, str] | None = None,
    account: str = "default",
    owner: Any = None,
    completion_window: str = CompletionWindow.HOURS_24,
    items: Iterable[Mapping[str, Any]] | None = None,
    jsonl: IO[bytes] | IO[str] | Iterable[bytes] | Iterable[str] | None = None,
) -> BatchJob:
    """Create a draft job, with its items (``items`` mappings and/or ``jsonl`` lines in
    OpenAI's input format): all or nothing, no job is left behind when an item is wrong.

    An ``owner`` must be allowed to use ``account`` (:mod:`openai_batches.access`): owning a
    job lets one submit it. ``owner=None`` (code's own jobs) is not checked."""
    problems: list[Problem] = []
    if endpoint not in Endpoint.values:
        problems.append(
            Problem(None, "endpoint", f"{endpoint!r} is not one of {', '.join(Endpoint.values)}")
        )
    # The account's provider decides which endpoints and completion windows it takes (an
    # unknown account, reported below, is judged by OpenAI's rules).
    known = account in app_settings.account_names()
    problems += providers.check_job(account if known else None, endpoint, completion_window)
    problems += validate_metadata(metadata)
    if not isinstance(name, str) or len(name) > 200 or _clean_text(name) != name:
        problems.append(
            Problem(
                None,
                "name",
                "must be text of at most 200 characters, without NUL or lone surrogates",
            )
        )
    if account not in app_settings.account_names():
        problems.append(
            Problem(
                None,
                "account",
                # The configured names are not listed: this reaches API users, and which
                # accounts exist is the operator's business.
                f"{account!r} is not a configured account",
            )
        )
    elif (refused := access.account_problem(owner, account)) is not None:
        problems.append(refused)
    if problems:
        raise ValidationError(problems)
    with transaction.atomic():
        job = BatchJob.objects.create(
            endpoint=endpoint,
            name=name,
            metadata=dict(metadata or {}),
            account=account,
            owner=owner if getattr(owner, "pk", None) else None,
            completion_window=completion_window,
        )
        if items is not None:
            add_items(job, items)
        if jsonl is not None:
            add_items_from_jsonl(job, jsonl)
    return job


def _link(item: Mapping[str, Any]) -> tuple[ContentType | None, str]:
    obj = item.get("object")
    if obj is None:
        return None, ""
    if not isinstance(obj, models.Model) or obj.pk is None:
        raise TypeError("'object' must be a saved model instance")
    return ContentType.objects.get_for_model(obj), str(obj.pk)


def add_items(job: BatchJob, items: Iterable[Mapping[str, Any]]) -> int:
    """Validate and add request items to a draft job; all or nothing.

    Each item is a mapping with ``custom_id`` and ``body`` (which names the ``model``), and
    optionally ``method`` (POST), ``url`` (the job's endpoint) and ``object`` (any saved model
    instance of the host project, reachable later as ``item.content_object``).

    Rows are inserted in chunks while validating, inside one transaction that is rolled back
    when any item is wrong, so memory stays flat on 50,000 items and nothing is half-saved.
    Raises :class:`~openai_batches.exceptions.ValidationError` listing every problem (index
    and field), or :class:`InvalidStateError` if the job no longer accepts items.
    """
    return _add(job, ((i, item, None) for i, item in enumerate(items)))


def add_items_from_jsonl(
    job: BatchJob, stream: IO[bytes] | IO[str] | Iterable[bytes] | Iterable[str]
) -> int:
    """Like :func:`add_items`, reading OpenAI's JSONL input format; problems name the line."""

    # Index = line number - 1, so each problem's ``line`` is the editor's line number.
    return _add(job, ((line_no - 1, obj, error) for line_no, obj, error in iter_jsonl(stream)))


def _add(job: BatchJob, rows: Iterable[tuple[int, Any, str | None]]) -> int:
    with transaction.atomic():
        locked = BatchJob.objects.select_for_update().get(pk=job.pk)
        if locked.state != JobState.DRAFT:
            state = locked.get_state_display().lower()
            raise _refusal(locked, "given more items", f"it is {state}; only a draft takes items")
        if reason := access.owner_refusal(locked):
            raise _refusal(locked, "given more items", reason)
        validator = ItemValidator(
            endpoint=locked.endpoint,
            model=locked.model,
            # A job of any size is split into provider batches at submit; only one request
            # larger than a whole batch cannot be sent.
            max_requests=int(app_settings.MAX_REQUESTS_PER_JOB),
            max_bytes=2**62,
            max_line_bytes=providers.part_limits(locked.account)["max_bytes"],
            provider_check=providers.item_checker(locked.account, locked.endpoint),
            existing_count=locked.item_count,
            existing_bytes=locked.input_bytes,
        )
        # Every item's input tokens are estimated now, from the body the validator parsed,
        # so the quota can size parts and reserve budget without reading bodies again.
        estimate = input_token_estimator()
        tokens = 0
        buffer: list[tuple[Any, ...]] = []
        # custom_ids of valid items still to be checked against items stored earlier; kept
        # even after a problem so one error lists every clash too.
        unchecked: list[tuple[int, str]] = []
        for index, obj, parse_error in rows:
            if parse_error is not None:
                validator.count += 1
                validator.add_problem(index, None, parse_error)
                continue
            line = validator.check(index, obj)
            if line is None:
                continue
            if locked.item_count:
                unchecked.append((index, line["custom_id"]))
            try:
                content_type, object_id = _link(obj)
            except TypeError as err:
                validator.add_problem(index, "object", str(err))
                continue
            if not validator.problems:  # once anything is wrong we only keep validating
                item_tokens = min(max(int(estimate(locked.endpoint, line["body"])), 0), _MAX_COUNT)
                tokens += item_tokens
                buffer.append(
                    (
                        line["custom_id"],
                        line["url"],
                        validator.last_body_text,
                        content_type.pk if content_type is not None else None,
                        object_id,
                        validator.last_nbytes,
                        item_tokens,
                    )
                )
            if len(buffer) >= _INSERT_CHUNK or len(unchecked) >= _INSERT_CHUNK:
                _flush(buffer, unchecked, validator, locked)
        _flush(buffer, unchecked, validator, locked)
        if validator.problems:
            transaction.set_rollback(True)
            limit = any(
                p.field is None and "the most one job takes" in p.message
                for p in validator.problems
            )
            error_class = LimitExceeded if limit else ValidationError
            raise error_class(validator.problems, truncated=validator.truncated)
        BatchJob.objects.filter(pk=locked.pk).update(
            item_count=locked.item_count + validator.count,
            input_bytes=locked.input_bytes + validator.nbytes,
            model=validator.model,
            estimated_tokens=locked.estimated_tokens + tokens,
        )
    job.estimated_tokens = locked.estimated_tokens + tokens
    job.item_count = locked.item_count + validator.count
    job.input_bytes = locked.input_bytes + validator.nbytes
    job.model = validator.model
    return validator.count


def _flush(
    buffer: list[tuple[Any, ...]],
    unchecked: list[tuple[int, str]],
    validator: ItemValidator,
    job: BatchJob,
) -> None:
    """Report custom_ids already stored in the job, then insert the buffer if all is well."""
    if unchecked:
        ids = [custom_id for _, custom_id in unchecked]
        taken = set(
            RequestItem.objects.filter(job=job, custom_id__in=ids).values_list(
                "custom_id", flat=True
            )
        )
        for index, custom_id in unchecked:
            if custom_id in taken:
                validator.add_problem(index, "custom_id", f"{custom_id!r} is already in the job")
        unchecked.clear()
    if buffer and not validator.problems:
        _insert(job, buffer)
    buffer.clear()


#: The columns :func:`_insert` fills from each buffered row, in the buffer's order.
_GIVEN = (
    "custom_id",
    "url",
    "body",
    "content_type_id",
    "object_id",
    "nbytes",
    "estimated_tokens",
)


def _insert(job: BatchJob, rows: list[tuple[Any, ...]]) -> None:
    """Insert new items with the database's bulk path, the bodies as the JSON text the
    validator already produced: COPY on PostgreSQL, one ``executemany`` on SQLite,
    ``bulk_create`` elsewhere. (``bulk_create`` builds its SQL value by value and encodes
    every body a second time: most of the cost of adding 50,000 items.)"""
    fields = [f for f in RequestItem._meta.concrete_fields if not f.primary_key]
    given = {name: i for i, name in enumerate(_GIVEN)}
    fixed = {"job_id": job.pk, "method": "POST"}
    columns: list[str] = [str(f.column) for f in fields]
    # Every other column takes its field's default, computed once per chunk.
    defaults: dict[str, Any] = {str(f.column): f.get_default() for f in fields}
    plan: list[tuple[int | None, Any]] = [
        (given[c], None) if c in given else (None, fixed.get(c, defaults[c])) for c in columns
    ]
    values: list[tuple[Any, ...]] = [
        tuple(row[i] if i is not None else v for i, v in plan) for row in rows
    ]
    quote = connection.ops.quote_name
    table = quote(RequestItem._meta.db_table)
    names = ", ".join(quote(c) for c in columns)
    if connection.vendor == "postgresql":
        with (
            connection.cursor() as cursor,
            cursor.cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy,
        ):
            for value in values:
                copy.write_row(value)
    elif connection.vendor == "sqlite":
        marks = ", ".join(["%s"] * len(columns))
        with connection.cursor() as cursor:
            cursor.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", values)  # noqa: S608
    else:
        body = columns.index("body")
        RequestItem.objects.bulk_create(
            [
                RequestItem(
                    **{
                        f.attname: json.loads(str(v)) if i == body else v
                        for i, (f, v) in enumerate(zip(fields, value, strict=True))
                    }
                )
                for value in values
            ],
            batch_size=_INSERT_CHUNK,
        )
