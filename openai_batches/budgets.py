"""Spending limits checked before a job is submitted: per job, and per owner per day and month.

``OPENAI_BATCHES["BUDGETS"]`` sets them in USD (every key optional, ``{}`` sets none)::

    "BUDGETS": {
        "PER_JOB": 20,               # the estimate of one job
        "PER_OWNER_PER_DAY": 50,     # what one owner's jobs cost today
        "PER_OWNER_PER_MONTH": 500,  # ... this calendar month
        "DEFAULT_OUTPUT_TOKENS": 1024,  # output assumed for a request that sets no limit
    }

:func:`refusal` is the one public check; :func:`openai_batches.services.can_submit` calls it,
so the admin's Submit, the API's ``submit`` and ``services.request_submit`` all refuse a job
over budget with the same sentence, before anything is uploaded.

* **This job** is priced from its token estimate (:mod:`openai_batches.estimate`: input
  tokens from the configured estimator, output tokens from each body's limit, else
  ``DEFAULT_OUTPUT_TOKENS``) at the batch prices of ``OPENAI_BATCHES["PRICES"]``.
* **What the owner already spent** in the window (since local midnight, or since the first
  of the month) is the stored usage of their jobs whose results were stored in it, priced
  the same way (one GROUP BY query, as the dashboard counts spend per day), plus the
  estimate of their jobs still in flight, whose usage is not known yet: otherwise twenty
  jobs submitted in a minute would each find the day's spend at zero. Job estimates are
  cached (Django's cache, keyed by the job and its content), so a job in flight is
  estimated once, not at every check.
* A job whose model has no price cannot be checked, so while any budget is set it is
  refused with a sentence saying which price to add (a budget that lets through whatever it
  cannot price would not stop a runaway spend). ``manage.py check`` warns about budgets
  without prices (``openai_batches.W009``) and reports malformed ones (``E009``).
* Jobs without an owner (created by code with ``owner=None``) share one owner's budget.

Two submissions at the same instant by one owner may both pass (the check is not a lock);
budgets stop a runaway, they are not an accounting ledger.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.core.cache import cache
from django.db.models import Q
from django.utils import timezone

from .conf import SETTING_NAME, app_settings
from .dashboard import MOVING_STATES, USAGE_SUMS, model_key, price_table, priced
from .estimate import DEFAULT_OUTPUT_TOKENS, estimate_max_output_tokens, input_token_estimator
from .models import BatchJob, RequestItem
from .results import Usage, token_cost

#: The limits BUDGETS may set, in USD, with the words a refusal names them by.
LIMITS: dict[str, str] = {
    "PER_JOB": "per-job budget",
    "PER_OWNER_PER_DAY": "daily budget",
    "PER_OWNER_PER_MONTH": "monthly budget",
}
#: Every key BUDGETS takes.
BUDGET_KEYS = (*LIMITS, "DEFAULT_OUTPUT_TOKENS")

#: How long a job's token estimate is cached: longer than a batch can run (24 h) and wait.
ESTIMATE_CACHE_SECONDS = 7 * 24 * 3600

#: Bodies read per round trip while estimating (memory stays bounded by it).
CHUNK = 2000
#: Jobs whose items one query reads.
IDS_PER_QUERY = 500


@dataclass(frozen=True)
class JobEstimate:
    """A job's tokens, estimated before it runs, and their cost at batch prices."""

    requests: int
    input_tokens: int
    output_tokens: int
    #: USD; None when the job's model has no price.
    cost: Decimal | None


def budgets() -> Mapping[str, Any]:
    """``BUDGETS`` when it is a dict (a malformed one is reported by check E009), else ``{}``."""
    configured = app_settings.BUDGETS
    return configured if isinstance(configured, Mapping) else {}


def limits() -> dict[str, Decimal]:
    """The limits that are set, as Decimals; malformed values are left out (check E009)."""
    found: dict[str, Decimal] = {}
    for key in LIMITS:
        value = budgets().get(key)
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            continue
        amount = Decimal(str(value))
        if amount.is_finite() and amount >= 0:
            found[key] = amount
    return found


def default_output_tokens() -> int:
    value = budgets().get("DEFAULT_OUTPUT_TOKENS")
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return DEFAULT_OUTPUT_TOKENS


def _cache_key(job: BatchJob) -> str:
    # The content's identity: items are only ever added to a draft, which changes the count
    # and the bytes; the estimator and the output default change what is counted.
    parts = [
        str(job.uuid),
        str(job.item_count),
        str(job.input_bytes),
        str(app_settings.TOKEN_ESTIMATOR),
        str(default_output_tokens()),
    ]
    digest = hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]
    return f"openai_batches:estimate:{digest}"


def _tokens_of(jobs: list[BatchJob]) -> dict[int, tuple[int, int, int]]:
    """(requests, input tokens, output tokens) per job: cached ones, the rest in one query."""
    found: dict[int, tuple[int, int, int]] = {}
    keys = {job.pk: _cache_key(job) for job in jobs}
    cached = cache.get_many(list(keys.values())) if keys else {}
    todo = {}
    for job in jobs:
        hit = cached.get(keys[job.pk])
        if hit is not None:
            found[job.pk] = (int(hit[0]), int(hit[1]), int(hit[2]))
        else:
            todo[job.pk] = job
            found[job.pk] = (0, 0, 0)
    if todo:
        estimate = input_token_estimator()
        default = default_output_tokens()
        sums = {pk: [0, 0, 0] for pk in todo}
        pks = list(todo)
        # Ids in slices: SQLite caps the parameters of one query. One query per slice of
        # jobs, so hundreds of uncached jobs in flight still take a query or two.
        bodies = (
            row
            for start in range(0, len(pks), IDS_PER_QUERY)
            for row in RequestItem.objects.filter(job__in=pks[start : start + IDS_PER_QUERY])
            .order_by()
            .values_list("job_id", "body", "estimated_tokens")
            .iterator(chunk_size=CHUNK)
        )
        for job_id, body, stored in bodies:
            if not isinstance(body, Mapping):
                continue
            endpoint = todo[job_id].endpoint
            row = sums[job_id]
            row[0] += 1
            # The estimate stored when the item was added is the one the enqueued-token
            # budget reserves: the price shown must count the same tokens. Rows added before
            # estimates were stored hold 0 and are estimated now.
            row[1] += stored or int(estimate(endpoint, body))
            row[2] += estimate_max_output_tokens(endpoint, body, default)
        cache.set_many(
            {keys[pk]: tuple(row) for pk, row in sums.items()}, timeout=ESTIMATE_CACHE_SECONDS
        )
        found.update({pk: (row[0], row[1], row[2]) for pk, row in sums.items()})
    return found


def _priced(job: BatchJob, tokens: tuple[int, int, int]) -> JobEstimate:
    requests, inp, out = tokens
    prices = price_table().get(job.model or job.provider_model)
    cost = token_cost(prices, Usage(input_tokens=inp, output_tokens=out))
    return JobEstimate(requests=requests, input_tokens=inp, output_tokens=out, cost=cost)


def estimate_job(job: BatchJob) -> JobEstimate:
    """The job's tokens and cost before it runs (one query, or none when cached)."""
    return _priced(job, _tokens_of([job])[job.pk])


def unpriced_note(job: BatchJob, estimate: JobEstimate) -> str:
    """Why ``estimate`` has no cost ("no price for gpt-x"), or ``""`` when it has one: the
    words the admin and the API show in place of a cost."""
    if estimate.cost is not None:
        return ""
    model = job.model or job.provider_model
    return f"no price for {model}" if model else "no requests yet"


@dataclass(frozen=True)
class Spent:
    """What an owner's other jobs cost in a window."""

    #: Stored usage of the jobs whose results were stored in the window, at batch prices.
    actual: Decimal
    #: Estimates of the jobs still in flight (their usage is not known yet).
    in_flight: Decimal
    in_flight_jobs: int

    @property
    def total(self) -> Decimal:
        return self.actual + self.in_flight


def _owned_by(owner_id: int | None) -> Q:
    return Q(owner__isnull=True) if owner_id is None else Q(owner_id=owner_id)


def spent(owner_id: int | None, since: datetime, exclude: BatchJob | None = None) -> Spent:
    """What ``owner_id``'s jobs (``None``: jobs without an owner) cost since ``since``.

    Three queries whatever the number of jobs: the priced usage grouped by model, the jobs
    in flight, and the bodies of those whose estimate is not cached yet (one more per 500
    such jobs).
    """
    jobs = BatchJob.objects.filter(_owned_by(owner_id))
    if exclude is not None:
        jobs = jobs.exclude(pk=exclude.pk)
    prices = price_table()
    actual = Decimal(0)
    rows = (
        jobs.filter(ingested_at__gte=since)
        .annotate(model_key=model_key())
        .order_by()
        .values("model_key")
        .annotate(**USAGE_SUMS)
    )
    for row in rows:
        actual += priced(row, prices).batch_cost
    flying = list(
        jobs.filter(state__in=MOVING_STATES, ingested_at__isnull=True).only(
            "pk", "uuid", "endpoint", "model", "provider_model", "item_count", "input_bytes"
        )
    )
    tokens = _tokens_of(flying)
    in_flight = sum(
        ((_priced(job, tokens[job.pk]).cost or Decimal(0)) for job in flying), Decimal(0)
    )
    return Spent(actual=actual, in_flight=in_flight, in_flight_jobs=len(flying))


def usd(amount: Decimal) -> str:
    """Dollars as people read them: in cents, with four decimals for what is less than $1 and
    not a whole number of cents (a job may cost $0.0042)."""
    if amount >= 1 or amount == amount.quantize(Decimal("0.01")):
        return f"${amount:,.2f}"
    return f"${amount:.4f}"


def _owner_name(job: BatchJob) -> str:
    if job.owner_id is None:
        return "jobs without an owner"
    owner = job.owner
    return str(owner.get_username()) if owner is not None else f"user {job.owner_id}"


def _windows(now: datetime) -> dict[str, tuple[datetime, str]]:
    today = timezone.localdate(now)
    midnight = timezone.make_aware(datetime.combine(today, datetime.min.time()))
    first = timezone.make_aware(datetime.combine(today.replace(day=1), datetime.min.time()))
    return {
        "PER_OWNER_PER_DAY": (midnight, "today"),
        "PER_OWNER_PER_MONTH": (first, "this month"),
    }


def refusal(job: BatchJob, now: datetime | None = None) -> str:
    """Why ``job`` may not be submitted under ``BUDGETS``, or ``""`` when it fits.

    No query at all when no budget is set. The sentence names the budget, its limit, what
    is spent and the job's estimate, e.g. "it would exceed the daily budget of $5.00 for
    alice: $4.20 spent today, this job is estimated at $1.10".
    """
    set_limits = limits()
    if not set_limits:
        return ""
    estimate = estimate_job(job)
    if estimate.cost is None:
        model = job.model or job.provider_model
        first = next(iter(set_limits))
        return (
            f"it cannot be checked against the {LIMITS[first]} of {usd(set_limits[first])}: "
            f"the model {model!r} has no price in {SETTING_NAME}['PRICES']"
        )
    if "PER_JOB" in set_limits and estimate.cost > set_limits["PER_JOB"]:
        return (
            f"it would exceed the per-job budget of {usd(set_limits['PER_JOB'])}: this job is "
            f"estimated at {usd(estimate.cost)} ({estimate.input_tokens:,} input tokens and up "
            f"to {estimate.output_tokens:,} output tokens)"
        )
    for key, (since, window) in _windows(now or timezone.now()).items():
        if key not in set_limits:
            continue
        so_far = spent(job.owner_id, since, exclude=job)
        if so_far.total + estimate.cost <= set_limits[key]:
            continue
        flying = ""
        if so_far.in_flight_jobs:
            flying = (
                f" (of which {usd(so_far.in_flight)} estimated for {so_far.in_flight_jobs} "
                f"job{'s' if so_far.in_flight_jobs != 1 else ''} in flight)"
            )
        return (
            f"it would exceed the {LIMITS[key]} of {usd(set_limits[key])} for "
            f"{_owner_name(job)}: {usd(so_far.total)} spent {window}{flying}, this job is "
            f"estimated at {usd(estimate.cost)}"
        )
    return ""


__all__ = [
    "BUDGET_KEYS",
    "LIMITS",
    "JobEstimate",
    "Spent",
    "budgets",
    "estimate_job",
    "limits",
    "refusal",
    "spent",
    "unpriced_note",
    "usd",
]
