"""Parsers and renderers with the size limits the API promises (413 before reading a byte).

* JSON bodies are parsed in memory, so they are held to Django's own in-memory limit,
  ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (DRF's JSON parser does not apply it). Larger inputs go
  through a JSONL upload instead.
* Multipart uploads are spooled to disk by Django and then read line by line, so they may be
  as large as one provider batch (``OPENAI_BATCHES["MAX_FILE_BYTES"]``) plus the form's own
  overhead; anything larger is refused from its ``Content-Length`` alone. A job may hold
  more: further uploads add to a draft's items, and a job larger than one batch is split
  into parts when it is submitted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.renderers import BaseRenderer

from ..conf import app_settings
from .exceptions import PayloadTooLarge

#: Room for the multipart boundaries and the small form fields beside the file.
MULTIPART_OVERHEAD = 1024 * 1024


def _content_length(parser_context: Mapping[str, Any] | None) -> int:
    request = (parser_context or {}).get("request")
    meta = getattr(request, "META", {})
    try:
        return int(meta.get("CONTENT_LENGTH") or 0)
    except (TypeError, ValueError):
        return 0


class BoundedJSONParser(JSONParser):
    """JSON, refused with 413 above ``DATA_UPLOAD_MAX_MEMORY_SIZE``."""

    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        length = _content_length(parser_context)
        if limit is not None and length > limit:
            raise PayloadTooLarge(
                f"The JSON body is {length:,} bytes; at most {limit:,} are accepted "
                "(DATA_UPLOAD_MAX_MEMORY_SIZE). Upload the items as a JSONL file instead."
            )
        return super().parse(stream, media_type, parser_context)


class BoundedMultiPartParser(MultiPartParser):
    """Multipart, refused with 413 when larger than one provider batch can be."""

    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        limit = int(app_settings.MAX_FILE_BYTES) + MULTIPART_OVERHEAD
        length = _content_length(parser_context)
        if length > limit:
            raise PayloadTooLarge(
                f"The upload is {length:,} bytes; one upload takes at most "
                f"{int(app_settings.MAX_FILE_BYTES):,} bytes of JSONL (one provider batch); "
                "add more items to the draft in further uploads."
            )
        return super().parse(stream, media_type, parser_context)


class JSONLRenderer(BaseRenderer):
    """``application/jsonl``: used for the results stream (and an error body, as one line)."""

    media_type = "application/jsonl"
    format = "jsonl"
    charset = "utf-8"

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        if data is None:
            return b""
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
