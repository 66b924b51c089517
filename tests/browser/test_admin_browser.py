"""The operator console end to end in a real browser, against the bundled emulator.

An operator logs in, creates a job by uploading a JSONL file, submits it, watches its
progress reach completed, opens one item's response and downloads the output file.

What carries the job, and why that is honest:

* **Submit**: the page's Submit button records the intent and enqueues the ``submit_job``
  RQ job, as in production. The test has no ``rqworker`` process, so it runs that very
  enqueued job with an in-process burst ``SimpleWorker`` (the code ``rqworker`` runs, without
  the fork, which would not see SQLite's in-memory test database).
* **Polling**: ``submit_job`` schedules the next poll with ``enqueue_at``; a burst worker has
  no scheduler, so the operator's **Refresh now** button on the job page (``services.refresh``)
  polls instead, until the emulator (real clock, ``fast`` timings: about five seconds from
  validating to completed) reports the batch completed and the results are ingested.

Screenshots land in ``artifacts/screenshots/`` (gitignored). Off CI the test is skipped
when ``/usr/bin/chromium`` is missing (``scripts/install-browser`` installs it); with
``CI=true`` a missing browser fails the test instead.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from openai_batches.models import BatchJob, BatchStatus, ItemState, JobState
from openai_batches.testing import running_emulator

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
PASSWORD = "browser-pass-1"

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: run scripts/install-browser"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture
def page(
    chromium: Path, live_server: Any, transactional_db: None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    from django.db import connections
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop on this thread; the test's own ORM calls
    # (creating the user, checking rows) would otherwise be refused as "async unsafe".
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        context = browser.new_context(
            accept_downloads=True, viewport={"width": 1400, "height": 900}
        )
        context.set_default_timeout(15_000)
        page = context.new_page()
        try:
            yield page
        finally:
            # While Playwright's loop runs, Django keys connections by asgiref context, so
            # the test's own queries opened a connection of their own; close it here, in
            # that context, or PostgreSQL refuses to drop the test database at the end.
            connections.close_all()
            context.close()
            browser.close()


def run_enqueued_jobs() -> None:
    """Run what the app enqueued, as an ``rqworker`` would (burst, no fork)."""
    import django_rq
    from rq import SimpleWorker

    from openai_batches.conf import app_settings

    worker = django_rq.get_worker(app_settings.QUEUE, worker_class=SimpleWorker)
    worker.work(burst=True, with_scheduler=False)


def requests_jsonl(n: int) -> str:
    return "".join(
        json.dumps(
            {
                "custom_id": f"browser-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": f"Summarise document {i}."}],
                },
            }
        )
        + "\n"
        for i in range(n)
    )


def test_operator_creates_submits_watches_and_downloads(
    page: Any, live_server: Any, transactional_db: None, django_user_model: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    django_user_model.objects.create_superuser("operator", "op@example.com", PASSWORD)
    base = live_server.url

    with running_emulator(timing="fast") as emulator:
        emulator.fail_request("browser-3")  # one red segment in the progress bar

        # Log in.
        page.goto(f"{base}/admin/login/?next=/admin/openai_batches/batchjob/")
        page.fill("#id_username", "operator")
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        expect(page).to_have_url(f"{base}/admin/openai_batches/batchjob/")

        # Create a job by uploading a JSONL file.
        source = tmp_path / "summaries.jsonl"
        source.write_text(requests_jsonl(5))
        page.click(".object-tools a.addlink")  # not the sidebar's "add" links
        page.fill("#id_name", "Nightly summaries")
        page.set_input_files("#id_jsonl_file", str(source))
        page.click("input[name=_save]")
        expect(page.locator(".messagelist")).to_contain_text(
            "Created job “Nightly summaries” with 5 requests"
        )
        job = BatchJob.objects.get(name="Nightly summaries")
        assert job.item_count == 5

        # Submit it: the button records the intent and enqueues the RQ job.
        page.click("button[data-action=submit_jobs]")
        expect(page.locator(".messagelist")).to_contain_text("Submission requested for 1 job")
        expect(page.locator(".field-status_badge [data-state]")).to_have_attribute(
            "data-state", JobState.SUBMIT_REQUESTED
        )
        run_enqueued_jobs()
        job.refresh_from_db()
        assert job.state == JobState.SUBMITTED, job.last_error

        # Watch: press "Refresh now" until the provider says completed and results are in.
        seen: list[tuple[str, str, str]] = []
        deadline = time.monotonic() + 60
        while True:
            refresh = page.locator("button[data-action=refresh_jobs]")
            if refresh.count():
                refresh.click()
            else:
                page.reload()
            badge = page.locator(".field-status_badge [data-state]")
            state = badge.get_attribute("data-state") or ""
            status_el = page.locator(".field-status_badge [data-provider-status]")
            status = status_el.get_attribute("data-provider-status") if status_el.count() else ""
            progress = page.locator(".field-progress .ob-progress-wrap")
            done = progress.get_attribute("data-completed") or ""
            if not seen or seen[-1] != (state, status or "", done):
                seen.append((state, status or "", done))
            if state == JobState.FINISHED:
                break
            assert time.monotonic() < deadline, f"job never finished; saw {seen}"
            if len(seen) == 2:
                page.screenshot(path=str(SCREENSHOTS / "batchjob-page-running.png"), full_page=True)
            page.wait_for_timeout(500)

        assert seen[-1][1] == BatchStatus.COMPLETED, seen
        assert any(s[1] in ("validating", "in_progress", "finalizing") for s in seen), seen
        expect(progress).to_have_attribute("data-completed", "4")
        expect(progress).to_have_attribute("data-failed", "1")
        expect(progress).to_have_attribute("data-total", "5")
        expect(page.locator(".ob-timeline")).to_contain_text("completed")
        page.screenshot(path=str(SCREENSHOTS / "batchjob-page.png"), full_page=True)

        # The list shows the same at a glance.
        page.goto(f"{base}/admin/openai_batches/batchjob/")
        row = page.locator("#result_list tbody tr", has_text="Nightly summaries")
        expect(row.locator("[data-provider-status]")).to_have_attribute(
            "data-provider-status", "completed"
        )
        expect(row.locator(".ob-progress-text")).to_contain_text("5 / 5")
        page.screenshot(path=str(SCREENSHOTS / "batchjob-list.png"), full_page=True)

        # Open one item's response through the job's filtered item list.
        row.locator("th a").click()
        page.click("a.ob-items-link")
        expect(page.locator("#result_list tbody tr")).to_have_count(5)
        page.click("#result_list a:text-is('browser-0')")
        response = page.locator(".field-response_pretty pre.ob-json")
        expect(response).to_contain_text('"choices"')
        expect(page.locator(".field-state_badge [data-state]")).to_have_attribute(
            "data-state", ItemState.SUCCEEDED
        )
        page.screenshot(path=str(SCREENSHOTS / "requestitem-page.png"), full_page=True)
        failed = job.items.get(custom_id="browser-3")
        page.goto(f"{base}/admin/openai_batches/requestitem/{failed.pk}/change/")
        expect(page.locator(".field-state_badge [data-state]")).to_have_attribute(
            "data-state", ItemState.FAILED
        )

        # Download the output file from the job page.
        page.goto(f"{base}/admin/openai_batches/batchjob/{job.pk}/change/")
        with page.expect_download() as info:
            page.click("button[data-action=download_output]")
        download = info.value
        target = tmp_path / download.suggested_filename
        download.save_as(target)
        assert download.suggested_filename.endswith("-output.jsonl")
        lines = [json.loads(x) for x in target.read_text().splitlines()]
        assert sorted(x["custom_id"] for x in lines) == [
            "browser-0",
            "browser-1",
            "browser-2",
            "browser-4",
        ]
        assert all(x["response"]["status_code"] == 200 for x in lines)
        assert emulator.api_key not in page.content()


# --------------------------------------------------------------------------------------------
# The console for many jobs: live updates, a list that fits a laptop, the dashboard, and a
# download after the provider forgot the file.
# --------------------------------------------------------------------------------------------

LAPTOP = {"width": 1366, "height": 800}


def submitted(name: str, n: int = 3) -> BatchJob:
    """A job the provider is validating, submitted through services as the RQ job would."""
    from openai_batches import services

    job = services.create_job(
        endpoint="/v1/chat/completions",
        name=name,
        items=[
            {
                "custom_id": f"{name}-{i}",
                "body": {
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": f"Say {i}."}],
                },
            }
            for i in range(n)
        ],
    )
    services.request_submit(job)
    job = services.submit(job)
    assert job.state == JobState.SUBMITTED, job.last_error
    return job


def poll_until_finished(job: BatchJob, timeout: float = 60) -> None:
    """What the scheduled poll job does, from the test's thread, while the page stays open."""
    from openai_batches import services

    deadline = time.monotonic() + timeout
    while True:
        job.refresh_from_db()
        if job.state == JobState.FINISHED:
            return
        assert time.monotonic() < deadline, f"job never finished: {job.provider_status}"
        services.refresh(job)
        time.sleep(0.5)


def login(page: Any, base: str, next_url: str) -> None:
    page.goto(f"{base}/admin/login/?next={next_url}")
    page.fill("#id_username", "operator")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")


def test_live_pages_laptop_list_dashboard_and_download_after_the_provider_forgot(
    page: Any,
    live_server: Any,
    transactional_db: None,
    django_user_model: Any,
    tmp_path: Path,
    settings: Any,
) -> None:
    from playwright.sync_api import expect

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    settings.OPENAI_BATCHES = {
        **settings.OPENAI_BATCHES,
        "PRICES": {"gpt-4o-mini": {"input": 0.075, "output": 0.3}},
    }
    django_user_model.objects.create_superuser("operator", "op@example.com", PASSWORD)
    base = live_server.url
    page.set_viewport_size(LAPTOP)

    with running_emulator(timing="fast") as emulator:
        # The list, with a job the provider is validating: its row changes with no reload.
        listed = submitted("Live on the list")
        from openai_batches import services

        # More rows with the same name, told apart by their id.
        big, *_ = [
            services.create_job(endpoint="/v1/chat/completions", name="Nightly summaries")
            for _ in range(3)
        ]
        # A big finished job: the widest tokens and cost a row shows.
        BatchJob.objects.filter(pk=big.pk).update(
            state=JobState.FINISHED,
            provider_status=BatchStatus.COMPLETED,
            model="gpt-4o-mini",
            input_tokens=123_456_789,
            output_tokens=12_345_678,
        )
        login(page, base, "/admin/openai_batches/batchjob/")
        expect(page).to_have_url(f"{base}/admin/openai_batches/batchjob/")
        expect(page.locator("#ob-live")).to_have_attribute("data-state", "polling")
        page.evaluate("window.__notReloaded = true")
        row = page.locator(f"#result_list tr:has([data-ob-job='{listed.pk}'])")
        expect(row.locator("[data-provider-status]")).to_have_attribute(
            "data-provider-status", BatchStatus.VALIDATING
        )
        page.screenshot(path=str(SCREENSHOTS / "batchjob-list-live-validating.png"))
        poll_until_finished(listed)
        expect(row.locator("[data-state]")).to_have_attribute(
            "data-state", JobState.FINISHED, timeout=20_000
        )
        expect(row.locator("[data-provider-status]")).to_have_attribute(
            "data-provider-status", BatchStatus.COMPLETED
        )
        expect(row.locator(".ob-progress-text")).to_contain_text("3 / 3")
        expect(page.locator("#ob-live")).to_have_attribute("data-state", "stopped")
        assert page.evaluate("window.__notReloaded") is True

        # At 1366 px with the sidebar and filters open, nothing scrolls sideways and the
        # cost and tokens columns are on screen.
        fits = page.evaluate(
            """() => {
                const r = document.querySelector('#changelist .results');
                const right = (sel) => document.querySelector(sel).getBoundingClientRect().right;
                return {
                    results: [r.scrollWidth, r.clientWidth],
                    page: [document.documentElement.scrollWidth, window.innerWidth],
                    cost: right('#result_list thead th.column-cost_usd'),
                    tokens: right('#result_list thead th.column-tokens'),
                    sidebar: !!document.querySelector('#nav-sidebar') &&
                        getComputedStyle(document.querySelector('#nav-sidebar')).display !== 'none',
                };
            }"""
        )
        page.screenshot(path=str(SCREENSHOTS / "batchjob-list-1366.png"), full_page=True)
        assert fits["results"][0] <= fits["results"][1], fits
        assert fits["page"][0] <= fits["page"][1], fits
        assert fits["cost"] <= LAPTOP["width"] and fits["tokens"] <= LAPTOP["width"], fits

        # The job page of another batch: fields, timeline and buttons follow, no reload.
        shown = submitted("Live on its page")
        page.goto(f"{base}/admin/openai_batches/batchjob/{shown.pk}/change/")
        page.evaluate("window.__notReloaded = true")
        badge = page.locator(".field-status_badge [data-provider-status]")
        expect(badge).to_have_attribute("data-provider-status", BatchStatus.VALIDATING)
        expect(page.locator("button[data-action=download_output]")).to_have_count(0)
        page.screenshot(path=str(SCREENSHOTS / "batchjob-page-live-validating.png"), full_page=True)
        poll_until_finished(shown)
        expect(badge).to_have_attribute(
            "data-provider-status", BatchStatus.COMPLETED, timeout=20_000
        )
        expect(page.locator(".field-status_badge [data-state]")).to_have_attribute(
            "data-state", JobState.FINISHED
        )
        expect(page.locator(".ob-timeline [data-field=completed_at]")).to_have_count(1)
        expect(page.locator("button[data-action=download_output]")).to_have_count(1)
        expect(page.locator("button[data-action=refresh_jobs]")).to_have_count(0)
        expect(page.locator("#ob-live")).to_have_attribute("data-state", "stopped")
        assert page.evaluate("window.__notReloaded") is True
        expect(page.locator("input[name=_addanother]")).to_have_count(0)
        page.screenshot(path=str(SCREENSHOTS / "batchjob-page-live-finished.png"), full_page=True)

        # The provider forgets the output file; the button still downloads it, rebuilt
        # from the stored results.
        shown.refresh_from_db()
        emulator.emulator.delete_file(shown.output_file_id)
        with page.expect_download() as info:
            page.click("button[data-action=download_output]")
        target = tmp_path / info.value.suggested_filename
        info.value.save_as(target)
        lines = [json.loads(x) for x in target.read_text().splitlines()]
        assert sorted(x["custom_id"] for x in lines) == [f"Live on its page-{i}" for i in range(3)]
        assert all(x["response"]["status_code"] == 200 for x in lines)

        # The dashboard, from the app's index, in the light and the dark theme.
        page.goto(f"{base}/admin/openai_batches/")
        page.click("a.ob-dashboard-link")
        # Two ingested batches of gpt-4o-mini; three jobs completed (one set by hand above).
        expect(page.locator("#ob-per-model tr[data-model='gpt-4o-mini'] td").first).to_have_text(
            "2"
        )
        expect(page.locator(".ob-rule")).to_contain_text("half the synchronous price")
        expect(page.locator("#ob-outcomes tr[data-outcome=completed] td").first).to_have_text("3")
        expect(page.locator("#ob-spend-per-day svg rect.ob-bar-batch").first).to_be_attached()
        page.screenshot(path=str(SCREENSHOTS / "dashboard.png"), full_page=True)
        page.emulate_media(color_scheme="dark")
        page.reload()
        background = page.evaluate(
            "getComputedStyle(document.querySelector('.ob-card')).backgroundColor"
        )
        assert background not in ("rgb(248, 248, 248)", "rgba(0, 0, 0, 0)"), background
        page.screenshot(path=str(SCREENSHOTS / "dashboard-dark.png"), full_page=True)
        assert emulator.api_key not in page.content()
