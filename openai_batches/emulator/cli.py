"""Command-line entry point shared by ``python -m openai_batches.emulator`` and the
``openai_emulator`` management command."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from .core import PROFILES, Emulator
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
    parser.add_argument("--api-key", default=None, help="accept only this bearer key")
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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m openai_batches.emulator",
        description="Offline emulator of the OpenAI Files + Batches API.",
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
    )
