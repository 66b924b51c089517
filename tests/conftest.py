"""Shared test fixtures: the Redis stand-in, service markers.

With ``REDIS_URL`` unset, every Redis connection django-rq makes is a shared in-process
fakeredis. Tests marked ``postgres`` or ``redis`` need the real service: off CI they are
skipped when it is absent; in CI (``CI=true``) an absent service fails the test instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_configure(config: pytest.Config) -> None:
    if IN_CI and (not os.environ.get("DATABASE_URL") or not os.environ.get("REDIS_URL")):
        raise pytest.UsageError(
            "CI=true but DATABASE_URL or REDIS_URL is not set: CI must test the real services."
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    on_postgres = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
    for item in items:
        if "postgres" in item.keywords and not on_postgres:
            item.add_marker(pytest.mark.skip(reason="needs PostgreSQL: set DATABASE_URL"))
        if "redis" in item.keywords and not settings.USE_REAL_REDIS:
            item.add_marker(pytest.mark.skip(reason="needs Redis and RQ workers: set REDIS_URL"))


@pytest.fixture(autouse=True)
def _redis_stand_in(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Point django-rq at fakeredis unless a real Redis was given; flush between tests."""
    if settings.USE_REAL_REDIS:
        import django_rq

        yield
        django_rq.get_connection("openai_batches").flushdb()
        return
    import fakeredis
    from django_rq import queues

    server = fakeredis.FakeServer()
    conn = fakeredis.FakeRedis(server=server)
    monkeypatch.setattr(queues, "get_redis_connection", lambda *a, **k: conn)
    monkeypatch.setattr(queues, "get_connection", lambda *a, **k: conn)
    yield


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    """Throttle counters (and anything else in Django's cache) outlive a test's
    transaction: start and end every test with an empty cache."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def no_retries(settings: Any) -> None:
    """One send per request (``RETRY["MAX_ATTEMPTS"] = 1``), for tests of what a single
    provider batch's outcome does to a job; retries have their own tests (test_parts.py)."""
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "RETRY": {"MAX_ATTEMPTS": 1}}


@pytest.fixture(autouse=True)
def _settings_restored() -> Iterator[None]:
    """A test that leaves ``OPENAI_BATCHES`` changed fails itself, not a later test.

    A setting changed inside an emulator's override (``running_emulator`` overrides the
    base URL) is restored by pytest-django to the emulator's value: the next tests would run
    against a server that is gone, far from the test that caused it.
    """
    before = repr(getattr(settings, "OPENAI_BATCHES", None))
    yield
    if repr(getattr(settings, "OPENAI_BATCHES", None)) != before:
        # Not an assert: pytest would print both values, and they hold the test key.
        pytest.fail("this test left settings.OPENAI_BATCHES changed", pytrace=False)
