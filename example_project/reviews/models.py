"""A product review and the sentiment a model assigned to it.

The ``sentiment*`` fields are written only by :mod:`reviews.receivers`, when the Batch API
result for the review arrives; everything else is what a shop would already have.
"""

from __future__ import annotations

from django.db import models


class Sentiment(models.TextChoices):
    POSITIVE = "positive", "Positive"
    NEGATIVE = "negative", "Negative"
    NEUTRAL = "neutral", "Neutral"
    MIXED = "mixed", "Mixed"
    # The model answered, but not with one of the labels above (the emulator's placeholder
    # replies land here; so would a refusal).
    UNCLEAR = "unclear", "Unclear"


class ReviewQuerySet(models.QuerySet["Review"]):
    def unclassified(self) -> ReviewQuerySet:
        return self.filter(sentiment="")


class Review(models.Model):
    product = models.CharField("product", max_length=120)
    author = models.CharField("author", max_length=80)
    title = models.CharField("title", max_length=200)
    text = models.TextField("text")
    rating = models.PositiveSmallIntegerField(
        "rating", help_text="Stars the customer gave, 1 to 5 (not shown to the model)."
    )
    created_at = models.DateTimeField("written at")

    sentiment = models.CharField(
        "sentiment",
        max_length=16,
        choices=Sentiment.choices,
        blank=True,
        default="",
        help_text="Set from the model's answer; empty until a result arrives.",
    )
    sentiment_reason = models.TextField(
        "reason", blank=True, default="", help_text="The model's one-sentence justification."
    )
    model_reply = models.TextField(
        "model reply", blank=True, default="", help_text="The raw text the model answered."
    )
    classification_error = models.TextField(
        "classification error",
        blank=True,
        default="",
        help_text="Why the request failed, when it did (kept so the review can be retried).",
    )
    classified_at = models.DateTimeField("classified at", null=True, blank=True)

    objects = ReviewQuerySet.as_manager()

    class Meta:
        ordering = ["pk"]
        indexes = [models.Index(fields=["sentiment"], name="reviews_sentiment_idx")]

    def __str__(self) -> str:
        return f"{self.product}: {self.title}"

    @property
    def custom_id(self) -> str:
        """The Batch API custom_id of this review's classification request."""
        return f"review:{self.pk}"
