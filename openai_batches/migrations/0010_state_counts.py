"""Per-outcome item counts kept on each job and provider batch, so job lists read two
columns instead of counting items for every row; filled here from the items."""

from __future__ import annotations

from typing import Any

from django.db import migrations, models
from django.db.models import Count

_FINAL = ("succeeded", "failed", "expired", "cancelled", "missing")


def fill(apps: Any, schema_editor: Any) -> None:
    job_model = apps.get_model("openai_batches", "BatchJob")
    part_model = apps.get_model("openai_batches", "ProviderBatch")
    item_model = apps.get_model("openai_batches", "RequestItem")
    db = schema_editor.connection.alias
    jobs: dict[int, list[int]] = {}
    parts: dict[int, list[int]] = {}
    rows = (
        item_model.objects.using(db)
        .filter(state__in=_FINAL)
        .values_list("job_id", "batch_id", "state")
        .annotate(n=Count("pk"))
        .order_by()
    )
    for job_id, batch_id, state, n in rows:
        slot = 0 if state == "succeeded" else 1
        jobs.setdefault(job_id, [0, 0])[slot] += n
        if batch_id is not None:
            parts.setdefault(batch_id, [0, 0])[slot] += n
    for pk, (ok, failed) in jobs.items():
        job_model.objects.using(db).filter(pk=pk).update(succeeded_count=ok, failed_count=failed)
    for pk, (ok, failed) in parts.items():
        part_model.objects.using(db).filter(pk=pk).update(succeeded_count=ok, failed_count=failed)


class Migration(migrations.Migration):
    dependencies = [("openai_batches", "0009_submit_not_before")]

    operations = [
        migrations.AddField(
            model_name="batchjob",
            name="succeeded_count",
            field=models.PositiveIntegerField(
                default=0,
                help_text="Items whose stored result succeeded (kept up to date by the services).",
                verbose_name="succeeded items",
            ),
        ),
        migrations.AddField(
            model_name="batchjob",
            name="failed_count",
            field=models.PositiveIntegerField(
                default=0,
                help_text=(
                    "Items that ended without an answer: failed, expired, cancelled or missing."
                ),
                verbose_name="failed items",
            ),
        ),
        migrations.AddField(
            model_name="providerbatch",
            name="succeeded_count",
            field=models.PositiveIntegerField(
                default=0,
                help_text="Items whose final result came from this batch and succeeded.",
                verbose_name="succeeded items",
            ),
        ),
        migrations.AddField(
            model_name="providerbatch",
            name="failed_count",
            field=models.PositiveIntegerField(
                default=0,
                help_text=(
                    "Items whose final result came from this batch and is a failure: failed, "
                    "expired, cancelled or missing."
                ),
                verbose_name="failed items",
            ),
        ),
        migrations.RunPython(fill, migrations.RunPython.noop),
    ]
