"""Generated bad input (hypothesis) through every way in: the Python API, the admin upload
and the REST API. Always a validation error naming the line and the field, never a 500, and
nothing saved.

Each example is a few valid requests with one bad one at a random place (and, in JSONL,
random blank lines, which count in line numbers as in an editor). The bad request is one of:
a custom_id of the wrong type, blank, too long, unicode-huge, with a lone surrogate or a NUL,
or used twice; a wrong ``method`` or ``url``; a missing or non-object body; a missing,
empty or non-string model; a lone surrogate in a body value or key; a NUL in a body; and, in
JSONL, a line that is not JSON, not an object, or not UTF-8; through the Python API, a body
holding what JSON cannot (NaN, infinity, a set, bytes, a date, a Decimal). The valid requests alone are
then accepted, so a refusal is the bad request's doing and not an over-strict validator.

Example counts are modest (``MAX_EXAMPLES`` per way in) to keep the suite fast;
``BAD_INPUT_EXAMPLES=1000 BAD_INPUT_RANDOM=1`` explores further. ``--hypothesis-show-statistics`` shows how
many examples each way in ran.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from openai_batches import services
from openai_batches.exceptions import ValidationError
from openai_batches.jsonl import printable
from openai_batches.models import BatchJob, RequestItem

pytestmark = pytest.mark.django_db

MAX_EXAMPLES = int(os.environ.get("BAD_INPUT_EXAMPLES", "50"))
#: The same examples on every run (CI must not pass or fail by luck);
#: ``BAD_INPUT_RANDOM=1`` draws new ones.
DERANDOMIZE = not os.environ.get("BAD_INPUT_RANDOM")
ENDPOINT = "/v1/chat/completions"
MODEL = "gpt-4o-mini"

examples = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=DERANDOMIZE,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# -- strategies -------------------------------------------------------------------------------

#: Any text a database and UTF-8 can hold: no lone surrogates, no NUL.
SAFE_CHARS = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
SAFE_TEXT = st.text(alphabet=SAFE_CHARS, max_size=30)
SURROGATE = st.integers(0xD800, 0xDFFF).map(chr)
WITH_SURROGATE = st.tuples(SAFE_TEXT, SURROGATE, SAFE_TEXT).map("".join)
WITH_NUL = st.tuples(SAFE_TEXT, SAFE_TEXT).map(lambda t: f"{t[0]}\x00{t[1]}")
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    SAFE_TEXT,
)
#: JSON values that are not strings.
NON_STRING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(SCALARS, max_size=3),
    st.dictionaries(SAFE_TEXT, SCALARS, max_size=3),
)
#: JSON values that are not objects.
NON_OBJECT = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    SAFE_TEXT,
    st.lists(SCALARS, max_size=3),
)
#: One text line (no line breaks) that JSON cannot parse.
NOT_JSON = st.text(
    alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\r\n"),
    min_size=1,
    max_size=40,
).filter(lambda t: t.strip() != "" and not _parses(t))


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def good_body(content: str = "hello") -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}]}


@dataclass
class Raw:
    """A JSONL line given as bytes (not a JSON-serialized request)."""

    data: bytes


@dataclass
class Bad:
    item: Any  # a request (any JSON value) or, in JSONL only, a Raw line
    field: str | None  # where the problem must be reported
    kind: str


def _bad(kind: str, field: str | None, items: st.SearchStrategy[Any]) -> st.SearchStrategy[Bad]:
    return items.map(lambda item: Bad(item, field, kind))


def _surrogate_key_body(key: str) -> Bad:
    return Bad(
        {"custom_id": "k", "body": {"model": MODEL, key: 1}}, f"body.{printable(key)}", "key"
    )


BAD_REQUESTS = st.one_of(
    _bad(
        "custom_id",
        "custom_id",
        st.one_of(
            NON_STRING,
            st.sampled_from(["", " ", "\t"]),
            st.text(alphabet=SAFE_CHARS, min_size=256, max_size=600),  # unicode, too long
            WITH_SURROGATE,
            WITH_NUL,
        ).map(lambda cid: {"custom_id": cid, "body": good_body()}),
    ),
    st.just(Bad(None, "custom_id", "duplicate")),  # filled in by batches()
    _bad("no custom_id", "custom_id", st.just({"body": good_body()})),
    _bad(
        "method",
        "method",
        st.one_of(NON_STRING, SAFE_TEXT.filter(lambda m: m != "POST"), WITH_SURROGATE).map(
            lambda m: {"custom_id": "m", "method": m, "body": good_body()}
        ),
    ),
    _bad(
        "url",
        "url",
        st.one_of(NON_STRING, SAFE_TEXT.filter(lambda u: u != ENDPOINT), WITH_SURROGATE).map(
            lambda u: {"custom_id": "u", "url": u, "body": good_body()}
        ),
    ),
    _bad("no body", "body", st.just({"custom_id": "b"})),
    _bad("body", "body", NON_OBJECT.map(lambda b: {"custom_id": "b", "body": b})),
    _bad(
        "model",
        "body.model",
        st.one_of(
            st.just({"messages": []}),
            st.just({"model": ""}),
            NON_STRING.filter(lambda m: m is not None).map(lambda m: {"model": m}),
            WITH_SURROGATE.map(lambda m: {"model": m}),
        ).map(lambda body: {"custom_id": "md", "body": body}),
    ),
    _bad(
        "surrogate",
        "body.messages.0.content",
        WITH_SURROGATE.map(lambda t: {"custom_id": "s", "body": good_body(t)}),
    ),
    WITH_SURROGATE.map(_surrogate_key_body),
    _bad("nul", "body", WITH_NUL.map(lambda t: {"custom_id": "n", "body": good_body(t)})),
    _bad("not an object", None, NON_OBJECT),
)

#: Bad lines only a JSONL file can have.
BAD_LINES = st.one_of(
    _bad("not json", None, NOT_JSON.map(lambda t: Raw(t.encode("utf-8")))),
    _bad(
        "not utf-8",
        None,
        st.sampled_from([b"\xff", b"\xed\xa0\x80", b"\xc3", b"\x80abc"]).map(
            lambda b: Raw(b'{"custom_id": "x' + b + b'", "body": {}}')
        ),
    ),
)


#: Bad values only the Python API can be given (JSON cannot even express them).
NOT_JSON_VALUES = st.one_of(
    st.sampled_from([float("nan"), float("inf"), float("-inf")]),
    st.sets(st.integers(), max_size=2),
    st.binary(max_size=5),
    st.dates(),
    st.decimals(allow_nan=False, allow_infinity=False),
)
BAD_PYTHON = st.one_of(
    st.tuples(SAFE_TEXT, NOT_JSON_VALUES).map(
        lambda kv: Bad(
            {"custom_id": "p", "body": {"model": MODEL, f"x{kv[0]}": kv[1]}},
            f"body.x{kv[0]}",
            "not json",
        )
    ),
    NOT_JSON_VALUES.map(
        lambda v: Bad(
            {"custom_id": "p", "body": {"model": MODEL, "messages": [{"content": v}]}},
            "body.messages.0.content",
            "not json",
        )
    ),
)


@dataclass
class Case:
    valid: list[dict[str, Any]]
    items: list[Any]  # the valid requests with the bad one among them
    position: int  # index of the bad one in items
    bad: Bad
    blank_before: list[bool]  # JSONL: a blank line before items[i]

    def jsonl(self) -> bytes:
        out = []
        for blank, item in zip(self.blank_before, self.items, strict=True):
            if blank:
                out.append(b"  \n")
            data = item.data if isinstance(item, Raw) else json.dumps(item).encode("ascii")
            out.append(data + b"\n")
        return b"".join(out)

    @property
    def jsonl_line(self) -> int:
        """The bad request's line number in :meth:`jsonl` (blank lines count)."""
        return self.position + 1 + sum(self.blank_before[: self.position + 1])

    @property
    def line(self) -> int:
        """Its line number when given as a list (the 1-based index)."""
        return self.position + 1


@st.composite
def cases(draw: Any, jsonl: bool, python: bool = False) -> Case:
    n = draw(st.integers(0, 4))
    valid = [
        {"custom_id": f"ok-{i}-{draw(SAFE_TEXT)}", "body": good_body(draw(SAFE_TEXT))}
        for i in range(n)
    ]
    ways = [BAD_REQUESTS, *([BAD_LINES] if jsonl else []), *([BAD_PYTHON] if python else [])]
    bad = draw(st.one_of(*ways))
    if bad.kind == "duplicate":
        if not valid:
            valid = [{"custom_id": "ok-0", "body": good_body()}]
        bad = Bad({"custom_id": valid[0]["custom_id"], "body": good_body()}, bad.field, bad.kind)
        position = draw(st.integers(1, len(valid)))
    else:
        position = draw(st.integers(0, len(valid)))
    items = [*valid[:position], bad.item, *valid[position:]]
    blanks = draw(st.lists(st.booleans(), min_size=len(items), max_size=len(items)))
    return Case(valid, items, position, bad, blanks)


# -- checks -----------------------------------------------------------------------------------


def counts() -> tuple[int, int]:
    return BatchJob.objects.count(), RequestItem.objects.count()


def check_problems(problems: list[dict[str, Any]], line: int, case: Case) -> None:
    """The bad request's problem is there, at its line and field; every problem names a line
    and has a message that can be sent as UTF-8."""
    where = [(p["line"], p["field"]) for p in problems]
    assert (line, case.bad.field) in where, (case.bad, where)
    for p in problems:
        assert p["line"] is not None and p["line"] >= 1, p
        str(p["message"]).encode("utf-8")


def as_dicts(err: ValidationError) -> list[dict[str, Any]]:
    return [p.as_dict() for p in err.problems]


# -- the Python API ---------------------------------------------------------------------------


@examples
@given(case=cases(jsonl=False, python=True))
def test_python_items(case: Case) -> None:
    before = counts()
    with pytest.raises(ValidationError) as info:
        services.create_job(endpoint=ENDPOINT, items=case.items)
    check_problems(as_dicts(info.value), case.line, case)
    assert counts() == before
    # Without the bad request, the same input is accepted.
    job = services.create_job(endpoint=ENDPOINT, items=case.valid)
    assert job.items.count() == len(case.valid)


@examples
@given(case=cases(jsonl=True))
def test_python_jsonl(case: Case) -> None:
    before = counts()
    with pytest.raises(ValidationError) as info:
        services.create_job(endpoint=ENDPOINT, jsonl=io.BytesIO(case.jsonl()))
    check_problems(as_dicts(info.value), case.jsonl_line, case)
    assert counts() == before


# -- the admin upload -------------------------------------------------------------------------


@examples
@given(case=cases(jsonl=True))
def test_admin_upload(case: Case, admin_client: Client) -> None:
    before = counts()
    response = admin_client.post(
        reverse("admin:openai_batches_batchjob_add"),
        {
            "endpoint": ENDPOINT,
            "account": "default",
            "jsonl_file": SimpleUploadedFile("in.jsonl", case.jsonl()),
        },
    )
    assert response.status_code == 200  # the form again, with the problems (not a redirect)
    problems = [p.as_dict() for p in response.context["problems"]]
    check_problems(problems, case.jsonl_line, case)
    assert counts() == before


# -- the REST API -----------------------------------------------------------------------------


@pytest.fixture
def api(django_user_model: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(django_user_model.objects.create_user("fuzz"))
    return client


def api_problems(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 400, (response.status_code, response.content[:500])
    error = response.json()["error"]
    assert error["type"] == "invalid_request"
    return list(error["problems"])


#: Found by a random run: DRF refused a null item itself, naming the list ("items").
NULL_ITEM = Case([], [None], 0, Bad(None, None, "not an object"), [False])


@examples
@given(case=cases(jsonl=False))
@example(case=NULL_ITEM)
def test_api_json(case: Case, api: APIClient) -> None:
    before = counts()
    # ensure_ascii: a lone surrogate travels as the \\ud800 escape, as any client sends it.
    body = json.dumps({"endpoint": ENDPOINT, "items": case.items}).encode("ascii")
    response = api.generic(
        "POST", reverse("openai_batches_api:job-list"), body, content_type="application/json"
    )
    check_problems(api_problems(response), case.line, case)
    assert counts() == before


@examples
@given(case=cases(jsonl=True))
def test_api_upload(case: Case, api: APIClient) -> None:
    before = counts()
    response = api.post(
        reverse("openai_batches_api:job-list"),
        {"endpoint": ENDPOINT, "file": SimpleUploadedFile("in.jsonl", case.jsonl())},
        format="multipart",
    )
    check_problems(api_problems(response), case.jsonl_line, case)
    assert counts() == before
