"""What every provider adapter shares: its profile (limits, windows, endpoints), the checks
run on a job and its items before anything is sent, and the parsing of the loose shapes
providers send (ISO or Unix times, capitalised statuses, empty-string ids).

An adapter is a subclass of :class:`~openai_batches.client.OpenAIClient` (the transport:
retries, deadlines, size caps, streaming, typed errors) mixed with :class:`Adapter` (the
profile). It translates its provider's wire format INTO the OpenAI shapes the services
consume (batch objects with ``status``, ``request_counts``, ``output_file_id``, Unix
timestamps; result lines ``{"custom_id", "response": {"status_code", "body"}, "error"}``),
so the services never branch on the provider. The profile is read without a client (no
key, no I/O), when a job is created and its items are added.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

from ..client import BATCH_TIMESTAMPS
from ..conf import (
    PROVIDER_MAX_EMBEDDING_INPUTS,
    PROVIDER_MAX_FILE_BYTES,
    PROVIDER_MAX_REQUESTS,
    Account,
)
from ..exceptions import ConfigurationError

#: The batch statuses the services know (OpenAI's).
STATUSES = frozenset(
    {
        "validating",
        "in_progress",
        "finalizing",
        "completed",
        "failed",
        "expired",
        "cancelling",
        "cancelled",
    }
)
_WINDOW = re.compile(r"^([0-9]{1,4})([hd])$")
DAY = 86_400


@dataclass(frozen=True)
class Limits:
    """One provider batch's limits; None where the provider documents none (the
    ``OPENAI_BATCHES`` setting of the same meaning decides alone)."""

    max_requests: int | None = PROVIDER_MAX_REQUESTS
    max_bytes: int | None = PROVIDER_MAX_FILE_BYTES
    max_embedding_inputs: int | None = PROVIDER_MAX_EMBEDDING_INPUTS
    #: Seconds results stay downloadable (None: until deleted or the files expire).
    retention: int | None = None


def window_seconds(window: Any) -> int | None:
    """``"24h"`` / ``"7d"`` in seconds; None for anything else."""
    match = _WINDOW.match(window) if isinstance(window, str) else None
    if match is None:
        return None
    return int(match.group(1)) * (3600 if match.group(2) == "h" else DAY)


class Adapter:
    """The profile every adapter declares (class attributes: no client needed to read it)."""

    #: The ``PROVIDER`` name of the adapter.
    name: ClassVar[str] = ""
    #: The base URL used when the account sets none ("" means BASE_URL is required).
    default_base_url: ClassVar[str] = ""
    limits: ClassVar[Limits] = Limits()
    #: The job endpoints the provider runs (None: any the app knows).
    endpoints: ClassVar[tuple[str, ...] | None] = None
    #: The completion windows a batch may ask for: ``(shortest, longest)`` in seconds.
    windows: ClassVar[tuple[int, int]] = (DAY, DAY)
    #: The provider keeps a batch's metadata (so a lost create is found by the job's UUID).
    keeps_metadata: ClassVar[bool] = True

    @classmethod
    def check_window(cls, window: str) -> str | None:
        """Why this provider refuses ``window`` (None: it takes it)."""
        seconds = window_seconds(window)
        low, high = cls.windows
        if seconds is not None and low <= seconds <= high:
            return None
        if low == high:
            return f"{window!r} is not a window {cls.name} takes: only '{low // 3600}h'"
        return (
            f"{window!r} is not a window {cls.name} takes: from '{low // 3600}h' to "
            f"'{high // DAY}d', in whole hours ('36h') or days ('7d')"
        )

    @classmethod
    def check_endpoint(cls, endpoint: str) -> str | None:
        """Why this provider does not run ``endpoint`` (None: it does)."""
        if cls.endpoints is None or endpoint in cls.endpoints:
            return None
        return f"{endpoint!r} is not an endpoint {cls.name} runs: {', '.join(cls.endpoints)}"

    @classmethod
    def check_item(cls, endpoint: str, item: Mapping[str, Any]) -> list[tuple[str, str]]:
        """``(field, message)`` for each thing this provider refuses in one valid OpenAI
        input item (the app's own validator has run). The default refuses nothing."""
        return []

    @classmethod
    def settings_problems(cls, account: Account) -> list[tuple[str, str]]:
        """``(message, hint)`` for each required setting the account lacks (system checks)."""
        problems = []
        if not (account.base_url or cls.default_base_url):
            problems.append(
                (
                    f"The {account.name!r} account ({cls.name}) has no BASE_URL.",
                    f"Set {_where(account, 'BASE_URL')} to the provider's API URL.",
                )
            )
        elif reason := base_url_problem(account.base_url):
            problems.append(
                (
                    f"The {account.name!r} account's BASE_URL {reason}.",
                    f"Set {_where(account, 'BASE_URL')} to the API's root URL only, such as "
                    f"{cls.default_base_url or 'https://RESOURCE.openai.azure.com'!r}.",
                )
            )
        return problems

    def _check_base_url(self) -> None:
        """Refuse (before any call) a BASE_URL that paths cannot be joined onto."""
        account: Account = self.account  # type: ignore[attr-defined]
        if reason := base_url_problem(account.base_url):
            raise ConfigurationError(
                f"The BASE_URL of account {account.name!r} ({self.name}) {reason}: set it "
                "to the API's root URL only."
            )


def base_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be the root every call's path is joined onto (None: it can).
    A query or a fragment would swallow the paths joined after it (the deployment URL the
    Azure portal shows is the usual mistake); credentials in it would show in reprs and
    messages (an account's key goes in API_KEY). Never quotes the URL."""
    if not url:
        return None  # the adapter's default applies, or the missing URL is reported
    try:
        parts = urlsplit(url)
    except ValueError:
        return "is not a URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "is not an http(s) URL"
    if parts.username is not None or parts.password is not None:
        return "holds credentials before an '@'; put the key in API_KEY instead"
    if parts.query or "?" in url:
        return "holds a query string ('?...'); give the resource's root URL"
    if parts.fragment or "#" in url:
        return "holds a fragment ('#...')"
    return None


def with_default_url(account: Account, cls: type[Adapter]) -> Account:
    """``account`` with ``cls``'s default base URL when it sets none."""
    if account.base_url or not cls.default_base_url:
        return account
    return dataclasses.replace(account, base_url=cls.default_base_url)


def _where(account: Account, key: str) -> str:
    if account.name == "default":
        return f"OPENAI_BATCHES[{key!r}] (or ACCOUNTS['default'][{key!r}])"
    return f"OPENAI_BATCHES['ACCOUNTS'][{account.name!r}][{key!r}]"


# -- loose shapes ---------------------------------------------------------------------------


def unix_time(value: Any) -> int | None:
    """A Unix time from an integer, a float or an ISO-8601 / RFC 3339 string (Azure's
    samples and Anthropic write strings, with up to 7 decimals); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value) if 0 <= value < 253402300800 else None
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    # fromisoformat takes at most 6 decimals; .NET writes 7.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None  # a time without a zone is not a point in time
    # The same range as a number's: one no column holds would make the batch unusable.
    return unix_time(int(parsed.timestamp()))


def blank_to_none(value: Any) -> Any:
    """``""`` as None (Azure writes empty strings for file ids not there yet)."""
    return None if value == "" else value


def normalize_openai_shape(obj: Any) -> Any:
    """An OpenAI-shaped batch object with the loose variants seen at OpenAI-compatible
    hosts made strict: status lower-cased, times as Unix integers, ``""`` ids as None,
    ``null`` counts as 0. Anything not a dict is returned as it is (the check refuses it)."""
    if not isinstance(obj, dict):
        return obj
    batch = dict(obj)
    if isinstance(batch.get("status"), str):
        batch["status"] = batch["status"].strip().lower()
    for key in BATCH_TIMESTAMPS:
        if key in batch:
            batch[key] = unix_time(batch[key])
    for key in ("output_file_id", "error_file_id", "input_file_id", "endpoint", "model"):
        batch[key] = blank_to_none(batch.get(key))
    counts = batch.get("request_counts")
    if isinstance(counts, dict):
        batch["request_counts"] = {
            k: (0 if counts.get(k) is None else counts.get(k))
            for k in ("total", "completed", "failed")
        }
    return batch


def custom_id_fingerprint(custom_ids: Iterable[str]) -> str:
    """An order-independent digest of a set of custom_ids, in constant memory: the sum of
    their SHA-256 values modulo 2**256 (a part's ids are unique, so a sum is enough)."""
    total = 0
    for custom_id in custom_ids:
        total = (total + int.from_bytes(hashlib.sha256(custom_id.encode()).digest(), "big")) % (
            1 << 256
        )
    return f"{total:064x}"
