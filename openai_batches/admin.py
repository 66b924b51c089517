"""The Django admin as an operator console for batch jobs and their request items.

The admin is a thin entry point: every action calls :mod:`openai_batches.services` and reports
with ``message_user`` how many jobs it acted on and which it skipped and why. It never writes
a lifecycle field itself. Counts on the job list come from queryset annotations (correlated
subqueries), so the number of queries does not grow with the rows on the page.

Nothing here renders account credentials: only the account *name* is shown anywhere.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from itertools import chain
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.options import IS_POPUP_VAR
from django.core.exceptions import PermissionDenied
from django.db import models, transaction
from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, URLPattern, path, reverse
from django.utils import formats, timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import slugify
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from . import export, services
from .conf import app_settings
from .exceptions import (
    ConfigurationError,
    InvalidStateError,
    OpenAIBatchesError,
    Problem,
    ProviderError,
    ValidationError,
)
from .forms import BatchJobCreateForm
from .models import (
    FINAL_ITEM_STATES,
    BatchJob,
    ItemState,
    JobState,
    RequestItem,
)
from .results import Result

logger = logging.getLogger(__name__)

#: How many job names a message lists before it says "and N more".
_MAX_NAMED = 10


class _Unusable(str):
    """A skip reason that is the deployment's fault, not the job's: reported as an error."""


def _unusable_account(job: BatchJob, err: OpenAIBatchesError) -> _Unusable:
    """Why ``job`` cannot be acted on, for the operator: the job and its account, nothing more.

    A ConfigurationError's own text quotes the settings (other accounts' names, the shape of
    OPENAI_BATCHES); it goes to the server log, where whoever can fix the settings reads it.
    """
    logger.error("openai_batches admin: job %s (account %r): %s", job.pk, job.account, err)
    return _Unusable(
        _(
            "its account “%(account)s” is not usable with the server's current OPENAI_BATCHES "
            "setting; fix the setting (manage.py check names the problem) and try again"
        )
        % {"account": job.account}
    )


#: Item states counted as failed in a job's progress (never ran counts as not succeeded).
_FAILED_ITEM_STATES = sorted(FINAL_ITEM_STATES - {ItemState.SUCCEEDED})


def _count_items(**filters: Any) -> Coalesce:
    """A correlated COUNT of the outer job's items.

    A subquery (rather than ``Count("items")`` with GROUP BY) is evaluated only for the rows
    of the page on PostgreSQL and uses the ``(job, state)`` index, so a page of 100 jobs
    stays cheap however many items the table holds.
    """
    counted = (
        RequestItem.objects.filter(job=OuterRef("pk"), **filters)
        .order_by()
        .values("job")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(counted, output_field=IntegerField()), Value(0))


def _names(jobs: Sequence[BatchJob]) -> str:
    shown = ", ".join(str(job) for job in jobs[:_MAX_NAMED])
    more = len(jobs) - _MAX_NAMED
    return shown + (_(" and %(n)d more") % {"n": more} if more > 0 else "")


def _pretty_json(value: Any) -> SafeString:
    if value is None or value == "":
        return mark_safe('<span class="ob-muted">—</span>')
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)
    return format_html('<pre class="ob-json">{}</pre>', text)


def _first_chunk_then_rest(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Pull the first chunk now, so a missing file or a provider error surfaces here.

    Services may be generators that only raise on the first ``next()``; once a streaming
    response has started sending, an error can no longer become a message for the operator.
    """
    first = next(chunks, None)
    return chain([] if first is None else [first], chunks)


# --------------------------------------------------------------------------------------------
# Filters
# --------------------------------------------------------------------------------------------


class JobFilter(admin.SimpleListFilter):
    """Filter items by job, listing the most recent jobs (not every job ever made)."""

    title = gettext_lazy("job")
    parameter_name = "job"
    _RECENT = 20

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        recent = list(BatchJob.objects.order_by("-created_at", "-pk")[: self._RECENT])
        selected = self.value()
        if selected and selected.isdigit() and all(str(j.pk) != selected for j in recent):
            recent += list(BatchJob.objects.filter(pk=int(selected)))
        return [(str(job.pk), str(job)) for job in recent]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if not value:
            return queryset
        if not value.isdigit():
            return queryset.none()
        return queryset.filter(job_id=int(value))


# --------------------------------------------------------------------------------------------
# BatchJob
# --------------------------------------------------------------------------------------------


ActionResult = tuple[list[BatchJob], list[tuple[BatchJob, str]]]


@admin.register(BatchJob)
class BatchJobAdmin(admin.ModelAdmin):
    list_display = (
        "display_name",
        "status_badge",
        "progress",
        "item_count",
        "created_at",
        "submitted_at",
        "finished_at",
        "tokens",
        "cost",
    )
    list_display_links = ("display_name",)
    list_filter = (
        "state",
        "provider_status",
        "endpoint",
        "account",
        ("owner", admin.RelatedOnlyFieldListFilter),
    )
    search_fields = ("name", "uuid", "provider_batch_id")
    date_hierarchy = "created_at"
    list_select_related = ("owner",)
    list_per_page = 50
    actions = (
        "submit_jobs",
        "refresh_jobs",
        "cancel_jobs",
        "download_input",
        "download_output",
        "download_errors",
        "export_results_csv",
        "export_results_jsonl",
    )
    change_form_template = "openai_batches/batchjob/change_form.html"
    add_form_template = "openai_batches/batchjob/add_form.html"

    fieldsets = (
        (
            None,
            {
                "fields": (
                    "name",
                    "uuid",
                    "status_badge",
                    "endpoint",
                    "model",
                    "account",
                    "completion_window",
                    "owner_link",
                    "items_link",
                    "input_bytes",
                    "metadata_pretty",
                )
            },
        ),
        (
            gettext_lazy("Progress and usage"),
            {"fields": ("progress", "usage_table", "cost")},
        ),
        (
            gettext_lazy("Provider"),
            {
                "fields": (
                    "provider_batch_id",
                    "provider_status",
                    "provider_model",
                    "input_file_id",
                    "output_file_id",
                    "error_file_id",
                    "provider_errors_table",
                )
            },
        ),
        (gettext_lazy("Timeline"), {"fields": ("timeline",)}),
        (gettext_lazy("Last local error"), {"fields": ("last_error", "last_error_at")}),
    )
    #: Everything but the name: the provider owns its fields and only services change state.
    readonly_fields = tuple(
        field
        for _, options in fieldsets
        for field in options["fields"]
        if isinstance(field, str) and field != "name"
    )

    class Media:
        css = {"all": ("openai_batches/admin.css",)}

    # -- queryset -------------------------------------------------------------------------

    def get_queryset(self, request: HttpRequest) -> QuerySet[BatchJob]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                n_succeeded=_count_items(state=ItemState.SUCCEEDED),
                n_failed=_count_items(state__in=_FAILED_ITEM_STATES),
            )
        )

    # -- list columns ---------------------------------------------------------------------

    @admin.display(description=gettext_lazy("name"), ordering="name")
    def display_name(self, job: BatchJob) -> str:
        return str(job)

    @admin.display(description=gettext_lazy("status"), ordering="state")
    def status_badge(self, job: BatchJob) -> SafeString:
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
        return format_html("{} {}", local, provider)

    @admin.display(description=gettext_lazy("progress"))
    def progress(self, job: BatchJob) -> SafeString:
        done, failed, total = self._progress_counts(job)
        pct_ok = 100 * done / total if total else 0
        pct_fail = 100 * failed / total if total else 0
        title = _("%(ok)d succeeded, %(failed)d failed of %(total)d") % {
            "ok": done,
            "failed": failed,
            "total": total,
        }
        return format_html(
            '<div class="ob-progress-wrap" title="{}" data-completed="{}" data-failed="{}"'
            ' data-total="{}"><div class="ob-progress"><span class="ob-progress-ok"'
            ' style="width:{}%"></span><span class="ob-progress-failed" style="width:{}%">'
            '</span></div><span class="ob-progress-text">{} / {}{}</span></div>',
            title,
            done,
            failed,
            total,
            f"{pct_ok:.1f}",
            f"{pct_fail:.1f}",
            done + failed,
            total,
            format_html(' <span class="ob-fail-count">({} ✗)</span>', failed) if failed else "",
        )

    def _progress_counts(self, job: BatchJob) -> tuple[int, int, int]:
        """(succeeded, failed, total): the provider's live counts until results are ingested.

        While a batch runs, the items learn nothing; the provider's request_counts are the
        only progress there is. Once ingested, the items are the truth (they also count
        expired/cancelled requests the provider never ran).
        """
        total = job.item_count or job.request_count_total
        if job.ingested_at is None and job.provider_status:
            return job.request_count_completed, job.request_count_failed, total
        ok = getattr(job, "n_succeeded", None)
        failed = getattr(job, "n_failed", None)
        if ok is None or failed is None:  # a job not loaded through get_queryset
            counts = job.items.aggregate(
                ok=Count("pk", filter=Q(state=ItemState.SUCCEEDED)),
                failed=Count("pk", filter=Q(state__in=_FAILED_ITEM_STATES)),
            )
            ok, failed = counts["ok"], counts["failed"]
        return ok, failed, total

    @admin.display(description=gettext_lazy("finished"))
    def finished_at(self, job: BatchJob) -> datetime | None:
        return (
            job.completed_at
            or job.failed_at
            or job.expired_at
            or job.cancelled_at
            or (job.updated_at if job.state == JobState.CANCELLED else None)
        )

    @admin.display(description=gettext_lazy("tokens"))
    def tokens(self, job: BatchJob) -> str:
        if not (job.input_tokens or job.output_tokens):
            return "—"
        return f"{job.input_tokens:,} in / {job.output_tokens:,} out"

    @admin.display(description=gettext_lazy("cost (USD)"))
    def cost(self, job: BatchJob) -> str:
        value = services.job_cost(job)
        return "—" if value is None else f"${value:.4f}"

    # -- job page fields ------------------------------------------------------------------

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
        return _pretty_json(job.metadata or None)

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

    @admin.display(description=gettext_lazy("validation errors"))
    def provider_errors_table(self, job: BatchJob) -> SafeString:
        errors = job.provider_errors or []
        if not errors:
            return mark_safe('<span class="ob-muted">—</span>')
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            (
                (
                    e.get("line") if e.get("line") is not None else "—",
                    e.get("code") or "",
                    e.get("param") or "",
                    e.get("message") or "",
                )
                for e in errors
                if isinstance(e, dict)
            ),
        )
        return format_html(
            '<table class="ob-table ob-provider-errors"><thead><tr><th>{}</th><th>{}</th>'
            "<th>{}</th><th>{}</th></tr></thead><tbody>{}</tbody></table>",
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
            return mark_safe('<span class="ob-muted">—</span>')

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

    # -- permissions and saving -----------------------------------------------------------

    def has_delete_permission(self, request: HttpRequest, obj: BatchJob | None = None) -> bool:
        # Deleting a job the provider is running would orphan a paid batch and lose its
        # results; cancel it first (the cancelled job can then be deleted).
        if obj is not None and not services.can_delete(obj)[0]:
            return False
        return super().has_delete_permission(request, obj)

    def delete_model(self, request: HttpRequest, obj: BatchJob) -> None:
        services.delete_job(obj)  # re-checks the state under a row lock

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        # Bulk delete cannot tell running jobs apart; delete from the job page instead.
        actions.pop("delete_selected", None)
        return actions

    def save_model(self, request: HttpRequest, obj: BatchJob, form: Any, change: bool) -> None:
        # Only the name is editable here. Saving the whole row would write back the state
        # and provider fields as they were when the page was loaded, undoing whatever a
        # worker recorded meanwhile.
        if change:
            fields = [f for f in form.changed_data if f == "name"]
            if fields:
                obj.save(update_fields=[*fields, "updated_at"])
            return
        super().save_model(request, obj, form, change)

    # -- add: create a job from JSONL -----------------------------------------------------

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        try:
            # The form lists the accounts; a broken ACCOUNTS setting would otherwise be a
            # 500 while the page renders, after this view has returned.
            app_settings.account_names()
        except ConfigurationError as err:
            return self._cannot_create(request, err)
        problems: list[Problem] = []
        truncated = False
        if request.method == "POST":
            form = BatchJobCreateForm(request.POST, request.FILES)
            if form.is_valid():
                try:
                    job, count = self._create_from_jsonl(request, form)
                except ValidationError as err:
                    problems, truncated = list(err.problems), err.truncated
                except ConfigurationError as err:
                    return self._cannot_create(request, err)
                else:
                    self.log_addition(request, job, [{"added": {}}])
                    self.message_user(
                        request,
                        ngettext(
                            "Created job “%(job)s” with %(n)d request. Submit it when ready.",
                            "Created job “%(job)s” with %(n)d requests. Submit it when ready.",
                            count,
                        )
                        % {"job": job, "n": count},
                        messages.SUCCESS,
                    )
                    return HttpResponseRedirect(
                        reverse("admin:openai_batches_batchjob_change", args=[job.pk])
                    )
        else:
            form = BatchJobCreateForm()
        opts = self.opts
        context = {
            **self.admin_site.each_context(request),
            "title": _("Create a batch job from JSONL"),
            "subtitle": None,
            "opts": opts,
            "app_label": opts.app_label,
            "form": form,
            "media": self.media + form.media,
            "problems": problems,
            "line_problems": [p for p in problems if p.line is not None],
            "job_problems": [p for p in problems if p.line is None],
            "truncated": truncated,
            "has_view_permission": self.has_view_permission(request),
            "is_popup": IS_POPUP_VAR in request.GET,
            **(extra_context or {}),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.add_form_template or "", context)

    def _cannot_create(self, request: HttpRequest, err: ConfigurationError) -> HttpResponse:
        """Back to the job list with why no job can be created (the details go to the log)."""
        logger.error("openai_batches admin: cannot create jobs: %s", err)
        self.message_user(
            request,
            _(
                "No job can be created until the server's OPENAI_BATCHES setting is fixed "
                "(manage.py check names the problem)."
            ),
            messages.ERROR,
        )
        return HttpResponseRedirect(reverse("admin:openai_batches_batchjob_changelist"))

    def _create_from_jsonl(
        self, request: HttpRequest, form: BatchJobCreateForm
    ) -> tuple[BatchJob, int]:
        """Create the job and its items in one transaction: all of it, or nothing."""
        data = form.cleaned_data
        with transaction.atomic():
            job = services.create_job(
                endpoint=data["endpoint"],
                name=data.get("name") or "",
                metadata=data.get("metadata") or {},
                account=data["account"],
                owner=request.user,
                jsonl=form.jsonl_lines(),
            )
            if job.item_count == 0:
                # A job without requests can never be submitted; do not leave it behind.
                raise ValidationError([Problem(None, "input", _("The JSONL holds no requests."))])
        return job, job.item_count

    # -- actions --------------------------------------------------------------------------

    def _each(
        self,
        queryset: QuerySet[BatchJob],
        call: Callable[[BatchJob], Any],
    ) -> ActionResult:
        """Run ``call`` per job; collect the jobs it acted on and (job, reason) for the rest.

        Wrong-state and provider errors are expected in a bulk action (one job of ten may
        have finished meanwhile); they become reasons in the message, never a 500.
        """
        done: list[BatchJob] = []
        skipped: list[tuple[BatchJob, str]] = []
        for job in queryset.order_by("pk"):
            try:
                call(job)
            except InvalidStateError as err:
                skipped.append((job, str(err)))
            except ProviderError as err:
                skipped.append((job, _("the provider call failed: %(err)s") % {"err": err}))
            except ConfigurationError as err:
                skipped.append((job, _unusable_account(job, err)))
            except OpenAIBatchesError as err:
                skipped.append((job, _Unusable(str(err))))
            else:
                done.append(job)
        return done, skipped

    def _report(self, request: HttpRequest, verb: str, result: ActionResult) -> None:
        done, skipped = result
        if done:
            self.message_user(
                request,
                ngettext(
                    "%(verb)s %(n)d job: %(names)s.",
                    "%(verb)s %(n)d jobs: %(names)s.",
                    len(done),
                )
                % {"verb": verb, "n": len(done), "names": _names(done)},
                messages.SUCCESS,
            )
        if skipped:
            reasons = "; ".join(f"“{job}”: {reason}" for job, reason in skipped[:_MAX_NAMED])
            more = len(skipped) - _MAX_NAMED
            if more > 0:
                reasons += _(" and %(n)d more") % {"n": more}
            self.message_user(
                request,
                ngettext(
                    "Skipped %(n)d job. %(reasons)s",
                    "Skipped %(n)d jobs. %(reasons)s",
                    len(skipped),
                )
                % {"n": len(skipped), "reasons": reasons},
                messages.ERROR
                if not done or any(isinstance(r, _Unusable) for _, r in skipped)
                else messages.WARNING,
            )

    @admin.action(description=gettext_lazy("Submit selected jobs"), permissions=["change"])
    def submit_jobs(self, request: HttpRequest, queryset: QuerySet[BatchJob]) -> None:
        self._report(
            request, _("Submission requested for"), self._each(queryset, services.request_submit)
        )

    @admin.action(description=gettext_lazy("Refresh now from the provider"), permissions=["change"])
    def refresh_jobs(self, request: HttpRequest, queryset: QuerySet[BatchJob]) -> None:
        self._report(request, _("Refreshed"), self._each(queryset, services.refresh))

    @admin.action(description=gettext_lazy("Cancel selected jobs"), permissions=["change"])
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[BatchJob]) -> None:
        self._report(request, _("Cancelled"), self._each(queryset, services.cancel))

    @admin.action(description=gettext_lazy("Download input JSONL"), permissions=["change"])
    def download_input(
        self, request: HttpRequest, queryset: QuerySet[BatchJob]
    ) -> HttpResponseBase | None:
        return self._download(request, queryset, "input")

    @admin.action(description=gettext_lazy("Download output JSONL"), permissions=["change"])
    def download_output(
        self, request: HttpRequest, queryset: QuerySet[BatchJob]
    ) -> HttpResponseBase | None:
        return self._download(request, queryset, "output")

    @admin.action(description=gettext_lazy("Download error JSONL"), permissions=["change"])
    def download_errors(
        self, request: HttpRequest, queryset: QuerySet[BatchJob]
    ) -> HttpResponseBase | None:
        return self._download(request, queryset, "error")

    def _download(
        self, request: HttpRequest, queryset: QuerySet[BatchJob], which: str
    ) -> HttpResponseBase | None:
        jobs = list(queryset[:2])
        if len(jobs) != 1:
            self.message_user(
                request,
                _("Select exactly one job to download its %(which)s file.") % {"which": which},
                messages.ERROR,
            )
            return None
        job = jobs[0]
        try:
            if which == "input":
                if not job.item_count:
                    raise InvalidStateError(
                        _("Job “%(job)s” has no requests.") % {"job": job}, job_id=job.pk
                    )
                chunks: Iterable[bytes] = services.iter_input_jsonl(job)
            else:
                chunks = services.iter_provider_file(job, which)
            stream = _first_chunk_then_rest(iter(chunks))
        except InvalidStateError as err:
            self.message_user(
                request,
                _("No %(which)s file to download for “%(job)s”: %(err)s")
                % {"which": which, "job": job, "err": err},
                messages.ERROR,
            )
            return None
        except ProviderError as err:
            self.message_user(
                request,
                _("Could not download the %(which)s file of “%(job)s”: %(err)s")
                % {"which": which, "job": job, "err": err},
                messages.ERROR,
            )
            return None
        except OpenAIBatchesError as err:
            reason = (
                _unusable_account(job, err) if isinstance(err, ConfigurationError) else str(err)
            )
            self.message_user(
                request,
                _("Could not download the %(which)s file of “%(job)s”: %(err)s")
                % {"which": which, "job": job, "err": reason},
                messages.ERROR,
            )
            return None
        response = StreamingHttpResponse(stream, content_type="application/jsonl")
        stem = slugify(job.name)[:50] or f"batch-{job.pk}"
        response["Content-Disposition"] = f'attachment; filename="{stem}-{job.pk}-{which}.jsonl"'
        return response

    @admin.action(description=gettext_lazy("Export results as CSV"), permissions=["change"])
    def export_results_csv(
        self, request: HttpRequest, queryset: QuerySet[BatchJob]
    ) -> HttpResponseBase | None:
        return self._export(request, queryset, "csv")

    @admin.action(description=gettext_lazy("Export results as JSONL"), permissions=["change"])
    def export_results_jsonl(
        self, request: HttpRequest, queryset: QuerySet[BatchJob]
    ) -> HttpResponseBase | None:
        return self._export(request, queryset, "jsonl")

    def _export(
        self, request: HttpRequest, queryset: QuerySet[BatchJob], fmt: str
    ) -> HttpResponseBase | None:
        jobs = list(queryset[:2])
        if len(jobs) != 1:
            self.message_user(
                request, _("Select exactly one job to export its results."), messages.ERROR
            )
            return None
        job = jobs[0]
        response = StreamingHttpResponse(
            export.export_results(job, fmt), content_type=export.content_type(fmt)
        )
        response["Content-Disposition"] = f'attachment; filename="{export.filename(job, fmt)}"'
        return response

    # -- the job page's buttons -----------------------------------------------------------

    #: Buttons on the job page, in order: (action name, label).
    _OBJECT_BUTTONS: tuple[tuple[str, Any], ...] = (
        ("submit_jobs", gettext_lazy("Submit")),
        ("refresh_jobs", gettext_lazy("Refresh now")),
        ("cancel_jobs", gettext_lazy("Cancel")),
        ("download_input", gettext_lazy("Download input")),
        ("download_output", gettext_lazy("Download output")),
        ("download_errors", gettext_lazy("Download errors")),
        ("export_results_csv", gettext_lazy("Export results (CSV)")),
    )

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        own = [
            path(
                "<path:object_id>/run/<str:action>/",
                self.admin_site.admin_view(self.object_action_view),
                name="{}_{}_object_action".format(*info),
            )
        ]
        # Before the defaults: their "<path:object_id>/" catch-all would swallow ours.
        return own + super().get_urls()

    def object_buttons(self, request: HttpRequest, job: BatchJob) -> list[dict[str, Any]]:
        """The actions offered on ``job``'s page: only those the user may run and that fit."""
        allowed = self.get_actions(request)
        fits: dict[str, bool] = {
            # services.can_* is the authority on states; the page only mirrors it.
            "submit_jobs": services.can_submit(job)[0],
            "refresh_jobs": services.can_refresh(job)[0],
            "cancel_jobs": services.can_cancel(job)[0],
            "download_input": job.item_count > 0,
            "download_output": bool(job.output_file_id),
            "download_errors": bool(job.error_file_id),
            "export_results_csv": job.ingested_at is not None,
            "export_results_jsonl": job.ingested_at is not None,
        }
        url_name = f"admin:{self.opts.app_label}_{self.opts.model_name}_object_action"
        return [
            {
                "name": name,
                "label": label,
                "url": reverse(url_name, args=[job.pk, name]),
                "download": name.startswith(("download_", "export_")),
            }
            for name, label in self._OBJECT_BUTTONS
            if name in allowed and fits[name]
        ]

    def object_action_view(
        self, request: HttpRequest, object_id: str, action: str
    ) -> HttpResponseBase:
        """Run one of the changelist actions on a single job, from a button on its page."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        job = self.get_object(request, object_id)
        if job is None:
            raise Http404(_("No batch job with id %(id)s.") % {"id": object_id})
        actions = self.get_actions(request)
        if action not in actions or not self.has_change_permission(request, job):
            raise PermissionDenied
        func = actions[action][0]
        response = func(self, request, self.get_queryset(request).filter(pk=job.pk))
        if isinstance(response, HttpResponseBase):
            return response
        return HttpResponseRedirect(
            reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_change", args=[job.pk])
        )

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        extra = dict(extra_context or {})
        job = self.get_object(request, object_id)
        if job is not None:
            extra["object_buttons"] = self.object_buttons(request, job)
        return super().change_view(request, object_id, form_url, extra)

    # -- helpers --------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# RequestItem
# --------------------------------------------------------------------------------------------


@admin.register(RequestItem)
class RequestItemAdmin(admin.ModelAdmin):
    list_display = (
        "custom_id",
        "job_link",
        "state_badge",
        "answer_short",
        "status_code",
        "tokens",
        "completed_at",
        "linked_object",
    )
    list_filter = ("state", JobFilter)
    search_fields = ("custom_id",)
    list_select_related = ("job", "content_type")
    list_per_page = 100
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "custom_id",
                    "job_link",
                    "state_badge",
                    "status_code",
                    "linked_object",
                    "completed_at",
                    "announced",
                )
            },
        ),
        (gettext_lazy("Request"), {"fields": ("method", "url", "body_pretty")}),
        (
            gettext_lazy("Result"),
            {"fields": ("answer", "parsed_pretty", "response_pretty", "error_pretty")},
        ),
        (
            gettext_lazy("Provider"),
            {
                "fields": (
                    "provider_request_id",
                    "result_line_id",
                    "input_tokens",
                    "cached_tokens",
                    "output_tokens",
                    "reasoning_tokens",
                )
            },
        ),
    )
    readonly_fields = (
        "custom_id",
        "job_link",
        "state_badge",
        "status_code",
        "linked_object",
        "completed_at",
        "announced",
        "method",
        "url",
        "body_pretty",
        "answer",
        "parsed_pretty",
        "response_pretty",
        "error_pretty",
        "provider_request_id",
        "result_line_id",
        "input_tokens",
        "cached_tokens",
        "output_tokens",
        "reasoning_tokens",
    )

    class Media:
        css = {"all": ("openai_batches/admin.css",)}

    def has_change_permission(self, request: HttpRequest, obj: RequestItem | None = None) -> bool:
        # Only services write items (results, states); the page is a read-only view, so
        # it shows "Close" rather than a Save button that would save nothing.
        return False

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Items are added with their job (the JSONL form, services.add_items), all-or-nothing.
        return False

    # Removing one request would desynchronise the job's counts and, once submitted, the
    # provider's batch: items go only with their job. has_delete_permission keeps Django's
    # answer because deleting a job checks it for the job's items (the cascade).
    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        raise PermissionDenied

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        return super().change_view(
            request, object_id, form_url, {**(extra_context or {}), "show_delete": False}
        )

    @admin.display(description=gettext_lazy("job"), ordering="job")
    def job_link(self, item: RequestItem) -> SafeString:
        url = reverse("admin:openai_batches_batchjob_change", args=[item.job_id])
        return format_html('<a href="{}">{}</a>', url, item.job)

    @admin.display(description=gettext_lazy("state"), ordering="state")
    def state_badge(self, item: RequestItem) -> SafeString:
        return format_html(
            '<span class="ob-badge ob-item-{}" data-state="{}">{}</span>',
            item.state,
            item.state,
            item.get_state_display(),
        )

    @admin.display(description=gettext_lazy("tokens"))
    def tokens(self, item: RequestItem) -> str:
        if not (item.input_tokens or item.output_tokens):
            return "—"
        return f"{item.input_tokens:,} / {item.output_tokens:,}"

    @admin.display(description=gettext_lazy("linked object"))
    def linked_object(self, item: RequestItem) -> SafeString | str:
        if item.content_type_id is None or not item.object_id:
            return "—"
        content_type = item.content_type
        assert content_type is not None
        model = content_type.model_class()
        label = f"{content_type.name} #{item.object_id}"
        if model is None or not self.admin_site.is_registered(model):
            return label
        try:
            # Built from the stored id, not the object, so the list needs no query per row.
            url = reverse(
                f"admin:{model._meta.app_label}_{model._meta.model_name}_change",
                args=[item.object_id],
                current_app=self.admin_site.name,
            )
        except NoReverseMatch:
            return label
        return format_html('<a href="{}" class="ob-linked-object">{}</a>', url, label)

    @admin.display(description=gettext_lazy("request body"))
    def body_pretty(self, item: RequestItem) -> SafeString:
        return _pretty_json(item.body)

    @admin.display(description=gettext_lazy("response"))
    def response_pretty(self, item: RequestItem) -> SafeString:
        return _pretty_json(item.response)

    @admin.display(description=gettext_lazy("error"))
    def error_pretty(self, item: RequestItem) -> SafeString:
        return _pretty_json(item.error)

    @admin.display(description=gettext_lazy("answer"))
    def answer_short(self, item: RequestItem) -> str:
        # Not stored on a list page: a GET must not write, and the row's job is joined.
        return Result.from_item(item, store=False).summary(60) or "—"

    @admin.display(description=gettext_lazy("answer"))
    def answer(self, item: RequestItem) -> SafeString:
        """What the model answered, read through ``item.result``: the endpoint's answer
        and, for anything unusable, why."""
        r = Result.from_item(item, store=False)  # a GET shows, never writes
        rows: list[tuple[str, Any]] = []
        if r.code:
            rows.append(
                (_("reason"), format_html('<strong class="ob-error">{}</strong>', r.reason))
            )
        for index, choice in enumerate(r.choices):
            label = _("text") if len(r.choices) == 1 else _("choice %(n)s") % {"n": index}
            if choice.text is not None:
                rows.append((label, format_html('<div class="ob-answer">{}</div>', choice.text)))
            if choice.refusal:
                rows.append((_("refusal"), choice.refusal))
            for call in choice.tool_calls:
                rows.append(
                    (_("tool call"), format_html("<code>{}({})</code>", call.name, call.arguments))
                )
        if r.finish_reason:
            rows.append((_("finish reason"), r.finish_reason))
        if r.embeddings:
            rows.append(
                (
                    _("embeddings"),
                    _("%(n)s vector(s) of %(d)s dimensions")
                    % {"n": len(r.embeddings), "d": len(r.embeddings[0])},
                )
            )
        for index, verdict in enumerate(r.moderations):
            flags = ", ".join(verdict.categories) or _("nothing")
            rows.append(
                (
                    _("input %(n)s") % {"n": index},
                    _("flagged: %(f)s") % {"f": flags} if verdict.flagged else _("not flagged"),
                )
            )
        for image in r.images:
            if image.url:
                rows.append(
                    (
                        _("image"),
                        format_html('<a href="{}" rel="noreferrer">{}</a>', image.url, image.url),
                    )
                )
            else:
                rows.append(
                    (
                        _("image"),
                        _("%(n)s bytes, base64 in the response below")
                        % {"n": len(image.b64_json or "") * 3 // 4},
                    )
                )
        if r.succeeded:
            u = r.usage
            rows.append(
                (
                    _("usage"),
                    _("%(i)s input (%(c)s cached), %(o)s output (%(r)s reasoning)")
                    % {
                        "i": u.input_tokens,
                        "c": u.cached_tokens,
                        "o": u.output_tokens,
                        "r": u.reasoning_tokens,
                    },
                )
            )
        if not rows:
            return mark_safe('<span class="ob-muted">—</span>')
        body = format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows)
        return format_html('<table class="ob-answer-table">{}</table>', body)

    @admin.display(description=gettext_lazy("parsed output"))
    def parsed_pretty(self, item: RequestItem) -> SafeString:
        r = Result.from_item(item, store=False)
        if not r.schema:
            return mark_safe('<span class="ob-muted">—</span>')
        schema = format_html("<p>{}: <code>{}</code></p>", _("model"), r.schema)
        if r.parse_error:
            return format_html('{}<p class="ob-error">{}</p>', schema, r.parse_error)
        parsed = r.parsed_json
        if not isinstance(parsed, dict):
            return format_html("{}{}", schema, _pretty_json(parsed))
        fields = format_html_join(
            "",
            "<tr><th>{}</th><td>{}</td></tr>",
            (
                (
                    name,
                    json.dumps(value, ensure_ascii=False)
                    if isinstance(value, (dict, list))
                    else value,
                )
                for name, value in parsed.items()
            ),
        )
        return format_html('{}<table class="ob-answer-table">{}</table>', schema, fields)


__all__ = ["BatchJobAdmin", "JobFilter", "RequestItemAdmin"]
