"""The fields of a job's page that are more than a stored value: the owner and items links,
the estimate before submitting, the usage table, the provider batches, their validation
errors and the timeline.

Each is a read-only display method; :mod:`.live` renders the ones that change while a job
moves through Django's own read-only field display, so the page and its updates match.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db import models
from django.db.models import Count
from django.urls import NoReverseMatch, reverse
from django.utils import formats, timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from .. import budgets, services
from ..models import BatchJob, ItemState, JobState
from .display import EMPTY, pretty_json
from .history import batches_table

#: States in which the page shows the job's estimate: those from which it can be submitted.
ESTIMATED_STATES = (JobState.DRAFT, JobState.SUBMIT_FAILED)


class JobPageAdmin(admin.ModelAdmin):
    """The job page's composed fields (see the module)."""

    @admin.display(description=gettext_lazy("owner"))
    def owner_link(self, job: BatchJob) -> SafeString | str:
        if job.owner_id is None:
            return "—"
        owner = job.owner
        assert owner is not None
        url = self._admin_url(owner, "change")
        return format_html('<a href="{}">{}</a>', url, owner) if url else str(owner)

    @admin.display(description=gettext_lazy("items"))
    def items_link(self, job: BatchJob) -> SafeString:
        base = reverse("admin:openai_batches_requestitem_changelist")
        counts = dict(
            job.items.order_by()
            .values_list("state")
            .annotate(n=Count("pk"))
            .values_list("state", "n")
        )
        by_state = format_html_join(
            ", ",
            '<a href="{}?job={}&amp;state__exact={}">{} {}</a>',
            (
                (base, job.pk, state, n, ItemState(state).label.lower())
                for state, n in sorted(counts.items())
            ),
        )
        return format_html(
            '<a href="{}?job={}" class="ob-items-link">{}</a>{}',
            base,
            job.pk,
            ngettext("%(n)d request", "%(n)d requests", job.item_count) % {"n": job.item_count},
            format_html(" ({})", by_state) if counts else "",
        )

    @admin.display(description=gettext_lazy("metadata"))
    def metadata_pretty(self, job: BatchJob) -> SafeString:
        return pretty_json(job.metadata or None)

    @admin.display(description=gettext_lazy("usage"))
    def usage_table(self, job: BatchJob) -> SafeString:
        rows = (
            (_("input tokens"), job.input_tokens),
            (_("cached input tokens"), job.cached_tokens),
            (_("output tokens"), job.output_tokens),
            (_("reasoning tokens"), job.reasoning_tokens),
        )
        return format_html(
            '<table class="ob-table"><tbody>{}</tbody></table>',
            format_html_join(
                "", '<tr><th scope="row">{}</th><td>{}</td></tr>', ((k, f"{v:,}") for k, v in rows)
            ),
        )

    @admin.display(description=gettext_lazy("estimate"))
    def estimate_table(self, job: BatchJob) -> SafeString:
        """What the job will use and cost, shown while it can still be submitted.

        The numbers are :func:`openai_batches.budgets.estimate_job`'s, the very estimate the
        budgets check and the API's ``estimate/`` return; once the job is at the provider its
        usage and cost are the real ones, above.
        """
        if job.state not in ESTIMATED_STATES:
            return EMPTY
        if not job.item_count:
            return format_html('<span class="ob-estimate">{}</span>', _("no requests yet"))
        estimate = budgets.estimate_job(job)
        cost = (
            budgets.usd(estimate.cost)
            if estimate.cost is not None
            else budgets.unpriced_note(job, estimate)
        )
        rows = [
            (_("requests"), f"{estimate.requests:,}"),
            (_("input tokens (estimated)"), f"{estimate.input_tokens:,}"),
            (_("output tokens (at most)"), f"{estimate.output_tokens:,}"),
            (_("cost at batch prices"), cost),
        ]
        # Why Submit is not offered (a budget, the owner's access to the account): the
        # services' own reason, the one the API's actions.submit gives.
        allowed, refusal = services.can_submit(job)
        if not allowed:
            rows.append((_("submit"), _("Submit refused: %(why)s") % {"why": refusal}))
        return format_html(
            '<table class="ob-table ob-estimate"><tbody>{}</tbody></table>',
            format_html_join("", '<tr><th scope="row">{}</th><td>{}</td></tr>', rows),
        )

    @admin.display(description=gettext_lazy("provider batches"))
    def batches_table(self, job: BatchJob) -> SafeString:
        return batches_table(job)

    @admin.display(description=gettext_lazy("validation errors"))
    def provider_errors_table(self, job: BatchJob) -> SafeString:
        # Every part's errors (a line number is within its part's input file), one query.
        parts = [
            (part, e)
            for part, errors in job.batches.exclude(provider_errors=[])
            .order_by("part")
            .values_list("part", "provider_errors")
            if isinstance(errors, list)
            for e in errors
            if isinstance(e, dict)
        ]
        if not parts:
            return EMPTY
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            (
                (
                    part,
                    e.get("line") if e.get("line") is not None else "—",
                    e.get("code") or "",
                    e.get("param") or "",
                    e.get("message") or "",
                )
                for part, e in parts
            ),
        )
        return format_html(
            '<table class="ob-table ob-provider-errors"><thead><tr><th>{}</th><th>{}</th>'
            "<th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>{}</tbody></table>",
            _("part"),
            _("line"),
            _("code"),
            _("param"),
            _("message"),
            rows,
        )

    #: (field, label, source) for the timeline; "provider" rows are the provider's own word.
    _TIMELINE: tuple[tuple[str, Any, str], ...] = (
        ("created_at", gettext_lazy("created here"), "local"),
        ("submit_requested_at", gettext_lazy("submission requested"), "local"),
        ("provider_created_at", gettext_lazy("batch created"), "provider"),
        ("submitted_at", gettext_lazy("submitted"), "local"),
        ("in_progress_at", gettext_lazy("in progress"), "provider"),
        ("finalizing_at", gettext_lazy("finalizing"), "provider"),
        ("cancelling_at", gettext_lazy("cancelling"), "provider"),
        ("completed_at", gettext_lazy("completed"), "provider"),
        ("failed_at", gettext_lazy("failed"), "provider"),
        ("expired_at", gettext_lazy("expired"), "provider"),
        ("cancelled_at", gettext_lazy("cancelled"), "provider"),
        ("ingested_at", gettext_lazy("results ingested"), "local"),
        ("last_polled_at", gettext_lazy("last polled"), "local"),
        ("last_error_at", gettext_lazy("last local error"), "local"),
        ("next_poll_at", gettext_lazy("next poll due"), "local"),
        ("expires_at", gettext_lazy("window closes"), "provider"),
    )

    @admin.display(description=gettext_lazy("timeline"))
    def timeline(self, job: BatchJob) -> SafeString:
        events = sorted(
            (
                (when, label, source, name)
                for name, label, source in self._TIMELINE
                if (when := getattr(job, name, None)) is not None
            ),
            key=lambda e: e[0],
        )
        if not events:
            return EMPTY

        rows = format_html_join(
            "",
            '<tr class="ob-tl-{}" data-field="{}"><td>{}</td><td><span class="ob-source">{}</span>'
            "</td><td>{}</td></tr>",
            (
                (
                    source,
                    name,
                    # Seconds matter here: a fast batch walks several states in a minute.
                    formats.date_format(timezone.localtime(when), "Y-m-d H:i:s"),
                    _("provider") if source == "provider" else _("local"),
                    label,
                )
                for when, label, source, name in events
            ),
        )
        return format_html(
            '<table class="ob-table ob-timeline"><thead><tr><th>{}</th><th>{}</th><th>{}</th>'
            "</tr></thead><tbody>{}</tbody></table>",
            _("when"),
            _("source"),
            _("event"),
            rows,
        )

    def _admin_url(self, obj: models.Model, view: str) -> str | None:
        model = type(obj)
        if not self.admin_site.is_registered(model):
            return None
        try:
            return reverse(
                f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}",
                args=[obj.pk],
                current_app=self.admin_site.name,
            )
        except NoReverseMatch:
            return None
