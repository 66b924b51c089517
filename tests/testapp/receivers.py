"""A host project's receiver: logs each result in a table with a unique constraint, so a
second delivery of the same result raises instead of passing unnoticed; and writes a
summary back onto the linked Article, as a real project would."""

from __future__ import annotations

from typing import Any

from openai_batches.signals import result_received

from .models import Article, ResultLog


def log_result(
    *,
    job: Any,
    item: Any,
    custom_id: str,
    succeeded: bool,
    response: Any,
    attempt: int,
    **kwargs: Any,
) -> None:
    ResultLog.objects.create(
        job_id=job.pk, custom_id=custom_id, succeeded=succeeded, attempt=attempt
    )
    if succeeded and isinstance(item.content_object, Article):
        choices = (response or {}).get("choices") or [{}]
        text = (choices[0].get("message") or {}).get("content") or ""
        Article.objects.filter(pk=item.object_id).update(summary=text)


result_received.connect(log_result, dispatch_uid="tests.testapp.log_result")
