"""The HTTP client for OpenAI's Files and Batches endpoints, on httpx.

``BatchProvider`` is the small interface the services use; :class:`OpenAIClient` implements
it for OpenAI and anything speaking its protocol (Azure OpenAI, the bundled emulator), so a
second provider can slot in later.

What a provider (or a broken or hostile base URL) can do to a call, and what the client does:

=============================  ===============================================================
408/409/429/5xx                retried (``MAX_RETRIES``) after ``retry-after-ms`` /
                               ``retry-after`` (above 0, at most ``MAX_RETRY_AFTER``) or
                               jittered exponential backoff, then a typed
                               :class:`~.exceptions.APIError`
other 4xx                      a typed ``APIError`` at once (401 authentication, 403
                               :class:`PermissionDeniedError`, 404, ...)
``x-should-retry`` header      ``true``/``false`` overrules the status, as in the official SDK
a wait over                    not retried in the call: the error's ``retry_after`` says
``MAX_RETRY_AFTER``            when to try again (the caller reschedules)
a list cursor that repeats     :class:`~.exceptions.APIConnectionError` instead of a loop
connection refused, reset,     retried, then :class:`~.exceptions.APIConnectionError`
timeout, truncated body
a 2xx body that is not JSON    retried (a garbled answer), then ``APIConnectionError``
or not the expected shape
a body over the size cap       :class:`ResponseTooLarge` at once (the next call would read the
(``MAX_RESPONSE_BYTES``,       same bytes again)
``MAX_DOWNLOAD_BYTES``)
slower than the deadline       :class:`DeadlineExceeded` at once
(``REQUEST_DEADLINE``,
``TRANSFER_DEADLINE``)
=============================  ===============================================================

``POST /batches`` is never retried here: its outcome after a failure is unknown and the
services reconcile by metadata instead. Every body is streamed: JSON answers are read up to
their cap, uploads stream from disk and downloads stream to disk. The deadline covers one
whole exchange (connect, send, wait for the headers, read the body): httpx's timeouts are
per read, so a server dripping a byte at a time never trips them; here every socket read,
write and connect is given at most the time left (:class:`_DeadlineBackend`), and the time
is checked again between chunks. No other exception type leaves the client.

The API key lives in a :class:`~.conf.Secret` and is unwrapped only inside
:class:`HeaderAuth` (``Authorization: Bearer``, Azure's ``api-key``, Anthropic's
``x-api-key``; Azure's Entra ID tokens have their own ``httpx.Auth``), as the request goes
out: never in a local an error report prints, in logs, in error messages or in reprs. An
error answer quoting the request's credential back (a gateway echoing headers) is kept
with stars in its place. The transport errors we wrap lose their traceback
(``_scrub``): httpcore's frames hold the raw request bytes, headers included, and Django's
error reports print the locals of every frame of every chained exception.
"""

from __future__ import annotations

import contextlib
import contextvars
import email.utils
import json
import logging
import random
import re
import time
import weakref
from collections.abc import Callable, Collection, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import quote

import httpcore
import httpx

from . import __version__
from .conf import Account, Secret, app_settings
from .exceptions import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    ConfigurationError,
    NotFoundError,
    PermissionDeniedError,
    ProviderError,
    RateLimitError,
)
from .jsonl import METADATA_JOB_KEY

__all__ = [
    "MAX_RETRY_AFTER",
    "BatchProvider",
    "OpenAIClient",
    "PermissionDeniedError",
    "get_client",
]

logger = logging.getLogger(__name__)

#: The SDK ignores retry-after above this; a longer wait is better left to the next poll.
MAX_RETRY_AFTER = 120.0
_CHUNK = 1 << 16
#: How much of an error answer is kept for its message (the rest is not read).
_MAX_ERROR_BODY = 64 * 1024
#: Printable ASCII without spaces: what a header value (a bearer token) may hold.
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")
#: Largest integer a count column holds (PositiveIntegerField), and a token column.
_MAX_COUNT = 2**31 - 1
_MAX_TOKENS = 2**63 - 1
#: 9999-12-31: a later Unix time is not a date Python (or a database) can hold.
_MAX_TIMESTAMP = 253402300799


class _Final(APIConnectionError):
    """A connection error that trying again within the call would only repeat."""


class ResponseTooLarge(_Final):
    """The answer was larger than its cap; nothing of it was kept. Not retried in the call."""


class DeadlineExceeded(_Final):
    """One exchange took longer than its deadline. Not retried in the call."""


class _Malformed(Exception):
    """A 2xx answer that is not JSON of the expected shape (internal; becomes
    :class:`~.exceptions.APIConnectionError`)."""


@dataclass(frozen=True)
class BatchLookup:
    """What the services know about a part whose batch may exist unrecorded (a create
    whose answer was lost, a submitter killed between create and record), for
    :meth:`BatchProvider.find_batches`."""

    #: The value the part's batch carries in its metadata (providers that keep metadata).
    key: str
    #: A Unix time the batch cannot have been created before (clock slack included).
    since: float
    #: How many requests the part holds.
    count: int
    #: The part's ``custom_id`` values, streamed (read only when a provider must verify).
    custom_ids: Callable[[], Iterable[str]]
    #: Which of these batch ids this app already tracks (on any job).
    tracked: Callable[[Collection[str]], set[str]]


class BatchProvider(Protocol):
    """What the services need from a batch provider."""

    def upload_file(
        self, path: Path, *, filename: str, expires_after: int | None = None
    ) -> dict[str, Any]: ...
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
        output_expires_after: int | None = None,
    ) -> dict[str, Any]: ...
    def retrieve_batch(self, batch_id: str) -> dict[str, Any]: ...
    def cancel_batch(self, batch_id: str) -> dict[str, Any]: ...
    def list_batches(self, *, after: str | None = None, limit: int = 100) -> dict[str, Any]: ...
    def find_batches(self, lookup: BatchLookup) -> list[dict[str, Any]]: ...
    def close(self) -> None: ...


def _error_class(status: int) -> type[APIError]:
    if status == 429:
        return RateLimitError
    if status == 404:
        return NotFoundError
    if status == 401:
        return AuthenticationError
    if status == 403:
        return PermissionDeniedError
    return APIError


def asked_wait(response: httpx.Response | None) -> float | None:
    """The wait the server asked for (``retry-after-ms``, else ``retry-after`` in seconds
    or as an HTTP date), whatever its size; None when absent or malformed."""
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
            except (TypeError, ValueError, OverflowError):
                continue  # malformed: fall back to our own backoff
        if value == value:  # not nan
            return value
    return None


def server_retry_after(response: httpx.Response | None) -> float | None:
    """The server's wait when a retry within the call should use it: above 0 (the SDK
    reads 0 or less as "no advice" and backs off) and at most ``MAX_RETRY_AFTER``."""
    value = asked_wait(response)
    if value is not None and 0 < value <= MAX_RETRY_AFTER:
        return value
    return None


#: The server's own retry advice (``x-should-retry``, a wait over the cap) per error.
_ADVICE: weakref.WeakKeyDictionary[APIError, bool] = weakref.WeakKeyDictionary()


def should_retry(err: APIError) -> bool:
    """Whether to retry ``err`` within the call, as the official SDK decides: never when
    the server asked for a wait over ``MAX_RETRY_AFTER`` (the caller reschedules, with
    ``err.retry_after`` saying when), else as ``x-should-retry`` says, else by status."""
    advice = _ADVICE.get(err)
    return err.retryable if advice is None else advice


def _advice(response: httpx.Response, wait: float | None) -> bool | None:
    if wait is not None and wait > MAX_RETRY_AFTER:
        return False
    header = response.headers.get("x-should-retry")
    if header == "true":
        return True
    if header == "false":
        return False
    return None


def retry_delay(attempt: int, response: httpx.Response | None = None) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): the server's word, else backoff."""
    asked = server_retry_after(response)
    if asked is not None:
        return asked
    base = min(0.5 * (2**attempt), 8.0)
    return base * (1 - 0.25 * random.random())


def _quick_wait(err: APIError, attempt: int) -> float:
    """The wait before retrying ``err`` within the call (never one over the cap)."""
    asked = err.retry_after
    return asked if asked is not None and asked <= MAX_RETRY_AFTER else retry_delay(attempt)


def _scrub(err: BaseException) -> BaseException:
    """``err`` with the tracebacks of it and its causes dropped (their frames hold the raw
    request, the Authorization header among it); the messages stay for debugging."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.__traceback__ = None
        current = current.__cause__ or current.__context__
    return err


def _connection_error(method: str, path: str, err: Exception) -> APIConnectionError:
    """The error to raise for a transport failure, chained to the scrubbed original."""
    if isinstance(err, httpx.LocalProtocolError):
        # Its text quotes our own request headers (the key among them): name the type only,
        # keep no cause, and empty the original's message in case something else shows it.
        err.args = ()
        _scrub(err)
        return _Final(f"{method} /{path} failed: {type(err).__name__}")
    # Other transport errors describe the network and are safe to show.
    exc = APIConnectionError(f"{method} /{path} failed: {type(err).__name__}: {err}")
    exc.__cause__ = _scrub(err)
    return exc


# -- deadlines -----------------------------------------------------------------------------

#: The monotonic time the exchange running in this context must end by (None: no deadline).
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "openai_batches_deadline", default=None
)


@contextlib.contextmanager
def _until(at: float) -> Iterator[None]:
    token = _deadline.set(at)
    try:
        yield
    finally:
        _deadline.reset(token)


def _bounded(timeout: float | None, expired: type[Exception]) -> float | None:
    """``timeout`` shortened to the time left before the deadline (raise when none is)."""
    at = _deadline.get()
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise expired("deadline exceeded")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every read and write gets at most the time left."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _bounded(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, bounded))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(
            self._inner.connect_tcp(host, port, bounded, local_address, socket_options)
        )

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.connect_unix_socket(path, bounded, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _install_deadlines(transport: object) -> bool:
    """Give an httpx transport's connection pool the deadline-aware backend.

    httpx has no public way to choose httpcore's network backend, so this sets the pool's
    ``_network_backend`` (httpcore 1.x, ``ConnectionPool`` and the proxy pools alike). A
    transport without one (a mock) is left alone: the checks between chunks still apply.
    """
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if not isinstance(backend, httpcore.NetworkBackend):
        return False
    if not isinstance(backend, _DeadlineBackend):
        pool._network_backend = _DeadlineBackend(backend)  # type: ignore[union-attr]
    return True


class HeaderAuth(httpx.Auth):
    """Adds the credential header as the request leaves; holds the key as a Secret.

    OpenAI's ``Authorization: Bearer <key>`` by default; adapters name their own header
    (Azure's ``api-key``, Anthropic's ``x-api-key``) and no prefix. Without a key (the local
    emulator) a placeholder is sent.
    """

    def __init__(
        self, key: Secret | None, header: str = "Authorization", prefix: str = "Bearer "
    ) -> None:
        self._key = key
        self._header = header
        self._prefix = prefix

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers[self._header] = self._prefix + (
            self._key.reveal() if self._key else "local-emulator"
        )
        yield request

    def __repr__(self) -> str:
        return f"<HeaderAuth {self._header} ********>"


# -- answer shapes -------------------------------------------------------------------------


def _need(condition: bool, what: str) -> None:
    if not condition:
        raise _Malformed(what)


def _is_int(value: Any, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= high


def _optional(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = obj.get(key)
    _need(value is None or isinstance(value, kind), f"{key!r} is not a {_kind_name(kind)}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names: dict[type, str] = {dict: "object", list: "list", str: "string", int: "number"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _check_object(obj: Any, kind: str) -> dict[str, Any]:
    _need(isinstance(obj, dict), f"the {kind} is not a JSON object")
    _need(isinstance(obj.get("id"), str) and bool(obj["id"]), f"the {kind} has no string 'id'")
    _need(len(obj["id"]) <= 255, f"the {kind}'s 'id' is longer than 255 characters")
    return obj


#: The batch object's Unix-time fields (the adapters normalise other hosts' to these).
BATCH_TIMESTAMPS = (
    "created_at",
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)


def _check_batch(obj: Any) -> dict[str, Any]:
    """A batch object with the types the services rely on (numbers in column range)."""
    batch = _check_object(obj, "batch")
    _need(isinstance(batch.get("status"), str), "the batch has no string 'status'")
    for key in ("input_file_id", "output_file_id", "error_file_id", "model", "endpoint"):
        _optional(batch, key, str)
    _optional(batch, "metadata", dict)
    for key in BATCH_TIMESTAMPS:
        value = _optional(batch, key, (int, float))
        _need(
            value is None or (not isinstance(value, bool) and 0 <= value <= _MAX_TIMESTAMP),
            f"the batch's {key!r} is not a Unix time",
        )
    counts = _optional(batch, "request_counts", dict) or {}
    for key in ("total", "completed", "failed"):
        value = counts.get(key)
        _need(value is None or _is_int(value, _MAX_COUNT), f"request_counts.{key} is out of range")
    usage = _optional(batch, "usage", dict) or {}
    for key in ("input_tokens", "output_tokens", "total_tokens"):
        value = usage.get(key)
        _need(value is None or _is_int(value, _MAX_TOKENS), f"usage.{key} is out of range")
    for details, key in (
        ("input_tokens_details", "cached_tokens"),
        ("output_tokens_details", "reasoning_tokens"),
    ):
        detail = _optional(usage, details, dict) or {}
        value = detail.get(key)
        _need(
            value is None or _is_int(value, _MAX_TOKENS), f"usage.{details}.{key} is out of range"
        )
    errors = _optional(batch, "errors", dict) or {}
    _optional(errors, "data", list)
    return batch


def _check_file(obj: Any) -> dict[str, Any]:
    file = _check_object(obj, "file")
    for key in ("filename", "purpose", "status"):
        _optional(file, key, str)
    size = file.get("bytes")
    _need(size is None or _is_int(size, _MAX_TOKENS), "the file's 'bytes' is not a size")
    return file


def _check_page(item: Callable[[Any], dict[str, Any]]) -> Callable[[Any], dict[str, Any]]:
    def check(obj: Any) -> dict[str, Any]:
        _need(isinstance(obj, dict), "the list is not a JSON object")
        data = _optional(obj, "data", list) or []
        # The entries as the check returns them (an adapter's check translates them).
        obj["data"] = [item(entry) for entry in data]
        _optional(obj, "has_more", bool)
        return obj

    return check


#: Request headers that carry a credential (OpenAI's, Azure's, Anthropic's).
_CREDENTIAL_HEADERS = ("authorization", "api-key", "x-api-key")


def _redacted(raw: bytes, response: httpx.Response) -> bytes:
    """``raw`` (an error answer) with the credentials its request carried replaced by
    stars: a server (a debugging proxy, a gateway) may quote the request's headers back,
    and the message ends up in a job's ``last_error``, the admin and the API."""
    try:
        headers = response.request.headers
    except RuntimeError:  # a response built by hand, without its request
        return raw
    for name in _CREDENTIAL_HEADERS:
        sent = headers.get(name, "")
        sent = sent.split(" ", 1)[-1] if name == "authorization" else sent
        if len(sent) >= 8:
            for form in {sent, json.dumps(sent)[1:-1]}:  # as it is, and JSON-escaped
                raw = raw.replace(form.encode(), b"********")
    return raw


def _parse(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as err:  # RecursionError: "[[[[..." nested deep
        raise _Malformed("the body is not JSON") from err


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
        self.account = account
        self._check_credentials()
        self.max_retries = app_settings.MAX_RETRIES if max_retries is None else max_retries
        self.request_deadline = _positive("REQUEST_DEADLINE", float)
        self.transfer_deadline = _positive("TRANSFER_DEADLINE", float)
        self.max_response_bytes = _positive("MAX_RESPONSE_BYTES", int)
        self.max_download_bytes = _positive("MAX_DOWNLOAD_BYTES", int)
        self._sleep = sleep
        self._attempts = 0  # of the last JSON call (cancel_batch reads it)
        self._http = httpx.Client(
            base_url=self._base_url(),
            headers={"User-Agent": f"django-openai-batches/{__version__}", **self._headers()},
            params=self._params(),
            auth=self._auth(),
            timeout=httpx.Timeout(account.timeout, connect=min(account.timeout, 10.0)),
            transport=transport or httpx.HTTPTransport(),
        )
        # The default transport and any proxy mounts (from the environment) alike.
        for mounted in [self._http._transport, *self._http._mounts.values()]:
            _install_deadlines(mounted)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} account={self.account.name!r} base_url={self.account.base_url!r}>"

    # -- what a provider adapter changes (``openai_batches.providers``) -----------------

    #: The answer header carrying the provider's request id (kept on errors).
    request_id_header = "x-request-id"

    def _check_credentials(self) -> None:
        """Refuse an account whose credentials cannot work, without ever quoting the key."""
        account = self.account
        if not account.api_key and not account.is_local:
            raise ConfigurationError(
                f"No API key for account {account.name!r}: set OPENAI_BATCHES['API_KEY'] or OPENAI_API_KEY."
            )
        if account.api_key and not _HEADER_SAFE.fullmatch(account.api_key.reveal()):
            # Never quote the key: say what is wrong with it instead.
            raise ConfigurationError(
                f"The API key of account {account.name!r} contains whitespace or control characters; "
                "check how it is read (a trailing newline from a file is the usual cause)."
            )
        for what, value in (("ORGANIZATION", account.organization), ("PROJECT", account.project)):
            if value and not _HEADER_SAFE.fullmatch(value):
                raise ConfigurationError(
                    f"The {what} of account {account.name!r} must be printable ASCII without spaces."
                )

    def _base_url(self) -> str:
        return self.account.base_url + "/"

    def _headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.account.organization:
            headers["OpenAI-Organization"] = self.account.organization
        if self.account.project:
            headers["OpenAI-Project"] = self.account.project
        return headers

    def _params(self) -> dict[str, str]:
        """Query parameters every call carries (Azure's ``api-version``)."""
        return {}

    def _auth(self) -> httpx.Auth:
        return HeaderAuth(self.account.api_key)

    def _batch(self, obj: Any) -> dict[str, Any]:
        """A batch object from the wire, in OpenAI's shape and checked (adapters translate
        their provider's shape first)."""
        return _check_batch(obj)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OpenAIClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _exchange(
        self, method: str, path: str, deadline: float, **kwargs: Any
    ) -> Iterator[tuple[httpx.Response, Callable[[], Iterator[bytes]]]]:
        """One request, streamed: yields the response and a chunk reader, both bounded by
        ``deadline`` seconds from now. Raises typed errors (httpx's never get out)."""
        at = time.monotonic() + deadline

        def expired(err: BaseException | None = None) -> DeadlineExceeded:
            exc = DeadlineExceeded(
                f"{method} /{path} did not finish within its deadline of {deadline:g}s"
            )
            exc.__cause__ = _scrub(err) if err is not None else None
            return exc

        def translate(err: Exception) -> ProviderError:
            if isinstance(err, httpx.TimeoutException) and time.monotonic() >= at:
                return expired(err)
            return _connection_error(method, path, err)

        def chunks() -> Iterator[bytes]:
            raw = response.iter_bytes(_CHUNK)
            while True:
                try:
                    with _until(at):
                        chunk = next(raw, None)
                except httpx.HTTPError as err:
                    exc = translate(err)
                    raise exc from exc.__cause__
                if chunk is None:
                    return
                if time.monotonic() >= at:
                    raise expired()
                yield chunk

        try:
            with _until(at):
                request = self._http.build_request(method, path, **kwargs)
                response = self._http.send(request, stream=True)
        except httpx.HTTPError as err:
            exc = translate(err)
            raise exc from exc.__cause__
        except httpx.InvalidURL as err:
            raise ConfigurationError(
                f"The base URL of account {self.account.name!r} is not a valid URL: {err}"
            ) from None
        try:
            yield response, chunks
        finally:
            with contextlib.suppress(httpx.HTTPError):
                response.close()

    def _read(
        self, response: httpx.Response, chunks: Callable[[], Iterator[bytes]], cap: int, what: str
    ) -> bytes:
        """The whole body, refused past ``cap`` bytes (by Content-Length or as it comes)."""
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise ResponseTooLarge(
                f"{what} announced {int(declared):,} bytes, over the cap of {cap:,}; not read"
            )
        body = bytearray()
        for chunk in chunks():
            body += chunk
            if len(body) > cap:
                raise ResponseTooLarge(f"{what} sent more than the cap of {cap:,} bytes; stopped")
        return bytes(body)

    def _error(
        self,
        response: httpx.Response,
        chunks: Callable[[], Iterator[bytes]],
        method: str,
        path: str,
    ) -> APIError:
        """The typed error for a non-2xx answer (only its first 64 KiB are read)."""
        raw = bytearray()
        with contextlib.suppress(ProviderError):  # a broken error body still has a status
            for chunk in chunks():
                raw += chunk
                if len(raw) >= _MAX_ERROR_BODY:
                    break
        raw = bytearray(_redacted(bytes(raw), response))
        body: Any
        try:
            body = json.loads(bytes(raw[:_MAX_ERROR_BODY]))
        except (ValueError, RecursionError):
            body = bytes(raw[:2000]).decode("utf-8", "replace")
        error = _error_class(response.status_code)(
            response.status_code,
            body,
            request_id=response.headers.get(self.request_id_header),
            method=method,
            path="/" + path,
        )
        wait = asked_wait(response)
        # Within the cap, the wait before a retry; over it (never retried here), kept so
        # that the caller can reschedule for then. 0 or less is no advice.
        error.retry_after = wait if wait is not None and wait > 0 else None
        advice = _advice(response, wait)
        if advice is not None:
            _ADVICE[error] = advice
        return error

    def _call(
        self,
        method: str,
        path: str,
        check: Callable[[Any], dict[str, Any]] | None,
        *,
        retry: bool = True,
        rewind: Callable[[], object] | None = None,
        deadline: float | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """One JSON call with retries and typed errors. ``path`` is relative to the base URL.

        ``check`` validates the parsed answer (and raises :class:`_Malformed`); ``None``
        means only the status matters and the body is not read.
        """
        attempts = self.max_retries + 1 if retry else 1
        for attempt in range(attempts):
            self._attempts = attempt + 1
            last = attempt == attempts - 1
            answer: httpx.Response | None = None
            try:
                with self._exchange(method, path, deadline or self.request_deadline, **kwargs) as (
                    response,
                    chunks,
                ):
                    if not response.is_success:
                        raise self._error(response, chunks, method, path)
                    answer = response
                    if check is None:
                        return {}
                    what = f"The answer to {method} /{path}"
                    return check(
                        _parse(self._read(response, chunks, self.max_response_bytes, what))
                    )
            except _Final:
                raise
            except APIError as err:
                if last or not should_retry(err):
                    raise
                delay = _quick_wait(err, attempt)
                logger.warning(
                    "%s /%s answered %s; retrying in %.1fs", method, path, err.status_code, delay
                )
            except APIConnectionError as err:
                if last:
                    raise
                delay = retry_delay(attempt)
                logger.warning("%s /%s: %s; retrying in %.1fs", method, path, err, delay)
            except _Malformed as err:
                message = f"{method} /{path} answered {answer.status_code if answer else '2xx'} with a body that is not usable: {err}"
                if last:
                    raise APIConnectionError(message) from None
                delay = retry_delay(attempt)
                logger.warning("%s; retrying in %.1fs", message, delay)
            if rewind is not None:
                rewind()
            self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- files ---------------------------------------------------------------------------

    def upload_file(
        self, path: Path, *, filename: str, expires_after: int | None = None
    ) -> dict[str, Any]:
        """Upload a JSONL file with ``purpose=batch``, streamed from disk (retried: a
        duplicate upload costs nothing and the services delete files they do not use).

        ``expires_after``: seconds after its upload when the provider deletes the file
        (3600 to 2592000); None leaves the provider's default (30 days for batch files).
        """
        data = {"purpose": "batch"}
        if expires_after is not None:
            # Multipart has no nesting: OpenAI (and its SDK) flatten the object with brackets.
            expiry = expiration(expires_after)
            data["expires_after[anchor]"] = expiry["anchor"]
            data["expires_after[seconds]"] = str(expiry["seconds"])
        with open(path, "rb") as fp:
            return self._call(
                "POST",
                "files",
                _check_file,
                data=data,
                files={"file": (filename, fp, "application/jsonl")},
                rewind=lambda: fp.seek(0),
                deadline=self.transfer_deadline,
            )

    def delete_file(self, file_id: str) -> None:
        # A 2xx is the answer: the body (which OpenAI fills with {"deleted": true}) is not
        # read, so a garbled one does not make a retry meet a 404 for a file now gone.
        self._call("DELETE", f"files/{_segment(file_id)}", None)

    def list_files(self, *, purpose: str | None = None) -> Iterator[dict[str, Any]]:
        """Files, newest first (the files list takes up to 10,000 per page)."""
        params: dict[str, Any] = {"limit": 10_000, "order": "desc"}
        if purpose:
            params["purpose"] = purpose

        def page(after: str | None) -> dict[str, Any]:
            query = {**params, "after": after} if after else params
            return self._call("GET", "files", _check_page(_check_file), params=query)

        return _walk(page, "GET /files")

    def iter_file_chunks(self, file_id: str) -> Iterator[bytes]:
        """Stream a file's bytes (one attempt: a caller re-reading from the start can retry).

        At most ``MAX_DOWNLOAD_BYTES``, within ``TRANSFER_DEADLINE``; a body shorter than its
        Content-Length (a dropped download) is an error, never a silently short file.
        """
        path = f"files/{_segment(file_id)}/content"
        cap = self.max_download_bytes
        with self._exchange("GET", path, self.transfer_deadline) as (response, chunks):
            if not response.is_success:
                raise self._error(response, chunks, "GET", path)
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > cap:
                raise ResponseTooLarge(
                    f"GET /{path} announced {int(declared):,} bytes, over MAX_DOWNLOAD_BYTES "
                    f"({cap:,}); not downloaded"
                )
            size = 0
            for chunk in chunks():
                size += len(chunk)
                if size > cap:
                    raise ResponseTooLarge(
                        f"GET /{path} sent more than MAX_DOWNLOAD_BYTES ({cap:,}); stopped"
                    )
                yield chunk

    def download_file(self, file_id: str, dest: IO[bytes]) -> int:
        """Stream a file to ``dest`` (retried from the start); returns its size in bytes."""
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
            except _Final:
                raise
            except (APIConnectionError, APIError) as err:
                retryable = isinstance(err, APIConnectionError) or should_retry(err)
                if not retryable or n == self.max_retries:
                    raise
                delay = _quick_wait(err, n) if isinstance(err, APIError) else retry_delay(n)
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
        output_expires_after: int | None = None,
    ) -> dict[str, Any]:
        """Create a batch. Never retried: see the module docstring.

        ``output_expires_after``: seconds after the output and error files are written when
        the provider deletes them (3600 to 2592000); None leaves the provider's default.
        """
        payload: dict[str, Any] = {
            "input_file_id": input_file_id,
            "endpoint": endpoint,
            "completion_window": completion_window,
            "metadata": dict(metadata),
        }
        if output_expires_after is not None:
            payload["output_expires_after"] = expiration(output_expires_after)
        return self._call("POST", "batches", self._batch, json=payload, retry=False)

    def retrieve_batch(self, batch_id: str) -> dict[str, Any]:
        return self._call("GET", f"batches/{_segment(batch_id)}", self._batch)

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        try:
            return self._call("POST", f"batches/{_segment(batch_id)}/cancel", self._batch)
        except APIError as err:
            if err.status_code not in (400, 409) or self._attempts < 2:
                raise
            # A retry refused because the batch is no longer cancellable: the attempt whose
            # answer was lost most likely cancelled it. Answer with the batch if so.
            batch = self.retrieve_batch(batch_id)
            if batch["status"] not in ("cancelling", "cancelled"):
                raise
            return batch

    def list_batches(self, *, after: str | None = None, limit: int = 100) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if after:
            params["after"] = after
        return self._call("GET", "batches", _check_page(self._batch), params=params)

    def iter_batches(self, *, limit: int = 100) -> Iterator[dict[str, Any]]:
        """All batches, newest first, one list call per ``limit`` batches."""
        return _walk(lambda after: self.list_batches(after=after, limit=limit), "GET /batches")

    def find_batches(self, lookup: BatchLookup) -> list[dict[str, Any]]:
        """The batches carrying ``lookup.key`` in their metadata (the job's UUID and the
        part's number), oldest first. Batches come newest first, so the scan stops at the
        first page that reaches back before ``lookup.since``."""
        matches = [
            dict(b)
            for b in _batches_since(self, lookup.since)
            if (b.get("metadata") or {}).get(METADATA_JOB_KEY) == lookup.key
        ]
        matches.sort(key=lambda b: (b.get("created_at") or 0, b["id"]))
        return matches


def _pages(fetch: Callable[[str | None], dict[str, Any]], what: str) -> Iterator[dict[str, Any]]:
    """Every page of a cursor-paged list. A provider whose cursor does not advance (a
    page ending on an id already used as the cursor) would make this loop for ever, so
    that is an error, raised before the repeated page is yielded."""
    used: set[str | None] = {None}
    after: str | None = None
    while True:
        page = fetch(after)
        data = page.get("data") or []
        cursor = data[-1]["id"] if data else None
        if page.get("has_more") and data and cursor in used:
            raise APIConnectionError(
                f"{what}: the list cursor does not advance (a page after {after!r} ends on "
                f"{cursor!r} again); stopped instead of looping"
            )
        yield page
        if not page.get("has_more") or not data:
            return
        used.add(cursor)
        after = cursor


def _walk(fetch: Callable[[str | None], dict[str, Any]], what: str) -> Iterator[dict[str, Any]]:
    """Every entry of a cursor-paged list (see :func:`_pages`)."""
    for page in _pages(fetch, what):
        yield from page.get("data") or []


def _batches_since(client: BatchProvider, since: float) -> Iterator[dict[str, Any]]:
    """The batches listed newest first, back to the first page reaching before ``since``
    (the lookups of a part's lost batch)."""
    fetch = lambda after: client.list_batches(after=after, limit=100)  # noqa: E731
    for page in _pages(fetch, "GET /batches"):
        data = page.get("data") or []
        yield from data
        if data and (data[-1].get("created_at") or 0) < since:
            return


def expiration(seconds: int | float) -> dict[str, Any]:
    """OpenAI's expiration object: ``seconds`` after the file's creation (whole seconds).

    The range (3600 to 2592000) is the provider's to enforce and the system checks' to
    warn about; a float setting such as ``7200.0`` is sent as the integer the API wants.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ConfigurationError(f"An expiry must be a number of seconds, not {seconds!r}.")
    return {"anchor": "created_at", "seconds": int(seconds)}


def _segment(value: str) -> str:
    """An id as one URL path segment: an id holding ``/``, ``?`` or ``..`` (from a broken
    provider or a hand-edited row) must not point the call at another endpoint."""
    segment = quote(str(value), safe="")
    # "." and ".." are dot segments, which URL joining removes (``batches/../cancel`` is
    # ``/cancel``): spelled with %2E they are a plain name, as RFC 3986 reads them.
    return segment.replace(".", "%2E") if segment.strip(".") == "" else segment


def _positive(name: str, kind: type[int] | type[float]) -> Any:
    value = getattr(app_settings, name)
    try:
        number = kind(value)
    except (TypeError, ValueError):
        number = 0
    if isinstance(value, bool) or number <= 0:
        raise ConfigurationError(
            f"OPENAI_BATCHES[{name!r}] must be a positive number, not {value!r}."
        )
    return number


def get_client(account: str = "default") -> BatchProvider:
    """The provider adapter for a configured account (the seam the services and tests
    use): ``OPENAI_BATCHES["ACCOUNTS"][name]["PROVIDER"]`` picks it, "openai" by default."""
    from .providers import provider_for

    return provider_for(app_settings.account(account))
