"""Webhook signing (reference test vector) and delivery with retries."""

from __future__ import annotations

import pytest
from openai import OpenAI
from openai.types.webhooks import (
    BatchCancelledWebhookEvent,
    BatchCompletedWebhookEvent,
    BatchExpiredWebhookEvent,
    BatchFailedWebhookEvent,
)

from openai_batches.emulator import Emulator, EmulatorServer, sign
from openai_batches.emulator.webhooks import event_body

from .conftest import API_KEY, Receiver, create_batch, line

SECRET = "whsec_ZW11bGF0b3ItdGVzdC1zZWNyZXQtMDEyMzQ1Njc4OQ=="
VECTOR_BODY = (
    b'{"object":"event","id":"evt_0123456789abcdef0123456789abcdef","type":"batch.completed",'
    b'"created_at":1750000000,"data":{"id":"batch_0123456789abcdef0123456789abcdef"}}'
)


def test_sign_matches_reference_vector() -> None:
    assert (
        sign(SECRET, "wh_0123456789abcdef0123456789abcdef", 1750000000, VECTOR_BODY)
        == "v1,NfgxEjwrI47gju7+TTPM/FmQiO0/RUD8b+D1KYpvi8Q="
    )


def test_event_body_is_byte_identical_to_the_vector_shape() -> None:
    body = event_body(
        "batch.completed",
        "batch_0123456789abcdef0123456789abcdef",
        1750000000,
        event_id="evt_0123456789abcdef0123456789abcdef",
    )
    assert body == VECTOR_BODY


def test_non_whsec_secret_is_used_raw() -> None:
    assert sign("plain", "wh_1", 1, b"{}") != sign("whsec_cGxhaW4=", "wh_1", 1, b"x")
    assert sign("plain", "wh_1", 1, b"{}") == sign("whsec_cGxhaW4=", "wh_1", 1, b"{}")


@pytest.fixture
def hook_emu(receiver: Receiver) -> Emulator:
    emu = Emulator(
        timing="instant",
        webhook_url=receiver.url,
        webhook_secret=SECRET,
        webhook_backoff=0.05,
        webhook_max_attempts=4,
    )
    yield emu  # type: ignore[misc]
    emu.close()


def test_all_four_events_unwrap_with_the_sdk(hook_emu: Emulator, receiver: Receiver) -> None:
    emu = hook_emu
    with EmulatorServer(emu) as srv, OpenAI(base_url=srv.base_url, api_key=API_KEY) as c:
        done = create_batch(c, [line("a")])
        failed = create_batch(c, ["broken"])
        cancel = create_batch(c, [line("a", emulator={"stall": True})])
        expire = create_batch(c, [line("a", emulator={"stall": True})])
        emu.tick()
        c.batches.cancel(cancel.id)
        emu.advance(86400)
        assert emu.wait_for_webhooks(10)
        assert receiver.wait_for(4)
        kinds = {}
        for headers, body, status in receiver.requests:
            assert status == 200
            assert headers["user-agent"].startswith("OpenAI/1.0")
            assert headers["content-type"] == "application/json"
            event = c.webhooks.unwrap(body, headers, secret=SECRET)
            kinds[event.data.id] = type(event)  # type: ignore[union-attr]
    assert kinds == {
        done.id: BatchCompletedWebhookEvent,
        failed.id: BatchFailedWebhookEvent,
        cancel.id: BatchCancelledWebhookEvent,
        expire.id: BatchExpiredWebhookEvent,
    }


def test_retries_on_5xx_and_3xx_keep_the_webhook_id(hook_emu: Emulator, receiver: Receiver) -> None:
    emu = hook_emu
    receiver.statuses[:] = [500, 302, 200]
    with EmulatorServer(emu) as srv, OpenAI(base_url=srv.base_url, api_key=API_KEY) as c:
        create_batch(c, [line("a")])
        emu.tick()
        assert emu.wait_for_webhooks(10)
        assert receiver.wait_for(3)
        assert [s for _, _, s in receiver.requests] == [500, 302, 200]
        ids = {h["webhook-id"] for h, _, _ in receiver.requests}
        assert len(ids) == 1
        stamps = [int(h["webhook-timestamp"]) for h, _, _ in receiver.requests]
        assert stamps == sorted(stamps)
        for headers, body, _ in receiver.requests:  # every attempt is signed for its own stamp
            c.webhooks.verify_signature(body, headers, secret=SECRET)
    [delivery] = emu.webhook_deliveries
    assert delivery.delivered and [a["status_code"] for a in delivery.attempts] == [500, 302, 200]


def test_gives_up_after_max_attempts(hook_emu: Emulator, receiver: Receiver) -> None:
    receiver.statuses[:] = [503] * 10
    hook_emu.add_file(b"")  # unrelated file: nothing is sent for it
    file = hook_emu.add_file(
        b'{"custom_id":"a","method":"POST","url":"/v1/moderations","body":{"input":"x"}}\n'
    )
    hook_emu.create_batch(
        {"input_file_id": file["id"], "endpoint": "/v1/moderations", "completion_window": "24h"}
    )
    hook_emu.tick()
    assert hook_emu.wait_for_webhooks(10)
    [delivery] = hook_emu.webhook_deliveries
    assert delivery.gave_up and not delivery.delivered and len(delivery.attempts) == 4
