"""The ``OPENAI_BATCHES`` setting: defaults, lazy reload, env fallbacks, named accounts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.test import override_settings

from openai_batches import conf
from openai_batches.conf import DEFAULT_BASE_URL, DEFAULTS, Account, app_settings, is_local_url
from openai_batches.exceptions import ConfigurationError, OpenAIBatchesError

SECRET = "sk-proj-very-secret-value-1234567890"


@pytest.fixture
def no_openai_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The SDK's environment variables unset, whatever the machine running the tests has."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def setting_absent(settings) -> Iterator[None]:
    """No ``OPENAI_BATCHES`` at all.

    pytest-django's ``del settings.X`` sends no ``setting_changed`` (neither on delete nor on
    restore), so the cache is dropped by hand on both sides.
    """
    del settings.OPENAI_BATCHES
    app_settings.reload()
    yield
    app_settings.reload()


# --- defaults and lazy reading -------------------------------------------------------------


def test_defaults_apply_when_the_setting_is_absent(setting_absent, no_openai_env) -> None:
    assert app_settings.TIMEOUT == 60.0
    assert app_settings.MAX_RETRIES == 5
    assert app_settings.QUEUE == "default"
    assert app_settings.POLL_INTERVAL == 30
    assert app_settings.POLL_MAX_INTERVAL == 600
    assert app_settings.POLL_BACKOFF == 1.5
    assert app_settings.MAX_REQUESTS_PER_BATCH == 50_000
    assert app_settings.MAX_FILE_BYTES == 200 * 1024 * 1024
    assert app_settings.API_KEY is None
    assert app_settings.BASE_URL is None
    assert app_settings.ACCOUNTS == {}
    account = app_settings.account()
    assert account.name == "default"
    assert account.base_url == "https://api.openai.com/v1"
    assert account.api_key is None
    assert account.organization is None
    assert account.project is None
    assert account.timeout == 60.0


def test_every_default_is_readable_as_an_attribute(settings) -> None:
    settings.OPENAI_BATCHES = {}
    for key, value in DEFAULTS.items():
        assert getattr(app_settings, key) == value


def test_user_values_override_defaults_key_by_key(settings) -> None:
    settings.OPENAI_BATCHES = {"TIMEOUT": 5, "QUEUE": "batches"}
    assert app_settings.TIMEOUT == 5
    assert app_settings.QUEUE == "batches"
    assert DEFAULTS["POLL_BACKOFF"] == app_settings.POLL_BACKOFF


def test_test_settings_are_what_the_suite_expects() -> None:
    assert app_settings.QUEUE == "openai_batches"
    assert app_settings.POLL_INTERVAL == 1
    assert app_settings.account().base_url == "http://127.0.0.1:9/v1"


def test_override_settings_reloads_and_restores() -> None:
    before = app_settings.POLL_INTERVAL
    with override_settings(OPENAI_BATCHES={"POLL_INTERVAL": 77, "API_KEY": "k2"}):
        assert app_settings.POLL_INTERVAL == 77
        assert app_settings.account().api_key == "k2"
        with override_settings(OPENAI_BATCHES={"POLL_INTERVAL": 78}):
            assert app_settings.POLL_INTERVAL == 78
        assert app_settings.POLL_INTERVAL == 77
    assert before == app_settings.POLL_INTERVAL
    assert app_settings.account().api_key == "sk-test-key-never-logged"


def test_settings_fixture_reloads(settings) -> None:
    settings.OPENAI_BATCHES = {"QUEUE": "first"}
    assert app_settings.QUEUE == "first"
    settings.OPENAI_BATCHES = {"QUEUE": "second"}
    assert app_settings.QUEUE == "second"


def test_settings_are_not_read_at_import_time() -> None:
    fresh = conf.Settings()
    assert fresh._cache is None
    with override_settings(OPENAI_BATCHES={"QUEUE": "late"}):
        assert fresh.QUEUE == "late"


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError):
        app_settings.NOT_A_SETTING  # noqa: B018
    with pytest.raises(AttributeError):
        app_settings._private  # noqa: B018


def test_non_dict_setting_raises_configuration_error(settings) -> None:
    settings.OPENAI_BATCHES = "sk-oops"
    with pytest.raises(ConfigurationError, match="OPENAI_BATCHES must be a dict"):
        app_settings.QUEUE  # noqa: B018


def test_unknown_keys_are_listed(settings) -> None:
    settings.OPENAI_BATCHES = {"QUEUE": "q", "POLL_INTERVALL": 3, "APIKEY": "x"}
    assert app_settings.unknown_keys() == ["APIKEY", "POLL_INTERVALL"]


# --- environment fallbacks ------------------------------------------------------------------


def test_api_key_falls_back_to_openai_api_key_env(settings, no_openai_env) -> None:
    settings.OPENAI_BATCHES = {}
    no_openai_env.setenv("OPENAI_API_KEY", "sk-from-env")
    assert app_settings.account().api_key == "sk-from-env"


def test_explicit_api_key_wins_over_env(settings, no_openai_env) -> None:
    settings.OPENAI_BATCHES = {"API_KEY": "sk-from-settings"}
    no_openai_env.setenv("OPENAI_API_KEY", "sk-from-env")
    assert app_settings.account().api_key == "sk-from-settings"


def test_env_is_read_at_call_time_not_cached(settings, no_openai_env) -> None:
    settings.OPENAI_BATCHES = {}
    assert app_settings.account().api_key is None
    no_openai_env.setenv("OPENAI_API_KEY", "sk-later")
    assert app_settings.account().api_key == "sk-later"


def test_base_url_falls_back_to_openai_base_url_env(settings, no_openai_env) -> None:
    settings.OPENAI_BATCHES = {}
    no_openai_env.setenv("OPENAI_BASE_URL", "https://gateway.example.com/v1/")
    assert app_settings.account().base_url == "https://gateway.example.com/v1"


def test_base_url_default_is_openai(settings, no_openai_env) -> None:
    settings.OPENAI_BATCHES = {"API_KEY": "k"}
    assert app_settings.account().base_url == DEFAULT_BASE_URL == "https://api.openai.com/v1"


def test_explicit_base_url_wins_and_trailing_slash_is_dropped(settings, no_openai_env) -> None:
    settings.OPENAI_BATCHES = {"BASE_URL": "http://localhost:8000/v1/"}
    no_openai_env.setenv("OPENAI_BASE_URL", "https://ignored.example.com/v1")
    assert app_settings.account().base_url == "http://localhost:8000/v1"


def test_organization_and_project_from_settings_or_env(settings, no_openai_env) -> None:
    settings.OPENAI_BATCHES = {"ORGANIZATION": "org-1"}
    no_openai_env.setenv("OPENAI_PROJECT_ID", "proj-env")
    account = app_settings.account()
    assert account.organization == "org-1"
    assert account.project == "proj-env"


# --- named accounts ---------------------------------------------------------------------------


def test_named_account(settings, no_openai_env) -> None:
    no_openai_env.setenv("OPENAI_API_KEY", "sk-env-default")
    settings.OPENAI_BATCHES = {
        "TIMEOUT": 12,
        "ACCOUNTS": {
            "azure": {
                "API_KEY": "az-key",
                "BASE_URL": "https://res.openai.azure.com/openai/v1",
                "PROJECT": "p1",
            },
            "eu": {"API_KEY": "eu-key", "TIMEOUT": 3},
        },
    }
    assert app_settings.account_names() == ["default", "azure", "eu"]
    azure = app_settings.account("azure")
    assert azure == Account(
        name="azure",
        base_url="https://res.openai.azure.com/openai/v1",
        api_key="az-key",
        organization=None,
        project="p1",
        timeout=12.0,
    )
    eu = app_settings.account("eu")
    assert eu.base_url == DEFAULT_BASE_URL
    assert eu.timeout == 3.0
    # The default account still reads the top-level keys and the environment.
    assert app_settings.account().api_key == "sk-env-default"


def test_named_account_does_not_borrow_the_env_key(settings, no_openai_env) -> None:
    no_openai_env.setenv("OPENAI_API_KEY", "sk-env-default")
    settings.OPENAI_BATCHES = {"ACCOUNTS": {"other": {"BASE_URL": "https://x.example.com/v1"}}}
    assert app_settings.account("other").api_key is None


def test_accounts_default_entry_overrides_top_level(settings, no_openai_env) -> None:
    settings.OPENAI_BATCHES = {
        "API_KEY": "top",
        "ACCOUNTS": {"default": {"API_KEY": "nested"}},
    }
    assert app_settings.account_names() == ["default"]
    assert app_settings.account("default").api_key == "nested"


def test_unknown_account_raises_configuration_error_naming_the_setting(settings) -> None:
    settings.OPENAI_BATCHES = {"ACCOUNTS": {"azure": {"API_KEY": "k"}}}
    with pytest.raises(ConfigurationError) as info:
        app_settings.account("nope")
    message = str(info.value)
    assert "OPENAI_BATCHES['ACCOUNTS']" in message
    assert "'nope'" in message
    assert "azure" not in message  # see test_an_unknown_account_error_names_no_other_account
    # One tree: catchable as the app's base error and as Django's ImproperlyConfigured.
    from django.core.exceptions import ImproperlyConfigured

    assert isinstance(info.value, OpenAIBatchesError)
    assert isinstance(info.value, ImproperlyConfigured)


# --- the key never leaks ----------------------------------------------------------------------


def test_api_key_is_not_in_repr_or_str(settings) -> None:
    settings.OPENAI_BATCHES = {
        "API_KEY": SECRET,
        "ACCOUNTS": {"azure": {"API_KEY": SECRET + "-az"}},
    }
    for name in ("default", "azure"):
        account = app_settings.account(name)
        assert account.api_key
        assert account.api_key.reveal().startswith(SECRET)
        assert SECRET not in repr(account.api_key)
        assert SECRET not in str(account.api_key)
        assert SECRET not in repr(account)
        assert SECRET not in str(account)
        assert SECRET not in f"{account}"
        assert "base_url" in repr(account)  # repr is still useful


def test_account_is_immutable(settings) -> None:
    account = app_settings.account()
    with pytest.raises(AttributeError):
        account.api_key = "changed"  # type: ignore[misc]


# --- local URLs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:8000/v1",
        "http://127.0.0.1:9/v1",
        "http://127.0.1.5/v1",
        "http://[::1]:8000/v1",
        "http://0.0.0.0:8000/v1",
        "http://testserver/v1",
        "http://emulator.localhost/v1",
        "http://LOCALHOST/v1",
    ],
)
def test_local_urls(url: str) -> None:
    assert is_local_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://api.openai.com/v1",
        "https://localhost.example.com/v1",
        "https://res.openai.azure.com/openai/v1",
        "api.openai.com/v1",
        "",
    ],
)
def test_non_local_urls(url: str) -> None:
    assert not is_local_url(url)


def test_account_is_local(settings) -> None:
    assert app_settings.account().is_local  # the test settings point at 127.0.0.1
    settings.OPENAI_BATCHES = {"API_KEY": "k", "BASE_URL": "https://api.openai.com/v1"}
    assert not app_settings.account().is_local


# --- limits and the Secret wrapper (issue 10, items 8 and 9) -----------------------------------


def test_limit_defaults(setting_absent, no_openai_env) -> None:
    assert app_settings.REQUEST_DEADLINE == 300.0
    assert app_settings.TRANSFER_DEADLINE == 3600.0
    assert app_settings.MAX_RESPONSE_BYTES == 16 * 1024 * 1024
    # Above the 200 MB input limit and the largest outputs (about 3 GB of embeddings).
    assert app_settings.MAX_DOWNLOAD_BYTES == 4 * 1024**3 > 200 * 1024 * 1024
    assert app_settings.WEBHOOK_TOLERANCE == 300


def test_credentials_are_wrapped_wherever_the_settings_are_read(settings) -> None:
    import pickle

    from openai_batches.conf import Secret

    settings.OPENAI_BATCHES = {
        "API_KEY": SECRET,
        "WEBHOOK_SECRET": "whsec_c2VjcmV0",
        "ACCOUNTS": {"eu": {"API_KEY": SECRET + "-eu"}, "oops": SECRET + "-oops"},
    }
    user = app_settings.user_settings
    for value in (
        user["API_KEY"],
        user["WEBHOOK_SECRET"],
        user["ACCOUNTS"]["eu"]["API_KEY"],
        user["ACCOUNTS"]["oops"],  # a key where the account's dict belongs
        app_settings.API_KEY,
        app_settings.webhook_secret(),
    ):
        assert isinstance(value, Secret)
        assert SECRET not in repr(value) and "c2VjcmV0" not in repr(value)
        assert SECRET not in str(value) and SECRET not in f"{value}"
    assert SECRET not in repr(user) and SECRET not in repr(app_settings._merged())
    assert app_settings.API_KEY == SECRET  # compares, in constant time
    assert app_settings.API_KEY != "sk-other"
    assert app_settings.API_KEY.reveal() == SECRET
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(app_settings.API_KEY)
    import copy

    assert copy.deepcopy(user)["API_KEY"] == SECRET  # copies still work
    with pytest.raises(
        ConfigurationError, match=r"\['oops'\] must be a dict of settings .* not str"
    ):
        app_settings.accounts()


def test_a_hand_built_account_wraps_its_key() -> None:
    from openai_batches.conf import Secret

    account = Account("x", "https://api.example.test/v1", SECRET)
    assert isinstance(account.api_key, Secret)
    assert account.api_key.reveal() == SECRET
    assert Account("x", "https://api.example.test/v1", "").api_key is None


def test_webhook_secret_from_settings_else_the_environment(settings, monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_WEBHOOK_SECRET", raising=False)
    settings.OPENAI_BATCHES = {}
    assert app_settings.webhook_secret() is None
    monkeypatch.setenv("OPENAI_WEBHOOK_SECRET", "whsec_ZW52")
    assert app_settings.webhook_secret() == "whsec_ZW52"
    settings.OPENAI_BATCHES = {"WEBHOOK_SECRET": "whsec_c2V0"}
    assert app_settings.webhook_secret() == "whsec_c2V0"


def test_an_unknown_account_error_names_no_other_account(settings) -> None:
    """The message lands in a job's last_error, which the admin and the API show: it must
    not list the project's other accounts (issue 10, item 10)."""
    settings.OPENAI_BATCHES = {"ACCOUNTS": {"internal-billing": {"API_KEY": "k"}}}
    with pytest.raises(ConfigurationError) as info:
        app_settings.account("renamed")
    assert "'renamed'" in str(info.value) and "ACCOUNTS" in str(info.value)
    assert "internal-billing" not in str(info.value)
