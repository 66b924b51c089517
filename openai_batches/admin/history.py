"""The job's provider batches and an item's attempts, as compact tables on their pages.

A job is carried by one or more provider batches (parts): the first, further parts when it
was larger than one batch takes, and follow-up parts for requests sent again. The job page
lists them (one query); an item's page lists what each send of the request brought back
(one query). Both are read-only views of rows only the services write.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _

from ..models import BatchJob, ProviderBatch, RequestAttempt, RequestItem
from .display import EMPTY, compact_number, compact_time, money


def _table(css: str, headers: Iterable[Any], rows: SafeString) -> SafeString:
    head = format_html_join("", "<th>{}</th>", ((h,) for h in headers))
    return format_html(
        '<table class="ob-table {}"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>',
        css,
        head,
        rows,
    )


def batch_status(batch: ProviderBatch) -> SafeString:
    if not batch.provider_status:
        return format_html(
            '<span class="ob-badge ob-state-{}" data-state="{}">{}</span>',
            batch.state,
            batch.state,
            batch.get_state_display(),
        )
    return format_html(
        '<span class="ob-badge ob-status-{}" data-provider-status="{}">{}</span>',
        batch.provider_status,
        batch.provider_status,
        batch.get_provider_status_display(),
    )


def _files(batch: ProviderBatch) -> SafeString:
    files = [
        (label, file_id)
        for label, file_id in (
            (_("in"), batch.input_file_id),
            (_("out"), batch.output_file_id),
            (_("err"), batch.error_file_id),
        )
        if file_id
    ]
    if not files:
        return EMPTY
    return format_html_join(
        "<br>", '{} <code class="ob-file-id">{}</code>', ((label, fid) for label, fid in files)
    )


def batch_requests(batch: ProviderBatch) -> SafeString:
    # Before the provider reports counts, the planned size is all there is.
    if not batch.request_count_total:
        return format_html('<span title="{}">{}</span>', _("planned"), f"{batch.item_count:,}")
    return format_html(
        '<span title="{}">{} / {}{}</span>',
        _("completed / total (failed)"),
        f"{batch.request_count_completed:,}",
        f"{batch.request_count_total:,}",
        format_html(' <span class="ob-fail-count">({} ✗)</span>', batch.request_count_failed)
        if batch.request_count_failed
        else "",
    )


def _tokens(in_tokens: int, out_tokens: int) -> SafeString | str:
    if not (in_tokens or out_tokens):
        return EMPTY
    return format_html(
        '<span title="{} in / {} out">{} / {}</span>',
        f"{in_tokens:,}",
        f"{out_tokens:,}",
        compact_number(in_tokens),
        compact_number(out_tokens),
    )


def batches_table(job: BatchJob) -> SafeString:
    """One row per provider batch of ``job``, in part order (one query)."""
    batches = list(job.batches.order_by("part"))
    if not batches:
        return EMPTY
    rows = format_html_join(
        "",
        '<tr data-part="{}"><td>{}<br><span class="ob-muted">{}</span></td><td>{}<br>{}</td>'
        "<td>{}</td><td>{}</td><td>{}</td><td>{}<br>{}</td><td>{}</td></tr>",
        (
            (
                b.part,
                b.part,
                b.get_reason_display(),
                format_html('<code class="ob-batch-id">{}</code>', b.provider_batch_id)
                if b.provider_batch_id
                else EMPTY,
                batch_status(b),
                batch_requests(b),
                _tokens(b.input_tokens, b.output_tokens),
                money(b.cost),
                compact_time(b.submitted_at),
                compact_time(b.ingested_at),
                _files(b),
            )
            for b in batches
        ),
    )
    return _table(
        "ob-batches",
        (
            _("part"),
            _("provider batch"),
            _("requests"),
            _("tokens in / out"),
            _("cost (USD)"),
            _("submitted / ingested"),
            _("files"),
        ),
        rows,
    )


def error_summary(error: Any) -> tuple[str, str]:
    """(code, message) of an attempt's error: a never-run request's error object, or the
    error body of a request that ran and failed (``{"error": {...}}``)."""
    if not isinstance(error, dict):
        return "", ""
    nested = error.get("error")
    inner: dict[str, Any] = nested if isinstance(nested, dict) else error
    code = inner.get("code") or inner.get("type") or ""
    return str(code), str(inner.get("message") or "")


def attempts_table(item: RequestItem) -> SafeString:
    """One row per time ``item`` was sent and a result came back (one query)."""
    attempts: list[RequestAttempt] = list(item.attempts.select_related("batch").order_by("number"))
    if not attempts:
        return EMPTY

    def row(a: RequestAttempt) -> tuple[Any, ...]:
        code, message = error_summary(a.error)
        return (
            a.number,
            a.number,
            a.batch.part,
            format_html('<code class="ob-batch-id">{}</code>', a.batch.provider_batch_id)
            if a.batch.provider_batch_id
            else "",
            a.state,
            a.state,
            a.get_state_display(),
            a.status_code if a.status_code is not None else "—",
            format_html("<code>{}</code> ", code) if code else "",
            message or ("" if code else "—"),
            _tokens(a.input_tokens, a.output_tokens),
            _("yes") if a.retried else _("no"),
        )

    rows = format_html_join(
        "",
        '<tr data-attempt="{}"><td>{}</td><td>{} {}</td><td><span class="ob-badge ob-item-{}" '
        'data-state="{}">{}</span></td><td>{}</td><td>{}{}</td><td>{}</td><td>{}</td></tr>',
        (row(a) for a in attempts),
    )
    return _table(
        "ob-attempts",
        (
            _("attempt"),
            _("part / provider batch"),
            _("outcome"),
            _("status"),
            _("error"),
            _("tokens in / out"),
            _("retried"),
        ),
        rows,
    )
