"""``manage.py serve``: the example project with everything it needs, for clicking around.

Starts, as child processes: the bundled OpenAI emulator (``python -m
openai_batches.emulator``, timing ``fast``), a worker for the example's runner
(``rqworker --with-scheduler`` for "rq", the default when ``REDIS_URL`` is set;
``db_worker`` of django-tasks-db for "tasks", ``EXAMPLE_RUNNER=tasks``; else
``sync_batches --loop``; the last two need no Redis) and ``runserver``.
Prints the URLs and the demo login, and stops all of them on Ctrl-C or when one exits.
A port already in use fails at once, with one line naming it and a non-zero exit, before
anything starts; a child that dies later stops the others and the command exits non-zero.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import time
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from example_project.urls import HAS_API

from openai_batches import jobs
from openai_batches.conf import app_settings

from ...seeding import DEMO_PASSWORD, DEMO_USERNAME, ensure_demo_user, ensure_reviews


class Command(BaseCommand):
    help = "Serve the example (site, admin, API) with the emulator and a worker, until Ctrl-C."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--port", type=int, default=8000, help="web port (default 8000)")
        parser.add_argument(
            "--emulator-port", type=int, default=8765, help="emulator port (default 8765)"
        )
        parser.add_argument(
            "--timing",
            choices=["instant", "fast", "realistic"],
            default="fast",
            help="emulator timing (default fast)",
        )
        parser.add_argument(
            "--no-emulator",
            action="store_true",
            help="do not start the emulator (EXAMPLE_OPENAI_BASE_URL points elsewhere)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        ports = [("site", options["port"], "--port")]
        if not options["no_emulator"]:
            ports.append(("emulator", options["emulator_port"], "--emulator-port"))
        for what, port, flag in ports:
            problem = port_problem("127.0.0.1", port)
            if problem:
                raise CommandError(
                    f"cannot serve the {what} on 127.0.0.1:{port}: {problem}; "
                    f"stop whatever uses it or pick another port with {flag}"
                )
        # With the "tasks" runner this also makes django-tasks-db's table.
        call_command("migrate", verbosity=0, interactive=False)
        ensure_demo_user()
        ensure_reviews(300)
        manage = str(Path(settings.BASE_DIR) / "manage.py")
        py = sys.executable
        env = os.environ.copy()
        emulator_url = f"http://127.0.0.1:{options['emulator_port']}/v1"
        commands: list[tuple[str, list[str]]] = []
        if not options["no_emulator"]:
            env["EXAMPLE_OPENAI_BASE_URL"] = emulator_url
            emulator_cmd = [py, "-m", "openai_batches.emulator", "--host", "127.0.0.1"]
            emulator_cmd += ["--port", str(options["emulator_port"]), "--timing", options["timing"]]
            commands.append(("emulator", emulator_cmd))
        queue = app_settings.QUEUE
        runner = jobs.runner()
        if runner == "rq":
            commands.append(("worker", [py, manage, "rqworker", queue, "--with-scheduler"]))
        elif runner == "tasks":
            # --no-reload: DEBUG would make db_worker start an autoreloader of its own.
            cmd = [py, manage, "db_worker", "--queue-name", queue, "--no-reload"]
            commands.append(("worker", cmd))
        else:
            # No Redis: admin actions' enqueues fail (logged) and this loop does the work.
            commands.append(
                ("sync", [py, manage, "sync_batches", "--loop", "--interval", "2", "-v", "0"])
            )
        commands.append(
            ("web", [py, manage, "runserver", f"127.0.0.1:{options['port']}", "--noreload"])
        )

        procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        # `kill`/`timeout` send SIGTERM: treat it like Ctrl-C so the children are stopped too.
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            for name, cmd in commands:
                procs.append((name, subprocess.Popen(cmd, env=env)))
            time.sleep(1.5)
            # A child that died at start (a port taken between the check and its bind, a
            # broken setting) must not be announced as running.
            if all(p.poll() is None for _, p in procs):
                self.banner(options, emulator_url, runner)
            while all(p.poll() is None for _, p in procs):
                time.sleep(0.5)
            dead = [
                f"{name} exited with status {p.returncode}"
                for name, p in procs
                if p.poll() is not None
            ]
            raise CommandError("; ".join(dead) + "; stopped the others")
        except KeyboardInterrupt:
            self.stdout.write("\nstopping ...")
        finally:
            for _, p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGINT)
            for _, p in procs:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()

    def banner(self, options: dict[str, Any], emulator_url: str, runner: str) -> None:
        web = f"http://127.0.0.1:{options['port']}"
        lines = [
            "",
            self.style.MIGRATE_HEADING("The example project is running"),
            f"  Reviews     {web}/",
            f"  Admin       {web}/admin/        login {DEMO_USERNAME} / {DEMO_PASSWORD}",
        ]
        if HAS_API:
            lines.append(f"  API         {web}/api/batches/  (same login; session or basic auth)")
        if not options["no_emulator"]:
            lines.append(f"  Emulator    {emulator_url}  (timing {options['timing']})")
        worker = {
            "rq": f"rqworker {app_settings.QUEUE} --with-scheduler on {settings.REDIS_URL}",
            "tasks": (
                f"db_worker --queue-name {app_settings.QUEUE} (Django Tasks runner, "
                "tasks stored in the database, no Redis needed)"
            ),
        }.get(runner, "sync_batches --loop (runner none, so no Redis needed)")
        lines.append(f"  Worker      {worker}")
        lines += [
            "",
            "  Try it: Admin > Reviews, select some, action 'Classify sentiment with the Batch API';",
            "  then watch the job under Openai batches > Batch jobs. Ctrl-C stops everything.",
            "",
        ]
        self.stdout.write("\n".join(lines))


def port_problem(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on (e.g. already in use), or None if it can."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # The servers set SO_REUSEADDR too, so a port in TIME_WAIT is not reported as taken.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return "the port is already in use"
            return err.strerror or str(err)
    return None


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
