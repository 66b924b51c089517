"""An offline emulator of OpenAI's Files and Batches API, or, by flavour, of Azure OpenAI's
(``flavor="azure"``) or Anthropic's Message Batches (``flavor="anthropic"``).

Run it as a server (``python -m openai_batches.emulator --port 8765 [--flavor azure]``; it
prints the base URL its SDK takes) or in-process for tests::

    from openai_batches.emulator import Emulator, EmulatorServer

    emu = Emulator(timing="instant")          # manual clock: step it with emu.advance(s)
    with EmulatorServer(emu, port=0) as server:
        client = OpenAI(base_url=server.base_url, api_key="sk-test")

``emu.wsgi_app`` also works behind ``httpx.WSGITransport`` with no sockets at all.

Scripting per-request outcomes from the input file: a body key ``"emulator"`` holding
``{"status_code": 400, "code": "context_length_exceeded", "message": "...", "type": "...",
"param": null}`` makes that request fail (error file, ``response.status_code`` 400,
``error: null``); ``{"stall": true}`` makes it never finish (so a cancel or expiry leaves it
unrun). ``Emulator.fail_request`` / ``stall_request`` do the same by ``custom_id``. See
``app.py`` for the ``/_emulator/`` control API.
"""

from .app import DropConnection, EmulatorApp
from .clock import Clock, ManualClock, RealClock
from .core import PROFILES, ApiError, Emulator, Fault, Limits, RequestFailure, Timing
from .server import EmulatorServer
from .webhooks import WebhookDispatcher, sign

__all__ = [
    "PROFILES",
    "ApiError",
    "Clock",
    "DropConnection",
    "Emulator",
    "EmulatorApp",
    "EmulatorServer",
    "Fault",
    "Limits",
    "ManualClock",
    "RealClock",
    "RequestFailure",
    "Timing",
    "WebhookDispatcher",
    "sign",
]
