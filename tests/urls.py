from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("openai/webhooks/", include("openai_batches.urls")),
    # The API, with its OpenAPI schema at api/batches/schema/.
    path("api/batches/", include("openai_batches.api.urls")),
]
