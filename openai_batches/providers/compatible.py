"""Hosts that speak OpenAI's Files + Batches protocol with their own limits and windows:
presets for Groq and Together, and a generic ``openai-compatible`` account for any other.

What differs is data, not code: the default base URL, the limits, the completion windows
and the endpoints (``shared/reference/other-providers.md`` §4, §5). Every batch object is
made strict before the services see it (:func:`~.base.normalize_openai_shape`), so a host
that writes ``"IN_PROGRESS"`` (Together) or ISO times reads like OpenAI.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..client import OpenAIClient, _check_batch
from ..exceptions import ConfigurationError
from .base import DAY, Adapter, Limits, normalize_openai_shape

CHAT = "/v1/chat/completions"


class OpenAICompatibleProvider(Adapter, OpenAIClient):
    """``PROVIDER: "openai-compatible"``: any host speaking OpenAI's batch protocol at
    ``BASE_URL`` (required). The ``OPENAI_BATCHES`` limits apply as set."""

    name = "openai-compatible"
    limits: ClassVar[Limits] = Limits(None, None, None)

    def _check_credentials(self) -> None:
        if not self.account.base_url:
            raise ConfigurationError(
                f"No BASE_URL for account {self.account.name!r} ({self.name}): set it to the "
                "host's API URL, including its version path (e.g. https://host/v1)."
            )
        self._check_base_url()
        super()._check_credentials()

    def _headers(self) -> dict[str, str]:
        return {}  # OpenAI's organization and project headers mean nothing elsewhere

    def _batch(self, obj: Any) -> dict[str, Any]:
        return _check_batch(normalize_openai_shape(obj))


class GroqProvider(OpenAICompatibleProvider):
    """Groq: completion windows from ``24h`` to ``7d`` (``create_job(completion_window=
    "7d", account=...)``), 100 MB per input file, chat completions only. The request
    count per batch is not documented: the OpenAI figure (50,000) is kept."""

    name = "groq"
    default_base_url = "https://api.groq.com/openai/v1"
    limits: ClassVar[Limits] = Limits(
        max_requests=50_000, max_bytes=100 * 1024 * 1024, max_embedding_inputs=None
    )
    endpoints = (CHAT,)
    windows = (DAY, 7 * DAY)


class TogetherProvider(OpenAICompatibleProvider):
    """Together AI: upper-case statuses (lower-cased here), 50,000 requests and 100 MB
    per batch (both from the market survey, unconfirmed), chat completions, ``24h``."""

    name = "together"
    default_base_url = "https://api.together.xyz/v1"
    limits: ClassVar[Limits] = Limits(
        max_requests=50_000, max_bytes=100 * 1024 * 1024, max_embedding_inputs=None
    )
    endpoints = (CHAT,)
