"""An ``rqworker`` (burst) whose work-horses SIGKILL themselves at a lifecycle checkpoint:

    python -m tests.procs.worker QUEUE --crash-at NAME

The checkpoint is replaced in the worker before it forks, so every work-horse inherits it:
a horse dies at NAME exactly as one killed by the OOM killer or a lost machine would, and
the test sees what RQ and the app make of it.
"""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("queue")
    parser.add_argument("--crash-at", required=True)
    args = parser.parse_args()

    import django

    django.setup()
    from django.core.management import call_command

    from .child import _install_checkpoint
    from .receivers import connect

    connect()
    _install_checkpoint(args.crash_at, None, 1)
    call_command("rqworker", args.queue, burst=True)


if __name__ == "__main__":
    main()
