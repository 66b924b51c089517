"""Host-project models used by the tests: a row to link items to, and a receiver log."""

from __future__ import annotations

from django.db import models


class Article(models.Model):
    title = models.CharField(max_length=200)
    summary = models.TextField(blank=True, default="")

    def __str__(self) -> str:
        return self.title


class ResultLog(models.Model):
    """One row per result signal received; the unique constraint proves exactly-once (per
    final result: a request sent again on demand announces its new result with the next
    ``attempt``)."""

    job_id = models.BigIntegerField()
    custom_id = models.CharField(max_length=255)
    succeeded = models.BooleanField()
    attempt = models.PositiveSmallIntegerField(default=1)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["job_id", "custom_id", "attempt"], name="testapp_resultlog_once"
            )
        ]

    def __str__(self) -> str:
        return self.custom_id
