"""One page: the reviews with the sentiment the model gave them."""

from __future__ import annotations

from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from .models import Review


def review_list(request: HttpRequest) -> HttpResponse:
    reviews = Review.objects.all()
    sentiment = request.GET.get("sentiment")
    if sentiment is not None:
        reviews = reviews.filter(sentiment=sentiment)
    counts = Review.objects.values("sentiment").annotate(n=Count("pk")).order_by("sentiment")
    return render(
        request,
        "reviews/review_list.html",
        {"reviews": reviews[:200], "counts": counts, "total": Review.objects.count()},
    )
