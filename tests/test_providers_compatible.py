"""OpenAI-compatible hosts: a Groq-style account with a 7-day window over HTTP against the
emulator's Groq flavour, the generic ``openai-compatible`` account against the OpenAI
flavour, the presets' limits and defaults, and Together's upper-case statuses."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from openai_batches import services
from openai_batches.client import get_client
from openai_batches.conf import Account
from openai_batches.emulator import EmulatorServer
from openai_batches.exceptions import ConfigurationError, ValidationError
from openai_batches.models import BatchJob, ItemState, JobState
from openai_batches.providers import part_limits, provider_for
from tests.lifecycle_helpers import chat_items
from tests.provider_helpers import KEY, account_on_emulator

pytestmark = pytest.mark.django_db

DAY = 86_400


def groq(server: EmulatorServer) -> dict[str, Any]:
    return {"PROVIDER": "groq", "BASE_URL": server.base_url, "API_KEY": KEY}


def submit(job: BatchJob) -> BatchJob:
    services.request_submit(job)
    job = services.submit(job)
    assert job.state == JobState.SUBMITTED, job.last_error
    return job


def states(job: BatchJob) -> dict[str, str]:
    return dict(job.items.values_list("custom_id", "state"))


def test_a_groq_job_with_a_7_day_window_runs_past_24_hours() -> None:
    with account_on_emulator("groq", groq, extra_settings={"RETRY": {"MAX_ATTEMPTS": 1}}) as (
        emu,
        _server,
    ):
        emu.stall_request("req-1")
        emu.fail_request("req-2")
        job = services.create_job(items=chat_items(3), account="acct", completion_window="7d")
        assert job.completion_window == "7d"
        job = submit(job)
        part = job.batches.get()
        assert emu.get_batch(part.provider_batch_id)["completion_window"] == "7d"

        emu.advance(2 * DAY)  # past 24 hours: a 24h batch would have expired
        job = services.refresh(job)
        assert job.state == JobState.SUBMITTED
        assert job.provider_status == "in_progress"

        emu.advance(5 * DAY + 60)  # past the 7 days
        job = services.refresh(job)
        assert job.state == JobState.FINISHED, job.last_error
        assert job.provider_status == "expired"
        assert states(job) == {
            "req-0": ItemState.SUCCEEDED,
            "req-1": ItemState.EXPIRED,
            "req-2": ItemState.FAILED,
        }


def test_a_groq_job_can_be_cancelled() -> None:
    with account_on_emulator("groq", groq) as (emu, _server):
        emu.stall_request("req-1")
        job = submit(
            services.create_job(items=chat_items(2), account="acct", completion_window="36h")
        )
        emu.advance(1)
        services.refresh(job)
        job = services.cancel(job)
        emu.advance(3600)
        job = services.refresh(job)
        assert job.state == JobState.FINISHED, job.last_error
        assert states(job) == {"req-0": ItemState.SUCCEEDED, "req-1": ItemState.CANCELLED}


def test_a_429_on_groq_is_retried() -> None:
    with account_on_emulator("groq", groq) as (emu, _server):
        emu.inject_fault("POST", "/openai/v1/files", "status", status=429, retry_after=0.01)
        job = submit(services.create_job(items=chat_items(2), account="acct"))
        emu.advance(1)
        assert services.refresh(job).state == JobState.FINISHED


@pytest.mark.parametrize("window", ["8d", "23h", "1w", "24"])
def test_groq_refuses_windows_outside_24h_to_7d(window: str) -> None:
    with account_on_emulator("groq", groq):
        with pytest.raises(ValidationError) as caught:
            services.create_job(items=chat_items(1), account="acct", completion_window=window)
        assert [(p.field, "from '24h' to '7d'" in p.message) for p in caught.value.problems] == [
            ("completion_window", True)
        ]
        assert not BatchJob.objects.exists()


def test_the_openai_account_keeps_24h_only() -> None:
    with pytest.raises(ValidationError, match="only '24h'"):
        services.create_job(items=chat_items(1), completion_window="7d")


def test_groq_limits_and_the_settings_that_lower_them(settings: Any) -> None:
    with account_on_emulator("groq", groq):
        assert part_limits("acct")["max_bytes"] == 100 * 1024 * 1024
        assert part_limits("acct")["max_requests"] == 50_000
    settings.OPENAI_BATCHES = {
        **settings.OPENAI_BATCHES,
        "MAX_FILE_BYTES": 1000,
        "MAX_REQUESTS_PER_BATCH": 2,
    }
    with account_on_emulator("groq", groq) as (emu, _server):
        assert part_limits("acct")["max_bytes"] == 1000
        job = services.create_job(items=chat_items(5), account="acct")
        services.request_submit(job)
        assert job.batches.count() == 3  # cut to the lowered limit
        job = services.submit(job)
        assert len(emu.list_batches()) == 3


def test_a_generic_openai_compatible_account() -> None:
    def host(server: EmulatorServer) -> dict[str, Any]:
        return {"PROVIDER": "openai-compatible", "BASE_URL": server.base_url, "API_KEY": KEY}

    with account_on_emulator("openai", host) as (emu, _server):
        emu.fail_request("req-1")
        job = submit(services.create_job(items=chat_items(2), account="acct"))
        emu.advance(1)
        job = services.refresh(job)
        assert states(job) == {"req-0": ItemState.SUCCEEDED, "req-1": ItemState.FAILED}

    def no_url(server: EmulatorServer) -> dict[str, Any]:
        return {"PROVIDER": "openai-compatible", "API_KEY": KEY}

    with account_on_emulator("openai", no_url), pytest.raises(ConfigurationError, match="BASE_URL"):
        get_client("acct")


def test_presets_have_their_hosts_default_urls() -> None:
    for name, url in (
        ("groq", "https://api.groq.com/openai/v1/"),
        ("together", "https://api.together.xyz/v1/"),
        ("anthropic", "https://api.anthropic.com/"),
        ("openai", "https://api.openai.com/v1/"),
    ):
        client = provider_for(Account("x", "", "k", provider=name))
        try:
            assert str(client._http.base_url) == url
        finally:
            client.close()


def test_together_statuses_and_iso_times_are_made_openais() -> None:
    # No Together flavour in the emulator: its documented upper-case statuses are served by
    # hand here.
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "id": "batch-1",
                "status": "IN_PROGRESS",
                "created_at": "2026-11-26T08:00:00.123Z",
                "output_file_id": "",
                "request_counts": {"total": 3, "completed": None, "failed": None},
            },
        )

    account = Account("t", "https://api.together.xyz/v1", "k", provider="together")
    client = provider_for(account, transport=httpx.MockTransport(handler))
    try:
        batch = client.retrieve_batch("batch-1")
    finally:
        client.close()
    assert batch["status"] == "in_progress"
    assert batch["created_at"] == 1795680000
    assert batch["output_file_id"] is None
    assert batch["request_counts"] == {"total": 3, "completed": 0, "failed": 0}


def test_an_unknown_provider_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="Unknown PROVIDER 'nope'"):
        provider_for(Account("x", "https://h/v1", "k", provider="nope"))


# -- system checks of each provider's settings (openai_batches.checks.check_providers) -------


#: The ids the provider checks give, and W004 (no key) which covers providers too.
PROVIDER_CHECK_IDS = {
    f"openai_batches.{i}" for i in ("E040", "E041", "E042", "E043", "W041", "W042", "W004")
}


def provider_check_ids(settings: Any, accounts: dict[str, Any], **top: Any) -> list[str]:
    from openai_batches.checks import check_providers, check_settings

    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "ACCOUNTS": accounts, **top}
    messages = [*check_providers(), *check_settings()]
    return sorted(str(m.id) for m in messages if m.id in PROVIDER_CHECK_IDS)


@pytest.mark.parametrize(
    ("account", "expected"),
    [
        ({"PROVIDER": "nope", "API_KEY": "k"}, ["openai_batches.E040"]),
        ({"PROVIDER": "azure", "API_KEY": "k"}, ["openai_batches.E041"]),  # no endpoint
        (
            {"PROVIDER": "azure", "BASE_URL": "https://r.openai.azure.com", "API_VERSION": "2024"},
            # A bad version; no credentials is W004 (a warning, so builds run without secrets).
            ["openai_batches.E041", "openai_batches.W004"],
        ),
        (
            {
                "PROVIDER": "azure",
                "BASE_URL": "https://r.openai.azure.com",
                "TOKEN_PROVIDER": "no.such.thing",
            },
            ["openai_batches.E042"],
        ),
        (
            {
                "PROVIDER": "azure",
                "BASE_URL": "https://r.openai.azure.com",
                "API_KEY": "k",
                "DEADLINE": -1,
            },
            ["openai_batches.E043"],
        ),
        (
            {"PROVIDER": "anthropic", "API_KEY": "k", "API_VERSION": "latest"},
            ["openai_batches.E041"],
        ),
        ({"PROVIDER": "anthropic"}, ["openai_batches.W004"]),  # the default URL is remote
        ({"PROVIDER": "openai-compatible", "API_KEY": "k"}, ["openai_batches.E041"]),
        ({"PROVIDER": "groq", "API_KEY": "k", "TOKEN_PROVIDER": "x.y"}, ["openai_batches.W042"]),
        # Complete accounts pass.
        (
            {
                "PROVIDER": "azure",
                "BASE_URL": "https://r.openai.azure.com",
                "API_VERSION": "2024-10-21",
                "TOKEN_PROVIDER": "tests.test_providers_azure.entra_token",
            },
            [],
        ),
        ({"PROVIDER": "anthropic", "API_KEY": "k"}, []),
        ({"PROVIDER": "groq", "API_KEY": "k"}, []),
    ],
)
def test_each_providers_required_settings_are_checked(
    settings: Any, monkeypatch: pytest.MonkeyPatch, account: dict[str, Any], expected: list[str]
) -> None:
    for name in (
        "ANTHROPIC_API_KEY",
        "AZURE_OPENAI_API_KEY",
        "AZURE_OPENAI_ENDPOINT",
        "GROQ_API_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    assert provider_check_ids(settings, {"x": account}) == expected


def test_an_azure_expiry_below_14_days_is_a_warning(settings: Any) -> None:
    azure = {"PROVIDER": "azure", "BASE_URL": "https://r.openai.azure.com", "API_KEY": "k"}
    found = provider_check_ids(settings, {"x": azure}, FILE_EXPIRES_AFTER=3600)
    assert found == ["openai_batches.W041"]


def test_provider_keys_come_from_their_sdks_environment_variables(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from openai_batches.conf import app_settings

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-env\n")
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://env.openai.azure.com")
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "az-env")
    monkeypatch.setenv("GROQ_API_KEY", "gsk-env")
    monkeypatch.setenv("TOGETHER_API_KEY", "tg-env")
    settings.OPENAI_BATCHES = {
        **settings.OPENAI_BATCHES,
        "ACCOUNTS": {
            "a": {"PROVIDER": "anthropic"},
            "z": {"PROVIDER": "azure"},
            "g": {"PROVIDER": "groq"},
            "t": {"PROVIDER": "together"},
            "o": {},  # a named OpenAI account reads no environment (as before)
        },
    }
    anthropic = app_settings.account("a")
    azure = app_settings.account("z")
    assert anthropic.api_key == "sk-ant-env"  # the newline is stripped
    assert (azure.api_key, azure.base_url) == ("az-env", "https://env.openai.azure.com")
    assert "sk-ant-env" not in repr(anthropic)
    assert app_settings.account("g").api_key == "gsk-env"
    assert app_settings.account("t").api_key == "tg-env"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    assert app_settings.account("o").api_key is None


def test_the_default_account_takes_its_provider_from_accounts_default(settings: Any) -> None:
    from openai_batches.conf import app_settings

    settings.OPENAI_BATCHES = {
        **settings.OPENAI_BATCHES,
        "ACCOUNTS": {"default": {"PROVIDER": "groq"}},
    }
    assert app_settings.account().provider == "groq"
    assert app_settings.account().api_key == settings.OPENAI_BATCHES["API_KEY"]  # top level
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "ACCOUNTS": {}, "PROVIDER": "groq"}
    assert app_settings.account().provider == "openai"  # not a top-level setting
    assert "PROVIDER" in app_settings.unknown_keys()


def test_the_api_takes_the_window_the_accounts_provider_takes(
    django_user_model: Any,
) -> None:
    api = APIClient()
    api.force_authenticate(django_user_model.objects.create_superuser("root", password="x"))
    jobs = reverse("openai_batches_api:job-list")
    with account_on_emulator("groq", groq):
        body = {"account": "acct", "completion_window": "7d", "items": chat_items(1)}
        created = api.post(jobs, body, format="json")
        assert created.status_code == 201, created.json()
        assert created.json()["completion_window"] == "7d"
        # The same window on an OpenAI account: a 400 naming the field, nothing saved.
        refused = api.post(jobs, {**body, "account": "default"}, format="json")
        assert refused.status_code == 400
        assert "completion_window" in json.dumps(refused.json())
        assert BatchJob.objects.count() == 1
