"""The admin's quota page: per account and model the enqueued-token budget, what is
reserved and in flight, the line of parts waiting for room, the recent quota events, and a
"reset learned limit" button.

Figures come from :mod:`openai_batches.quota` (the read-only contract the API serves too);
the reset goes through :func:`openai_batches.quota.reset_learned_limit`, which records it
as a quota event and lets the line move. This module only checks who may see the page
(the batch job view permission, like the job list and the dashboard: the line shows every
owner's jobs) and who may reset (the change permission, like submit and cancel: a reset
lets more tokens be sent at once).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
)
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.translation import gettext as _

from .. import quota
from ..conf import app_settings
from ..models import QuotaEvent

if TYPE_CHECKING:
    from .jobs import BatchJobAdmin

#: Parts of the line the page lists (oldest first); the count says how many more wait.
MAX_WAITING = 100
#: Quota events the page lists, newest first.
MAX_EVENTS = 20


def quota_url(model_admin: BatchJobAdmin, name: str = "quota") -> str:
    info = model_admin.opts.app_label, model_admin.opts.model_name
    return reverse(f"admin:{info[0]}_{info[1]}_{name}", current_app=model_admin.admin_site.name)


def quota_view(model_admin: BatchJobAdmin, request: HttpRequest) -> HttpResponse:
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    rows = quota.overview()
    line = quota.waiting()
    opts = model_admin.opts
    context = {
        **model_admin.admin_site.each_context(request),
        "title": _("Enqueued-token quota"),
        "subtitle": None,
        "opts": opts,
        "app_label": opts.app_label,
        "has_view_permission": True,
        "may_reset": model_admin.has_change_permission(request),
        "media": model_admin.media,
        "rows": [_row(row) for row in rows],
        "waiting": list(line[:MAX_WAITING]),
        "waiting_total": line.count(),
        "max_waiting": MAX_WAITING,
        "events": list(QuotaEvent.objects.select_related("job")[:MAX_EVENTS]),
        "limits_off": app_settings.ENQUEUED_TOKEN_LIMITS is None,
        "reset_url": quota_url(model_admin, "quota_reset"),
    }
    request.current_app = model_admin.admin_site.name
    return TemplateResponse(request, "openai_batches/quota.html", context)


def reset_view(model_admin: BatchJobAdmin, request: HttpRequest) -> HttpResponse:
    """POST ``account`` and ``model``: forget the limit the provider taught for them."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    if not model_admin.has_change_permission(request):
        raise PermissionDenied
    account = request.POST.get("account", "")
    model = request.POST.get("model", "")
    known = {(row.account, row.model): row for row in quota.overview(account or None)}
    row = known.get((account, model))
    if row is None:
        return HttpResponseBadRequest(
            _("account, model: no budget for %(model)s on the %(account)s account")
            % {"model": model[:128], "account": account[:64]},
            content_type="text/plain; charset=utf-8",
        )
    if row.learned_limit is None:
        model_admin.message_user(
            request,
            _("Nothing to reset: %(model)s on %(account)s has no learned limit.")
            % {"model": model, "account": account},
            messages.WARNING,
        )
    else:
        quota.reset_learned_limit(account, model)
        model_admin.message_user(
            request,
            _(
                "Reset the learned limit of %(model)s on %(account)s (it was %(learned)s "
                "tokens); the configured limit applies again."
            )
            % {"model": model, "account": account, "learned": f"{row.learned_limit:,}"},
            messages.SUCCESS,
        )
    return HttpResponseRedirect(quota_url(model_admin))


def _tokens(value: int | None) -> str:
    return _("unlimited") if value is None else f"{value:,}"


def _row(row: quota.ModelQuota) -> dict[str, Any]:
    """One budget as the page shows it: tokens with separators, None as "unlimited"."""
    return {
        "account": row.account,
        "model": row.model,
        "limit": _tokens(row.limit),
        "learned_limit": "—" if row.learned_limit is None else f"{row.learned_limit:,}",
        "has_learned": row.learned_limit is not None,
        "effective_limit": _tokens(row.effective_limit),
        "reserved": f"{row.reserved:,}",
        "in_flight": f"{row.in_flight:,}",
        "waiting_parts": row.waiting_parts,
        "waiting_tokens": f"{row.waiting_tokens:,}",
        # Share of the budget held, for the bar; None when unlimited.
        "used_pct": (
            None
            if not row.effective_limit
            else min(100.0, round(100 * row.reserved / row.effective_limit, 1))
        ),
        "updated_at": row.updated_at,
    }


__all__ = ["MAX_EVENTS", "MAX_WAITING", "quota_view", "reset_view"]
