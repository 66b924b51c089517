"""Provider adapters: one module per provider behind the ``BatchProvider`` seam, chosen per
account by ``OPENAI_BATCHES["ACCOUNTS"][name]["PROVIDER"]`` (default ``"openai"``), the way
django-anymail chooses an email provider per backend.

=====================  =========================================  ======================
``PROVIDER``           adapter                                    module
=====================  =========================================  ======================
``openai``             :class:`.openai.OpenAIProvider`            ``openai.py``
``azure``              :class:`.azure.AzureProvider`              ``azure.py``
``anthropic``          :class:`.anthropic.AnthropicProvider`      ``anthropic.py``
``groq``               :class:`.compatible.GroqProvider`          ``compatible.py``
``together``           :class:`.compatible.TogetherProvider`      ``compatible.py``
``openai-compatible``  :class:`.compatible.OpenAICompatibleProvider`  ``compatible.py``
=====================  =========================================  ======================

Besides :func:`provider_for` (what ``client.get_client`` returns), this module answers the
provider questions the services ask before any I/O, from the adapter's class alone (no
key needed): which endpoint and window a job may use, what one item may hold, and the
limits a part is cut to.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..conf import Account, app_settings
from ..exceptions import ConfigurationError, Problem
from .anthropic import AnthropicProvider
from .azure import AzureProvider
from .base import Adapter, Limits, with_default_url
from .compatible import GroqProvider, OpenAICompatibleProvider, TogetherProvider
from .openai import OpenAIProvider

__all__ = [
    "PROVIDERS",
    "Adapter",
    "Limits",
    "check_job",
    "item_checker",
    "part_limits",
    "provider_class",
    "provider_for",
]

PROVIDERS: dict[str, type[Adapter]] = {
    "openai": OpenAIProvider,
    "azure": AzureProvider,
    "anthropic": AnthropicProvider,
    "groq": GroqProvider,
    "together": TogetherProvider,
    "openai-compatible": OpenAICompatibleProvider,
}


def provider_class(name: str) -> type[Adapter]:
    """The adapter class of a ``PROVIDER`` name."""
    try:
        return PROVIDERS[name]
    except KeyError:
        raise ConfigurationError(
            f"Unknown PROVIDER {name!r}: use one of {', '.join(sorted(PROVIDERS))}."
        ) from None


def with_defaults(account: Account) -> Account:
    """``account`` with its provider's default base URL when it sets none."""
    return with_default_url(account, provider_class(account.provider))


def provider_for(account: Account, **kwargs: Any) -> Any:
    """The adapter for ``account`` (an :class:`~openai_batches.client.OpenAIClient`
    subclass implementing ``BatchProvider``); ``kwargs`` go to the client (``sleep``,
    ``transport``, ``max_retries``)."""
    account = with_defaults(account)
    return provider_class(account.provider)(account, **kwargs)  # type: ignore[call-arg]


def _class_of(account_name: str) -> type[Adapter]:
    return provider_class(app_settings.account(account_name).provider)


def _class_or_openai(account_name: str) -> type[Adapter]:
    """The account's adapter class, or OpenAI's when the account cannot be read (removed
    from the settings): planning and validation go on, and the job's next provider call
    reports the missing account, as it did before adapters existed."""
    try:
        return _class_of(account_name)
    except ConfigurationError:
        return OpenAIProvider


def check_job(account_name: str | None, endpoint: str, completion_window: str) -> list[Problem]:
    """What the account's provider (OpenAI's for None) refuses about a new job: its
    endpoint (one the app knows; the app reports the others) and its window."""
    try:
        cls = OpenAIProvider if account_name is None else _class_of(account_name)
    except ConfigurationError as err:
        return [Problem(None, "account", str(err))]
    from ..models import Endpoint  # not at import time: the app registry may not be ready

    problems = []
    if endpoint in Endpoint.values and (reason := cls.check_endpoint(endpoint)):
        problems.append(Problem(None, "endpoint", reason))
    if reason := cls.check_window(completion_window):
        problems.append(Problem(None, "completion_window", reason))
    return problems


def item_checker(
    account_name: str, endpoint: str
) -> Callable[[Mapping[str, Any]], list[tuple[str, str]]] | None:
    """The account's provider's check of one item (None when it adds nothing to the app's
    own validation)."""
    cls = _class_or_openai(account_name)
    if not any("check_item" in vars(k) for k in cls.__mro__ if k is not Adapter):
        return None  # the default refuses nothing: spare the per-item call
    return lambda item: cls.check_item(endpoint, item)


#: The settings that lower a provider's limits, per :class:`Limits` field.
_LIMIT_SETTINGS = {
    "max_requests": "MAX_REQUESTS_PER_BATCH",
    "max_bytes": "MAX_FILE_BYTES",
    "max_embedding_inputs": "MAX_EMBEDDING_INPUTS_PER_BATCH",
}


def part_limits(account_name: str) -> dict[str, int]:
    """The limits a part of a job on this account is cut to: the provider's own, lowered
    by the ``OPENAI_BATCHES`` setting of the same meaning when the project sets one (a
    provider that documents none, such as OpenAI, takes the setting as it is)."""
    cls = _class_or_openai(account_name)
    user = app_settings.user_settings
    limits: dict[str, int] = {}
    for name, setting in _LIMIT_SETTINGS.items():
        own = getattr(cls.limits, name)
        configured = int(getattr(app_settings, setting))
        if own is None:
            limits[name] = configured
        else:
            limits[name] = min(own, configured) if setting in user else own
    return limits
