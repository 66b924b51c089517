"""Django app configuration: pins the primary key type and registers the system checks."""

from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class OpenAIBatchesConfig(AppConfig):
    name = "openai_batches"
    verbose_name = _("OpenAI batches")
    # Pinned so a host project's DEFAULT_AUTO_FIELD never produces a migration for us.
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the checks)
