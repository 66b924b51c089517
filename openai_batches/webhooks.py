"""The receiver of OpenAI's signed ``batch.*`` webhooks.

It verifies the Standard Webhooks signature with ``OPENAI_BATCHES['WEBHOOK_SECRET']`` (or,
as the SDK does, the ``OPENAI_WEBHOOK_SECRET`` environment variable) within
``WEBHOOK_TOLERANCE`` seconds (300), then asks for an immediate refresh of the batch's job
and answers 200 at once; the refresh itself runs on RQ (or on cron's next
``sync_batches``), so a slow database never makes OpenAI retry.

Every accepted delivery's ``webhook-id`` is remembered (:class:`~.models.WebhookDelivery`,
unique on the id) until a replay of it would fail the timestamp check anyway. A captured
delivery replayed within the window, an OpenAI retry of one already handled, or two copies
racing each other are answered 200 (so OpenAI stops retrying) and do nothing: of two
inserts of one id the database lets exactly one through. Polling stays on as the safety net.

Mount it with ``path("openai/webhooks/", include("openai_batches.urls"))``.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from django.db import IntegrityError, transaction
from django.db.models.functions import Greatest
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from . import services
from .conf import app_settings
from .models import BatchJob, WebhookDelivery
from .signing import InvalidSignature, verify

logger = logging.getLogger(__name__)

BATCH_EVENTS = frozenset({"batch.completed", "batch.failed", "batch.expired", "batch.cancelled"})
_MAX_ID_LENGTH = WebhookDelivery._meta.get_field("webhook_id").max_length or 255


def remember_delivery(webhook_id: str, timestamp: int) -> bool:
    """Record a verified delivery; False when its id was already handled (a replay).

    Run inside the caller's transaction, so a delivery whose handling fails is forgotten
    with it and OpenAI's retry is accepted.
    """
    tolerance = int(app_settings.WEBHOOK_TOLERANCE)
    # A replay carries this timestamp, so it is refused as too old after this moment.
    expires = datetime.fromtimestamp(timestamp + tolerance, tz=UTC)
    WebhookDelivery.objects.filter(expires_at__lt=timezone.now()).delete()
    try:
        with transaction.atomic():
            WebhookDelivery.objects.create(webhook_id=webhook_id, expires_at=expires)
    except IntegrityError:
        # A retry signed later keeps the id remembered as long as its own replays live.
        WebhookDelivery.objects.filter(webhook_id=webhook_id).update(
            expires_at=Greatest("expires_at", expires)
        )
        return False
    return True


@csrf_exempt
@require_POST
def batch_webhook(request: HttpRequest) -> HttpResponse:
    secret = app_settings.webhook_secret()
    if not secret:
        logger.error(
            "an OpenAI webhook arrived but neither OPENAI_BATCHES['WEBHOOK_SECRET'] nor "
            "OPENAI_WEBHOOK_SECRET is set"
        )
        return JsonResponse({"error": "webhooks are not configured"}, status=503)
    tolerance = int(app_settings.WEBHOOK_TOLERANCE)
    try:
        webhook_id = verify(secret, request.headers, request.body, tolerance=tolerance)
    except InvalidSignature as err:
        return JsonResponse({"error": str(err)}, status=400)
    if len(webhook_id) > _MAX_ID_LENGTH:
        return JsonResponse({"error": "webhook-id is too long"}, status=400)
    try:
        event = json.loads(request.body)
        event_type, batch_id = event["type"], event["data"]["id"]
    except (ValueError, KeyError, TypeError):
        return JsonResponse({"error": "not an OpenAI event"}, status=400)
    if event_type not in BATCH_EVENTS:
        return JsonResponse({"status": "ignored", "type": event_type})
    job = BatchJob.objects.filter(batches__provider_batch_id=batch_id).only("pk").first()
    if job is None:
        # Another system's batch in the same project: acknowledge so OpenAI stops retrying.
        return JsonResponse({"status": "unknown batch"})
    # verify() checked the header is an int.
    timestamp = int(request.headers["webhook-timestamp"])
    with transaction.atomic():
        if not remember_delivery(webhook_id, timestamp):
            logger.info("webhook %s: a duplicate delivery, ignored", webhook_id)
            return JsonResponse({"status": "duplicate"})
        services.request_refresh(job)
    logger.info("webhook %s: %s for job %s", webhook_id, event_type, job.pk)
    return JsonResponse({"status": "refresh scheduled", "job": str(job.pk)})
