"""Groq's batch API on the wire: OpenAI's Files and Batches shape under ``/openai/v1``, with
completion windows from ``24h`` to ``7d`` (``shared/reference/other-providers.md`` §4).

Paths: ``/openai/v1/files``, ``/openai/v1/files/{id}``, ``/openai/v1/files/{id}/content``,
``/openai/v1/batches``, ``/openai/v1/batches/{id}``, ``/openai/v1/batches/{id}/cancel``;
bearer auth and error bodies as OpenAI's. A batch runs ``/v1/chat/completions`` only; its
``completion_window`` is a whole number of hours (``h``) or days (``d``) between 24 hours
and 7 days, and it expires when that window ends. Input files are at most 100 MB.

It is the model for any OpenAI-compatible host whose difference is its limits and windows.
"""

from __future__ import annotations

import re
from typing import Any

from ..records import DAY, ApiError, Limits
from .openai import OpenAIFlavor

_WINDOW = re.compile(r"^([0-9]+)([hd])$")
MAX_WINDOW = 7 * DAY


class GroqFlavor(OpenAIFlavor):
    """Groq: OpenAI's batch API at ``/openai/v1`` with windows of 24 hours to 7 days."""

    name = "groq"
    base_path = "/openai/v1"
    prefix = "/openai/v1"
    endpoints = ("/v1/chat/completions",)

    def default_limits(self) -> Limits:
        return Limits(max_batch_file_bytes=100 * 1024 * 1024)

    def window_seconds(self, window: Any) -> float:
        match = _WINDOW.match(window) if isinstance(window, str) else None
        seconds = 0
        if match is not None:
            seconds = int(match.group(1)) * (3600 if match.group(2) == "h" else DAY)
        if not DAY <= seconds <= MAX_WINDOW:
            raise ApiError(
                400,
                f"Invalid value: '{window}'. Durations from 24h to 7d are supported "
                "(such as '24h', '36h' or '7d').",
                param="completion_window",
                code="invalid_value",
            )
        return seconds
