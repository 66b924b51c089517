"""The batch job admin: the job list, the job page, and the routes of the live updates and
the dashboard.

Counts on the list are read from the job row (its per-outcome item counts, kept by the
services) and its parts come in one prefetch, so the number of queries does not grow with
the rows on the page and the page never counts items. What an operator can *do* (create, actions,
buttons) is in :mod:`.actions`; the live fragments in :mod:`.live`; the dashboard in
:mod:`.dashboard`. Nothing here renders account credentials: only the account *name*.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib import admin
from django.db.models import Prefetch, QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy

from .. import services
from ..models import BatchJob, JobState, ProviderBatch
from . import dashboard, live, quota
from .actions import JobActionsAdmin
from .display import (
    EMPTY,
    MOVING_STATES,
    compact_number,
    compact_time,
    human_size,
    last_batch_end,
    money,
    progress_bar,
    short_uuid,
    status_badge,
)
from .job_page import JobPageAdmin


class BatchJobAdmin(JobPageAdmin, JobActionsAdmin):
    # Sized for a 1366 px laptop with the admin's sidebar and filters open: no column
    # repeats another (the progress text carries the item count; the submission time is
    # on the job page), timestamps and token counts are short with the full value on hover.
    list_display = (
        "job_id",
        "display_name",
        "status_badge",
        "progress",
        "when",
        "tokens",
        "cost_usd",
    )
    list_display_links = ("display_name",)
    list_filter = (
        "state",
        "provider_status",
        "endpoint",
        "account",
        ("owner", admin.RelatedOnlyFieldListFilter),
    )
    # A provider batch id (from OpenAI's dashboard, a log) finds its job, whichever part.
    search_fields = ("name", "uuid", "batches__provider_batch_id")
    date_hierarchy = "created_at"
    list_select_related = ("owner",)
    list_per_page = 50
    actions = (
        "submit_jobs",
        "refresh_jobs",
        "cancel_jobs",
        "retry_failed",
        "retry_expired",
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
                    "input_size",
                    "metadata_pretty",
                )
            },
        ),
        (
            gettext_lazy("Progress and usage"),
            {"fields": ("estimate_table", "progress", "usage_table", "cost_usd")},
        ),
        (
            gettext_lazy("Provider"),
            {
                "fields": (
                    "provider_status",
                    "provider_model",
                    "batches_table",
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

    change_list_template = "openai_batches/batchjob/change_list.html"
    #: Seconds between two live updates of a page on which a job is moving.
    live_interval = 3

    class Media:
        css = {"all": ("openai_batches/admin.css",)}
        js = ("openai_batches/live.js",)

    # -- queryset -------------------------------------------------------------------------

    def get_queryset(self, request: HttpRequest) -> QuerySet[BatchJob]:
        return (
            super()
            .get_queryset(request)
            .annotate(ended_at=last_batch_end())
            # The latest part's fields (job.current_batch) for every row in one query.
            .prefetch_related(Prefetch("batches", queryset=ProviderBatch.objects.order_by()))
        )

    # -- list columns ---------------------------------------------------------------------

    @admin.display(description=gettext_lazy("name"), ordering="name")
    def display_name(self, job: BatchJob) -> str:
        return str(job)

    @admin.display(description=gettext_lazy("id"), ordering="pk")
    def job_id(self, job: BatchJob) -> SafeString:
        # The row's handle for the live script too: which job, and whether it still moves.
        return format_html(
            '<span class="ob-job-id" data-ob-job="{}" data-ob-moving="{}" title="{}">#{}'
            '<br><code class="ob-short-uuid">{}</code></span>',
            job.pk,
            "1" if job.state in MOVING_STATES else "0",
            job.uuid,
            job.pk,
            short_uuid(job),
        )

    @admin.display(description=gettext_lazy("status"), ordering="state")
    def status_badge(self, job: BatchJob) -> SafeString:
        return status_badge(job)

    @admin.display(description=gettext_lazy("progress"))
    def progress(self, job: BatchJob) -> SafeString:
        return progress_bar(*self._progress_counts(job))

    def _progress_counts(self, job: BatchJob) -> tuple[int, int, int]:
        """(succeeded, failed, total): the provider's live counts until results are ingested.

        While a batch runs, the items learn nothing; the provider's request_counts are the
        only progress there is. Once ingested, the items are the truth (they also count
        expired/cancelled requests the provider never ran).
        """
        total = job.item_count or job.request_count_total
        if job.ingested_at is None and job.provider_status:
            return job.request_count_completed, job.request_count_failed, total
        return job.succeeded_count, job.failed_count, total

    @admin.display(description=gettext_lazy("created / finished"), ordering="created_at")
    def when(self, job: BatchJob) -> SafeString:
        # One column, two short lines: a laptop has no room for two date columns.
        return format_html(
            '<span class="ob-when">{}<br><span class="ob-finished">{}</span></span>',
            compact_time(job.created_at),
            compact_time(self.finished_at(job)),
        )

    def finished_at(self, job: BatchJob) -> datetime | None:
        """When the job's last provider batch ended, once nothing of the job still moves.

        While a part waits or runs, an earlier part's end is not the job's; a job cancelled
        before it reached the provider ended when it was cancelled here.
        """
        if job.state in MOVING_STATES:
            return None
        if job.state == JobState.CANCELLED and not job.provider_status:
            return job.updated_at
        if "ended_at" in job.__dict__:  # annotated by get_queryset: no query per row
            ended: datetime | None = job.__dict__["ended_at"]
            return ended
        return BatchJob.objects.filter(pk=job.pk).annotate(t=last_batch_end()).values("t")[0]["t"]

    @admin.display(description=gettext_lazy("tokens in / out"))
    def tokens(self, job: BatchJob) -> SafeString:
        if not (job.input_tokens or job.output_tokens):
            return EMPTY
        return format_html(
            '<span class="ob-tokens" title="{} in / {} out">{} / {}</span>',
            f"{job.input_tokens:,}",
            f"{job.output_tokens:,}",
            compact_number(job.input_tokens),
            compact_number(job.output_tokens),
        )

    # Not named "cost": the admin would show the model field of that name (stored only once
    # results are ingested) instead of this estimate.
    @admin.display(description=gettext_lazy("cost (USD)"))
    def cost_usd(self, job: BatchJob) -> str:
        return money(services.job_cost(job))

    @admin.display(description=gettext_lazy("input size"))
    def input_size(self, job: BatchJob) -> str:
        return f"{human_size(job.input_bytes)} ({job.input_bytes:,} bytes)"

    # -- permissions and saving -----------------------------------------------------------

    def has_delete_permission(self, request: HttpRequest, obj: BatchJob | None = None) -> bool:
        # Deleting a job the provider is running would orphan a paid batch and lose its
        # results; cancel it first (the cancelled job can then be deleted).
        if obj is not None and not services.can_delete(obj)[0]:
            return False
        return super().has_delete_permission(request, obj)

    def delete_model(self, request: HttpRequest, obj: BatchJob) -> None:
        services.delete_job(obj)  # re-checks the state under a row lock

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

    # -- routes: the page buttons, the live updates, the dashboard ------------------------

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        own = [
            path(
                "<path:object_id>/run/<str:action>/",
                self.admin_site.admin_view(self.object_action_view),
                name="{}_{}_object_action".format(*info),
            ),
            path(
                "live/",
                self.admin_site.admin_view(self.live_view),
                name="{}_{}_live".format(*info),
            ),
            path(
                "dashboard/",
                self.admin_site.admin_view(self.dashboard_view),
                name="{}_{}_dashboard".format(*info),
            ),
            path(
                "quota/",
                self.admin_site.admin_view(self.quota_view),
                name="{}_{}_quota".format(*info),
            ),
            path(
                "quota/reset/",
                self.admin_site.admin_view(self.quota_reset_view),
                name="{}_{}_quota_reset".format(*info),
            ),
        ]
        # Before the defaults: their "<path:object_id>/" catch-all would swallow ours.
        return own + super().get_urls()

    def live_view(self, request: HttpRequest) -> HttpResponse:
        return live.live_view(self, request)

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        return dashboard.dashboard_view(self, request)

    def quota_view(self, request: HttpRequest) -> HttpResponse:
        return quota.quota_view(self, request)

    def quota_reset_view(self, request: HttpRequest) -> HttpResponse:
        return quota.reset_view(self, request)

    def _live_context(self, mode: str, job: BatchJob | None = None) -> dict[str, Any]:
        info = self.opts.app_label, self.opts.model_name
        return {
            "ob_live": {
                "url": reverse("admin:{}_{}_live".format(*info), current_app=self.admin_site.name),
                "mode": mode,
                "interval": self.live_interval,
                "job": job.pk if job else "",
                "moving": "1" if job is not None and job.state in MOVING_STATES else "0",
            },
            "ob_dashboard_url": reverse(
                "admin:{}_{}_dashboard".format(*info), current_app=self.admin_site.name
            ),
        }

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        return super().changelist_view(
            request, {**self._live_context("list"), **(extra_context or {})}
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
            extra.update(self._live_context("page", job))
            # "Add another" leads to a different form (JSONL) and makes no sense from a
            # job's page; the job list has the add button.
            extra["show_save_and_add_another"] = False
        return super().change_view(request, object_id, form_url, extra)
