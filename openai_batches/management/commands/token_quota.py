"""``manage.py token_quota``: each model's enqueued-token budget and its line; reset what
the provider taught (``--reset MODEL``) or move the lines now (``--admit``).

All the work is in :mod:`openai_batches.quota` (reading) and
:mod:`openai_batches.services.quota` (changing); this parses options and reports.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from openai_batches import quota, services
from openai_batches.conf import app_settings


def _tokens(value: int | None) -> str:
    return "unlimited" if value is None else f"{value:,}"


class Command(BaseCommand):
    help = (
        "Show each model's enqueued-token budget (limit, learned limit, reserved, in flight, "
        "waiting); --reset MODEL forgets the limit learned from token_limit_exceeded; "
        "--admit moves the lines of waiting parts now."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--account", default=None, help="Only this account.")
        parser.add_argument(
            "--reset",
            metavar="MODEL",
            help="Forget the learned limit of MODEL (in --account, default 'default').",
        )
        parser.add_argument(
            "--admit", action="store_true", help="Admit waiting parts that fit now."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        account = options["account"]
        if account is not None and account not in app_settings.account_names():
            raise CommandError(f"{account!r} is not a configured account.")
        if options["reset"]:
            model = options["reset"]
            services.reset_learned_limit(account or "default", model)
            self.stdout.write(
                self.style.SUCCESS(
                    f"Reset the learned limit of {model} ({account or 'default'}): the "
                    f"configured limit applies, "
                    f"{_tokens(quota.configured_limit(account or 'default', model))} tokens."
                )
            )
        if options["admit"]:
            admitted = services.admit_waiting(account)
            self.stdout.write(self.style.SUCCESS(f"Admitted {admitted} waiting part(s)."))
        rows = quota.overview(account)
        for row in rows:
            learned = f" (learned {_tokens(row.learned_limit)})" if row.learned_limit else ""
            self.stdout.write(
                f"{row.account}  {row.model}: limit {_tokens(row.effective_limit)}{learned}, "
                f"reserved {row.reserved:,}, in flight {row.in_flight:,}, "
                f"waiting {row.waiting_parts} part(s) / {row.waiting_tokens:,} tokens"
            )
        waiting = sum(r.waiting_parts for r in rows)
        self.stdout.write(f"{len(rows)} model budget(s), {waiting} part(s) waiting")
