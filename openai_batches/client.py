"""The HTTP client for OpenAI's Files and Batches endpoints, on httpx.

``BatchProvider`` is the small interface the services use; :class:`OpenAIClient` implements
it for OpenAI and anything speaking its protocol (Azure OpenAI, the bundled emulator), so a
second provider can slot in later. Retries use jittered exponential backoff on 408/409/429/5xx
and connection errors, honouring ``retry-after-ms`` / ``retry-after`` like the official SDK.
``POST /batches`` is never retried here: its outcome after a timeout is unknown and the
services reconcile by metadata instead. Uploads stream from disk; downloads stream to disk.
The API key lives only in the httpx client's headers: never in logs, errors or reprs.
"""

from __future__ import annotations

import email.utils
import logging
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Protocol

import httpx

from . import __version__
from .conf import Account, app_settings
from .exceptions import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    ConfigurationError,
    NotFoundError,
    RateLimitError,
)

logger = logging.getLogger(__name__)

#: The SDK ignores retry-after above this; a longer wait is better left to the next poll.
MAX_RETRY_AFTER = 120.0
_CHUNK = 1 << 16
#: Printable ASCII without spaces: what a bearer token may hold.
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")


class BatchProvider(Protocol):
    """What the services need from a batch provider."""

    def upload_file(self, path: Path, *, filename: str) -> dict[str, Any]: ...
    def delete_file(self, file_id: str) -> None: ...
    def list_files(self, *, purpose: str | None = None) -> Iterator[dict[str, Any]]: ...
    def download_file(self, file_id: str, dest: IO[bytes]) -> int: ...
    def iter_file_chunks(self, file_id: str) -> Iterator[bytes]: ...
    def create_batch(
        self,
        *,
        input_file_id: str,
        endpoint: str,
        completion_window: str,
        metadata: Mapping[str, str],
    ) -> dict[str, Any]: ...
    def retrieve_batch(self, batch_id: str) -> dict[str, Any]: ...
    def cancel_batch(self, batch_id: str) -> dict[str, Any]: ...
    def list_batches(self, *, after: str | None = None, limit: int = 100) -> dict[str, Any]: ...
    def close(self) -> None: ...


def _error_class(status: int) -> type[APIError]:
    if status == 429:
        return RateLimitError
    if status == 404:
        return NotFoundError
    if status in (401, 403):
        return AuthenticationError
    return APIError


def server_retry_after(response: httpx.Response | None) -> float | None:
    """The wait the server asked for (``retry-after-ms`` / ``retry-after``), if usable."""
    if response is None:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = response.headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw) * scale
        except ValueError:
            if scale != 1.0:
                continue
            try:  # an HTTP date
                value = email.utils.parsedate_to_datetime(raw).timestamp() - time.time()
            except (TypeError, ValueError):
                continue  # malformed: fall back to our own backoff
        if 0 <= value <= MAX_RETRY_AFTER:
            return value
    return None


def retry_delay(attempt: int, response: httpx.Response | None = None) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): the server's word, else backoff."""
    asked = server_retry_after(response)
    if asked is not None:
        return asked
    base = min(0.5 * (2**attempt), 8.0)
    return base * (1 - 0.25 * random.random())


def _connection_error(method: str, path: str, err: httpx.TransportError) -> APIConnectionError:
    # A local protocol error quotes our own request headers (the key among them): name the
    # error type only. Other transport errors describe the network and are safe to show.
    detail = "" if isinstance(err, httpx.LocalProtocolError) else f": {err}"
    return APIConnectionError(f"{method} /{path} failed: {type(err).__name__}{detail}")


class OpenAIClient:
    """Files + Batches over httpx for one :class:`~openai_batches.conf.Account`."""

    def __init__(
        self,
        account: Account,
        *,
        max_retries: int | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not account.api_key and not account.is_local:
            raise ConfigurationError(
                f"No API key for account {account.name!r}: set OPENAI_BATCHES['API_KEY'] or OPENAI_API_KEY."
            )
        if account.api_key and not _HEADER_SAFE.fullmatch(account.api_key):
            # Never quote the key: say what is wrong with it instead.
            raise ConfigurationError(
                f"The API key of account {account.name!r} contains whitespace or control characters; "
                "check how it is read (a trailing newline from a file is the usual cause)."
            )
        self.account = account
        self.max_retries = app_settings.MAX_RETRIES if max_retries is None else max_retries
        self._sleep = sleep
        headers = {
            "Authorization": f"Bearer {account.api_key or 'local-emulator'}",
            "User-Agent": f"django-openai-batches/{__version__}",
        }
        if account.organization:
            headers["OpenAI-Organization"] = account.organization
        if account.project:
            headers["OpenAI-Project"] = account.project
        self._http = httpx.Client(
            base_url=account.base_url + "/",
            headers=headers,
            timeout=httpx.Timeout(account.timeout, connect=min(account.timeout, 10.0)),
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"<OpenAIClient account={self.account.name!r} base_url={self.account.base_url!r}>"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OpenAIClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport -----------------------------------------------------------------------

    def _send(self, method: str, path: str, *, retry: bool = True, **kwargs: Any) -> httpx.Response:
        """One call with retries; raises typed errors. ``path`` is relative to the base URL."""
        attempts = self.max_retries + 1 if retry else 1
        rewind = kwargs.pop("rewind", None)
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as err:
                if last or isinstance(err, httpx.LocalProtocolError):
                    raise _connection_error(method, path, err) from err
                delay = retry_delay(attempt, None)
                logger.warning(
                    "%s /%s: %s; retrying in %.1fs", method, path, type(err).__name__, delay
                )
            else:
                if response.is_success:
                    return response
                error = self._error(response, method, path)
                if last or not error.retryable:
                    raise error
                delay = retry_delay(attempt, response)
                logger.warning(
                    "%s /%s answered %s; retrying in %.1fs",
                    method,
                    path,
                    response.status_code,
                    delay,
                )
            if rewind is not None:
                rewind()
            self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _error(response: httpx.Response, method: str, path: str) -> APIError:
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text[:2000]
        error = _error_class(response.status_code)(
            response.status_code,
            body,
            request_id=response.headers.get("x-request-id"),
            method=method,
            path="/" + path,
        )
        error.retry_after = server_retry_after(response)
        return error

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self._send(method, path, **kwargs)
        try:
            data = response.json()
        except ValueError as err:
            raise APIConnectionError(f"{method} /{path} returned a body that is not JSON") from err
        if not isinstance(data, dict):
            raise APIConnectionError(f"{method} /{path} returned JSON that is not an object")
        return data

    # -- files ---------------------------------------------------------------------------

    def upload_file(self, path: Path, *, filename: str) -> dict[str, Any]:
        """Upload a JSONL file with ``purpose=batch``, streamed from disk (retried: a
        duplicate upload costs nothing and the services delete files they do not use)."""
        with open(path, "rb") as fp:
            return self._json(
                "POST",
                "files",
                data={"purpose": "batch"},
                files={"file": (filename, fp, "application/jsonl")},
                rewind=lambda: fp.seek(0),
            )

    def delete_file(self, file_id: str) -> None:
        self._send("DELETE", f"files/{file_id}")

    def list_files(self, *, purpose: str | None = None) -> Iterator[dict[str, Any]]:
        """Files, newest first (the files list takes up to 10,000 per page)."""
        after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 10_000, "order": "desc"}
            if purpose:
                params["purpose"] = purpose
            if after:
                params["after"] = after
            page = self._json("GET", "files", params=params)
            data = page.get("data") or []
            yield from data
            if not page.get("has_more") or not data:
                return
            after = data[-1]["id"]

    def iter_file_chunks(self, file_id: str) -> Iterator[bytes]:
        """Stream a file's bytes (one attempt: a caller re-reading from the start can retry)."""
        path = f"files/{file_id}/content"
        try:
            with self._http.stream("GET", path) as response:
                if not response.is_success:
                    response.read()
                    raise self._error(response, "GET", path)
                yield from response.iter_bytes(_CHUNK)
        except httpx.TransportError as err:
            raise _connection_error("GET", path, err) from err

    def download_file(self, file_id: str, dest: IO[bytes]) -> int:
        """Stream a file to ``dest`` (retried from the start); returns its size in bytes.

        A body shorter than its Content-Length (a dropped download) is an error, never a
        silently short file.
        """
        start = dest.tell()

        def attempt() -> int:
            dest.seek(start)
            dest.truncate()
            size = 0
            for chunk in self.iter_file_chunks(file_id):
                dest.write(chunk)
                size += len(chunk)
            return size

        for n in range(self.max_retries + 1):
            try:
                size = attempt()
                dest.flush()
                return size
            except (APIConnectionError, APIError) as err:
                retryable = isinstance(err, APIConnectionError) or err.retryable
                if not retryable or n == self.max_retries:
                    raise
                asked = err.retry_after if isinstance(err, APIError) else None
                delay = asked if asked is not None else retry_delay(n)
                logger.warning("download of %s failed (%s); retrying in %.1fs", file_id, err, delay)
                self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- batches -------------------------------------------------------------------------

    def create_batch(
        self,
        *,
        input_file_id: str,
        endpoint: str,
        completion_window: str,
        metadata: Mapping[str, str],
    ) -> dict[str, Any]:
        """Create a batch. Never retried: see the module docstring."""
        payload = {
            "input_file_id": input_file_id,
            "endpoint": endpoint,
            "completion_window": completion_window,
            "metadata": dict(metadata),
        }
        return self._json("POST", "batches", json=payload, retry=False)

    def retrieve_batch(self, batch_id: str) -> dict[str, Any]:
        return self._json("GET", f"batches/{batch_id}")

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        return self._json("POST", f"batches/{batch_id}/cancel")

    def list_batches(self, *, after: str | None = None, limit: int = 100) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if after:
            params["after"] = after
        return self._json("GET", "batches", params=params)

    def iter_batches(self, *, limit: int = 100) -> Iterator[dict[str, Any]]:
        """All batches, newest first, one list call per ``limit`` batches."""
        after: str | None = None
        while True:
            page = self.list_batches(after=after, limit=limit)
            data = page.get("data") or []
            yield from data
            if not page.get("has_more") or not data:
                return
            after = data[-1]["id"]


def get_client(account: str = "default") -> BatchProvider:
    """The provider client for a configured account (the seam tests and providers use)."""
    return OpenAIClient(app_settings.account(account))
