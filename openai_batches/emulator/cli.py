"""Command-line entry point shared by ``python -m openai_batches.emulator`` and the
``openai_emulator`` management command."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from .core import PROFILES, Emulator
from .flavors import FLAVORS
from .server import EmulatorServer

#: Not 8000, which is ``runserver``'s: the emulator and the site it serves run side by side.
DEFAULT_PORT = 8765


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port (default {DEFAULT_PORT}; 0 picks a free one)",
    )
    parser.add_argument(
        "--data-dir", default=None, help="where file bytes live (default: a temp dir)"
    )
    parser.add_argument(
        "--timing",
        choices=sorted(PROFILES),
        default="fast",
        help="state timings: fast (seconds, default), instant, realistic (minutes to hours)",
    )
    parser.add_argument(
        "--flavor",
        choices=FLAVORS,
        default="openai",
        help="whose API to speak: openai (default; /v1), azure (/openai/v1 and the dated "
        "/openai/...?api-version= API), anthropic (/v1/messages/batches), groq "
        "(/openai/v1, windows of 24h to 7d)",
    )
    parser.add_argument("--api-key", default=None, help="accept only this key")
    parser.add_argument(
        "--token",
        action="append",
        default=[],
        metavar="TOKEN",
        help="azure/anthropic: also accept 'Authorization: Bearer TOKEN' (repeatable)",
    )
    parser.add_argument(
        "--azure-quirks",
        action="store_true",
        help="azure: batch objects as Microsoft's samples show them (capitalised status, "
        "ISO timestamps, empty-string file ids, null counts)",
    )
    parser.add_argument(
        "--azure-fail-fast",
        action="store_true",
        help="azure: refuse a create over the token budget with a 400 instead of failing "
        "the batch later",
    )
    parser.add_argument("--webhook-url", default=None, help="POST signed batch events here")
    parser.add_argument("--webhook-secret", default=None, help="whsec_... signing secret")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")


def run(
    *,
    host: str,
    port: int,
    data_dir: str | None,
    timing: str,
    api_key: str | None,
    webhook_url: str | None,
    webhook_secret: str | None,
    verbose: bool,
    announce: Callable[[str], None] | None = None,
    flavor: str = "openai",
    tokens: Sequence[str] = (),
    azure_quirks: bool = False,
    azure_fail_fast: bool = False,
) -> None:
    """Serve until interrupted; prints the base URL first so scripts can read it."""
    if bool(webhook_url) != bool(webhook_secret):
        raise SystemExit("--webhook-url and --webhook-secret go together")
    # The server runs on wall-clock time whatever the profile, so "instant" batches finish
    # on the next request and the others move while you watch.
    emulator = Emulator(
        timing=timing,
        data_dir=data_dir,
        api_key=api_key,
        clock="real",
        webhook_url=webhook_url,
        webhook_secret=webhook_secret,
        flavor=flavor,
        flavor_options=flavor_options(flavor, tokens, azure_quirks, azure_fail_fast),
    )
    server = EmulatorServer(emulator, host, port, verbose=verbose)
    try:
        server.start()
    except OSError as err:
        emulator.close()
        # One line a person can act on, not a traceback (and no URL printed: nothing serves).
        raise SystemExit(
            f"openai_batches.emulator: cannot listen on {host}:{port}: {err.strerror or err}"
            " (is another emulator or server using it? pick another with --port)"
        ) from None
    if announce is None:
        print(server.base_url, flush=True)
    else:
        announce(server.base_url)
    try:
        server.serve_forever_started()
    finally:
        emulator.close()


def flavor_options(
    flavor: str, tokens: Sequence[str], azure_quirks: bool, azure_fail_fast: bool
) -> dict[str, Any]:
    """The command line's flavour options as ``Emulator(flavor_options=...)`` takes them;
    an option the flavour does not have is an error, not silently ignored."""
    if flavor == "azure":
        return {"tokens": list(tokens), "quirks": azure_quirks, "fail_fast": azure_fail_fast}
    if azure_quirks or azure_fail_fast:
        raise SystemExit("--azure-quirks and --azure-fail-fast need --flavor azure")
    if flavor == "anthropic":
        return {"auth_tokens": list(tokens)}
    if tokens:
        raise SystemExit("--token needs --flavor azure or anthropic")
    return {}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m openai_batches.emulator",
        description="Offline emulator of the OpenAI Files + Batches API (or Azure OpenAI's, "
        "or Anthropic's Message Batches with --flavor).",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    run(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        timing=args.timing,
        api_key=args.api_key,
        webhook_url=args.webhook_url,
        webhook_secret=args.webhook_secret,
        verbose=args.verbose,
        flavor=args.flavor,
        tokens=args.token,
        azure_quirks=args.azure_quirks,
        azure_fail_fast=args.azure_fail_fast,
    )
