"""OpenAI's wire conventions shared by the OpenAI-shaped flavours (OpenAI, Azure): list
bodies, parameter errors in the API's own words, ``expires_after`` and ``metadata`` checks,
and the rate-limit header format."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from ..records import MIN_EXPIRES_AFTER, THIRTY_DAYS, ApiError


def duration(seconds: float) -> str:
    """A wait as OpenAI's rate-limit headers write it: ``20ms``, ``8.64s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    minutes, rest = divmod(round(seconds, 2), 60)
    secs = f"{rest:.2f}".rstrip("0").rstrip(".")
    return f"{int(minutes)}m{secs}s" if minutes else f"{secs}s"


def list_body(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        # Never "data: [] with has_more: true": the SDK's paginator would stop silently.
        "has_more": bool(data) and has_more,
    }


def missing(key: str) -> ApiError:
    return ApiError(
        400,
        f"Missing required parameter: '{key}'.",
        param=key,
        code="missing_required_parameter",
    )


def invalid_value(param: str, value: Any, allowed: Iterable[str]) -> ApiError:
    choices = ", ".join(f"'{a}'" for a in allowed)
    return ApiError(
        400,
        f"Invalid value: '{value}'. Supported values are: {choices}.",
        param=param,
        code="invalid_value",
    )


_JSON_TYPE_NAMES = {
    bool: "a boolean",
    int: "an integer",
    float: "a decimal",
    str: "a string",
    list: "an array",
    dict: "an object",
    type(None): "null",
}


def invalid_type(param: str, expected: str, value: Any) -> ApiError:
    got = _JSON_TYPE_NAMES.get(type(value), "an unsupported type")
    return ApiError(
        400,
        f"Invalid type for '{param}': expected {expected}, but got {got} instead.",
        param=param,
        code="invalid_type",
    )


def expiry_seconds(value: int, param: str, minimum: int = MIN_EXPIRES_AFTER) -> int:
    if value < minimum:
        raise ApiError(
            400,
            f"Invalid '{param}': integer below minimum value. Expected a value >= "
            f"{minimum}, but got {value} instead.",
            param=param,
            code="integer_below_min_value",
        )
    if value > THIRTY_DAYS:
        raise ApiError(
            400,
            f"Invalid '{param}': integer above maximum value. Expected a value <= "
            f"{THIRTY_DAYS}, but got {value} instead.",
            param=param,
            code="integer_above_max_value",
        )
    return value


def expiry_anchor(anchor: Any, param: str) -> None:
    if not isinstance(anchor, str):
        raise invalid_type(f"{param}.anchor", "a string", anchor)
    if anchor != "created_at":
        raise invalid_value(f"{param}.anchor", anchor, ("created_at",))


def json_expires_after(value: Any, param: str, minimum: int = MIN_EXPIRES_AFTER) -> int | None:
    """``output_expires_after`` of a JSON body: an object with exactly ``anchor`` (only
    ``created_at``) and an integer ``seconds`` in 3600..2592000 (the SPEC's schema;
    openai-batch-api.md §1.2: "``{anchor: "created_at", seconds}``, where ``seconds`` is
    3600 to 2592000")."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid_type(param, "an object", value)
    for key in value:
        if key not in ("anchor", "seconds"):
            raise ApiError(
                400,
                f"Unknown parameter: '{param}.{key}'.",
                param=f"{param}.{key}",
                code="unknown_parameter",
            )
    for key in ("anchor", "seconds"):
        if key not in value:
            raise missing(f"{param}.{key}")
    expiry_anchor(value["anchor"], param)
    seconds = value["seconds"]
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise invalid_type(f"{param}.seconds", "an integer", seconds)
    return expiry_seconds(seconds, f"{param}.seconds", minimum)


_FORM_INTEGER = re.compile(r"-?[0-9]+")


def form_expires_after(
    fields: dict[str, str], minimum: int = MIN_EXPIRES_AFTER, *, dots: bool = False
) -> int | None:
    """``expires_after`` of a multipart upload, flattened as ``expires_after[anchor]`` and
    ``expires_after[seconds]`` (how the SDK sends it); both or neither must be there.
    ``dots`` also takes ``expires_after.seconds`` (how Azure's REST samples write it)."""
    param = "expires_after"
    if dots:
        fields = {
            (f"{param}[{k[len(param) + 1 :]}]" if k.startswith(param + ".") else k): v
            for k, v in fields.items()
        }
    given = {k: v for k, v in fields.items() if k == param or k.startswith(param + "[")}
    if not given:
        return None
    for key in given:
        if key not in ("expires_after[anchor]", "expires_after[seconds]"):
            name = key.replace("[", ".").replace("]", "")
            raise ApiError(
                400, f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter"
            )
    for key in ("anchor", "seconds"):
        if f"{param}[{key}]" not in given:
            raise missing(f"{param}.{key}")
    expiry_anchor(given["expires_after[anchor]"], param)
    raw = given["expires_after[seconds]"]
    if not _FORM_INTEGER.fullmatch(raw):
        raise invalid_type(f"{param}.seconds", "an integer", raw)
    return expiry_seconds(int(raw), f"{param}.seconds", minimum)


def check_metadata(metadata: Any) -> dict[str, str] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise ApiError(400, "Invalid type for 'metadata': expected an object.", param="metadata")
    if len(metadata) > 16:
        raise ApiError(
            400,
            f"Invalid 'metadata': too many properties. Expected at most 16, got {len(metadata)}.",
            param="metadata",
        )
    for key, value in metadata.items():
        if len(key) > 64:
            raise ApiError(
                400,
                f"Invalid 'metadata': key '{key[:20]}...' is longer than 64 characters.",
                param="metadata",
            )
        if not isinstance(value, str) or len(value) > 512:
            raise ApiError(
                400,
                f"Invalid 'metadata': the value of '{key}' must be a string of at most "
                "512 characters.",
                param="metadata",
            )
    return dict(metadata)
