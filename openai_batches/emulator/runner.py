"""The request runner: what happens to a batch's requests between create and the result
files, for every flavour.

:func:`validate_input` reads the input file line by line (the file-level checks, the
scripted failures and stalls, the token budget) and keeps only line offsets and a byte of
flags per line; :func:`write_results` runs the requests in a deterministic shuffled order and
writes the result files, asking the flavour for each line's shape. Both stream: a 50,000-line,
200 MB batch costs a few megabytes.
"""

from __future__ import annotations

import codecs
import json
import os
import random
from array import array
from typing import TYPE_CHECKING, Any, BinaryIO

from . import ids
from .records import FileRecord, RequestFailure, _Batch, take_scripted
from .responses import DEFAULT_MODELS, embedding_input_count, estimate_input_tokens, usage_of

if TYPE_CHECKING:
    from .core import Emulator

URL_MISMATCH_MESSAGE = "The URL provided for this request does not prefix-match the batch endpoint"

#: Per-line flags fixed at validation: the request fails when it runs / never finishes.
FLAG_FAIL = 1
FLAG_STALL = 2


def validate_input(emu: Emulator, b: _Batch) -> list[dict[str, Any]]:
    """Check the input file line by line; fill offsets/flags/order on success."""
    errors: list[dict[str, Any]] = []
    cap = emu.limits.max_reported_errors

    def add(code: str, message: str, param: str | None = None, line: int | None = None) -> None:
        if len(errors) < cap:
            errors.append({"code": code, "message": message, "param": param, "line": line})

    rec = emu._files.get(b.input_file_id)
    if rec is None or not os.path.exists(rec.path):
        add("invalid_file", f"The input file {b.input_file_id} could not be read.")
        return errors
    if rec.bytes > emu.limits.max_batch_file_bytes:
        add(
            "file_too_large",
            f"The batch input file is larger than the {emu.limits.max_batch_file_bytes:,} "
            "byte limit.",
        )
        return errors
    offsets: array = array("q")
    flags = bytearray()
    seen: dict[str, int] = {}
    model: str | None = None
    tokens = 0
    embedding_inputs = 0
    count = 0
    pos = 0
    flavor = emu.flavor
    with open(rec.path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            start, pos = pos, pos + len(raw)
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                refused = flavor.bom_error()
                if refused is not None:
                    add(*refused)
                    return errors
            if not raw.strip():
                continue
            count += 1
            if count > emu.limits.max_requests:
                errors.clear()
                add(
                    "too_many_tasks",
                    f"The batch input file has more than {emu.limits.max_requests:,} "
                    "requests; the limit is "
                    f"{emu.limits.max_requests:,} requests per batch.",
                )
                return errors
            try:
                obj = json.loads(raw)
            except ValueError:
                obj = None
            if not isinstance(obj, dict):
                add(
                    "invalid_json_line",
                    "This line is not parseable as valid JSON.",
                    None,
                    lineno,
                )
                continue
            missing = [k for k in ("custom_id", "method", "url", "body") if k not in obj]
            for key in missing:
                add(
                    "missing_required_parameter",
                    f"Missing required parameter: '{key}'.",
                    key,
                    lineno,
                )
            if missing:
                continue
            custom_id = obj["custom_id"]
            if not isinstance(custom_id, str) or not custom_id:
                add(
                    "invalid_value",
                    "custom_id must be a non-empty string.",
                    "custom_id",
                    lineno,
                )
                continue
            if custom_id in seen:
                add(
                    "duplicate_custom_id",
                    f"The custom_id '{custom_id}' is used more than once in this file "
                    f"(first on line {seen[custom_id]}). Each custom_id must be unique.",
                    "custom_id",
                    lineno,
                )
            else:
                seen[custom_id] = lineno
            if obj["method"] != "POST":
                add(
                    "invalid_method",
                    f"Invalid method '{obj['method']}'. Only POST is supported.",
                    "method",
                    lineno,
                )
            if flavor.line_endpoint(b, obj["url"]) is None:
                add("url_mismatch", URL_MISMATCH_MESSAGE, "url", lineno)
            body = obj["body"]
            if not isinstance(body, dict):
                add("invalid_body", "The body must be a JSON object.", "body", lineno)
                continue
            if flavor.one_model:
                line_model = body.get("model", DEFAULT_MODELS.get(b.run_endpoint))
                refused = flavor.model_error(line_model) if isinstance(line_model, str) else None
                if not isinstance(line_model, str) or not line_model:
                    add(
                        "missing_required_parameter",
                        "Missing required parameter: 'body.model'.",
                        "body.model",
                        lineno,
                    )
                elif refused is not None:
                    add(refused[0], refused[1], "body.model", lineno)
                elif model is None:
                    model = line_model
                elif line_model != model:
                    add(
                        "model_mismatch",
                        f"All requests in a batch must use the same model: this line uses "
                        f"'{line_model}' but earlier lines use '{model}'.",
                        "body.model",
                        lineno,
                    )
            if b.run_endpoint == "/v1/embeddings":
                embedding_inputs += embedding_input_count(body)
            tokens += estimate_input_tokens(b.run_endpoint, body)
            marker = body.get("emulator")
            flag = 0
            scripted = take_scripted(emu._failures, emu._failure_uses, custom_id)
            if scripted is not None:
                b.scripted[custom_id] = scripted
            if (
                flavor.check_body(b.run_endpoint, body) is not None
                or scripted is not None
                or (
                    isinstance(marker, dict)
                    and isinstance(marker.get("status_code"), int)
                    and marker["status_code"] >= 400
                )
            ):
                flag |= FLAG_FAIL
            stall = take_scripted(emu._stalls, emu._stall_uses, custom_id) is not None
            if stall or (isinstance(marker, dict) and marker.get("stall")):
                flag |= FLAG_STALL
            offsets.append(start)
            flags.append(flag)
    if count == 0:
        add("empty_file", "The batch input file is empty.")
    if embedding_inputs > emu.limits.max_embedding_inputs:
        add(
            "too_many_embedding_inputs",
            f"The batch has {embedding_inputs:,} embedding inputs; the limit is "
            f"{emu.limits.max_embedding_inputs:,} per batch.",
        )
    if errors:
        return errors
    refusal = emu.budget_refusal(model, tokens)
    if refusal is not None:
        add("token_limit_exceeded", refusal)
        return errors
    b.model = model
    b.tokens = tokens
    b.offsets = offsets
    b.flags = flags
    # Processing order: a shuffle seeded by the batch id (deterministic, not the input
    # order); stalled requests go last because they never finish.
    runnable = [i for i in range(len(flags)) if not flags[i] & FLAG_STALL]
    random.Random(b.id).shuffle(runnable)
    stalled = [i for i in range(len(flags)) if flags[i] & FLAG_STALL]
    b.order = array("l", runnable + stalled)
    b.runnable = len(runnable)
    prefix = array("l", [0])
    failed = 0
    for i in runnable:
        failed += flags[i] & FLAG_FAIL
        prefix.append(failed)
    b.fail_prefix = prefix
    return errors


def failure_for(
    emu: Emulator, b: _Batch, custom_id: str, body: dict[str, Any]
) -> RequestFailure | None:
    """How a request flagged to fail at validation fails when it runs."""
    # A body its endpoint refuses fails as the real API fails it, before anything a
    # test scripted: the request never gets as far as the model.
    refused = emu.flavor.check_body(b.run_endpoint, body)
    if refused is not None:
        return RequestFailure(
            status_code=400,
            code=refused.code,
            message=refused.message,
            type="invalid_request_error",
            param=refused.param,
        )
    scripted = b.scripted.get(custom_id)
    if scripted is not None:
        return scripted
    marker = body.get("emulator")
    if isinstance(marker, dict) and isinstance(marker.get("status_code"), int):
        status = marker["status_code"]
        if status >= 400:
            return RequestFailure(
                status_code=status,
                code=marker.get("code", "context_length_exceeded" if status < 500 else None),
                message=marker.get("message", f"Emulated failure with status {status}."),
                type=marker.get("type"),
                param=marker.get("param"),
            )
    return None


def write_results(emu: Emulator, b: _Batch, done: int, not_run: str, t: float) -> None:
    """Write the result files: ``done`` requests ran, the rest never did (``not_run`` says
    why: ``"expired"`` or ``"cancelled"``). The flavour shapes each line and says which file
    (``"output"`` or ``"error"``) it goes to."""
    flavor = emu.flavor
    rec = emu._files.get(b.input_file_id)
    path = rec.path if rec is not None else os.path.join(emu._files_dir, b.input_file_id)
    paths = {kind: os.path.join(emu._files_dir, ids.file_id()) for kind in ("output", "error")}
    completed = failed = 0
    in_tok = out_tok = reasoning = 0
    sizes = {"output": 0, "error": 0}
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    # Result files are opened on first write: most small batches need only one of them.
    sinks: dict[str, BinaryIO] = {}

    def write(kind: str, data: bytes) -> None:
        sink = sinks.get(kind)
        if sink is None:
            sink = sinks[kind] = open(  # noqa: SIM115 - closed in the finally below
                paths[kind], "wb", buffering=256 * 1024
            )
        sink.write(data)
        sizes[kind] += len(data)

    try:
        with open(path, "rb") as src:
            for rank, idx in enumerate(b.order):
                src.seek(b.offsets[idx])
                obj = json.loads(src.readline())
                custom_id = obj["custom_id"]
                status: int | None = None
                payload: dict[str, Any] | None = None
                failure: RequestFailure | None = None
                if rank < done:
                    body = obj["body"]
                    ran_at = int(b.run_started + b.run_duration * rank / max(1, b.runnable))
                    # The flag fixed at validation decides, so live request_counts
                    # and the final files always agree.
                    if b.flags[idx] & FLAG_FAIL:
                        failure = failure_for(emu, b, custom_id, body) or RequestFailure()
                        failed += 1
                        payload = failure.line_body()
                        status = failure.status_code
                    else:
                        completed += 1
                        payload = flavor.result_body(b, body, ran_at, b.id + custom_id)
                        status = 200
                        i, o, r = usage_of(b.run_endpoint, payload)
                        in_tok, out_tok, reasoning = in_tok + i, out_tok + o, reasoning + r
                target, line = flavor.result_line(
                    b, custom_id, status=status, payload=payload, failure=failure, not_run=not_run
                )
                write(target, (dumps(line) + "\n").encode())
        if flavor.empty_error_file:
            write("error", b"")
    finally:
        for sink in sinks.values():
            sink.close()
    created = int(t)
    expires = flavor.results_expire_at(b, created)
    for kind in ("output", "error"):
        if kind not in sinks:
            continue
        file_id = os.path.basename(paths[kind])
        emu._store_file(
            FileRecord(
                id=file_id,
                seq=emu._next_seq(),
                filename=f"{b.id}_{kind}.jsonl",
                purpose="batch_output",
                bytes=sizes[kind],
                created_at=created,
                expires_at=expires,
                path=paths[kind],
            )
        )
        if kind == "output":
            b.output_file_id = file_id
        else:
            b.error_file_id = file_id
    b.final_counts = (b.total, completed, failed)
    b.usage = {
        "input_tokens": in_tok,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": out_tok,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": in_tok + out_tok,
    }


def estimate_file(emu: Emulator, b: _Batch) -> tuple[str | None, int]:
    """(model of the first line, estimated input tokens) of a batch's input file, read at
    create for a provider that checks its quota synchronously (Azure's fail-fast regions).
    Lines that do not parse count nothing here: validation reports them later."""
    rec = emu._files.get(b.input_file_id)
    model: str | None = None
    tokens = 0
    if rec is None:
        return model, tokens
    with open(rec.path, "rb") as fh:
        for raw in fh:
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(obj, dict) or not isinstance(obj.get("body"), dict):
                continue
            endpoint = emu.flavor.line_endpoint(b, obj.get("url"))
            if endpoint is None:
                continue
            if model is None and isinstance(obj["body"].get("model"), str):
                model = obj["body"]["model"]
            tokens += estimate_input_tokens(endpoint, obj["body"])
    return model, tokens
