"""API views: jobs, their items and their results. Thin: parse, call ``services``, answer.

Jobs are addressed by their public UUID, never the database pk. Every lookup goes through
:func:`~openai_batches.api.permissions.visible_jobs`, so a job the user may not view is a 404
(its existence is not revealed), and every action on a job checks
:func:`~openai_batches.api.permissions.check_job_permission` (the owner, or Django's model
permission of the action), whatever permission classes are configured.
"""

from __future__ import annotations

import re
import uuid as uuid_lib
from collections.abc import Iterable, Iterator
from typing import Any

from django.db.models import Prefetch, QuerySet
from django.http import Http404, HttpRequest, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema_view,
)
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import BasePagination, PageNumberPagination
from rest_framework.parsers import BaseParser
from rest_framework.permissions import BasePermission
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle

from .. import services
from ..conf import app_settings
from ..exceptions import LimitExceeded, Problem
from ..exceptions import ValidationError as AppValidationError
from ..models import TERMINAL_STATUSES, BatchJob, ProviderBatch, RequestItem
from . import serializers as s
from .exceptions import api_exception_handler, error_body
from .parsers import BoundedJSONParser, BoundedMultiPartParser, JSONLRenderer
from .permissions import (
    ITEM_ACTION_PERMISSIONS,
    JOB_ACTION_PERMISSIONS,
    check_job_permission,
    permission_classes,
    required_permission,
    visible_jobs,
)
from .schema import api_schema
from .throttling import DEFAULT_REFRESH_RATE, REFRESH_SCOPE, RefreshRateThrottle

JSONL = "application/jsonl"
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

_ERROR_DESCRIPTIONS = {
    400: "Invalid input: every problem is listed (index or line, field, message); nothing was saved.",
    401: (
        "Not authenticated; the `WWW-Authenticate` header names the scheme to use (the first "
        "configured authentication class that has one; with session authentication alone, "
        "which has no challenge, the answer is 403)."
    ),
    403: (
        "Not allowed: the configured permission classes refuse you, or the job is another "
        "user's and you lack the model permission the action needs (the message names it)."
    ),
    404: "No such job or item (or not yours), or no such page.",
    409: "The job's state does not allow this; the message says why.",
    413: "Too large: the body, the upload, or the job would exceed one batch.",
    429: "Throttled (DRF throttling settings); `Retry-After` says when to try again.",
    502: "The provider failed or could not be reached.",
    503: (
        "The job's account is not usable with the server's current OPENAI_BATCHES setting "
        "(renamed or removed); an operator must fix it. The job is unchanged."
    ),
}


def _errors(*codes: int) -> dict[int, OpenApiResponse]:
    """The error responses of an operation, all in the one error shape."""
    return {
        code: OpenApiResponse(s.BatchErrorSerializer, description=_ERROR_DESCRIPTIONS[code])
        for code in (401, 403, 429, *codes)
    }


class BatchesPagination(PageNumberPagination):
    """Page-number pagination with a client-chosen page size, checked like any other input.

    DRF silently falls back to the default on a bad ``page_size`` (or an empty ``page``) and
    clamps a large one; here they are a 400, so the documented bounds are the real ones. A
    page past the end stays DRF's 404.
    """

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 1000

    def get_page_size(self, request: Request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= self.max_page_size:
            raise ValidationError(
                {"page_size": [f"Must be a whole number from 1 to {self.max_page_size}."]}
            )
        return int(raw)

    def get_page_number(self, request: Request, paginator: Any) -> Any:
        raw = request.query_params.get(self.page_query_param)
        if raw is None:
            return 1
        if raw in self.last_page_strings:
            return raw
        if not raw.isascii() or not raw.isdigit() or int(raw) < 1:
            raise ValidationError({self.page_query_param: ["Must be a whole number from 1."]})
        return int(raw)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_query_param:
                parameter["schema"]["minimum"] = 1
            elif parameter["name"] == self.page_size_query_param:
                parameter["schema"].update(minimum=1, maximum=self.max_page_size)
        return parameters


class BatchesViewSet(viewsets.GenericViewSet):
    """What every view of the app shares: permissions from settings, the error handler, schema."""

    # An explicit AutoSchema so the schema works whatever the host's DEFAULT_SCHEMA_CLASS is.
    schema = AutoSchema()
    pagination_class: type[BasePagination] | None = BatchesPagination
    #: Actions that also take a multipart JSONL upload; all others take JSON only.
    upload_actions: tuple[str, ...] = ("create",)

    def get_parsers(self) -> list[BaseParser]:
        # ``self.action`` is set only after the request (and so its parsers) exists; the
        # action map already says which action this method will run.
        request = getattr(self, "request", None)
        method = str(getattr(request, "method", "") or "").lower()
        action = getattr(self, "action", None) or getattr(self, "action_map", {}).get(method)
        if action in self.upload_actions:
            return [BoundedJSONParser(), BoundedMultiPartParser()]
        return [BoundedJSONParser()]

    def get_permissions(self) -> list[BasePermission]:
        return [cls() for cls in permission_classes()]

    def get_authenticate_header(self, request: Request) -> str:
        # DRF asks only the first authenticator; with its default [Session, Basic] that is
        # the session, which has no challenge, so an anonymous client got a 403 and no hint.
        # The first scheme that can challenge makes it a 401 with WWW-Authenticate.
        for authenticator in self.get_authenticators():
            header = authenticator.authenticate_header(request)
            if header:
                return str(header)
        return ""  # no challenge: DRF answers 403, as HTTP allows no 401 without one

    def get_exception_handler(self) -> Any:
        return api_exception_handler

    def handle_exception(self, exc: Exception) -> Response:
        # Errors are JSON even where the success is another format (the JSONL results), as
        # the schema says; the JSONL renderer only lets `Accept: application/jsonl` in.
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return super().handle_exception(exc)


JOB_UUID = OpenApiParameter(
    "uuid", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The job's public UUID."
)
ITEM_JOB_UUID = OpenApiParameter(
    "job_uuid", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The job's public UUID."
)
CUSTOM_ID = OpenApiParameter(
    "custom_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="The item's custom_id."
)

_ITEMS_EXAMPLE = OpenApiExample(
    "Two chat requests",
    value={
        "name": "summaries",
        "endpoint": "/v1/chat/completions",
        "metadata": {"project": "demo"},
        "items": [
            {
                "custom_id": "summary:1",
                "body": {
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": "Summarize: ..."}],
                },
            },
            {
                "custom_id": "summary:2",
                "body": {
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": "Summarize: ..."}],
                },
            },
        ],
    },
    request_only=True,
    media_type="application/json",
)


def _upload_too_large(upload: Any) -> None:
    """Refuse an upload larger than one provider batch before reading a line of it."""
    limit = int(app_settings.MAX_FILE_BYTES)
    if upload.size is not None and upload.size > limit:
        raise LimitExceeded(
            [
                Problem(
                    None,
                    "file",
                    f"is {upload.size:,} bytes; one upload takes at most {limit:,} bytes of "
                    "JSONL (one provider batch); add more items to the draft in further uploads",
                )
            ]
        )


def _account_names_withheld(err: AppValidationError, account: Any) -> AppValidationError:
    """``err`` with the account problem naming only the value given.

    Which accounts a deployment has (often one per customer or team) is not a client's
    business: an unknown account and one the user may not use (``ACCOUNT_ACCESS``) get the
    same sentence, so probing names reveals nothing.
    """
    problems = [
        Problem(p.index, p.field, f"{account!r} is not a configured account you may use.")
        if p.field == "account" and p.index is None
        else p
        for p in err.problems
    ]
    return type(err)(problems, truncated=err.truncated)


def _is_multipart(request: Request) -> bool:
    return (request.content_type or "").startswith("multipart/")


@extend_schema_view(
    list=api_schema(
        summary="List batch jobs",
        description=(
            "Your jobs (every job with the `openai_batches.view_batchjob` or "
            "`change_batchjob` permission), newest first unless `ordering` says otherwise."
        ),
        parameters=[s.JobFilterSerializer],
        responses={200: s.BatchJobSerializer(many=True), **_errors(400, 404)},
    ),
    retrieve=api_schema(
        summary="Get a batch job",
        description=(
            "The job with its counts, usage, cost, provider errors and timestamps, and "
            "`batches`: every provider batch that carries it (a job larger than one batch is "
            "split into parts; requests sent again go in follow-up parts), each with its "
            "status, files, counts, usage and cost."
        ),
        parameters=[JOB_UUID],
        responses={200: s.BatchJobDetailSerializer, **_errors(404)},
    ),
    destroy=api_schema(
        summary="Delete a job",
        description=(
            "Deletes the job and its items, in any state except while the provider is or may "
            "be running its batch: `submit_requested`, `waiting_quota`, `submitting` and "
            "`submitted` (until its results are stored) answer 409; cancel such a job first. "
            "Drafts, failed "
            "submissions, cancelled and finished jobs can be deleted (a finished job's "
            "stored results go with it). Needs `delete_batchjob` on another user's job."
        ),
        parameters=[JOB_UUID],
        responses={204: OpenApiResponse(description="Deleted."), **_errors(404, 409)},
    ),
)
class BatchJobViewSet(BatchesViewSet):
    """Batch jobs: create, list, read, delete drafts, and submit / refresh / cancel / retry /
    results."""

    queryset = BatchJob.objects.none()  # the real one is per user: get_queryset
    serializer_class = s.BatchJobSerializer
    lookup_field = "uuid"
    # Anything up to the next slash reaches the view, so a malformed UUID is our 404 in
    # the API's error shape rather than Django's HTML one.
    lookup_value_regex = "[^/]+"
    job_action_permissions = JOB_ACTION_PERMISSIONS

    def get_queryset(self) -> QuerySet[BatchJob]:
        return visible_jobs(self.request.user)

    def get_object(self) -> BatchJob:
        job = job_for(self.request, self.kwargs.get(self.lookup_field))
        check_job_permission(self.request, job, required_permission(self))
        self.check_object_permissions(self.request, job)
        self._job = job  # the error handler names it
        return job

    #: The DRF throttle scope of the actions that call the provider in the request.
    refresh_throttle_scope = REFRESH_SCOPE

    def get_throttles(self) -> list[BaseThrottle]:
        throttles = super().get_throttles()
        if self.action == "refresh":
            throttles.append(RefreshRateThrottle())
        return throttles

    def _detail(self, job: BatchJob, code: int = status.HTTP_200_OK) -> Response:
        data = s.BatchJobDetailSerializer(job, context=self.get_serializer_context()).data
        headers = {}
        if code == status.HTTP_201_CREATED and data.get("links"):
            headers["Location"] = data["links"]["self"]
        return Response(data, status=code, headers=headers)

    def list(self, request: Request) -> Response:
        params = s.JobFilterSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        f = params.validated_data
        qs = self.get_queryset()
        for name in ("state", "provider_status", "endpoint"):
            if f.get(name):
                qs = qs.filter(**{f"{name}__in": f[name]})
        if "owner" in f:
            qs = qs.filter(owner_id=f["owner"])
        for name, lookup in (
            ("created_after", "created_at__gte"),
            ("created_before", "created_at__lt"),
            ("submitted_after", "submitted_at__gte"),
            ("submitted_before", "submitted_at__lt"),
        ):
            if name in f:
                qs = qs.filter(**{lookup: f[name]})
        # The pk breaks ties so that pages never repeat or skip a job.
        tiebreak = "pk" if not f["ordering"].startswith("-") else "-pk"
        qs = qs.order_by(f["ordering"], tiebreak)
        # The latest part's ids and times come from one query for the whole page.
        qs = qs.prefetch_related(Prefetch("batches", queryset=ProviderBatch.objects.order_by()))
        page = self.paginate_queryset(qs)
        serializer = s.BatchJobSerializer(page, many=True, context=self.get_serializer_context())
        return self.get_paginated_response(serializer.data)

    @api_schema(
        summary="Create a batch job",
        description=(
            "Creates a draft job, with its items when given: inline as `items` (JSON), or as a "
            "JSONL `file` in OpenAI's batch input format (multipart). All or nothing: on any "
            "problem the answer lists every one and nothing is saved. A JSON body is held to "
            "`DATA_UPLOAD_MAX_MEMORY_SIZE`; an upload to one batch's byte limit. A job may "
            "hold more than one batch takes: add further items to the draft, and it is split "
            "into parts (provider batches) when it is submitted."
        ),
        request={
            "application/json": s.BatchJobCreateSerializer,
            "multipart/form-data": s.BatchJobUploadSerializer,
        },
        responses={201: s.BatchJobDetailSerializer, **_errors(400, 413)},
        examples=[_ITEMS_EXAMPLE],
    )
    def create(self, request: Request) -> Response:
        multipart = _is_multipart(request)
        serializer_class = s.BatchJobUploadSerializer if multipart else s.BatchJobCreateSerializer
        serializer = serializer_class(data=request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        upload = data.pop("file", None)
        items = data.pop("items", None)
        if upload is not None:
            _upload_too_large(upload)
        owner = request.user if request.user.is_authenticated else None
        try:
            # All or nothing: a bad line in the upload leaves no empty job behind.
            job = services.create_job(owner=owner, items=items, jsonl=upload, **data)
        except AppValidationError as err:
            raise _account_names_withheld(err, data.get("account")) from err
        return self._detail(job, status.HTTP_201_CREATED)

    def retrieve(self, request: Request, uuid: str | None = None) -> Response:
        return self._detail(self.get_object())

    def destroy(self, request: Request, uuid: str | None = None) -> Response:
        services.delete_job(self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @api_schema(
        summary="Submit a job",
        description=(
            "Records the intent to submit a draft (or a failed submission) and queues the "
            "upload; answers at once. Follow the job's `state` and `provider_status`. Needs "
            "`change_batchjob` on another user's job."
        ),
        parameters=[JOB_UUID],
        request=None,
        responses={202: s.BatchJobDetailSerializer, **_errors(404, 409)},
    )
    @action(detail=True, methods=["post"])
    def submit(self, request: Request, uuid: str | None = None) -> Response:
        job = services.request_submit(self.get_object())
        return self._detail(job, status.HTTP_202_ACCEPTED)

    @api_schema(
        summary="Refresh a job's status from the provider",
        description=(
            "Asks the provider for the batch's status now and records it (status, request "
            "counts, file ids, usage). Results are never stored inside this request: when the "
            "batch has finished, storing them (and sending the result signals) is queued for "
            "a worker, or done by the next `manage.py sync_batches` where RQ is off; follow "
            "`state` (`finished`) and `ingested_at`. Throttled per user: DRF scope "
            f"`{REFRESH_SCOPE}`, {DEFAULT_REFRESH_RATE} unless "
            "`REST_FRAMEWORK['DEFAULT_THROTTLE_RATES']` sets it (429 with `Retry-After`). "
            "Needs `change_batchjob` on another user's job."
        ),
        parameters=[JOB_UUID],
        request=None,
        responses={200: s.BatchJobDetailSerializer, **_errors(404, 409, 502, 503)},
    )
    @action(detail=True, methods=["post"])
    def refresh(self, request: Request, uuid: str | None = None) -> Response:
        job = services.refresh(self.get_object(), ingest=False)
        if job.batches.active().filter(provider_status__in=TERMINAL_STATUSES).exists():
            # A part has ended: a download of up to 200 MB does not belong in a web request.
            services.request_refresh(job)
        return self._detail(job)

    @api_schema(
        summary="Cancel a job",
        description=(
            "Before submission the job is cancelled here; afterwards the provider is asked to "
            "cancel (`provider_status` goes to `cancelling`, then `cancelled`). Needs "
            "`change_batchjob` on another user's job."
        ),
        parameters=[JOB_UUID],
        request=None,
        responses={200: s.BatchJobDetailSerializer, **_errors(404, 409, 502, 503)},
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, uuid: str | None = None) -> Response:
        return self._detail(services.cancel(self.get_object()))

    @api_schema(
        summary="Send a finished job's failed or expired requests again",
        description=(
            '`{"which": "failed"}` takes the requests that failed (or had no result line), '
            '`{"which": "expired"}` those that never ran because their batch expired or was '
            "cancelled; requests that succeeded are never sent again, and neither is one "
            "already sent `RETRY['MAX_ATTEMPTS']` times. They go in new provider batches: the "
            "job returns to `submit_requested` and is submitted as usual; their new results "
            "are announced when they land. 409 unless the job is finished and has such a "
            "request (`actions.retry_failed` / `actions.retry_expired` in the job detail say "
            "whether, and why not). Needs `change_batchjob` on another user's job."
        ),
        parameters=[JOB_UUID],
        request=s.RetrySerializer,
        responses={202: s.BatchJobDetailSerializer, **_errors(400, 404, 409)},
    )
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, uuid: str | None = None) -> Response:
        job = self.get_object()
        params = s.RetrySerializer(data=request.data)
        params.is_valid(raise_exception=True)
        job = services.retry(job, params.validated_data["which"])
        return self._detail(job, status.HTTP_202_ACCEPTED)

    @api_schema(
        summary="Estimate a job's tokens and cost",
        description=(
            "What the job will use, estimated from its stored requests: input tokens (the "
            "configured `TOKEN_ESTIMATOR`), the most output tokens the requests allow, and "
            "their cost at the batch prices of `OPENAI_BATCHES['PRICES']` (null, with "
            "`cost_note` `no price for <model>`, when the model has none). The same estimate "
            "the budgets check and the admin's job page use; read it before `submit/`. "
            "Read-only; cached, so asking again costs no scan of the requests. Needs "
            "`view_batchjob` on another user's job."
        ),
        parameters=[JOB_UUID],
        responses={200: s.JobEstimateSerializer, **_errors(404)},
    )
    @action(detail=True, methods=["get"])
    def estimate(self, request: Request, uuid: str | None = None) -> Response:
        return Response(s.JobEstimateSerializer(s.estimate_data(self.get_object())).data)

    @api_schema(
        summary="Download a job's results (JSONL)",
        description=(
            "One JSON line per item, in the order the items were added: `custom_id`, `state`, "
            "`status_code`, `response`, `error`. Streamed from the database, never built in "
            "memory. Items without a result yet have `state` pending or submitted."
        ),
        # ``?format=jsonl|json`` works (DRF) but is not part of the contract.
        parameters=[JOB_UUID, OpenApiParameter("format", exclude=True)],
        responses={
            (200, JSONL): OpenApiResponse(
                s.ResultLineSerializer,
                description="JSONL: each line is one object of this shape.",
            ),
            **{(code, "application/json"): response for code, response in _errors(404).items()},
        },
    )
    @action(detail=True, methods=["get"], renderer_classes=[JSONRenderer, JSONLRenderer])
    def results(self, request: Request, uuid: str | None = None) -> StreamingHttpResponse:
        job = self.get_object()
        response = StreamingHttpResponse(
            coalesce(services.iter_results_jsonl(job)), content_type=f"{JSONL}; charset=utf-8"
        )
        response["Content-Disposition"] = f'attachment; filename="batch-{job.uuid}-results.jsonl"'
        return response


#: Bytes per chunk handed to the server: one write per ~64 KB, not one per result line.
STREAM_CHUNK = 64 * 1024


def coalesce(lines: Iterable[bytes], size: int = STREAM_CHUNK) -> Iterator[bytes]:
    """Join small lines into chunks of about ``size`` bytes (memory stays bounded by it)."""
    buffer: list[bytes] = []
    buffered = 0
    for line in lines:
        buffer.append(line)
        buffered += len(line)
        if buffered >= size:
            yield b"".join(buffer)
            buffer, buffered = [], 0
    if buffer:
        yield b"".join(buffer)


def job_for(request: Request, value: Any) -> BatchJob:
    """The job with public UUID ``value`` that ``request.user`` may see, or 404."""
    # Only the canonical form the schema promises (uuid.UUID would also take hex without
    # hyphens, braces and urn:uuid: prefixes).
    if not isinstance(value, str) or not _UUID.match(value):
        raise Http404
    key = uuid_lib.UUID(value)
    return get_object_or_404(visible_jobs(request.user), uuid=key)


@extend_schema_view(
    list=api_schema(
        summary="List a job's items",
        description="The job's requests and their results, in the order they were added.",
        parameters=[ITEM_JOB_UUID, s.ItemFilterSerializer],
        responses={200: s.RequestItemSerializer(many=True), **_errors(400, 404)},
    ),
    retrieve=api_schema(
        summary="Get one item",
        description=(
            "The request, its final result, and `attempts`: each time it was sent and what "
            "came back (which part and provider batch, the outcome, status code, error, "
            "usage, and whether it was sent again after)."
        ),
        parameters=[ITEM_JOB_UUID, CUSTOM_ID],
        responses={200: s.RequestItemDetailSerializer, **_errors(404)},
    ),
)
class RequestItemViewSet(BatchesViewSet):
    """The items of one job: list, read one by its custom_id, add more to a draft."""

    queryset = RequestItem.objects.none()  # the real one depends on the job: get_queryset
    serializer_class = s.RequestItemSerializer
    lookup_field = "custom_id"
    # A custom_id may hold any character, slashes and newlines included.
    lookup_value_regex = r"[\s\S]+"
    job_action_permissions = ITEM_ACTION_PERMISSIONS

    def get_job(self) -> BatchJob:
        if not hasattr(self, "_job"):
            job = job_for(self.request, self.kwargs.get("job_uuid"))
            check_job_permission(self.request, job, required_permission(self))
            self.check_object_permissions(self.request, job)
            self._job = job
        return self._job

    def get_queryset(self) -> QuerySet[RequestItem]:
        if getattr(self, "swagger_fake_view", False):  # schema generation: no job
            return RequestItem.objects.none()
        return self.get_job().items.select_related("content_type").order_by("pk")

    def list(self, request: Request, job_uuid: str | None = None) -> Response:
        params = s.ItemFilterSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        qs = self.get_queryset()
        if params.validated_data.get("state"):
            qs = qs.filter(state__in=params.validated_data["state"])
        if params.validated_data.get("custom_id_prefix"):
            qs = qs.filter(custom_id__startswith=params.validated_data["custom_id_prefix"])
        page = self.paginate_queryset(qs)
        return self.get_paginated_response(s.RequestItemSerializer(page, many=True).data)

    def retrieve(
        self, request: Request, job_uuid: str | None = None, custom_id: str | None = None
    ) -> Response:
        if not custom_id or "\x00" in custom_id:  # PostgreSQL refuses NUL in a query
            raise Http404
        item = get_object_or_404(self.get_queryset(), custom_id=custom_id)
        return Response(s.RequestItemDetailSerializer(item).data)

    @api_schema(
        summary="Add items to a draft job",
        description=(
            "Inline as `items` (JSON) or as a JSONL `file` (multipart). All or nothing: on any "
            "problem the answer lists every one (index or line, field, message)."
        ),
        parameters=[ITEM_JOB_UUID],
        request={
            "application/json": s.ItemsAddSerializer,
            "multipart/form-data": s.ItemsUploadSerializer,
        },
        responses={201: s.ItemsAddedSerializer, **_errors(400, 404, 409, 413)},
    )
    def create(self, request: Request, job_uuid: str | None = None) -> Response:
        job = self.get_job()
        if _is_multipart(request):
            upload_serializer = s.ItemsUploadSerializer(data=request.data)
            upload_serializer.is_valid(raise_exception=True)
            upload = upload_serializer.validated_data["file"]
            _upload_too_large(upload)
            added = services.add_items_from_jsonl(job, upload)
        else:
            items_serializer = s.ItemsAddSerializer(data=request.data)
            items_serializer.is_valid(raise_exception=True)
            added = services.add_items(job, items_serializer.validated_data["items"])
        return Response(
            {"added": added, "item_count": job.item_count}, status=status.HTTP_201_CREATED
        )


def not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """Any other path under the API's prefix: a 404 in the API's error shape, not HTML."""
    return JsonResponse(error_body("not_found", "Not found."), status=404)
