"""The Azure and Anthropic credentials never show: an ``api-key`` / ``x-api-key`` header
value, a bearer token from a ``TOKEN_PROVIDER`` (however the callable misbehaves: raises,
hangs, returns garbage, returns a token that is then revoked), not in error messages,
Django's error reports (every frame's locals, chained exceptions), logs or reprs; and a
credential is only ever sent to the host it was obtained for.

The hunting follows ``tests/test_secrets.py``: distinctive canaries, then a search of
everything a person or a log collector could see."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from django.test import RequestFactory
from django.views.debug import ExceptionReporter

from openai_batches.client import get_client
from openai_batches.conf import Account
from openai_batches.emulator import EmulatorServer
from openai_batches.exceptions import (
    AuthenticationError,
    ConfigurationError,
    OpenAIBatchesError,
    ProviderError,
)
from openai_batches.providers import provider_for
from openai_batches.providers.azure import forget_tokens
from tests.provider_helpers import account_on_emulator

CANARY = "LEAKCANARY"
TOKEN = f"eyJ-{CANARY}-token-0123456789"
AZURE_KEY = f"az-{CANARY}-key-0123456789"
ANTHROPIC_KEY = f"sk-ant-{CANARY}-0123456789"


def assert_no_secret(text: str, where: str) -> None:
    assert CANARY not in text, f"a credential was found in {where}"


def reports(exc_info: Any) -> list[str]:
    """Django's reports of an exception (the DEBUG page, the HTML and text emails), with
    the locals of every frame of every chained exception."""
    request = RequestFactory().get("/")
    reporter = ExceptionReporter(request, *exc_info, is_email=False)
    email = ExceptionReporter(request, *exc_info, is_email=True)
    return [
        reporter.get_traceback_html(),
        email.get_traceback_html(),
        email.get_traceback_text(),
    ]


def caught(call: Any, kind: type[BaseException], match: str) -> Any:
    """The ``sys.exc_info()`` of ``call()`` (caught here: the test's own frame, which holds
    the canaries, is not part of the traceback)."""
    try:
        call()
    except kind:
        exc_info = sys.exc_info()
    else:
        raise AssertionError("no error")
    assert match in str(exc_info[1]), exc_info[1]
    return exc_info


def assert_reports_clean(exc_info: Any) -> None:
    html, *others = reports(exc_info)
    assert "Local vars" in html  # the frames' locals are there ...
    for text in (html, *others, str(exc_info[1]), repr(exc_info[1])):
        assert_no_secret(text, "an error report")  # ... and no credential among them


@pytest.fixture(autouse=True)
def _no_cached_tokens(settings: Any) -> Iterator[None]:
    settings.DEBUG = True  # the report shows the most while DEBUG is on
    forget_tokens()
    yield
    forget_tokens()


def azure(provider: Any, base_url: str = "https://res.openai.azure.com", **kw: Any) -> Account:
    return Account("acct", base_url, None, provider="azure", token_provider=provider, **kw)


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"object": "list", "data": [], "has_more": False})


# -- a TOKEN_PROVIDER that returns garbage ----------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [
        TOKEN + "\n",  # a token read from a file, newline and all
        f"Bearer {TOKEN}",  # the whole header value
        TOKEN.encode(),  # bytes
        SimpleNamespace(token=TOKEN + " ", expires_on=time.time() + 3600),
        (TOKEN + "\t", time.time() + 3600),
    ],
    ids=["newline", "space", "bytes", "access-token", "pair"],
)
def test_a_token_provider_returning_garbage_is_refused_without_quoting_it(garbage: Any) -> None:
    client = provider_for(azure(lambda: garbage), transport=httpx.MockTransport(ok))
    assert_reports_clean(caught(client.list_batches, ConfigurationError, "did not return a token"))


# -- a TOKEN_PROVIDER that raises -------------------------------------------------------------


def test_a_token_provider_that_raises_shows_neither_its_locals_nor_its_cause() -> None:
    def provider() -> str:
        client_secret = f"secret-{CANARY}"  # noqa: F841  (what a credential chain holds)
        try:
            raise KeyError("access_token")
        except KeyError:
            raise RuntimeError("no managed identity endpoint") from None

    client = provider_for(azure(provider), transport=httpx.MockTransport(ok))
    assert_reports_clean(caught(client.list_batches, OpenAIBatchesError, "no managed identity"))


# -- a TOKEN_PROVIDER that hangs --------------------------------------------------------------


def test_a_token_provider_that_hangs_is_given_up_on_within_the_deadline(settings: Any) -> None:
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "REQUEST_DEADLINE": 1.0}
    release = threading.Event()

    def provider() -> str:
        release.wait(30)  # a metadata endpoint that never answers
        return TOKEN

    client = provider_for(azure(provider, timeout=30.0), transport=httpx.MockTransport(ok))
    started = time.monotonic()
    try:
        with pytest.raises(ProviderError, match="TOKEN_PROVIDER of account 'acct' did not answer"):
            client.list_batches()
        assert time.monotonic() - started < 5
    finally:
        release.set()  # let the abandoned call end


# -- cached tokens ----------------------------------------------------------------------------


class Recorder:
    """A server accepting the bearer tokens in ``valid``, recording what each host got."""

    def __init__(self, *valid: str) -> None:
        self.valid = set(valid)
        self.seen: list[tuple[str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        # Not read here: reading swaps a streamed body for bytes, replayable as the real
        # transport's never is.
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        self.seen.append((request.url.host, token))
        if token not in self.valid:
            return httpx.Response(401, json={"error": {"code": "401", "message": "Unauthorized"}})
        if request.url.path.endswith("/files"):
            file = {"id": "file-1", "object": "file", "bytes": 3, "filename": "in.jsonl"}
            return httpx.Response(200, json=file)
        return ok(request)


def expiring(*tokens: str) -> Any:
    """A provider handing out ``tokens`` in turn, each saying it lasts an hour (cached)."""
    queue = list(tokens)
    return lambda: (queue.pop(0), time.time() + 3600)


def test_a_cached_token_is_never_sent_to_another_endpoint_after_a_settings_change() -> None:
    server = Recorder("token-a", "token-b")
    first = azure(expiring("token-a"), "https://a.openai.azure.com")
    provider_for(first, transport=httpx.MockTransport(server)).list_batches()
    # The same account name, moved to another resource with another identity.
    moved = azure(expiring("token-b"), "https://b.openai.azure.com")
    provider_for(moved, transport=httpx.MockTransport(server)).list_batches()
    assert server.seen == [("a.openai.azure.com", "token-a"), ("b.openai.azure.com", "token-b")]


#: What ``handed_out`` gives next (a test fills it).
NEXT_TOKENS: list[str] = []


def handed_out() -> tuple[str, float]:
    """A TOKEN_PROVIDER (dotted path) giving the next of NEXT_TOKENS, good for an hour."""
    return NEXT_TOKENS.pop(0), time.time() + 3600


@pytest.mark.django_db
def test_a_cached_token_revoked_early_is_dropped_even_when_the_call_cannot_be_replayed(
    tmp_path: Any,
) -> None:
    """A 401 on a streamed upload (which cannot be sent twice) still drops the cached token,
    so the next call asks for a new one instead of failing the same way until it expires.
    Over real HTTP: a mock transport reads every body first, which makes it replayable."""
    NEXT_TOKENS[:] = ["token-1", "token-2"]

    def conf(server: EmulatorServer) -> dict[str, Any]:
        provider = "tests.test_provider_secrets.handed_out"
        return {"PROVIDER": "azure", "BASE_URL": server.root_url, "TOKEN_PROVIDER": provider}

    with account_on_emulator("azure", conf, api_key=None, tokens=["token-1"]) as (emu, _srv):
        client = get_client("acct")
        try:
            client.list_batches()  # token-1, cached for an hour
            emu.flavor.tokens = {"token-2"}  # type: ignore[attr-defined]  # revoked early
            path = tmp_path / "in.jsonl"
            path.write_text("{}\n")
            with pytest.raises(AuthenticationError):
                client.upload_file(path, filename="in.jsonl")
            assert client.upload_file(path, filename="in.jsonl")["id"].startswith("file-")
        finally:
            client.close()
    assert NEXT_TOKENS == []


# -- api-key, x-api-key and bearer tokens on every failure path ---------------------------------


def _token() -> str:
    return TOKEN


ACCOUNTS = {
    "azure-key": lambda url: Account("acct", url, AZURE_KEY, provider="azure"),
    "azure-token": lambda url: azure(_token, url),
    "anthropic": lambda url: Account("acct", url, ANTHROPIC_KEY, provider="anthropic"),
}


def echo(status: int) -> Any:
    """A server (a debugging proxy, a misconfigured gateway) whose error page quotes the
    request's headers back, the credential among them, JSON-escaped or not."""

    def handler(request: httpx.Request) -> httpx.Response:
        headers = dict(request.headers)
        text = " ".join(f"{k}: {v}" for k, v in headers.items())
        return httpx.Response(status, json={"error": {"message": text}, "headers": headers})

    return handler


@pytest.fixture
def every_logger_at_debug(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    import logging

    from tests.test_secrets import _every_logger_at_debug

    levels = _every_logger_at_debug()
    next(levels)
    caplog.set_level(logging.DEBUG)
    yield caplog
    levels.close()


@pytest.mark.parametrize("who", sorted(ACCOUNTS))
@pytest.mark.parametrize("status", [401, 403, 500])
def test_an_error_answer_quoting_the_credential_never_shows_it(
    who: str, status: int, every_logger_at_debug: pytest.LogCaptureFixture
) -> None:
    """What ends in a job's last_error (the admin, the API) and in the logs is scrubbed
    of the credential the request carried, whatever the server sends back."""
    client = provider_for(
        ACCOUNTS[who]("https://provider.example"), transport=httpx.MockTransport(echo(status))
    )
    client.max_retries = 1
    client._sleep = lambda seconds: None
    exc_info = caught(client.list_batches, OpenAIBatchesError, str(status))
    assert_reports_clean(exc_info)
    assert_no_secret(repr(exc_info[1].body), "the error's body")
    assert_no_secret(every_logger_at_debug.text, "the logs")


@pytest.mark.parametrize("who", sorted(ACCOUNTS))
def test_a_connection_error_report_never_shows_the_credential(
    who: str, every_logger_at_debug: pytest.LogCaptureFixture
) -> None:
    # Port 9 (discard): nobody listens; httpcore's frames held the raw request headers.
    client = provider_for(ACCOUNTS[who]("http://127.0.0.1:9"))
    client.max_retries = 0
    try:
        assert_reports_clean(caught(client.list_batches, OpenAIBatchesError, "failed"))
        for shown in (repr(client), repr(client.account), repr(client._http.auth)):
            assert_no_secret(shown, "a repr")
    finally:
        client.close()
    assert_no_secret(every_logger_at_debug.text, "the logs")
