"""URLs of the API; include them under a prefix of your choice::

    path("api/batches/", include("openai_batches.api.urls")),

Names live in the ``openai_batches_api`` namespace (``job-list``, ``job-detail``,
``job-submit``, ``job-refresh``, ``job-cancel``, ``job-retry``, ``job-results``,
``job-estimate``, ``job-export``, ``job-item-list``, ``job-item-detail``, ``dashboard``,
``quota``, ``schema``).
"""

from __future__ import annotations

from django.urls import path, re_path
from rest_framework.routers import SimpleRouter

from .dashboard import DashboardViewSet
from .export import job_export
from .quota import QuotaViewSet
from .schema import BatchesSchemaView
from .views import BatchJobViewSet, RequestItemViewSet, not_found

app_name = "openai_batches_api"

router = SimpleRouter()
router.register("jobs", BatchJobViewSet, basename="job")
router.register(r"jobs/(?P<job_uuid>[^/]+)/items", RequestItemViewSet, basename="job-item")

urlpatterns = [
    path("schema/", BatchesSchemaView.as_view(), name="schema"),
    path("dashboard/", DashboardViewSet.as_view({"get": "retrieve"}), name="dashboard"),
    path("quota/", QuotaViewSet.as_view({"get": "retrieve"}), name="quota"),
    path("jobs/<str:uuid>/export/", job_export, name="job-export"),
    *router.urls,
    # Last: anything else under the prefix answers in the API's error shape.
    re_path(r"^[\s\S]*$", not_found),
]
