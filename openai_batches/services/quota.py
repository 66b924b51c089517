"""Quota: each part reserves its token estimate in its model's budget before anything of
it is uploaded; parts that do not fit wait in line; the line moves as batches end; the
budget learns from the provider's ``token_limit_exceeded``.

Every change to a budget happens under the lock of its :class:`TokenBudget` row, so all
workers on all machines see one budget. What a budget has reserved is the sum of its
parts' ``reserved_tokens`` (only ever written under that lock), so it cannot drift: a part
that ended, was refused, cancelled or deleted simply stops counting, and the next pass over
the budget (:func:`admit_waiting`) zeroes what it held.

Lock order, to stay free of deadlocks with the rest of the services: budget row, then job
rows, then part rows. Nothing takes a budget lock while holding a job's row lock: the
submitter asks for room holding only its lease, and the poller settles budgets after its
own transaction has committed.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Max, Q, QuerySet, Sum
from django.utils import timezone

from .. import quota
from ..models import (
    BatchJob,
    BatchReason,
    BatchStatus,
    ItemState,
    JobState,
    ProviderBatch,
    QuotaEvent,
    QuotaEventKind,
    RequestItem,
    TokenBudget,
)
from ._base import _OPEN_STATES, _status_signal, logger
from .parts import _plan

#: The most a budget's reservations are scaled up by when the provider counted more input
#: tokens than were estimated (see :func:`_calibration`).
MAX_CALIBRATION = 2.0

#: The error code of a batch (or a create) refused for the enqueued-token limit.
TOKEN_LIMIT_CODE = "token_limit_exceeded"  # noqa: S105 (an error code, not a secret)

HOLDING = quota.HOLDING
IN_LINE = quota.IN_LINE


def _parts(account: str, model: str) -> QuerySet[ProviderBatch]:
    return ProviderBatch.objects.filter(account=account, job__model=model)


def _locked_budget(account: str, model: str) -> TokenBudget:
    """The budget row of ``model`` for ``account``, created if needed, locked (in a
    transaction)."""
    try:
        with transaction.atomic():
            TokenBudget.objects.get_or_create(account=account, model=model)
    except IntegrityError:
        pass  # created by another worker at the same moment
    return TokenBudget.objects.select_for_update().get(account=account, model=model)


def _calibration(budget: TokenBudget) -> float:
    """How much more than the estimate the provider counted on this model's ended batches
    (at least 1: a reservation is never below the estimate; at most MAX_CALIBRATION)."""
    if budget.estimated_tokens_seen <= 0 or budget.input_tokens_seen <= 0:
        return 1.0
    return min(max(budget.input_tokens_seen / budget.estimated_tokens_seen, 1.0), MAX_CALIBRATION)


def reservation(budget: TokenBudget, estimate: int) -> int:
    """The tokens a part with ``estimate`` reserves in ``budget``."""
    return math.ceil(estimate * _calibration(budget))


def in_flight(account: str, model: str, *, exclude: int | None = None) -> int:
    """Tokens reserved by ``model``'s parts the provider has and that have not ended."""
    parts = _parts(account, model).filter(HOLDING, state=JobState.SUBMITTED)
    if exclude is not None:
        parts = parts.exclude(pk=exclude)
    return int(parts.aggregate(n=Sum("reserved_tokens"))["n"] or 0)


def _settle_budget(budget: TokenBudget) -> None:
    """Under the budget's lock: free what ended parts held, and learn from the provider's
    usage how far off the estimates were (the reconciliation)."""
    parts = _parts(budget.account, budget.model).filter(reserved_tokens__gt=0).exclude(HOLDING)
    ended = list(parts.values_list("pk", "provider_status", "estimated_tokens", "input_tokens"))
    if not ended:
        return
    for _pk, status, estimated, used in ended:
        if status == BatchStatus.COMPLETED and used > 0 and estimated > 0:
            budget.estimated_tokens_seen += estimated
            budget.input_tokens_seen += used
    ProviderBatch.objects.filter(pk__in=[row[0] for row in ended]).update(reserved_tokens=0)
    budget.save()


def _fair_order(
    line: list[dict[str, Any]], last_served: dict[Any, datetime]
) -> list[dict[str, Any]]:
    """The line in the order it is served: owners take turns (round robin, the owner
    served longest ago, or never, first; then the one waiting longest), each owner's parts
    oldest first (a job's in part order). ``last_served`` maps an owner to when a part of
    theirs was last admitted to this budget: the turns go on from one pass to the next."""
    by_owner: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for row in sorted(line, key=lambda r: (r["waiting_since"], r["job_id"], r["part"])):
        by_owner[row["job__owner_id"]].append(row)
    never = datetime.min.replace(tzinfo=UTC)
    queues = sorted(
        by_owner.values(),
        key=lambda q: (last_served.get(q[0]["job__owner_id"], never), q[0]["waiting_since"]),
    )
    ordered: list[dict[str, Any]] = []
    turn = 0
    while queues:
        for queue in queues:
            if turn < len(queue):
                ordered.append(queue[turn])
        turn += 1
        queues = [q for q in queues if turn < len(q)]
    return ordered


def _admit_line(budget: TokenBudget, *, submitting: int | None = None) -> set[int]:
    """Under the budget's lock: admit parts from the line while they fit; returns their pks.

    Serving stops at the first part that does not fit, so a large part is not overtaken
    forever by smaller ones. When nothing is reserved the head is admitted whatever its
    size: the limit may be set (or learned) too low, and the provider has the last word.
    Jobs whose parts are admitted move from ``waiting_quota`` to ``submit_requested`` and
    get a submit enqueued; ``submitting`` is the job whose submitter is asking (it holds
    the lease and goes on by itself).
    """
    from .. import jobs

    _settle_budget(budget)
    parts = _parts(budget.account, budget.model)
    limit = quota.effective_limit(
        quota.configured_limit(budget.account, budget.model), budget.learned_limit
    )
    reserved = int(parts.filter(HOLDING).aggregate(n=Sum("reserved_tokens"))["n"] or 0)
    line: list[dict[str, Any]] = [
        dict(row)
        for row in parts.filter(IN_LINE).values(
            "pk", "job_id", "job__owner_id", "part", "estimated_tokens", "waiting_since"
        )
    ]
    owners = {row["job__owner_id"] for row in line}
    served = (
        parts.filter(admitted_at__isnull=False, job__owner_id__in=[o for o in owners if o])
        .values("job__owner_id")
        .order_by()
        .annotate(last=Max("admitted_at"))
    )
    last_served: dict[Any, datetime] = {row["job__owner_id"]: row["last"] for row in served}
    if None in owners:
        ownerless = parts.filter(admitted_at__isnull=False, job__owner__isnull=True)
        last = ownerless.aggregate(last=Max("admitted_at"))["last"]
        if last is not None:
            last_served[None] = last
    chosen: list[tuple[dict[str, Any], int]] = []
    for row in _fair_order(line, last_served):
        need = reservation(budget, row["estimated_tokens"])
        if limit is not None and reserved + need > limit and (reserved or chosen):
            break
        reserved += need
        chosen.append((row, need))
    if not chosen:
        return set()
    now = timezone.now()
    job_ids = sorted({row["job_id"] for row, _ in chosen} - {submitting})
    # Lock order: budget, jobs, parts (see the module docstring).
    waiting_jobs = list(
        BatchJob.objects.select_for_update()
        .filter(pk__in=job_ids, state=JobState.WAITING_QUOTA)
        .order_by("pk")
    )
    for row, need in chosen:
        ProviderBatch.objects.filter(pk=row["pk"]).update(
            admitted_at=now, waiting_since=None, reserved_tokens=need
        )
    for job in waiting_jobs:
        old = (job.state, job.provider_status)
        job.state = JobState.SUBMIT_REQUESTED
        job.save(update_fields=["state", "updated_at"])
        _status_signal(job, *old)
        jobs.enqueue_submit(job.pk)
    return {row["pk"] for row, _ in chosen}


def admit(job: BatchJob, part: ProviderBatch) -> bool:
    """Whether ``part`` may be uploaded now: True when it holds room in its model's budget
    (reserving it now if it fits and nothing is ahead of it in line), False when it must
    wait. Called by the submitter, holding the job's lease and no row lock."""
    if part.admitted_at is not None:
        return True
    with transaction.atomic():
        budget = _locked_budget(job.account, job.model)
        current = ProviderBatch.objects.filter(pk=part.pk).values("admitted_at", "waiting_since")
        found = current.first()
        if found is None:
            return False
        if found["admitted_at"] is None:
            if found["waiting_since"] is None:
                ProviderBatch.objects.filter(pk=part.pk).update(waiting_since=timezone.now())
            _admit_line(budget, submitting=job.pk)
    part.refresh_from_db(fields=["admitted_at", "waiting_since", "reserved_tokens"])
    return part.admitted_at is not None


def admit_waiting(account: str | None = None, model: str | None = None) -> int:
    """Move the line: free what ended batches held and admit waiting parts that now fit,
    budget by budget. ``sync_batches`` and the RQ jobs call it; returns how many parts
    were admitted."""
    parts = ProviderBatch.objects.filter(IN_LINE | (Q(reserved_tokens__gt=0) & ~HOLDING))
    if account is not None:
        parts = parts.filter(account=account)
    if model is not None:
        parts = parts.filter(job__model=model)
    pairs = sorted(set(parts.values_list("account", "job__model").order_by()))
    admitted = 0
    for acct, name in pairs:
        try:
            with transaction.atomic():
                admitted += len(_admit_line(_locked_budget(acct, name)))
        except Exception:
            # One budget's trouble must not stop the others: the next pass tries again.
            logger.exception("moving the line of %s (%s) failed", name, acct)
    return admitted


def settle_after(parts: Iterable[ProviderBatch]) -> None:
    """After a poll committed: move the lines of the budgets of ``parts`` that ended."""
    for acct, name in sorted({(p.account, p.job.model) for p in parts}):
        admit_waiting(acct, name)


def learn(
    job: BatchJob, part: ProviderBatch | None, limit: int, in_flight_tokens: int, message: str
) -> None:
    """Record that the provider refused a batch of ``job`` (``part``, when it is kept) for
    the enqueued-token limit, lower the model's learned limit to ``limit`` (never raise
    it), and move the line."""
    with transaction.atomic():
        budget = _locked_budget(job.account, job.model)
        before = quota.effective_limit(
            quota.configured_limit(job.account, job.model), budget.learned_limit
        )
        after = limit if before is None else min(before, limit)
        QuotaEvent.objects.create(
            account=job.account,
            model=job.model,
            kind=QuotaEventKind.REFUSED,
            job=job,
            batch=part,
            limit_before=before,
            limit_after=after,
            in_flight=in_flight_tokens,
            message=message[:4000],
        )
        if budget.learned_limit is None or after < budget.learned_limit:
            budget.learned_limit = after
            budget.learned_at = timezone.now()
            budget.save()
            QuotaEvent.objects.create(
                account=job.account,
                model=job.model,
                kind=QuotaEventKind.LEARNED,
                job=job,
                batch=part,
                limit_before=before,
                limit_after=after,
                in_flight=in_flight_tokens,
                message=f"The enqueued-token limit of {job.model} is now {after:,} tokens.",
            )
            logger.warning(
                "%s (%s): enqueued-token limit lowered to %s after token_limit_exceeded",
                job.model,
                job.account,
                after,
            )
        _admit_line(budget)


def refused_for_quota(part: ProviderBatch) -> bool:
    """Whether the provider failed ``part``'s batch for the enqueued-token limit alone."""
    if part.provider_status != BatchStatus.FAILED or not part.provider_errors:
        return False
    codes = {e.get("code") for e in part.provider_errors if isinstance(e, dict)}
    return codes == {TOKEN_LIMIT_CODE}


def requeue(job: BatchJob, part: ProviderBatch, limit: int, *, sent: bool) -> list[ProviderBatch]:
    """Under the job's row lock: put the requests of ``part``, which the provider refused
    for the enqueued-token limit, back in line in new parts that fit ``limit``.

    Nothing of the part ran (a batch refused this way fails at validation), so its requests
    go back without an attempt and are sent once, later. A batch the provider created
    (``sent``) stays as the record of the refusal; a part refused at create never reached
    the provider and is dropped. The job's other parts not admitted yet that no longer fit
    are cut again too. The new parts keep the refused part's place in line.
    """
    now = timezone.now()
    RequestItem.objects.filter(batch=part, state__in=_OPEN_STATES).update(
        state=ItemState.PENDING, batch=None
    )
    if sent:
        part.state = JobState.FINISHED
        part.ingested_at = now
        part.last_error = (
            f"{TOKEN_LIMIT_CODE}: the provider's enqueued-token limit was reached; "
            f"its {part.item_count} request(s) went back in line (nothing ran)."
        )
        part.save()
    else:
        part.delete()
    too_big = job.batches.planned().filter(
        admitted_at=None, provider_batch_id="", input_file_id="", estimated_tokens__gt=limit
    )
    RequestItem.objects.filter(batch__in=too_big.values("pk"), state=ItemState.PENDING).update(
        batch=None
    )
    too_big.delete()
    parts = _plan(job, BatchReason.QUOTA, max_tokens=limit)
    ProviderBatch.objects.filter(pk__in=[p.pk for p in parts]).update(waiting_since=part.created_at)
    return parts


def learned_limit_after_refusal(part: ProviderBatch, in_flight_tokens: int) -> int:
    """The limit to learn when ``part`` was refused while ``in_flight_tokens`` were at the
    provider: what was in flight (it fitted, the part did not), or, when nothing else was
    in flight, half the part (it alone was too big: it is cut into smaller parts)."""
    if in_flight_tokens > 0:
        return in_flight_tokens
    return max(1, part.estimated_tokens // 2)


def reset_learned_limit(account: str, model: str) -> None:
    """Forget the learned limit of ``model`` for ``account`` (the configured one applies
    again), record it, and move the line."""
    with transaction.atomic():
        budget = _locked_budget(account, model)
        before = budget.learned_limit
        budget.learned_limit = None
        budget.learned_at = None
        budget.save()
        QuotaEvent.objects.create(
            account=account,
            model=model,
            kind=QuotaEventKind.RESET,
            limit_before=before,
            limit_after=quota.configured_limit(account, model),
            in_flight=in_flight(account, model),
            message="The learned limit was reset by an operator.",
        )
        _admit_line(budget)
