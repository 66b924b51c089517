"""The API keys and the webhook secret never show: not in Django's error reports (the DEBUG
page, the admin error email), logs, database rows, admin pages or API answers.

Each test configures distinctive credentials and then searches everything a person or a
log collector could see for them. Any hit is a leak.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from django.core import mail
from django.http import HttpRequest, HttpResponse
from django.test import Client, RequestFactory
from django.urls import include, path
from django.utils.log import AdminEmailHandler
from django.views.debug import ExceptionReporter, technical_500_response

from openai_batches import services
from openai_batches.client import get_client
from openai_batches.conf import app_settings
from openai_batches.exceptions import ConfigurationError
from openai_batches.models import BatchJob

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
        BatchJob.objects.create(
            name="renamed", account="renamed", state="submitted", provider_batch_id="batch_1"
        )
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
