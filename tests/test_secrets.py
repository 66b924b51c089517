"""The API keys and the webhook secret never show: not in Django's error reports (the DEBUG
page, the admin error email), logs, database rows, admin pages or API answers.

Each test configures distinctive credentials and then searches everything a person or a
log collector could see for them. Any hit is a leak.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.core import mail
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.test import Client, RequestFactory, override_settings
from django.urls import include, path, reverse
from django.utils.log import AdminEmailHandler
from django.views.debug import ExceptionReporter, technical_500_response

from openai_batches import services
from openai_batches.client import get_client
from openai_batches.conf import app_settings
from openai_batches.exceptions import ConfigurationError, OpenAIBatchesError
from openai_batches.models import BatchJob
from openai_batches.signing import sign
from openai_batches.testing import running_emulator
from tests.lifecycle_helpers import job_with_batch

KEY = "sk-proj-LEAKCANARY-default-0123456789abcdef"
AZURE_KEY = "az-LEAKCANARY-azure-0123456789abcdef"
WEBHOOK_SECRET = "whsec_TEVBS0NBTkFSWS13ZWJob29rLXNlY3JldC0wMTIz"
#: What must never be found. The base64 body of the secret is searched too: it is the key.
CANARIES = (KEY, AZURE_KEY, WEBHOOK_SECRET, WEBHOOK_SECRET.removeprefix("whsec_"), "LEAKCANARY")


def assert_no_secret(text: str, where: str) -> None:
    for canary in CANARIES:
        assert canary not in text, f"{canary[:12]}... found in {where}"


@pytest.fixture
def secrets_configured(settings: Any) -> dict[str, Any]:
    settings.OPENAI_BATCHES = {
        **settings.OPENAI_BATCHES,
        "API_KEY": KEY,
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
        "MAX_RETRIES": 0,
        "ACCOUNTS": {"azure": {"API_KEY": AZURE_KEY, "BASE_URL": "http://127.0.0.1:9/v1"}},
    }
    return settings.OPENAI_BATCHES  # type: ignore[no-any-return]


# -- item 8: Django's error reports ------------------------------------------------------


def view_unreachable(request: HttpRequest) -> HttpResponse:
    # A configured key against a base URL nobody listens on (port 9, discard).
    get_client("azure").list_batches()
    return HttpResponse("unreachable?")


def view_renamed_account(request: HttpRequest) -> HttpResponse:
    # A job whose account was renamed in settings (issue 10, item 8).
    app_settings.account("renamed")
    return HttpResponse("found?")


def view_broken_accounts(request: HttpRequest) -> HttpResponse:
    app_settings.account_names()
    return HttpResponse("fine?")


def view_refresh(request: HttpRequest) -> HttpResponse:
    services.refresh(BatchJob.objects.get())
    return HttpResponse("refreshed?")


urlpatterns = [
    path("unreachable/", view_unreachable),
    path("renamed/", view_renamed_account),
    path("broken/", view_broken_accounts),
    path("refresh/", view_refresh),
    path("openai/webhooks/", include("openai_batches.urls")),
]


@pytest.fixture
def admins_mailed(settings: Any) -> Iterator[None]:
    """The ``django.request`` errors mailed to ADMINS with the HTML report attached, the
    way the default LOGGING does in production (here for DEBUG on and off alike)."""
    settings.ADMINS = [("Ops", "ops@example.com")]
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    handler = AdminEmailHandler(include_html=True)
    logger = logging.getLogger("django.request")
    logger.addHandler(handler)
    yield
    logger.removeHandler(handler)


@pytest.mark.urls(__name__)
@pytest.mark.django_db
@pytest.mark.parametrize("debug", [True, False])
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("/unreachable/", "APIConnectionError"),
        ("/renamed/", "ConfigurationError"),
        ("/broken/", "ConfigurationError"),
        ("/refresh/", "ConfigurationError"),
    ],
)
def test_error_reports_never_show_a_key_or_the_webhook_secret(
    settings: Any,
    secrets_configured: dict[str, Any],
    admins_mailed: None,
    url: str,
    expected: str,
    debug: bool,
) -> None:
    settings.DEBUG = debug
    if url == "/broken/":
        settings.OPENAI_BATCHES = {
            **secrets_configured,
            # Django's settings listing cleanses by key name, so a key written where the
            # account's dict belongs ("eu": "sk-...") would show there: not tested here.
            "ACCOUNTS": {**secrets_configured["ACCOUNTS"], "eu": 42},
        }
    if url == "/refresh/":
        job_with_batch("batch_1", name="renamed", account="renamed", state="submitted")
    mail.outbox.clear()
    client = Client(raise_request_exception=False)
    response = client.get(url)
    assert response.status_code == 500
    if debug:
        page = response.content.decode()
        assert expected in page  # the real technical 500 page, with its frames
        assert "Local vars" in page and '<th scope="col">Variable</th>' in page
        assert "OPENAI_BATCHES" in page  # the settings listing, cleansed
        assert_no_secret(page, "the DEBUG page")
    # Ours (with the HTML report), and with DEBUG off also Django's default mail_admins.
    htmls = [m.alternatives[0][0] for m in mail.outbox if m.alternatives]  # type: ignore[attr-defined]
    assert len(htmls) == 1
    assert expected in htmls[0] and '<th scope="col">Variable</th>' in htmls[0]  # the locals
    assert_no_secret(htmls[0], "the HTML error email")
    for message in mail.outbox:
        assert_no_secret(message.body, "the text error email")
        assert_no_secret(message.subject, "the error email's subject")


def _error_from_the_accessor() -> Any:
    try:
        app_settings.account("renamed")
    except ConfigurationError:
        return sys.exc_info()
    raise AssertionError("no error")


@pytest.mark.django_db
@pytest.mark.usefixtures("secrets_configured")  # not a local: the test's frame is reported too
def test_a_rendered_report_of_a_secret_holding_frame_shows_stars(settings: Any) -> None:
    """Render the reports by hand from an exception raised inside the settings accessor,
    whose frame holds the merged settings (the original leak)."""
    settings.DEBUG = True
    request = RequestFactory().get("/")
    exc_info = _error_from_the_accessor()
    page = technical_500_response(request, *exc_info).content.decode()
    assert "merged" in page  # the frame's locals are there ...
    assert "Secret(&#x27;********&#x27;)" in page  # ... with the key as stars
    assert_no_secret(page, "technical_500_response")
    reporter = ExceptionReporter(request, *exc_info, is_email=True)
    assert_no_secret(reporter.get_traceback_html(), "the email report")
    assert_no_secret(reporter.get_traceback_text(), "the text report")


# -- item 5: a whole run, then search everything ------------------------------------------


def _every_logger_at_debug() -> Iterator[None]:
    """Every logger (ours, httpx, httpcore, django, rq) at DEBUG and propagating to the
    root, where caplog listens."""
    names = ["", *logging.root.manager.loggerDict]
    saved = []
    for name in names:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate, logger.disabled))
        logger.setLevel(logging.DEBUG)
        logger.disabled = False
        if name:
            logger.propagate = True
    yield
    for logger, level, propagate, disabled in saved:
        logger.setLevel(level)
        logger.propagate = propagate
        logger.disabled = disabled


def _dump_database() -> str:
    """Every row of every table, the app's and Django's alike."""
    out = io.StringIO()
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608
            for row in cursor.fetchall():
                out.write(f"{table}: {row!r}\n")
    return out.getvalue()


def _dump_redis() -> str:
    import django_rq

    conn = django_rq.get_connection("openai_batches")
    out = io.StringIO()
    for key in conn.keys("*"):
        kind = conn.type(key).decode()
        value: Any
        if kind == "string":
            value = conn.get(key)
        elif kind == "hash":
            value = conn.hgetall(key)
        elif kind == "list":
            value = conn.lrange(key, 0, -1)
        elif kind == "set":
            value = conn.smembers(key)
        elif kind == "zset":
            value = conn.zrange(key, 0, -1)
        else:
            value = kind
        out.write(f"{key!r}: {value!r}\n")
    return out.getvalue()


@pytest.mark.urls("tests.urls")
@pytest.mark.django_db(transaction=True)
def test_no_credential_in_logs_database_redis_admin_or_api_after_a_full_run(
    settings: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.core.management import CommandError, call_command

    from tests.lifecycle_helpers import make_job

    monkeypatch.setenv("OPENAI_API_KEY", KEY)  # the environment holds it too
    monkeypatch.setenv("OPENAI_WEBHOOK_SECRET", WEBHOOK_SECRET)
    debug_everywhere = _every_logger_at_debug()
    next(debug_everywhere)
    caplog.set_level(logging.DEBUG)
    outputs: list[str] = []
    try:
        with running_emulator(api_key=KEY) as emu, contextlib.ExitStack() as layers:
            # override_settings layers, not the settings fixture: they must unwind before
            # running_emulator's own (the fixture's would restore the emulator's URL).
            layers.enter_context(
                override_settings(
                    OPENAI_BATCHES={
                        **django_settings.OPENAI_BATCHES,
                        "API_KEY": KEY,
                        "WEBHOOK_SECRET": WEBHOOK_SECRET,
                        "BASE_URL": emu.base_url,
                        "ACCOUNTS": {
                            # The emulator insists on KEY: this account's calls are refused (401).
                            "azure": {"API_KEY": AZURE_KEY, "BASE_URL": emu.base_url},
                            "gone": {"API_KEY": KEY, "BASE_URL": emu.base_url},
                        },
                    }
                )
            )
            # Submit, refresh, ingest: the happy path.
            done = make_job(3, name="happy")
            services.request_submit(done)
            done = services.submit(done)
            assert done.state == "submitted", done.last_error
            done = services.refresh(done)
            assert done.state == "finished", done.last_error
            # A provider error: a wrong key (the emulator's 401 quotes it, masked).
            refused = make_job(2, name="refused", account="azure")
            services.request_submit(refused)
            refused = services.submit(refused)
            assert refused.last_error
            # A provider error while polling: 500s until the retries run out.
            polled = make_job(2, name="polled")
            services.request_submit(polled)
            polled = services.submit(polled)
            emu.inject_fault("GET", "/v1/batches/*", "status", status=500, count=10)
            with pytest.raises(OpenAIBatchesError):
                services.refresh(polled)
            emu.clear_faults()
            # A ConfigurationError: the job's account is renamed away.
            orphan = make_job(2, name="orphan", account="gone")
            layers.enter_context(
                override_settings(
                    OPENAI_BATCHES={
                        **django_settings.OPENAI_BATCHES,
                        "ACCOUNTS": {"azure": django_settings.OPENAI_BATCHES["ACCOUNTS"]["azure"]},
                    }
                )
            )
            services.request_submit(orphan)
            with pytest.raises(OpenAIBatchesError):
                services.submit(orphan)
            # A webhook for the polled job, and a forged one.
            body = json.dumps(
                {
                    "object": "event",
                    "id": "evt_1",
                    "type": "batch.completed",
                    "created_at": 1,
                    "data": {"id": polled.provider_batch_id},
                }
            ).encode()
            ts = int(time.time())
            web = Client()
            for secret in (WEBHOOK_SECRET, "whsec_Zm9yZ2Vk"):
                response = web.post(
                    reverse("openai_batches:webhook"),
                    body,
                    content_type="application/json",
                    headers={
                        "webhook-id": f"wh_{secret[-4:]}",
                        "webhook-timestamp": str(ts),
                        "webhook-signature": sign(secret, f"wh_{secret[-4:]}", ts, body),
                    },
                )
                outputs.append(response.content.decode())
            # cron's pass over everything.
            stdout, stderr = io.StringIO(), io.StringIO()
            try:
                call_command("sync_batches", stdout=stdout, stderr=stderr)
            except CommandError as err:  # some jobs failed: its message is output too
                outputs.append(str(err))
            outputs += [stdout.getvalue(), stderr.getvalue()]

            # The admin, as a superuser: changelists and every change page.
            admin_user = get_user_model().objects.create_superuser("root", "r@example.com", "pw")
            web.force_login(admin_user)
            pages = [
                reverse("admin:index"),
                reverse("admin:openai_batches_batchjob_changelist"),
                reverse("admin:openai_batches_requestitem_changelist"),
            ]
            for job in BatchJob.objects.all():
                pages.append(reverse("admin:openai_batches_batchjob_change", args=[job.pk]))
                for item in job.items.all():
                    pages.append(reverse("admin:openai_batches_requestitem_change", args=[item.pk]))
            # Every API endpoint, read and write.
            api = "openai_batches_api:"
            pages += [reverse(api + "job-list"), reverse(api + "schema")]
            for job in BatchJob.objects.all():
                pages += [
                    reverse(api + "job-detail", args=[job.uuid]),
                    reverse(api + "job-results", args=[job.uuid]),
                    reverse(api + "job-item-list", kwargs={"job_uuid": job.uuid}),
                ]
                for item in job.items.all():
                    pages.append(
                        reverse(
                            api + "job-item-detail",
                            kwargs={"job_uuid": job.uuid, "custom_id": item.custom_id},
                        )
                    )
            for url in pages:
                response = web.get(url)
                assert response.status_code in (200, 404), (url, response.status_code)
                content = (
                    b"".join(response.streaming_content)  # type: ignore[attr-defined]
                    if response.streaming
                    else response.content
                )
                outputs.append(f"{url}\n{content.decode()}")
            for job in BatchJob.objects.all():
                for action in ("job-refresh", "job-submit", "job-cancel"):
                    response = web.post(reverse(api + action, args=[job.uuid]))
                    outputs.append(f"{action} {job.name}: {response.content.decode()}")
    finally:
        debug_everywhere.close()

    assert len(outputs) > 20
    for text in outputs:
        assert_no_secret(text, "an admin page, an API answer, a webhook answer or a command")
    loggers = {r.name.split(".")[0] for r in caplog.records}
    # httpcore logs every request's steps at DEBUG: proof the capture saw the wire level.
    assert {"openai_batches", "httpx", "httpcore"} <= loggers, loggers
    assert_no_secret(caplog.text, "the logs")
    for record in caplog.records:
        assert_no_secret(record.getMessage(), f"the log record {record.name}")
        assert_no_secret(repr(record.args), f"the log record args of {record.name}")
    database = _dump_database()
    assert "refused" in database and "openai_batches_batchjob" in database  # it did dump
    assert_no_secret(database, "the database")
    assert_no_secret(_dump_redis(), "Redis (the RQ queue)")
    refused_error = BatchJob.objects.get(name="refused").last_error
    assert "401" in refused_error or "Incorrect API key" in refused_error
