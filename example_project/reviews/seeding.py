"""Example data and the demo login, shared by the ``demo`` and ``serve`` commands."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model

from .data import generate
from .models import Review

DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo"  # a local example project; never reuse this anywhere real


def ensure_demo_user() -> Any:
    """A superuser ``demo``/``demo`` for the admin and the API (created or reset)."""
    user, created = get_user_model().objects.get_or_create(
        username=DEMO_USERNAME, defaults={"is_staff": True, "is_superuser": True}
    )
    if created or not user.check_password(DEMO_PASSWORD) or not user.is_superuser:
        user.set_password(DEMO_PASSWORD)
        user.is_staff = user.is_superuser = True
        user.save()
    return user


def ensure_reviews(count: int) -> int:
    """Top the reviews table up to ``count`` rows; returns how many were created."""
    existing = Review.objects.count()
    if existing >= count:
        return 0
    # generate() is prefix-stable, so topping up keeps the earlier rows as they were.
    Review.objects.bulk_create(Review(**vars(data)) for data in list(generate(count))[existing:])
    return count - existing
