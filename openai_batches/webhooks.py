"""The receiver of OpenAI's signed ``batch.*`` webhooks.

It verifies the Standard Webhooks signature with ``OPENAI_BATCHES['WEBHOOK_SECRET']``
(replay window 300 s), then asks for an immediate refresh of the batch's job and answers
200 at once; the refresh itself runs on RQ (or on cron's next ``sync_batches``), so a slow
database never makes OpenAI retry. Deliveries are idempotent: a duplicate only schedules a
refresh that finds nothing new. Polling stays on as the safety net.

Mount it with ``path("openai/webhooks/", include("openai_batches.urls"))``.
"""

from __future__ import annotations

import json
import logging

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from . import services
from .conf import app_settings
from .models import BatchJob
from .signing import InvalidSignature, verify

logger = logging.getLogger(__name__)

BATCH_EVENTS = frozenset({"batch.completed", "batch.failed", "batch.expired", "batch.cancelled"})


@csrf_exempt
@require_POST
def batch_webhook(request: HttpRequest) -> HttpResponse:
    secret = app_settings.WEBHOOK_SECRET
    if not secret:
        logger.error("an OpenAI webhook arrived but OPENAI_BATCHES['WEBHOOK_SECRET'] is not set")
        return JsonResponse({"error": "webhooks are not configured"}, status=503)
    try:
        webhook_id = verify(secret, request.headers, request.body)
    except InvalidSignature as err:
        return JsonResponse({"error": str(err)}, status=400)
    try:
        event = json.loads(request.body)
        event_type, batch_id = event["type"], event["data"]["id"]
    except (ValueError, KeyError, TypeError):
        return JsonResponse({"error": "not an OpenAI event"}, status=400)
    if event_type not in BATCH_EVENTS:
        return JsonResponse({"status": "ignored", "type": event_type})
    job = BatchJob.objects.filter(provider_batch_id=batch_id).only("pk").first()
    if job is None:
        # Another system's batch in the same project: acknowledge so OpenAI stops retrying.
        return JsonResponse({"status": "unknown batch"})
    services.request_refresh(job)
    logger.info("webhook %s: %s for job %s", webhook_id, event_type, job.pk)
    return JsonResponse({"status": "refresh scheduled", "job": str(job.pk)})
