"""The migrations match the models, and they apply (forwards and backwards)."""

from __future__ import annotations

from io import StringIO

import pytest
from django.apps import apps
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.loader import MigrationLoader
from django.test import override_settings

APP = "openai_batches"


def table_names() -> set[str]:
    with connection.cursor() as cursor:
        return set(connection.introspection.table_names(cursor))


def app_tables() -> set[str]:
    return {m._meta.db_table for m in apps.get_app_config(APP).get_models()}


@pytest.mark.django_db  # makemigrations checks the history against the database
def test_no_missing_migrations() -> None:
    out = StringIO()
    try:
        call_command("makemigrations", APP, "--check", "--dry-run", stdout=out)
    except SystemExit:  # raised by --check when a migration is missing
        pytest.fail(f"openai_batches has model changes without a migration:\n{out.getvalue()}")
    assert "No changes detected" in out.getvalue()


@pytest.mark.django_db
def test_no_missing_migrations_whatever_the_host_auto_field() -> None:
    # The app pins its own default_auto_field, so a host's setting must not create a migration.
    with override_settings(DEFAULT_AUTO_FIELD="django.db.models.AutoField"):
        out = StringIO()
        try:
            call_command("makemigrations", APP, "--check", "--dry-run", stdout=out)
        except SystemExit:
            pytest.fail(f"DEFAULT_AUTO_FIELD changes the app's schema:\n{out.getvalue()}")
    assert "No changes detected" in out.getvalue()


@pytest.mark.django_db
def test_migrations_are_applied_on_the_test_database() -> None:
    loader = MigrationLoader(connection)
    ours = {key for key in loader.disk_migrations if key[0] == APP}
    assert (APP, "0001_initial") in ours
    assert ours <= set(loader.applied_migrations)
    assert app_tables() <= table_names()


@pytest.mark.django_db(transaction=True)
def test_migrations_apply_backwards_and_forwards() -> None:
    executor = MigrationExecutor(connection)
    leaves = [key for key in executor.loader.graph.leaf_nodes() if key[0] == APP]
    assert leaves, "openai_batches has no migrations"
    tables = app_tables()
    try:
        call_command("migrate", APP, "zero", verbosity=0)
        assert not tables & table_names()
    finally:
        call_command("migrate", APP, verbosity=0)
    assert tables <= table_names()
    executor = MigrationExecutor(connection)
    assert executor.migration_plan(leaves) == []

    # The re-created tables work.
    from openai_batches.models import BatchJob, RequestItem

    job = BatchJob.objects.create(name="after migrate")
    RequestItem.objects.create(job=job, custom_id="a", url=job.endpoint, body={"model": "m"})
    assert RequestItem.objects.get().job == job


@pytest.mark.django_db(transaction=True)
def test_jobs_made_by_the_one_batch_schema_survive_the_move_to_provider_batches() -> None:
    """A database made by 0.2's schema (one provider batch per job, on the job) with jobs
    in every state is migrated: each batch becomes the job's part 1 with every fact kept,
    items point at it, stored results become attempt 1, and nothing else changes."""
    before = [(APP, "0003_structured_outputs")]
    executor = MigrationExecutor(connection)
    try:
        executor.migrate(before)
        old = executor.loader.project_state(before).apps
        Job = old.get_model(APP, "BatchJob")
        Item = old.get_model(APP, "RequestItem")
        finished = Job.objects.create(
            name="finished",
            state="finished",
            provider_batch_id="batch_done",
            provider_status="completed",
            input_file_id="file-in",
            output_file_id="file-out",
            error_file_id="file-err",
            request_count_total=2,
            request_count_completed=1,
            request_count_failed=1,
            input_tokens=30,
            output_tokens=12,
            provider_errors=[],
            item_count=2,
            input_bytes=400,
            ingested_at="2026-10-01T12:00:00Z",
            completed_at="2026-10-01T11:59:00Z",
            finish_announced=True,
        )
        Item.objects.create(
            job=finished,
            custom_id="ok",
            url=finished.endpoint,
            body={"model": "m"},
            state="succeeded",
            status_code=200,
            response={"id": "x"},
            input_tokens=15,
            output_tokens=12,
            announced=True,
        )
        Item.objects.create(
            job=finished,
            custom_id="bad",
            url=finished.endpoint,
            body={"model": "m"},
            state="failed",
            status_code=400,
            response={"error": {"code": "context_length_exceeded"}},
            input_tokens=15,
            announced=True,
        )
        running = Job.objects.create(
            name="running",
            state="submitted",
            provider_batch_id="batch_run",
            provider_status="in_progress",
            input_file_id="file-run",
            expires_at="2026-12-01T00:00:00Z",
            item_count=1,
        )
        Item.objects.create(
            job=running, custom_id="r", url=running.endpoint, body={"model": "m"}, state="submitted"
        )
        uploading = Job.objects.create(
            name="uploaded, create unknown", state="submit_requested", input_file_id="file-up"
        )
        Item.objects.create(job=uploading, custom_id="u", url=uploading.endpoint, body={})
        draft = Job.objects.create(name="draft")
        Item.objects.create(job=draft, custom_id="d", url=draft.endpoint, body={})
    finally:
        MigrationExecutor(connection).migrate(
            [key for key in executor.loader.graph.leaf_nodes() if key[0] == APP]
        )

    from openai_batches.models import BatchJob, JobState, ProviderBatch, RequestAttempt

    done = BatchJob.objects.get(name="finished")
    part = done.batches.get()
    assert (part.part, part.reason, part.state) == (1, "first", JobState.FINISHED)
    assert (part.provider_batch_id, part.provider_status) == ("batch_done", "completed")
    assert (part.input_file_id, part.output_file_id, part.error_file_id) == (
        "file-in",
        "file-out",
        "file-err",
    )
    assert (part.request_count_total, part.input_tokens, part.output_tokens) == (2, 30, 12)
    assert part.completed_at is not None and part.ingested_at is not None
    # The job keeps its totals; the per-batch facts read through to its part.
    assert (done.state, done.provider_status, done.input_tokens) == ("finished", "completed", 30)
    assert done.provider_batch_id == "batch_done" and done.output_file_id == "file-out"
    attempts = RequestAttempt.objects.filter(item__job=done).order_by("item__custom_id")
    assert [(a.item.custom_id, a.number, a.state, a.status_code) for a in attempts] == [
        ("bad", 1, "failed", 400),
        ("ok", 1, "succeeded", 200),
    ]
    assert attempts[0].error == {"error": {"code": "context_length_exceeded"}}
    assert set(done.items.values_list("attempt_count", "batch_id")) == {(1, part.pk)}

    run = BatchJob.objects.get(name="running")
    assert run.batches.get().state == JobState.SUBMITTED
    assert run.expires_at is not None and run.items.get().batch == run.batches.get()
    assert not RequestAttempt.objects.filter(item__job=run).exists()
    up = BatchJob.objects.get(name="uploaded, create unknown")
    # Planned, its upload recorded: the next submit looks its batch up before creating.
    assert up.batches.get().state == JobState.SUBMIT_REQUESTED
    assert up.input_file_id == "file-up" and up.items.get().batch is not None
    assert not BatchJob.objects.get(name="draft").batches.exists()
    assert ProviderBatch.objects.count() == 3
