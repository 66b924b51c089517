"""The request item admin: a read-only view of each request, its result and its attempts
(each time it was sent, what came back).

Only services write items (results, states), so the page has no Save button and items are
added and removed only with their job. The job filter names jobs uniquely (``#id name``).
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from ..models import BatchJob, RequestItem
from ..results import Result
from .deletion import DeletedWithTheirJob
from .display import EMPTY, job_label, pretty_json
from .history import attempts_table


class JobFilter(admin.SimpleListFilter):
    """Filter items by job, listing the most recent jobs (not every job ever made)."""

    title = gettext_lazy("job")
    parameter_name = "job"
    _RECENT = 20

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        recent = list(BatchJob.objects.order_by("-created_at", "-pk")[: self._RECENT])
        selected = self.value()
        if selected and selected.isdigit() and all(str(j.pk) != selected for j in recent):
            recent += list(BatchJob.objects.filter(pk=int(selected)))
        return [(str(job.pk), job_label(job)) for job in recent]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if not value:
            return queryset
        if not value.isdigit():
            return queryset.none()
        return queryset.filter(job_id=int(value))


class RequestItemAdmin(DeletedWithTheirJob):
    list_display = (
        "custom_id",
        "job_link",
        "state_badge",
        "answer_short",
        "status_code",
        "tokens",
        "completed_at",
        "linked_object",
    )
    list_filter = ("state", JobFilter)
    search_fields = ("custom_id",)
    list_select_related = ("job", "content_type")
    list_per_page = 100
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "custom_id",
                    "job_link",
                    "state_badge",
                    "status_code",
                    "linked_object",
                    "completed_at",
                    "announced",
                )
            },
        ),
        (gettext_lazy("Attempts"), {"fields": ("attempt_count", "attempts_table")}),
        (gettext_lazy("Request"), {"fields": ("method", "url", "body_pretty")}),
        (
            gettext_lazy("Result"),
            {"fields": ("answer", "parsed_pretty", "response_pretty", "error_pretty")},
        ),
        (
            gettext_lazy("Provider"),
            {
                "fields": (
                    "provider_request_id",
                    "result_line_id",
                    "input_tokens",
                    "cached_tokens",
                    "output_tokens",
                    "reasoning_tokens",
                )
            },
        ),
    )
    readonly_fields = (
        "custom_id",
        "job_link",
        "state_badge",
        "status_code",
        "linked_object",
        "completed_at",
        "announced",
        "attempt_count",
        "attempts_table",
        "method",
        "url",
        "body_pretty",
        "answer",
        "parsed_pretty",
        "response_pretty",
        "error_pretty",
        "provider_request_id",
        "result_line_id",
        "input_tokens",
        "cached_tokens",
        "output_tokens",
        "reasoning_tokens",
    )

    class Media:
        css = {"all": ("openai_batches/admin.css",)}

    def has_change_permission(self, request: HttpRequest, obj: RequestItem | None = None) -> bool:
        # Only services write items (results, states); the page is a read-only view, so
        # it shows "Close" rather than a Save button that would save nothing.
        return False

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Items are added with their job (the JSONL form, services.add_items), all-or-nothing.
        return False

    # (No deleting one request: it would desynchronise the job's counts and, once
    # submitted, the provider's batch. See DeletedWithTheirJob.)
    @admin.display(description=gettext_lazy("job"), ordering="job")
    def job_link(self, item: RequestItem) -> SafeString:
        url = reverse("admin:openai_batches_batchjob_change", args=[item.job_id])
        return format_html('<a href="{}">{}</a>', url, job_label(item.job))

    @admin.display(description=gettext_lazy("state"), ordering="state")
    def state_badge(self, item: RequestItem) -> SafeString:
        return format_html(
            '<span class="ob-badge ob-item-{}" data-state="{}">{}</span>',
            item.state,
            item.state,
            item.get_state_display(),
        )

    @admin.display(description=gettext_lazy("tokens"))
    def tokens(self, item: RequestItem) -> str:
        if not (item.input_tokens or item.output_tokens):
            return "—"
        return f"{item.input_tokens:,} / {item.output_tokens:,}"

    @admin.display(description=gettext_lazy("linked object"))
    def linked_object(self, item: RequestItem) -> SafeString | str:
        if item.content_type_id is None or not item.object_id:
            return "—"
        content_type = item.content_type
        assert content_type is not None
        model = content_type.model_class()
        label = f"{content_type.name} #{item.object_id}"
        if model is None or not self.admin_site.is_registered(model):
            return label
        try:
            # Built from the stored id, not the object, so the list needs no query per row.
            url = reverse(
                f"admin:{model._meta.app_label}_{model._meta.model_name}_change",
                args=[item.object_id],
                current_app=self.admin_site.name,
            )
        except NoReverseMatch:
            return label
        return format_html('<a href="{}" class="ob-linked-object">{}</a>', url, label)

    @admin.display(description=gettext_lazy("history"))
    def attempts_table(self, item: RequestItem) -> SafeString:
        return attempts_table(item)

    @admin.display(description=gettext_lazy("request body"))
    def body_pretty(self, item: RequestItem) -> SafeString:
        return pretty_json(item.body)

    @admin.display(description=gettext_lazy("response"))
    def response_pretty(self, item: RequestItem) -> SafeString:
        return pretty_json(item.response)

    @admin.display(description=gettext_lazy("error"))
    def error_pretty(self, item: RequestItem) -> SafeString:
        return pretty_json(item.error)

    @admin.display(description=gettext_lazy("answer"))
    def answer_short(self, item: RequestItem) -> str:
        # Not stored on a list page: a GET must not write, and the row's job is joined.
        return Result.from_item(item, store=False).summary(60) or "—"

    @admin.display(description=gettext_lazy("answer"))
    def answer(self, item: RequestItem) -> SafeString:
        """What the model answered, read through ``item.result``: the endpoint's answer
        and, for anything unusable, why."""
        r = Result.from_item(item, store=False)  # a GET shows, never writes
        rows: list[tuple[str, Any]] = []
        if r.code:
            rows.append(
                (_("reason"), format_html('<strong class="ob-error">{}</strong>', r.reason))
            )
        for index, choice in enumerate(r.choices):
            label = _("text") if len(r.choices) == 1 else _("choice %(n)s") % {"n": index}
            if choice.text is not None:
                rows.append((label, format_html('<div class="ob-answer">{}</div>', choice.text)))
            if choice.refusal:
                rows.append((_("refusal"), choice.refusal))
            for call in choice.tool_calls:
                rows.append(
                    (_("tool call"), format_html("<code>{}({})</code>", call.name, call.arguments))
                )
        if r.finish_reason:
            rows.append((_("finish reason"), r.finish_reason))
        if r.embeddings:
            rows.append(
                (
                    _("embeddings"),
                    _("%(n)s vector(s) of %(d)s dimensions")
                    % {"n": len(r.embeddings), "d": len(r.embeddings[0])},
                )
            )
        for index, verdict in enumerate(r.moderations):
            flags = ", ".join(verdict.categories) or _("nothing")
            rows.append(
                (
                    _("input %(n)s") % {"n": index},
                    _("flagged: %(f)s") % {"f": flags} if verdict.flagged else _("not flagged"),
                )
            )
        for image in r.images:
            if image.url:
                rows.append(
                    (
                        _("image"),
                        format_html('<a href="{}" rel="noreferrer">{}</a>', image.url, image.url),
                    )
                )
            else:
                rows.append(
                    (
                        _("image"),
                        _("%(n)s bytes, base64 in the response below")
                        % {"n": len(image.b64_json or "") * 3 // 4},
                    )
                )
        if r.succeeded:
            u = r.usage
            rows.append(
                (
                    _("usage"),
                    _("%(i)s input (%(c)s cached), %(o)s output (%(r)s reasoning)")
                    % {
                        "i": u.input_tokens,
                        "c": u.cached_tokens,
                        "o": u.output_tokens,
                        "r": u.reasoning_tokens,
                    },
                )
            )
        if not rows:
            return EMPTY
        body = format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows)
        return format_html('<table class="ob-answer-table">{}</table>', body)

    @admin.display(description=gettext_lazy("parsed output"))
    def parsed_pretty(self, item: RequestItem) -> SafeString:
        r = Result.from_item(item, store=False)
        if not r.schema:
            return EMPTY
        schema = format_html("<p>{}: <code>{}</code></p>", _("model"), r.schema)
        if r.parse_error:
            return format_html('{}<p class="ob-error">{}</p>', schema, r.parse_error)
        parsed = r.parsed_json
        if not isinstance(parsed, dict):
            return format_html("{}{}", schema, pretty_json(parsed))
        fields = format_html_join(
            "",
            "<tr><th>{}</th><td>{}</td></tr>",
            (
                (
                    name,
                    json.dumps(value, ensure_ascii=False)
                    if isinstance(value, (dict, list))
                    else value,
                )
                for name, value in parsed.items()
            ),
        )
        return format_html('{}<table class="ob-answer-table">{}</table>', schema, fields)
