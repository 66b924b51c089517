"""Write each sentiment result back onto its review.

:func:`store_sentiment` is connected to ``openai_batches.signals.result_received`` for the
``review:`` custom_id prefix in :meth:`reviews.apps.ReviewsConfig.ready`. The app sends it
once per result, after the result is stored, in whichever process ingested the batch (an RQ
worker, ``sync_batches``, the demo). It never raises for a bad answer: an unparseable reply
or a failed request is recorded on the review, so one odd result cannot hold up the rest.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.utils import timezone

from .models import Review, Sentiment

log = logging.getLogger(__name__)

CUSTOM_ID_PREFIX = "review:"
_LABELS = {s.value for s in Sentiment} - {Sentiment.UNCLEAR}


def review_pk(item: Any, custom_id: str) -> int | None:
    """The review a result belongs to: the request's linked row, else its custom_id."""
    if getattr(item, "object_id", "") and getattr(item, "content_type_id", None):
        try:
            return int(item.object_id)
        except ValueError:
            pass
    try:
        return int(custom_id.removeprefix(CUSTOM_ID_PREFIX))
    except ValueError:
        return None


def reply_content(response: Any) -> tuple[str, str]:
    """(content, refusal) of a chat completion body; empty strings when absent."""
    try:
        message = response["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        return "", ""
    return str(message.get("content") or ""), str(message.get("refusal") or "")


def parse_sentiment(content: str) -> tuple[str, str]:
    """(sentiment, reason) from the model's reply.

    Structured outputs give ``{"sentiment": ..., "reason": ...}``; a bare label ("Positive.")
    is accepted too. Anything else is ``unclear``, with the reply kept as the reason.
    """
    text = content.strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        label = str(data.get("sentiment", "")).strip().lower()
        if label in _LABELS:
            return label, str(data.get("reason", "")).strip()
    first_word = text.split(maxsplit=1)[0].strip(".,:;!\"'").lower() if text else ""
    if first_word in _LABELS:
        return first_word, text[len(first_word) :].strip(" .,:;-\n")
    return Sentiment.UNCLEAR, text[:500]


def error_message(response: Any, error: Any) -> str:
    """A one-line reason for a failed request (error object or 4xx/5xx body)."""
    for source in (error, response.get("error") if isinstance(response, dict) else None):
        if isinstance(source, dict):
            code = source.get("code") or source.get("type") or "error"
            return f"{code}: {source.get('message') or ''}".strip()
    return "the request failed without an error message"


def store_sentiment(
    sender: Any,
    *,
    item: Any,
    custom_id: str,
    succeeded: bool,
    response: Any = None,
    error: Any = None,
    **kwargs: Any,
) -> None:
    pk = review_pk(item, custom_id)
    if pk is None:
        log.warning("result %s names no review; ignored", custom_id)
        return
    now = timezone.now()
    if not succeeded:
        # Keep any earlier sentiment: a failed retry should not erase a good answer.
        Review.objects.filter(pk=pk).update(
            classification_error=error_message(response, error)[:1000], classified_at=now
        )
        return
    content, refusal = reply_content(response)
    if refusal and not content:
        sentiment, reason = Sentiment.UNCLEAR, f"refused: {refusal}"
    else:
        sentiment, reason = parse_sentiment(content)
    updated = Review.objects.filter(pk=pk).update(
        sentiment=sentiment,
        sentiment_reason=reason,
        model_reply=content or refusal,
        classification_error="",
        classified_at=now,
    )
    if not updated:
        log.warning("result %s: review %s no longer exists", custom_id, pk)
