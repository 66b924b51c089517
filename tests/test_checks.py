"""System checks: every id, each with a hint; a clean configuration is silent."""

from __future__ import annotations

from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.checks import ERROR, WARNING, CheckMessage
from django.core.management import call_command
from django.test import override_settings

from openai_batches.checks import check_api_keys_deploy, check_rq, check_settings
from openai_batches.conf import DEFAULTS, app_settings

SECRET = "sk-proj-must-not-appear-in-any-check-message"


@pytest.fixture(autouse=True)
def _no_openai_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(name, raising=False)


def run_checks() -> list[CheckMessage]:
    return [*check_settings(), *check_rq()]


def ids(messages: list[CheckMessage]) -> list[str]:
    return [m.id for m in messages]


def only(messages: list[CheckMessage], check_id: str) -> CheckMessage:
    """The single message of ``check_id``; every message must have its hint."""
    for message in messages:
        assert message.id
        assert message.id.startswith("openai_batches.")
        assert isinstance(message.hint, str)
        assert message.hint.strip()
        assert SECRET not in message.msg
        assert SECRET not in message.hint
    found = [m for m in messages if m.id == check_id]
    assert len(found) == 1, ids(messages)
    return found[0]


def configure(settings: Any, **values: Any) -> None:
    """A valid base configuration with ``values`` on top."""
    settings.OPENAI_BATCHES = {"API_KEY": SECRET, "QUEUE": "openai_batches", **values}


# --- clean ------------------------------------------------------------------------------------


def test_test_settings_are_clean() -> None:
    assert run_checks() == []


def test_minimal_configuration_is_clean(settings, monkeypatch) -> None:
    settings.OPENAI_BATCHES = {}
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    assert run_checks() == []  # QUEUE "default" is in RQ_QUEUES


@pytest.fixture
def setting_absent(settings) -> Iterator[None]:
    del settings.OPENAI_BATCHES
    app_settings.reload()  # pytest-django's delattr sends no setting_changed
    yield
    app_settings.reload()


def test_absent_setting_with_env_key_is_clean(setting_absent, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    assert run_checks() == []


def test_full_valid_configuration_is_clean(settings) -> None:
    configure(
        settings,
        BASE_URL="https://api.openai.com/v1",
        ORGANIZATION="org-x",
        PROJECT="proj-x",
        TIMEOUT=0.1,
        MAX_RETRIES=20,
        POLL_INTERVAL=600,
        POLL_MAX_INTERVAL=600,
        POLL_BACKOFF=10,
        MAX_REQUESTS_PER_BATCH=50_000,
        MAX_FILE_BYTES=200 * 1024 * 1024,
        INGEST_CHUNK_SIZE=100_000,
        ACCOUNTS={"azure": {"API_KEY": "k", "BASE_URL": "https://a.example.com/openai/v1"}},
        PRICES={"gpt-4o-mini": {"input": 0.075, "output": 0.3}},
        WEBHOOK_SECRET="whsec_x",
    )
    assert run_checks() == []


@pytest.mark.django_db  # Django 6.1's checks open the database
def test_manage_py_check_is_clean_on_the_test_settings() -> None:
    out = StringIO()
    call_command("check", stdout=out, stderr=out)
    assert "System check identified no issues" in out.getvalue()


@pytest.mark.django_db  # Django 6.1's checks open the database
def test_manage_py_check_fails_on_an_error(settings) -> None:
    from django.core.management.base import SystemCheckError

    configure(settings, POLL_BACKOFF=0)
    with pytest.raises(SystemCheckError, match=r"openai_batches\.E002"):
        call_command("check", stdout=StringIO(), stderr=StringIO())


# --- E001 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["sk-key", ["API_KEY", "x"], 42])
def test_e001_setting_is_not_a_dict(settings, value: Any) -> None:
    settings.OPENAI_BATCHES = value
    messages = check_settings()
    message = only(messages, "openai_batches.E001")
    assert message.level == ERROR
    assert "OPENAI_BATCHES must be a dict" in message.msg
    assert ids(messages) == ["openai_batches.E001"]
    assert check_rq() == []  # check_rq does not crash on the broken setting either


# --- E002 -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("TIMEOUT", 0),
        ("TIMEOUT", "10"),
        ("MAX_RETRIES", -1),
        ("MAX_RETRIES", 21),
        ("MAX_RETRIES", True),
        ("POLL_INTERVAL", 0),
        ("POLL_MAX_INTERVAL", 0),
        ("POLL_BACKOFF", 0.5),
        ("POLL_BACKOFF", 11),
        ("MAX_REQUESTS_PER_BATCH", 0),
        ("MAX_REQUESTS_PER_BATCH", 50_001),
        ("MAX_FILE_BYTES", 200 * 1024 * 1024 + 1),
        ("MAX_FILE_BYTES", None),
        ("MAX_EMBEDDING_INPUTS_PER_BATCH", 50_001),
        ("MAX_REQUESTS_PER_JOB", 0),
        ("INGEST_CHUNK_SIZE", 0),
        ("INGEST_CHUNK_SIZE", 100_001),
        ("REQUEST_DEADLINE", 0),
        ("TRANSFER_DEADLINE", "1h"),
        ("MAX_RESPONSE_BYTES", 1024),
        ("MAX_DOWNLOAD_BYTES", 0),
        ("WEBHOOK_TOLERANCE", 5),
        ("WEBHOOK_TOLERANCE", 86400),
    ],
)
def test_e002_value_out_of_range(settings, key: str, value: Any) -> None:
    configure(settings, **{key: value})
    message = only(check_settings(), "openai_batches.E002")
    assert message.level == ERROR
    assert f"OPENAI_BATCHES[{key!r}]" in message.msg
    assert repr(DEFAULTS[key]) in message.hint  # the hint names the default


def test_e002_every_bad_value_is_reported(settings) -> None:
    configure(settings, TIMEOUT=0, MAX_RETRIES=99, POLL_BACKOFF=0)
    messages = check_settings()
    assert ids(messages) == ["openai_batches.E002"] * 3


def test_e002_poll_max_interval_below_poll_interval(settings) -> None:
    configure(settings, POLL_INTERVAL=60, POLL_MAX_INTERVAL=30)
    message = only(check_settings(), "openai_batches.E002")
    assert "POLL_MAX_INTERVAL" in message.msg
    assert "POLL_INTERVAL" in message.msg


def test_e002_poll_max_interval_below_default_poll_interval(settings) -> None:
    configure(settings, POLL_MAX_INTERVAL=10)  # default POLL_INTERVAL is 30
    only(check_settings(), "openai_batches.E002")


def test_e002_poll_max_interval_equal_to_poll_interval_is_fine(settings) -> None:
    configure(settings, POLL_INTERVAL=30, POLL_MAX_INTERVAL=30)
    assert check_settings() == []


def test_e002_poll_order_is_reported_alongside_an_unknown_key(settings) -> None:
    # An unrelated typo (a W001 warning) must not hide the interval error.
    configure(settings, POLL_INTERVAL=60, POLL_MAX_INTERVAL=30, POLL_INTERVALL=5)
    messages = check_settings()
    only(messages, "openai_batches.W001")
    only(messages, "openai_batches.E002")


# --- E003 -------------------------------------------------------------------------------------


def test_e003_account_with_unknown_keys(settings) -> None:
    configure(settings, ACCOUNTS={"azure": {"API_KEY": "k", "APIKEY": "x", "URL": "y"}})
    message = only(check_settings(), "openai_batches.E003")
    assert "'azure'" in message.msg
    assert "APIKEY" in message.msg
    assert "URL" in message.msg
    assert "API_KEY" in message.hint


@pytest.mark.parametrize("accounts", [["azure"], "azure", 5])
def test_e003_accounts_not_a_dict(settings, accounts: Any) -> None:
    configure(settings, ACCOUNTS=accounts)
    message = only(check_settings(), "openai_batches.E003")
    assert "ACCOUNTS" in message.msg


def test_e003_account_entry_not_a_dict(settings) -> None:
    configure(settings, ACCOUNTS={"azure": "sk-az"})
    message = only(check_settings(), "openai_batches.E003")
    assert "'azure'" in message.msg


def test_e003_default_account_entry_not_a_dict(settings) -> None:
    configure(settings, ACCOUNTS={"default": "sk-az"})
    message = only(check_settings(), "openai_batches.E003")
    assert "'default'" in message.msg


# --- W004 / E004: no API key ----------------------------------------------------------------
# A missing key is a warning in the checks every command runs (migrate, collectstatic and
# makemigrations must work in CI and Docker builds, which have no secrets) and an error under
# ``check --deploy``, the check a production deployment runs with its real settings.


def test_w004_no_api_key_is_a_warning_not_an_error(settings) -> None:
    settings.OPENAI_BATCHES = {"QUEUE": "openai_batches"}
    messages = check_settings()
    message = only(messages, "openai_batches.W004")
    assert message.level == WARNING
    assert "'default'" in message.msg
    assert "https://api.openai.com/v1" in message.msg
    assert "OPENAI_API_KEY" in message.hint
    assert "--deploy" in message.hint
    assert ids(messages) == ["openai_batches.W004"]
    assert not [m for m in messages if m.level >= ERROR]


def test_e004_no_api_key_is_an_error_under_deploy(settings) -> None:
    settings.OPENAI_BATCHES = {"QUEUE": "openai_batches"}
    messages = check_api_keys_deploy()
    message = only(messages, "openai_batches.E004")
    assert message.level == ERROR
    assert "'default'" in message.msg
    assert "https://api.openai.com/v1" in message.msg
    assert "OPENAI_API_KEY" in message.hint


def test_e004_is_registered_as_a_deploy_check_only() -> None:
    from django.core.checks import registry

    assert check_api_keys_deploy in registry.registry.get_checks(include_deployment_checks=True)
    assert check_api_keys_deploy not in registry.registry.get_checks()


@pytest.mark.django_db
def test_migrate_runs_its_checks_and_passes_without_an_api_key(settings) -> None:
    settings.OPENAI_BATCHES = {"QUEUE": "openai_batches"}
    # skip_checks=False: migrate runs the system checks as it does from the command line.
    call_command("migrate", verbosity=0, skip_checks=False, stdout=StringIO(), stderr=StringIO())


def test_check_deploy_fails_without_an_api_key(settings) -> None:
    from django.core.management.base import SystemCheckError

    settings.OPENAI_BATCHES = {"QUEUE": "openai_batches"}
    with pytest.raises(SystemCheckError, match=r"openai_batches\.E004"):
        call_command("check", deploy=True, stdout=StringIO(), stderr=StringIO())


def test_e004_env_key_satisfies_the_check(settings, monkeypatch) -> None:
    settings.OPENAI_BATCHES = {"QUEUE": "openai_batches"}
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    assert check_settings() == []
    assert check_api_keys_deploy() == []


def test_e004_no_api_key_for_a_named_remote_account(settings) -> None:
    configure(settings, ACCOUNTS={"azure": {"BASE_URL": "https://a.example.com/openai/v1"}})
    for messages, check_id in (
        (check_settings(), "openai_batches.W004"),
        (check_api_keys_deploy(), "openai_batches.E004"),
    ):
        message = only(messages, check_id)
        assert "'azure'" in message.msg
        assert "OPENAI_BATCHES['ACCOUNTS']['azure']['API_KEY']" in message.hint


@pytest.mark.parametrize(
    "url",
    ["http://localhost:8765/v1", "http://127.0.0.1:9/v1", "http://[::1]:8765/v1"],
)
def test_e004_not_raised_for_a_local_url(settings, url: str) -> None:
    settings.OPENAI_BATCHES = {"QUEUE": "openai_batches", "BASE_URL": url}
    assert check_settings() == []
    assert check_api_keys_deploy() == []


def test_e004_not_raised_for_a_local_env_base_url(settings, monkeypatch) -> None:
    settings.OPENAI_BATCHES = {"QUEUE": "openai_batches"}
    monkeypatch.setenv("OPENAI_BASE_URL", "http://localhost:8765/v1")
    assert check_settings() == []
    assert check_api_keys_deploy() == []


# --- E005 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["ftp://files.example.com/v1", "api.openai.com/v1"])
def test_e005_base_url_not_http(settings, url: str) -> None:
    configure(settings, BASE_URL=url)
    messages = check_settings()
    message = only(messages, "openai_batches.E005")
    assert message.level == ERROR
    assert url in message.msg
    assert "/v1" in message.hint
    assert ids(messages) == ["openai_batches.E005"]


def test_e005_for_a_named_account(settings) -> None:
    configure(settings, ACCOUNTS={"eu": {"API_KEY": "k", "BASE_URL": "eu.example.com/v1"}})
    message = only(check_settings(), "openai_batches.E005")
    assert "'eu'" in message.msg


# --- E006 -------------------------------------------------------------------------------------


def test_e006_django_rq_not_installed() -> None:
    apps = [a for a in django_settings.INSTALLED_APPS if a != "django_rq"]
    with override_settings(INSTALLED_APPS=apps):
        messages = check_rq()
    message = only(messages, "openai_batches.E006")
    assert message.level == ERROR
    assert "django_rq" in message.msg
    assert "INSTALLED_APPS" in message.hint
    assert ids(messages) == ["openai_batches.E006"]


# --- E007 -------------------------------------------------------------------------------------


def test_e007_queue_not_in_rq_queues(settings) -> None:
    configure(settings, QUEUE="nope")
    message = only(check_rq(), "openai_batches.E007")
    assert message.level == ERROR
    assert "'nope'" in message.msg
    assert "RQ_QUEUES['nope']" in message.hint
    assert "default" in message.hint
    assert "openai_batches" in message.hint


def test_e007_default_queue_missing_from_rq_queues(settings) -> None:
    settings.OPENAI_BATCHES = {"API_KEY": SECRET}
    settings.RQ_QUEUES = {"other": {"URL": "redis://127.0.0.1:6379/0"}}
    message = only(check_rq(), "openai_batches.E007")
    assert "'default'" in message.msg


def test_e007_no_rq_queues_at_all(settings) -> None:
    configure(settings)
    del settings.RQ_QUEUES
    message = only(check_rq(), "openai_batches.E007")
    assert "(none defined)" in message.hint


# --- W001 -------------------------------------------------------------------------------------


def test_w001_unknown_key(settings) -> None:
    configure(settings, POLL_INTERVALL=3)
    messages = check_settings()
    message = only(messages, "openai_batches.W001")
    assert message.level == WARNING
    assert "'POLL_INTERVALL'" in message.msg
    assert "POLL_INTERVAL" in message.hint
    assert ids(messages) == ["openai_batches.W001"]


def test_w001_one_warning_per_unknown_key(settings) -> None:
    configure(settings, APIKEY="x", BASEURL="y")
    assert ids(check_settings()) == ["openai_batches.W001", "openai_batches.W001"]


@pytest.mark.django_db  # Django 6.1's checks open the database
def test_w001_is_a_warning_so_manage_py_check_passes(settings) -> None:
    configure(settings, SOMETHING=1)
    out = StringIO()
    call_command("check", stdout=out, stderr=out)
    assert "openai_batches.W001" in out.getvalue()


@pytest.mark.parametrize("runner", ["none", "tasks"])
def test_a_runner_other_than_rq_needs_neither_django_rq_nor_a_queue(settings, runner: str) -> None:
    from openai_batches.checks import check_rq

    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "RUNNER": runner, "QUEUE": "missing"}
    settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS if app != "django_rq"]
    assert check_rq() == []


def test_use_rq_false_needs_no_queue(settings) -> None:  # type: ignore[no-untyped-def]
    from openai_batches.checks import check_rq

    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "USE_RQ": False, "QUEUE": "missing"}
    assert check_rq() == []


# --- E008: PRICES ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prices", "where", "what"),
    [
        (0.5, "['PRICES']", "must be a dict of model -> prices, not float"),
        ({"gpt-4o-mini": 0.15}, "['PRICES']['gpt-4o-mini']", "must be a dict"),
        ({"gpt-4o-mini": {"input": 0.15}}, "['PRICES']['gpt-4o-mini']", "is missing 'output'"),
        (
            {"gpt-4o-mini": {"input": 0.15, "output": 0.6, "cahced_input": 0.075}},
            "['PRICES']['gpt-4o-mini']",
            "has unknown keys: 'cahced_input'",
        ),
        (
            {"gpt-4o-mini": {"input": "0.15", "output": 0.6}},
            "['PRICES']['gpt-4o-mini']['input']",
            "is '0.15', not a non-negative number",
        ),
        (
            {"gpt-4o-mini": {"input": 0.15, "output": -1}},
            "['PRICES']['gpt-4o-mini']['output']",
            "not a non-negative number",
        ),
        (
            {"gpt-4o-mini": {"input": 0.15, "output": float("nan")}},
            "['PRICES']['gpt-4o-mini']['output']",
            "not a non-negative number",
        ),
    ],
    ids=[
        "bare-number",
        "entry-not-a-dict",
        "missing-key",
        "misspelled-key",
        "text",
        "negative",
        "nan",
    ],
)
def test_e008_prices_that_would_break_the_cost_columns(
    settings, prices: Any, where: str, what: str
) -> None:
    configure(settings, PRICES=prices)
    message = only(check_settings(), "openai_batches.E008")
    assert message.level == ERROR
    assert f"OPENAI_BATCHES{where}" in message.msg and what in message.msg


def test_e008_a_valid_price_table_passes(settings) -> None:
    configure(
        settings,
        PRICES={
            "gpt-4o-mini": {"input": 0.075, "cached_input": 0.0375, "output": 0.3},
            "text-embedding-3-small": {"input": 0.01, "output": 0},
        },
    )
    assert "openai_batches.E008" not in ids(check_settings())


# --- E024: RETRY ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (3, "must be a dict, not int"),
        ({"MAX_ATEMPTS": 3}, "unknown key(s) 'MAX_ATEMPTS'"),
        ({"MAX_ATTEMPTS": 0}, "['MAX_ATTEMPTS']"),
        ({"MAX_ATTEMPTS": 2.5}, "whole number"),
        ({"MAX_ATTEMPTS": "3"}, "['MAX_ATTEMPTS']"),
        ({"DEADLINE": -1}, "['DEADLINE']"),
        ({"STATUS_CODES": [500, "502"]}, "HTTP status codes"),
        ({"STATUS_CODES": 500}, "HTTP status codes"),
        ({"ERROR_CODES": "batch_expired"}, "['ERROR_CODES'] must be a list"),
        ({"BATCH_ERROR_CODES": [None]}, "['BATCH_ERROR_CODES'] must be a list"),
    ],
)
def test_e024_retry_policy_that_would_break_an_ingest(settings, value: Any, fragment: str) -> None:
    from openai_batches.checks import check_retry

    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "RETRY": value}
    message = only(check_retry(), "openai_batches.E024")
    assert message.level == ERROR
    assert fragment in message.msg


def test_e024_a_partial_valid_retry_policy_passes(settings) -> None:
    from openai_batches.checks import check_retry
    from openai_batches.conf import app_settings

    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "RETRY": {"MAX_ATTEMPTS": 1}}
    assert check_retry() == []
    # Keys not given keep their defaults.
    assert app_settings.retry_policy()["STATUS_CODES"] == [408, 409, 429, 500, 502, 503, 504]
