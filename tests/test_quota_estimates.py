"""How far the input-token estimate is from what the provider counts: every item's
``estimated_tokens`` (the default estimator) against the ``usage.prompt_tokens`` the
emulator reports for it, on the test suite's synthetic requests and on realistic text (this
project's own documentation and source code, cut into requests of a paragraph or a
function). ``docs/how-to/quota.md`` quotes these numbers; the assertions hold them to it.

Run ``pytest tests/test_quota_estimates.py -s`` to print the table.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from openai_batches import services
from openai_batches.models import ItemState
from openai_batches.testing import EmulatorHandle, running_emulator

pytestmark = pytest.mark.django_db(transaction=True)

REPO = Path(__file__).resolve().parent.parent
MODEL = "gpt-4o-mini"


@pytest.fixture
def emu() -> Iterator[EmulatorHandle]:
    with running_emulator() as handle:
        yield handle


def _pieces(paths: list[Path], sep: str, limit: int) -> list[str]:
    out = []
    for path in sorted(paths):
        for piece in path.read_text(encoding="utf-8").split(sep):
            piece = piece.strip()
            if len(piece) >= 40:
                out.append(piece[:4000])
    return out[:limit]


def corpora() -> dict[str, list[str]]:
    return {
        "synthetic (tests)": [f"Summarise item {i}." for i in range(200)],
        "English prose (docs/)": _pieces(
            [*REPO.glob("docs/**/*.md"), REPO / "README.md"], "\n\n", 300
        ),
        "Python code (openai_batches/)": _pieces(
            list(REPO.glob("openai_batches/**/*.py")), "\ndef ", 300
        ),
    }


def measure(emu: EmulatorHandle, texts: list[str]) -> tuple[int, int, float]:
    """(estimated, counted by the provider, mean absolute error per request)."""
    items: list[dict[str, Any]] = [
        {
            "custom_id": f"t{i}",
            "body": {"model": MODEL, "messages": [{"role": "user", "content": text}]},
        }
        for i, text in enumerate(texts)
    ]
    job = services.create_job(endpoint="/v1/chat/completions", items=items)
    services.request_submit(job)
    services.submit(job)
    job = services.refresh(job)
    rows = list(job.items.values_list("state", "estimated_tokens", "input_tokens"))
    assert {r[0] for r in rows} == {ItemState.SUCCEEDED}
    estimated = sum(r[1] for r in rows)
    counted = sum(r[2] for r in rows)
    mean_abs = sum(abs(r[1] - r[2]) / r[2] for r in rows) / len(rows)
    return estimated, counted, mean_abs


def test_the_estimate_against_the_providers_count(emu: EmulatorHandle) -> None:
    results = {}
    for name, texts in corpora().items():
        assert texts, name
        results[name] = (len(texts), *measure(emu, texts))
    print("\ncorpus | requests | estimated | counted | total error | mean abs error per request")
    for name, (n, est, counted, mean_abs) in results.items():
        print(f"{name} | {n} | {est:,} | {counted:,} | {est / counted - 1:+.1%} | {mean_abs:.1%}")
    # What docs/how-to/quota.md states (the emulator counts characters / 4 + framing).
    for name, (_n, est, counted, _mean) in results.items():
        assert 0.0 <= est / counted - 1 <= 0.15, name  # never under: reservations stay safe
