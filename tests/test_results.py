"""Typed result accessors (openai_batches.results) for every endpoint the Batch API takes.

Two sources of bodies: hand-written ones shaped like OpenAI's (refusals, tool calls,
``length`` stops, several choices, several embedding inputs, a moderation flag, 4xx bodies,
error objects), and whole jobs run through the bundled emulator over HTTP and ingested by
``services``, read back through ``item.result``.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openai_batches import services
from openai_batches.models import Endpoint, ItemState, RequestItem
from openai_batches.results import Result, Usage, token_cost
from openai_batches.testing import EmulatorHandle, running_emulator

CHAT = Endpoint.CHAT_COMPLETIONS
RESP = Endpoint.RESPONSES


def ok(endpoint: str, body: dict[str, Any]) -> Result:
    return Result(endpoint, ItemState.SUCCEEDED, 200, body)


def chat_body(*messages: dict[str, Any], finish: str = "stop") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [
            {"index": i, "message": m, "logprobs": None, "finish_reason": finish}
            for i, m in enumerate(messages)
        ],
        "usage": {
            "prompt_tokens": 20,
            "completion_tokens": 8,
            "total_tokens": 28,
            "prompt_tokens_details": {"cached_tokens": 4},
            "completion_tokens_details": {"reasoning_tokens": 2},
        },
    }


def msg(content: str | None, refusal: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content, "refusal": refusal, **extra}


# -- chat completions ----------------------------------------------------------------------


def test_chat_text_usage_and_finish_reason() -> None:
    r = ok(CHAT, chat_body(msg("Paris.")))
    assert (r.text, r.refusal, r.finish_reason, r.truncated) == ("Paris.", None, "stop", False)
    assert r.ok and r.code == "" and r.reason == ""
    assert r.usage == Usage(input_tokens=20, cached_tokens=4, output_tokens=8, reasoning_tokens=2)
    assert r.usage.total_tokens == 28
    assert r.summary() == "Paris."


def test_chat_multiple_choices() -> None:
    r = ok(CHAT, chat_body(msg("one"), msg("two"), msg("three")))
    assert r.texts == ["one", "two", "three"]
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert r.text == "one"


def test_chat_length_stop_is_truncated_but_usable() -> None:
    r = ok(CHAT, chat_body(msg("The answer is cut he"), finish="length"))
    assert r.truncated and r.finish_reason == "length"
    assert r.text == "The answer is cut he" and r.ok


def test_chat_refusal_is_not_ok() -> None:
    r = ok(CHAT, chat_body(msg(None, "I can't help with that.")))
    assert r.text is None and r.refusal == "I can't help with that."
    assert not r.ok and r.succeeded
    assert r.code == "refusal" and r.reason == "refusal: I can't help with that."


def test_chat_tool_calls() -> None:
    calls = [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        },
        {"id": "call_2", "type": "custom", "custom": {"name": "sql", "input": "SELECT 1"}},
    ]
    r = ok(CHAT, chat_body(msg(None, tool_calls=calls), finish="tool_calls"))
    assert r.finish_reason == "tool_calls" and r.ok
    first, second = r.tool_calls
    assert (first.id, first.name, first.type) == ("call_1", "get_weather", "function")
    assert first.json() == {"city": "Paris"}
    assert (second.name, second.arguments, second.type) == ("sql", "SELECT 1", "custom")
    assert r.summary().startswith('get_weather({"city": "Paris"})')


# -- responses -----------------------------------------------------------------------------


def responses_body(output: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "id": "resp_1",
        "object": "response",
        "status": "completed",
        "incomplete_details": None,
        "output": output,
        "usage": {
            "input_tokens": 11,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 30,
            "output_tokens_details": {"reasoning_tokens": 16},
            "total_tokens": 41,
        },
        **extra,
    }


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": []}


def test_responses_text_joins_every_message_item_after_reasoning() -> None:
    body = responses_body(
        [
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "message", "role": "assistant", "content": [text_part("Hello, ")]},
            {"type": "message", "role": "assistant", "content": [text_part("world.")]},
        ]
    )
    r = ok(RESP, body)
    assert r.text == "Hello, world." and r.finish_reason == "stop" and r.ok
    assert r.usage == Usage(11, 0, 30, 16)


def test_responses_refusal_function_call_and_incomplete() -> None:
    refused = ok(
        RESP,
        responses_body(
            [{"type": "message", "content": [{"type": "refusal", "refusal": "No, sorry."}]}]
        ),
    )
    assert refused.refusal == "No, sorry." and refused.text is None and refused.code == "refusal"

    tool = ok(
        RESP,
        responses_body(
            [
                {
                    "type": "function_call",
                    "id": "fc_1",
                    "call_id": "call_9",
                    "name": "lookup",
                    "arguments": '{"sku": 7}',
                    "status": "completed",
                }
            ]
        ),
    )
    assert tool.finish_reason == "tool_calls" and tool.tool_calls[0].id == "call_9"
    assert tool.tool_calls[0].json() == {"sku": 7}

    cut = ok(
        RESP,
        responses_body(
            [{"type": "message", "content": [text_part("Partial")]}],
            status="incomplete",
            incomplete_details={"reason": "max_output_tokens"},
        ),
    )
    assert cut.truncated and cut.text == "Partial"


# -- completions, embeddings, moderations, images --------------------------------------


def test_completions_text_and_choices() -> None:
    body = {
        "object": "text_completion",
        "choices": [
            {"text": " first", "index": 0, "logprobs": None, "finish_reason": "length"},
            {"text": " second", "index": 1, "logprobs": None, "finish_reason": "stop"},
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    }
    r = ok(Endpoint.COMPLETIONS, body)
    assert r.text == " first" and r.texts == [" first", " second"] and r.truncated
    assert r.usage.input_tokens == 3 and r.usage.output_tokens == 4


def test_embeddings_multi_input_in_index_order_and_base64() -> None:
    packed = base64.b64encode(struct.pack("<3f", 0.5, -0.25, 1.0)).decode()
    body = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 1, "embedding": packed},
            {"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]},
        ],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 6, "total_tokens": 6},
    }
    r = ok(Endpoint.EMBEDDINGS, body)
    assert r.embeddings == [[0.1, 0.2, 0.3], [0.5, -0.25, 1.0]]
    assert r.embedding == [0.1, 0.2, 0.3] and r.text is None and r.ok
    assert r.summary() == "2 vector(s) of 3 dimensions"
    assert r.usage.input_tokens == 6


def test_moderation_flag_and_categories() -> None:
    def result(flagged: bool, on: list[str]) -> dict[str, Any]:
        names = ["hate", "violence", "self-harm"]
        return {
            "flagged": flagged,
            "categories": {n: n in on for n in names},
            "category_scores": {n: 0.9 if n in on else 0.01 for n in names},
        }

    body = {
        "id": "modr-1",
        "model": "omni",
        "results": [result(False, []), result(True, ["violence", "hate"])],
    }
    r = ok(Endpoint.MODERATIONS, body)
    assert r.flagged and r.categories == ["hate", "violence"]
    assert [m.flagged for m in r.moderations] == [False, True]
    assert r.moderations[1].scores["violence"] == 0.9
    assert r.summary() == "flagged: hate, violence"


def test_images_base64_and_url() -> None:
    png = base64.b64encode(b"\x89PNG fake").decode()
    body = {
        "created": 1,
        "data": [{"b64_json": png, "revised_prompt": "a cat"}, {"url": "https://x/y.png"}],
        "usage": {"input_tokens": 5, "output_tokens": 272, "total_tokens": 277},
    }
    r = ok(Endpoint.IMAGES_GENERATIONS, body)
    assert r.images[0].bytes() == b"\x89PNG fake" and r.images[0].revised_prompt == "a cat"
    assert r.images[1].url == "https://x/y.png"
    with pytest.raises(ValueError, match="URL"):
        r.images[1].bytes()
    assert r.usage.output_tokens == 272 and r.summary() == "2 image(s)"


# -- failures ------------------------------------------------------------------------------


def test_a_4xx_body_gives_code_and_one_line_reason() -> None:
    body = {
        "error": {
            "message": "Invalid prompt:\n  your prompt was flagged.",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_prompt",
        }
    }
    r = Result(CHAT, ItemState.FAILED, 400, body)
    assert not r.ok and r.text is None and r.usage == Usage()
    assert r.code == "invalid_prompt"
    assert r.reason == "invalid_prompt: Invalid prompt: your prompt was flagged."
    assert r.summary() == r.reason


def test_a_5xx_body_without_code_falls_back_to_type_then_status() -> None:
    assert (
        Result(CHAT, "failed", 500, {"error": {"type": "server_error", "message": "x"}}).code
        == "server_error"
    )
    assert Result(CHAT, "failed", 502, "<html>bad gateway</html>").code == "http_502"


@pytest.mark.parametrize(
    ("state", "code"),
    [
        (ItemState.EXPIRED, "batch_expired"),
        (ItemState.CANCELLED, "batch_cancelled"),
        (ItemState.MISSING, "missing_result"),
        (ItemState.FAILED, "batch_failed"),
    ],
)
def test_error_objects_of_requests_that_never_ran(state: str, code: str) -> None:
    r = Result(CHAT, state, None, None, {"code": code, "message": "It did not run."})
    assert not r.ok and r.code == code and r.reason == f"{code}: It did not run."


def test_pending_items_have_no_answer_and_no_failure() -> None:
    r = Result(CHAT, ItemState.PENDING)
    assert (r.text, r.code, r.summary(), r.ok) == (None, "", "", False)


def test_token_cost() -> None:
    prices = {"input": 0.075, "cached_input": 0.0375, "output": 0.3}
    assert token_cost(prices, Usage(1_000_000, 0, 0, 0)) == Decimal("0.075")
    assert token_cost(prices, Usage(1000, 400, 500, 0)) == Decimal("0.000210")
    assert token_cost(None, Usage(1, 0, 1, 0)) is None


# -- against the emulator, through a whole job -----------------------------------------


@pytest.fixture
def emu() -> Iterator[EmulatorHandle]:
    with running_emulator() as handle:
        yield handle


def run_job(
    endpoint: str, items: list[dict[str, Any]], emu: Any = None, fail: str = ""
) -> dict[str, RequestItem]:
    job = services.create_job(endpoint=endpoint, items=items)
    if fail:
        emu.fail_request(fail)
    services.request_submit(job)
    services.submit(job)
    services.refresh(job)
    job.refresh_from_db()
    assert job.state == "finished", job.last_error
    return {i.custom_id: i for i in job.items.select_related("job")}


@pytest.mark.django_db(transaction=True)
def test_every_endpoint_through_the_emulator(emu: EmulatorHandle) -> None:
    chat = run_job(
        CHAT,
        [
            {
                "custom_id": "a",
                "body": {
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": "Capital of France?"}],
                    "n": 2,
                },
            },
            {
                "custom_id": "cut",
                "body": {
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": "Write a long essay please"}],
                    "max_completion_tokens": 2,
                },
            },
            {
                "custom_id": "bad",
                "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
            },
        ],
        emu,
        fail="bad",
    )
    a = chat["a"].result
    assert a.ok and a.text and "Capital of France?" in a.text and len(a.texts) == 2
    assert a.usage.input_tokens == chat["a"].input_tokens > 0
    assert chat["cut"].result.truncated and chat["cut"].result.ok
    bad = chat["bad"].result
    assert not bad.ok and bad.code and bad.reason.startswith(bad.code + ": ")

    resp = run_job(RESP, [{"custom_id": "r", "body": {"model": "gpt-4o-mini", "input": "Say hi"}}])
    assert "Say hi" in (resp["r"].result.text or "") and resp["r"].result.finish_reason == "stop"

    comp = run_job(
        Endpoint.COMPLETIONS,
        [{"custom_id": "c", "body": {"model": "gpt-3.5-turbo-instruct", "prompt": "Once"}}],
    )
    assert comp["c"].result.text and comp["c"].result.ok

    emb = run_job(
        Endpoint.EMBEDDINGS,
        [
            {
                "custom_id": "e",
                "body": {
                    "model": "text-embedding-3-small",
                    "input": ["one", "two", "three"],
                    "dimensions": 8,
                },
            }
        ],
    )
    vectors = emb["e"].result.embeddings
    assert len(vectors) == 3 and all(len(v) == 8 for v in vectors) and vectors[0] != vectors[1]

    mod = run_job(
        Endpoint.MODERATIONS,
        [
            {
                "custom_id": "m",
                "body": {
                    "model": "omni-moderation-latest",
                    "input": ["fine text", "emulator-flag this"],
                },
            }
        ],
    )
    assert mod["m"].result.flagged and mod["m"].result.categories == ["violence"]
    assert [m.flagged for m in mod["m"].result.moderations] == [False, True]

    img = run_job(
        Endpoint.IMAGES_GENERATIONS,
        [{"custom_id": "i", "body": {"model": "dall-e-2", "prompt": "a cat", "n": 2}}],
    )
    images = img["i"].result.images
    assert len(images) == 2 and images[0].bytes().startswith(b"\x89PNG")


# -- the admin shows the answer ------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_admin_item_page_shows_answer_and_parsed_fields_above_the_raw_json(
    emu: EmulatorHandle, admin_client: Any
) -> None:
    from django.urls import reverse

    from openai_batches import structured
    from tests.test_structured import Sentiment

    job = structured.create_job(
        output_schema=Sentiment,
        items=[
            {
                "custom_id": "s1",
                "body": {
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": "Great kettle"}],
                },
            },
            {
                "custom_id": "s2",
                "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
            },
        ],
    )
    emu.fail_request("s2", code="invalid_prompt", message="Invalid prompt.")
    done = run_job_from(job)
    item = done["s1"]
    parsed = item.result.parsed
    assert isinstance(parsed, Sentiment)
    html = admin_client.get(
        reverse("admin:openai_batches_requestitem_change", args=[item.pk])
    ).content.decode()
    assert html.index("field-answer") < html.index("field-parsed_pretty")
    assert html.index("field-parsed_pretty") < html.index(
        "field-response_pretty"
    )  # above the raw JSON
    assert f"<th>sentiment</th><td>{parsed.sentiment}</td>" in html
    assert "tests.test_structured.Sentiment" in html and "finish reason" in html

    RequestItem.objects.filter(pk=item.pk).update(parsed=None)
    again = admin_client.get(reverse("admin:openai_batches_requestitem_change", args=[item.pk]))
    assert f"<th>sentiment</th><td>{parsed.sentiment}</td>" in again.content.decode()
    assert RequestItem.objects.get(pk=item.pk).parsed is None  # shown, not stored, on a GET

    failed = admin_client.get(
        reverse("admin:openai_batches_requestitem_change", args=[done["s2"].pk])
    ).content.decode()
    assert "invalid_prompt: Invalid prompt." in failed

    listing = admin_client.get(
        reverse("admin:openai_batches_requestitem_changelist"), {"job": job.pk}
    ).content.decode()
    assert "column-answer_short" in listing
    assert f"sentiment: {parsed.sentiment}, reason: {parsed.reason[:20]}" in listing
    assert "invalid_prompt: Invalid prompt." in listing


@pytest.mark.django_db(transaction=True)
def test_admin_item_list_neither_writes_nor_grows_queries_with_structured_rows(
    emu: EmulatorHandle, admin_client: Any
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.urls import reverse

    from openai_batches import structured
    from tests.test_structured import Sentiment

    def rows(n: int, start: int) -> list[dict[str, Any]]:
        return [
            {
                "custom_id": f"q{i}",
                "body": {
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": f"r{i}"}],
                },
            }
            for i in range(start, start + n)
        ]

    small = run_job_from(structured.create_job(output_schema=Sentiment, items=rows(1, 0)))
    url = reverse("admin:openai_batches_requestitem_changelist")
    RequestItem.objects.update(parsed=None)  # as if nothing had parsed the answers yet
    with CaptureQueriesContext(connection) as one:
        admin_client.get(url)
    run_job_from(structured.create_job(output_schema=Sentiment, items=rows(15, 1)))
    RequestItem.objects.update(parsed=None)
    with CaptureQueriesContext(connection) as many:
        admin_client.get(url)
    assert len(many.captured_queries) == len(one.captured_queries)
    assert not any(q["sql"].lstrip().upper().startswith("UPDATE") for q in many.captured_queries)
    assert RequestItem.objects.get(pk=small["q0"].pk).parsed is None  # a GET stored nothing


def run_job_from(job: Any) -> dict[str, RequestItem]:
    services.request_submit(job)
    services.submit(job)
    services.refresh(job)
    job.refresh_from_db()
    assert job.state == "finished", job.last_error
    return {i.custom_id: i for i in job.items.select_related("job")}


# -- any stored body: the accessors never raise ----------------------------------------


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "choices",
                    "message",
                    "content",
                    "refusal",
                    "tool_calls",
                    "function",
                    "type",
                    "output",
                    "text",
                    "data",
                    "embedding",
                    "index",
                    "results",
                    "categories",
                    "flagged",
                    "usage",
                    "b64_json",
                    "url",
                    "status",
                    "incomplete_details",
                    "reason",
                    "error",
                    "code",
                    "message",
                    "prompt_tokens",
                    "input_tokens",
                    "finish_reason",
                    "arguments",
                    "name",
                    "category_scores",
                ]
            ),
            inner,
            max_size=5,
        )
    ),
    max_leaves=25,
)


@settings(max_examples=1000, deadline=None)
@given(
    endpoint=st.sampled_from([e.value for e in Endpoint]),
    state=st.sampled_from([s.value for s in ItemState]),
    status_code=st.none() | st.integers(100, 599),
    response=_json,
    error=_json,
)
def test_accessors_never_raise_on_any_stored_body(
    endpoint: str, state: str, status_code: int | None, response: Any, error: Any
) -> None:
    r = Result(endpoint, state, status_code, response, error)
    for name in (
        "choices",
        "text",
        "texts",
        "refusal",
        "finish_reason",
        "truncated",
        "tool_calls",
        "moderations",
        "flagged",
        "categories",
        "images",
        "code",
        "reason",
        "ok",
    ):
        getattr(r, name)
    assert all(isinstance(x, float) for v in r.embeddings for x in v)
    assert all(isinstance(n, int) for n in vars(r.usage).values())
    assert isinstance(r.summary(), str)
    if state != ItemState.SUCCEEDED and state not in ("pending", "submitted"):
        assert r.code and not r.ok
