"""Write each sentiment result back onto its review.

:func:`store_sentiment` is connected to ``openai_batches.signals.result_received`` for the
``review:`` custom_id prefix in :meth:`reviews.apps.ReviewsConfig.ready`. The app sends it
once per result, after the result is stored, in whichever process ingested the batch (an RQ
worker, ``sync_batches``, the demo). ``item.result`` reads the answer whatever its wire
format, and ``.parsed`` is the reply validated into :class:`reviews.schemas.Sentiment`.
"""

from __future__ import annotations

import logging
from typing import Any

from django.utils import timezone

from .models import Review, Sentiment

log = logging.getLogger(__name__)

CUSTOM_ID_PREFIX = "review:"


def store_sentiment(sender: Any, *, item: Any, custom_id: str, **kwargs: Any) -> None:
    key = item.object_id or custom_id.removeprefix(CUSTOM_ID_PREFIX)
    if not key.isdigit():
        log.warning("result %s names no review; ignored", custom_id)
        return
    result, now, rows = item.result, timezone.now(), Review.objects.filter(pk=int(key))
    if not result.succeeded:  # keep any earlier label: a failed retry must not erase it
        rows.update(classification_error=result.reason[:1000], classified_at=now)
    elif answer := result.parsed:
        rows.update(
            sentiment=answer.sentiment,
            sentiment_reason=answer.reason,
            model_reply=result.text,
            classification_error="",
            classified_at=now,
        )
    else:  # answered, but refused or off-schema: recorded, never raised
        rows.update(
            sentiment=Sentiment.UNCLEAR,
            sentiment_reason=result.reason[:1000],
            model_reply=result.text or result.refusal or "",
            classification_error="",
            classified_at=now,
        )
