"""``manage.py openai_emulator``: run the offline OpenAI Files + Batches emulator.

Same options as ``python -m openai_batches.emulator``; point ``OPENAI_BATCHES["BASE_URL"]``
at the URL it prints.
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand

from openai_batches.emulator.cli import add_arguments, run


class Command(BaseCommand):
    help = "Run the offline OpenAI Files + Batches emulator until interrupted."

    def add_arguments(self, parser: ArgumentParser) -> None:
        add_arguments(parser)

    def _announce(self, base_url: str) -> None:
        self.stdout.write(base_url)
        self.stdout.flush()

    def handle(self, *args: Any, **options: Any) -> None:
        run(
            host=options["host"],
            port=options["port"],
            data_dir=options["data_dir"],
            timing=options["timing"],
            api_key=options["api_key"],
            webhook_url=options["webhook_url"],
            webhook_secret=options["webhook_secret"],
            verbose=options["verbose"],
            announce=self._announce,
            flavor=options["flavor"],
            tokens=options["token"],
            azure_quirks=options["azure_quirks"],
            azure_fail_fast=options["azure_fail_fast"],
        )
