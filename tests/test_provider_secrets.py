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

from openai_batches.conf import Account
from openai_batches.exceptions import ConfigurationError, OpenAIBatchesError
from openai_batches.providers import provider_for
from openai_batches.providers.azure import forget_tokens

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
        with pytest.raises(OpenAIBatchesError, match="TOKEN_PROVIDER of account 'acct'"):
            client.list_batches()
        assert time.monotonic() - started < 5
    finally:
        release.set()  # let the abandoned call end
