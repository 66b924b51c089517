"""Helpers for the provider adapter tests: an emulator of one flavour over real HTTP with
an ``OPENAI_BATCHES`` account pointing at it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from django.conf import settings
from django.test import override_settings

from openai_batches.emulator import Emulator, EmulatorServer

KEY = "provider-key-0123456789"


@contextlib.contextmanager
def account_on_emulator(
    flavor: str,
    account: Callable[[EmulatorServer], dict[str, Any]],
    *,
    name: str = "acct",
    api_key: str | None = KEY,
    extra_settings: dict[str, Any] | None = None,
    **options: Any,
) -> Iterator[tuple[Emulator, EmulatorServer]]:
    """Start the ``flavor`` emulator (manual clock, instant timings) and configure the
    account ``name`` as ``account(server)`` says, for the block."""
    emulator = Emulator(timing="instant", api_key=api_key, flavor=flavor, flavor_options=options)
    server = EmulatorServer(emulator, port=0)
    server.start()
    try:
        current = dict(settings.OPENAI_BATCHES)
        accounts = {**current.get("ACCOUNTS", {}), name: account(server)}
        new = {**current, "ACCOUNTS": accounts, **(extra_settings or {})}
        with override_settings(OPENAI_BATCHES=new):
            yield emulator, server
    finally:
        server.stop()
        emulator.close()
