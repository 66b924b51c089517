"""Quota-aware submission: estimates stored, budgets shared by every worker, the line of
waiting parts, learning from ``token_limit_exceeded``.

Everything that involves the provider runs against the emulator over HTTP through the
real services. The emulator's own count of enqueued tokens (its peak per model, in
``GET /_emulator/state``) is the judge of whether a budget was ever exceeded.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from openai_batches import estimate, quota, services
from openai_batches.checks import check_quota
from openai_batches.emulator import responses
from openai_batches.models import (
    BatchJob,
    BatchStatus,
    ItemState,
    JobState,
    QuotaEvent,
    QuotaEventKind,
    RequestAttempt,
    TokenBudget,
)
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


# -- helpers over the emulator ------------------------------------------------------------

#: The emulator's own token count as the estimator: reservations then equal what the
#: emulator enqueues, so its peak can be compared with the budget exactly.
EMULATOR_COUNT = "openai_batches.emulator.responses.estimate_input_tokens"


@pytest.fixture
def slow_emu() -> Iterator[EmulatorHandle]:
    """Batches that stay in flight until the test moves the (manual) clock: 30 s to
    validate, then at least two minutes running."""
    with running_emulator(timing="realistic", clock="manual") as handle:
        yield handle


def chat(n: int, prefix: str, words: int = 20) -> list[dict[str, Any]]:
    text = " ".join(["budget"] * words)
    return [
        {
            "custom_id": f"{prefix}{i}",
            "body": {"model": MODEL, "messages": [{"role": "user", "content": f"{i} {text}"}]},
        }
        for i in range(n)
    ]


def new_job(items: list[dict[str, Any]], owner: Any = None) -> BatchJob:
    job = services.create_job(endpoint="/v1/chat/completions", items=items, owner=owner)
    services.request_submit(job)
    return services.submit(job)


def finish_running(emu: EmulatorHandle) -> None:
    """Let every batch at the emulator run to its end, and poll every job that has one."""
    emu.emulator.advance(7 * 3600)
    for job in BatchJob.objects.filter(batches__state=JobState.SUBMITTED).distinct():
        services.refresh(job)


def submit_requested() -> list[BatchJob]:
    """Submit every job whose submission is requested (what RQ or sync_batches would do)."""
    done = []
    for job in BatchJob.objects.filter(state=JobState.SUBMIT_REQUESTED).order_by("pk"):
        done.append(services.submit(job))
    return done


def peak(emu: EmulatorHandle) -> int:
    return int(emu.emulator.state()["peak_enqueued_tokens"].get(MODEL, 0))


# -- estimates ----------------------------------------------------------------------------


def test_estimates_are_stored_per_item_and_summed_per_part_and_job(settings: Any) -> None:
    items = chat(7, "e-", words=5) + chat(3, "f-", words=200)
    job = services.create_job(endpoint="/v1/chat/completions", items=items)
    stored = dict(job.items.values_list("custom_id", "estimated_tokens"))
    for item in items:
        expected = estimate.estimate_input_tokens("/v1/chat/completions", item["body"])
        assert stored[item["custom_id"]] == expected > 0
    job.refresh_from_db()
    assert job.estimated_tokens == sum(stored.values())
    # The configured estimator is the one used.
    configure(settings, TOKEN_ESTIMATOR=EMULATOR_COUNT)
    other = services.create_job(endpoint="/v1/chat/completions", items=items)
    assert other.estimated_tokens == sum(
        responses.estimate_input_tokens("/v1/chat/completions", i["body"]) for i in items
    )
    services.request_submit(job)
    assert sum(job.batches.values_list("estimated_tokens", flat=True)) == job.estimated_tokens


# -- held back, released as batches finish ------------------------------------------------


def test_jobs_wait_for_room_and_are_released_as_batches_finish(
    slow_emu: EmulatorHandle, settings: Any
) -> None:
    configure(settings, TOKEN_ESTIMATOR=EMULATOR_COUNT)
    first_items, second_items = chat(20, "a-"), chat(20, "b-")
    need = sum(
        responses.estimate_input_tokens("/v1/chat/completions", i["body"]) for i in first_items
    )
    limit = need + need // 2  # one job fits, two do not
    configure(settings, ENQUEUED_TOKEN_LIMITS={MODEL: limit})

    first = new_job(first_items)
    assert first.state == JobState.SUBMITTED
    second = new_job(second_items)
    assert second.state == JobState.WAITING_QUOTA
    assert len(slow_emu.emulator.list_batches()) == 1  # nothing of the second was sent
    [row] = quota.overview()
    assert (row.limit, row.effective_limit, row.reserved, row.in_flight) == (
        limit,
        limit,
        need,
        need,
    )
    assert (row.waiting_parts, row.waiting_tokens) == (1, second.estimated_tokens)
    assert [p.job_id for p in quota.waiting(model=MODEL)] == [second.pk]

    # A poll that sees nothing end moves nothing.
    slow_emu.emulator.advance(60)
    services.refresh(first)
    assert BatchJob.objects.get(pk=second.pk).state == JobState.WAITING_QUOTA

    finish_running(slow_emu)  # the first ends; the poll that sees it moves the line
    second.refresh_from_db()
    assert second.state == JobState.SUBMIT_REQUESTED
    [second] = submit_requested()
    assert second.state == JobState.SUBMITTED
    finish_running(slow_emu)
    for job in (first, second):
        job.refresh_from_db()
        assert job.state == JobState.FINISHED
        assert job.items.filter(state=ItemState.SUCCEEDED).count() == 20
    assert 0 < peak(slow_emu) <= limit
    [row] = quota.overview()
    assert (row.reserved, row.in_flight, row.waiting_parts) == (0, 0, 0)
    # The provider counted what the estimator said: reconciled, nothing to scale.
    budget = TokenBudget.objects.get()
    assert budget.input_tokens_seen == budget.estimated_tokens_seen == 2 * need


def test_a_job_larger_than_the_budget_is_split_into_parts_that_fit(
    slow_emu: EmulatorHandle, settings: Any
) -> None:
    configure(settings, TOKEN_ESTIMATOR=EMULATOR_COUNT)
    items = chat(50, "big-")
    total = sum(responses.estimate_input_tokens("/v1/chat/completions", i["body"]) for i in items)
    limit = total // 3 + 5
    configure(settings, ENQUEUED_TOKEN_LIMITS={MODEL: limit})
    job = new_job(items)
    parts = list(job.batches.order_by("part"))
    assert len(parts) >= 3
    assert all(0 < p.estimated_tokens <= limit for p in parts)
    assert sum(p.estimated_tokens for p in parts) == total
    assert sum(p.item_count for p in parts) == 50
    # One part at a time fits: the first is sent, the rest wait in line.
    assert job.state == JobState.WAITING_QUOTA
    assert [p.state for p in job.batches.order_by("part")][:2] == [
        JobState.SUBMITTED,
        JobState.SUBMIT_REQUESTED,
    ]
    for _ in range(len(parts) + 2):
        finish_running(slow_emu)
        submit_requested()
    job.refresh_from_db()
    assert job.state == JobState.FINISHED
    assert job.items.filter(state=ItemState.SUCCEEDED).count() == 50
    assert 0 < peak(slow_emu) <= limit
    assert len(slow_emu.emulator.list_batches()) == len(parts)


# -- learning -----------------------------------------------------------------------------


def test_token_limit_exceeded_lowers_the_budget_and_the_requests_are_sent_once_later(
    slow_emu: EmulatorHandle, settings: Any
) -> None:
    configure(settings, TOKEN_ESTIMATOR=EMULATOR_COUNT, ENQUEUED_TOKEN_LIMITS={MODEL: None})
    first_items, second_items = chat(20, "a-"), chat(16, "b-")
    need = sum(
        responses.estimate_input_tokens("/v1/chat/completions", i["body"]) for i in first_items
    )
    slow_emu.emulator.set_token_budget(MODEL, need + need // 2)  # the provider's real limit

    first = new_job(first_items)
    assert first.state == JobState.SUBMITTED
    slow_emu.emulator.advance(31)  # the first is running: its tokens are enqueued
    second = new_job(second_items)  # no limit known here: sent, and refused
    assert second.state == JobState.SUBMITTED
    slow_emu.emulator.advance(31)
    second = services.refresh(second)
    refused = second.batches.get(part=1)
    assert refused.provider_status == BatchStatus.FAILED
    assert "token_limit_exceeded" in refused.last_error
    # The job did not fail: its requests wait in line, and the limit learned is what was
    # in flight when the provider refused.
    assert second.state == JobState.WAITING_QUOTA
    assert second.items.filter(state=ItemState.PENDING, batch__isnull=False).count() == 16
    assert not RequestAttempt.objects.filter(item__job=second).exists()
    budget = TokenBudget.objects.get()
    assert budget.learned_limit == need
    [row] = quota.overview()
    assert (row.limit, row.learned_limit, row.effective_limit) == (None, need, need)
    assert row.waiting_parts == 1
    events = list(QuotaEvent.objects.order_by("pk").values_list("kind", "in_flight", "limit_after"))
    assert events == [
        (QuotaEventKind.REFUSED, need, need),
        (QuotaEventKind.LEARNED, need, need),
    ]

    finish_running(slow_emu)  # the first ends: room for the second
    [second] = submit_requested()
    finish_running(slow_emu)
    second.refresh_from_db()
    assert second.state == JobState.FINISHED
    assert second.items.filter(state=ItemState.SUCCEEDED).count() == 16
    # Sent once: the refused batch ran nothing, the one after it ran each request once.
    ran: Counter[str] = Counter()
    for batch in slow_emu.emulator.list_batches():
        if batch["output_file_id"]:
            for line in slow_emu.emulator.file_content(batch["output_file_id"]).splitlines():
                ran[json.loads(line)["custom_id"]] += 1
    assert set(ran.values()) == {1} and len(ran) == 36
    counts = [b["request_counts"]["completed"] for b in slow_emu.emulator.list_batches()]
    assert sorted(counts) == [0, 16, 20]
    assert set(second.items.values_list("attempt_count", flat=True)) == {1}
    assert peak(slow_emu) <= need + need // 2

    # An operator resets what was learned: the configured limit (none) applies again.
    services.reset_learned_limit("default", MODEL)
    [row] = quota.overview()
    assert row.learned_limit is None and row.effective_limit is None


# -- fairness -----------------------------------------------------------------------------


def test_the_line_takes_owners_in_turn_oldest_first(
    slow_emu: EmulatorHandle, settings: Any
) -> None:
    configure(settings, TOKEN_ESTIMATOR=EMULATOR_COUNT)
    one = sum(
        responses.estimate_input_tokens("/v1/chat/completions", i["body"]) for i in chat(5, "x")
    )
    configure(settings, ENQUEUED_TOKEN_LIMITS={MODEL: one + one // 2})  # one job at a time
    alice, bob = user("alice"), user("bob")
    blocker = new_job(chat(5, "z-"))
    assert blocker.state == JobState.SUBMITTED
    a1 = new_job(chat(5, "a1-"), alice)
    a2 = new_job(chat(5, "a2-"), alice)
    a3 = new_job(chat(5, "a3-"), alice)
    b1 = new_job(chat(5, "b1-"), bob)
    assert {j.state for j in (a1, a2, a3, b1)} == {JobState.WAITING_QUOTA}
    assert [p.job_id for p in quota.waiting()] == [a1.pk, a2.pk, a3.pk, b1.pk]
    order = []
    for _ in range(4):
        finish_running(slow_emu)
        admitted = submit_requested()
        assert len(admitted) == 1
        order.append(admitted[0].pk)
    # Alice came first, but Bob does not wait for all of her jobs.
    assert order == [a1.pk, b1.pk, a2.pk, a3.pk]
    assert peak(slow_emu) <= one + one // 2


# -- refused at create (Azure's fail-fast regions) -----------------------------------------


def test_a_create_refused_for_the_token_limit_goes_back_in_line(settings: Any) -> None:
    key = "azure-key-0123456789"
    # Before the emulator's override, so the test's own restore does not keep its URL.
    configure(settings, TOKEN_ESTIMATOR=EMULATOR_COUNT, ENQUEUED_TOKEN_LIMITS={MODEL: None})
    with running_emulator(
        flavor="azure",
        api_key=key,
        flavor_options={"fail_fast": True, "tokens": [key]},
        timing="realistic",
        clock="manual",
    ) as emu:
        first_items = chat(10, "a-")
        need = sum(
            responses.estimate_input_tokens("/v1/chat/completions", i["body"]) for i in first_items
        )
        emu.emulator.set_token_budget(MODEL, need + need // 2)
        first = new_job(first_items)
        assert first.state == JobState.SUBMITTED, first.last_error
        emu.emulator.advance(31)  # the first is running: its tokens are enqueued
        second = new_job(chat(8, "b-"))
        # Refused at create: nothing was created, the upload is deleted, the job waits.
        assert second.state == JobState.WAITING_QUOTA, second.last_error
        assert len(emu.emulator.list_batches()) == 1
        assert TokenBudget.objects.get().learned_limit == need
        assert QuotaEvent.objects.filter(kind=QuotaEventKind.LEARNED, job=second).exists()
        inputs = [f for f in emu.emulator.state()["files"] if f["purpose"] == "batch"]
        assert len(inputs) == 1  # the refused part's upload was deleted
        emu.emulator.advance(7 * 3600)
        services.refresh(first)
        [second] = submit_requested()
        assert second.state == JobState.SUBMITTED
        emu.emulator.advance(7 * 3600)
        second = services.refresh(second)
        assert second.state == JobState.FINISHED
        assert second.items.filter(state=ItemState.SUCCEEDED).count() == 8


# -- checks and the command ----------------------------------------------------------------


def test_the_system_check_names_a_bad_limit(settings: Any) -> None:
    configure(settings, ENQUEUED_TOKEN_LIMITS={"gpt-4o": 0, "*": "lots", "nobody": {"o3": 5}})
    messages = check_quota()
    assert [m.id for m in messages] == [
        "openai_batches.E050",
        "openai_batches.E050",
        "openai_batches.W050",
    ]
    assert "['gpt-4o'] is 0" in messages[0].msg and "['*'] is 'lots'" in messages[1].msg
    assert all(m.hint for m in messages)
    configure(settings, ENQUEUED_TOKEN_LIMITS=[1])
    assert "must be a dict" in check_quota()[0].msg
    configure(settings, ENQUEUED_TOKEN_LIMITS=None)
    assert check_quota() == []
    configure(settings, ENQUEUED_TOKEN_LIMITS={"gpt-4o": 450_000, "default": {"o3": None}})
    assert check_quota() == []


def test_the_command_shows_budgets_resets_and_admits() -> None:
    TokenBudget.objects.create(account="default", model=MODEL, learned_limit=500)
    out = StringIO()
    call_command("token_quota", stdout=out)
    assert "gpt-4o-mini: limit 500 (learned 500)" in out.getvalue()
    assert "1 model budget(s), 0 part(s) waiting" in out.getvalue()
    out = StringIO()
    call_command("token_quota", "--reset", MODEL, "--admit", stdout=out)
    assert "configured limit applies, 2,000,000 tokens" in out.getvalue()
    assert "Admitted 0 waiting part(s)." in out.getvalue()
    assert TokenBudget.objects.get().learned_limit is None
    with pytest.raises(CommandError, match="not a configured account"):
        call_command("token_quota", "--account", "nope")


def test_a_waiting_job_can_be_cancelled_and_leaves_the_line(
    slow_emu: EmulatorHandle, settings: Any
) -> None:
    configure(settings, TOKEN_ESTIMATOR=EMULATOR_COUNT)
    one = sum(
        responses.estimate_input_tokens("/v1/chat/completions", i["body"]) for i in chat(5, "x")
    )
    configure(settings, ENQUEUED_TOKEN_LIMITS={MODEL: one + one // 2})
    blocker = new_job(chat(5, "z-"))
    first, second = new_job(chat(5, "a-")), new_job(chat(5, "b-"))
    assert services.can_delete(first) == (False, "it is waiting for quota; cancel it first")
    assert services.can_cancel(first) == (True, "")
    first = services.cancel(first)
    assert first.state == JobState.CANCELLED
    assert not first.batches.exists()
    assert [p.job_id for p in quota.waiting()] == [second.pk]
    finish_running(slow_emu)
    assert BatchJob.objects.get(pk=blocker.pk).state == JobState.FINISHED
    [admitted] = submit_requested()
    assert admitted.pk == second.pk and admitted.state == JobState.SUBMITTED
    assert len(slow_emu.emulator.list_batches()) == 2  # nothing of the cancelled job was sent


def test_reservations_scale_up_when_the_provider_counted_more_than_estimated() -> None:
    from openai_batches.services.quota import MAX_CALIBRATION, reservation

    budget = TokenBudget(account="default", model=MODEL)
    assert reservation(budget, 100) == 100  # nothing seen yet
    budget.estimated_tokens_seen, budget.input_tokens_seen = 1_000, 1_250
    assert reservation(budget, 100) == 125
    budget.input_tokens_seen = 800  # counted less: never reserve below the estimate
    assert reservation(budget, 100) == 100
    budget.input_tokens_seen = 10_000
    assert reservation(budget, 100) == 100 * MAX_CALIBRATION


def test_the_overview_costs_a_constant_number_of_queries(
    django_assert_num_queries: Any,
) -> None:
    for n in range(5):
        TokenBudget.objects.create(account="default", model=f"model-{n}")
    job = services.create_job(endpoint="/v1/chat/completions", items=chat(3, "q-"))
    services.request_submit(job)
    with django_assert_num_queries(2):
        rows = quota.overview()
    assert len(rows) == 5


def test_sync_batches_and_the_rq_admit_job_move_the_line(
    slow_emu: EmulatorHandle, settings: Any
) -> None:
    from openai_batches import jobs

    configure(settings, TOKEN_ESTIMATOR=EMULATOR_COUNT)
    one = sum(
        responses.estimate_input_tokens("/v1/chat/completions", i["body"]) for i in chat(5, "x")
    )
    configure(settings, ENQUEUED_TOKEN_LIMITS={MODEL: one + one // 2})
    blocker = new_job(chat(5, "z-"))
    waiting = new_job(chat(5, "w-"))
    later = new_job(chat(5, "l-"))
    assert {waiting.state, later.state} == {JobState.WAITING_QUOTA}
    slow_emu.emulator.advance(7 * 3600)
    # One pass sees the blocker end (its room frees, the next in line is admitted); the
    # next pass submits what was admitted.
    report = services.sync()
    assert report.ok, report.errors
    assert BatchJob.objects.get(pk=blocker.pk).state == JobState.FINISHED
    assert BatchJob.objects.get(pk=waiting.pk).state == JobState.SUBMIT_REQUESTED
    report = services.sync()
    assert report.submitted == [waiting.pk]
    assert BatchJob.objects.get(pk=later.pk).state == JobState.WAITING_QUOTA
    # Room that comes from elsewhere (a limit raised): the RQ admit job finds it.
    configure(settings, ENQUEUED_TOKEN_LIMITS={MODEL: 10 * one})
    assert jobs.admit_job(later.pk) == JobState.SUBMIT_REQUESTED
    assert jobs.admit_job(later.pk) == "skipped"  # no longer waiting: the chain ends
