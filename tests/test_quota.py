"""Quota-aware submission: estimates stored, budgets shared by every worker, the line of
waiting parts, learning from ``token_limit_exceeded``.

Everything that involves the provider runs against the emulator over HTTP through the
real services. The emulator's own count of enqueued tokens (its peak per model, in
``GET /_emulator/state``) is the judge of whether a budget was ever exceeded.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from openai_batches import quota
from openai_batches.models import QuotaEvent, QuotaEventKind, TokenBudget
from openai_batches.testing import EmulatorHandle, running_emulator

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "gpt-4o-mini"


@pytest.fixture
def emu() -> Iterator[EmulatorHandle]:
    with running_emulator() as handle:
        yield handle


def configure(settings: Any, **values: Any) -> None:
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, **values}


def user(name: str) -> Any:
    return get_user_model().objects.create_user(username=name, password="x")


# -- limits from the setting ---------------------------------------------------------------


def test_configured_limit_family_defaults_prefixes_accounts_and_off(settings: Any) -> None:
    assert quota.configured_limit("default", "gpt-4o-mini") == 2_000_000
    assert quota.configured_limit("default", "gpt-4o-mini-2024-07-18") == 2_000_000
    assert quota.configured_limit("default", "gpt-4o-2024-08-06") == 90_000
    assert quota.configured_limit("default", "o3") is None
    configure(
        settings,
        ENQUEUED_TOKEN_LIMITS={"gpt-4o": 450_000, "*": 1_000, "azure": {"gpt-4o": None}},
    )
    assert quota.configured_limit("default", "gpt-4o") == 450_000
    assert quota.configured_limit("default", "o3") == 1_000
    assert quota.configured_limit("azure", "gpt-4o-2024-08-06") is None
    assert quota.configured_limit("azure", "gpt-4o-mini") == 2_000_000
    configure(settings, ENQUEUED_TOKEN_LIMITS=None)
    assert quota.configured_limit("default", "gpt-4o-mini") is None


def test_overview_and_reset_of_a_learned_limit(settings: Any) -> None:
    TokenBudget.objects.create(account="default", model=MODEL, learned_limit=1_234)
    [row] = quota.overview()
    assert (row.account, row.model, row.limit, row.learned_limit) == (
        "default",
        MODEL,
        2_000_000,
        1_234,
    )
    assert row.effective_limit == 1_234
    assert (row.reserved, row.in_flight, row.waiting_parts, row.waiting_tokens) == (0, 0, 0, 0)
    assert row.updated_at is not None
    assert quota.overview("other") == []

    quota.reset_learned_limit("default", MODEL)
    [row] = quota.overview()
    assert row.learned_limit is None and row.effective_limit == 2_000_000
    event = QuotaEvent.objects.get()
    assert (event.kind, event.limit_before, event.limit_after) == (
        QuotaEventKind.RESET,
        1_234,
        2_000_000,
    )
