"""The signed webhook receiver: the reference test vector, every refusal, and a real
delivery from the emulator to a live server that schedules a refresh of the right job."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from openai_batches import jobs
from openai_batches.signing import InvalidSignature, sign, verify
from openai_batches.testing import running_emulator
from tests.lifecycle_helpers import submitted_job

SECRET = "whsec_ZW11bGF0b3ItdGVzdC1zZWNyZXQtMDEyMzQ1Njc4OQ=="
VECTOR_BODY = (
    b'{"object":"event","id":"evt_0123456789abcdef0123456789abcdef","type":"batch.completed",'
    b'"created_at":1750000000,"data":{"id":"batch_0123456789abcdef0123456789abcdef"}}'
)
VECTOR_HEADERS = {
    "webhook-id": "wh_0123456789abcdef0123456789abcdef",
    "webhook-timestamp": "1750000000",
    "webhook-signature": "v1,NfgxEjwrI47gju7+TTPM/FmQiO0/RUD8b+D1KYpvi8Q=",
}


def test_reference_test_vector() -> None:
    assert (
        sign(SECRET, VECTOR_HEADERS["webhook-id"], 1750000000, VECTOR_BODY)
        == VECTOR_HEADERS["webhook-signature"]
    )
    assert (
        verify(SECRET, VECTOR_HEADERS, VECTOR_BODY, now=1750000100) == VECTOR_HEADERS["webhook-id"]
    )
    with pytest.raises(InvalidSignature, match="too old"):
        verify(SECRET, VECTOR_HEADERS, VECTOR_BODY, now=1750000301)
    with pytest.raises(InvalidSignature, match="too new"):
        verify(SECRET, VECTOR_HEADERS, VECTOR_BODY, now=1749999000)
    with pytest.raises(InvalidSignature, match="does not match"):
        verify(
            SECRET, VECTOR_HEADERS, VECTOR_BODY.replace(b"completed", b"cancelled"), now=1750000100
        )
    rotated = {
        **VECTOR_HEADERS,
        "webhook-signature": "v1,bm9wZQ== " + VECTOR_HEADERS["webhook-signature"],
    }
    assert verify(SECRET, rotated, VECTOR_BODY, now=1750000100)


def _post(client: Client, body: bytes, *, secret: str = SECRET, **headers: str) -> Any:
    ts = str(int(time.time()))
    signed = {
        "webhook-id": "wh_test",
        "webhook-timestamp": ts,
        "webhook-signature": sign(secret, "wh_test", ts, body),
        **headers,
    }
    return client.post(
        reverse("openai_batches:webhook"),
        body,
        content_type="application/json",
        headers=signed,
    )


def _event(batch_id: str, event_type: str = "batch.completed") -> bytes:
    return json.dumps(
        {
            "object": "event",
            "id": "evt_1",
            "type": event_type,
            "created_at": 1,
            "data": {"id": batch_id},
        }
    ).encode()


@pytest.fixture
def secret(settings: Any) -> str:
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "WEBHOOK_SECRET": SECRET}
    return SECRET


@pytest.mark.django_db(transaction=True)
def test_a_signed_event_schedules_a_refresh_of_its_job(client: Client, secret: str) -> None:
    with running_emulator():
        job = submitted_job(2)
        queue = jobs.get_queue()
        queue.empty()
        response = _post(client, _event(job.provider_batch_id))
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "refresh scheduled"
    queued = queue.jobs
    assert [(j.func_name, j.args, j.kwargs) for j in queued] == [
        ("openai_batches.jobs.poll_job", (job.pk,), {"force": True})
    ]


@pytest.mark.django_db
def test_refusals(client: Client, secret: str, settings: Any) -> None:
    assert _post(client, _event("batch_x"), secret="whsec_d3Jvbmc=").status_code == 400
    assert (
        client.post(
            reverse("openai_batches:webhook"), _event("batch_x"), content_type="application/json"
        ).status_code
        == 400
    )
    assert _post(client, b"not json").status_code == 400
    assert _post(client, _event("batch_unknown")).json() == {"status": "unknown batch"}
    assert _post(client, _event("batch_x", "response.completed")).json()["status"] == "ignored"
    assert client.get(reverse("openai_batches:webhook")).status_code == 405
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "WEBHOOK_SECRET": None}
    assert _post(client, _event("batch_x")).status_code == 503


@pytest.mark.django_db(transaction=True)
def test_emulator_delivers_to_the_live_receiver(live_server: Any, secret: str) -> None:
    url = live_server.url + reverse("openai_batches:webhook")
    with running_emulator(webhook_url=url, webhook_secret=SECRET) as emu:
        job = submitted_job(2)
        queue = jobs.get_queue()
        queue.empty()
        emu.get_batch(job.provider_batch_id)  # the instant batch completes: the event is sent
        assert emu.wait_for_webhooks(10)
        deliveries = emu.webhook_deliveries
        assert deliveries and deliveries[0].attempts[-1]["status_code"] == 200, deliveries
        assert any(j.args == (job.pk,) for j in queue.jobs)
        # And the scheduled poll, run inline, finishes the job.
        assert jobs.poll_job(job.pk, force=True) == "finished"
