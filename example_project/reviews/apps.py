"""The ``reviews`` app: product reviews whose sentiment is classified through the Batch API."""

from __future__ import annotations

from django.apps import AppConfig


class ReviewsConfig(AppConfig):
    name = "reviews"
    verbose_name = "Product reviews"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Connected here rather than at import time of models so the receiver exists in every
        # process that can ingest results: runserver, the demo, RQ workers and sync_batches.
        from openai_batches.signals import result_received

        from . import receivers

        result_received.connect(
            receivers.store_sentiment,
            custom_id_prefix=receivers.CUSTOM_ID_PREFIX,
            dispatch_uid="reviews.store_sentiment",
        )
