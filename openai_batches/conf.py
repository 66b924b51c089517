"""The ``OPENAI_BATCHES`` setting: defaults, lazy access and named accounts.

Settings are read on every access (never at import time) and the cache is dropped on
Django's ``setting_changed`` signal, so ``override_settings`` in tests works. A setting
never changes the database schema. Environment variables follow the official SDK's
names (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``, ...) so an existing deployment just works.
"""

from __future__ import annotations

import os
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

#: Provider limits for one batch input file (OpenAI Batch API).
PROVIDER_MAX_REQUESTS = 50_000
PROVIDER_MAX_FILE_BYTES = 200 * 1024 * 1024

DEFAULTS: dict[str, Any] = {
    # Credentials and endpoint of the default account. ``None`` falls back to the SDK's
    # environment variables.
    "API_KEY": None,
    "BASE_URL": None,
    "ORGANIZATION": None,
    "PROJECT": None,
    # Named accounts: {"name": {"API_KEY": ..., "BASE_URL": ..., "ORGANIZATION": ..., "PROJECT": ...}}.
    "ACCOUNTS": {},
    # HTTP behaviour.
    "TIMEOUT": 60.0,
    "MAX_RETRIES": 5,
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
    "MAX_REQUESTS_PER_BATCH": PROVIDER_MAX_REQUESTS,
    "MAX_FILE_BYTES": PROVIDER_MAX_FILE_BYTES,
    # Results are written in chunks of this many rows.
    "INGEST_CHUNK_SIZE": 5000,
    # Price per 1M tokens at batch rates, per model: {"gpt-4o-mini": {"input": 0.075, "cached_input": 0.0375, "output": 0.3}}.
    "PRICES": {},
    # Signing secret of OpenAI's webhooks (whsec_...), used by webhooks.py.
    "WEBHOOK_SECRET": None,
    # DRF permission classes for the API (dotted paths); None means the app's default.
    "API_PERMISSION_CLASSES": None,
}

_ACCOUNT_KEYS = {"API_KEY", "BASE_URL", "ORGANIZATION", "PROJECT", "TIMEOUT"}
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "testserver"}  # noqa: S104


@dataclass(frozen=True)
class Account:
    """Where and as whom to call the provider. ``repr`` hides the key on purpose."""

    name: str
    base_url: str
    api_key: str | None = field(repr=False)
    organization: str | None = None
    project: str | None = None
    timeout: float = 60.0

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
        value = getattr(django_settings, SETTING_NAME, None) or {}
        if not isinstance(value, dict):
            raise ConfigurationError(f"{SETTING_NAME} must be a dict, not {type(value).__name__}.")
        return value

    def _merged(self) -> dict[str, Any]:
        if self._cache is None:
            self._cache = {**DEFAULTS, **self.user_settings}
        return self._cache

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in DEFAULTS:
            raise AttributeError(name)
        return self._merged()[name]

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
                    f"(API_KEY, BASE_URL, ...), not {type(conf).__name__}."
                )
        return accounts

    def account_names(self) -> list[str]:
        return [DEFAULT_ACCOUNT, *sorted(n for n in self.accounts() if n != DEFAULT_ACCOUNT)]

    def account(self, name: str = DEFAULT_ACCOUNT) -> Account:
        """The resolved credentials of account ``name`` (``"default"`` = the top-level keys)."""
        merged = self._merged()
        if name == DEFAULT_ACCOUNT:
            raw: dict[str, Any] = {k: merged[k] for k in _ACCOUNT_KEYS}
            raw.update(self.accounts().get(DEFAULT_ACCOUNT, {}))
            env = True
        else:
            accounts = self.accounts()
            if name not in accounts:
                raise ConfigurationError(
                    f"Unknown account {name!r}: add it to {SETTING_NAME}['ACCOUNTS'] "
                    f"(known: {', '.join(self.account_names())})."
                )
            raw = {"TIMEOUT": merged["TIMEOUT"], **accounts[name]}
            env = False
        api_key = raw.get("API_KEY") or (os.environ.get("OPENAI_API_KEY") if env else None)
        # Keys read from files or env often end with a newline, which is not a valid header.
        api_key = api_key.strip() if isinstance(api_key, str) else api_key
        base_url = raw.get("BASE_URL") or (os.environ.get("OPENAI_BASE_URL") if env else None)
        org = raw.get("ORGANIZATION") or (os.environ.get("OPENAI_ORG_ID") if env else None)
        project = raw.get("PROJECT") or (os.environ.get("OPENAI_PROJECT_ID") if env else None)
        return Account(
            name=name,
            base_url=(base_url or DEFAULT_BASE_URL).rstrip("/"),
            api_key=api_key or None,
            organization=org or None,
            project=project or None,
            timeout=float(raw.get("TIMEOUT") or merged["TIMEOUT"]),
        )


app_settings = Settings()


@receiver(setting_changed)
def _reload_on_change(*, setting: str, **kwargs: Any) -> None:
    if setting == SETTING_NAME:
        app_settings.reload()
