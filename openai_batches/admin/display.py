"""Display helpers shared by the admin's job pages, item pages, live updates and dashboard.

Everything here turns stored values into small pieces of escaped HTML or short text; nothing
queries more than the correlated subquery :func:`last_batch_end` builds, and nothing writes.
(Item counts are read from the job row, where the services keep them.)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from itertools import chain
from typing import Any

from django.db.models import DateTimeField, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.utils import formats, timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext as _

from ..exceptions import OpenAIBatchesError
from ..models import FINAL_ITEM_STATES, BatchJob, ItemState, JobState, ProviderBatch

logger = logging.getLogger("openai_batches.admin")

#: How many job names a message lists before it says "and N more".
MAX_NAMED = 10

#: Item states counted as failed in a job's progress (never ran counts as not succeeded).
FAILED_ITEM_STATES = sorted(FINAL_ITEM_STATES - {ItemState.SUCCEEDED})

#: Job states in which something is still happening without anyone pressing a button: the
#: live pages poll while a job on them is in one of these, and stop when none is.
MOVING_STATES = frozenset(
    {
        JobState.SUBMIT_REQUESTED,
        JobState.WAITING_QUOTA,  # the line moves it when room frees up
        JobState.SUBMITTING,
        JobState.SUBMITTED,
    }
)

EMPTY = mark_safe('<span class="ob-muted">—</span>')


class Unusable(str):
    """A skip reason that is the deployment's fault, not the job's: reported as an error."""

    __slots__ = ()


def unusable_account(job: BatchJob, err: OpenAIBatchesError) -> Unusable:
    """Why ``job`` cannot be acted on, for the operator: the job and its account, nothing more.

    A ConfigurationError's own text quotes the settings (other accounts' names, the shape of
    OPENAI_BATCHES); it goes to the server log, where whoever can fix the settings reads it.
    """
    logger.error("openai_batches admin: job %s (account %r): %s", job.pk, job.account, err)
    return Unusable(
        _(
            "its account “%(account)s” is not usable with the server's current OPENAI_BATCHES "
            "setting; fix the setting (manage.py check names the problem) and try again"
        )
        % {"account": job.account}
    )


def last_batch_end() -> Subquery:
    """A correlated subquery: when the outer job's latest-ending provider batch ended
    (completed, failed, expired or cancelled at the provider); null while none has."""
    ends = (
        ProviderBatch.objects.filter(job=OuterRef("pk"))
        .annotate(end=Coalesce("completed_at", "failed_at", "expired_at", "cancelled_at"))
        .filter(end__isnull=False)
        .order_by("-end")
        .values("end")[:1]
    )
    return Subquery(ends, output_field=DateTimeField())


def names(jobs: Sequence[BatchJob]) -> str:
    shown = ", ".join(str(job) for job in jobs[:MAX_NAMED])
    more = len(jobs) - MAX_NAMED
    return shown + (_(" and %(n)d more") % {"n": more} if more > 0 else "")


def pretty_json(value: Any) -> SafeString:
    if value is None or value == "":
        return EMPTY
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)
    return format_html('<pre class="ob-json">{}</pre>', text)


def first_chunk_then_rest(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Pull the first chunk now, so a missing file or a provider error surfaces here.

    Services may be generators that only raise on the first ``next()``; once a streaming
    response has started sending, an error can no longer become a message for the operator.
    """
    first = next(chunks, None)
    return chain([] if first is None else [first], chunks)


# -- short forms for a list that must fit a laptop screen ----------------------------------


def short_uuid(job: BatchJob) -> str:
    """The UUID's first 8 hex digits: enough to tell two jobs of the same name apart."""
    return job.uuid.hex[:8]


def job_label(job: BatchJob) -> str:
    """A unique, short label: ``#12 Nightly summaries`` (or ``#12 3f2a9c1b`` unnamed)."""
    return f"#{job.pk} {job.name or short_uuid(job)}"


def compact_time(when: datetime | None) -> SafeString:
    """``Nov 26 14:02`` (this year) or ``2024-11-26``; the full time is in the tooltip."""
    if when is None:
        return EMPTY
    local = timezone.localtime(when)
    now = timezone.localtime()
    short = (
        formats.date_format(local, "M j H:i")
        if local.year == now.year
        else formats.date_format(local, "Y-m-d")
    )
    return format_html(
        '<time class="ob-time" datetime="{}" title="{}">{}</time>',
        local.isoformat(),
        formats.date_format(local, "Y-m-d H:i:s T"),
        short,
    )


def compact_number(n: int | Decimal) -> str:
    """``950``, ``12.3k``, ``4.5M``, ``1.2B``: a token count at a glance."""
    value = float(n)
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            text = f"{value / limit:.1f}".removesuffix(".0")
            return f"{text}{suffix}"
    return f"{int(value)}"


def human_size(n: int | None) -> str:
    """Bytes for people: ``812 B``, ``4.2 KB``, ``97.7 MB`` (powers of 1024, as files are)."""
    value = float(n or 0)
    if value < 1024:
        return f"{int(value)} B"
    for unit in ("KB", "MB", "GB"):
        value /= 1024
        if value < 1024 or unit == "GB":
            break
    return f"{value:.1f} {unit}"


def age(since: datetime | None) -> str:
    """How long ago, in the largest unit that fits: ``42 s``, ``17 min``, ``5 h 3 min``, ``2 d``."""
    if since is None:
        return "—"
    seconds = max(int((timezone.now() - since).total_seconds()), 0)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def money(value: Decimal | None) -> str:
    return "—" if value is None else f"${value:.4f}"


# -- the job's badges and progress bar (list, page, live updates) ---------------------------


def status_badge(job: BatchJob) -> SafeString:
    local = format_html(
        '<span class="ob-badge ob-state-{}" data-state="{}">{}</span>',
        job.state,
        job.state,
        job.get_state_display(),
    )
    if not job.provider_status:
        return local
    provider = format_html(
        '<span class="ob-badge ob-status-{}" data-provider-status="{}" title="{}">{}</span>',
        job.provider_status,
        job.provider_status,
        _("provider status"),
        job.get_provider_status_display(),
    )
    return format_html('{} <span class="ob-badge-sep"></span>{}', local, provider)


def progress_bar(done: int, failed: int, total: int) -> SafeString:
    pct_ok = 100 * done / total if total else 0
    pct_fail = 100 * failed / total if total else 0
    title = _("%(ok)d succeeded, %(failed)d failed of %(total)d") % {
        "ok": done,
        "failed": failed,
        "total": total,
    }
    return format_html(
        '<div class="ob-progress-wrap" title="{}" data-completed="{}" data-failed="{}"'
        ' data-total="{}"><div class="ob-progress" role="progressbar" aria-valuemin="0"'
        ' aria-valuemax="{}" aria-valuenow="{}"><span class="ob-progress-ok"'
        ' style="width:{}%"></span><span class="ob-progress-failed" style="width:{}%">'
        '</span></div><span class="ob-progress-text">{} / {}{}</span></div>',
        title,
        done,
        failed,
        total,
        total,
        done + failed,
        f"{pct_ok:.1f}",
        f"{pct_fail:.1f}",
        done + failed,
        total,
        format_html(' <span class="ob-fail-count">({} ✗)</span>', failed) if failed else "",
    )
