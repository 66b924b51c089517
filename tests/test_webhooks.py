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
from tests.lifecycle_helpers import job_with_batch, submitted_job

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


# -- forgery, staleness, replay, prefix, env fallback (issue 10, item 11) ------------------


def _signed(body: bytes, *, webhook_id: str, ts: int, secret: str = SECRET) -> dict[str, str]:
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, webhook_id, ts, body),
    }


def _deliver(client: Client, body: bytes, headers: dict[str, str]) -> Any:
    return client.post(
        reverse("openai_batches:webhook"), body, content_type="application/json", headers=headers
    )


@pytest.fixture
def polls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The job ids the receiver asked to refresh (the enqueue, recorded)."""
    asked: list[int] = []
    monkeypatch.setattr(
        "openai_batches.services.request_refresh",
        lambda job: asked.append(job if isinstance(job, int) else job.pk),
    )
    return asked


@pytest.fixture
def known_job(db: Any) -> Any:
    from openai_batches.models import JobState

    return job_with_batch("batch_hooked", name="hooked", state=JobState.SUBMITTED)


@pytest.mark.django_db
def test_a_replayed_delivery_is_acknowledged_but_refreshes_only_once(
    client: Client, secret: str, known_job: Any, polls: list[int]
) -> None:
    body = _event("batch_hooked")
    headers = _signed(body, webhook_id="wh_replayed", ts=int(time.time()))
    first = _deliver(client, body, headers)
    assert first.status_code == 200
    assert first.json()["status"] == "refresh scheduled"
    for _ in range(3):  # the same captured request, replayed within the tolerance window
        again = _deliver(client, body, headers)
        assert again.status_code == 200  # OpenAI must stop retrying
        assert again.json() == {"status": "duplicate"}
    # A new delivery (new id) still gets through.
    other = _signed(body, webhook_id="wh_other", ts=int(time.time()))
    assert _deliver(client, body, other).json()["status"] == "refresh scheduled"
    assert polls == [known_job.pk, known_job.pk]


@pytest.mark.django_db
def test_an_openai_retry_with_a_fresh_timestamp_is_a_duplicate_too(
    client: Client, secret: str, known_job: Any, polls: list[int]
) -> None:
    body = _event("batch_hooked")
    now = int(time.time())
    assert _deliver(client, body, _signed(body, webhook_id="wh_r", ts=now - 60)).status_code == 200
    retry = _deliver(client, body, _signed(body, webhook_id="wh_r", ts=now))
    assert retry.json() == {"status": "duplicate"}
    assert polls == [known_job.pk]


@pytest.mark.django_db
def test_remembered_ids_are_pruned_once_their_replays_would_be_stale(
    client: Client, secret: str, known_job: Any, polls: list[int]
) -> None:
    from openai_batches.models import WebhookDelivery

    body = _event("batch_hooked")
    now = int(time.time())
    old = _signed(body, webhook_id="wh_old", ts=now - 250)
    assert _deliver(client, body, old).status_code == 200
    assert WebhookDelivery.objects.filter(webhook_id="wh_old").exists()
    # Move the remembered expiry into the past: the next delivery prunes it, and a replay
    # of it is refused as too old by then anyway.
    WebhookDelivery.objects.filter(webhook_id="wh_old").update(
        expires_at=WebhookDelivery.objects.get(webhook_id="wh_old").expires_at
        - __import__("datetime").timedelta(seconds=600)
    )
    assert _deliver(client, body, _signed(body, webhook_id="wh_new", ts=now)).status_code == 200
    assert list(WebhookDelivery.objects.values_list("webhook_id", flat=True)) == ["wh_new"]


@pytest.mark.django_db
def test_a_duplicate_racing_the_first_delivery_is_refused_by_the_unique_constraint(
    secret: str, known_job: Any, polls: list[int]
) -> None:
    """Two deliveries of one id that both passed the signature check: the second insert of
    the id hits the unique constraint, whatever the timing, so only one refresh is asked."""
    from django.db import IntegrityError, transaction

    from openai_batches.models import WebhookDelivery
    from openai_batches.webhooks import remember_delivery

    assert remember_delivery("wh_race", int(time.time())) is True
    assert remember_delivery("wh_race", int(time.time())) is False
    with pytest.raises(IntegrityError), transaction.atomic():
        WebhookDelivery.objects.create(
            webhook_id="wh_race", expires_at=WebhookDelivery.objects.get().expires_at
        )


@pytest.mark.django_db
def test_forged_stale_and_future_deliveries_are_refused(
    client: Client, secret: str, known_job: Any, polls: list[int]
) -> None:
    body = _event("batch_hooked")
    now = int(time.time())
    forged = _signed(body, webhook_id="wh_f", ts=now, secret="whsec_" + "QUFBQUFBQUE=")
    assert _deliver(client, body, forged).status_code == 400
    tampered = _signed(body, webhook_id="wh_t", ts=now)
    assert _deliver(client, body.replace(b"evt_1", b"evt_2"), tampered).status_code == 400
    stale = _signed(body, webhook_id="wh_s", ts=now - 301)
    response = _deliver(client, body, stale)
    assert response.status_code == 400 and "too old" in response.json()["error"]
    future = _signed(body, webhook_id="wh_u", ts=now + 301)
    response = _deliver(client, body, future)
    assert response.status_code == 400 and "too new" in response.json()["error"]
    assert polls == []
    from openai_batches.models import WebhookDelivery

    assert not WebhookDelivery.objects.exists()  # a refused delivery is not remembered


def test_a_signature_without_the_v1_prefix_is_refused() -> None:
    bare = VECTOR_HEADERS["webhook-signature"].removeprefix("v1,")
    for value in (bare, "v2," + bare, "v1" + bare, f"v1,bm9wZQ== {bare}"):
        headers = {**VECTOR_HEADERS, "webhook-signature": value}
        with pytest.raises(InvalidSignature, match="does not match"):
            verify(SECRET, headers, VECTOR_BODY, now=1750000100)


@pytest.mark.django_db
def test_the_secret_falls_back_to_openai_webhook_secret(
    client: Client,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    known_job: Any,
    polls: list[int],
) -> None:
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "WEBHOOK_SECRET": None}
    monkeypatch.delenv("OPENAI_WEBHOOK_SECRET", raising=False)
    body = _event("batch_hooked")
    headers = _signed(body, webhook_id="wh_env", ts=int(time.time()))
    assert _deliver(client, body, headers).status_code == 503
    monkeypatch.setenv("OPENAI_WEBHOOK_SECRET", SECRET)
    assert _deliver(client, body, headers).json()["status"] == "refresh scheduled"
    # The setting wins over the environment, as the SDK's explicit argument does.
    settings.OPENAI_BATCHES = {**settings.OPENAI_BATCHES, "WEBHOOK_SECRET": "whsec_d3Jvbmc="}
    other = _signed(body, webhook_id="wh_env2", ts=int(time.time()))
    assert _deliver(client, body, other).status_code == 400
    assert polls == [known_job.pk]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_copies_of_a_delivery_racing_on_postgres_refresh_once(
    secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both copies pass the signature check at once; the first holds its transaction open
    (its refresh is slow) while the second inserts the same id: PostgreSQL makes the second
    wait for the first's commit and then refuses it on the unique constraint."""
    import threading

    from django.db import connection
    from django.test import RequestFactory

    from openai_batches.models import JobState
    from openai_batches.webhooks import batch_webhook

    job = job_with_batch("batch_raced", name="raced", state=JobState.SUBMITTED)
    refreshed: list[int] = []

    def slow_refresh(job: Any) -> None:
        refreshed.append(job.pk)
        time.sleep(0.5)

    monkeypatch.setattr("openai_batches.services.request_refresh", slow_refresh)
    body = _event("batch_raced")
    headers = _signed(body, webhook_id="wh_raced", ts=int(time.time()))
    meta = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items()}
    answers: list[dict[str, Any]] = []
    start = threading.Barrier(2)

    def deliver() -> None:
        try:
            request = RequestFactory().post(
                "/openai/webhooks/", body, content_type="application/json", **meta
            )
            start.wait()
            answers.append(json.loads(batch_webhook(request).content))
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(a["status"] for a in answers) == ["duplicate", "refresh scheduled"]
    assert refreshed == [job.pk]
