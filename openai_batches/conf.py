"""The ``OPENAI_BATCHES`` setting: defaults, lazy access and named accounts.

Settings are read on every access (never at import time) and the cache is dropped on
Django's ``setting_changed`` signal, so ``override_settings`` in tests works. A setting
never changes the database schema. Environment variables follow the official SDK's
names (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``, ``OPENAI_WEBHOOK_SECRET``, ...) so an
existing deployment just works.

Credentials are wrapped in :class:`Secret` the moment they are read, and only the HTTP
layer and the signature check unwrap them. Django's error reports (the DEBUG page, the
admin error email) print every local variable of every frame with ``repr``, and
``sensitive_variables`` does nothing while ``DEBUG`` is on, so a plain key in a local or
in the merged-settings dict would be shown; a :class:`Secret` prints as stars.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings as django_settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from .exceptions import ConfigurationError

SETTING_NAME = "OPENAI_BATCHES"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_ACCOUNT = "default"

#: The range OpenAI accepts for ``expires_after.seconds`` / ``output_expires_after.seconds``.
MIN_EXPIRES_AFTER = 3600
MAX_EXPIRES_AFTER = 2_592_000

#: Provider limits for one batch input file (OpenAI Batch API).
PROVIDER_MAX_REQUESTS = 50_000
PROVIDER_MAX_FILE_BYTES = 200 * 1024 * 1024
PROVIDER_MAX_EMBEDDING_INPUTS = 50_000

DEFAULTS: dict[str, Any] = {
    # Credentials and endpoint of the default account. ``None`` falls back to the SDK's
    # environment variables.
    "API_KEY": None,
    "BASE_URL": None,
    "ORGANIZATION": None,
    "PROJECT": None,
    # Named accounts: {"name": {"API_KEY": ..., "BASE_URL": ..., "ORGANIZATION": ..., "PROJECT": ...}}.
    "ACCOUNTS": {},
    # Who may use which account (openai_batches/access.py, docs/how-to/accounts.md): None
    # opens "default" to everyone who may create jobs and every other account to superusers
    # only; {name: {"GROUPS": [...], "PERMISSIONS": ["app.codename"], "EVERYONE": bool}}
    # opens a listed account to the users matching its rule; a dotted path names a callable
    # (user, account_name) -> bool that decides for everyone but superusers.
    "ACCOUNT_ACCESS": None,
    # HTTP behaviour. TIMEOUT bounds each connect/read/write; the deadlines bound one whole
    # exchange (connect, send, wait, read the body), which per-read timeouts cannot: a server
    # dripping a byte every few seconds never trips a read timeout.
    "TIMEOUT": 60.0,
    "MAX_RETRIES": 5,
    # Seconds for one JSON call (everything but file transfers): OpenAI answers in seconds.
    "REQUEST_DEADLINE": 300.0,
    # Seconds for one file upload or download: 4 GiB in an hour is 1.2 MB/s.
    "TRANSFER_DEADLINE": 3600.0,
    # Largest JSON answer read (bytes). The largest legitimate one is a page of 10,000 file
    # objects (about 3-5 MB); anything bigger is a broken or hostile server.
    "MAX_RESPONSE_BYTES": 16 * 1024 * 1024,
    # Largest file downloaded (bytes). Downloads stream to disk, so this bounds disk, not
    # memory. An output file can be far larger than its 200 MB input: 50,000 embeddings of
    # 3,072 floats are about 2.5-3 GB of JSON.
    "MAX_DOWNLOAD_BYTES": 4 * 1024 * 1024 * 1024,
    # Enqueue background work on RQ. False: enqueue nothing and let cron's sync_batches do
    # everything (no Redis needed).
    "USE_RQ": True,
    # Where background work runs: "rq" (django-rq), "tasks" (Django's Tasks framework) or
    # "none" (enqueue nothing; cron's sync_batches does everything). None: "rq", unless the
    # deprecated USE_RQ is False.
    "RUNNER": None,
    # RQ queue the background jobs go to (must be a key of RQ_QUEUES).
    "QUEUE": "default",
    # A submission attempt older than this (seconds) is presumed dead and may be taken over.
    "SUBMIT_LEASE": 900,
    # Polling: start at POLL_INTERVAL seconds, back off up to POLL_MAX_INTERVAL.
    "POLL_INTERVAL": 30,
    "POLL_MAX_INTERVAL": 600,
    "POLL_BACKOFF": 1.5,
    # Provider limits per batch (lower them to be conservative; never above the provider's).
    # A job larger than these is split into several provider batches when it is submitted.
    "MAX_REQUESTS_PER_BATCH": PROVIDER_MAX_REQUESTS,
    "MAX_FILE_BYTES": PROVIDER_MAX_FILE_BYTES,
    # Embedding inputs per batch (an embeddings request may carry a list of inputs).
    "MAX_EMBEDDING_INPUTS_PER_BATCH": PROVIDER_MAX_EMBEDDING_INPUTS,
    # The most requests one job may hold, whatever number of batches it takes.
    "MAX_REQUESTS_PER_JOB": 5_000_000,
    # Requests that failed for a transient reason are sent again in a follow-up batch:
    # MAX_ATTEMPTS sends in all (the first included; 1 turns retries off), while the job
    # is younger than DEADLINE seconds (counted from when its submission was requested).
    # A request is retryable when its status code is in STATUS_CODES, or its error code
    # in ERROR_CODES (batch_expired, batch_cancelled and missing_result are the requests
    # that never ran), or its whole batch failed with an error code in BATCH_ERROR_CODES.
    # What the model rejected as invalid (400s such as context_length_exceeded) never is.
    "RETRY": {
        "MAX_ATTEMPTS": 3,
        "DEADLINE": 7 * 24 * 3600,
        "STATUS_CODES": [408, 409, 429, 500, 502, 503, 504],
        "ERROR_CODES": [
            "batch_expired",
            "batch_cancelled",
            "missing_result",
            "server_error",
            "rate_limit_exceeded",
            "timeout",
        ],
        "BATCH_ERROR_CODES": ["server_error", "rate_limit_exceeded", "token_limit_exceeded"],
    },
    # Results are written in chunks of this many rows.
    "INGEST_CHUNK_SIZE": 5000,
    # Retention at the provider, in seconds (3600 to 2592000, OpenAI's range), or None for
    # the provider's default (30 days for batch files). FILE_EXPIRES_AFTER goes with each
    # input upload (``expires_after``), OUTPUT_EXPIRES_AFTER with each batch create
    # (``output_expires_after``, counted from when the output/error file is written).
    # Results are ingested as soon as a batch ends, so a short retention loses nothing
    # unless ingestion is down for longer than it.
    "FILE_EXPIRES_AFTER": None,
    "OUTPUT_EXPIRES_AFTER": None,
    # Price per 1M tokens at batch rates, per model: {"gpt-4o-mini": {"input": 0.075, "cached_input": 0.0375, "output": 0.3}}.
    "PRICES": {},
    # Signing secret of OpenAI's webhooks (whsec_...), used by webhooks.py. ``None`` falls
    # back to the OPENAI_WEBHOOK_SECRET environment variable, as the SDK does.
    "WEBHOOK_SECRET": None,
    # Seconds a webhook's timestamp may differ from now (the SDK's default).
    "WEBHOOK_TOLERANCE": 300,
    # DRF permission classes for the API (dotted paths); None means the app's default.
    "API_PERMISSION_CLASSES": None,
    # Spending limits in USD checked before a job is submitted (see docs/how-to/budgets.md):
    # {"PER_JOB": 20, "PER_OWNER_PER_DAY": 50, "PER_OWNER_PER_MONTH": 500,
    # "DEFAULT_OUTPUT_TOKENS": 1024}. Every key is optional; {} sets no limit.
    "BUDGETS": {},
    # Dotted path of the input-token estimator, a callable (endpoint, body) -> int; None is
    # the built-in heuristic, openai_batches.estimate.estimate_input_tokens.
    "TOKEN_ESTIMATOR": None,
    # Enqueued input tokens each model may have at the provider at once (see
    # docs/how-to/quota.md): {"gpt-4o": 450_000, "*": None, "azure": {"gpt-4o": 90_000}}.
    # A key names a model or a model-family prefix ("*": any other model), a nested dict an
    # account's own limits; None is unlimited. Laid over the built-in family defaults
    # (openai_batches.quota.DEFAULT_ENQUEUED_TOKEN_LIMITS); the setting None turns every
    # limit off.
    "ENQUEUED_TOKEN_LIMITS": {},
}

#: What an account takes (the default account: the top-level keys of the same names, or
#: ``ACCOUNTS["default"]``). PROVIDER picks the adapter (``openai_batches.providers``);
#: API_VERSION is Azure's ``api-version`` (None or "v1": the v1 surface) or Anthropic's
#: ``anthropic-version``; TOKEN_PROVIDER is a dotted path to a callable returning a bearer
#: token (Azure's Entra ID); DEADLINE is how long a batch may run before the app cancels it
#: where the provider never expires one (Azure); STAGING_DIR is where an inline provider
#: (Anthropic) keeps a part's requests between its upload and create steps.
ACCOUNT_KEYS = frozenset(
    {
        "API_KEY",
        "BASE_URL",
        "ORGANIZATION",
        "PROJECT",
        "TIMEOUT",
        "PROVIDER",
        "API_VERSION",
        "TOKEN_PROVIDER",
        "DEADLINE",
        "STAGING_DIR",
    }
)
_ACCOUNT_KEYS = ACCOUNT_KEYS
DEFAULT_PROVIDER = "openai"
#: The environment variables a provider's official SDK reads, used when an account of that
#: provider sets no API_KEY / BASE_URL / API_VERSION (the OpenAI names only for "default").
PROVIDER_ENV: dict[str, dict[str, str]] = {
    "azure": {
        "API_KEY": "AZURE_OPENAI_API_KEY",
        "BASE_URL": "AZURE_OPENAI_ENDPOINT",
        "API_VERSION": "OPENAI_API_VERSION",
    },
    "anthropic": {"API_KEY": "ANTHROPIC_API_KEY", "BASE_URL": "ANTHROPIC_BASE_URL"},
    "groq": {"API_KEY": "GROQ_API_KEY"},
    "together": {"API_KEY": "TOGETHER_API_KEY"},
}
#: Keys whose values are credentials (at the top level and inside each account).
SECRET_KEYS = frozenset({"API_KEY", "WEBHOOK_SECRET"})
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "testserver"}  # noqa: S104


class Secret:
    """A credential that never shows itself: ``repr`` and ``str`` print stars.

    Only :meth:`reveal` gives the value, at the one place that sends it (a header, an HMAC).
    Equality compares in constant time, so tests and checks can still compare keys.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secret):
            other = other._value
        if not isinstance(other, str):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other.encode())

    def __hash__(self) -> int:
        return hash(self._value)

    def __copy__(self) -> Secret:
        return self  # immutable

    def __deepcopy__(self, memo: Any) -> Secret:
        return self

    def __reduce__(self) -> Any:
        # Pickling (RQ job arguments, caches) would store the key in clear: refuse.
        raise TypeError("a Secret cannot be pickled")


def _secret(value: Any) -> Any:
    """``value`` as a :class:`Secret` when it is a non-empty string (else as it is)."""
    return Secret(value) if isinstance(value, str) and value else value


def _type_name(value: Any) -> str:
    return "str" if isinstance(value, Secret) else type(value).__name__


def _masked(user: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the user's setting with every credential wrapped in :class:`Secret`."""
    masked: dict[str, Any] = {}
    for key, value in user.items():
        if key in SECRET_KEYS:
            masked[key] = _secret(value)
        elif key == "ACCOUNTS" and isinstance(value, Mapping):
            masked[key] = {
                # A string where an account's dict belongs is most likely its key.
                name: (
                    {k: _secret(v) if k in SECRET_KEYS else v for k, v in conf.items()}
                    if isinstance(conf, Mapping)
                    else _secret(conf)
                )
                for name, conf in value.items()
            }
        else:
            masked[key] = value
    return masked


@dataclass(frozen=True)
class Account:
    """Where and as whom to call the provider. The key is a :class:`Secret`."""

    name: str
    base_url: str
    api_key: Secret | None = field(repr=False)
    organization: str | None = None
    project: str | None = None
    timeout: float = 60.0
    #: Which adapter speaks to the provider (``openai_batches.providers.PROVIDERS``).
    provider: str = DEFAULT_PROVIDER
    #: Azure's ``api-version`` / Anthropic's ``anthropic-version``; None: the adapter's own.
    api_version: str | None = None
    #: A dotted path to (or a callable) returning a bearer token; the token is never kept
    #: beyond its expiry, never stored and never shown.
    token_provider: Any = field(default=None, repr=False)
    #: Seconds a batch may run before the app cancels it (providers that never expire one).
    deadline: float | None = None
    #: Where an inline provider keeps a part's requests between upload and create.
    staging_dir: str | None = None

    def __post_init__(self) -> None:
        # Accept a plain string (tests, hand-built accounts) but never keep one.
        if isinstance(self.api_key, str):
            object.__setattr__(self, "api_key", _secret(self.api_key) or None)

    @property
    def is_local(self) -> bool:
        """True for an emulator on this machine, which needs no real key."""
        return is_local_url(self.base_url)


def is_local_url(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host in _LOCAL_HOSTS or host.startswith("127.") or host.endswith(".localhost")


class Settings:
    """Lazy view of ``settings.OPENAI_BATCHES`` merged over :data:`DEFAULTS`."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] | None = None

    @property
    def user_settings(self) -> dict[str, Any]:
        """The user's ``OPENAI_BATCHES``, credentials wrapped in :class:`Secret`."""
        # No local holds the raw setting: an error report would print it (see the docstring).
        if not isinstance(getattr(django_settings, SETTING_NAME, None) or {}, dict):
            raise ConfigurationError(
                f"{SETTING_NAME} must be a dict, not "
                f"{type(getattr(django_settings, SETTING_NAME)).__name__}."
            )
        return _masked(getattr(django_settings, SETTING_NAME, None) or {})

    def _merged(self) -> dict[str, Any]:
        if self._cache is None:
            self._cache = {**DEFAULTS, **self.user_settings}
        return self._cache

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in DEFAULTS:
            raise AttributeError(name)
        return self._merged()[name]

    def retry_policy(self) -> dict[str, Any]:
        """``RETRY`` merged over its defaults: a project sets only the keys it changes."""
        user = self._merged()["RETRY"]
        if not isinstance(user, dict):
            raise ConfigurationError(
                f"{SETTING_NAME}['RETRY'] must be a dict, not {_type_name(user)}."
            )
        return {**DEFAULTS["RETRY"], **user}

    def reload(self) -> None:
        self._cache = None

    def unknown_keys(self) -> list[str]:
        return sorted(set(self.user_settings) - set(DEFAULTS))

    def accounts(self) -> dict[str, dict[str, Any]]:
        """``ACCOUNTS``, checked to be a dict of dicts (a clear error instead of a crash)."""
        accounts = self.ACCOUNTS or {}
        if not isinstance(accounts, dict):
            raise ConfigurationError(
                f"{SETTING_NAME}['ACCOUNTS'] must be a dict of account name -> settings dict."
            )
        for name, conf in accounts.items():
            if not isinstance(conf, dict):
                raise ConfigurationError(
                    f"{SETTING_NAME}['ACCOUNTS'][{name!r}] must be a dict of settings "
                    f"(API_KEY, BASE_URL, ...), not {_type_name(conf)}."
                )
        return accounts

    def account_names(self) -> list[str]:
        return [DEFAULT_ACCOUNT, *sorted(n for n in self.accounts() if n != DEFAULT_ACCOUNT)]

    def account(self, name: str = DEFAULT_ACCOUNT) -> Account:
        """The resolved credentials of account ``name`` (``"default"`` = the top-level keys)."""
        merged = self._merged()
        if name == DEFAULT_ACCOUNT:
            # Only the documented top-level keys: the provider keys of the default account
            # go in ACCOUNTS["default"] (a top-level PROVIDER is an unknown setting, W001).
            raw: dict[str, Any] = {k: merged[k] for k in _ACCOUNT_KEYS if k in DEFAULTS}
            raw.update(self.accounts().get(DEFAULT_ACCOUNT, {}))
            env = True
        else:
            accounts = self.accounts()
            if name not in accounts:
                # Not listing the configured accounts: this text reaches a job's last_error,
                # which the admin and the API show (the system checks list them instead).
                raise ConfigurationError(
                    f"Unknown account {name!r}: add it to {SETTING_NAME}['ACCOUNTS'], or move "
                    "the job to a configured account."
                )
            raw = {"TIMEOUT": merged["TIMEOUT"], **accounts[name]}
            env = False
        provider = raw.get("PROVIDER") or DEFAULT_PROVIDER
        if not isinstance(provider, str):
            raise ConfigurationError(
                f"The PROVIDER of account {name!r} must be a provider name such as 'openai', "
                f"'azure' or 'anthropic', not {_type_name(provider)}."
            )
        openai = provider == DEFAULT_PROVIDER
        own_env = PROVIDER_ENV.get(provider, {})

        def env_of(key: str, openai_name: str) -> str | None:
            if openai:
                return os.environ.get(openai_name) if env else None
            return os.environ.get(own_env[key]) if key in own_env else None

        api_key = raw.get("API_KEY") or _secret(env_of("API_KEY", "OPENAI_API_KEY"))
        if isinstance(api_key, Secret):
            # Keys read from files or env often end with a newline, which is not a valid header.
            api_key = _secret(api_key.reveal().strip())
        base_url = raw.get("BASE_URL") or env_of("BASE_URL", "OPENAI_BASE_URL")
        org = raw.get("ORGANIZATION") or (os.environ.get("OPENAI_ORG_ID") if env else None)
        project = raw.get("PROJECT") or (os.environ.get("OPENAI_PROJECT_ID") if env else None)
        deadline = raw.get("DEADLINE")
        return Account(
            name=name,
            # Another provider's default URL is its adapter's to know ("" until then).
            base_url=(base_url or (DEFAULT_BASE_URL if openai else "")).rstrip("/"),
            api_key=api_key if isinstance(api_key, Secret) and api_key else None,
            organization=org or None,
            project=project or None,
            timeout=float(raw.get("TIMEOUT") or merged["TIMEOUT"]),
            provider=provider,
            api_version=raw.get("API_VERSION") or env_of("API_VERSION", "") or None,
            token_provider=raw.get("TOKEN_PROVIDER") or None,
            deadline=float(deadline) if isinstance(deadline, int | float) else None,
            staging_dir=raw.get("STAGING_DIR") or None,
        )

    def webhook_secret(self) -> Secret | None:
        """``WEBHOOK_SECRET``, else the ``OPENAI_WEBHOOK_SECRET`` environment variable."""
        secret = self.WEBHOOK_SECRET or _secret(os.environ.get("OPENAI_WEBHOOK_SECRET"))
        return secret if isinstance(secret, Secret) and secret else None


app_settings = Settings()


@receiver(setting_changed)
def _reload_on_change(*, setting: str, **kwargs: Any) -> None:
    if setting == SETTING_NAME:
        app_settings.reload()
