"""URLs: the shop's review list, the admin, and the app's DRF API when it is installed."""

from __future__ import annotations

import importlib.util

from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path
from reviews import views


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


#: The API needs the ``api`` extra (djangorestframework); the example runs without it too.
HAS_API = _importable("rest_framework") and _importable("openai_batches.api.urls")

urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.review_list, name="review-list"),
    path("admin/", admin.site.urls),
]
if HAS_API:
    urlpatterns.append(path("api/batches/", include("openai_batches.api.urls")))
