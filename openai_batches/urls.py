"""URLs of the webhook receiver (the REST API has its own, in ``openai_batches.api.urls``)."""

from django.urls import path

from .webhooks import batch_webhook

app_name = "openai_batches"

urlpatterns = [path("", batch_webhook, name="webhook")]
