"""How the shop turns reviews into Batch API requests.

This is the host-project side of the integration: build one ``/v1/chat/completions`` body
per review, link each request to its row with ``object=`` and hand the lot to
:mod:`openai_batches.services`. Everything after that (upload, polling, ingest, retries)
belongs to the app; the answers come back through :mod:`reviews.receivers`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from openai_batches import services
from openai_batches.models import BatchJob, Endpoint

from .models import Review, Sentiment

MODEL = "gpt-4o-mini"
LABELS = [Sentiment.POSITIVE, Sentiment.NEGATIVE, Sentiment.NEUTRAL, Sentiment.MIXED]

SYSTEM_PROMPT = (
    "You label the sentiment of product reviews for a web shop. Read the review and answer "
    "with JSON: the overall sentiment (positive, negative, neutral or mixed) and one short "
    "sentence saying why."
)

#: Structured outputs: the real API guarantees the reply parses and uses one of the labels.
RESPONSE_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {
        "name": "review_sentiment",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {
                "sentiment": {"type": "string", "enum": [str(label) for label in LABELS]},
                "reason": {"type": "string"},
            },
            "required": ["sentiment", "reason"],
            "additionalProperties": False,
        },
    },
}


def request_body(review: Review, *, model: str = MODEL) -> dict[str, Any]:
    """The chat completion request classifying one review (the star rating is withheld)."""
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {
                "role": "user",
                "content": f"Product: {review.product}\nTitle: {review.title}\n\n{review.text}",
            },
        ],
        "response_format": RESPONSE_FORMAT,
        "temperature": 0,
        "max_completion_tokens": 120,
    }


def items_for(reviews: Iterable[Review], *, model: str = MODEL) -> Iterator[dict[str, Any]]:
    for review in reviews:
        yield {
            "custom_id": review.custom_id,
            "body": request_body(review, model=model),
            "object": review,
        }


def create_classification_job(
    reviews: Iterable[Review], *, name: str = "", owner: Any = None, model: str = MODEL
) -> BatchJob:
    """A draft job with one request per review; all-or-nothing (see ``services.add_items``)."""
    reviews = list(reviews)
    return services.create_job(
        endpoint=Endpoint.CHAT_COMPLETIONS,
        name=name or f"Classify sentiment of {len(reviews)} reviews",
        metadata={"app": "reviews", "task": "sentiment"},
        owner=owner,
        items=items_for(reviews, model=model),
    )
