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
