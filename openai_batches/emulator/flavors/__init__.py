"""The emulator's flavours: one module per provider's wire format over the shared core.

The core (:mod:`openai_batches.emulator.core`) owns what every provider has in common: files
on disk, the clock, the batch lifecycle, scripted faults and failures, token budgets and
webhooks. A :class:`Flavor` owns what differs: the URLs and how they are routed, the
authentication headers, the error body, how a batch and a result line look on the wire,
the limits, and the few lifecycle rules that differ (Azure never expires a batch;
Anthropic has no batch-level validation failure and no webhooks).

``Emulator(flavor="azure")`` picks one by name; :data:`FLAVORS` lists them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from ..records import THIRTY_DAYS, ApiError, Limits, RequestFailure, _Batch
from ..validation import BodyError, check_body

if TYPE_CHECKING:
    from ..app import EmulatorApp, Request
    from ..core import Emulator


class Flavor:
    """What one provider's API looks like. Subclasses override the wire; the defaults are
    the behaviour the core had before flavours existed (OpenAI's)."""

    name: ClassVar[str] = ""
    #: The path clients put after the server's root URL (``EmulatorServer.base_url``).
    base_path: ClassVar[str] = "/v1"
    #: A batch that has not finished 24 hours after its creation expires.
    expires: ClassVar[bool] = True
    #: Every line of a batch must name the same model.
    one_model: ClassVar[bool] = True
    #: Batch events are sent to a configured webhook.
    webhooks: ClassVar[bool] = True
    #: A successful batch still gets an (empty) error file.
    empty_error_file: ClassVar[bool] = False
    #: Seconds until a batch input file uploaded without ``expires_after`` expires.
    #: openai-batch-api.md §1.1: "Default expiry: files with ``purpose=batch`` expire after
    #: **30 days**; all other purposes are kept until deleted (SPEC ``FileExpirationAfter``)."
    default_input_expiry: ClassVar[int | None] = THIRTY_DAYS

    def __init__(self, emulator: Emulator) -> None:
        # Subclasses take their own options as keyword arguments (see ``make_flavor``).
        self.emu = emulator

    # ------------------------------------------------------------------ configuration

    def default_limits(self) -> Limits:
        return Limits()

    def new_batch_id(self) -> str:
        from .. import ids

        return ids.batch_id()

    # ------------------------------------------------------------------ the request runner

    def line_endpoint(self, b: _Batch, url: Any) -> str | None:
        """The endpoint a line's ``url`` runs on, or None when it does not fit the batch."""
        if isinstance(url, str) and url.rstrip("/") == b.endpoint:
            return b.endpoint
        return None

    def model_error(self, model: str) -> tuple[str, str] | None:
        """(code, message) when a line's ``model`` cannot run here (e.g. no such deployment)."""
        return None

    def check_body(self, endpoint: str, body: dict[str, Any]) -> BodyError | None:
        """Why the endpoint refuses this request body when it runs (None: it takes it)."""
        return check_body(endpoint, body)

    def result_body(self, b: _Batch, body: dict[str, Any], ran_at: int, key: str) -> dict[str, Any]:
        """The answer a request that ran successfully gets."""
        from ..responses import response_body

        return response_body(b.run_endpoint, body, b.model or "", ran_at, key)

    def result_line(
        self,
        b: _Batch,
        custom_id: str,
        *,
        status: int | None,
        payload: dict[str, Any] | None,
        failure: RequestFailure | None,
        not_run: str,
    ) -> tuple[str, dict[str, Any]]:
        """(``"output"`` or ``"error"``, the line) for one request of a finished batch.

        ``status``/``payload`` are set when the request ran (``failure`` too when it
        failed); otherwise ``not_run`` says why it never did (``"expired"`` or
        ``"cancelled"``)."""
        raise NotImplementedError

    def results_expire_at(self, b: _Batch, created: int) -> int | None:
        """When the result files written at ``created`` expire."""
        # openai-batch-api.md §2.3: "The output file is deleted **30 days after the batch
        # completes** by default (GUIDE). ``output_expires_after`` overrides this for output
        # and error files"; §1.2: "The anchor is the creation time of the output/error file".
        return created + (b.output_expires_after or THIRTY_DAYS)

    # ------------------------------------------------------------------ the wire

    def present(self, b: _Batch, now: float) -> dict[str, Any]:
        """The batch object as this provider's API returns it."""
        raise NotImplementedError

    def create_batch(self, payload: Any, request: Request | None = None) -> dict[str, Any]:
        """Create a batch from a create call's JSON body."""
        raise NotImplementedError

    def authenticate(self, environ: dict[str, Any]) -> None:
        """Raise the provider's 401 unless the request carries an accepted credential."""
        raise NotImplementedError

    def route(self, app: EmulatorApp, request: Request) -> Iterable[bytes]:
        """Answer one API call (after auth and faults)."""
        raise NotImplementedError

    def is_download(self, path: str) -> bool:
        """Whether ``path`` streams a file's bytes (a ``truncate`` fault cuts it mid-stream)."""
        return False

    def bom_error(self) -> tuple[str, str] | None:
        """(code, message) failing a batch whose input file starts with a UTF-8 BOM."""
        return None

    def not_found(self, kind: str, object_id: str) -> ApiError:
        """The 404 for a missing ``kind`` (``"Batch"``, ``"File"``) object."""

        return ApiError(404, f"No such {kind} object: {object_id}", param="id")

    def cannot_find_file(self, file_id: str) -> ApiError:
        """The 400 for a batch create naming an input file that does not exist."""

        return ApiError(400, f"Cannot find file {file_id}.", param="input_file_id")

    def error_body(self, err: ApiError, request_id: str) -> dict[str, Any]:
        return err.body()

    def response_headers(self, request_id: str) -> list[tuple[str, str]]:
        """Headers on every API answer (request ids, versions)."""
        return [("x-request-id", request_id)]

    def ratelimit_headers(
        self, limit: int, remaining: int, reset: float, tokens: int
    ) -> dict[str, str]:
        """The rate-limit headers of one call: ``remaining`` of ``limit`` requests per
        minute, the window resetting in ``reset`` seconds; ``tokens`` per minute."""
        return {}


#: Flavour name -> class. Imported lazily so ``core`` and the flavours can import each other.
def flavor_classes() -> dict[str, type[Flavor]]:
    from .anthropic import AnthropicFlavor
    from .azure import AzureFlavor
    from .groq import GroqFlavor
    from .openai import OpenAIFlavor

    return {
        "openai": OpenAIFlavor,
        "azure": AzureFlavor,
        "anthropic": AnthropicFlavor,
        "groq": GroqFlavor,
    }


FLAVORS = ("openai", "azure", "anthropic", "groq")


def make_flavor(name: str, emulator: Emulator, options: dict[str, Any]) -> Flavor:
    """The flavour ``name`` for ``emulator``; ``options`` are the flavour's own settings."""
    classes = flavor_classes()
    if name not in classes:
        raise ValueError(f"flavor must be one of {list(FLAVORS)}, not {name!r}")
    try:
        return classes[name](emulator, **options)
    except TypeError as err:
        raise ValueError(f"bad option for the {name} flavor: {err}") from err
