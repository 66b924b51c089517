"""What an operator can do to jobs: create one from JSONL, and the actions and page buttons.

A thin entry point: each action calls :mod:`openai_batches.services` once per job (submit,
refresh, cancel, retry failed / expired requests, downloads) and reports
with ``message_user`` what it did and which jobs it skipped and why; it never writes a
lifecycle field itself. The job page's buttons post to the very same action functions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.options import IS_POPUP_VAR
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.text import slugify
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from .. import export, services
from ..conf import app_settings
from ..exceptions import (
    ConfigurationError,
    InvalidStateError,
    OpenAIBatchesError,
    Problem,
    ProviderError,
    ValidationError,
)
from ..forms import BatchJobCreateForm
from ..models import BatchJob
from .display import MAX_NAMED, Unusable, first_chunk_then_rest, names, unusable_account

logger = logging.getLogger("openai_batches.admin")

ActionResult = tuple[list[BatchJob], list[tuple[BatchJob, str]]]


class JobActionsAdmin(admin.ModelAdmin):
    """The create form, the changelist actions and the job page's buttons (see the module)."""

    # -- add: create a job from JSONL -----------------------------------------------------

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        try:
            # The form lists the accounts; a broken ACCOUNTS setting would otherwise be a
            # 500 while the page renders, after this view has returned.
            app_settings.account_names()
        except ConfigurationError as err:
            return self._cannot_create(request, err)
        problems: list[Problem] = []
        truncated = False
        if request.method == "POST":
            form = BatchJobCreateForm(request.POST, request.FILES, user=request.user)
            if form.is_valid():
                try:
                    job, count = self._create_from_jsonl(request, form)
                except ValidationError as err:
                    problems, truncated = list(err.problems), err.truncated
                except ConfigurationError as err:
                    return self._cannot_create(request, err)
                else:
                    self.log_addition(request, job, [{"added": {}}])
                    self.message_user(
                        request,
                        ngettext(
                            "Created job “%(job)s” with %(n)d request. Submit it when ready.",
                            "Created job “%(job)s” with %(n)d requests. Submit it when ready.",
                            count,
                        )
                        % {"job": job, "n": count},
                        messages.SUCCESS,
                    )
                    return HttpResponseRedirect(
                        reverse("admin:openai_batches_batchjob_change", args=[job.pk])
                    )
        else:
            form = BatchJobCreateForm(user=request.user)
        opts = self.opts
        context = {
            **self.admin_site.each_context(request),
            "title": _("Create a batch job from JSONL"),
            "subtitle": None,
            "opts": opts,
            "app_label": opts.app_label,
            "form": form,
            "media": self.media + form.media,
            "problems": problems,
            "line_problems": [p for p in problems if p.line is not None],
            "job_problems": [p for p in problems if p.line is None],
            "truncated": truncated,
            "has_view_permission": self.has_view_permission(request),
            "is_popup": IS_POPUP_VAR in request.GET,
            **(extra_context or {}),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.add_form_template or "", context)

    def _cannot_create(self, request: HttpRequest, err: ConfigurationError) -> HttpResponse:
        """Back to the job list with why no job can be created (the details go to the log)."""
        logger.error("openai_batches admin: cannot create jobs: %s", err)
        self.message_user(
            request,
            _(
                "No job can be created until the server's OPENAI_BATCHES setting is fixed "
                "(manage.py check names the problem)."
            ),
            messages.ERROR,
        )
        return HttpResponseRedirect(reverse("admin:openai_batches_batchjob_changelist"))

    def _create_from_jsonl(
        self, request: HttpRequest, form: BatchJobCreateForm
    ) -> tuple[BatchJob, int]:
        """Create the job and its items in one transaction: all of it, or nothing."""
        data = form.cleaned_data
        with transaction.atomic():
            job = services.create_job(
                endpoint=data["endpoint"],
                name=data.get("name") or "",
                metadata=data.get("metadata") or {},
                account=data["account"],
                owner=request.user,
                jsonl=form.jsonl_lines(),
            )
            if job.item_count == 0:
                # A job without requests can never be submitted; do not leave it behind.
                raise ValidationError([Problem(None, "input", _("The JSONL holds no requests."))])
        return job, job.item_count

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        # Bulk delete cannot tell running jobs apart; delete from the job page instead.
        actions.pop("delete_selected", None)
        return actions

    # -- actions --------------------------------------------------------------------------

    def _each(
        self,
        queryset: QuerySet[BatchJob],
        call: Callable[[BatchJob], Any],
    ) -> ActionResult:
        """Run ``call`` per job; collect the jobs it acted on and (job, reason) for the rest.

        Wrong-state and provider errors are expected in a bulk action (one job of ten may
        have finished meanwhile); they become reasons in the message, never a 500.
        """
        done: list[BatchJob] = []
        skipped: list[tuple[BatchJob, str]] = []
        for job in queryset.order_by("pk"):
            try:
                call(job)
            except InvalidStateError as err:
                skipped.append((job, str(err)))
            except ProviderError as err:
                skipped.append((job, _("the provider call failed: %(err)s") % {"err": err}))
            except ConfigurationError as err:
                skipped.append((job, unusable_account(job, err)))
            except OpenAIBatchesError as err:
                skipped.append((job, Unusable(str(err))))
            else:
                done.append(job)
        return done, skipped

    def _report(self, request: HttpRequest, verb: str, result: ActionResult) -> None:
        done, skipped = result
        if done:
            self.message_user(
                request,
                ngettext(
                    "%(verb)s %(n)d job: %(names)s.",
                    "%(verb)s %(n)d jobs: %(names)s.",
                    len(done),
                )
                % {"verb": verb, "n": len(done), "names": names(done)},
                messages.SUCCESS,
            )
        if skipped:
            reasons = "; ".join(f"“{job}”: {reason}" for job, reason in skipped[:MAX_NAMED])
            more = len(skipped) - MAX_NAMED
            if more > 0:
                reasons += _(" and %(n)d more") % {"n": more}
            self.message_user(
                request,
                ngettext(
                    "Skipped %(n)d job. %(reasons)s",
                    "Skipped %(n)d jobs. %(reasons)s",
                    len(skipped),
                )
                % {"n": len(skipped), "reasons": reasons},
                messages.ERROR
                if not done or any(isinstance(r, Unusable) for _, r in skipped)
                else messages.WARNING,
            )

    @admin.action(description=gettext_lazy("Submit selected jobs"), permissions=["change"])
    def submit_jobs(self, request: HttpRequest, queryset: QuerySet[BatchJob]) -> None:
        self._report(
            request, _("Submission requested for"), self._each(queryset, services.request_submit)
        )

    @admin.action(description=gettext_lazy("Refresh now from the provider"), permissions=["change"])
    def refresh_jobs(self, request: HttpRequest, queryset: QuerySet[BatchJob]) -> None:
        self._report(request, _("Refreshed"), self._each(queryset, services.refresh))

    @admin.action(description=gettext_lazy("Cancel selected jobs"), permissions=["change"])
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[BatchJob]) -> None:
        self._report(request, _("Cancelled"), self._each(queryset, services.cancel))

    @admin.action(description=gettext_lazy("Retry failed requests"), permissions=["change"])
    def retry_failed(self, request: HttpRequest, queryset: QuerySet[BatchJob]) -> None:
        self._report(
            request,
            _("Failed requests sent again for"),
            self._each(queryset, lambda job: services.retry(job, "failed")),
        )

    @admin.action(description=gettext_lazy("Retry expired requests"), permissions=["change"])
    def retry_expired(self, request: HttpRequest, queryset: QuerySet[BatchJob]) -> None:
        self._report(
            request,
            _("Expired requests sent again for"),
            self._each(queryset, lambda job: services.retry(job, "expired")),
        )

    @admin.action(description=gettext_lazy("Download input JSONL"), permissions=["change"])
    def download_input(
        self, request: HttpRequest, queryset: QuerySet[BatchJob]
    ) -> HttpResponseBase | None:
        return self._download(request, queryset, "input")

    @admin.action(description=gettext_lazy("Download output JSONL"), permissions=["change"])
    def download_output(
        self, request: HttpRequest, queryset: QuerySet[BatchJob]
    ) -> HttpResponseBase | None:
        return self._download(request, queryset, "output")

    @admin.action(description=gettext_lazy("Download error JSONL"), permissions=["change"])
    def download_errors(
        self, request: HttpRequest, queryset: QuerySet[BatchJob]
    ) -> HttpResponseBase | None:
        return self._download(request, queryset, "error")

    def _download(
        self, request: HttpRequest, queryset: QuerySet[BatchJob], which: str
    ) -> HttpResponseBase | None:
        jobs = list(queryset[:2])
        if len(jobs) != 1:
            self.message_user(
                request,
                _("Select exactly one job to download its %(which)s file.") % {"which": which},
                messages.ERROR,
            )
            return None
        job = jobs[0]
        try:
            if which == "input":
                if not job.item_count:
                    raise InvalidStateError(
                        _("Job “%(job)s” has no requests.") % {"job": job}, job_id=job.pk
                    )
                chunks: Iterable[bytes] = services.iter_input_jsonl(job)
            else:
                chunks = services.iter_provider_file(job, which)
            stream = first_chunk_then_rest(iter(chunks))
        except InvalidStateError as err:
            self.message_user(
                request,
                _("No %(which)s file to download for “%(job)s”: %(err)s")
                % {"which": which, "job": job, "err": err},
                messages.ERROR,
            )
            return None
        except ProviderError as err:
            self.message_user(
                request,
                _("Could not download the %(which)s file of “%(job)s”: %(err)s")
                % {"which": which, "job": job, "err": err},
                messages.ERROR,
            )
            return None
        except OpenAIBatchesError as err:
            reason = unusable_account(job, err) if isinstance(err, ConfigurationError) else str(err)
            self.message_user(
                request,
                _("Could not download the %(which)s file of “%(job)s”: %(err)s")
                % {"which": which, "job": job, "err": reason},
                messages.ERROR,
            )
            return None
        response = StreamingHttpResponse(stream, content_type="application/jsonl")
        stem = slugify(job.name)[:50] or f"batch-{job.pk}"
        response["Content-Disposition"] = f'attachment; filename="{stem}-{job.pk}-{which}.jsonl"'
        return response

    @admin.action(description=gettext_lazy("Export results as CSV"), permissions=["change"])
    def export_results_csv(
        self, request: HttpRequest, queryset: QuerySet[BatchJob]
    ) -> HttpResponseBase | None:
        return self._export(request, queryset, "csv")

    @admin.action(description=gettext_lazy("Export results as JSONL"), permissions=["change"])
    def export_results_jsonl(
        self, request: HttpRequest, queryset: QuerySet[BatchJob]
    ) -> HttpResponseBase | None:
        return self._export(request, queryset, "jsonl")

    def _export(
        self, request: HttpRequest, queryset: QuerySet[BatchJob], fmt: str
    ) -> HttpResponseBase | None:
        jobs = list(queryset[:2])
        if len(jobs) != 1:
            self.message_user(
                request, _("Select exactly one job to export its results."), messages.ERROR
            )
            return None
        job = jobs[0]
        response = StreamingHttpResponse(
            export.export_results(job, fmt), content_type=export.content_type(fmt)
        )
        response["Content-Disposition"] = f'attachment; filename="{export.filename(job, fmt)}"'
        return response

    #: Buttons on the job page, in order: (action name, label).
    _OBJECT_BUTTONS: tuple[tuple[str, Any], ...] = (
        ("submit_jobs", gettext_lazy("Submit")),
        ("refresh_jobs", gettext_lazy("Refresh now")),
        ("cancel_jobs", gettext_lazy("Cancel")),
        ("retry_failed", gettext_lazy("Retry failed")),
        ("retry_expired", gettext_lazy("Retry expired")),
        ("download_input", gettext_lazy("Download input")),
        ("download_output", gettext_lazy("Download output")),
        ("download_errors", gettext_lazy("Download errors")),
        ("export_results_csv", gettext_lazy("Export results (CSV)")),
    )

    def object_buttons(self, request: HttpRequest, job: BatchJob) -> list[dict[str, Any]]:
        """The actions offered on ``job``'s page: only those the user may run and that fit."""
        allowed = self.get_actions(request)
        # Whether any part has each file: a retry's part may have none while the first has.
        files = job.batches.aggregate(
            output=Count("pk", filter=~Q(output_file_id="")),
            error=Count("pk", filter=~Q(error_file_id="")),
        )
        fits: dict[str, bool] = {
            # services.can_* is the authority on states; the page only mirrors it.
            "submit_jobs": services.can_submit(job)[0],
            "refresh_jobs": services.can_refresh(job)[0],
            "cancel_jobs": services.can_cancel(job)[0],
            "retry_failed": services.can_retry(job, "failed")[0],
            "retry_expired": services.can_retry(job, "expired")[0],
            "download_input": job.item_count > 0,
            "download_output": bool(files["output"]),
            "download_errors": bool(files["error"]),
            "export_results_csv": job.ingested_at is not None,
            "export_results_jsonl": job.ingested_at is not None,
        }
        url_name = f"admin:{self.opts.app_label}_{self.opts.model_name}_object_action"
        return [
            {
                "name": name,
                "label": label,
                "url": reverse(url_name, args=[job.pk, name]),
                "download": name.startswith(("download_", "export_")),
            }
            for name, label in self._OBJECT_BUTTONS
            if name in allowed and fits[name]
        ]

    def object_action_view(
        self, request: HttpRequest, object_id: str, action: str
    ) -> HttpResponseBase:
        """Run one of the changelist actions on a single job, from a button on its page."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        job = self.get_object(request, object_id)
        if job is None:
            raise Http404(_("No batch job with id %(id)s.") % {"id": object_id})
        actions = self.get_actions(request)
        if action not in actions or not self.has_change_permission(request, job):
            raise PermissionDenied
        func = actions[action][0]
        response = func(self, request, self.get_queryset(request).filter(pk=job.pk))
        if isinstance(response, HttpResponseBase):
            return response
        return HttpResponseRedirect(
            reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_change", args=[job.pk])
        )
