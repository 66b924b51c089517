"""Admin registration (minimal until the operator console lands)."""

from __future__ import annotations

from django.contrib import admin

from .models import BatchJob, RequestItem


@admin.register(BatchJob)
class BatchJobAdmin(admin.ModelAdmin):
    list_display = ("__str__", "state", "provider_status", "endpoint", "item_count", "created_at")
    list_filter = ("state", "provider_status", "endpoint", "account")
    search_fields = ("name", "uuid", "provider_batch_id")
    readonly_fields = (
        "uuid",
        "provider_batch_id",
        "provider_status",
        "input_file_id",
        "output_file_id",
        "error_file_id",
    )


@admin.register(RequestItem)
class RequestItemAdmin(admin.ModelAdmin):
    list_display = ("custom_id", "job", "state", "status_code", "completed_at")
    list_filter = ("state",)
    search_fields = ("custom_id",)
    raw_id_fields = ("job",)
