"""A few hundred realistic product reviews, generated deterministically (no network).

Each review is assembled from a product, an opening, one or two remarks about aspects of the
product and a closing, all drawn with a seeded ``random.Random``: the same ``count`` always
gives the same reviews, so the demo and its test are reproducible.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

SEED = 20240815

#: product -> aspects customers talk about.
PRODUCTS: dict[str, tuple[str, ...]] = {
    "Aurora Noise-Cancelling Headphones": ("sound", "battery life", "ear cushions", "app"),
    "TrailMate 40L Hiking Backpack": ("hip belt", "zippers", "rain cover", "pockets"),
    "BrewPro Espresso Machine": ("steam wand", "water tank", "temperature", "cleaning"),
    "Nimbus Memory Foam Pillow": ("firmness", "cover", "smell", "size"),
    "VoltGo Electric Scooter": ("range", "brakes", "folding", "app"),
    "PageTurner E-Reader": ("screen", "battery life", "front light", "store"),
    "IronChef Cast-Iron Skillet": ("seasoning", "weight", "handle", "heat retention"),
    "SwiftCharge 65W USB-C Charger": ("charging speed", "heat", "cable", "size"),
    "Lumen Smart Desk Lamp": ("brightness", "colour temperature", "app", "base"),
    "Cascade Robot Vacuum": ("suction", "mapping", "noise", "dustbin"),
    "Evergreen Yoga Mat": ("grip", "thickness", "smell", "carry strap"),
    "Tempo Running Shoes": ("cushioning", "fit", "outsole", "laces"),
}

AUTHORS = (
    "Ana", "Ben", "Chloe", "Dev", "Elif", "Farah", "Gus", "Hana", "Ivo", "Jonas", "Kemi",
    "Lars", "Maya", "Nico", "Olga", "Pia", "Quinn", "Rosa", "Sami", "Tomas", "Uma", "Vik",
    "Wen", "Ximena", "Yusuf", "Zoe",
)  # fmt: skip

OPENINGS = {
    5: ("Honestly one of the best purchases I've made this year.", "Five stars, no hesitation.",
        "I was sceptical at first but this exceeded every expectation."),
    4: ("Very happy with it overall.", "Solid product with one or two small quirks.",
        "Good value for the money."),
    3: ("It's fine, I suppose.", "Does the job, nothing more.",
        "Mixed feelings after a month of daily use."),
    2: ("Not what I hoped for.", "I wanted to like this, I really did.",
        "Disappointing for the price."),
    1: ("Avoid.", "Returned it after a week.", "Worst purchase in a long time."),
}  # fmt: skip

PRAISE = (
    "The {aspect} is excellent.",
    "I love the {aspect}; it works better than on my old one.",
    "The {aspect} surprised me in a good way.",
    "Great {aspect}, exactly as described.",
)
COMPLAINT = (
    "The {aspect} is a real letdown.",
    "After two weeks the {aspect} started giving me trouble.",
    "The {aspect} feels cheap and poorly thought out.",
    "Customer support could not help with the {aspect}.",
)
NEUTRAL = (
    "The {aspect} is about what you'd expect.",
    "The {aspect} is okay, neither good nor bad.",
    "Nothing special about the {aspect}.",
)
CLOSINGS = {
    5: ("Would buy again.", "Already recommended it to friends.", "Worth every penny."),
    4: ("I'd recommend it.", "Would probably buy again.", "Happy overall."),
    3: ("Might keep it, might not.", "Wait for a sale.", "Average."),
    2: ("Probably won't buy from this brand again.", "Can't recommend it.", "Meh."),
    1: ("Save your money.", "Asked for a refund.", "Stay away."),
}  # fmt: skip
TITLES = {
    5: ("Love it", "Fantastic", "Exactly what I needed"),
    4: ("Pretty good", "Recommended", "Nice, with caveats"),
    3: ("It's okay", "Average", "Could be better"),
    2: ("Disappointed", "Not great", "Meh"),
    1: ("Terrible", "Broke quickly", "Do not buy"),
}  # fmt: skip
#: Ratings are skewed towards the high end, as on real shops.
RATING_WEIGHTS = {5: 38, 4: 24, 3: 14, 2: 10, 1: 14}


@dataclass(frozen=True)
class ReviewData:
    product: str
    author: str
    title: str
    text: str
    rating: int
    created_at: datetime


def _remarks(rng: random.Random, rating: int, aspects: tuple[str, ...]) -> list[str]:
    first, second = rng.sample(aspects, 2)
    if rating == 5:
        a, b = rng.sample(PRAISE, 2)
    elif rating == 4:
        a, b = rng.choice(PRAISE), rng.choice(NEUTRAL)
    elif rating == 3:  # a middling review: one good thing, one bad thing
        a, b = rng.choice(PRAISE), rng.choice(COMPLAINT)
    else:
        a, b = rng.sample(COMPLAINT, 2)
    return [a.format(aspect=first), b.format(aspect=second)]


def generate(count: int, *, seed: int = SEED) -> Iterator[ReviewData]:
    """``count`` reviews; the first ``n`` are the same whatever ``count`` is."""
    rng = random.Random(seed)
    products = list(PRODUCTS)
    ratings = list(RATING_WEIGHTS)
    weights = list(RATING_WEIGHTS.values())
    start = datetime(2024, 1, 1, 9, 0, tzinfo=UTC)
    for n in range(count):
        product = products[n % len(products)] if n < len(products) else rng.choice(products)
        rating = rng.choices(ratings, weights)[0]
        parts = [
            rng.choice(OPENINGS[rating]),
            *_remarks(rng, rating, PRODUCTS[product]),
            rng.choice(CLOSINGS[rating]),
        ]
        yield ReviewData(
            product=product,
            author=f"{rng.choice(AUTHORS)} {chr(65 + rng.randrange(26))}.",
            title=rng.choice(TITLES[rating]),
            text=" ".join(parts),
            rating=rating,
            created_at=start + timedelta(hours=7 * n + rng.randrange(7)),
        )
