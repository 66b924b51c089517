"""Placeholder for the end-to-end demo (issue 7 builds the real one)."""

from typing import Any

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run the end-to-end demo against the bundled emulator."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(
            "The demo is coming: it will create a few hundred product reviews, batch them "
            "through the bundled OpenAI emulator and write each sentiment back onto its row."
        )
