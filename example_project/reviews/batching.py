"""How the shop turns reviews into Batch API requests.

This is the host-project side of the integration: build one ``/v1/chat/completions`` body
per review, link each request to its row with ``object=`` and hand the lot to
:func:`openai_batches.structured.create_job` with the :class:`~reviews.schemas.Sentiment`
model, which adds the strict JSON schema to every body. Everything after that (upload,
polling, ingest, retries) belongs to the app; the answers come back, parsed, through
:mod:`reviews.receivers`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from openai_batches import structured
from openai_batches.models import BatchJob, Endpoint

from .models import Review
from .schemas import Sentiment

MODEL = "gpt-4o-mini"

SYSTEM_PROMPT = (
    "You label the sentiment of product reviews for a web shop. Read the review and answer "
    "with JSON: the overall sentiment (positive, negative, neutral or mixed) and one short "
    "sentence saying why."
)


def request_body(review: Review, *, model: str = MODEL) -> dict[str, Any]:
    """The chat completion request classifying one review (the star rating is withheld);
    the response format is added from :class:`Sentiment` when the job is created."""
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {
                "role": "user",
                "content": f"Product: {review.product}\nTitle: {review.title}\n\n{review.text}",
            },
        ],
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
    """A draft job with one structured-output request per review; all-or-nothing."""
    reviews = list(reviews)
    return structured.create_job(
        output_schema=Sentiment,
        endpoint=Endpoint.CHAT_COMPLETIONS,
        name=name or f"Classify sentiment of {len(reviews)} reviews",
        metadata={"app": "reviews", "task": "sentiment"},
        owner=owner,
        items=items_for(reviews, model=model),
    )
