"""Signals the app sends. All go out after the transaction that stored the change commits.

Senders are classes (``BatchJob`` or ``RequestItem``), as Django's own model signals do.
``result_received`` is sent exactly once per stored result: the item's ``announced`` flag is
the outbox, set in the same transaction the receivers run in, so a receiver's database writes
and the mark commit together or not at all.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from django.dispatch import Signal

#: The job's local state or the provider's status changed.
#: kwargs: ``job``, ``old_state``, ``new_state``, ``old_status``, ``new_status``.
job_status_changed = Signal()

#: The job reached a terminal provider status and its results are stored and announced.
#: kwargs: ``job``, ``outcome`` (the provider status: completed, failed, expired, cancelled),
#: ``succeeded`` and ``failed`` (item counts).
job_finished = Signal()


class _PrefixReceiver:
    """Calls ``receiver`` only for results whose custom_id starts with ``prefix``."""

    def __init__(self, receiver: Callable[..., Any], prefix: str, weak: bool) -> None:
        self.prefix = prefix
        self._ref: Callable[[], Callable[..., Any] | None]
        if weak:
            self._ref = (
                weakref.WeakMethod(receiver)
                if hasattr(receiver, "__self__")
                else weakref.ref(receiver)
            )
        else:
            self._ref = lambda: receiver

    def __call__(self, signal: Signal, sender: Any, **kwargs: Any) -> Any:
        receiver = self._ref()
        if receiver is None or not str(kwargs.get("custom_id", "")).startswith(self.prefix):
            return None
        return receiver(signal=signal, sender=sender, **kwargs)


def _with_result(named: dict[str, Any]) -> dict[str, Any]:
    """``named`` plus ``result`` (``item.result``) and ``parsed`` (its structured output),
    when the signal carries an item and the sender did not give them itself."""
    item = named.get("item")
    if item is None or "result" in named or not hasattr(item, "result"):
        return named
    result = item.result
    return {**named, "result": result, "parsed": named.get("parsed", result.parsed)}


class ResultSignal(Signal):
    """A signal whose receivers may subscribe to one ``custom_id`` prefix, and get the
    item's typed result with every send."""

    def send(self, sender: Any, **named: Any) -> list[tuple[Any, Any]]:
        if not self.has_listeners(sender):
            return []
        return super().send(sender, **_with_result(named))

    def send_robust(self, sender: Any, **named: Any) -> list[tuple[Any, Any]]:
        if not self.has_listeners(sender):
            return []
        return super().send_robust(sender, **_with_result(named))

    async def asend(self, sender: Any, **named: Any) -> list[tuple[Any, Any]]:
        if not self.has_listeners(sender):
            return []
        return await super().asend(sender, **_with_result(named))

    async def asend_robust(self, sender: Any, **named: Any) -> list[tuple[Any, Any]]:
        if not self.has_listeners(sender):
            return []
        return await super().asend_robust(sender, **_with_result(named))

    def connect(
        self,
        receiver: Callable[..., Any],
        sender: object | None = None,
        weak: bool = True,
        dispatch_uid: str | None = None,
        custom_id_prefix: str | None = None,
    ) -> None:
        if custom_id_prefix is None:
            return super().connect(receiver, sender=sender, weak=weak, dispatch_uid=dispatch_uid)
        wrapper = _PrefixReceiver(receiver, custom_id_prefix, weak)
        uid = dispatch_uid or f"{id(receiver)}:{custom_id_prefix}"
        # The wrapper is held strongly; it holds the receiver weakly when ``weak`` is True.
        return super().connect(wrapper, sender=sender, weak=False, dispatch_uid=uid)

    def disconnect(
        self,
        receiver: Callable[..., Any] | None = None,
        sender: object | None = None,
        dispatch_uid: str | None = None,
        custom_id_prefix: str | None = None,
    ) -> bool:
        if custom_id_prefix is not None and dispatch_uid is None and receiver is not None:
            return super().disconnect(
                sender=sender, dispatch_uid=f"{id(receiver)}:{custom_id_prefix}"
            )
        return super().disconnect(receiver, sender=sender, dispatch_uid=dispatch_uid)


#: One result was stored. kwargs:
#:
#: - ``job``, ``item``, ``custom_id``;
#: - ``result``: ``item.result``, the answer typed for every endpoint (text, refusal,
#:   finish_reason, tool_calls, embeddings, moderation flags, images, usage, and for
#:   anything unusable a ``code`` and one-line ``reason``; see :mod:`openai_batches.results`);
#: - ``parsed``: the structured output as an instance of the item's Pydantic model (see
#:   :mod:`openai_batches.structured`), or None: not structured, failed, refused, or the
#:   answer broke the schema (``result.code`` is then ``refusal`` / ``parse_failed``);
#: - ``succeeded`` (bool): the provider ran the request and answered 2xx. ``result.ok`` is
#:   stricter: also not refused and, when structured, parsed;
#: - ``response`` (the endpoint's raw body, or its error body for a 4xx/5xx) and ``error``
#:   (the error object of a request that never ran, else None), for what the accessors
#:   do not cover;
#: - ``attempt``: how many times the request has been sent (1 unless it was sent again).
#:
#: It fires once per request, for its final result. A result the ``RETRY`` policy sends
#: again (a 429 or 5xx, an expired or never-run request) is not announced: it is kept as
#: one of ``item.attempts`` and the request goes out in a follow-up batch; receivers see
#: only what that last attempt brings. A request sent again on demand
#: (``services.retry``, the admin's and the API's retry actions) announces its new final
#: result too, with a higher ``attempt``.
#:
#: A receiver of a structured job can be as short as::
#:
#:     @on_result("review:")
#:     def store(sender, *, item, result, parsed, **kwargs):
#:         if parsed is not None:
#:             Review.objects.filter(pk=item.object_id).update(label=parsed.sentiment)
#:         else:
#:             Review.objects.filter(pk=item.object_id).update(error=result.reason)
#:
#: Subscribe to a prefix with ``result_received.connect(fn, custom_id_prefix="summary:")`` or
#: :func:`on_result`.
result_received = ResultSignal()


def on_result(
    custom_id_prefix: str = "", **kwargs: Any
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: connect a receiver to :data:`result_received` for one custom_id prefix."""

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        result_received.connect(fn, custom_id_prefix=custom_id_prefix or None, **kwargs)
        return fn

    return decorator
