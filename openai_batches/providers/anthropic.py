"""Anthropic Message Batches behind the OpenAI-shaped seam
(``shared/reference/other-providers.md`` §2).

**Bodies.** A job for an Anthropic account uses ``/v1/chat/completions`` and OpenAI chat
bodies, so the code that builds requests and reads results is the same for every provider
(``item.result.text`` and the signals work unchanged). Each body is mapped onto a Messages
request when the batch is created (:func:`to_params`: system and developer messages become
``system``, ``max_tokens`` / ``max_completion_tokens`` becomes the required ``max_tokens``,
``stop`` becomes ``stop_sequences``, text and image parts are translated), and every answer
is mapped back onto a chat completion (:func:`to_chat_completion`, cache reads counted as
cached prompt tokens). A body this mapping cannot carry (tools, ``response_format``,
``n``, ...) is refused when the item is added, naming the line and the field, as is a
``custom_id`` outside Anthropic's ``^[a-zA-Z0-9_-]{1,64}$``.

**Upload and create.** Anthropic takes requests inline. ``upload_file`` stages the part's
JSONL in ``STAGING_DIR`` (default: a private folder under the system's temporary folder)
and ``create_batch`` streams it as the ``requests`` of ``POST /v1/messages/batches``, one
line at a time (two passes: the first sizes the body), then deletes the staged file. A
staged file lost between the two steps (a crash on one machine, the retry on another
without a shared ``STAGING_DIR``) fails the part cleanly: the job's submission failed and
it can be submitted again.

**Batches and results.** ``processing_status`` becomes OpenAI's status (``ended`` is
``cancelled`` after a cancel, ``expired`` when requests expired, else ``completed``),
RFC 3339 times become Unix times, the counts become ``total`` / ``completed`` /
``failed``, and the results at ``/v1/messages/batches/{id}/results`` are the batch's
output file (``{id}/results``): streamed and translated line by line (succeeded: 200 and a
chat completion; errored: the status of its error type and OpenAI's error body; canceled /
expired: ``batch_cancelled`` / ``batch_expired``, never run). Deleting that file deletes the
batch (how Anthropic discards results). Results stay for 29 days after creation.

**No metadata.** A batch cannot carry the job's UUID, so after a lost create (or a crash
between create and record) :meth:`AnthropicProvider.find_batches` looks for a batch this
app does not track yet, created after the part was planned, with exactly the part's
number of requests. An ended candidate is verified by the ``custom_id`` set of its results
(an order-free digest, in constant memory) and only a verified batch is taken. One still
running cannot be verified, so while one runs (and none is verified) the lookup fails and
the submission is retried later, when it has ended: a batch of another program in the
same workspace is never taken (the part would track, cancel and delete it), at the price
of recording a lost create only once its batch ends.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import httpx

from ..client import (
    _HEADER_SAFE,
    BatchLookup,
    HeaderAuth,
    OpenAIClient,
    ResponseTooLarge,
    _batches_since,
    _check_batch,
    _check_page,
    _segment,
)
from ..conf import Account
from ..exceptions import APIConnectionError, ConfigurationError, NotFoundError, ProviderError
from .anthropic_wire import (
    CHAT,
    RESULTS,
    body_problems,
    to_chat_completion,
    to_openai_batch,
    to_params,
    to_result_line,
)
from .base import DAY, Adapter, Limits, _where, custom_id_fingerprint

__all__ = [
    "AnthropicProvider",
    "body_problems",
    "to_chat_completion",
    "to_openai_batch",
    "to_params",
    "to_result_line",
]

logger = logging.getLogger(__name__)

DEFAULT_VERSION = "2023-06-01"
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
RETENTION = 29 * DAY
_STAGED = "staged-"
_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}$")

# -- the adapter ----------------------------------------------------------------------------


class AnthropicProvider(Adapter, OpenAIClient):
    """Anthropic (``PROVIDER: "anthropic"``)."""

    name = "anthropic"
    default_base_url = "https://api.anthropic.com"
    limits: ClassVar[Limits] = Limits(
        max_requests=100_000,
        max_bytes=256 * 1024 * 1024,
        max_embedding_inputs=None,
        retention=RETENTION,
    )
    endpoints = (CHAT,)
    keeps_metadata = False
    request_id_header = "request-id"

    @classmethod
    def check_item(cls, endpoint: str, item: Mapping[str, Any]) -> list[tuple[str, str]]:
        problems = []
        custom_id = item.get("custom_id")
        if isinstance(custom_id, str) and not CUSTOM_ID.match(custom_id):
            problems.append(
                (
                    "custom_id",
                    f"{custom_id[:80]!r} is not 1 to 64 of the letters, digits, '_' and '-' "
                    "Anthropic allows",
                )
            )
        body = item.get("body")
        if isinstance(body, Mapping):
            problems += body_problems(body)
        return problems

    @classmethod
    def settings_problems(cls, account: Account) -> list[tuple[str, str]]:
        problems = super().settings_problems(account)
        version = account.api_version
        if version is not None and not (isinstance(version, str) and _VERSION.match(version)):
            problems.append(
                (
                    f"The {account.name!r} account's API_VERSION {version!r} is not an "
                    "anthropic-version.",
                    f"Set {_where(account, 'API_VERSION')} to a date such as "
                    f"'{DEFAULT_VERSION}', or leave it out.",
                )
            )
        return problems

    def _check_credentials(self) -> None:
        account = self.account
        self._check_base_url()
        if not account.api_key and not account.is_local:
            raise ConfigurationError(
                f"No API key for Anthropic account {account.name!r}: set its API_KEY or "
                "ANTHROPIC_API_KEY."
            )
        if account.api_key and not _HEADER_SAFE.fullmatch(account.api_key.reveal()):
            raise ConfigurationError(
                f"The API key of account {account.name!r} contains whitespace or control "
                "characters; check how it is read (a trailing newline is the usual cause)."
            )
        if account.api_version is not None and not _VERSION.match(account.api_version):
            raise ConfigurationError(
                f"The API_VERSION of Anthropic account {account.name!r} must be a date such "
                f"as '{DEFAULT_VERSION}'."
            )

    def _headers(self) -> dict[str, str]:
        return {"anthropic-version": self.account.api_version or DEFAULT_VERSION}

    def _auth(self) -> httpx.Auth:
        return HeaderAuth(self.account.api_key, "x-api-key", prefix="")

    def _batch(self, obj: Any) -> dict[str, Any]:
        return _check_batch(to_openai_batch(obj))

    # -- staging (the "upload") --------------------------------------------------------

    @property
    def staging(self) -> Path:
        root = self.account.staging_dir or os.path.join(
            tempfile.gettempdir(), "openai_batches-staged"
        )
        path = Path(root) / re.sub(r"[^A-Za-z0-9_.-]", "_", self.account.name)
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    def _staged(self, file_id: str) -> Path:
        if not re.fullmatch(_STAGED + r"[0-9a-f]{32}", file_id):
            raise NotFoundError(
                404, {"error": {"message": f"No staged requests {file_id[:80]!r}."}}
            )
        return self.staging / f"{file_id}.jsonl"

    def _describe(self, path: Path) -> dict[str, Any]:
        info = path.stat()
        meta = path.with_suffix(".name")
        return {
            "id": path.stem,
            "object": "file",
            "bytes": info.st_size,
            "created_at": int(info.st_mtime),
            "filename": meta.read_text() if meta.exists() else path.name,
            "purpose": "batch",
            "status": "processed",
        }

    def upload_file(
        self, path: Path, *, filename: str, expires_after: int | None = None
    ) -> dict[str, Any]:
        """Stage the part's JSONL on disk (Anthropic has no file upload); copied in chunks."""
        tmp = self.staging / f".incoming-{os.getpid()}-{time.monotonic_ns()}"
        with open(path, "rb") as src, open(tmp, "wb") as dst:
            os.chmod(tmp, stat.S_IRUSR | stat.S_IWUSR)
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        file_id = _STAGED + os.urandom(16).hex()
        staged = self._staged(file_id)
        staged.with_suffix(".name").write_text(filename)
        os.replace(tmp, staged)
        return self._describe(staged)

    def list_files(self, *, purpose: str | None = None) -> Iterator[dict[str, Any]]:
        if purpose not in (None, "batch"):
            return iter(())
        found = sorted(self.staging.glob(_STAGED + "*.jsonl"), key=lambda p: -p.stat().st_mtime)
        return (self._describe(p) for p in found)

    def delete_file(self, file_id: str) -> None:
        """Remove a staged part, or (for a batch's results) delete the batch at Anthropic."""
        if file_id.endswith(RESULTS):
            batch_id = file_id[: -len(RESULTS)]
            self._call("DELETE", f"v1/messages/batches/{_segment(batch_id)}", None)
            return
        staged = self._staged(file_id)
        staged.unlink(missing_ok=True)
        staged.with_suffix(".name").unlink(missing_ok=True)

    def iter_file_chunks(self, file_id: str) -> Iterator[bytes]:
        """A staged part's bytes, or a batch's results as OpenAI result lines, streamed."""
        if not file_id.endswith(RESULTS):
            staged = self._staged(file_id)
            if not staged.exists():
                # Sent to Anthropic, which keeps no copy to download: the caller rebuilds
                # the input from the database, as for an expired OpenAI file.
                raise NotFoundError(
                    404, {"error": {"message": f"The staged requests {file_id} are gone."}}
                )
            with open(staged, "rb") as fp:
                while chunk := fp.read(1 << 16):
                    yield chunk
            return
        batch_id = file_id[: -len(RESULTS)]
        path = f"v1/messages/batches/{_segment(batch_id)}/results"
        cap = self.max_download_bytes
        size = 0
        with self._exchange("GET", path, self.transfer_deadline) as (response, chunks):
            if not response.is_success:
                raise self._error(response, chunks, "GET", path)
            pending = b""
            for chunk in chunks():
                size += len(chunk)
                if size > cap:
                    raise ResponseTooLarge(
                        f"GET /{path} sent more than MAX_DOWNLOAD_BYTES ({cap:,}); stopped"
                    )
                *lines, pending = (pending + chunk).split(b"\n")
                if len(pending) > self.max_response_bytes:
                    # One result is one JSON answer: past the cap of one, the server is
                    # broken or hostile (and the line would be held, and copied, whole).
                    raise ResponseTooLarge(
                        f"GET /{path} sent a result line longer than MAX_RESPONSE_BYTES "
                        f"({self.max_response_bytes:,}); stopped"
                    )
                out = b"".join(_translate(raw) for raw in lines)
                if out:
                    yield out
            if pending.strip():
                yield _translate(pending)
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) != size:
            raise APIConnectionError(f"GET /{path} ended after {size} of {declared} bytes")

    # -- batches -----------------------------------------------------------------------

    def create_batch(
        self,
        *,
        input_file_id: str,
        endpoint: str,
        completion_window: str,
        metadata: Mapping[str, str],
        output_expires_after: int | None = None,
    ) -> dict[str, Any]:
        """POST the staged part's requests inline (never retried: the services find a
        batch whose answer was lost with :meth:`find_batches`)."""
        staged = self._staged(input_file_id)
        if not staged.exists():
            raise NotFoundError(
                404,
                {
                    "error": {
                        "message": f"The staged requests {input_file_id} are gone (staged on "
                        "another machine, or the staging folder was cleared); submit the job "
                        "again."
                    }
                },
                method="POST",
                path="/v1/messages/batches",
            )
        size = sum(len(piece) for piece in _request_body(staged))
        batch = self._call(
            "POST",
            "v1/messages/batches",
            self._batch,
            retry=False,
            content=_request_body(staged),
            headers={"content-type": "application/json", "content-length": str(size)},
        )
        try:
            self.delete_file(input_file_id)  # the requests are Anthropic's now
        except OSError as err:
            # The batch exists: an error now would read as an unknown outcome.
            logger.warning("could not remove staged requests %s: %s", input_file_id, err)
        return batch

    def retrieve_batch(self, batch_id: str) -> dict[str, Any]:
        return self._call("GET", f"v1/messages/batches/{_segment(batch_id)}", self._batch)

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        return self._call("POST", f"v1/messages/batches/{_segment(batch_id)}/cancel", self._batch)

    def list_batches(self, *, after: str | None = None, limit: int = 100) -> dict[str, Any]:
        """A page, newest first; ``after`` is the last id of the page before."""
        params: dict[str, Any] = {"limit": min(max(limit, 1), 1000)}
        if after:
            params["after_id"] = after
        return self._call("GET", "v1/messages/batches", _check_page(self._batch), params=params)

    def find_batches(self, lookup: BatchLookup) -> list[dict[str, Any]]:
        """The part's batch, by what Anthropic lets us verify (see the module docstring)."""
        candidates = [
            b
            for b in _batches_since(self, lookup.since)
            if (b.get("created_at") or 0) >= lookup.since
            and (b.get("request_counts") or {}).get("total") == lookup.count
        ]
        if candidates:
            taken = lookup.tracked([b["id"] for b in candidates])
            candidates = [b for b in candidates if b["id"] not in taken]
        if not candidates:
            return []
        ended = [b for b in candidates if b.get("output_file_id")]
        running = [b for b in candidates if b.get("status") in ("in_progress", "cancelling")]
        ours = custom_id_fingerprint(lookup.custom_ids()) if ended else ""
        verified = [b for b in ended if self._fingerprint(b) == ours]
        if running and not verified:
            # A running batch cannot be verified, and one that is not ours must never be
            # taken: the part would track, cancel and (deleting its results) delete it.
            raise ProviderError(
                f"{len(running)} Anthropic batch(es) of {lookup.count} requests created since "
                "this part was planned are still running; whether one is the part's is "
                "decided once they end (their results name their custom_ids)."
            )
        # An ended batch without results (archived) cannot be verified either: not taken.
        verified.sort(key=lambda b: (b.get("created_at") or 0, b["id"]))
        return verified

    def _fingerprint(self, batch: Mapping[str, Any]) -> str:
        def custom_ids() -> Iterator[str]:
            pending = b""
            for chunk in self.iter_file_chunks(str(batch["output_file_id"])):
                *lines, pending = (pending + chunk).split(b"\n")
                for raw in lines:
                    if raw.strip():
                        yield str(_result_line(raw, batch["id"]).get("custom_id"))

        return custom_id_fingerprint(custom_ids())


def _result_line(raw: bytes, batch_id: str) -> dict[str, Any]:
    """One translated result line (a dict), or the error that makes a lookup try again
    later: a candidate whose results cannot be read cannot be verified."""
    try:
        line = json.loads(raw)
    except ValueError:
        line = None
    if not isinstance(line, dict):
        raise APIConnectionError(
            f"The results of Anthropic batch {batch_id} hold a line that is not JSON; "
            "it cannot be verified as this part's batch now."
        )
    return line


def _translate(raw: bytes) -> bytes:
    """One raw result line as an OpenAI result line (a line that is not JSON is kept, so
    the ingest reports it)."""
    if not raw.strip():
        return b""
    try:
        line = json.loads(raw)
    except ValueError:
        return raw.rstrip(b"\r") + b"\n"
    return json.dumps(to_result_line(line), separators=(",", ":")).encode() + b"\n"


def _request_body(staged: Path) -> Iterator[bytes]:
    """``{"requests": [...]}`` built from the staged JSONL one line at a time."""
    yield b'{"requests":['
    first = True
    with open(staged, "rb") as fp:
        for raw in fp:
            if not raw.strip():
                continue
            line = json.loads(raw)
            request = {"custom_id": line["custom_id"], "params": to_params(line["body"])}
            yield (b"" if first else b",") + json.dumps(request, separators=(",", ":")).encode()
            first = False
    yield b"]}"
