"""OpenAI's Batch API: the wire format the app was built on, spoken by
:class:`~openai_batches.client.OpenAIClient`; this adapter only adds the profile."""

from __future__ import annotations

from typing import ClassVar

from ..client import OpenAIClient
from ..conf import DEFAULT_BASE_URL
from .base import Adapter, Limits


class OpenAIProvider(Adapter, OpenAIClient):
    """OpenAI (``PROVIDER: "openai"``, the default). Its limits are the settings'
    defaults (``MAX_REQUESTS_PER_BATCH`` 50,000, ``MAX_FILE_BYTES`` 200 MB, 50,000
    embedding inputs), so the settings alone decide, as before adapters existed."""

    name = "openai"
    default_base_url = DEFAULT_BASE_URL
    limits: ClassVar[Limits] = Limits(None, None, None)

    def _check_credentials(self) -> None:
        self._check_base_url()
        super()._check_credentials()
