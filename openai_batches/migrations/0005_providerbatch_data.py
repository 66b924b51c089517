"""Carry every existing job's provider batch over to a ``ProviderBatch`` (part 1).

A job that reached the provider (or uploaded its input) gets one part holding everything
the job knew about its batch; its items point at it, and every stored result becomes the
item's first attempt. Nothing is lost: 0006 drops the job's copies only after this ran.
"""

from django.db import migrations
from django.utils import timezone

BATCH_FIELDS = (
    "provider_batch_id",
    "provider_status",
    "input_file_id",
    "output_file_id",
    "error_file_id",
    "provider_model",
    "request_count_total",
    "request_count_completed",
    "request_count_failed",
    "provider_errors",
    "input_tokens",
    "cached_tokens",
    "output_tokens",
    "reasoning_tokens",
    "provider_created_at",
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)
FINAL = ("succeeded", "failed", "expired", "cancelled", "missing")


def _part_state(job):
    if job.provider_batch_id:
        return "finished" if job.ingested_at else "submitted"
    # Uploaded, not created yet (or the create's outcome is unknown): the submit that
    # resumes it looks the batch up by the job's UUID first, as before.
    return "submit_requested"


def forwards(apps, schema_editor):
    BatchJob = apps.get_model("openai_batches", "BatchJob")
    ProviderBatch = apps.get_model("openai_batches", "ProviderBatch")
    RequestItem = apps.get_model("openai_batches", "RequestItem")
    jobs = BatchJob.objects.exclude(provider_batch_id="", input_file_id="").order_by("pk")
    for job in jobs.iterator(chunk_size=500):
        batch = ProviderBatch.objects.create(
            job_id=job.pk,
            part=1,
            reason="first",
            account=job.account,
            state=_part_state(job),
            item_count=job.item_count,
            input_bytes=job.input_bytes,
            created_at=job.submit_requested_at or job.created_at,
            submitted_at=job.submitted_at,
            ingested_at=job.ingested_at,
            **{name: getattr(job, name) for name in BATCH_FIELDS},
        )
        RequestItem.objects.filter(job_id=job.pk).update(batch_id=batch.pk)
    _attempts(schema_editor, apps)


def _attempts(schema_editor, apps):
    """Every stored result becomes attempt 1 of its item, in one statement."""
    RequestItem = apps.get_model("openai_batches", "RequestItem")
    RequestAttempt = apps.get_model("openai_batches", "RequestAttempt")
    conn = schema_editor.connection
    q = conn.ops.quote_name
    items, attempts = q(RequestItem._meta.db_table), q(RequestAttempt._meta.db_table)
    final = ", ".join(["%s"] * len(FINAL))
    # Identifiers come from the models' metadata, never from input.
    sql = (
        f"INSERT INTO {attempts} (item_id, batch_id, number, state, status_code, error, "  # noqa: S608
        "input_tokens, cached_tokens, output_tokens, reasoning_tokens, retried, created_at) "
        "SELECT id, batch_id, 1, state, status_code, "
        "CASE WHEN state = %s THEN NULL ELSE COALESCE(error, response) END, "
        "input_tokens, cached_tokens, output_tokens, reasoning_tokens, %s, "
        f"COALESCE(completed_at, %s) FROM {items} "
        f"WHERE batch_id IS NOT NULL AND state IN ({final})"
    )
    with conn.cursor() as cursor:
        cursor.execute(sql, ["succeeded", False, timezone.now(), *FINAL])
        cursor.execute(
            f"UPDATE {items} SET attempt_count = 1 "  # noqa: S608
            f"WHERE batch_id IS NOT NULL AND state IN ({final})",
            list(FINAL),
        )


def backwards(apps, schema_editor):
    """Back to one batch per job: each job takes its latest part's facts."""
    BatchJob = apps.get_model("openai_batches", "BatchJob")
    ProviderBatch = apps.get_model("openai_batches", "ProviderBatch")
    latest = ProviderBatch.objects.order_by("job_id", "-part")
    seen = set()
    for batch in latest.iterator(chunk_size=500):
        if batch.job_id in seen:
            continue
        seen.add(batch.job_id)
        BatchJob.objects.filter(pk=batch.job_id).update(
            **{name: getattr(batch, name) for name in BATCH_FIELDS}
        )


class Migration(migrations.Migration):
    dependencies = [
        ("openai_batches", "0004_providerbatch"),
    ]

    operations = [
        migrations.RunPython(forwards, backwards, elidable=False),
    ]
