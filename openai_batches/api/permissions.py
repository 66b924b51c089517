"""Who may use the API: every user on their own jobs; Django's model permissions on others'.

The rule (the same whatever ``API_PERMISSION_CLASSES`` says, because the views apply it on
every lookup, see :func:`visible_jobs` and :func:`check_job_permission`):

* A job's **owner** may do everything the job's state allows with it.
* **Another user's job** needs the ``openai_batches`` model permission of the action, the
  same permissions the admin uses: reading it (detail, items, results) needs
  ``view_batchjob`` (or ``change_batchjob``, which implies it, as in the admin); acting on
  it (submit, cancel, refresh, retry, adding items) needs ``change_batchjob``; deleting it needs
  ``delete_batchjob``. A job the user may not even view is a 404, so its existence is not
  revealed; one they may view but not act on is a 403 naming the missing permission.
* **Creating** a job needs no model permission: the job is the creator's own. Narrow who
  reaches the API at all with ``API_PERMISSION_CLASSES``.

``is_staff`` alone grants nothing over other users' jobs (it only opens the admin site).

The classes come from ``OPENAI_BATCHES["API_PERMISSION_CLASSES"]`` (dotted paths), read on
every request so ``override_settings`` and per-deployment settings apply without a restart.
They decide who reaches the endpoints at all; they can never widen the rule above.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.utils.module_loading import import_string
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.views import APIView

from ..conf import SETTING_NAME, app_settings
from ..exceptions import ConfigurationError
from ..models import BatchJob, RequestItem

#: The model permission (codename prefix) each action needs on a job the user does not own.
#: An action missing here needs ``change``: a new endpoint is refused until it is listed.
JOB_ACTION_PERMISSIONS: dict[str, str] = {
    "list": "view",
    "retrieve": "view",
    "results": "view",
    "export": "view",  # read-only, like results
    "estimate": "view",  # read-only
    "submit": "change",
    "cancel": "change",
    "refresh": "change",
    "retry": "change",
    "destroy": "delete",
}
#: The same for the item endpoints (the permission is on the items' job).
ITEM_ACTION_PERMISSIONS: dict[str, str] = {
    "list": "view",
    "retrieve": "view",
    "create": "change",
}


def _perm(action: str) -> str:
    return f"{BatchJob._meta.app_label}.{action}_{BatchJob._meta.model_name}"


def has_job_permission(user: Any, action: str) -> bool:
    """Whether ``user`` holds the model permission ``action`` (view/change/delete) on jobs.

    ``change`` implies ``view``, as in the admin.
    """
    if not getattr(user, "is_authenticated", False) or not getattr(user, "is_active", True):
        return False
    if action == "view":
        return bool(user.has_perm(_perm("view")) or user.has_perm(_perm("change")))
    return bool(user.has_perm(_perm(action)))


def visible_jobs(user: Any) -> QuerySet[BatchJob]:
    """The jobs ``user`` may see: all with the view (or change) permission, else their own."""
    return BatchJob.objects.for_user(user)


def may_act(user: Any, job: BatchJob, action: str) -> bool:
    """Whether ``user`` may do ``action`` (view/change/delete) with ``job``."""
    if not getattr(user, "is_authenticated", False):
        return False
    if job.owner_id is not None and job.owner_id == getattr(user, "pk", None):
        return True
    return has_job_permission(user, action)


def check_job_permission(request: Request, job: BatchJob, action: str) -> None:
    """Raise DRF's 403 unless ``request.user`` may do ``action`` with ``job``."""
    if not may_act(request.user, job, action):
        raise PermissionDenied(
            f"You may not {action} job {job.uuid}: that needs the {_perm(action)} "
            "permission (or owning the job)."
        )


def required_permission(view: APIView) -> str:
    """The model permission the view's current action needs on another user's job."""
    table = getattr(view, "job_action_permissions", JOB_ACTION_PERMISSIONS)
    return table.get(getattr(view, "action", None) or "", "change")


class IsJobOwnerOrPermitted(BasePermission):
    """Object-level guard: the owner, or a user with the action's model permission."""

    def has_object_permission(self, request: Request, view: APIView, obj: Any) -> bool:
        job = obj.job if isinstance(obj, RequestItem) else obj
        if not isinstance(job, BatchJob):
            return False
        return may_act(request.user, job, required_permission(view))


#: The name of 0.1, kept so settings that list it keep working.
IsJobOwnerOrStaff = IsJobOwnerOrPermitted

#: Used when ``API_PERMISSION_CLASSES`` is ``None``.
DEFAULT_PERMISSION_CLASSES: tuple[type[BasePermission], ...] = (
    IsAuthenticated,
    IsJobOwnerOrPermitted,
)


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
