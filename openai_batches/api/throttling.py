"""Throttling of the API's endpoints that call the provider inside the web request.

``POST jobs/{uuid}/refresh/`` asks the provider about a batch while the client waits. It is
throttled per user (per client address for anonymous requests, when a permissive setting
lets them in) under the DRF scope ``openai_batches_refresh``. Set the rate like any DRF
scope::

    REST_FRAMEWORK = {"DEFAULT_THROTTLE_RATES": {"openai_batches_refresh": "30/minute"}}

Without it, :data:`DEFAULT_REFRESH_RATE` applies (DRF's own ``ScopedRateThrottle`` would
raise ``ImproperlyConfigured`` for a scope with no rate). ``None`` turns the throttle off.
A throttled request is a 429 with ``Retry-After``, in the API's error shape. This comes on
top of whatever ``DEFAULT_THROTTLE_CLASSES`` the host sets for all its views.
"""

from __future__ import annotations

from typing import Any

from rest_framework.settings import api_settings
from rest_framework.throttling import ScopedRateThrottle

#: The DRF throttle scope of ``refresh``.
REFRESH_SCOPE = "openai_batches_refresh"
#: The rate used when ``DEFAULT_THROTTLE_RATES`` has no entry for :data:`REFRESH_SCOPE`.
#: Following a job needs no provider call (``GET jobs/{uuid}/`` shows what workers last
#: saw); this leaves room for an impatient person, not for a polling loop.
DEFAULT_REFRESH_RATE = "10/minute"


class RefreshRateThrottle(ScopedRateThrottle):
    """``ScopedRateThrottle`` for :data:`REFRESH_SCOPE`, with a default rate.

    The rates are read from DRF's settings on every request (DRF binds them when the class
    is defined), so ``override_settings`` and a changed deployment setting apply.
    """

    scope_attr = "refresh_throttle_scope"

    def get_rate(self) -> str | None:
        rates: dict[str, Any] = api_settings.DEFAULT_THROTTLE_RATES or {}
        if self.scope in rates:
            return rates[self.scope]
        return DEFAULT_REFRESH_RATE
