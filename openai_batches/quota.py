"""Enqueued-token budgets, read side: what each model may have enqueued, what is reserved
and in flight, and the line of parts waiting for room.

OpenAI caps the input tokens a model may have *enqueued* across an organization's active
batches; a batch over the cap fails with ``token_limit_exceeded``. The app keeps a budget
per account and model (:class:`~openai_batches.models.TokenBudget`): the limit configured in
``ENQUEUED_TOKEN_LIMITS`` (built-in defaults per model family), lowered by what the provider
taught us. :mod:`openai_batches.services.quota` changes budgets; this module only reads
them, for the admin, the API and operators (:func:`overview`, :func:`waiting`), and holds
the one place that resolves a limit from the setting (:func:`configured_limit`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Count, Q, QuerySet, Sum

from .conf import SETTING_NAME, app_settings
from .exceptions import ConfigurationError
from .models import TERMINAL_STATUSES, JobState, ProviderBatch, TokenBudget

#: Enqueued-token limits per model family when ``ENQUEUED_TOKEN_LIMITS`` does not name the
#: model: OpenAI's usage tier 1 (the lowest) caps from the reference notes. A key matches
#: the model itself and every snapshot that starts with it (the longest key wins); a model
#: no key matches has no limit until the provider refuses a batch (see "learning").
DEFAULT_ENQUEUED_TOKEN_LIMITS: dict[str, int | None] = {
    "gpt-4o-mini": 2_000_000,
    "gpt-4o": 90_000,
}

#: The key of ``ENQUEUED_TOKEN_LIMITS`` that applies to every model no other key matches.
ANY_MODEL = "*"

#: Parts that hold room in their budget: admitted (being submitted) or at the provider and
#: not ended. A part that ended still shows its ``reserved_tokens`` until the next pass over
#: its budget frees them, but no longer counts.
HOLDING = Q(reserved_tokens__gt=0) & (
    Q(state=JobState.SUBMIT_REQUESTED)
    | (Q(state=JobState.SUBMITTED) & ~Q(provider_status__in=list(TERMINAL_STATUSES)))
)
#: Parts in line: planned, not admitted yet.
IN_LINE = Q(state=JobState.SUBMIT_REQUESTED, waiting_since__isnull=False, admitted_at__isnull=True)


@dataclass(frozen=True)
class ModelQuota:
    """One account's budget for one model, as the admin and the API show it."""

    account: str
    model: str
    limit: int | None  # configured (ENQUEUED_TOKEN_LIMITS); None: unlimited
    learned_limit: int | None  # lowered after token_limit_exceeded; None: nothing learned
    effective_limit: int | None  # the lower of the two; None: unlimited
    reserved: int  # tokens held by parts admitted (being submitted) or in flight
    in_flight: int  # tokens of parts the provider has and that have not ended
    waiting_parts: int
    waiting_tokens: int
    updated_at: datetime | None


def limit_table(account: str) -> dict[str, int | None] | None:
    """The model -> limit table that applies to ``account`` (None: no limits at all).

    ``ENQUEUED_TOKEN_LIMITS`` maps a model (or model-family prefix, or ``"*"``) to a limit,
    applied to every account, and an account name to a dict of its own such entries,
    which win for that account. Both are laid over :data:`DEFAULT_ENQUEUED_TOKEN_LIMITS`.
    """
    setting = app_settings.ENQUEUED_TOKEN_LIMITS
    if setting is None:
        return None
    if not isinstance(setting, dict):
        raise ConfigurationError(
            f"{SETTING_NAME}['ENQUEUED_TOKEN_LIMITS'] must be a dict or None, "
            f"not {type(setting).__name__}."
        )
    table: dict[str, int | None] = dict(DEFAULT_ENQUEUED_TOKEN_LIMITS)
    table.update({k: v for k, v in setting.items() if not isinstance(v, dict)})
    own = setting.get(account)
    if isinstance(own, dict):
        table.update(own)
    return table


def configured_limit(account: str, model: str) -> int | None:
    """The configured enqueued-token limit of ``model`` for ``account`` (None: unlimited)."""
    table = limit_table(account)
    if table is None:
        return None
    if model in table:
        return table[model]
    prefixes = [key for key in table if key != ANY_MODEL and model.startswith(key)]
    if prefixes:
        return table[max(prefixes, key=len)]
    return table.get(ANY_MODEL)


def effective_limit(configured: int | None, learned: int | None) -> int | None:
    """The limit that applies: the lower of the configured and the learned one."""
    limits = [x for x in (configured, learned) if x is not None]
    return min(limits) if limits else None


def model_limit(account: str, model: str) -> int | None:
    """The effective limit of ``model`` for ``account`` right now (read without a lock)."""
    learned = (
        TokenBudget.objects.filter(account=account, model=model)
        .values_list("learned_limit", flat=True)
        .first()
    )
    return effective_limit(configured_limit(account, model), learned)


def waiting(account: str | None = None, model: str | None = None) -> QuerySet[ProviderBatch]:
    """The parts in line for their model's budget, oldest first (with their jobs)."""
    parts = ProviderBatch.objects.filter(IN_LINE).select_related("job", "job__owner")
    if account is not None:
        parts = parts.filter(account=account)
    if model is not None:
        parts = parts.filter(job__model=model)
    return parts.order_by("waiting_since", "pk")


def overview(account: str | None = None) -> list[ModelQuota]:
    """Every model with a budget row, something reserved or something in line, per account,
    in a constant number of queries."""
    budgets = TokenBudget.objects.all()
    parts = ProviderBatch.objects.filter(HOLDING | IN_LINE)
    if account is not None:
        budgets = budgets.filter(account=account)
        parts = parts.filter(account=account)
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for found in budgets:
        rows[(found.account, found.model)] = {"budget": found}
    sums = (
        parts.values("account", "job__model")
        .order_by()
        .annotate(
            reserved=Sum("reserved_tokens", filter=HOLDING),
            in_flight=Sum("reserved_tokens", filter=HOLDING & Q(state=JobState.SUBMITTED)),
            waiting_parts=Count("pk", filter=IN_LINE),
            waiting_tokens=Sum("estimated_tokens", filter=IN_LINE),
        )
    )
    for sum_row in sums:
        rows.setdefault((sum_row["account"], sum_row["job__model"]), {}).update(sum_row)
    result = []
    for (acct, model), row in sorted(rows.items()):
        budget: TokenBudget | None = row.get("budget")
        learned = budget.learned_limit if budget is not None else None
        limit = configured_limit(acct, model)
        result.append(
            ModelQuota(
                account=acct,
                model=model,
                limit=limit,
                learned_limit=learned,
                effective_limit=effective_limit(limit, learned),
                reserved=int(row.get("reserved") or 0),
                in_flight=int(row.get("in_flight") or 0),
                waiting_parts=int(row.get("waiting_parts") or 0),
                waiting_tokens=int(row.get("waiting_tokens") or 0),
                updated_at=budget.updated_at if budget is not None else None,
            )
        )
    return result


def reset_learned_limit(account: str, model: str) -> None:
    """Forget what the provider taught about ``model`` (back to the configured limit), and
    let the line move. Recorded as a quota event."""
    from .services import quota as quota_services

    quota_services.reset_learned_limit(account, model)
