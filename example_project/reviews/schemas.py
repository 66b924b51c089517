"""The structured answer the model gives for one review, as a Pydantic model.

``reviews.batching`` hands it to :func:`openai_batches.structured.create_job`, which sends its
strict JSON schema with every request; each result comes back validated into an instance,
as ``item.result.parsed``. It is referenced by import path (``reviews.schemas.Sentiment``),
so whichever process ingests the batch can load it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Sentiment(BaseModel):
    sentiment: Literal["positive", "negative", "neutral", "mixed"] = Field(
        description="The overall sentiment of the review."
    )
    reason: str = Field(description="One short sentence saying why.")
