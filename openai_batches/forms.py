"""Forms of the admin console: creating a job from an uploaded or pasted JSONL file.

The form only parses what a person typed (name, endpoint, account, metadata, the JSONL
source). Validating the requests themselves is the job of
:func:`openai_batches.services.add_items_from_jsonl`, so the admin, the API and the command
reject exactly the same input with exactly the same line-numbered problems.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from . import access
from .conf import DEFAULT_ACCOUNT, app_settings
from .models import Endpoint


def _account_choices() -> list[tuple[str, str]]:
    # A callable, so accounts added to OPENAI_BATCHES after import (or by override_settings
    # in tests) show up without a restart. Only names are listed: never credentials.
    return [(name, name) for name in app_settings.account_names()]


class BatchJobCreateForm(forms.Form):
    """Name, endpoint, account and metadata of a new job, and its requests as JSONL."""

    name = forms.CharField(
        label=_("Name"),
        max_length=200,
        required=False,
        help_text=_("A label for people."),
    )
    endpoint = forms.ChoiceField(
        label=_("Endpoint"),
        choices=Endpoint.choices,
        initial=Endpoint.CHAT_COMPLETIONS,
        help_text=_("The endpoint every request calls; each line's url must match it."),
    )
    account = forms.ChoiceField(
        label=_("Account"),
        choices=_account_choices,
        initial="default",
        help_text=_("The OPENAI_BATCHES account the job runs under."),
    )
    metadata = forms.CharField(
        label=_("Metadata"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": '{"project": "summaries"}'}),
        help_text=_(
            "Optional JSON object of up to 16 string pairs sent with the batch "
            "(keys up to 64, values up to 512 characters)."
        ),
    )
    jsonl_file = forms.FileField(
        label=_("JSONL file"),
        required=False,
        help_text=_(
            "OpenAI batch input: one request per line, "
            '{"custom_id": ..., "method": "POST", "url": ..., "body": {...}}.'
        ),
    )
    jsonl_text = forms.CharField(
        label=_("…or paste JSONL"),
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 10, "class": "vLargeTextField ob-mono"}),
        help_text=_("Used when no file is uploaded."),
    )

    def __init__(self, *args: Any, user: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if user is not None:
            # Only the accounts this user may use (openai_batches.access); a forged value
            # is "not one of the available choices", and create_job checks it again.
            usable = access.usable_accounts(user)
            field = self.fields["account"]
            assert isinstance(field, forms.ChoiceField)
            field.choices = [(name, name) for name in usable]
            if not usable:
                field.help_text = _("You may not use any account: ask an administrator.")
            elif DEFAULT_ACCOUNT not in usable:
                field.initial = usable[0]

    def clean_metadata(self) -> dict[str, Any]:
        raw = self.cleaned_data.get("metadata") or ""
        if not raw.strip():
            return {}
        try:
            value = json.loads(raw)
        except ValueError as err:
            raise forms.ValidationError(_("Not valid JSON: %(err)s"), params={"err": err}) from err
        if not isinstance(value, dict):
            raise forms.ValidationError(_("Must be a JSON object."))
        # The pair/length rules live in services.create_job; it reports them as problems.
        return value

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        has_file = bool(cleaned.get("jsonl_file"))
        has_text = bool((cleaned.get("jsonl_text") or "").strip())
        if has_file and has_text:
            raise forms.ValidationError(_("Upload a file or paste JSONL, not both."))
        if not has_file and not has_text:
            raise forms.ValidationError(_("Upload a JSONL file or paste JSONL lines."))
        return cleaned

    def jsonl_lines(self) -> Iterable[bytes] | Iterable[str]:
        """The JSONL source as an iterable of lines (the upload is read line by line)."""
        upload = self.cleaned_data.get("jsonl_file")
        if upload:
            # Iterating an UploadedFile yields lines without loading a large file in memory
            # (Django spools big uploads to disk).
            upload.seek(0)
            return upload
        return io.StringIO(self.cleaned_data.get("jsonl_text") or "")
