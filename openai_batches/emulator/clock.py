"""Clocks that drive the batch lifecycle.

Tests use :class:`ManualClock` and move time with ``advance()`` so every transition is
deterministic; the standalone server uses :class:`RealClock`, which still accepts
``advance()`` (it adds an offset) so the control API can skip ahead in a live server.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """What the emulator needs from a clock: unix seconds now, and a way to jump ahead."""

    def now(self) -> float: ...

    def advance(self, seconds: float) -> None: ...


class ManualClock:
    """A clock that only moves when told to. Starts at the real current second by default
    so timestamps look plausible (and webhook events are not "too old")."""

    def __init__(self, start: float | None = None) -> None:
        self._now = float(int(time.time()) if start is None else start)
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the clock cannot go backwards")
        with self._lock:
            self._now += seconds


class RealClock:
    """Wall-clock time plus an offset that ``advance()`` grows."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the clock cannot go backwards")
        with self._lock:
            self._offset += seconds
