"""Structured outputs with Pydantic: the request asks for a model's JSON schema, the result
is parsed and validated into an instance of that model.

Needs the optional extra: ``pip install "django-openai-batches[pydantic]"``. A model is kept
on the job (or an item) by its import path, so whichever process ingests the batch (an RQ
worker, ``sync_batches``) can load it::

    from pydantic import BaseModel

    class Sentiment(BaseModel):          # importable as "reviews.schemas.Sentiment"
        sentiment: Literal["positive", "negative", "neutral", "mixed"]
        reason: str

    job = structured.create_job(
        endpoint=Endpoint.CHAT_COMPLETIONS, output_schema=Sentiment, items=items
    )
    ...
    item.result.parsed          # Sentiment(sentiment="positive", reason="...")
    item.result.code            # "parse_failed" when the answer broke the schema

The request gets the strict JSON schema the way the official ``openai`` SDK builds it for
``.parse()`` (``response_format`` for chat completions, ``text.format`` for the Responses
API). A reply that does not validate is a failed parse (``result.parse_error`` says which
field and why), never a crash and never a success.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from django.db import connection, transaction
from django.utils.module_loading import import_string

from .exceptions import ConfigurationError, Problem, ValidationError
from .models import BatchJob, Endpoint, ItemState, RequestItem
from .results import Result, one_line

if TYPE_CHECKING:
    from pydantic import BaseModel

#: The endpoints that take a structured output format.
STRUCTURED_ENDPOINTS = (Endpoint.CHAT_COMPLETIONS, Endpoint.RESPONSES)

#: Items parsed and saved per statement by :func:`store_parsed`.
_CHUNK = 1000


def _pydantic() -> Any:
    try:
        import pydantic
    except ImportError as err:  # pragma: no cover - the extra is part of the test env
        raise ConfigurationError(
            'Structured outputs need Pydantic: pip install "django-openai-batches[pydantic]"'
        ) from err
    return pydantic


def import_path(model: type[BaseModel] | str) -> str:
    """``"package.module.Class"`` for a Pydantic model class (a string is checked as is)."""
    path = model if isinstance(model, str) else f"{model.__module__}.{model.__qualname__}"
    if "<locals>" in path:
        raise ValueError(
            f"{path}: a structured output model must be importable by a worker process; "
            "define it at module level"
        )
    load_model(path)
    return path


@lru_cache(maxsize=128)
def load_model(path: str) -> type[BaseModel]:
    """The Pydantic model class at ``path``; ``ConfigurationError`` if it is not one."""
    pydantic = _pydantic()
    try:
        model = import_string(path)
    except ImportError as err:
        raise ConfigurationError(
            f"Structured output model {path!r} cannot be imported: {err}"
        ) from err
    if not (isinstance(model, type) and issubclass(model, pydantic.BaseModel)):
        raise ConfigurationError(f"Structured output model {path!r} is not a Pydantic BaseModel")
    return model


# -- the request side ------------------------------------------------------------------


def strict_json_schema(model: type[BaseModel] | str) -> dict[str, Any]:
    """The model's JSON schema made strict, as the openai SDK's ``to_strict_json_schema``:
    every object closed (``additionalProperties: false``) with every property required,
    ``None`` defaults dropped, single-entry ``allOf`` flattened and ``$ref`` with siblings
    inlined (strict mode accepts neither)."""
    cls = load_model(model) if isinstance(model, str) else model
    schema = cls.model_json_schema()
    return _strict(schema, root=schema)


def _strict(node: Any, *, root: dict[str, Any]) -> Any:
    if not isinstance(node, dict):
        return node
    for key in ("$defs", "definitions"):
        if isinstance(node.get(key), dict):
            for sub in node[key].values():
                _strict(sub, root=root)
    if node.get("type") == "object" and "additionalProperties" not in node:
        node["additionalProperties"] = False
    if isinstance(node.get("properties"), dict):
        node["required"] = list(node["properties"])
        node["properties"] = {k: _strict(v, root=root) for k, v in node["properties"].items()}
    if isinstance(node.get("items"), dict):
        node["items"] = _strict(node["items"], root=root)
    if isinstance(node.get("anyOf"), list):
        node["anyOf"] = [_strict(v, root=root) for v in node["anyOf"]]
    if isinstance(node.get("allOf"), list):
        if len(node["allOf"]) == 1:
            node.update(_strict(node.pop("allOf")[0], root=root))
        else:
            node["allOf"] = [_strict(v, root=root) for v in node["allOf"]]
    if "default" in node and node["default"] is None:
        node.pop("default")
    ref = node.get("$ref")
    if isinstance(ref, str) and len(node) > 1:
        resolved: Any = root
        for part in ref.removeprefix("#/").split("/"):
            resolved = resolved[part]
        node.update({**resolved, **node})
        node.pop("$ref")
        return _strict(node, root=root)
    return node


def response_format(model: type[BaseModel] | str, endpoint: str) -> tuple[str, dict[str, Any]]:
    """``(body key, value)`` asking ``endpoint`` for ``model``'s schema: chat completions'
    ``response_format``, or the Responses API's ``text`` (whose ``format`` it sets)."""
    cls = load_model(model) if isinstance(model, str) else model
    schema = strict_json_schema(cls)
    if endpoint == Endpoint.CHAT_COMPLETIONS:
        return "response_format", {
            "type": "json_schema",
            "json_schema": {"schema": schema, "name": cls.__name__, "strict": True},
        }
    if endpoint == Endpoint.RESPONSES:
        return "text", {
            "format": {
                "type": "json_schema",
                "name": cls.__name__,
                "schema": schema,
                "strict": True,
            }
        }
    raise ValueError(_no_structured_output(endpoint))


def with_schema(
    body: Mapping[str, Any], model: type[BaseModel] | str, endpoint: str
) -> dict[str, Any]:
    """A copy of ``body`` that asks for ``model``'s schema (other ``text`` options kept)."""
    key, value = response_format(model, endpoint)
    out = dict(body)
    if key == "text" and isinstance(body.get("text"), Mapping):
        value = {**body["text"], **value}
    out[key] = value
    return out


def create_job(
    *,
    output_schema: type[BaseModel] | str,
    items: Iterable[Mapping[str, Any]] | None = None,
    endpoint: str = Endpoint.CHAT_COMPLETIONS,
    **kwargs: Any,
) -> BatchJob:
    """:func:`services.create_job` for a structured output: every body asks for the model's
    schema and every result is parsed into it. An item may name its own model with an
    ``output_schema`` key (a class or import path). All or nothing, like ``create_job``:
    a model that cannot be loaded is a problem naming the item's index and field."""
    from . import services

    if "jsonl" in kwargs:
        # Lines added from JSONL would bypass the schema: refuse rather than half-structure.
        raise TypeError(
            "structured.create_job takes items=, not jsonl= (each body needs the schema)"
        )
    if endpoint not in STRUCTURED_ENDPOINTS:
        raise ValidationError([Problem(None, "endpoint", _no_structured_output(endpoint))])
    job_path = import_path(output_schema)
    with transaction.atomic():
        batch = _Prepared(job_path, endpoint)
        job = batch.run(
            lambda: services.create_job(endpoint=endpoint, items=batch.items(items), **kwargs)
        )
        BatchJob.objects.filter(pk=job.pk).update(output_schema=job_path)
        job.output_schema = job_path
        batch.save_own_models(job)
    return job


def add_items(job: BatchJob, items: Iterable[Mapping[str, Any]]) -> int:
    """:func:`services.add_items` for a job made by :func:`create_job`: each body gets the
    job's schema (or its own ``output_schema``'s). All or nothing."""
    from . import services

    if not job.output_schema:
        raise ValidationError(
            [Problem(None, "output_schema", f"job {job.pk} has no structured output model")]
        )
    with transaction.atomic():
        batch = _Prepared(job.output_schema, job.endpoint)
        added = batch.run(lambda: services.add_items(job, batch.items(items)))
        batch.save_own_models(job)
    return added


def _no_structured_output(endpoint: str) -> str:
    return f"{str(endpoint)!r} takes no structured output; use one of {', '.join(STRUCTURED_ENDPOINTS)}"


class _Prepared:
    """Items on their way to ``services``: schema added to each body, per-item models noted,
    problems with ``output_schema`` kept with the item's index."""

    def __init__(self, job_path: str, endpoint: str) -> None:
        self.job_path = job_path
        self.endpoint = endpoint
        self.own: dict[str, list[str]] = {}  # per-item models that differ from the job's
        self.problems: list[Problem] = []

    def items(self, items: Iterable[Mapping[str, Any]] | None) -> Iterator[Mapping[str, Any]]:
        for index, item in enumerate(items or ()):
            if not isinstance(item, Mapping) or not isinstance(item.get("body"), Mapping):
                yield item  # services reports it, with its index
                continue
            rest = {k: v for k, v in item.items() if k != "output_schema"}
            try:
                path = import_path(item.get("output_schema") or self.job_path)
            except (ConfigurationError, ValueError, TypeError) as err:
                self.problems.append(Problem(index, "output_schema", str(err)))
                yield rest  # still validated by services, so every problem is listed
                continue
            if path != self.job_path:
                self.own.setdefault(path, []).append(str(item.get("custom_id")))
            yield {**rest, "body": with_schema(item["body"], path, self.endpoint)}

    def run(self, call: Any) -> Any:
        """``call()``, with this batch's problems merged into its ValidationError, or raised
        on their own (rolling the caller's transaction back) when it had none."""
        try:
            result = call()
        except ValidationError as err:
            if not self.problems:
                raise
            merged = sorted(
                [*err.problems, *self.problems], key=lambda p: -1 if p.index is None else p.index
            )
            raise type(err)(merged, truncated=err.truncated) from err
        if self.problems:
            raise ValidationError(self.problems)
        return result

    def save_own_models(self, job: BatchJob) -> None:
        for path, custom_ids in self.own.items():
            for start in range(0, len(custom_ids), _CHUNK):
                RequestItem.objects.filter(
                    job=job, custom_id__in=custom_ids[start : start + _CHUNK]
                ).update(output_schema=path)


# -- the result side -------------------------------------------------------------------


def _errors(err: Any) -> str:
    parts = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(x) for x in e.get("loc") or ()) or "(root)"
        parts.append(f"{loc}: {e.get('msg')}")
    return one_line("; ".join(parts))


def parse_text(path: str, text: str | None, *, truncated: bool = False) -> tuple[Any, str]:
    """``(validated JSON, "")`` for an answer that fits the model at ``path``, else
    ``(None, why)``; never raises for a bad answer."""
    pydantic = _pydantic()
    model = load_model(path)
    if not text:
        return None, "the answer is empty"
    try:
        instance = model.model_validate_json(text)
    except pydantic.ValidationError as err:
        why = _errors(err)
        if truncated:
            why = f"the answer was cut at the output token limit: {why}"
        return None, why
    return instance.model_dump(mode="json"), ""


def store_parsed(job: BatchJob | int) -> int:
    """Parse and store the structured output of every succeeded, not yet parsed item of
    ``job``; returns how many it parsed.

    Meant to run once per job right after ingest, in its transaction, so receivers and the
    export read stored JSON instead of each parsing (and saving) on first access. Reads plain
    values in pk-ordered chunks and writes each chunk with one ``executemany`` UPDATE by pk
    (``bulk_update``'s CASE/WHEN costs about a hundred times more here).
    """
    job_obj = job if isinstance(job, BatchJob) else BatchJob.objects.get(pk=job)
    qs = RequestItem.objects.filter(
        job_id=job_obj.pk, state=ItemState.SUCCEEDED, parsed__isnull=True, parse_error=""
    )
    if not job_obj.output_schema:
        qs = qs.exclude(output_schema="")
    rows = qs.order_by("pk").values_list("pk", "state", "status_code", "response", "output_schema")
    done = 0
    batch: list[tuple[str | None, str, int]] = []
    # One transaction: in autocommit, SQLite would commit (and sync) each row of executemany.
    with transaction.atomic():
        for pk, state, status_code, response, own in rows.iterator(chunk_size=_CHUNK):
            result = Result(
                job_obj.endpoint, state, status_code, response, schema=own or job_obj.output_schema
            )
            parsed, error = result.parsed_json, result.parse_error
            batch.append((None if parsed is None else json.dumps(parsed), error, pk))
            if len(batch) >= _CHUNK:
                done += _save(batch)
        return done + _save(batch)


def _save(batch: list[tuple[str | None, str, int]]) -> int:
    if not batch:
        return 0
    table = connection.ops.quote_name(RequestItem._meta.db_table)
    # Identifiers come from the model's metadata, never from input.
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # One statement per chunk: the values travel as three arrays.
            parsed, errors, pks = (list(column) for column in zip(*batch, strict=True))
            cursor.execute(
                f"UPDATE {table} AS i SET parsed = v.parsed::jsonb, parse_error = v.error "  # noqa: S608
                "FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS v(parsed, error, id) "
                "WHERE i.id = v.id",
                [parsed, errors, pks],
            )
        else:
            sql = f"UPDATE {table} SET parsed = %s, parse_error = %s WHERE id = %s"  # noqa: S608
            cursor.executemany(sql, batch)
    n = len(batch)
    batch.clear()
    return n


def schema_fields(path: str) -> list[str]:
    """The model's fields, nested objects flattened with dots (``home.city``), in order;
    a union or list is one field. For CSV columns, read back with :func:`field_value`."""
    schema = strict_json_schema(path)
    return list(_flat_names(schema, "", schema, 0))


def _flat_names(
    node: Mapping[str, Any], prefix: str, root: Mapping[str, Any], depth: int
) -> Iterator[str]:
    ref = node.get("$ref")
    if isinstance(ref, str) and depth < 8:
        target: Any = root
        for part in ref.removeprefix("#/").split("/"):
            target = target.get(part, {}) if isinstance(target, Mapping) else {}
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    props = node.get("properties")
    if not isinstance(props, Mapping) or depth >= 8:  # a leaf, or a recursive model's depth cap
        yield prefix.rstrip(".")
        return
    for name, sub in props.items():
        yield from _flat_names(
            sub if isinstance(sub, Mapping) else {}, f"{prefix}{name}.", root, depth + 1
        )


def field_value(parsed: Any, dotted: str) -> Any:
    """The value at ``home.city`` in parsed JSON (None where a level is missing or null)."""
    value = parsed
    for part in dotted.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value
