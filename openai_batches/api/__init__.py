"""The REST API (Django REST framework + drf-spectacular), installed with the ``api`` extra.

This package is the only part of the app that imports DRF. Importing it without DRF installed
raises a :class:`~openai_batches.exceptions.ConfigurationError` (an ``ImproperlyConfigured``)
that names the extra to install, instead of a bare ``ModuleNotFoundError`` from deep inside a
URLconf. Include it with ``path("api/batches/", include("openai_batches.api.urls"))``.
"""

from __future__ import annotations

from ..exceptions import ConfigurationError

try:
    import drf_spectacular  # noqa: F401
    import rest_framework  # noqa: F401
except ImportError as err:  # tests/test_api_access.py hides DRF to check this message
    raise ConfigurationError(
        f"openai_batches.api needs Django REST framework and drf-spectacular ({err.name} is "
        "missing): pip install 'django-openai-batches[api]', then add 'rest_framework' and "
        "'drf_spectacular' to INSTALLED_APPS."
    ) from err
