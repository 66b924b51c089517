"""``tests.settings`` with the quota settings the race test gives its worker processes
(``QUOTA_LIMITS`` and ``QUOTA_ESTIMATOR`` in the environment, JSON and a dotted path)."""

from __future__ import annotations

import json
import os

from tests.settings import *  # noqa: F403
from tests.settings import OPENAI_BATCHES

OPENAI_BATCHES = {
    **OPENAI_BATCHES,
    "ENQUEUED_TOKEN_LIMITS": json.loads(os.environ.get("QUOTA_LIMITS", "{}")),
    "TOKEN_ESTIMATOR": os.environ.get("QUOTA_ESTIMATOR") or None,
}
