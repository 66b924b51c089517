"""The provider batch admin: every provider batch of every job, read-only.

For an operator who starts from the provider's side (a batch id from OpenAI's dashboard or
an invoice, "what is running at the provider now"): filter by status, reason and account,
search by batch id or job name, and follow the link to the job. Only services write these
rows, so nothing here can add, change or delete one; a batch goes with its job.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy

from ..models import ProviderBatch
from .deletion import DeletedWithTheirJob
from .display import EMPTY, job_label
from .history import batch_requests, batch_status


class ProviderBatchAdmin(DeletedWithTheirJob):
    list_display = (
        "batch_id",
        "job_link",
        "part",
        "reason",
        "status",
        "requests",
        "submitted_at",
        "ingested_at",
    )
    list_display_links = ("batch_id",)
    list_filter = ("state", "provider_status", "reason", "account")
    search_fields = ("provider_batch_id", "job__name")
    list_select_related = ("job",)
    list_per_page = 100
    ordering = ("-job_id", "part")

    class Media:
        css = {"all": ("openai_batches/admin.css",)}

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in self.opts.concrete_fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # parts are planned by services when a job is submitted or retried

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the provider's facts, recorded by services: the page only shows them

    @admin.display(description=gettext_lazy("provider batch"), ordering="provider_batch_id")
    def batch_id(self, batch: ProviderBatch) -> SafeString:
        if not batch.provider_batch_id:
            return format_html('<span class="ob-muted">{}</span>', batch.get_state_display())
        return format_html('<code class="ob-batch-id">{}</code>', batch.provider_batch_id)

    @admin.display(description=gettext_lazy("job"), ordering="job")
    def job_link(self, batch: ProviderBatch) -> SafeString:
        url = reverse(
            "admin:openai_batches_batchjob_change",
            args=[batch.job_id],
            current_app=self.admin_site.name,
        )
        return format_html('<a href="{}">{}</a>', url, job_label(batch.job))

    @admin.display(description=gettext_lazy("status"), ordering="provider_status")
    def status(self, batch: ProviderBatch) -> SafeString:
        return batch_status(batch)

    @admin.display(description=gettext_lazy("requests"))
    def requests(self, batch: ProviderBatch) -> SafeString:
        return batch_requests(batch) if batch.item_count or batch.request_count_total else EMPTY
