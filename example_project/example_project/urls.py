"""URLs: the shop's review list, the admin, and the app's DRF API when it is installed."""

from __future__ import annotations

import importlib.util

from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path
from reviews import views

urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.review_list, name="review-list"),
    path("admin/", admin.site.urls),
]

# The API needs the ``api`` extra (djangorestframework); the example runs without it too.
if importlib.util.find_spec("rest_framework") and importlib.util.find_spec(
    "openai_batches.api.urls"
):
    urlpatterns.append(path("api/batches/", include("openai_batches.api.urls")))
