"""The Django admin as an operator console for batch jobs and their request items.

Registers :class:`BatchJobAdmin` (``jobs``, with ``actions``, ``live`` and ``dashboard``),
:class:`RequestItemAdmin` (``items``) and the read-only :class:`ProviderBatchAdmin`
(``batches``) on the default admin site; ``display`` and ``history`` hold the helpers they
share. ``from openai_batches.admin import BatchJobAdmin`` keeps working, so a
project can register them on a site of its own.
"""

from __future__ import annotations

from django.contrib import admin

from ..models import BatchJob, ProviderBatch, RequestItem
from .batches import ProviderBatchAdmin
from .items import JobFilter, RequestItemAdmin
from .jobs import BatchJobAdmin

admin.site.register(BatchJob, BatchJobAdmin)
admin.site.register(RequestItem, RequestItemAdmin)
admin.site.register(ProviderBatch, ProviderBatchAdmin)

__all__ = ["BatchJobAdmin", "JobFilter", "ProviderBatchAdmin", "RequestItemAdmin"]
