"""``manage.py sync_batches`` reports the provider batches behind its jobs: the parts a pass
submitted and ingested, and the requests it put back in line for a retry part.

Against the emulator over HTTP, through the real services, as cron runs it.
"""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command

from openai_batches import services
from openai_batches.models import ItemState, JobState
from openai_batches.testing import openai_emulator  # noqa: F401

from .lifecycle_helpers import chat_items

pytestmark = pytest.mark.django_db(transaction=True)


def sync(*args: str) -> str:
    out = StringIO()
    call_command("sync_batches", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_a_pass_reports_the_parts_of_a_split_job(
    openai_emulator: Any,  # noqa: F811
    settings: Any,  # after the emulator: its teardown runs first, restoring what it changed
) -> None:
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "MAX_REQUESTS_PER_BATCH": 2}
    job = services.create_job(name="split", items=chat_items(5))
    services.request_submit(job)
    dry = sync("--dry-run")
    assert f"submit: job {job.pk} split [submit_requested/-] (3 part(s))" in dry
    assert "would submit 1, would refresh 0; nothing was called or changed; " in dry
    assert dry.rstrip().endswith("3 planned part(s) to submit")

    out = sync("-v", "2")
    job.refresh_from_db()
    assert job.state == JobState.FINISHED
    assert f"ingested: job {job.pk} split [finished/completed] (3 part(s))" in out
    assert "submitted 1, refreshed 1, ingested 1" in out
    assert "parts: 3 submitted, 3 ingested; retries: 0 request(s) in 0 new part(s)" in out


def test_a_pass_reports_requests_put_back_in_line_and_the_next_pass_sends_them(
    openai_emulator: Any,  # noqa: F811
) -> None:
    openai_emulator.fail_request("req-1", 500, "server_error", "boom", times=1)
    openai_emulator.fail_request("req-2", 503, "server_error", "busy", times=1)
    job = services.create_job(name="flaky", items=chat_items(4))
    services.request_submit(job)
    first = sync()
    assert "parts: 1 submitted, 1 ingested; retries: 2 request(s) in 1 new part(s)" in first
    job.refresh_from_db()
    assert job.state == JobState.SUBMIT_REQUESTED

    second = sync("-v", "2")
    assert "parts: 1 submitted, 1 ingested; retries: 0 request(s) in 0 new part(s)" in second
    assert f"job {job.pk} flaky [finished/completed] (2 part(s), 1 retry)" in second
    job.refresh_from_db()
    assert job.items.filter(state=ItemState.SUCCEEDED).count() == 4
