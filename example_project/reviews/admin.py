"""Admin for reviews, with an action that sends the selected reviews to the Batch API."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.contenttypes.models import ContentType
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from openai_batches import services
from openai_batches.exceptions import OpenAIBatchesError
from openai_batches.models import RequestItem

from .batching import create_classification_job
from .models import Review


@admin.register(Review)
class ReviewAdmin(admin.ModelAdmin):
    list_display = ["id", "product", "title", "rating", "sentiment", "classified_at"]
    list_filter = ["sentiment", "rating", "product"]
    search_fields = ["title", "text", "author", "sentiment_reason"]
    readonly_fields = [
        "sentiment",
        "sentiment_reason",
        "model_reply",
        "classification_error",
        "classified_at",
        "batch_requests",
    ]
    actions = ["classify_sentiment"]

    @admin.display(description="Batch API requests")
    def batch_requests(self, obj: Review) -> str:
        items = RequestItem.objects.filter(
            content_type=ContentType.objects.get_for_model(Review), object_id=str(obj.pk)
        ).select_related("job")
        links = [
            format_html(
                '<a href="{}">{} in job {}</a> ({})',
                reverse("admin:openai_batches_requestitem_change", args=[item.pk])
                if _registered(RequestItem)
                else "#",
                item.custom_id,
                item.job_id,
                item.get_state_display(),
            )
            for item in items
        ]
        return format_html("<br>".join(["{}"] * len(links)), *links) if links else "none yet"

    @admin.action(description="Classify sentiment with the Batch API")
    def classify_sentiment(self, request: HttpRequest, queryset: QuerySet[Review]) -> None:
        try:
            job = create_classification_job(queryset, owner=request.user)
            services.request_submit(job)
        except OpenAIBatchesError as exc:
            self.message_user(request, f"Not submitted: {exc}", messages.ERROR)
            return
        self.message_user(
            request,
            f"Batch job {job.pk} created with {job.item_count} requests and queued for "
            "submission; sentiments appear here as results arrive.",
            messages.SUCCESS,
        )


def _registered(model: Any) -> bool:
    return admin.site.is_registered(model)
