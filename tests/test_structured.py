"""Structured outputs with Pydantic (openai_batches.structured).

The schema sent must be what the official SDK sends for ``.parse()``; answers are parsed and
validated into the model; a schema violation, a refusal or a truncated answer is a failed
parse on the result (``code``/``parse_error``), never an exception and never ``ok``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from typing import Any, Literal

import pytest
from openai.lib._parsing._completions import type_to_response_format_param
from openai.lib._parsing._responses import type_to_text_format_param
from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel, Field

from openai_batches import structured
from openai_batches.exceptions import ConfigurationError, ValidationError
from openai_batches.models import Endpoint, ItemState, RequestItem
from openai_batches.results import Result
from openai_batches.testing import EmulatorHandle, running_emulator

HERE = "tests.test_structured"


class Sentiment(BaseModel):
    sentiment: Literal["positive", "negative", "neutral"]
    reason: str


class Address(BaseModel):
    city: str
    postcode: str | None = None


class Person(BaseModel):
    name: str = Field(description="Full name")
    born: date
    home: Address = Field(description="Where they live")
    work: Address | None = None
    tags: list[str]
    score: float = Field(ge=0, le=1)


class NotAModel:
    pass


def chat_body(
    content: str | None, refusal: str | None = None, finish: str = "stop"
) -> dict[str, Any]:
    return {
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": refusal},
                "finish_reason": finish,
            }
        ],
    }


def result(body: dict[str, Any], schema: str = f"{HERE}.Sentiment") -> Result:
    return Result(Endpoint.CHAT_COMPLETIONS, ItemState.SUCCEEDED, 200, body, schema=schema)


# -- the request side ----------------------------------------------------------------------


@pytest.mark.parametrize("model", [Sentiment, Person, Address])
def test_schema_is_the_one_the_official_sdk_sends(model: type[BaseModel]) -> None:
    assert structured.strict_json_schema(model) == to_strict_json_schema(model)
    assert structured.response_format(model, Endpoint.CHAT_COMPLETIONS) == (
        "response_format",
        type_to_response_format_param(model),
    )
    key, text = structured.response_format(model, Endpoint.RESPONSES)
    assert key == "text" and text == {"format": type_to_text_format_param(model)}


def test_with_schema_keeps_other_text_options() -> None:
    body = {"model": "m", "input": "hi", "text": {"verbosity": "low"}}
    out = structured.with_schema(body, Sentiment, Endpoint.RESPONSES)
    assert out["text"]["verbosity"] == "low" and out["text"]["format"]["name"] == "Sentiment"
    assert "text" in body and "format" not in body["text"]  # the caller's body is not mutated


def test_endpoints_without_structured_output_are_refused() -> None:
    with pytest.raises(ValueError, match="'/v1/embeddings' takes no structured output"):
        structured.response_format(Sentiment, Endpoint.EMBEDDINGS)


def test_models_are_referenced_by_import_path_and_checked() -> None:
    assert structured.import_path(Sentiment) == f"{HERE}.Sentiment"
    assert structured.load_model(f"{HERE}.Sentiment") is Sentiment
    with pytest.raises(ConfigurationError, match="cannot be imported"):
        structured.load_model("tests.nowhere.Sentiment")
    with pytest.raises(ConfigurationError, match="is not a Pydantic BaseModel"):
        structured.load_model(f"{HERE}.NotAModel")

    class Local(BaseModel):
        x: int

    with pytest.raises(ValueError, match="define it at module level"):
        structured.import_path(Local)


def test_a_fresh_worker_process_loads_the_model_and_parses() -> None:
    code = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='tests.settings'; django.setup();"
        "from openai_batches.structured import parse_text;"
        f'print(parse_text(\'{HERE}.Sentiment\', \'{{"sentiment": "neutral", "reason": "ok"}}\'))'
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "({'sentiment': 'neutral', 'reason': 'ok'}, '')"


# -- the result side -----------------------------------------------------------------------


def test_a_valid_answer_parses_into_the_model() -> None:
    r = result(chat_body('{"sentiment": "positive", "reason": "Loves it."}'))
    assert isinstance(r.parsed, Sentiment)
    assert r.parsed == Sentiment(sentiment="positive", reason="Loves it.")
    assert r.parsed_json == {"sentiment": "positive", "reason": "Loves it."}
    assert r.ok and r.code == "" and r.parse_error == ""


def test_a_schema_violation_is_a_failed_parse_not_a_crash_nor_a_success() -> None:
    r = result(chat_body('{"sentiment": "ecstatic", "reason": 3}'))
    assert r.parsed is None and r.parsed_json is None
    assert not r.ok and r.succeeded  # the provider answered; the answer is unusable
    assert r.code == "parse_failed"
    assert "sentiment: Input should be 'positive', 'negative' or 'neutral'" in r.parse_error
    assert "reason: Input should be a valid string" in r.parse_error
    assert r.reason.startswith("parse_failed: sentiment:")


def test_invalid_json_truncated_answer_and_refusal() -> None:
    cut = result(chat_body('{"sentiment": "posi', finish="length"))
    assert cut.code == "parse_failed" and cut.parsed is None
    assert cut.parse_error.startswith("the answer was cut at the output token limit:")
    refused = result(chat_body(None, refusal="I can't assess this."))
    assert refused.code == "refusal" and refused.parsed is None and refused.parse_error == ""


def test_no_schema_means_no_parse() -> None:
    r = result(chat_body('{"sentiment": "positive"}'), schema="")
    assert r.parsed is None and r.ok and r.json() == {"sentiment": "positive"}


# -- jobs through the emulator -------------------------------------------------------------


@pytest.fixture
def emu() -> Iterator[EmulatorHandle]:
    with running_emulator() as handle:
        yield handle


def items(n: int, endpoint: str = Endpoint.CHAT_COMPLETIONS) -> list[dict[str, Any]]:
    if endpoint == Endpoint.RESPONSES:
        return [
            {"custom_id": f"r{i}", "body": {"model": "gpt-4o-mini", "input": f"Review {i}"}}
            for i in range(n)
        ]
    return [
        {
            "custom_id": f"r{i}",
            "body": {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"Review {i}"}],
            },
        }
        for i in range(n)
    ]


def finish(job: Any) -> dict[str, RequestItem]:
    from openai_batches import services

    services.request_submit(job)
    services.submit(job)
    services.refresh(job)
    job.refresh_from_db()
    assert job.state == "finished", job.last_error
    return {i.custom_id: i for i in job.items.select_related("job")}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("endpoint", [Endpoint.CHAT_COMPLETIONS, Endpoint.RESPONSES])
def test_a_structured_job_end_to_end(emu: EmulatorHandle, endpoint: str) -> None:
    job = structured.create_job(endpoint=endpoint, output_schema=Person, items=items(5, endpoint))
    assert job.output_schema == f"{HERE}.Person"
    stored = RequestItem.objects.filter(job=job).first()
    assert stored is not None
    sent = (
        stored.body["response_format"]
        if endpoint == Endpoint.CHAT_COMPLETIONS
        else stored.body["text"]
    )
    assert sent == structured.response_format(Person, endpoint)[1]

    done = finish(job)
    # Receivers were sent ``parsed``, which stored it; clear it to run the bulk pass alone.
    assert RequestItem.objects.filter(job=job, parsed__isnull=True).count() == 0
    RequestItem.objects.filter(job=job).update(parsed=None)
    assert structured.store_parsed(job) == 5
    assert structured.store_parsed(job) == 0  # stored once; a second pass has nothing to do
    for item in RequestItem.objects.filter(job=job).select_related("job"):
        assert item.parse_error == "" and item.parsed is not None  # stored JSON
        person = item.result.parsed
        assert isinstance(person, Person) and isinstance(person.home, Address)
        assert isinstance(person.born, date) and 0 <= person.score <= 1
    assert len(done) == 5


@pytest.mark.django_db(transaction=True)
def test_first_access_parses_and_stores_when_no_bulk_pass_ran(emu: EmulatorHandle) -> None:
    job = structured.create_job(output_schema=Sentiment, items=items(2))
    finish(job)
    RequestItem.objects.filter(job=job).update(parsed=None)  # as if no receiver had run
    item = RequestItem.objects.select_related("job").get(job=job, custom_id="r0")
    assert item.parsed is None
    assert item.result.parsed is not None
    assert RequestItem.objects.get(pk=item.pk).parsed == item.result.parsed_json


@pytest.mark.django_db(transaction=True)
def test_an_item_can_carry_its_own_model(emu: EmulatorHandle) -> None:
    rows = items(3)
    rows[1]["output_schema"] = f"{HERE}.Address"
    job = structured.create_job(output_schema=Sentiment, items=rows)
    done = finish(job)
    assert done["r1"].output_schema == f"{HERE}.Address" and done["r0"].output_schema == ""
    assert (
        json.loads(json.dumps(done["r1"].body["response_format"]))["json_schema"]["name"]
        == "Address"
    )
    assert isinstance(done["r1"].result.parsed, Address)
    assert isinstance(done["r0"].result.parsed, Sentiment)


@pytest.mark.django_db(transaction=True)
def test_a_violating_answer_is_stored_as_a_parse_error(emu: EmulatorHandle) -> None:
    job = structured.create_job(output_schema=Sentiment, items=items(2))
    finish(job)
    # The provider's answer for r0 no longer fits a stricter model of the same name.
    RequestItem.objects.filter(job=job, custom_id="r0").update(
        response=chat_body('{"sentiment": "meh", "reason": "x"}'), parsed=None
    )
    RequestItem.objects.filter(job=job, custom_id="r1").update(parsed=None)
    assert structured.store_parsed(job) == 2
    item = RequestItem.objects.select_related("job").get(job=job, custom_id="r0")
    assert item.parsed is None and item.parse_error.startswith("sentiment: Input should be")
    assert item.result.code == "parse_failed" and item.state == ItemState.SUCCEEDED


@pytest.mark.django_db
def test_create_job_refuses_an_endpoint_without_structured_output() -> None:
    with pytest.raises(ValidationError, match="takes no structured output"):
        structured.create_job(endpoint=Endpoint.EMBEDDINGS, output_schema=Sentiment, items=[])
    with pytest.raises(TypeError, match="not jsonl="):
        structured.create_job(output_schema=Sentiment, jsonl=[b"{}"])


@pytest.mark.django_db(transaction=True)
def test_result_received_hands_receivers_the_result_and_the_parsed_object(
    emu: EmulatorHandle,
) -> None:
    from openai_batches import signals

    got: list[dict[str, Any]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        got.append(kwargs)

    signals.result_received.connect(receiver, custom_id_prefix="r")
    try:
        rows = items(2)
        rows[1]["body"]["messages"][0]["content"] = "emulator-refuse"
        finish(structured.create_job(output_schema=Sentiment, items=rows))
    finally:
        signals.result_received.disconnect(receiver, custom_id_prefix="r")
    by_id = {k["custom_id"]: k for k in got}
    assert set(by_id) == {"r0", "r1"}
    ok, refused = by_id["r0"], by_id["r1"]
    assert isinstance(ok["result"], Result) and ok["result"].ok
    assert isinstance(ok["parsed"], Sentiment) and ok["parsed"] == ok["item"].result.parsed
    assert refused["succeeded"] is True and refused["parsed"] is None
    assert refused["result"].code == "refusal" and not refused["result"].ok
    # Stored as it was parsed: the receivers' transaction saved the JSON on the item.
    assert RequestItem.objects.get(pk=ok["item"].pk).parsed == ok["parsed"].model_dump()


def test_the_result_kwargs_are_only_added_for_an_item() -> None:
    from openai_batches.signals import _with_result

    assert _with_result({"custom_id": "x", "item": None}) == {"custom_id": "x", "item": None}
    given = {"item": object(), "result": "mine", "parsed": "mine too"}
    assert _with_result(given) == given  # a sender's own values win


@pytest.mark.django_db
def test_a_bad_item_model_is_a_problem_with_its_index_and_nothing_is_saved() -> None:
    from openai_batches.models import BatchJob

    rows = items(3)
    rows[1]["output_schema"] = "tests.nowhere.Model"
    del rows[2]["body"]["model"]  # a problem services finds: both are listed
    with pytest.raises(ValidationError) as caught:
        structured.create_job(output_schema=Sentiment, items=rows)
    found = [(p.index, p.field) for p in caught.value.problems]
    assert found == [(1, "output_schema"), (2, "body.model")]
    assert "cannot be imported" in caught.value.problems[0].message
    assert not BatchJob.objects.exists() and not RequestItem.objects.exists()

    rows = items(2)
    rows[0]["output_schema"] = f"{HERE}.NotAModel"
    with pytest.raises(
        ValidationError, match=r"item 0 \(line 1\), output_schema: .*is not a Pydantic"
    ):
        structured.create_job(output_schema=Sentiment, items=rows)
    assert not BatchJob.objects.exists()


@pytest.mark.django_db
def test_add_items_to_a_structured_job_adds_the_schema() -> None:
    from openai_batches import services

    job = structured.create_job(output_schema=Sentiment, items=items(1))
    more = [{"custom_id": "extra", "body": items(1)[0]["body"], "output_schema": Address}]
    assert structured.add_items(job, more) == 1
    extra = RequestItem.objects.get(job=job, custom_id="extra")
    assert extra.output_schema == f"{HERE}.Address"
    assert extra.body["response_format"] == structured.response_format(Address, job.endpoint)[1]
    plain = services.create_job(endpoint=Endpoint.CHAT_COMPLETIONS, items=items(1))
    with pytest.raises(ValidationError, match="has no structured output model"):
        structured.add_items(plain, items(1))


@pytest.mark.django_db(transaction=True)
def test_store_parsed_writes_in_one_transaction_even_in_autocommit(
    emu: EmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside a transaction each row of SQLite's executemany would commit on its own
    (20,000 rows: 61 s instead of 1.7 s)."""
    from django.db import connection

    job = structured.create_job(output_schema=Sentiment, items=items(3))
    finish(job)
    RequestItem.objects.filter(job=job).update(parsed=None)
    seen: list[bool] = []
    save = structured._save

    def spy(batch: list[Any]) -> int:
        seen.append(connection.in_atomic_block)
        return save(batch)

    monkeypatch.setattr(structured, "_save", spy)
    assert not connection.in_atomic_block
    assert structured.store_parsed(job) == 3
    assert seen and all(seen)
