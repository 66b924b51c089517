"""Who may use the API: authenticated users on their own jobs, staff on all.

The classes come from ``OPENAI_BATCHES["API_PERMISSION_CLASSES"]`` (dotted paths), read on
every request so ``override_settings`` and per-deployment settings apply without a restart.
Whatever classes are configured, the views only ever look jobs up in
``BatchJob.objects.for_user(request.user)``, so a permissive class never exposes another
user's job; it can only widen or narrow who reaches the endpoints at all.
"""

from __future__ import annotations

from typing import Any

from django.utils.module_loading import import_string
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.views import APIView

from ..conf import SETTING_NAME, app_settings
from ..exceptions import ConfigurationError
from ..models import BatchJob, RequestItem


class IsJobOwnerOrStaff(BasePermission):
    """Object-level guard: the job's owner or a staff user (defence in depth over ``for_user``)."""

    def has_object_permission(self, request: Request, view: APIView, obj: Any) -> bool:
        job = obj.job if isinstance(obj, RequestItem) else obj
        if not isinstance(job, BatchJob):
            return False
        user = request.user
        if getattr(user, "is_staff", False):
            return True
        return job.owner_id is not None and job.owner_id == getattr(user, "pk", None)


#: Used when ``API_PERMISSION_CLASSES`` is ``None``.
DEFAULT_PERMISSION_CLASSES: tuple[type[BasePermission], ...] = (IsAuthenticated, IsJobOwnerOrStaff)


def permission_classes() -> list[type[BasePermission]]:
    """The configured permission classes, imported; a bad path names the setting to fix."""
    configured = app_settings.API_PERMISSION_CLASSES
    if configured is None:
        return list(DEFAULT_PERMISSION_CLASSES)
    if isinstance(configured, str) or not isinstance(configured, list | tuple):
        raise ConfigurationError(
            f"{SETTING_NAME}['API_PERMISSION_CLASSES'] must be a list of dotted paths, "
            f"not {configured!r}."
        )
    classes: list[type[BasePermission]] = []
    for entry in configured:
        if isinstance(entry, str):
            try:
                entry = import_string(entry)
            except ImportError as err:
                raise ConfigurationError(
                    f"{SETTING_NAME}['API_PERMISSION_CLASSES'] names {entry!r}, which cannot "
                    f"be imported: {err}"
                ) from err
        classes.append(entry)
    return classes
