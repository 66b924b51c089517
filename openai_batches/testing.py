"""Test helpers: run the bundled OpenAI emulator for a test and point the app at it.

Plain context manager (any test runner)::

    from openai_batches.testing import running_emulator

    with running_emulator() as emu:
        ...                      # settings.OPENAI_BATCHES["BASE_URL"] is emu.base_url
        emu.advance(60)          # step the manual clock; due transitions run at once

pytest (add ``pytest_plugins = ["openai_batches.testing"]`` to your root ``conftest.py``)::

    def test_submit(openai_emulator):
        job = submit_something()
        openai_emulator.advance(1)          # or just poll: "instant" batches finish on the
        ...                                 # first request after their create

The default is a manual clock with ``instant`` timings: a batch is ``completed`` (or
``failed``) on the first request after its create, and nothing else moves until the test
calls ``advance(seconds)`` (e.g. ``advance(86400)`` to expire a batch that has a stalled
request). Pass ``timing="fast"`` (real clock) to watch batches move in real time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from openai_batches.emulator import Emulator, EmulatorServer

__all__ = ["EmulatorHandle", "openai_emulator", "running_emulator"]

DEFAULT_API_KEY = "sk-emulator-test"


@dataclass
class EmulatorHandle:
    """A running emulator: the :class:`Emulator`, its server, and how to reach it.

    Attribute access falls through to the emulator, so ``handle.advance(60)``,
    ``handle.inject_fault(...)`` and ``handle.get_batch(id)`` work directly.
    """

    emulator: Emulator
    server: EmulatorServer
    base_url: str
    api_key: str

    def __getattr__(self, name: str) -> Any:
        return getattr(self.emulator, name)


def _override_settings(base_url: str, api_key: str) -> contextlib.AbstractContextManager[Any]:
    """Point ``settings.OPENAI_BATCHES`` at the emulator, when Django is configured."""
    try:
        from django.conf import settings
        from django.test import override_settings
    except ImportError:  # Django not installed: nothing to point
        return contextlib.nullcontext()
    if not settings.configured:
        return contextlib.nullcontext()
    current = dict(getattr(settings, "OPENAI_BATCHES", None) or {})
    return override_settings(OPENAI_BATCHES={**current, "BASE_URL": base_url, "API_KEY": api_key})


@contextlib.contextmanager
def running_emulator(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    api_key: str | None = None,
    **emulator_kwargs: Any,
) -> Iterator[EmulatorHandle]:
    """Start an emulator on a free port, yield a handle, stop it (and its files) after.

    ``emulator_kwargs`` go to :class:`Emulator` (``timing``, ``clock``, ``limits``,
    ``webhook_url`` ...). ``api_key`` is the key the app is given; it is accepted by the
    emulator whether or not the emulator insists on a specific key.
    """
    key = api_key or DEFAULT_API_KEY
    emulator_kwargs.setdefault("timing", "instant")
    if api_key is not None:
        emulator_kwargs.setdefault("api_key", api_key)
    emulator = Emulator(**emulator_kwargs)
    server = EmulatorServer(emulator, host=host, port=port)
    try:
        server.start()
        handle = EmulatorHandle(emulator, server, server.base_url, key)
        with _override_settings(server.base_url, key):
            yield handle
    finally:
        server.stop()
        emulator.close()


try:
    import pytest
except ImportError:  # pytest is only needed for the fixture
    pass
else:

    @pytest.fixture
    def openai_emulator() -> Iterator[EmulatorHandle]:
        """A fresh emulator per test (manual clock, instant timings), with the app's
        ``OPENAI_BATCHES`` pointed at it."""
        with running_emulator() as handle:
            yield handle
