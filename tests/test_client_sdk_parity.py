"""Our client's retry decisions side by side with the official ``openai`` SDK's.

Both clients talk to the same emulator over HTTP; each case scripts the answer (a status
fault with or without ``retry-after`` / ``x-should-retry``, a dropped connection) on every
attempt, and the test records how many attempts each client made, the waits it chose and
the error it ended with. Neither client really sleeps: ours is given a recording ``sleep``,
the SDK a subclass that records ``_calculate_retry_timeout`` and waits 0.

Where the issue says ours should match the SDK (``x-should-retry``, a ``retry-after`` over
the cap, ``retry-after: 0``, 403, a moderation without ``model``), it must; ours differs on
purpose in two ways: a ``retry-after`` over the cap is kept on the error so the caller can
reschedule, and a list cursor that does not advance (the emulator's ``stuck_cursor``
fault) stops ours with an error where the SDK's auto-pager loops for ever. The table in
``docs/reference/client.md`` names the test of each row.
"""

from __future__ import annotations

import inspect
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest

from openai_batches.client import MAX_RETRY_AFTER, OpenAIClient, PermissionDeniedError
from openai_batches.conf import Account
from openai_batches.emulator import Emulator, EmulatorServer
from openai_batches.exceptions import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    RateLimitError,
)
from openai_batches.jsonl import ItemValidator

KEY = "sk-proj-PARITYTESTKEY0123456789abcdef"
RETRIES = 2
#: More faults than any client makes attempts, so every attempt meets one.
FAULTS = 10


class RecordingOpenAI(openai.OpenAI):
    """The official client, recording the waits it would sleep and sleeping none."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.delays: list[float] = []

    def _calculate_retry_timeout(self, *args: Any, **kwargs: Any) -> float:
        delay = super()._calculate_retry_timeout(*args, **kwargs)
        self.delays.append(delay)
        return 0.0


@dataclass
class Outcome:
    attempts: int
    error: str
    delays: list[float]


@dataclass(frozen=True)
class Case:
    kind: str
    options: dict[str, Any]
    sdk_attempts: int
    sdk_error: type[Exception]
    ours_attempts: int
    ours_error: type[Exception]


CASES = {
    "429 with retry-after 0.25": Case(
        "status",
        {"status": 429, "retry_after": 0.25},
        3,
        openai.RateLimitError,
        3,
        RateLimitError,
    ),
    "429 without retry-after": Case(
        "status", {"status": 429, "retry_after": -1}, 3, openai.RateLimitError, 3, RateLimitError
    ),
    "429 retry-after 0": Case(
        "status", {"status": 429, "retry_after": 0}, 3, openai.RateLimitError, 3, RateLimitError
    ),
    "429 retry-after over the cap": Case(
        "status",
        {"status": 429, "retry_after": MAX_RETRY_AFTER + 180},
        1,
        openai.RateLimitError,
        1,
        RateLimitError,
    ),
    "500 x-should-retry false": Case(
        "status",
        {"status": 500, "should_retry": False},
        1,
        openai.InternalServerError,
        1,
        APIError,
    ),
    "400 x-should-retry true": Case(
        "status",
        {"status": 400, "should_retry": True},
        3,
        openai.BadRequestError,
        3,
        APIError,
    ),
    "401": Case("status", {"status": 401}, 1, openai.AuthenticationError, 1, AuthenticationError),
    "403": Case(
        "status", {"status": 403}, 1, openai.PermissionDeniedError, 1, PermissionDeniedError
    ),
    "409": Case("status", {"status": 409}, 3, openai.ConflictError, 3, APIError),
    "503": Case("status", {"status": 503}, 3, openai.InternalServerError, 3, APIError),
    "connection drop": Case("drop", {}, 3, openai.APIConnectionError, 3, APIConnectionError),
}


@pytest.fixture
def emu() -> Iterator[Emulator]:
    emulator = Emulator(timing="instant", api_key=KEY)
    yield emulator
    emulator.close()


@pytest.fixture
def server(emu: Emulator) -> Iterator[EmulatorServer]:
    with EmulatorServer(emu, port=0) as srv:
        yield srv


def attempts_made(emu: Emulator) -> int:
    left = emu.state()["faults"]
    return FAULTS - (left[0]["count"] if left else 0)


def run_sdk(emu: Emulator, server: EmulatorServer, case: Case) -> tuple[Outcome, Exception]:
    emu.inject_fault("GET", "/v1/batches", case.kind, count=FAULTS, **case.options)
    sdk = RecordingOpenAI(base_url=server.base_url, api_key=KEY, max_retries=RETRIES, timeout=5)
    try:
        with pytest.raises(openai.OpenAIError) as info:
            sdk.batches.list()
    finally:
        sdk.close()
    outcome = Outcome(attempts_made(emu), type(info.value).__name__, sdk.delays)
    emu.clear_faults()
    return outcome, info.value


def run_ours(emu: Emulator, server: EmulatorServer, case: Case) -> tuple[Outcome, Exception]:
    emu.inject_fault("GET", "/v1/batches", case.kind, count=FAULTS, **case.options)
    delays: list[float] = []
    account = Account("default", server.base_url, KEY, timeout=5.0)
    with OpenAIClient(account, max_retries=RETRIES, sleep=delays.append) as ours:  # noqa: SIM117
        with pytest.raises(APIError if case.kind == "status" else APIConnectionError) as info:
            ours.list_batches()
    outcome = Outcome(attempts_made(emu), type(info.value).__name__, delays)
    emu.clear_faults()
    return outcome, info.value


@pytest.mark.parametrize("name", list(CASES))
def test_retry_decisions_match_the_official_sdk(
    emu: Emulator, server: EmulatorServer, name: str
) -> None:
    case = CASES[name]
    sdk, sdk_error = run_sdk(emu, server, case)
    ours, our_error = run_ours(emu, server, case)
    print(
        f"| {name} | {sdk.attempts} {sdk.error} {sdk.delays} | {ours.attempts} {ours.error} {ours.delays} |"
    )
    assert (sdk.attempts, type(sdk_error)) == (case.sdk_attempts, case.sdk_error)
    assert ours.attempts == case.ours_attempts
    assert type(our_error) is case.ours_error
    assert ours.attempts == sdk.attempts  # the same decision as the official client
    assert len(ours.delays) == len(sdk.delays) == ours.attempts - 1


@pytest.mark.parametrize("name", ["429 retry-after 0", "429 without retry-after"])
def test_retry_after_zero_backs_off_like_the_sdk(
    emu: Emulator, server: EmulatorServer, name: str
) -> None:
    """``retry-after: 0`` is not "retry at once, three times": both fall back to the same
    jittered backoff as when the header is missing."""
    case = CASES[name]
    sdk, _ = run_sdk(emu, server, case)
    ours, _ = run_ours(emu, server, case)
    for delays in (sdk.delays, ours.delays):
        assert [round(d, 3) > 0 for d in delays] == [True, True]
        assert 0.375 <= delays[0] <= 0.5 and 0.75 <= delays[1] <= 1.0


def test_a_retry_after_within_the_cap_is_waited_as_asked_by_both(
    emu: Emulator, server: EmulatorServer
) -> None:
    case = CASES["429 with retry-after 0.25"]
    sdk, _ = run_sdk(emu, server, case)
    ours, _ = run_ours(emu, server, case)
    assert sdk.delays == ours.delays == [0.25, 0.25]


def test_a_retry_after_over_the_cap_fails_fast_with_the_wait_on_the_error(
    emu: Emulator, server: EmulatorServer
) -> None:
    """The SDK gives up silently; ours gives up too but says how long to wait, so the
    caller reschedules the job instead of hammering the API."""
    ours, err = run_ours(emu, server, CASES["429 retry-after over the cap"])
    assert ours.attempts == 1 and ours.delays == []
    assert isinstance(err, RateLimitError)
    assert err.retry_after == MAX_RETRY_AFTER + 180


def test_403_is_a_permission_error_not_an_authentication_error(
    emu: Emulator, server: EmulatorServer
) -> None:
    _, err = run_ours(emu, server, CASES["403"])
    assert isinstance(err, PermissionDeniedError)
    assert not isinstance(err, AuthenticationError)
    assert err.status_code == 403


# -- a list cursor that does not advance ---------------------------------------------------


def seed_two(emu: Emulator, kind: str) -> None:
    """Two files, or two batches: enough for a second page when the cursor works."""
    lines = (
        b'{"custom_id": "a", "method": "POST", "url": "/v1/moderations", "body": {"input": "x"}}\n'
    )
    for _ in range(2):
        file_id = emu.add_file(lines)["id"]
        if kind == "batches":
            emu.create_batch(
                {
                    "input_file_id": file_id,
                    "endpoint": "/v1/moderations",
                    "completion_window": "24h",
                }
            )


@pytest.mark.parametrize("kind", ["files", "batches"])
def test_a_list_cursor_that_does_not_advance_loops_the_sdk_and_stops_ours(
    emu: Emulator, server: EmulatorServer, kind: str
) -> None:
    """The server answers the first page whatever the cursor, always with ``has_more``.
    The SDK's auto-pager follows it for ever (cut here at 6 entries: the same 1 or 2 ids
    over and over); ours stops on the second page with an error naming the list."""
    seed_two(emu, kind)
    path = f"/v1/{kind}"
    emu.inject_fault("GET", path, "stuck_cursor", count=FAULTS)
    sdk = RecordingOpenAI(base_url=server.base_url, api_key=KEY, max_retries=RETRIES, timeout=5)
    try:
        pager = sdk.files.list(limit=1) if kind == "files" else sdk.batches.list(limit=1)
        sdk_ids = [entry.id for entry in itertools.islice(pager, 6)]
    finally:
        sdk.close()
    assert len(sdk_ids) == 6 and len(set(sdk_ids)) == 1  # still going: a loop
    sdk_calls = attempts_made(emu)
    assert sdk_calls == 6
    emu.clear_faults()

    emu.inject_fault("GET", path, "stuck_cursor", count=FAULTS)
    account = Account("default", server.base_url, KEY, timeout=5.0)
    seen: list[str] = []
    with OpenAIClient(account, max_retries=RETRIES, sleep=lambda s: None) as ours:
        entries = ours.list_files() if kind == "files" else ours.iter_batches()
        with pytest.raises(APIConnectionError, match=f"GET /{kind}: the list cursor does not"):
            for entry in entries:
                seen.append(entry["id"])
    assert attempts_made(emu) == 2  # the first page, and the one that did not advance
    assert len(seen) == len(set(seen)) == 2  # every entry once, the repeat not yielded


def test_the_stuck_cursor_fault_leaves_a_working_cursor_alone_afterwards(
    emu: Emulator, server: EmulatorServer
) -> None:
    seed_two(emu, "batches")
    emu.inject_fault("GET", "/v1/batches", "stuck_cursor", count=1)
    account = Account("default", server.base_url, KEY, timeout=5.0)
    with OpenAIClient(account, max_retries=RETRIES, sleep=lambda s: None) as ours:
        first = ours.list_batches(limit=1)
        assert first["has_more"] is True
        second = ours.list_batches(after=first["data"][0]["id"], limit=1)
    assert second["data"][0]["id"] != first["data"][0]["id"]
    assert second["has_more"] is False


# -- moderations without a model -----------------------------------------------------------


def test_a_moderations_request_without_a_model_is_valid_for_the_sdk_and_for_us(
    emu: Emulator,
) -> None:
    """The SDK lets ``model`` be left out of a moderation (the API defaults it to
    omni-moderation-latest); our line validator accepts such a line and counts it as that
    model, and the emulator runs it and reports the default's snapshot."""
    sdk = openai.OpenAI(api_key=KEY, base_url="http://127.0.0.1:9/v1")
    try:
        parameter = inspect.signature(sdk.moderations.create).parameters["model"]
    finally:
        sdk.close()
    assert parameter.default is openai.omit

    validator = ItemValidator(endpoint="/v1/moderations")
    line = validator.check(0, {"custom_id": "m", "body": {"input": "x"}})
    assert validator.problems == []
    assert line is not None and "model" not in line["body"]
    assert validator.model == "omni-moderation-latest"

    file_id = emu.add_file((json.dumps(line) + "\n").encode())["id"]
    batch = emu.create_batch(
        {"input_file_id": file_id, "endpoint": "/v1/moderations", "completion_window": "24h"}
    )
    done = emu.retrieve_batch(batch["id"])
    assert done["status"] == "completed" and done["request_counts"]["completed"] == 1
    assert done["model"] == "omni-moderation-2024-09-26"
